"""Vision Transformer encoders: shapes, closed-form parameter counts, sin-cos table, frozen patch projection,
option checks, safe `.keras` round trip, and the method contract (SavedModel / TFLite parity) on a tiny ViT."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.backbones import FEATURE_MAP, build_encoder, encoder_options
from sslzoo.backbones.vit import TOKENS, default_patch_size, patch_token_model, sincos_position_table
from tests.harness import check_method_contract

# Small enough for a test step: 8x8 patches of 4 px, two blocks of width 32.
TINY = {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2}


def _images(n, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, size, size, 3)).astype("float32")


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _closed_form(dim, depth, patch, image_size, learned_positions=True):
    """Parameters of a ViT encoder: patch projection, class token, positions, blocks, final LayerNorm."""
    tokens = (image_size // patch) ** 2 + 1
    patch_embed = 3 * patch * patch * dim + dim
    # Per block: q, k, v, output projections 4 D^2 + 4 D; MLP D*4D + 4D + 4D*D + D = 8 D^2 + 5 D; two
    # LayerNorms 4 D.
    block = 12 * dim * dim + 13 * dim
    positions = tokens * dim if learned_positions else 0
    return patch_embed + dim + positions + depth * block + 2 * dim


def mae_2d_sincos(embed_dim, grid_size):
    """MAE's `get_2d_sincos_pos_embed(embed_dim, grid_size)` in NumPy: meshgrid with w first, so the first
    half of the channels encodes the column and the second half the row; each half [sin | cos]."""

    def one_axis(dim, positions):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64))
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    return np.concatenate([one_axis(embed_dim // 2, grid[0]), one_axis(embed_dim // 2, grid[1])], axis=1)


def _tokens_model(encoder):
    return keras.Model(encoder.input, encoder.get_layer("embeddings").output)


@pytest.mark.parametrize("name, dim", [("vit_tiny", 192), ("vit_small", 384)])
def test_shapes_and_parameter_counts_at_32px_patch_4(name, dim):
    keras.utils.set_random_seed(0)
    encoder = build_encoder(name, 32, patch_size=4)
    assert encoder.input.shape == (None, 32, 32, 3) and encoder.input.dtype == "float32"
    assert encoder.layers[0].name == "images" and encoder.layers[1].name == "normalization"
    assert encoder.output_shape == (None, dim) and encoder.output_names == ["features"]
    assert encoder.get_layer(TOKENS).output.shape == (None, 65, dim)
    assert len([layer for layer in encoder.layers if isinstance(layer, keras.layers.MultiHeadAttention)]) == 12
    # vit_tiny: 9,408 + 192 + 12,480 + 12 * 444,864 + 384 = 5,360,832; vit_small: 18,816 + 384 + 24,960 +
    # 12 * 1,774,464 + 768 = 21,338,496, which is timm's vit_small_patch16_224 (22,050,664) less its head
    # (385,000), its 16 px projection (295,296 vs 18,816) and its 197 positions (75,648 vs 24,960).
    expected = {"vit_tiny": 5_360_832, "vit_small": 21_338_496}[name]
    assert _closed_form(dim, 12, 4, 32) == expected
    assert encoder.count_params() == _count(encoder.trainable_weights) == expected
    assert encoder.get_layer("cls_token").kernel.shape == (1, 1, dim)
    assert encoder.get_layer("pos_embed").kernel.shape == (1, 65, dim)
    with pytest.raises(ValueError):  # no spatial conv map: the methods that need one cannot take a ViT
        encoder.get_layer(FEATURE_MAP)


def test_tiny_overrides_features_and_patch_grid():
    keras.utils.set_random_seed(0)
    encoder = build_encoder("vit_tiny", 32, mlp_ratio=2.0, **TINY)
    # An MLP 2D instead of 4D wide: 2 (D * 2D + 2D) fewer per block.
    assert encoder.count_params() == _closed_form(32, 2, 4, 32) - 2 * (4 * 32 * 32 + 2 * 32)
    images = _images(3)
    features = np.asarray(encoder(images, training=False))
    tokens = np.asarray(keras.Model(encoder.input, encoder.get_layer(TOKENS).output)(images))
    assert features.shape == (3, 32) and np.isfinite(features).all()
    np.testing.assert_array_equal(features, tokens[:, 0])  # the class token after the final LayerNorm
    grid = np.asarray(patch_token_model(encoder)(images))
    assert grid.shape == (3, 8, 8, 32)
    np.testing.assert_array_equal(grid.reshape(3, 64, 32), tokens[:, 1:])
    # Examples do not interact (no batch statistics): one image alone gives the same features.
    np.testing.assert_allclose(np.asarray(encoder(images[1:2], training=False))[0], features[1], atol=1e-5)


def test_default_patch_size_and_options():
    assert [default_patch_size(s) for s in (32, 64, 96, 128, 224)] == [4, 8, 12, 16, 16]
    assert build_encoder("vit_tiny", 64, depth=1).get_layer("patch_embed").kernel.shape == (8, 8, 3, 192)
    assert set(encoder_options("vit_small")) == {
        "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "position_embedding",
        "frozen_patch_embedding", "dropout", "mean", "std"}
    assert encoder_options("vit_tiny")["dropout"] == 0.0
    no_dropout = build_encoder("vit_tiny", 32, **TINY)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in no_dropout.layers)
    with_dropout = build_encoder("vit_tiny", 32, dropout=0.1, **TINY)
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in with_dropout.layers) == 1 + 3 * 2
    # LayerNorm as the reference ViTs: eps 1e-6.
    assert {layer.epsilon for layer in with_dropout.layers
            if isinstance(layer, keras.layers.LayerNormalization)} == {1e-6}


def test_sincos_table_matches_mae_and_is_fixed():
    keras.utils.set_random_seed(0)
    encoder = build_encoder("vit_tiny", 32, position_embedding="sincos", **TINY)
    # No position weight at all: the table is a constant of the graph, so nothing can train it.
    assert "pos_embed" not in {layer.name for layer in encoder.layers}
    assert encoder.count_params() == _count(encoder.trainable_weights) == _closed_form(32, 2, 4, 32, False)
    # With a zero patch projection the patch tokens are exactly the table; the class token gets none.
    projection = encoder.get_layer("patch_embed")
    projection.set_weights([np.zeros_like(w) for w in projection.get_weights()])
    tokens = np.asarray(_tokens_model(encoder)(_images(2)))
    reference = mae_2d_sincos(32, 8)
    np.testing.assert_allclose(tokens[0, 1:], reference, atol=1e-6)
    np.testing.assert_allclose(tokens[1, 1:], reference, atol=1e-6)
    np.testing.assert_array_equal(tokens[0, 0], encoder.get_layer("cls_token").kernel.numpy()[0, 0])
    # vit_small's width and a 14x14 grid (224 px, patch 16): the same table as MAE's.
    np.testing.assert_allclose(sincos_position_table(14, 384), mae_2d_sincos(384, 14), atol=1e-6)
    # A training step leaves it unchanged (it is not among the variables at all).
    before = np.asarray(_tokens_model(encoder)(_images(1)))
    _train_step(encoder)
    projection.set_weights([np.zeros_like(w) for w in projection.get_weights()])
    after = np.asarray(_tokens_model(encoder)(_images(1)))
    np.testing.assert_allclose(after[0, 1:], before[0, 1:], atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_encoder("vit_tiny", 32, position_embedding="sincos", patch_size=4, depth=1, embed_dim=6, num_heads=2)


def _train_step(encoder, lr=0.1):
    """One SGD step on a loss of every feature: every trainable variable gets a gradient."""
    optimizer = keras.optimizers.SGD(lr)
    images = tf.constant(_images(4, seed=5))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(encoder(images, training=True) - 1.0))
    gradients = tape.gradient(loss, encoder.trainable_variables)
    assert all(g is not None for g in gradients)
    optimizer.apply_gradients(zip(gradients, encoder.trainable_variables))


def test_frozen_patch_embedding_stays_at_its_initialisation():
    keras.utils.set_random_seed(0)
    encoder = build_encoder("vit_tiny", 32, frozen_patch_embedding=True, **TINY)
    projection = encoder.get_layer("patch_embed")
    assert not projection.trainable and projection.trainable_weights == []
    assert {id(v) for v in projection.weights}.isdisjoint(id(v) for v in encoder.trainable_weights)
    assert _count(encoder.trainable_weights) == _closed_form(32, 2, 4, 32) - (3 * 16 * 32 + 32)
    kernel, bias = (w.copy() for w in projection.get_weights())
    cls_before = encoder.get_layer("cls_token").kernel.numpy().copy()
    _train_step(encoder)
    np.testing.assert_array_equal(projection.get_weights()[0], kernel)
    np.testing.assert_array_equal(projection.get_weights()[1], bias)
    assert not np.allclose(encoder.get_layer("cls_token").kernel.numpy(), cls_before)  # the rest trains
    # Xavier-uniform on the (3 p^2 -> D) projection: bound sqrt(6 / (48 + 32)).
    assert np.abs(kernel).max() <= np.sqrt(6.0 / (48 + 32)) and np.abs(kernel).max() > 0.8 * np.sqrt(6.0 / 80)
    # Learned tokens and positions at truncated normal std 0.02 (at most 2 std).
    default = build_encoder("vit_tiny", 32, **TINY)
    assert default.get_layer("patch_embed").trainable
    for name in ("cls_token", "pos_embed"):
        assert 0.0 < np.abs(default.get_layer(name).kernel.numpy()).max() <= 0.04


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"image_size 30 is not divisible by patch_size 4: .*patch_size to a "
                                         r"divisor of 30 \(e.g. 3 or 5\)"):
        build_encoder("vit_tiny", 30, patch_size=4)
    with pytest.raises(ValueError, match=r"image_size 50 is not divisible by patch_size 6 \(the default"):
        build_encoder("vit_tiny", 50)  # the default patch (50 // 8) must divide too
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        build_encoder("vit_tiny", 32, embed_dim=32, num_heads=3)
    with pytest.raises(ValueError, match="position_embedding must be one of learned, sincos"):
        build_encoder("vit_tiny", 32, position_embedding="rope")
    with pytest.raises(ValueError, match="dropout"):
        build_encoder("vit_tiny", 32, dropout=1.0)
    with pytest.raises(ValueError, match="depth"):
        build_encoder("vit_tiny", 32, depth=0)


_LOAD_SCRIPT = """
import json, sys
import numpy as np
import keras
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
out = np.asarray(model(np.load(sys.argv[2]), training=False)).tolist()
assert not any(name.startswith("sslzoo") for name in sys.modules), "sslzoo was imported"
print("RESULTS" + json.dumps(out))
"""


@pytest.mark.parametrize("position_embedding", ["learned", "sincos"])
def test_keras_round_trip_with_safe_mode(tmp_path, position_embedding):
    keras.utils.set_random_seed(1)
    encoder = build_encoder("vit_tiny", 32, position_embedding=position_embedding, frozen_patch_embedding=True,
                            **TINY)
    for variable in encoder.weights:  # away from the initialisation, so a load that ignores weights fails
        variable.assign(variable + np.random.default_rng(2).normal(0.0, 0.05, variable.shape).astype("float32"))
    images = _images(3, seed=3)
    expected = np.asarray(encoder(images, training=False))
    encoder.save(tmp_path / "vit.keras")
    loaded = keras.saving.load_model(tmp_path / "vit.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(images, training=False)), expected)
    assert not loaded.get_layer("patch_embed").trainable
    if position_embedding == "learned":
        return
    # Built-in layers and keras.ops only: a fresh process without sslzoo loads it too.
    np.save(tmp_path / "images.npy", images)
    run = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, "vit.keras", "images.npy"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = np.asarray(json.loads(run.stdout.split("RESULTS", 1)[1]), "float32")
    assert np.abs(loaded - expected).max() <= 1e-6


def test_simclr_contract_and_export_parity_on_a_tiny_vit(tmp_path):
    # .keras round trip, SavedModel parity <= 1e-5 at batch 1/7/32 and TFLite float32 <= 1e-4.
    check_method_contract("simclr", {"projection_dim": 16}, tmp_path,
                          encoder={"name": "vit_tiny", "options": dict(TINY)})


def _smooth_images(count, seed, size=32):
    """Blocky colour noise upsampled, plus a little pixel noise: closer to photos than white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 4, 4, 3)).astype(np.float32)
    images = np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2)
    return np.clip(images + 0.1 * rng.standard_normal(images.shape).astype(np.float32), 0.0, 1.0)


def test_tflite_float32_and_int8_agreement(tmp_path):
    """float32 and full-integer int8 TFLite features of a tiny ViT against Keras (`-s` prints the figures).

    int8 activations share one scale per tensor. At initialisation the class token (std 0.02) is about a
    hundred times smaller than the patch tokens it is concatenated with, so int8 rounds it to a few steps
    and the features drift (cosine ~0.5-0.9 here); with the class token on the patch tokens' scale the
    zoo's int8 target (cosine >= 0.98) holds, so the ops themselves (LayerNorm, attention, GELU) convert.
    """
    from sslzoo.export.litert_model import TFLiteModel
    from sslzoo.export.saved_model import save_saved_model
    from sslzoo.export.tflite import convert_variant
    from sslzoo.export.tflite_quality import FLOAT32_MAX_ABS_DIFF, INT8_MIN_COSINE, max_abs_diff, mean_cosine

    keras.utils.set_random_seed(0)
    encoder = build_encoder("vit_tiny", 32, position_embedding="sincos", **TINY)
    images, calibration = _smooth_images(32, seed=2), _smooth_images(64, seed=1)
    figures = {}
    for case in ("initialised", "class_token_rescaled"):
        if case == "class_token_rescaled":
            patches = np.asarray(_tokens_model(encoder)(calibration))[:, 1:]
            token = encoder.get_layer("cls_token").kernel
            token.assign(token * np.sqrt(np.mean(patches**2) / np.mean(token.numpy() ** 2)))
        save_saved_model(encoder, tmp_path / case / "1", 32)
        reference = np.asarray(encoder(images, training=False))
        for variant in ("float32", "int8"):
            blob = convert_variant(tmp_path / case / "1", variant, calibration, min_representative=64)
            features = TFLiteModel(blob, num_threads=1).predict(images)
            assert np.isfinite(features).all()
            figures[f"{case} {variant}"] = {"max_abs_diff": max_abs_diff(features, reference),
                                            "mean_cosine": mean_cosine(features, reference)}
    print("vit tflite agreement", json.dumps(figures, indent=1))
    assert figures["initialised float32"]["max_abs_diff"] <= FLOAT32_MAX_ABS_DIFF
    assert figures["class_token_rescaled float32"]["max_abs_diff"] <= FLOAT32_MAX_ABS_DIFF
    assert figures["class_token_rescaled int8"]["mean_cosine"] >= INT8_MIN_COSINE


def test_at_input_size_refuses_a_vit():
    from sslzoo.backbones import at_input_size

    encoder = build_encoder("vit_tiny", 32, **TINY)
    with pytest.raises(ValueError, match="Vision Transformer.*fixes its input size"):
        at_input_size(encoder, 16)
    assert at_input_size(encoder, 32).output_shape == (None, 32)  # the same size is the same model
