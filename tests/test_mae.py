"""MAE: the loss against a NumPy transcription of the official `forward_loss` and its closed forms,
patchify / unpatchify against the official layout, random masking against the official `random_masking`
and its invariants, the visible-token encoder against the full ViT, the decoder's shape and order, the
gradients, the refusals, the method contract on a tiny ViT, and learning on CIFAR-10."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo import config as config_lib
from sslzoo.augment.tokens import keep_count, patchify, random_masking, unpatchify
from sslzoo.backbones import build_encoder
from sslzoo.backbones.vit import TOKENS, encode_visible
from sslzoo.config import ConfigError
from sslzoo.heads import masked_decoder
from sslzoo.losses import mae_loss
from sslzoo.methods import build_method
from sslzoo.training.trainer import build_models
from tests.harness import assert_beats_random_init, check_method_contract, train_on_cifar

ROOT = Path(__file__).resolve().parents[1]

SEED = tf.constant([3, 7], tf.int32)
TINY_VIT = {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2, "position_embedding": "sincos"}
TINY = {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2}


def _images(batch=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype(np.float32)


# --- official code, transcribed to NumPy (models_mae.py) ----------------------------------------------------
def official_patchify(images_nchw, p):
    n, c, h, w = images_nchw.shape
    x = images_nchw.reshape(n, c, h // p, p, w // p, p)
    x = np.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def official_forward_loss(images_nchw, pred, mask, p, norm_pix_loss):
    target = official_patchify(images_nchw, p).astype(np.float64)
    if norm_pix_loss:
        mean = target.mean(axis=-1, keepdims=True)
        var = target.var(axis=-1, ddof=1, keepdims=True)  # torch's .var: unbiased
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(axis=-1)
    return (loss * mask).sum() / mask.sum()


def official_random_masking(noise, mask_ratio):
    n, length = noise.shape
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = np.argsort(noise, axis=1, kind="stable")
    ids_restore = np.argsort(ids_shuffle, axis=1, kind="stable")
    mask = np.ones((n, length))
    mask[:, :len_keep] = 0
    return ids_shuffle[:, :len_keep], ids_restore, np.take_along_axis(mask, ids_restore, axis=1)


# --- the loss -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_loss_matches_the_official_forward_loss(norm_pix_loss):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    pred = rng.normal(size=(3, 4, 48)).astype(np.float32)
    mask = (rng.uniform(size=(3, 4)) < 0.6).astype(np.float32)
    mask[0, 0] = 1.0
    expected = official_forward_loss(images.transpose(0, 3, 1, 2), pred, mask, 4, norm_pix_loss)
    got = mae_loss(pred, patchify(tf.constant(images), 4), mask, norm_pix_loss)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    if norm_pix_loss:
        # The biased variance (n, not n - 1) gives another value: the test can tell them apart.
        target = official_patchify(images.transpose(0, 3, 1, 2), 4)
        biased = (target - target.mean(-1, keepdims=True)) / (target.var(-1, keepdims=True) + 1e-6) ** 0.5
        other = (((pred - biased) ** 2).mean(-1) * mask).sum() / mask.sum()
        assert abs(other - expected) > 1e-4


def test_loss_closed_forms():
    rng = np.random.default_rng(2)
    target = rng.normal(size=(2, 6, 12)).astype(np.float32)
    mask = np.array([[1, 0, 1, 0, 0, 1], [0, 0, 1, 1, 1, 0]], np.float32)
    assert float(mae_loss(target, target, mask)) == 0.0
    standardised = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    assert float(mae_loss(standardised, target, mask, norm_pix_loss=True)) == pytest.approx(0.0, abs=1e-10)
    # Only masked patches count: anything on the visible ones leaves the loss as it is.
    pred = rng.normal(size=target.shape).astype(np.float32)
    changed = np.where(mask[..., None] == 0, pred + 100.0, pred)
    assert float(mae_loss(changed, target, mask)) == pytest.approx(float(mae_loss(pred, target, mask)), rel=1e-6)
    # A constant error e on every value of a masked patch gives e^2, whatever the number of masked patches.
    assert float(mae_loss(target + 0.5, target, mask)) == pytest.approx(0.25, rel=1e-5)


# --- patches ------------------------------------------------------------------------------------------------
def test_patchify_is_the_official_layout_and_unpatchify_inverts_it():
    images = _images(2, 16)
    patches = patchify(tf.constant(images), 4)
    assert patches.shape == (2, 16, 48)
    np.testing.assert_array_equal(patches.numpy(), official_patchify(images.transpose(0, 3, 1, 2), 4))
    np.testing.assert_array_equal(unpatchify(patches, 4).numpy(), images)
    # Patch k = row * 4 + col holds the pixel block at (4 row, 4 col), flattened row by row, channels last.
    k, row, col = 6, 1, 2
    block = images[1, 4 * row:4 * row + 4, 4 * col:4 * col + 4, :]
    np.testing.assert_array_equal(patches[1, k].numpy(), block.reshape(-1))
    assert patches[1, k, :3].numpy().tolist() == images[1, 4, 8].tolist()  # (py 0, px 0): RGB first


def test_patch_functions_refuse_what_does_not_tile():
    with pytest.raises(ValueError, match="divide"):
        patchify(tf.zeros([1, 10, 10, 3]), 4)
    with pytest.raises(ValueError, match="square"):
        unpatchify(tf.zeros([1, 5, 48]), 4)


# --- masking ------------------------------------------------------------------------------------------------
def test_random_masking_is_the_official_one_and_keeps_its_invariants():
    batch, length, ratio = 6, 64, 0.75
    ids_keep, ids_restore, mask = (t.numpy() for t in random_masking(batch, length, ratio, SEED))
    len_keep = keep_count(length, ratio)
    assert len_keep == 16 and ids_keep.shape == (batch, 16) and ids_restore.shape == mask.shape == (batch, length)
    noise = tf.random.stateless_uniform([batch, length], seed=SEED).numpy()
    for mine, official in zip((ids_keep, ids_restore, mask), official_random_masking(noise, ratio)):
        np.testing.assert_array_equal(mine, official)
    assert (mask.sum(axis=1) == length - len_keep).all()
    for keep, restore, m in zip(ids_keep, ids_restore, mask):
        assert len(set(keep.tolist())) == len_keep and (m[keep] == 0).all()
        ids_shuffle = np.argsort(restore)
        np.testing.assert_array_equal(ids_shuffle[restore], np.arange(length))  # the inverse permutation
        np.testing.assert_array_equal(ids_shuffle[:len_keep], keep)
    assert len({tuple(m) for m in mask}) == batch  # every image its own mask
    again = random_masking(batch, length, ratio, SEED)[2].numpy()
    np.testing.assert_array_equal(again, mask)
    assert not np.array_equal(random_masking(batch, length, ratio, SEED + 1)[2].numpy(), mask)


# --- the encoder on visible tokens -------------------------------------------------------------------------
@pytest.mark.parametrize("position_embedding", ["sincos", "learned"])
def test_visible_tokens_with_nothing_masked_are_the_full_encoder(position_embedding):
    keras.utils.set_random_seed(0)
    encoder = build_encoder("vit_tiny", 32, **{**TINY_VIT, "position_embedding": position_embedding, "dropout": 0.1})
    images = _images()
    tokens = keras.Model(encoder.input, encoder.get_layer(TOKENS).output)(images).numpy()
    identity = np.tile(np.arange(64), (4, 1))
    visible = encode_visible(encoder, images, identity).numpy()
    np.testing.assert_allclose(visible, tokens, atol=1e-5)
    np.testing.assert_allclose(visible[:, 0], encoder(images).numpy(), atol=1e-5)
    # Any order of all the patches is the same tokens, permuted: each carries its own position.
    ids_keep, ids_restore, _ = random_masking(4, 64, 0.0, SEED)
    shuffled = encode_visible(encoder, images, ids_keep).numpy()
    np.testing.assert_allclose(np.take_along_axis(shuffled[:, 1:], ids_restore.numpy()[..., None], axis=1),
                               tokens[:, 1:], atol=1e-5)


def test_visible_tokens_refuse_a_convnet():
    with pytest.raises(ValueError, match="ViT"):
        encode_visible(build_encoder("convnet_small", 32, width=0.25), _images(), np.zeros((4, 2), np.int32))


# --- the method ---------------------------------------------------------------------------------------------
def tiny_mae(num_classes=0, **options):
    keras.utils.set_random_seed(0)
    return build_method("mae", {**TINY, **options}, build_encoder("vit_tiny", 32, **TINY_VIT),
                        num_classes=num_classes)


def test_decoder_shape_and_that_only_the_visible_set_matters_not_its_order():
    method = tiny_mae()
    assert method.decoder.output_shape == (None, 64, 48)
    assert masked_decoder(16, 8, 12, width=8, depth=1, num_heads=2).output_shape == (None, 16, 12)
    images = _images(2)
    ids_keep, ids_restore, mask = random_masking(2, 64, 0.75, SEED)
    # The same visible patches listed in reverse: ids_restore must follow (their ranks reversed).
    reverse_keep = ids_keep[:, ::-1]
    rank = ids_restore.numpy()
    reverse_restore = np.where(rank < 16, 15 - rank, rank)
    a = method.reconstruct({"images": images, "ids_keep": ids_keep, "ids_restore": ids_restore})
    b = method.reconstruct({"images": images, "ids_keep": reverse_keep, "ids_restore": reverse_restore})
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    # ... and another visible set changes the prediction.
    other_keep, other_restore, _ = random_masking(2, 64, 0.75, SEED + 1)
    c = method.reconstruct({"images": images, "ids_keep": other_keep, "ids_restore": other_restore})
    assert np.abs(a.numpy() - c.numpy()).max() > 1e-4


def test_the_method_loss_and_gradients_reach_encoder_decoder_and_probe():
    method = tiny_mae(num_classes=10, norm_pix_loss=False)
    data = method.augment(tf.constant(_images()), tf.range(4) % 10, SEED)
    assert data["images"].shape == (4, 32, 32, 3) and data["ids_keep"].shape == (4, 16)
    with tf.GradientTape() as tape:
        loss, logs = method.compute_loss_and_logs(data, training=True)
    target = ((data["images"].numpy() - method.pixel_mean) / method.pixel_std).transpose(0, 3, 1, 2)
    prediction = method.reconstruct(data).numpy()
    expected = official_forward_loss(target, prediction, data["mask"].numpy(), 4, False)
    assert float(logs["reconstruction_loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(loss) == pytest.approx(float(logs["loss"]) + float(logs["probe_loss"]), rel=1e-6)
    grads = tape.gradient(loss, method.trainable_variables)
    named = {v.path: g for v, g in zip(method.trainable_variables, grads)}
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in named.values()), \
        [p for p, g in named.items() if g is None]
    assert any("mask_token" in p for p in named) and any("cls_token" in p for p in named)


def test_a_convnet_encoder_is_refused_naming_the_fix():
    with pytest.raises(ConfigError, match="encoder.name=vit_tiny"):
        build_method("mae", TINY, build_encoder("convnet_small", 32, width=0.25))


@pytest.mark.parametrize("options, words", [({"mask_ratio": 0.0}, "mask_ratio"),
                                            ({"mask_ratio": 0.99}, "mask_ratio"),
                                            ({"decoder_width": 18}, "decoder_width"),
                                            ({"crop_scale": [0.9, 0.2]}, "crop_scale")])
def test_bad_options_fail_naming_the_key(options, words):
    with pytest.raises(ConfigError, match=words):
        tiny_mae(**options)


def test_contract(tmp_path):
    check_method_contract("mae", TINY, tmp_path, encoder={"name": "vit_tiny", "options": TINY_VIT})


def test_the_zoo_config_builds_the_recipe_it_states():
    config = config_lib.load(ROOT / "zoo_configs" / "mae_vit_tiny_cifar10.yaml", ["data.source=synthetic"])
    assert (config.optimizer.name, config.optimizer.beta_2, config.trainer.batch_size) == ("adamw", 0.95, 64)
    encoder, method = build_models(config, num_classes=10)
    options = method.options
    assert (options.mask_ratio, options.norm_pix_loss, options.crop_scale) == (0.75, False, (0.2, 1.0))
    assert encoder.output_shape == (None, 64) and method.num_patches == 64 and method.patch_size == 4
    assert keep_count(method.num_patches, options.mask_ratio) == 16


# --- learning -------------------------------------------------------------------------------------------
# Margins: half the smallest gain of seeds 1-3 (trainer.seed); the test runs seed 0, measured after the
# margins were set. Gains over the same run's random init (kNN / linear), the test's command plus --set
# trainer.seed=S, 2026-12-01: seed 1 +0.2 / +1.8, seed 2 +1.0 / +0.8, seed 3 +2.6 / +4.7; then seed 0
# +2.4 / +2.9. At this budget (560 steps) MAE's class token is only a little ahead of a random ViT's: the
# margins are thin because the gains are. At the benchmark's budget (45,000 images x 4 epochs) the gains
# are +3.5 kNN, +3.2 linear and +7.3 fine-tuned on 10% of the labels (docs/benchmark.md, the ViT table).
KNN_MARGIN, LINEAR_MARGIN = 0.1, 0.4


def test_mae_beats_its_random_init_encoder_on_cifar10_validation(tmp_path):
    """The zoo config (4 blocks of width 64, decoder 2 x 64, 75% masked) on 10,000 CIFAR-10 images (9,000
    train / 1,000 validation) for 4 epochs. The online probe is off: it reads detached features, so it
    cannot change the encoder, and it costs a third of the step."""
    metrics = train_on_cifar(tmp_path / "run", "zoo_configs/mae_vit_tiny_cifar10.yaml",
                             "data.max_examples=10000", "trainer.epochs=4", "method.online_probe=false")
    assert_beats_random_init(metrics, KNN_MARGIN, LINEAR_MARGIN)
