"""Barlow Twins: the method contract, the projector's shape, the loss on the method's own projections
against a NumPy transcription of Algorithm 1, and training driving the cross-correlation towards the
identity (the paper's objective, measured on the method's C)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.backbones import build_encoder
from sslzoo.config import ConfigError
from sslzoo.losses.noncontrastive import cross_correlation
from sslzoo.methods import build_method
from tests.harness import assert_beats_random_init, check_method_contract, train_on_cifar

SEED = tf.constant([3, 7], tf.int32)
TINY = {"projector_dim": 16}


def _images(batch=8, size=32, seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype(np.float32)


def tiny_barlow(size=32, **options):
    keras.utils.set_random_seed(0)
    return build_method("barlow_twins", {**TINY, **options}, build_encoder("convnet_small", size, width=0.25))


def test_contract(tmp_path):
    # Plain SGD at the harness' 0.05 moves the features to ~4,000 in one step (the loss sums D^2 terms
    # whose gradient runs through 1/std of a 16-row batch); the paper's LARS is scale-free. 1e-3 keeps
    # them at the scale where 1e-5 parity is meaningful.
    check_method_contract("barlow_twins", TINY, tmp_path, optimizer={"learning_rate": 1e-3})


@pytest.mark.parametrize("layers", [1, 3])
def test_projector_is_linear_bn_relu_then_a_linear_output(layers):
    method = tiny_barlow(projector_layers=layers)
    dense = [l for l in method.projector.layers if isinstance(l, keras.layers.Dense)]
    norms = [l for l in method.projector.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert [d.units for d in dense] == [16] * layers and len(norms) == layers - 1
    assert isinstance(method.projector.layers[-1], keras.layers.Dense)


def algorithm_1(z_a, z_b, lambd):
    """The paper's Algorithm 1 with BatchNorm1d(affine=False)'s biased variance (the official code)."""
    n = len(z_a)
    z_a = (z_a - z_a.mean(0)) / np.sqrt(z_a.var(0) + 1e-5)
    z_b = (z_b - z_b.mean(0)) / np.sqrt(z_b.var(0) + 1e-5)
    c = z_a.T @ z_b / n
    off = c - np.diag(np.diag(c))
    return ((1 - np.diag(c)) ** 2).sum() + lambd * (off ** 2).sum()


def test_loss_is_algorithm_1_on_the_two_views_projections():
    method = tiny_barlow(lambd=0.02)
    data = method.augment(tf.constant(_images(16)), tf.zeros([16], tf.int32), SEED)
    _, z_1 = method.embed(data["view_1"], training=False)
    _, z_2 = method.embed(data["view_2"], training=False)
    loss, logs = method.compute_loss_and_logs(data, training=False)
    expected = algorithm_1(z_1.numpy().astype(np.float64), z_2.numpy().astype(np.float64), 0.02)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert float(logs["loss"]) == float(loss)


def _train_and_correlate(lambd: float):
    """(mean C_ii, mean |C_ij| over i != j) of the method's projections after 40 SGD steps on 64 random
    16-px images with fixed views (training-mode BN, as the loss sees them)."""
    keras.utils.set_random_seed(0)
    method = build_method("barlow_twins", {"projector_dim": 32, "lambd": lambd},
                          build_encoder("convnet_small", 16, width=0.25))
    method.compile(optimizer=keras.optimizers.SGD(0.002, momentum=0.9))
    data = method.augment(tf.constant(_images(64, 16)), tf.zeros([64], tf.int32), SEED)
    method.fit(tf.data.Dataset.from_tensors(data).repeat(), steps_per_epoch=40, epochs=1, verbose=0,
               shuffle=False)
    _, z_1 = method.embed(data["view_1"], training=True)
    _, z_2 = method.embed(data["view_2"], training=True)
    c = cross_correlation(z_1, z_2).numpy()
    return np.diag(c).mean(), np.abs(c - np.diag(np.diag(c))).sum() / (c.size - len(c))


def test_the_off_diagonal_term_is_what_keeps_the_dimensions_decorrelated():
    # Measured (seeds 0 / 1 of the weights): at init mean C_ii -0.04 / -0.02 and mean |C_ij| 0.10 / 0.09,
    # the sampling noise of 64 rows (~1/sqrt(64)). After training, with lambda 0.2: C_ii 0.83 / 0.85,
    # |C_ij| 0.11 / 0.11 (still at the noise floor); with lambda 0 (invariance only): C_ii 0.98 / 0.98 but
    # |C_ij| 0.81 / 0.51, the dimensions redundant copies of each other.
    diagonal, off_diagonal = _train_and_correlate(lambd=0.2)
    assert diagonal > 0.7 and off_diagonal < 0.15, (diagonal, off_diagonal)
    diagonal, off_diagonal = _train_and_correlate(lambd=0.0)
    assert diagonal > 0.9 and off_diagonal > 0.3, (diagonal, off_diagonal)


def test_save_pictures_writes_a_png(tmp_path):
    method = tiny_barlow()
    data = method.augment(tf.constant(_images()), tf.zeros([8], tf.int32), SEED)
    assert method.save_pictures(data, tmp_path) == ["barlow_twins_views.png"]


@pytest.mark.parametrize("options, words", [({"projector_layers": 0}, "projector_layers"),
                                            ({"lambd": -1.0}, "lambd"),
                                            ({"blur_probability_2": 2.0}, "blur_probability_2"),
                                            ({"temperature": 0.1}, "unknown")])
def test_bad_options_fail_at_build_time(options, words):
    with pytest.raises(ConfigError, match=words):
        tiny_barlow(**options)


# Margins: half the smallest gain of seeds 1-3 (trainer.seed), rounded down; the test runs seed 0, the seed
# the config's rate was chosen on (its header). Gains over random init, seeds 1 / 2 / 3, measured on the
# default batch norm (TF's fused kernel) with the test's command plus --set trainer.seed=S:
# kNN +5.6 / +4.6 / +9.5, linear +5.0 / +4.2 / +2.7 points.
KNN_MARGIN, LINEAR_MARGIN = 2.3, 1.3


def test_barlow_twins_beats_its_random_init_encoder_on_cifar10_validation(tmp_path):
    """Barlow Twins, the zoo config on 10,000 CIFAR-10 images (9,000 train / 1,000 validation) for 4 epochs."""
    metrics = train_on_cifar(tmp_path / "run", "zoo_configs/barlow_twins_convnet_small_cifar10.yaml",
                             "data.max_examples=10000", "trainer.epochs=4")
    assert_beats_random_init(metrics, KNN_MARGIN, LINEAR_MARGIN)
