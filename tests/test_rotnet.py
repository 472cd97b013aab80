import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.config import ConfigError
from sslzoo.data import load_splits
from sslzoo.methods import build_method
from sslzoo.backbones import build_encoder
from tests.harness import check_method_contract, first_batch, tiny_config
from sslzoo.training.trainer import build_models


@pytest.mark.parametrize("head", ["conv", "mlp"])
def test_rotnet_passes_the_method_contract(head, tmp_path):
    check_method_contract("rotnet", {"head": head, "head_width": 16}, tmp_path)


def test_nin_head_on_nin_encoder_builds_and_steps():
    encoder = build_encoder("nin", 32, blocks=2)
    method = build_method("rotnet", {"head": "nin"}, encoder, num_classes=10)
    images = tf.random.uniform((2, 32, 32, 3))
    data = method.augment(images, tf.constant([1, 2]), tf.constant([0, 0]))
    loss, logs = method.compute_loss_and_logs(data, training=False)
    # Untrained 4-way classifier: loss near log(4).
    assert abs(float(logs["loss"]) - np.log(4)) < 1.0


def test_batch_holds_every_image_in_every_rotation():
    config = tiny_config("rotnet", {"head": "mlp", "head_width": 8})
    splits = load_splits(config.data)
    _, method = build_models(config, num_classes=len(splits.class_names))
    batch = first_batch(method, splits, batch_size=4)
    images, labels = batch["images"].numpy(), batch["pretext_labels"].numpy()
    assert images.shape[0] == 16 and list(labels) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    for r in range(4):
        np.testing.assert_array_equal(images[4 * r:4 * r + 4], np.rot90(images[:4], r, axes=(1, 2)))
    np.testing.assert_array_equal(batch["labels"].numpy().shape, (4,))


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"rotations": [0, 0]}, "two distinct rotations"),
        ({"rotations": [0, 5]}, r"each must be 0..3, multiples of 90 degrees \(rotation_step: 45 gives 0..7"),
        ({"rotations": [0, 8], "rotation_step": 45}, r"each must be 0..7, multiples of 45 degrees$"),
        ({"rotation_step": 30}, "rotation_step: 30 is not one of 90, 45"),
        ({"head": "nin"}, "head nin continues a NIN encoder.*'convnet_small' is not one"),
        ({"head": "transformer"}, "'linear', 'mlp', 'conv', 'nin'"),
        ({"heads": "conv"}, "unknown method.options key"),
        ({"flip": "yes"}, "expected true/false"),
    ],
)
def test_bad_options_fail_clearly(options, fragment):
    encoder = build_encoder("convnet_small", 32, width=0.25)
    with pytest.raises(ConfigError, match=fragment):
        build_method("rotnet", options, encoder)


def test_online_probe_does_not_train_the_encoder():
    """The probe's loss must reach only the probe: the encoder gradient of the probe loss is zero."""
    encoder = build_encoder("convnet_small", 32, width=0.25)
    method = build_method("rotnet", {"head": "mlp", "head_width": 8}, encoder, num_classes=10)
    features = encoder(tf.random.uniform((4, 32, 32, 3)))
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss = method.online_probe(features, tf.constant([0, 1, 2, 3]), {})
    gradient = tape.gradient(loss, features, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert float(loss) > 0 and float(tf.reduce_max(tf.abs(gradient))) == 0.0


# --- the online probe reads the unrotated images ----------------------------------------------------------

def _probed_features(method, data):
    """The features `compute_loss_and_logs` hands the online probe (None if it calls none)."""
    seen = []
    original = method.add_probe_loss

    def spy(loss, features, batch, logs):
        seen.append(features)
        return original(loss, features, batch, logs)

    method.add_probe_loss = spy
    _, logs = method.compute_loss_and_logs(data, training=False)
    return (seen[0] if seen else None), logs


def test_probe_reads_the_unrotated_block_wherever_it_sits():
    encoder = build_encoder("convnet_small", 32, width=0.25)
    options = {"rotations": [3, 0], "head": "mlp", "head_width": 8, "crop_padding": 0, "flip": False}
    method = build_method("rotnet", options, encoder, num_classes=10)
    images = tf.random.uniform((6, 32, 32, 3), seed=11)
    data = method.augment(images, tf.range(6), tf.constant([0, 0]))
    np.testing.assert_array_equal(data["images"][6:], images)  # block 1 holds rotation 0
    probed, logs = _probed_features(method, data)
    assert "probe_loss" in logs
    np.testing.assert_allclose(probed, encoder(images, training=False), atol=1e-5)
    # Block 0 (270 degrees) gives other features: reading it would fail the check above.
    assert not np.allclose(encoder(data["images"][:6], training=False), probed, atol=1e-3)


def test_without_rotation_0_the_probe_is_off_with_one_log_line(caplog):
    encoder = build_encoder("convnet_small", 32, width=0.25)
    with caplog.at_level("INFO", logger="sslzoo.methods.base"):
        method = build_method("rotnet", {"rotations": [1, 3], "head": "mlp", "head_width": 8}, encoder,
                              num_classes=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "sslzoo.methods.base"]
    assert len(lines) == 1 and "no online probe" in lines[0] and "include rotation 0" in lines[0], lines
    assert method.probe is None and method.num_classes == 0
    assert not {"probe_loss", "probe_top1"} & set(method.trackers)
    data = method.augment(tf.random.uniform((4, 32, 32, 3), seed=12), tf.range(4), tf.constant([0, 0]))
    probed, logs = _probed_features(method, data)
    assert probed is None and set(logs) == {"loss", "rotation_top1"}
    # With rotation 0 the same options keep their probe, and say nothing.
    caplog.clear()
    with caplog.at_level("INFO", logger="sslzoo.methods.base"):
        kept = build_method("rotnet", {"rotations": [1, 0], "head": "mlp", "head_width": 8}, encoder,
                            num_classes=10)
    assert kept.probe is not None and not caplog.records


# --- the nin head continues the encoder's NIN (the paper's depth ablation) --------------------------------

def _nin_blocks_in(model):
    """The NIN block indices whose convs `model` holds, nested models included."""
    return {int(layer.name.split("_")[0][len("block"):]) for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.Conv2D) and layer.name.startswith("block")}


@pytest.mark.parametrize("encoder_blocks, nin_depth", [(1, 4), (2, 4), (3, 4), (4, 4), (2, 3), (3, 5), (5, 5)])
def test_nin_head_holds_the_blocks_after_the_encoders_and_trains(encoder_blocks, nin_depth):
    keras.utils.set_random_seed(0)
    encoder = build_encoder("nin", 16, blocks=encoder_blocks)
    options = {"head": "nin"} if nin_depth == 4 else {"head": "nin", "nin_depth": nin_depth}  # 4: the default
    method = build_method("rotnet", options, encoder, num_classes=10)
    assert _nin_blocks_in(encoder) == set(range(1, encoder_blocks + 1))
    assert _nin_blocks_in(method.head) == set(range(encoder_blocks + 1, nin_depth + 1))
    method.compile(optimizer=keras.optimizers.SGD(0.01))
    data = method.augment(tf.random.uniform((4, 16, 16, 3), seed=13), tf.range(4), tf.constant([0, 0]))
    before = [w.numpy().copy() for w in encoder.trainable_weights + method.head.trainable_weights]
    history = method.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    after = encoder.trainable_weights + method.head.trainable_weights
    assert all(not np.array_equal(a, b.numpy()) for a, b in zip(before, after) if "kernel" in b.path)


def test_nin_encoder_deeper_than_the_network_fails_clearly():
    with pytest.raises(ConfigError, match=r"5 NIN blocks, more than nin_depth 4: set method.options.nin_depth >= 5"):
        build_method("rotnet", {"head": "nin"}, build_encoder("nin", 16, blocks=5))


# --- eight rotations (45-degree steps) --------------------------------------------------------------------

def test_eight_rotations_batch_keeps_quarter_turns_exact_and_trains_a_step(tmp_path):
    options = {"rotations": list(range(8)), "rotation_step": 45, "head": "mlp", "head_width": 8}
    config = tiny_config("rotnet", options)
    splits = load_splits(config.data)
    _, method = build_models(config, num_classes=len(splits.class_names))
    batch = first_batch(method, splits, batch_size=4)  # rotations made inside tf.data
    images, labels = batch["images"].numpy(), batch["pretext_labels"].numpy()
    assert images.shape[0] == 32 and list(labels) == [r for r in range(8) for _ in range(4)]
    for r in range(0, 8, 2):  # 0, 90, 180, 270 degrees: exactly rot90
        np.testing.assert_array_equal(images[4 * r:4 * r + 4], np.rot90(images[:4], r // 2, axes=(1, 2)))
    for r in range(1, 8, 2):  # the eighth turns are resampled: no quarter turn of the image
        assert all(not np.allclose(images[4 * r:4 * r + 4], np.rot90(images[:4], k, axes=(1, 2)), atol=1e-2)
                   for k in range(4))
    method.compile(optimizer=keras.optimizers.SGD(0.05))
    history = method.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
    # An untrained 8-way classifier: near log(8), and the probe still reads block 0.
    assert abs(history.history["loss"][0] - np.log(8)) < 1.0 and "probe_loss" in history.history
    assert method.save_pictures(batch, tmp_path) == ["rotnet.png"]
