"""Context encoder: masks, the weighted reconstruction and adversarial losses, the two-optimizer train step,
checkpointed discriminator state, the method contract, pictures and learning on CIFAR-10."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.augment.masks import (
    central_hole,
    overlap_weights,
    random_block_hole,
    random_region_hole,
    ring_mask,
    ring_share_weight,
    ring_share_weights,
    ring_weight_share,
)
from sslzoo.backbones import build_encoder
from sslzoo.config import ConfigError
from sslzoo.losses.reconstruction import (
    discriminator_loss,
    generator_adversarial_loss,
    joint_loss,
    masked_l2,
    region_l2,
)
from sslzoo.methods import build_method
from sslzoo.training.checkpoints import RunState
from tests.harness import check_method_contract, train_on_cifar

SEED = tf.constant([3, 7])


def _method(options=None, num_classes=0):
    keras.utils.set_random_seed(0)
    encoder = build_encoder("convnet_small", 32, width=0.25)
    return build_method("context_encoder", {"decoder_width": 16, "discriminator_width": 8, "mask": "central",
                                            **(options or {})},
                        encoder, num_classes=num_classes)


def _batch(method, size=8, seed=SEED):
    images = tf.random.stateless_uniform((size, 32, 32, 3), seed=[1, 2])
    return method.augment(images, tf.range(size, dtype=tf.int32) % 10, seed)


def _part_weights(seed: int):
    keras.utils.set_random_seed(seed)
    method = build_method("context_encoder", {"decoder_width": 16, "discriminator_width": 8, "mask": "central",
                                              "adversarial": True},
                          build_encoder("convnet_small", 32, width=0.25))
    return {f"{part}/{v.path}": v.numpy() for part in ("decoder", "discriminator")
            for v in getattr(method, part).weights}


def test_the_run_seed_alone_sets_the_decoder_and_discriminator_init():
    # The DCGAN initializers must be made after keras.utils.set_random_seed: one made at import time
    # carries a seed of its own, so runs in two processes started from different decoder weights.
    first, again, other = _part_weights(3), _part_weights(3), _part_weights(4)
    assert first.keys() == other.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    drawn = [name for name in first if first[name].std() > 0]  # N(0, 0.02) kernels, N(1, 0.02) BN scales
    assert len(drawn) >= 4 and all(not np.array_equal(first[n], other[n]) for n in drawn)
    # Every layer draws its own weights: no two same-shaped kernels are equal.
    kernels = [first[n] for n in drawn]
    assert all(not np.array_equal(a, b) for i, a in enumerate(kernels) for b in kernels[i + 1:] if a.shape == b.shape)


# --- masks ----------------------------------------------------------------------------------------------
def reference_weights(hole: np.ndarray, overlap: int, overlap_weight: float) -> np.ndarray:
    """Loop form: 1 on hole pixels; overlap_weight on visible pixels within `overlap` (Chebyshev) of one."""
    size = hole.shape[0]
    weights = np.zeros_like(hole, dtype=np.float64)
    holes = np.argwhere(hole > 0)
    for y in range(size):
        for x in range(size):
            if hole[y, x]:
                weights[y, x] = 1.0
            elif len(holes) and np.abs(holes - [y, x]).max(axis=1).min() <= overlap:
                weights[y, x] = overlap_weight
    return weights


def test_central_hole_and_ring_are_exactly_the_code_geometry():
    """32 px, region 16, overlap 2: the hole is rows/cols 10..21 (12x12), the ring 8..23 minus it (the code's
    `1 + fineSize/4 + overlapPred .. fineSize/2 + fineSize/4 - overlapPred`, scaled to 32 px)."""
    hole = central_hole(3, 32, 16, 2).numpy()
    expected = np.zeros((32, 32))
    expected[10:22, 10:22] = 1
    for b in range(3):
        np.testing.assert_array_equal(hole[b, ..., 0], expected)
    weights = overlap_weights(tf.constant(hole), 2, 10.0).numpy()[0, ..., 0]
    ring = np.zeros((32, 32))
    ring[8:24, 8:24] = 10
    ring[10:22, 10:22] = 1
    np.testing.assert_array_equal(weights, ring)


@pytest.mark.parametrize("region, overlap", [(16, 0), (8, 1), (32, 4)])
def test_central_weights_cover_exactly_the_predicted_square(region, overlap):
    method = _method({"region_size": region, "overlap": overlap})
    data = _batch(method)
    weights = data["weights"].numpy()
    assert weights.shape == (8, region, region, 1)
    interior = np.ones((region, region))
    if overlap:
        interior[:] = 10.0
        interior[overlap:region - overlap, overlap:region - overlap] = 1.0
    np.testing.assert_array_equal(weights[3, ..., 0], interior)


@pytest.mark.parametrize("kind", ["random_block", "random_region"])
def test_overlap_weights_match_the_loop_reference(kind):
    if kind == "random_block":
        hole = random_block_hole(2, 32, 6, 3, SEED)
    else:
        hole = random_region_hole(2, 32, 8, 0.2, 0.3, SEED)
    for overlap in (1, 2):
        weights = overlap_weights(hole, overlap, 10.0).numpy()
        for b in range(2):
            np.testing.assert_array_equal(weights[b, ..., 0], reference_weights(hole.numpy()[b, ..., 0], overlap, 10.0))


def test_random_blocks_are_unions_of_in_bounds_squares_of_the_configured_size():
    hole = random_block_hole(16, 32, 8, 4, SEED).numpy()[..., 0]
    for image in hole:
        area = image.sum()
        assert 64 <= area <= 4 * 64  # at least one block, at most four disjoint ones: <= 1/4 of the image
        # Every hole pixel lies in an 8x8 all-hole square inside the image (morphological opening = hole).
        covered = np.zeros_like(image)
        for y in range(32 - 8 + 1):
            for x in range(32 - 8 + 1):
                if image[y:y + 8, x:x + 8].all():
                    covered[y:y + 8, x:x + 8] = 1
        np.testing.assert_array_equal(covered, image)
    single = random_block_hole(16, 32, 8, 1, SEED).numpy()[..., 0]
    for image in single:
        rows, cols = np.nonzero(image)
        assert image.sum() == 64 and np.ptp(rows) == 7 and np.ptp(cols) == 7


def test_random_regions_cover_the_configured_fraction_and_differ_per_image_and_seed():
    hole = random_region_hole(32, 32, 8, 0.2, 0.3, SEED).numpy()
    coverage = hole.mean(axis=(1, 2, 3))
    assert coverage.min() >= 0.2 - 1 / 1024 and coverage.max() <= 0.3 + 1 / 1024
    assert len({h.tobytes() for h in hole}) == 32
    np.testing.assert_array_equal(hole, random_region_hole(32, 32, 8, 0.2, 0.3, SEED).numpy())
    assert not np.array_equal(hole, random_region_hole(32, 32, 8, 0.2, 0.3, tf.constant([4, 7])).numpy())
    fixed = random_region_hole(8, 32, 8, 0.25, 0.25, SEED).numpy()
    np.testing.assert_array_equal(fixed.sum(axis=(1, 2, 3)), np.full(8, 256.0))


@pytest.mark.parametrize("mask", ["central", "random_block", "random_region"])
def test_augment_is_identical_eagerly_and_inside_tf_data(mask):
    method = _method({"mask": mask})
    images = tf.random.stateless_uniform((8, 32, 32, 3), seed=[1, 2])
    labels = tf.zeros(8, tf.int32)
    eager = method.augment(images, labels, SEED)
    dataset = tf.data.Dataset.from_tensors((images, labels)).map(lambda x, y: method.augment(x, y, SEED))
    graph = next(iter(dataset))
    for key in ("masked", "weights", "images"):
        np.testing.assert_array_equal(eager[key].numpy(), graph[key].numpy())


def test_hole_is_filled_with_the_encoders_mean_and_context_is_untouched():
    method = _method({"flip": False})
    images = tf.random.stateless_uniform((4, 32, 32, 3), seed=[1, 2])
    data = method.augment(images, tf.zeros(4, tf.int32), SEED)
    masked = data["masked"].numpy()
    mean = method.encoder.get_layer("normalization").get_config()["mean"]
    np.testing.assert_allclose(masked[:, 10:22, 10:22], np.broadcast_to(np.reshape(mean, (1, 1, 1, 3)),
                                                                        (4, 12, 12, 3)), atol=1e-6)
    outside = np.ones((32, 32), bool)
    outside[10:22, 10:22] = False
    np.testing.assert_array_equal(masked[:, outside], images.numpy()[:, outside])
    # After the encoder's own normalisation, the hole is exactly zero: no brightness cue.
    normalised = method.encoder.get_layer("normalization")(data["masked"]).numpy()
    np.testing.assert_allclose(normalised[:, 10:22, 10:22], 0.0, atol=1e-5)


# --- losses ---------------------------------------------------------------------------------------------
def reference_masked_l2(predictions, targets, region, overlap, weight=10.0):
    """The code's weighted MSE (train.lua, overlapPred > 0): wtl2Matrix = overlapL2Weight everywhere, the
    hole interior 1; the gradient wtl2Matrix * dMSE is that of sum(w * d^2) / numel."""
    w = np.full(predictions.shape, weight)
    w[:, overlap:region - overlap, overlap:region - overlap, :] = 1.0
    total = 0.0
    for value, target, wv in zip(predictions.ravel(), targets.ravel(), w.ravel()):
        total += wv * (value - target) ** 2
    return total / predictions.size


def test_reconstruction_loss_matches_the_code_reference_with_overlap_weighting():
    rng = np.random.default_rng(0)
    predictions = rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    targets = rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    method = _method()
    weights = _batch(method, size=3)["weights"]
    ours = float(masked_l2(predictions, targets, weights))
    np.testing.assert_allclose(ours, reference_masked_l2(predictions, targets, 16, 2), rtol=1e-5)


def test_reconstruction_loss_is_zero_for_a_perfect_prediction_and_weights_the_ring_10x():
    method = _method()
    weights = _batch(method, size=2)["weights"]
    targets = tf.random.stateless_uniform((2, 16, 16, 3), seed=[5, 6], minval=-1, maxval=1)
    assert float(masked_l2(targets, targets, weights)) == 0.0
    hole_error = np.zeros((2, 16, 16, 3), np.float32)
    hole_error[0, 8, 8, 0] = 0.5  # inside the 12x12 hole
    ring_error = np.zeros((2, 16, 16, 3), np.float32)
    ring_error[0, 0, 8, 0] = 0.5  # on the 2-px ring
    in_hole = float(masked_l2(targets + hole_error, targets, weights))
    on_ring = float(masked_l2(targets + ring_error, targets, weights))
    np.testing.assert_allclose(in_hole, 0.25 / (2 * 16 * 16 * 3), rtol=1e-5)
    np.testing.assert_allclose(on_ring, 10 * in_hole, rtol=1e-5)


def test_reconstruction_loss_ignores_visible_pixels_beyond_the_ring():
    method = _method({"mask": "random_region"})
    data = _batch(method, size=4)
    weights = data["weights"].numpy()
    assert weights.shape == (4, 32, 32, 1) and (weights == 0).any()
    targets = tf.random.stateless_uniform((4, 32, 32, 3), seed=[5, 6], minval=-1, maxval=1)
    predictions = tf.random.stateless_uniform((4, 32, 32, 3), seed=[7, 8], minval=-1, maxval=1)
    garbage = np.where(weights == 0, 5.0, 0.0).astype(np.float32)
    np.testing.assert_allclose(float(masked_l2(predictions + garbage, targets, weights)),
                               float(masked_l2(predictions, targets, weights)), rtol=1e-6)
    assert float(masked_l2(predictions, targets, np.zeros_like(weights))) == 0.0


def test_adversarial_losses_closed_forms_and_numpy_reference():
    zeros = tf.zeros(16)  # D outputs 0.5 everywhere
    np.testing.assert_allclose(float(generator_adversarial_loss(zeros)), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(float(discriminator_loss(zeros, zeros)), 2 * math.log(2), rtol=1e-6)
    # A perfect discriminator: loss -> 0 for D, -> large for the generator.
    assert float(discriminator_loss(tf.fill([4], 40.0), tf.fill([4], -40.0))) < 1e-12
    np.testing.assert_allclose(float(generator_adversarial_loss(tf.fill([4], -40.0))), 40.0, rtol=1e-6)
    rng = np.random.default_rng(1)
    real, fake = rng.normal(0, 2, 32), rng.normal(0, 2, 32)

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    expected_d = -np.mean(np.log(sigmoid(real))) - np.mean(np.log(1 - sigmoid(fake)))
    np.testing.assert_allclose(float(discriminator_loss(real, fake)), expected_d, rtol=1e-5)
    np.testing.assert_allclose(float(generator_adversarial_loss(fake)), -np.mean(np.log(sigmoid(fake))), rtol=1e-5)
    np.testing.assert_allclose(float(joint_loss(2.0, 3.0)), 0.999 * 2.0 + 0.001 * 3.0, rtol=1e-7)


# --- the adversarial train step -------------------------------------------------------------------------
def _compiled(options, learning_rate=2e-3):
    method = _method(options, num_classes=10)
    optimizer = keras.optimizers.Adam(learning_rate)
    method.compile(optimizer=optimizer)
    optimizer.build(method.trainable_variables)
    return method, optimizer


def test_variables_split_into_generator_and_discriminator():
    method, _ = _compiled({"adversarial": True})
    generator = {id(v) for v in method.generator_variables()}
    discriminator = {id(v) for v in method.discriminator.trainable_variables}
    assert generator.isdisjoint(discriminator)
    assert generator | discriminator == {id(v) for v in method.trainable_variables}


def test_discriminator_trains_in_the_step_and_its_own_loss_never_reaches_the_encoder():
    method, _ = _compiled({"adversarial": True})
    data = _batch(method, size=16)
    with tf.GradientTape() as tape:
        predictions, _ = method.inpaint(data["masked"], training=True)
        real, fake = method._regions(data, predictions)
        d_loss, _, _ = method.discriminator_step_loss(real, fake, training=True)
    grads = tape.gradient(d_loss, method.encoder.trainable_variables + method.decoder.trainable_variables)
    assert all(g is None for g in grads)
    # The generator's adversarial term does reach the encoder (through D, without updating D).
    with tf.GradientTape() as tape:
        predictions, _ = method.inpaint(data["masked"], training=True)
        _, fake = method._regions(data, predictions)
        adversarial = generator_adversarial_loss(method.discriminator(fake, training=True))
    assert all(g is not None for g in tape.gradient(adversarial, method.encoder.trainable_variables))

    d_before = [v.numpy().copy() for v in method.discriminator.trainable_variables]
    e_before = [v.numpy().copy() for v in method.encoder.trainable_variables]
    logs = method.train_step(data)
    assert int(method.discriminator_optimizer.iterations.numpy()) == 1
    assert int(method.optimizer.iterations.numpy()) == 1
    assert all(not np.allclose(a, v.numpy()) for a, v in zip(d_before, method.discriminator.trainable_variables))
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(e_before, method.encoder.trainable_variables))
    for name in ("loss", "reconstruction_loss", "adversarial_loss", "discriminator_loss"):
        assert np.isfinite(float(logs[name])), name


def test_discriminator_optimizer_state_is_restored_from_a_run_checkpoint(tmp_path):
    method, optimizer = _compiled({"adversarial": True})
    state = RunState(method, optimizer, tmp_path / "checkpoints")
    data = _batch(method, size=16)
    for _ in range(2):
        method.train_step(data)
    state.save(1)
    slots = [v.numpy().copy() for v in method.discriminator_optimizer.variables]
    weights = [v.numpy().copy() for v in method.discriminator.weights]
    assert any(np.abs(s).sum() > 0 for s in slots[2:])  # Adam moments were filled

    fresh, fresh_optimizer = _compiled({"adversarial": True})
    fresh_optimizer.build(fresh.trainable_variables)
    assert int(fresh.discriminator_optimizer.iterations.numpy()) == 0
    restored = RunState(fresh, fresh_optimizer, tmp_path / "checkpoints")
    assert restored.restore_latest() == 1
    assert int(fresh.discriminator_optimizer.iterations.numpy()) == 2
    assert len(fresh.discriminator_optimizer.variables) == len(slots)
    for a, b in zip(slots, fresh.discriminator_optimizer.variables):
        np.testing.assert_array_equal(a, b.numpy())
    for a, b in zip(weights, fresh.discriminator.weights):
        np.testing.assert_array_equal(a, b.numpy())
    # A .keras file of the method carries the same state (the optimizer is an attribute Keras saves).
    method.save(tmp_path / "method.keras")
    loaded = keras.saving.load_model(tmp_path / "method.keras", safe_mode=True)
    assert int(loaded.discriminator_optimizer.iterations.numpy()) == 2
    for a, b in zip(slots, loaded.discriminator_optimizer.variables):
        np.testing.assert_array_equal(a, b.numpy())


# --- the ring's share of the L2 weight, hole and ring errors logged apart -------------------------------
def _holes(kind, batch=4):
    if kind == "central":
        return central_hole(batch, 32, 16, 2)
    if kind == "random_block":
        return random_block_hole(batch, 32, 8, 4, SEED)
    return random_region_hole(batch, 32, 8, 0.2, 0.3, SEED)


def test_ring_weight_share_of_the_overlap_weighting_in_closed_form():
    # The code's 128-px central geometry: hole 56^2 = 3136 px at weight 1, ring 64^2 - 56^2 = 960 px at 10.
    paper = ring_weight_share(central_hole(1, 128, 64, 4), overlap_weights(central_hole(1, 128, 64, 4), 4, 10.0))
    np.testing.assert_allclose(paper.numpy(), [9600 / 12736], rtol=1e-6)
    assert round(float(paper[0]), 4) == 0.7538
    # This zoo's 32-px central geometry: hole 12^2 = 144, ring 16^2 - 144 = 112 px at 10: 1120 / 1264.
    ours = ring_weight_share(central_hole(2, 32, 16, 2), overlap_weights(central_hole(2, 32, 16, 2), 2, 10.0))
    np.testing.assert_allclose(ours.numpy(), [1120 / 1264] * 2, rtol=1e-6)
    # Random regions at 32 px: more ring than hole, so the ring's share is higher still.
    hole = _holes("random_region", 16)
    assert float(tf.reduce_min(ring_weight_share(hole, overlap_weights(hole, 2, 10.0)))) > 0.9


@pytest.mark.parametrize("kind", ["central", "random_block", "random_region"])
@pytest.mark.parametrize("share", [0.0, 0.25, 0.75, 0.9])
def test_ring_share_weights_give_the_ring_exactly_that_share_per_image(kind, share):
    hole = _holes(kind)
    weights = ring_share_weights(hole, 2, share)
    np.testing.assert_allclose(ring_weight_share(hole, weights).numpy(), np.full(4, share), atol=1e-6)
    # 1 in the hole, the image's own constant on its ring (the closed form), 0 elsewhere.
    h, r, w = hole.numpy()[..., 0], ring_mask(hole, 2).numpy()[..., 0], weights.numpy()[..., 0]
    for b in range(4):
        expected = share / (1 - share) * h[b].sum() / r[b].sum()
        np.testing.assert_allclose(w[b], h[b] + expected * r[b], rtol=1e-6)
    # The same share as overlap_weights when its weight is the closed form's (central masks: one geometry).
    if kind == "central" and share > 0:
        weight = float(ring_share_weight(144.0, 112.0, share))
        np.testing.assert_allclose(weights.numpy(), overlap_weights(hole, 2, weight).numpy(), rtol=1e-6)


def test_ring_share_outside_zero_to_one_fails():
    with pytest.raises(ConfigError, match="ring_share 1.0"):
        ring_share_weight(1.0, 1.0, 1.0)
    encoder = build_encoder("convnet_small", 32, width=0.25)
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="ring_share"):
            build_method("context_encoder", {"ring_share": bad}, encoder)


@pytest.mark.parametrize("mask", ["central", "random_region"])
def test_method_weights_give_the_ring_the_configured_share(mask):
    default = _batch(_method({"mask": mask}))
    shared = _batch(_method({"mask": mask, "ring_share": 0.75}))
    # Same holes and rings; only the ring's weight differs.
    for key in ("hole", "ring", "masked"):
        np.testing.assert_array_equal(default[key].numpy(), shared[key].numpy())
    np.testing.assert_allclose(ring_weight_share(shared["hole"], shared["weights"]).numpy(), 0.75, atol=1e-6)
    today = ring_weight_share(default["hole"], default["weights"]).numpy()
    assert today.min() > 0.85  # overlap_weight 10 at 32 px: ~0.89 (central), ~0.94 (random regions)
    np.testing.assert_array_equal((default["ring"].numpy() > 0), (default["weights"].numpy() == 10.0))
    hole_only = _batch(_method({"mask": mask, "ring_share": 0.0}))
    np.testing.assert_array_equal(hole_only["weights"].numpy(), hole_only["hole"].numpy())


def test_region_l2_is_the_unweighted_mean_over_its_own_values():
    targets = tf.random.stateless_uniform((2, 4, 4, 3), seed=[5, 6], minval=-1, maxval=1)
    mask = np.zeros((2, 4, 4, 1), np.float32)
    mask[0, 1, 2] = mask[1, 3, 3] = 1
    error = np.zeros((2, 4, 4, 3), np.float32)
    error[0, 1, 2] = [0.1, 0.2, 0.3]
    error[1, 0, 0] = 5.0  # outside the mask: ignored
    np.testing.assert_allclose(float(region_l2(targets + error, targets, mask)), (0.01 + 0.04 + 0.09) / 6,
                               rtol=1e-5)
    assert float(region_l2(targets + error, targets, np.zeros_like(mask))) == 0.0


@pytest.mark.parametrize("mask", ["central", "random_region"])
@pytest.mark.parametrize("ring_share", [None, 0.75])
def test_hole_and_ring_l2_are_logged_apart_in_closed_form(mask, ring_share):
    """A prediction equal to the target on the ring (and everywhere but the hole) and off by c on the hole:
    ring_l2 = 0 and hole_l2 = c^2 (per value, as masked_l2 counts); the loss is the hole's weight times c^2."""
    method = _method({"mask": mask, "ring_share": ring_share})
    data = _batch(method, size=4)
    real = 2.0 * tf.cast(method._crop(data["images"]), tf.float32) - 1.0
    c, d = 0.3, 0.2
    hole = data["hole"]
    method.inpaint = lambda masked, training=False: (real + c * hole, tf.zeros((4, method.feature_dim)))
    _, logs = method.compute_loss_and_logs(data, training=False)
    np.testing.assert_allclose(float(logs["hole_l2"]), c ** 2, rtol=1e-5)
    assert float(logs["ring_l2"]) == 0.0
    hole_pixels = float(tf.reduce_sum(hole))
    np.testing.assert_allclose(float(logs["reconstruction_loss"]),
                               c ** 2 * hole_pixels * 3 / float(tf.size(real)), rtol=1e-5)
    # Off by c on the hole and d on the ring: each term sees only its own error.
    ring = data["ring"]
    method.inpaint = lambda masked, training=False: (real + c * hole + d * ring, tf.zeros((4, method.feature_dim)))
    _, logs = method.compute_loss_and_logs(data, training=False)
    np.testing.assert_allclose([float(logs["hole_l2"]), float(logs["ring_l2"])], [c ** 2, d ** 2], rtol=1e-5)
    expected = (c ** 2 * hole_pixels + d ** 2 * float(tf.reduce_sum(data["weights"] * ring))) * 3 / float(tf.size(real))
    np.testing.assert_allclose(float(logs["reconstruction_loss"]), expected, rtol=1e-5)


def test_fit_logs_hole_and_ring_l2_every_step():
    from tests.harness import fit_one_step
    for options in ({"mask": "central"}, {"mask": "random_region", "ring_share": 0.75}):
        _, _, logs = fit_one_step("context_encoder", {"decoder_width": 16, **options})
        for name in ("loss", "reconstruction_loss", "hole_l2", "ring_l2"):
            assert np.isfinite(logs[name]) and logs[name] > 0, (options, name, logs)


# --- contract, options, pictures ------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    {"adversarial": False, "mask": "central"},
    {"adversarial": True, "mask": "central"},
    {"adversarial": True, "mask": "random_region"},
], ids=["reconstruction_central", "adversarial_central", "adversarial_random_region"])
def test_context_encoder_passes_the_method_contract(options, tmp_path):
    check_method_contract("context_encoder", {"decoder_width": 16, "discriminator_width": 8, **options}, tmp_path)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"mask": "central", "region_size": 12}, r"must be 4 \* 2\^k pixels wide.*region_size 8, 16, 32"),
        ({"mask": "central", "region_size": 16, "overlap": 8}, r"leaves no hole.*overlap <= 7"),
        ({"mask": "central", "region_size": 40}, r"region_size 40: must be in \(0, 32\]"),
        ({"mask": "random_region", "coverage": [0.3, 0.2]}, r"coverage"),
        ({"mask": "random_block", "num_blocks": 0}, r"num_blocks 0"),
        ({"mask": "stripes"}, r"mask: 'stripes' is not one of 'central', 'random_block', 'random_region'"),
        ({"fill": [0.5, 0.5]}, r"fill"),
        ({"reconstruction_weight": 0.0}, r"reconstruction_weight"),
        ({"hole": 4}, "unknown method.options key"),
    ],
)
def test_bad_options_fail_clearly(options, fragment):
    encoder = build_encoder("convnet_small", 32, width=0.25)
    with pytest.raises(ConfigError, match=fragment):
        build_method("context_encoder", options, encoder)


def test_unknown_option_fails_listing_every_allowed_key():
    encoder = build_encoder("convnet_small", 32, width=0.25)
    with pytest.raises(ConfigError, match="unknown method.options key.*hole") as error:
        build_method("context_encoder", {"hole": 4}, encoder)
    allowed = str(error.value).split("allowed:", 1)[1]
    for key in ("mask", "region_size", "overlap", "overlap_weight", "block_size", "num_blocks", "coverage",
                "noise_size", "fill", "decoder_width", "adversarial", "reconstruction_weight",
                "discriminator_width", "discriminator_learning_rate", "discriminator_beta_1", "flip",
                "crop_padding", "ring_share"):
        assert f"{key}:" in allowed, key


def test_config_round_trip_keeps_the_discriminator_and_its_optimizer_settings():
    method = _method({"adversarial": True, "discriminator_learning_rate": 1e-4})
    rebuilt = type(method).from_config(method.get_config())
    assert rebuilt.discriminator.count_params() == method.discriminator.count_params()
    assert float(rebuilt.discriminator_optimizer.learning_rate) == pytest.approx(1e-4)
    assert float(rebuilt.discriminator_optimizer.beta_1) == 0.5
    plain = type(method).from_config(_method().get_config())
    assert plain.discriminator is None and plain.discriminator_optimizer is None


@pytest.mark.parametrize("mask", ["central", "random_region"])
def test_save_pictures_writes_a_png_with_input_prediction_and_original(mask, tmp_path):
    method = _method({"mask": mask})
    names = method.save_pictures(_batch(method, size=8), tmp_path)
    assert names == ["inpainting.png"]
    data = (tmp_path / "inpainting.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    picture = tf.io.decode_png(data).numpy()
    assert picture.shape[0] > 100 and picture.shape[1] > 300 and picture.std() > 0


# --- learning: the user path on real CIFAR-10 images ----------------------------------------------------
# The zoo config (random-region masks, reconstruction only) on 16,000 of the 50,000 training images
# (14,400 train / 1,600 validation, stratified), 3 epochs, half-width ConvNet: kNN 38.06 vs 33.19 at random
# init (+4.9), linear 42.94 vs 40.19 (+2.75), 68 s of training beside one other run. On 8,000 images the
# gains were smaller and unstable: five identical runs gave kNN +1.25 to +3.75 and linear +0.24 to +3.37
# and one CI run failed the kNN margin; the larger validation split also halves the probes' sampling noise.
# Those runs were not bit-identical: the decoder's initializers were made at import time, before the seed
# (fixed in heads/decoders.py; two processes now train bit-identical weights). After that fix, trainer.seed
# 1, 2, 3 (this test runs seed 0, not among them) gave kNN +3.62, +3.76, +5.75 and linear +3.74, +2.00,
# +2.82 (`python train.py ... --set trainer.seed=S`, the command train_on_cifar builds, on the 2-core CPU).
# Seed 0, this test's run, re-measured with the same command: kNN 37.19 vs 33.19 (+4.00), linear 42.75 vs
# 40.19 (+2.56); seed 4: +3.26 / +3.06 (the zoo config header's ring_share measurements: ring_share left unset).
# Margins, set before those runs and kept: below every seed's gain, about half the mean gain.
# On the default batch norm (TF's fused kernel) the margins are half the smallest gain of trainer.seed 1 / 2 /
# 3 (the test runs seed 0), rounded down: kNN +4.5 / +5.1 / +5.8, linear +3.1 / +3.4 / +2.9 points (the test's
# command plus --set trainer.seed=S). The figures above were measured with Keras' own batch norm ops.
KNN_MARGIN = 2.2
LINEAR_MARGIN = 1.4


def test_context_encoder_beats_its_random_init_encoder_on_cifar10_validation(tmp_path):
    """The budget and the measured numbers are in the comment above the margins."""
    metrics = train_on_cifar(tmp_path / "context_encoder", "zoo_configs/context_encoder_convnet_small_cifar10.yaml",
                             "data.max_examples=16000", "trainer.epochs=3")
    baseline = metrics["random_init"]
    assert metrics["data"]["num_val"] == 1600 and metrics["data"]["bad_images"] == 0
    assert metrics["knn_top1"] >= baseline["knn_top1"] + KNN_MARGIN, metrics
    assert metrics["linear_top1"] >= baseline["linear_top1"] + LINEAR_MARGIN, metrics
    assert metrics["pictures"] == ["inpainting.png"]
    assert (tmp_path / "context_encoder" / "inpainting.png").read_bytes()[:4] == b"\x89PNG"
