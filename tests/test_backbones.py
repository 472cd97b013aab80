"""Encoders: shapes, exact parameter counts, in-model normalisation, safe `.keras` round trip, NIN blocks."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from sslzoo.backbones import (
    CIFAR_MEAN,
    CIFAR_STD,
    FEATURE_MAP,
    build_encoder,
    encoder_options,
    feature_map_model,
    nin_blocks,
)
from sslzoo.backbones.common import symmetric_pool
from sslzoo.layers.builtin import BUILTIN, with_builtin_layers
from sslzoo.layers.walk import all_layers
from sslzoo.registry import ENCODERS

# (name, image_size, options, feature_map shape (H, W, C)); features are [N, C].
CASES = {
    "convnet_small": ("convnet_small", 32, {}, (4, 4, 256)),
    "convnet_small_w05_b3": ("convnet_small", 32, {"width": 0.5, "blocks": 3}, (8, 8, 64)),
    "nin": ("nin", 32, {}, (8, 8, 192)),
    "nin_b1": ("nin", 32, {"blocks": 1}, (16, 16, 96)),
    "nin_b4": ("nin", 32, {"blocks": 4}, (8, 8, 192)),
    "resnet18": ("resnet18", 32, {}, (4, 4, 512)),  # cifar stem: S / 8
    "resnet18_imagenet": ("resnet18", 64, {"stem": "imagenet"}, (2, 2, 512)),  # imagenet stem: S / 32
    "resnet18_default_96": ("resnet18", 96, {}, (3, 3, 512)),  # S > 64 defaults to the imagenet stem
    # The only ResNet-50 built in this file (~0.8 s); its imagenet stem is the one of the closed figure.
    "resnet50_imagenet": ("resnet50", 64, {"stem": "imagenet"}, (2, 2, 2048)),
}
# Encoders outside the feature-map contract above, with their own test file: the ViTs output their class
# token and have no "feature_map".
OWN_TEST_FILE = {"vit_tiny": "tests/test_vit.py", "vit_small": "tests/test_vit.py"}


@pytest.fixture(scope="module")
def encoders():
    keras.utils.set_random_seed(0)
    return {key: build_encoder(name, size, **options) for key, (name, size, options, _) in CASES.items()}


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, size, size, 3)).astype("float32")


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def test_every_encoder_is_covered():
    assert {"convnet_small", "nin", "resnet18", "resnet50"} <= set(ENCODERS.names())
    # Every encoder this package registers has a case below (other test files may register their own).
    ours = {name for name in ENCODERS.names() if ENCODERS.get(name).__module__.startswith("sslzoo.backbones")}
    assert ours <= {name for name, *_ in CASES.values()} | set(OWN_TEST_FILE)


@pytest.mark.parametrize("key", list(CASES))
def test_contract_shapes_and_finite_output(encoders, key):
    _, size, _, (height, width, channels) = CASES[key]
    encoder = encoders[key]
    assert encoder.input.dtype == "float32" and encoder.input.shape == (None, size, size, 3)
    assert encoder.layers[0].name == "images" and encoder.layers[1].name == "normalization"
    assert encoder.output_shape == (None, channels) and encoder.output_names == ["features"]
    assert encoder.get_layer(FEATURE_MAP).output.shape == (None, height, width, channels)

    spatial = feature_map_model(encoder)
    images = _images(2, size)
    features = np.asarray(encoder(images, training=False))
    feature_map = np.asarray(spatial(images, training=False))
    assert features.shape == (2, channels) and np.isfinite(features).all()
    # Same weights (not copies), and "features" is exactly the average of "feature_map".
    assert {id(v) for v in spatial.weights} <= {id(v) for v in encoder.weights}
    np.testing.assert_allclose(feature_map.mean(axis=(1, 2)), features, rtol=1e-5, atol=1e-6)


def test_stem_choice(encoders):
    layer_names = lambda key: {layer.name for layer in encoders[key].layers}  # noqa: E731
    assert "stem_pool" not in layer_names("resnet18")
    assert "stem_pool" in layer_names("resnet18_imagenet")
    assert "stem_pool" in layer_names("resnet18_default_96")
    assert encoders["resnet18"].get_layer("stem_conv").kernel.shape == (3, 3, 3, 64)
    assert encoders["resnet18_imagenet"].get_layer("stem_conv").kernel.shape == (7, 7, 3, 64)


def test_parameter_counts_match_closed_figures(encoders):
    # ResNet-18, CIFAR stem, no fc. Conv kernels (all bias-free):
    #   stem 3*3*3*64 = 1,728; stage1 4 * 3*3*64*64 = 147,456;
    #   stage2 3*3*64*128 + 3 * 3*3*128*128 + 64*128 (shortcut) = 73,728 + 442,368 + 8,192 = 524,288;
    #   stage3 (x4 channels of stage 2, same pattern) = 2,097,152; stage4 = 8,388,608  -> 11,159,232.
    # BN channels: 64 + 4*64 + (4*128 + 128) + (4*256 + 256) + (4*512 + 512) = 4,800, so gamma+beta add
    # 9,600 trainable: 11,168,832 = torchvision resnet18 (11,689,512) - fc (513,000) - 7x7 stem (9,408)
    # + 3x3 stem (1,728). The moving mean/variance add 9,600 non-trainable; Normalization holds its
    # mean/variance as config constants, so it adds 0 weights.
    resnet18 = encoders["resnet18"]
    assert resnet18.get_layer("normalization").weights == []
    assert _count(resnet18.trainable_weights) == 11_168_832
    assert _count(resnet18.non_trainable_weights) == 9_600
    assert resnet18.count_params() == 11_178_432
    # ImageNet stem: 11,168,832 - 1,728 + 7*7*3*64 (9,408) = 11,176,512 (torchvision, minus its fc).
    assert _count(encoders["resnet18_imagenet"].trainable_weights) == 11_176_512

    # ResNet-50, ImageNet stem, no fc: torchvision's 25,557,032 - fc 2049*1000 = 23,508,032 trainable, with
    # 26,560 BN channels -> 53,120 moving statistics. Keras' ResNet50(include_top=False, weights=None)
    # reports 23,587,712 = 23,561,152 + 26,560 because its convs also carry biases (redundant before BN;
    # measured: its Conv2D biases sum to 26,560 and its trainable count is 23,534,592 = ours + 26,560).
    resnet50 = encoders["resnet50_imagenet"]
    assert _count(resnet50.trainable_weights) == 23_508_032
    assert _count(resnet50.non_trainable_weights) == 53_120
    assert resnet50.count_params() == 23_587_712 - 26_560

    # NIN (RotNet, bias-free convs), per block: block1 5*5*3*192 + 192*160 + 160*96 = 60,480 + BN 2*448;
    # block2 5*5*96*192 + 2 * 192*192 = 534,528 + BN 2*576; blocks 3, 4: 3*3*192*192 + 2 * 192*192 =
    # 405,504 + BN 2*576.
    assert _count(encoders["nin"].trainable_weights) == 60_480 + 896 + 534_528 + 1_152  # 597,056
    assert _count(encoders["nin_b4"].trainable_weights) == 597_056 + 2 * (405_504 + 1_152)  # 1,410,368
    # convnet_small: 3*3*(3*32 + 32*64 + 64*128 + 128*256) = 387,936 + BN 2 * 480.
    assert _count(encoders["convnet_small"].trainable_weights) == 387_936 + 960


def test_batchnorm_is_pytorch_style_and_convs_have_no_bias(encoders):
    for encoder in encoders.values():
        for layer in encoder.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                assert (layer.momentum, layer.epsilon) == (0.9, 1e-5), layer.name
            if isinstance(layer, keras.layers.Conv2D):
                assert not layer.use_bias, layer.name
    custom = build_encoder("convnet_small", 16, blocks=1, bn_momentum=0.99)
    assert custom.get_layer("block1_bn").momentum == 0.99


def test_normalization_maps_mean_colour_to_zero(encoders):
    encoder = encoders["convnet_small"]
    normalize = keras.Model(encoder.input, encoder.get_layer("normalization").output)
    mean, std = np.array(CIFAR_MEAN, "float32"), np.array(CIFAR_STD, "float32")
    mean_image = np.broadcast_to(mean, (1, 32, 32, 3))
    np.testing.assert_allclose(normalize(mean_image), 0.0, atol=1e-6)
    np.testing.assert_allclose(normalize(mean_image + std), 1.0, atol=1e-5)

    encoder = build_encoder("convnet_small", 8, blocks=1, mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 2.0])
    normalize = keras.Model(encoder.input, encoder.get_layer("normalization").output)
    grey = np.full((1, 8, 8, 3), 0.5, "float32")
    np.testing.assert_allclose(normalize(grey)[0, 0, 0], [0.0, 1.0, 0.25], atol=1e-6)


def test_only_builtin_layers(encoders):
    """What leaves a run holds Keras' own layers only; the encoders themselves add just the fused batch norm
    and the small-map conv (the defaults, training-speed details that `with_builtin_layers` swaps back)."""
    models = list(encoders.values()) + [nin_blocks(3, 4)]
    for model in models:
        for layer in all_layers(model):
            assert not isinstance(layer, keras.layers.Lambda), (model.name, layer.name)
            assert (type(layer).__module__.startswith("keras.src.")
                    or type(layer) in BUILTIN), (model.name, layer.name, type(layer))
        for layer in all_layers(with_builtin_layers(model)):
            assert type(layer).__module__.startswith("keras.src."), (model.name, layer.name, type(layer))


def _randomize(model, seed):
    """Random weights (positive moving variances), so a load that ignores weights cannot pass."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "moving_variance" in variable.path:
            value = rng.uniform(0.5, 1.5, variable.shape)
        else:
            value = rng.normal(0.0, 0.1, variable.shape)
        variable.assign(value.astype("float32"))


_LOAD_SCRIPT = """
import json, sys
import numpy as np
import keras
results = {}
for key in sys.argv[1:]:  # run in the folder holding <key>.keras and its input images <key>.npy
    model = keras.saving.load_model(key + ".keras", safe_mode=True)
    results[key] = np.asarray(model(np.load(key + ".npy"), training=False)).tolist()
assert not any(name.startswith("sslzoo") for name in sys.modules), "sslzoo was imported"
print("RESULTS" + json.dumps(results))
"""


def test_keras_round_trip_in_a_fresh_process_with_safe_mode(tmp_path):
    keras.utils.set_random_seed(1)
    models = {
        "convnet_small": build_encoder("convnet_small", 32),
        "nin_b4": build_encoder("nin", 32, blocks=4),
        "resnet18_imagenet": build_encoder("resnet18", 64, stem="imagenet", width=0.25),
    }
    expected = {}
    for index, (key, model) in enumerate(models.items()):
        _randomize(model, seed=index)
        images = _images(3, model.input.shape[1], seed=index)
        np.save(tmp_path / f"{key}.npy", images)
        with_builtin_layers(model).save(tmp_path / f"{key}.keras")  # as the trainer saves encoder.keras
        expected[key] = np.asarray(model(images, training=False))
    run = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, *models],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the repo root, so `sslzoo` is not importable by accident
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.split("RESULTS", 1)[1])
    for key in models:
        loaded = np.asarray(results[key], "float32")
        assert np.abs(loaded - expected[key]).max() <= 1e-6, key
        assert np.abs(expected[key]).max() > 0  # a non-trivial output


def test_nin_blocks_on_the_encoder_feature_map(encoders):
    encoder = encoders["nin"]
    head = nin_blocks(3, 4)
    pretext_map = head(encoder.get_layer(FEATURE_MAP).output)
    assert pretext_map.shape == (None, 8, 8, 192)
    trunk = keras.Model(encoder.input, pretext_map)
    assert np.isfinite(np.asarray(trunk(_images(2, 32), training=False))).all()
    # Encoder blocks 1-2 + nin_blocks(3, 4) is exactly RotNet's 4-block NIN.
    assert trunk.count_params() == encoders["nin_b4"].count_params()
    # Blocks 1-2 change the spatial size the way the encoder does; the input size is free.
    assert nin_blocks(1, 2)(keras.Input((20, 20, 3))).shape == (None, 5, 5, 192)
    with pytest.raises(ValueError, match="first_block"):
        nin_blocks(3, 2)


def test_symmetric_pooling_matches_pytorch_padding_one():
    # PyTorch MaxPool2d/AvgPool2d(3, 2, padding=1) reference (count_include_pad=True), on ReLU-like input.
    x = np.random.default_rng(0).uniform(0.0, 1.0, (1, 6, 5, 2)).astype("float32")
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for kind, reduce in (("max", np.max), ("avg", np.mean)):
        inputs = keras.Input((6, 5, 2))
        model = keras.Model(inputs, symmetric_pool(inputs, kind, 3, 2, name="pool"))
        windows = [[padded[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] for j in range(3)] for i in range(3)]
        reference = np.array([[reduce(window, axis=(0, 1)) for window in row] for row in windows])
        np.testing.assert_allclose(np.asarray(model(x))[0], reference, atol=1e-6)


def test_errors_name_what_is_allowed():
    with pytest.raises(KeyError, match="available: .*convnet_small.*nin.*resnet18.*resnet50"):
        build_encoder("resnet1000")
    with pytest.raises(TypeError, match="depth.*allowed: .*stem.*width"):
        build_encoder("resnet18", 32, depth=34)
    assert set(encoder_options("nin")) == {"blocks", "mean", "std", "bn_momentum"}
    with pytest.raises(ValueError, match="stem"):
        build_encoder("resnet18", 32, stem="tiny")
    with pytest.raises(ValueError, match="width"):
        build_encoder("convnet_small", 32, width=0)
    with pytest.raises(ValueError, match="3 values"):
        build_encoder("nin", 32, mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="image_size"):
        build_encoder("resnet50", 16, stem="imagenet")


@pytest.mark.parametrize("name", ["convnet_small", "resnet18"])
def test_at_input_size_shares_layers_and_weights(name):
    from sslzoo.backbones import at_input_size

    encoder = build_encoder(name, 32, width=0.25)
    patches = at_input_size(encoder, 16)
    assert patches.input_shape == (None, 16, 16, 3) and patches.output_shape == encoder.output_shape
    kernel = encoder.trainable_weights[0]
    kernel.assign(kernel + 1.0)
    np.testing.assert_array_equal(patches.trainable_weights[0].numpy(), kernel.numpy())
    # The view computes exactly what the same architecture built at 16x16 computes with these weights.
    native = build_encoder(name, 16, width=0.25)
    native.set_weights(encoder.get_weights())
    images = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(patches(images, training=False), native(images, training=False), atol=1e-5)
