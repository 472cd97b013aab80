"""DINO: the method contract; the teacher (exact copy at the start, the EMA rule with the cosine schedule after
real steps, no gradient, only the global crops); the multi-crop views; the loss as `dino_loss` of the
method's outputs with its temperature and centre; the centre's update; the schedules (teacher temperature,
weight decay, last-layer freeze); the centre as saved state; collapse without centring; bad options;
learning on CIFAR-10."""

import csv
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.augment import views
from sslzoo.augment.ops import split_seed
from sslzoo.backbones import build_encoder
from sslzoo.config import ConfigError, parse_options
from sslzoo.heads import dino_head
from sslzoo.losses.distillation import dino_loss
from sslzoo.methods import build_method
from sslzoo.methods.dino import DINO, DINOOptions
from sslzoo.optimizers.coupled import CoupledSGD
from sslzoo.training.trainer import train_run
from tests.harness import assert_beats_random_init, check_method_contract, tiny_config, train_on_cifar

SEED = tf.constant([3, 7], tf.int32)
K = 32
TINY = {"out_dim": K, "hidden_dim": 32, "bottleneck_dim": 16, "local_crops_number": 2}
# Photometric work off: crops and flips only, so views can be checked against tf.image (and the tests
# skip compiling the colour jitter, which none of them needs besides the contract).
PLAIN = dict(color_probability=0.0, grayscale_probability=0.0, blur_probability=0.0, blur_probability_2=0.0,
             local_blur_probability=0.0, solarize_probability_2=0.0)


def _images(batch=8, size=32, seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype(np.float32)


def tiny_dino(num_classes=0, size=32, **options):
    keras.utils.set_random_seed(0)
    encoder = build_encoder("convnet_small", size, width=0.25)
    return build_method("dino", {**TINY, **PLAIN, **options}, encoder, num_classes=num_classes)


def compiled(method, optimizer=None):
    method.compile(optimizer=optimizer or keras.optimizers.SGD(0.1, momentum=0.9))
    method.optimizer.build(method.trainable_variables)
    return method


def one_step(method, data):
    return method.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0)


def batch_of(method, batch=8, seed=SEED):
    return method.augment(tf.constant(_images(batch)), tf.range(batch) % 10, seed)


def test_contract(tmp_path):
    check_method_contract("dino", TINY, tmp_path)


# --- teacher ----------------------------------------------------------------------------------------------
def test_teacher_starts_as_an_exact_copy_and_is_never_trainable():
    method = tiny_dino(norm_last_layer=False)
    trainable = {id(v) for v in method.trainable_variables}
    pairs = method.momentum_pairs()
    # Every student parameter has its teacher twin, the trainable norm g of the last layer included.
    assert len(pairs) == len(method.encoder.trainable_weights) + len(method.head.trainable_weights)
    assert any(v.path.endswith("dino_head_last/norm") for _, v in pairs)
    for teacher, student in pairs:
        np.testing.assert_array_equal(teacher.numpy(), student.numpy())
        assert id(teacher) not in trainable
    assert method.teacher_encoder.trainable_weights == [] and method.teacher_head.trainable_weights == []


def test_teacher_and_centre_follow_their_ema_rules_after_real_steps():
    method = compiled(tiny_dino(momentum_teacher=0.9, center_momentum=0.8, freeze_last_layer=0.0))
    method.set_run_length(10, steps_per_epoch=5)
    method.center.assign(np.random.default_rng(2).normal(size=(1, K)).astype(np.float32))
    data = batch_of(method)
    pairs = method.momentum_pairs()
    for k in range(3):
        before = [t.numpy() for t, _ in pairs]
        center = method.center.numpy()
        # The step's teacher pass: training mode, the weights from before the step.
        teacher = np.concatenate([t.numpy() for t in method.teacher_logits(data, training=True)])
        history = one_step(method, data)
        m = 1 - (1 - 0.9) * (math.cos(math.pi * k / 10) + 1) / 2  # the official cosine_scheduler(0.9, 1, ...)[k]
        assert history.history["teacher_momentum"][0] == pytest.approx(m, abs=1e-6)
        for (teacher_variable, student), old in zip(pairs, before):
            # The student's value after the optimizer step is what the teacher averages in.
            np.testing.assert_allclose(teacher_variable.numpy(), m * old + (1 - m) * student.numpy(),
                                       rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(method.center.numpy(), 0.8 * center + 0.2 * teacher.mean(0, keepdims=True),
                                   rtol=1e-5, atol=1e-6)
    assert int(method.optimizer.iterations) == 3
    # The loss alone (what validation runs) leaves the centre where it is.
    center = method.center.numpy()
    method.compute_loss_and_logs(data, training=False)
    np.testing.assert_array_equal(method.center.numpy(), center)


def test_teacher_receives_no_gradient_and_sees_only_the_global_crops():
    method = tiny_dino(num_classes=10)
    data = batch_of(method)
    teachers = [t.value for t, _ in method.momentum_pairs()]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(teachers)
        loss, _ = method.compute_loss_and_logs(data, training=True)
    assert all(g is None for g in tape.gradient(loss, teachers))
    assert sum(g is not None for g in tape.gradient(loss, method.trainable_variables)) > 0
    # Crops: two global ones at the image size, N local ones at the local size, batch first.
    assert data["global_1"].shape == data["global_2"].shape == (8, 32, 32, 3)
    assert data["local_crops"].shape == (8, 2, 16, 16, 3)
    assert method.local_encoder.input_shape == (None, 16, 16, 3)
    assert method.local_encoder.get_layer("block1_conv") is method.encoder.get_layer("block1_conv")
    teacher = method.teacher_logits(data, training=False)
    _, student = method.student_logits(data, training=False)
    assert [t.shape for t in teacher] == [(8, K)] * 2 and [s.shape for s in student] == [(8, K)] * 4
    # Other local crops change the student's outputs, never the teacher's.
    other = dict(data, local_crops=tf.reverse(data["local_crops"], axis=[1]))
    for a, b in zip(teacher, method.teacher_logits(other, training=False)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    _, moved = method.student_logits(other, training=False)
    np.testing.assert_allclose(moved[2].numpy(), student[3].numpy(), atol=1e-5)


# --- crops ------------------------------------------------------------------------------------------------
def test_simclr_view_at_another_size_is_the_resized_crop():
    images = tf.constant(_images(6))
    view = views.simclr_view(images, SEED, crop_scale=(0.05, 0.4), color_probability=0.0,
                             grayscale_probability=0.0, size=16)
    boxes = views.crop_boxes_and_flips(6, split_seed(SEED, 4)[0], (0.05, 0.4))
    np.testing.assert_allclose(view.numpy(), tf.image.crop_and_resize(images, boxes, tf.range(6), [16, 16]).numpy(),
                               atol=1e-5)


def test_local_crops_are_drawn_at_the_local_scale_and_size():
    method = tiny_dino(local_crops_number=3, local_crop_scale=(0.05, 0.1))
    images = tf.constant(_images(4))
    data = method.augment(images, tf.zeros([4], tf.int32), SEED)
    # The crops of all N copies come from one draw over the batch repeated N times (crop-major).
    boxes = views.crop_boxes_and_flips(12, split_seed(split_seed(SEED, 2)[1], 4)[0], (0.05, 0.1))
    expected = tf.image.crop_and_resize(tf.tile(images, [3, 1, 1, 1]), boxes, tf.range(12), [16, 16])
    expected = tf.transpose(tf.reshape(expected, [3, 4, 16, 16, 3]), [1, 0, 2, 3, 4])
    np.testing.assert_allclose(data["local_crops"].numpy(), expected.numpy(), atol=1e-5)
    area = np.abs((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert np.all((area > 0.05 - 1e-6) & (area < 0.1 + 1e-6))
    # The global crops are BYOL's asymmetric views with the global scale.
    global_1, _ = views.asymmetric_views(images, split_seed(SEED, 2)[0], method.options.global_views())
    np.testing.assert_array_equal(data["global_1"].numpy(), global_1.numpy())
    assert method.options.global_views().crop_scale == (0.4, 1.0)


def test_without_local_crops_the_student_sees_the_two_global_crops():
    method = tiny_dino(local_crops_number=0)
    data = batch_of(method)
    assert "local_crops" not in data and method.local_encoder is None
    loss, _ = method.compute_loss_and_logs(data, training=False)
    _, student = method.student_logits(data, training=False)
    assert len(student) == 2 and np.isfinite(float(loss))


# --- loss, centre, schedules ------------------------------------------------------------------------------
def test_loss_is_dino_loss_with_the_current_temperature_and_centre():
    method = compiled(tiny_dino(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=2))
    method.set_run_length(100, steps_per_epoch=10)
    method.optimizer.iterations.assign(7)
    method.center.assign(np.random.default_rng(1).normal(size=(1, K)).astype(np.float32))
    data = batch_of(method)
    loss, logs = method.compute_loss_and_logs(data, training=False)
    teacher = method.teacher_logits(data, training=False)
    _, student = method.student_logits(data, training=False)
    temp = np.linspace(0.04, 0.07, 20)[7]  # official: np.linspace over the warmup, here over its 20 steps
    assert float(logs["teacher_temp"]) == pytest.approx(temp, rel=1e-6)
    expected = dino_loss(student, teacher, method.center, teacher_temp=temp, student_temp=0.1)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_teacher_temperature_schedule():
    method = tiny_dino(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=1.5)
    # Outside the trainer the epoch length is unknown: no warmup, the final value throughout.
    assert float(method.teacher_temp_at(0)) == pytest.approx(0.07)
    method.set_run_length(40, steps_per_epoch=4)  # warmup: 1.5 epochs = 6 steps
    ramp = np.linspace(0.04, 0.07, 6)
    for k, value in [(0, ramp[0]), (3, ramp[3]), (5, ramp[5]), (6, 0.07), (39, 0.07)]:
        assert float(method.teacher_temp_at(tf.constant(k, tf.int64))) == pytest.approx(value, rel=1e-6), k
    flat = tiny_dino(teacher_temp=0.05)
    flat.set_run_length(40, steps_per_epoch=4)
    assert float(flat.teacher_temp_at(3)) == pytest.approx(0.05)


def test_last_layer_is_left_unchanged_while_frozen_and_moves_after():
    # Coupled weight decay and momentum would move the kernel with a zero gradient; the frozen steps
    # must leave it, its norm and their momentum buffers exactly as they were (official: grad None).
    method = tiny_dino(norm_last_layer=False, freeze_last_layer=1.0)
    compiled(method, CoupledSGD(learning_rate=0.1, momentum=0.9, weight_decay=0.1))
    method.set_run_length(6, steps_per_epoch=2)
    state = method.last_layer_state()
    assert len(state) == 4  # kernel, norm g, and a momentum buffer for each
    start = [v.numpy() for v in state]
    encoder_start = [w.numpy() for w in method.encoder.trainable_weights]
    data = batch_of(method)
    for _ in range(2):
        one_step(method, data)
        for variable, value in zip(state, start):
            np.testing.assert_array_equal(variable.numpy(), value)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(encoder_start, method.encoder.trainable_weights))
    one_step(method, data)  # step 2: the second epoch
    assert all(not np.allclose(v.numpy(), value) for v, value in zip(state, start))


def test_weight_decay_follows_the_cosine_on_adamw_and_is_refused_on_coupled_optimizers():
    k, total, start, end = 3, 8, 0.04, 0.4
    value = end + 0.5 * (start - end) * (1 + math.cos(math.pi * k / total))  # official cosine_scheduler
    after = []
    for scheduled in (True, False):
        if scheduled:
            method = tiny_dino(weight_decay_end=end, freeze_last_layer=0.0)
            compiled(method, keras.optimizers.AdamW(learning_rate=0.01, weight_decay=start))
        else:  # the same step with the value as a constant weight decay
            method = tiny_dino(freeze_last_layer=0.0)
            compiled(method, keras.optimizers.AdamW(learning_rate=0.01, weight_decay=value))
        method.set_run_length(total)
        method.optimizer.iterations.assign(k)
        history = one_step(method, batch_of(method))
        after.append([w.numpy() for w in method.trainable_variables])
        if scheduled:
            assert history.history["weight_decay"][0] == pytest.approx(value, rel=1e-6)
            assert method.optimizer.weight_decay == start  # the configured float is back after the step
    for a, b in zip(*after):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    method = compiled(tiny_dino(weight_decay_end=0.4), CoupledSGD(learning_rate=0.1, weight_decay=1e-4))
    with pytest.raises(ConfigError, match="weight_decay_end"):
        method.set_run_length(10, steps_per_epoch=5)


def test_gradients_are_clipped_per_variable():
    method = compiled(tiny_dino(clip_grad=0.5))
    grads = [tf.constant([3.0, 4.0]), tf.constant([0.1, 0.0]), None]
    clipped = method._clip(grads, method.optimizer)
    np.testing.assert_allclose(clipped[0].numpy(), np.float32([3.0, 4.0]) * (0.5 / (5.0 + 1e-6)), rtol=1e-6)
    np.testing.assert_array_equal(clipped[1].numpy(), np.float32([0.1, 0.0]))
    assert clipped[2] is None


def test_the_centre_is_saved_with_the_run(tmp_path):
    method = tiny_dino()
    assert any(v is method.center for v in method.non_trainable_weights)
    value = np.random.default_rng(3).normal(size=(1, K)).astype(np.float32)
    method.center.assign(value)
    path = tf.train.Checkpoint(model=method).write(str(tmp_path / "ckpt"))
    other = tiny_dino()
    tf.train.Checkpoint(model=other).read(path).expect_partial()
    np.testing.assert_array_equal(other.center.numpy(), value)


# --- collapse ---------------------------------------------------------------------------------------------
def _teacher_entropies_after_training(center_momentum):
    """(mean entropy of the teacher's targets, entropy of their batch mean) over the last 5 of 30 steps
    on 5 batches of uniform-noise images (global crops only, SGD 0.01, teacher momentum 0.99, K = 32)."""
    method = tiny_dino(out_dim=32, local_crops_number=0, center_momentum=center_momentum, momentum_teacher=0.99,
                       clip_grad=0.0, color_probability=0.8, grayscale_probability=0.2)
    compiled(method, keras.optimizers.SGD(0.01, momentum=0.9))
    images = _images(80)
    batches = [method.augment(tf.constant(images[16 * i:16 * (i + 1)]), tf.zeros([16], tf.int32),
                              tf.constant([0, i])) for i in range(5)]
    stacked = {key: tf.stack([b[key] for b in batches]) for key in batches[0]}
    dataset = tf.data.Dataset.from_tensor_slices(stacked).repeat()
    history = method.fit(dataset, epochs=6, steps_per_epoch=5, verbose=0).history
    return history["teacher_entropy"][-1], history["teacher_mean_entropy"][-1]


def test_centring_keeps_the_teacher_from_collapsing_to_one_prototype():
    # Measured (seed 0, last 5 of 30 steps; log 32 = 3.47 nats): with the centre (momentum 0.9) the batch-mean
    # target's entropy is 3.32, and no centring (momentum 1: C stays 0) gives 0.000: one prototype takes
    # every image. Seeds 1-3: 3.40 / 3.39 / 3.40 with, 0.25 / 0.000 / 0.000 without. On noise images
    # nothing tells the images apart, so with the centre each image's own target is near uniform too
    # (3.32): the collapse prevented here is the one to a single dimension, which centring is for.
    centred, centred_mean = _teacher_entropies_after_training(0.9)
    plain, plain_mean = _teacher_entropies_after_training(1.0)
    assert centred_mean > 2.5 and plain_mean < 0.5
    assert plain < 0.5  # sharpening alone: every target one-hot on the same prototype


# --- options ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, words", [
    ({"momentum_teacher": 1.5}, "momentum_teacher"),
    ({"global_crop_scale": [0.5, 0.2]}, "global_crop_scale"),
    ({"local_crop_scale": [0.0, 0.4]}, "local_crop_scale"),
    ({"local_crop_size": 40}, "local_crop_size"),
    ({"teacher_temp": 0.0}, "teacher_temp"),
    ({"queue_size": 5}, "unknown"),
])
def test_bad_options_fail_at_build_time(options, words):
    with pytest.raises(ConfigError, match=words):
        tiny_dino(**options)


def test_a_vit_needs_local_crops_at_its_input_size():
    encoder = build_encoder("vit_tiny", 32)
    with pytest.raises(ConfigError, match="local_crop_size 16.*set local_crop_size to the image size"):
        build_method("dino", TINY, encoder)
    # Local crops resampled to the ViT's own input size are accepted.
    options = DINO.resolve_options(parse_options(DINOOptions, {**TINY, "local_crop_size": 32}), encoder)
    assert options.local_crop_size == 32


def test_local_crop_size_scales_with_the_image():
    assert tiny_dino().options.local_crop_size == 16
    assert tiny_dino(size=64, local_crops_number=1).options.local_crop_size == 32


def test_the_trainer_tells_dino_the_epoch_length(tmp_path):
    # 2 epochs x 2 steps, tau_t warmed up over 1 epoch: np.linspace(0.04, 0.07, 2) in epoch 0, then 0.07.
    config = tiny_config("dino", {**TINY, **PLAIN, "teacher_temp": 0.07, "warmup_teacher_temp_epochs": 1},
                         trainer={"epochs": 2, "steps_per_epoch": 2}, eval={"linear_epochs": 1, "knn_k": 5})
    train_run(config, tmp_path / "run", verbose=0)
    with open(tmp_path / "run" / "history.csv") as handle:
        logged = [float(row["teacher_temp"]) for row in csv.DictReader(handle)]
    np.testing.assert_allclose(logged, [0.055, 0.07], atol=1e-6)


def test_the_head_is_finite_at_init_under_mixed_float16():
    # The std-0.02 MLP makes the bottleneck ~1e-3: in float16 its sum of squares underflowed to 0 and the
    # L2 normalisation returned inf (NaN loss at the first step); it runs in float32.
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        head = dino_head(64, K, hidden_dim=32, bottleneck_dim=16)
        features = np.random.default_rng(0).uniform(0.0, 0.05, size=(8, 64))  # small enough that the squares underflow
        logits = head(tf.constant(features, tf.float16), training=True)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert np.isfinite(np.asarray(logits, np.float32)).all()
    assert np.abs(np.asarray(logits, np.float32)).max() <= 1.0 + 1e-2  # cosines with unit prototypes


# --- learning -------------------------------------------------------------------------------------------
# Margins: half the smallest gain of seeds 1-3 (trainer.seed), rounded down; the test runs seed 0, the seed
# the config's recipe was chosen on (its header). Gains over random init, seeds 1 / 2 / 3, measured on the
# default batch norm (TF's fused kernel) with the test's command plus --set trainer.seed=S:
# kNN +5.0 / +2.7 / +6.4, linear +6.6 / +5.7 / +5.2 points.
KNN_MARGIN, LINEAR_MARGIN = 1.3, 2.6


def test_dino_beats_its_random_init_encoder_on_cifar10_validation(tmp_path):
    """DINO with multi-crop (2 x 32 px + 8 x 16 px), the zoo config on 10,000 CIFAR-10 images (9,000 train /
    1,000 validation) for 4 epochs."""
    metrics = train_on_cifar(tmp_path / "run", "zoo_configs/dino_convnet_small_cifar10.yaml",
                             "data.max_examples=10000", "trainer.epochs=4")
    assert_beats_random_init(metrics, KNN_MARGIN, LINEAR_MARGIN)
