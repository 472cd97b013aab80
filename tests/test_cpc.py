"""CPC v2: patch grid geometry, row-causal context, InfoNCE vs the paper, layer-norm encoders, contract,
learning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.augment.grid import augment_patches, check_grid, cut_grid, drop_colours, patch_positions
from sslzoo.backbones import build_encoder
from sslzoo.config import ConfigError
from sslzoo.losses.cpc import cpc_loss, first_clear_step
from sslzoo.methods import build_method
from sslzoo.methods.cpc import context_network
from tests.harness import check_method_contract, train_on_cifar


def _layer_norm_encoder(size=32, width=0.25):
    return build_encoder("convnet_small", size, width=width, norm="layer")


def _coordinate_images(batch=2, size=32):
    """Images whose pixel values encode (image, row, col): every patch's origin is recoverable."""
    b, r, c = np.meshgrid(np.arange(batch), np.arange(size), np.arange(size), indexing="ij")
    return np.stack([b * 0.25, r / size, c / size], axis=-1).astype("float32")


# --- the patch grid ---------------------------------------------------------------------------------

def _check_grid_patches(patches, images, patch, stride):
    n = len(patch_positions(images.shape[1], patch, stride))
    assert patches.shape == (images.shape[0], n * n, patch, patch, 3)
    for b in range(images.shape[0]):
        for index in range(n * n):
            top, left = (index // n) * stride, (index % n) * stride
            np.testing.assert_array_equal(patches[b, index], images[b, top:top + patch, left:left + patch])


@pytest.mark.parametrize(
    "size, patch, stride, grid", [(32, 8, 4, 7), (64, 16, 8, 7), (32, 16, 16, 2), (30, 6, 4, 7)]
)
def test_grid_positions_count_and_overlap(size, patch, stride, grid):
    images = _coordinate_images(size=size)
    assert check_grid(size, patch, stride, steps=1) == grid
    assert patch_positions(size, patch, stride) == [i * stride for i in range(grid)]
    patches = cut_grid(tf.constant(images), patch, stride).numpy()
    _check_grid_patches(patches, images, patch, stride)
    # The last patch ends at the image border: the grid covers every pixel exactly to the edge.
    assert patch_positions(size, patch, stride)[-1] + patch == size
    if stride < patch:  # horizontal neighbours share patch - stride columns (50% for the paper's geometry)
        overlap = patch - stride
        np.testing.assert_array_equal(patches[:, 0, :, stride:], patches[:, 1, :, :overlap])


def test_grid_inside_tf_data_matches_eager():
    images = _coordinate_images(batch=3)
    dataset = tf.data.Dataset.from_tensors(images).map(lambda x: cut_grid(x, 8, 4))
    patches = next(iter(dataset)).numpy()
    _check_grid_patches(patches, images, 8, 4)
    np.testing.assert_array_equal(patches, cut_grid(tf.constant(images), 8, 4).numpy())


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"patch_size": 40}, r"patch_size 40 is larger than the 32x32 image.*patch_size <= 32"),
        ({"patch_size": 8, "patch_stride": 5},
         r"patch_stride 5 does not tile the 32x32 image.*\[1, 2, 3, 4, 6, 8, 12, 24\]"),
        ({"patch_size": 16, "patch_stride": 16, "steps": 2}, r"steps 2.*2x2 grid.*\[1, 1\]"),
        ({"steps": 7}, r"steps 7.*7x7 grid.*\[1, 6\]"),
        ({"steps": 5, "skip_overlapping": True}, r"steps 5: .*rows 3..7 ahead inside a 7x7 grid \(skip_overlapping "
                                                 r"starts at row 3.*\[1, 4\]"),
        ({"patch_stride": 0}, r"patch_stride 0 must both be >= 1"),
        ({"resize": 48, "patch_size": 56}, r"larger than the 48x48 image after resize"),
        ({"patch_size": 2, "patch_stride": 2}, r"cannot run on 2x2 patches"),
        ({"features": "pooled"}, r"features: 'pooled' is not one of 'grid', 'full'"),
        ({"colour_drop": 1.5}, r"colour_drop 1.5: must be <= 1 \(probability"),
        ({"group_size": -1}, r"group_size -1: must be >= 0"),
        ({"context_kernel": 0}, r"context_kernel 0: must be >= 1"),
        ({"grid": 7}, "unknown method.options key"),
    ],
)
def test_bad_options_fail_clearly(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_method("cpc", options, _layer_norm_encoder())


def test_unknown_option_fails_listing_every_allowed_key():
    with pytest.raises(ConfigError, match="unknown method.options key.*grid") as error:
        build_method("cpc", {"grid": 7}, _layer_norm_encoder())
    allowed = str(error.value).split("allowed:", 1)[1]
    for key in ("resize", "patch_size", "patch_stride", "steps", "group_size", "context_width", "context_blocks",
                "context_kernel", "encoder_norm", "features", "flip", "crop_padding", "patch_flip", "colour_drop",
                "patch_jitter", "skip_overlapping"):
        assert f"{key}:" in allowed, key


# --- per-patch augmentations ------------------------------------------------------------------------

def test_colour_dropping_keeps_one_channel_per_patch():
    patches = tf.random.uniform((200, 4, 4, 3), seed=3)
    fill = [0.1, 0.2, 0.3]
    dropped = drop_colours(patches, 1.0, fill, tf.constant([1, 2])).numpy()
    original = patches.numpy()
    kept = [np.flatnonzero([np.array_equal(d[..., c], o[..., c]) for c in range(3)])
            for d, o in zip(dropped, original)]
    assert all(len(k) == 1 for k in kept)  # exactly one channel survives
    assert {int(k[0]) for k in kept} == {0, 1, 2}  # and which one is random
    for d, k in zip(dropped, kept):
        for c in set(range(3)) - {int(k[0])}:
            np.testing.assert_allclose(d[..., c], fill[c])
    untouched = drop_colours(patches, 0.0, fill, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(untouched, original)


def test_patch_augmentations_are_per_patch_and_seeded_inside_tf_data():
    images = _coordinate_images(batch=4)
    patches = cut_grid(tf.constant(images), 8, 4)

    def augment(x):
        return augment_patches(x, tf.constant([5, 6]), flip_probability=0.5, colour_drop_probability=0.0)

    flipped = next(iter(tf.data.Dataset.from_tensors(patches).map(augment))).numpy()
    np.testing.assert_array_equal(flipped, augment(patches).numpy())  # same seed, same result
    original = patches.numpy()
    pairs = [list(zip(fb, ob)) for fb, ob in zip(flipped, original)]
    mirrored = np.array([[np.array_equal(f, o[:, ::-1]) for f, o in row] for row in pairs])
    same = np.array([[np.array_equal(f, o) for f, o in row] for row in pairs])
    assert (mirrored | same).all()  # every patch is itself or its mirror image
    assert 0.3 < mirrored.mean() < 0.7  # decided per patch, not once per image


# --- layer-norm encoders (the `norm` encoder option) -----------------------------------------------------

@pytest.mark.parametrize("name", ["convnet_small", "resnet18"])
def test_layer_norm_encoder_keeps_examples_independent_in_training(name):
    """BN in training mode mixes statistics across the batch (CPC v2's shortcut between patches); the
    layer-norm option does not: an example's features do not depend on the rest of its batch."""
    images = tf.random.uniform((6, 16, 16, 3), seed=4)
    other = tf.concat([images[:1], tf.random.uniform((5, 16, 16, 3), seed=5)], axis=0)
    layer = build_encoder(name, 16, width=0.125, norm="layer")
    assert not any("BatchNormalization" in type(x).__name__ for x in layer.layers)
    np.testing.assert_allclose(layer(images, training=True)[0], layer(other, training=True)[0], atol=1e-5)
    batch = build_encoder(name, 16, width=0.125)  # the default stays batch norm
    assert any("BatchNormalization" in type(x).__name__ for x in batch.layers)
    assert not np.allclose(batch(images, training=True)[0], batch(other, training=True)[0], atol=1e-3)


def test_unknown_norm_fails():
    with pytest.raises(ValueError, match="norm must be one of batch, batch_fused, batch_keras, layer"):
        build_encoder("convnet_small", 32, norm="instance")


def test_method_rebuilds_a_batch_norm_encoder_with_layer_norm():
    def make_encoder(**overrides):
        return build_encoder("convnet_small", 32, width=0.25, **overrides)

    method = build_method("cpc", {}, make_encoder(), make_encoder=make_encoder)
    patch_layers = method.patch_encoder.layers
    assert any(isinstance(layer, keras.layers.GroupNormalization) for layer in patch_layers)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in patch_layers)
    with pytest.raises(ConfigError, match="encoder.options.norm: layer"):
        build_method("cpc", {}, make_encoder())  # BN and no way to rebuild it: refuse, naming the fix
    nin = build_encoder("nin", 32)
    with pytest.raises(ConfigError, match="no layer-norm option"):
        build_method("cpc", {}, nin, make_encoder=lambda **o: build_encoder("nin", 32, **o))
    kept = build_method("cpc", {"encoder_norm": "configured"}, make_encoder())
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in kept.patch_encoder.layers)


# --- the evaluated encoder ----------------------------------------------------------------------------

def test_grid_encoder_is_the_mean_patch_encoding_over_the_grid():
    method = build_method("cpc", {}, _layer_norm_encoder())
    images = tf.random.uniform((3, 32, 32, 3), seed=6)
    patches = cut_grid(images, 8, 4)
    expected = method.encode_grid(patches).numpy()  # [3, 7, 7, D]
    np.testing.assert_allclose(method.encoder(images).numpy(), expected.mean(axis=(1, 2)), atol=1e-5)
    feature_map = method.encoder.get_layer("feature_map").output
    assert tuple(feature_map.shape[1:]) == (7, 7, method.feature_dim)


def test_full_features_run_the_patch_weights_on_whole_images():
    method = build_method("cpc", {"features": "full"}, _layer_norm_encoder())
    assert method.encoder.input_shape[1:] == (32, 32, 3)
    assert method.patch_encoder.input_shape[1:] == (8, 8, 3)
    for a, b in zip(method.encoder.weights, method.patch_encoder.weights):
        assert a is b


# --- the context network: row r sees only rows <= r ----------------------------------------------------

@pytest.mark.parametrize("blocks, kernel", [(2, 3), (1, 2), (3, 5)])
def test_context_at_row_r_ignores_rows_below_and_sees_rows_above(blocks, kernel):
    n, depth = 7, 6
    network = context_network(n, depth, width=8, blocks=blocks, kernel=kernel)
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(2, n, n, depth)).astype("float32")
    base = network(grid).numpy()
    for r in range(n):
        below = grid.copy()
        below[:, r + 1:] = rng.normal(size=below[:, r + 1:].shape)
        changed = network(below).numpy()
        np.testing.assert_array_equal(changed[:, : r + 1], base[:, : r + 1])  # rows <= r: bit-identical
        if r + 1 < n:
            assert not np.allclose(changed[:, r + 1:], base[:, r + 1:])
        # Changing row r itself, or a row above within reach, does change row r's context.
        for source in range(max(0, r - (kernel - 1)), r + 1):
            edited = grid.copy()
            edited[:, source] += 1.0
            assert not np.allclose(network(edited).numpy()[:, r], base[:, r]), (r, source)


# --- the InfoNCE loss vs the paper -------------------------------------------------------------------------

def reference_cpc_loss(context, weights, encodings, group, first_step=1):
    """Loop form of CPC's loss from the paper: for each step k and each context c_{i,j} with a row i + k
    in the grid, L = -log[f_k(z_{i+k,j}, c) / sum over candidates f_k(z, c)], f_k(z, c) = exp(z^T W_k c);
    candidates are every patch of the images in c's group (its own image included). Mean over the
    predictions of a step, then over steps. weights[s] is W_k of step k = first_step + s."""
    batch, n = encodings.shape[:2]
    step_losses = []
    for k in range(first_step, first_step + weights.shape[0]):
        terms = []
        for b in range(batch):
            first = (b // group) * group
            members = range(first, min(first + group, batch))
            candidates = np.concatenate([encodings[m].reshape(n * n, -1) for m in members])
            for i in range(n - k):
                for j in range(n):
                    prediction = weights[k - first_step] @ context[b, i, j]
                    scores = candidates @ prediction
                    positive = encodings[b, i + k, j] @ prediction
                    top = scores.max()
                    terms.append(-(positive - top - np.log(np.exp(scores - top).sum())))
        step_losses.append(np.mean(terms))
    return np.mean(step_losses), np.array(step_losses)


@pytest.mark.parametrize("batch, group", [(3, 0), (5, 2), (4, 4), (2, 9)])
def test_cpc_loss_matches_the_numpy_reference(batch, group):
    rng = np.random.default_rng(batch + group)
    n, width, depth, steps = 4, 5, 6, 2
    context = rng.normal(size=(batch, n, n, width))
    weights = rng.normal(size=(steps, depth, width)) * 0.5  # W_k: context -> encoding space
    encodings = rng.normal(size=(batch, n, n, depth))
    predictions = np.einsum("kdc,bijc->bijkd", weights, context)
    loss, step_losses, hits = cpc_loss(
        tf.constant(predictions, tf.float32), tf.constant(encodings, tf.float32), group
    )
    expected, expected_steps = reference_cpc_loss(context, weights, encodings, group or batch)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    np.testing.assert_allclose(step_losses.numpy(), expected_steps, rtol=1e-4)
    assert [h.shape for h in hits] == [(batch, n - k, n) for k in range(1, steps + 1)]


@pytest.mark.parametrize("first_step", [2, 3])
def test_cpc_loss_from_a_later_first_step_matches_the_numpy_reference(first_step):
    rng = np.random.default_rng(first_step)
    batch, n, width, depth, steps = 3, 6, 5, 6, 2
    context = rng.normal(size=(batch, n, n, width))
    weights = rng.normal(size=(steps, depth, width)) * 0.5
    encodings = rng.normal(size=(batch, n, n, depth))
    predictions = np.einsum("kdc,bijc->bijkd", weights, context)
    loss, step_losses, hits = cpc_loss(
        tf.constant(predictions, tf.float32), tf.constant(encodings, tf.float32), 2, first_step=first_step
    )
    expected, expected_steps = reference_cpc_loss(context, weights, encodings, 2, first_step=first_step)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    np.testing.assert_allclose(step_losses.numpy(), expected_steps, rtol=1e-4)
    assert [h.shape for h in hits] == [(batch, n - k, n) for k in range(first_step, first_step + steps)]


@pytest.mark.parametrize("patch, stride", [(8, 4), (8, 2), (8, 3), (16, 8), (6, 4), (4, 4), (5, 8)])
def test_first_clear_step_is_the_nearest_row_that_neither_overlaps_nor_touches(patch, stride):
    """Pixel rows of the patch row i: [i s, i s + p). Row i + k shares a pixel with row i, or borders it
    (its first pixel row is row i's last + 1), exactly for k < first_clear_step."""
    def pixel_rows(i):
        return set(range(i * stride, i * stride + patch))

    first = first_clear_step(patch, stride)
    for k in range(1, 12):
        above, below = pixel_rows(0), pixel_rows(k)
        shares_or_touches = bool(above & below) or min(below) == max(above) + 1
        assert shares_or_touches == (k < first), (k, first)


def test_skip_overlapping_predicts_the_clear_rows_and_logs_each_step():
    """8-px patches at stride 4: rows 1 and 2 below share pixels with or border the context's row, so the
    K = 2 steps are rows 3 and 4, each logged; without the option, rows 1 and 2."""
    encoder = _layer_norm_encoder()
    images = tf.random.uniform((4, 32, 32, 3), seed=3)
    for skip, steps in ((True, (3, 4)), (False, (1, 2))):
        method = build_method("cpc", {"steps": 2, "group_size": 4, "skip_overlapping": skip}, encoder,
                              num_classes=10)
        assert method.first_step == steps[0]
        data = method.augment(images, tf.zeros(4, tf.int32), tf.constant([1, 2]))
        encodings, predictions = method.predict_grid(data["patches"])
        loss, logs = method.compute_loss_and_logs(data, training=False)
        expected, _, hits = cpc_loss(predictions, encodings, 4, first_step=steps[0])
        np.testing.assert_allclose(float(logs["loss"]), float(expected), rtol=1e-5)
        names = [f"cpc_top1_k{k}" for k in steps]
        assert [name for name in logs if name.startswith("cpc_top1_k")] == names
        assert set(names) <= set(method.trackers)
        for name, hit in zip(names, hits):
            np.testing.assert_allclose(float(logs[name]), float(tf.reduce_mean(hit)))
        assert [h.shape[1] for h in hits] == [7 - k for k in steps]


def test_cpc_loss_closed_form_equal_scores_give_log_of_the_candidates():
    """All scores equal (zero predictions): every step's loss is log(number of candidates)."""
    n, depth = 7, 8
    encodings = tf.random.normal((6, n, n, depth), seed=7)
    predictions = tf.zeros((6, n, n, 3, depth))
    loss, step_losses, _ = cpc_loss(predictions, encodings)
    np.testing.assert_allclose(step_losses.numpy(), np.log(6 * n * n), rtol=1e-6)
    np.testing.assert_allclose(float(loss), np.log(6 * n * n), rtol=1e-6)
    # Groups of 4 over 6 images: 4 images' queries see 4 * 49 candidates, the last 2 see 2 * 49.
    loss, _, _ = cpc_loss(predictions, encodings, group_size=4)
    np.testing.assert_allclose(float(loss), (4 * np.log(4 * n * n) + 2 * np.log(2 * n * n)) / 6, rtol=1e-6)


def test_perfect_predictions_are_found_among_the_candidates():
    """Predictions equal to (a large multiple of) their targets pick them out: loss ~ 0, every hit 1."""
    n, depth = 5, 16
    encodings = tf.math.l2_normalize(tf.random.normal((3, n, n, depth), seed=8), axis=-1)
    shifted = [tf.pad(encodings[:, k:], [[0, 0], [0, k], [0, 0], [0, 0]]) for k in (1, 2)]
    predictions = 50.0 * tf.stack(shifted, axis=3)
    loss, _, hits = cpc_loss(predictions, encodings)
    assert float(loss) < 1e-3
    assert all(float(tf.reduce_mean(h)) == 1.0 for h in hits)


def test_prediction_heads_are_one_bias_free_linear_map_per_step():
    method = build_method("cpc", {"steps": 2, "context_width": 12}, _layer_norm_encoder())
    kernel = method.predictor.get_layer("prediction_heads_dense").kernel.numpy()  # [C, K * D]
    assert len(method.predictor.weights) == 1  # no bias: f_k(z, c) = exp(z^T W_k c)
    context = np.random.default_rng(1).normal(size=(2, 7, 7, 12)).astype("float32")
    predictions = method.predictor(context).numpy()
    depth = method.feature_dim
    for k in range(2):
        expected = context @ kernel[:, k * depth:(k + 1) * depth]
        np.testing.assert_allclose(predictions[..., k, :], expected, atol=1e-5)


# --- contract and pictures ------------------------------------------------------------------------------

def test_cpc_passes_the_method_contract(tmp_path):
    # A 3x3 grid of 16 px patches (stride 8): the same grid-cutting encoder as the default 7x7, whose
    # 49 unrolled patch encoders make the export ~5x slower without testing anything more.
    options = {"group_size": 8, "context_blocks": 1, "patch_size": 16, "patch_stride": 8, "steps": 1}
    check_method_contract("cpc", options, tmp_path)


def test_cpc_full_image_features_pass_the_method_contract(tmp_path):
    check_method_contract("cpc", {"features": "full", "steps": 2}, tmp_path)


def test_save_pictures_writes_a_png(tmp_path):
    method = build_method("cpc", {"group_size": 4}, _layer_norm_encoder())
    images = tf.random.uniform((6, 32, 32, 3), seed=9)
    data = method.augment(images, tf.zeros(6, tf.int32), tf.constant([1, 1]))
    names = method.save_pictures(data, tmp_path)
    assert names == ["cpc_grid.png"]
    content = (tmp_path / "cpc_grid.png").read_bytes()
    assert content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) > 1000


# --- learning: the user path on real CIFAR-10 images --------------------------------------------------
# Budget: 8,000 of the 50,000 training images (7,200 train / 800 validation, stratified), 2 epochs of the zoo
# config (grid features, batch 32, Adam 2e-3, candidates from groups of 16 images = 784). Measured on the
# 2-core CPU with other agents' jobs running (load 1.5-3.5): 116 s for the whole run, 63 s of it training
# at 227 images/s. kNN 31.62 vs 28.00 at random init (+3.6), linear 39.38 vs 30.50 (+8.9); validation CPC
# top-1 6.7% (chance 0.13%). Seeds 1 and 2 of the same command (2026-11-30): kNN +2.4 / +3.8, linear +3.8 /
# +4.1 (their random-init linear baselines 36.2 / 33.1 differ from seed 0's 30.5 by more than the gains do).
# The asserted margins are half the smallest gain of the three seeds (they were half of seed 0's alone,
# which seeds 1 and 2 would have failed on the linear probe).
KNN_MARGIN = 1.2
LINEAR_MARGIN = 1.8


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    return train_on_cifar(
        tmp_path_factory.mktemp("cifar") / "cpc", "zoo_configs/cpc_v2_convnet_small_cifar10.yaml",
        "data.max_examples=8000", "trainer.epochs=2",
    )


def test_cpc_beats_its_random_init_encoder_on_cifar10_validation(cifar_run):
    baseline = cifar_run["random_init"]
    assert cifar_run["data"]["bad_images"] == 0
    assert cifar_run["knn_top1"] >= baseline["knn_top1"] + KNN_MARGIN, cifar_run
    assert cifar_run["linear_top1"] >= baseline["linear_top1"] + LINEAR_MARGIN, cifar_run
    # The pretext task is learned above chance (1 / 784 candidates ~ 0.13%).
    assert cifar_run["pretext_val"]["cpc_top1"] > 0.02
