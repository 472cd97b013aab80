"""BYOL, SimSiam, Barlow Twins, VICReg and DINO losses against NumPy transcriptions of the papers'
pseudocode and the official code, closed forms, stop-gradients, and the global batch across replicas."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from sslzoo.losses import (
    barlow_twins_loss,
    byol_loss,
    dino_center_update,
    dino_loss,
    simsiam_loss,
    vicreg_loss,
)
from tests.harness import ROOT


# --- NumPy references (float64) ------------------------------------------------------------------------
def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def byol_reference(p, z):
    """The official `regression_loss`: ||p/|p| - z/|z|||^2 per row (Eq. 2), averaged over the batch."""
    return float(np.mean(np.sum((_unit(p) - _unit(z)) ** 2, axis=1)))


def simsiam_reference(p, z):
    """Algorithm 1's D(p, z) = -(normalize(p) * normalize(z)).sum(dim=1).mean()."""
    return float(-np.mean(np.sum(_unit(p) * _unit(z), axis=1)))


def barlow_reference(z_a, z_b, lambd, eps=1e-5):
    """Algorithm 1, with the official code's normalisation (BatchNorm1d, affine=False: biased variance, eps).

    c = mm(z_a_norm.T, z_b_norm) / N; c_diff = (c - eye(D)).pow(2); off_diagonal(c_diff).mul_(lambda);
    loss = c_diff.sum().
    """
    n, d = z_a.shape
    z_a_norm = (z_a - z_a.mean(0)) / np.sqrt(z_a.var(0) + eps)
    z_b_norm = (z_b - z_b.mean(0)) / np.sqrt(z_b.var(0) + eps)
    c = z_a_norm.T @ z_b_norm / n
    c_diff = (c - np.eye(d)) ** 2
    c_diff[~np.eye(d, dtype=bool)] *= lambd
    return float(c_diff.sum())


def vicreg_reference(x, y, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """The official main_vicreg.py `VICReg.forward`, line by line (gamma = 1, eps = 1e-4)."""
    batch_size, num_features = x.shape
    repr_loss = np.mean((x - y) ** 2)
    x = x - x.mean(0)
    y = y - y.mean(0)
    std_x = np.sqrt(x.var(0, ddof=1) + 0.0001)
    std_y = np.sqrt(y.var(0, ddof=1) + 0.0001)
    std_loss = np.mean(np.maximum(0, 1 - std_x)) / 2 + np.mean(np.maximum(0, 1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    off = ~np.eye(num_features, dtype=bool)
    cov_loss = (cov_x[off] ** 2).sum() / num_features + (cov_y[off] ** 2).sum() / num_features
    loss = sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss
    return float(loss), {"invariance": repr_loss, "variance": std_loss, "covariance": cov_loss}


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def dino_reference(student, teacher, center, student_temp, teacher_temp):
    """The official `DINOLoss.forward`: loops over (teacher view iq, student view v != iq)."""
    student_out = [s / student_temp for s in student]
    teacher_out = [_softmax((t - center) / teacher_temp) for t in teacher]
    total_loss, n_loss_terms = 0.0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            log_softmax = np.log(_softmax(student_out[v]))
            total_loss += np.mean(np.sum(-q * log_softmax, axis=1))
            n_loss_terms += 1
    return total_loss / n_loss_terms


def hadamard(n):
    """Sylvester's Hadamard matrix [n, n] of +-1 (n a power of 2): orthogonal columns, the first all ones."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def standardized_orthogonal(n, d):
    """[n, d], d < n: columns of mean 0, biased std 1 and pairwise orthogonal (Hadamard columns 1..d)."""
    return hadamard(n)[:, 1:d + 1]


def _pair(seed, n, d, noise=0.7):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    return a.astype(np.float32), (a + noise * rng.normal(size=(n, d))).astype(np.float32)


# --- BYOL and SimSiam ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, d", [(1, 3), (8, 16), (5, 7)])
def test_byol_and_simsiam_match_the_official_definitions(n, d):
    p, z = _pair(n, n, d)
    z = 3.0 * z  # the scale of either input must not matter
    assert byol_loss(p, z).numpy() == pytest.approx(byol_reference(p, z), rel=1e-5, abs=1e-6)
    assert simsiam_loss(p, z).numpy() == pytest.approx(simsiam_reference(p, z), rel=1e-5, abs=1e-6)


def test_byol_and_simsiam_closed_forms():
    z = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    # Identical directions: BYOL 2 - 2 = 0, SimSiam -1; opposite: 4 and +1.
    assert byol_loss(2.0 * z, z).numpy() == pytest.approx(0.0, abs=1e-6)
    assert simsiam_loss(2.0 * z, z).numpy() == pytest.approx(-1.0, abs=1e-6)
    assert byol_loss(-z, z).numpy() == pytest.approx(4.0, abs=1e-5)
    assert simsiam_loss(-z, z).numpy() == pytest.approx(1.0, abs=1e-6)
    # Orthogonal rows: cosine 0, BYOL 2, SimSiam 0.
    assert byol_loss(np.eye(4, dtype=np.float32), np.roll(np.eye(4, dtype=np.float32), 1, axis=1)).numpy() == \
        pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("loss_fn", [byol_loss, simsiam_loss])
def test_byol_and_simsiam_give_no_gradient_to_the_target(loss_fn):
    p, z = (tf.Variable(v) for v in _pair(1, 4, 6))
    with tf.GradientTape() as tape:
        loss = loss_fn(p, z)
    grad_p, grad_z = tape.gradient(loss, [p, z], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert np.all(grad_z.numpy() == 0.0)
    assert np.abs(grad_p.numpy()).max() > 1e-3
    # The gradient of a cosine is orthogonal to p (the loss does not depend on p's norm).
    np.testing.assert_allclose(np.sum(grad_p.numpy() * p.numpy(), axis=1), 0.0, atol=1e-6)


# --- Barlow Twins --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, d, lambd", [(16, 8, 0.0051), (9, 12, 0.5), (32, 4, 1.0)])
def test_barlow_twins_matches_algorithm_1(n, d, lambd):
    z1, z2 = _pair(n, n, d)
    z2 = 2.0 * z2 + 1.0
    expected = barlow_reference(z1.astype(np.float64), z2.astype(np.float64), lambd)
    assert barlow_twins_loss(z1, z2, lambd).numpy() == pytest.approx(expected, rel=1e-5)


def test_barlow_twins_closed_forms():
    n, d = 16, 6
    z = standardized_orthogonal(n, d)
    # Aligned and decorrelated: c = I (up to eps), loss 0, whatever the per-dimension scale and shift.
    # With the pseudocode's unbiased std c_ii would be (N - 1) / N and the loss D / N^2 = 0.023.
    z1 = (3.0 * z + 5.0).astype(np.float32)
    z2 = (0.5 * z - 2.0).astype(np.float32)
    # BatchNorm1d's eps shrinks each standardised column by 1 / sqrt(1 + eps / var): c = s * I.
    s = 1.0 / math.sqrt((1 + 1e-5 / 9.0) * (1 + 1e-5 / 0.25))
    assert barlow_twins_loss(z1, z2, 0.0051).numpy() == pytest.approx(d * (1 - s) ** 2, abs=1e-9)
    assert barlow_twins_loss(z1, z2, 0.0051, eps=0.0).numpy() == pytest.approx(0.0, abs=1e-10)
    # Anti-aligned: c = -s * I, each diagonal term (1 + s)^2, about 4.
    assert barlow_twins_loss(z1, -z2, 0.0051).numpy() == pytest.approx(d * (1 + s) ** 2, rel=1e-6)
    # Two dimensions swapped: c is a permutation matrix, 2 diagonal zeros (cost 1 each) and 2 off-diagonal
    # ones (cost lambda each).
    swapped = z2[:, [1, 0, 2, 3, 4, 5]]
    assert barlow_twins_loss(z1, swapped, 0.25, eps=0.0).numpy() == pytest.approx(2.0 + 2 * 0.25, rel=1e-6)


# --- VICReg ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, d, scale", [(16, 8, 1.0), (10, 5, 0.3), (24, 12, 2.5)])
def test_vicreg_matches_the_official_code(n, d, scale):
    z1, z2 = _pair(n, n, d)
    z1, z2 = scale * z1, scale * z2  # 0.3: every std below gamma (hinge active); 2.5: mostly inactive
    loss, terms = vicreg_loss(z1, z2)
    expected, expected_terms = vicreg_reference(z1.astype(np.float64), z2.astype(np.float64))
    assert loss.numpy() == pytest.approx(expected, rel=1e-5)
    for name in ("invariance", "variance", "covariance"):
        assert terms[name].numpy() == pytest.approx(expected_terms[name], rel=1e-5, abs=1e-7), name
    # Other coefficients weight the same terms.
    weighted, _ = vicreg_loss(z1, z2, sim_coeff=1.0, std_coeff=2.0, cov_coeff=3.0)
    assert weighted.numpy() == pytest.approx(
        vicreg_reference(z1.astype(np.float64), z2.astype(np.float64), 1.0, 2.0, 3.0)[0], rel=1e-5)


def test_vicreg_closed_forms():
    n, d, eps = 16, 6, 1e-4
    z = standardized_orthogonal(n, d).astype(np.float32)
    # Every dimension's std >= gamma (unbiased std of +-1 over 16 rows: sqrt(16/15)) and no covariance:
    # only the invariance term is left.
    loss, terms = vicreg_loss(z, 1.5 * z)
    assert terms["variance"].numpy() == 0.0
    assert terms["covariance"].numpy() == pytest.approx(0.0, abs=1e-10)
    assert terms["invariance"].numpy() == pytest.approx(0.25, rel=1e-6)  # mean of (0.5 * +-1)^2
    assert loss.numpy() == pytest.approx(25.0 * 0.25, rel=1e-6)
    # Collapse (every row the same): the hinge pays gamma - sqrt(eps) per dimension, nothing else does.
    collapsed = np.tile(np.random.default_rng(0).normal(size=(1, d)), (n, 1)).astype(np.float32)
    for gamma in (1.0, 2.0):
        loss, terms = vicreg_loss(collapsed, collapsed, gamma=gamma, eps=eps)
        assert terms["variance"].numpy() == pytest.approx(gamma - math.sqrt(eps), rel=1e-6)
        assert terms["invariance"].numpy() == 0.0
        assert terms["covariance"].numpy() == pytest.approx(0.0, abs=1e-12)  # float32 rounding of the mean
        assert loss.numpy() == pytest.approx(25.0 * (gamma - math.sqrt(eps)), rel=1e-6)
    # One dimension copied into another: Cov_01 = Cov_10 = Var = 16/15 in each branch.
    copied = z.copy()
    copied[:, 1] = copied[:, 0]
    _, terms = vicreg_loss(copied, copied)
    assert terms["covariance"].numpy() == pytest.approx(2 * 2 * (16 / 15) ** 2 / d, rel=1e-5)


# --- DINO ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("student_views, teacher_views", [(2, 2), (6, 2), (3, 1)])
def test_dino_loss_matches_the_official_dino_loss(student_views, teacher_views):
    rng = np.random.default_rng(student_views)
    b, k = 5, 11
    student = [rng.normal(size=(b, k)).astype(np.float32) for _ in range(student_views)]
    teacher = [rng.normal(size=(b, k)).astype(np.float32) for _ in range(teacher_views)]
    center = rng.normal(size=(1, k)).astype(np.float32)
    loss = dino_loss(student, teacher, center, teacher_temp=0.04, student_temp=0.1)
    expected = dino_reference(student, teacher, center, 0.1, 0.04)
    assert loss.numpy() == pytest.approx(expected, rel=1e-5)
    if student_views == teacher_views == 2:
        # Algorithm 1: loss = H(t1, s2) / 2 + H(t2, s1) / 2.
        def h(t, s):
            return np.mean(-np.sum(_softmax((t - center) / 0.04) * np.log(_softmax(s / 0.1)), axis=1))
        assert loss.numpy() == pytest.approx(h(teacher[0], student[1]) / 2 + h(teacher[1], student[0]) / 2,
                                             rel=1e-5)


def test_dino_loss_of_uniform_distributions_is_log_k():
    k = 64
    student = [np.full((4, k), 3.0, np.float32)] * 4
    teacher = [np.full((4, k), 7.0, np.float32)] * 2
    loss = dino_loss(student, teacher, np.full([k], 7.0, np.float32), teacher_temp=0.04)
    assert loss.numpy() == pytest.approx(math.log(k), rel=1e-6)
    # A student that puts all its mass where a one-hot teacher does pays (almost) nothing.
    one_hot = 50.0 * np.eye(4, k, dtype=np.float32)
    loss = dino_loss([one_hot, one_hot], [one_hot, one_hot], np.zeros([k], np.float32), teacher_temp=0.04)
    assert loss.numpy() < 1e-6


def test_dino_loss_gives_no_gradient_to_teacher_or_center():
    rng = np.random.default_rng(3)
    student = [tf.Variable(rng.normal(size=(3, 7)).astype(np.float32)) for _ in range(4)]
    teacher = [tf.Variable(rng.normal(size=(3, 7)).astype(np.float32)) for _ in range(2)]
    center = tf.Variable(rng.normal(size=(7,)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = dino_loss(student, teacher, center, teacher_temp=0.07)
    grads = tape.gradient(loss, student + teacher + [center], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert all(np.all(g.numpy() == 0.0) for g in grads[4:])
    assert all(np.abs(g.numpy()).max() > 1e-3 for g in grads[:4])
    # Each student row's gradient sums to zero over K (softmax is shift-invariant).
    np.testing.assert_allclose(grads[0].numpy().sum(axis=1), 0.0, atol=1e-6)


def test_dino_loss_needs_distinct_view_pairs():
    one = [np.zeros((2, 3), np.float32)]
    with pytest.raises(ValueError, match="student views"):
        dino_loss(one, one, np.zeros([3], np.float32), teacher_temp=0.04)
    with pytest.raises(ValueError, match="student views"):
        dino_loss(one * 2, one * 3, np.zeros([3], np.float32), teacher_temp=0.04)


def test_dino_center_update_is_the_ema_of_the_teacher_batch_mean():
    rng = np.random.default_rng(4)
    views = [rng.normal(size=(5, 9)).astype(np.float32) for _ in range(2)]
    center = rng.normal(size=(1, 9)).astype(np.float32)
    expected = 0.9 * center + 0.1 * np.concatenate(views).mean(axis=0, keepdims=True)
    updated = dino_center_update(center, views, 0.9)
    assert updated.shape == (1, 9)
    np.testing.assert_allclose(updated.numpy(), expected, rtol=1e-6, atol=1e-7)
    # A tensor of all views and a [K] centre give the same numbers.
    flat = dino_center_update(center[0], tf.concat(views, axis=0), 0.9)
    np.testing.assert_allclose(flat.numpy(), expected[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(dino_center_update(center, views, 1.0).numpy(), center)


# --- dtypes and tracing ----------------------------------------------------------------------------------
def test_losses_trace_and_compute_in_float32_for_bfloat16_inputs():
    z1, z2 = _pair(5, 12, 8)
    z3 = z1 + z2  # a third (local) view for DINO
    center = np.zeros([8], np.float32)

    def all_losses(a, b, c):
        return [byol_loss(a, b), simsiam_loss(a, b), barlow_twins_loss(a, b), vicreg_loss(a, b)[0],
                dino_loss([a, b, c], [b, a], center, teacher_temp=0.04)]

    eager = [v.numpy() for v in all_losses(z1, z2, z3)]
    traced = tf.function(all_losses)(tf.constant(z1), tf.constant(z2), tf.constant(z3))
    np.testing.assert_allclose([v.numpy() for v in traced], eager, rtol=1e-6)
    half = [tf.cast(v, tf.bfloat16) for v in (z1, z2, z3)]
    rounded = [tf.cast(v, tf.float32) for v in half]
    from_half = all_losses(*half)
    assert all(v.dtype == tf.float32 for v in from_half)
    # Same numbers as float32 math on the rounded inputs: nothing ran in bfloat16.
    np.testing.assert_allclose([v.numpy() for v in from_half], [v.numpy() for v in all_losses(*rounded)],
                               rtol=1e-6)


# --- across replicas -------------------------------------------------------------------------------------
# Two logical CPUs (a fresh process: devices are configured before TensorFlow starts). Each replica holds
# 8 of 16 rows; its loss (scaled by 1/replicas as SSLMethod.train_step does) is differentiated with respect
# to its own rows. Prints per-replica losses and the gradients of all rows, for cross_replica True/False.
REPLICAS = textwrap.dedent("""
    import json
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from sslzoo.losses import barlow_twins_loss, dino_center_update, vicreg_loss

    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(16, 6)).astype("float32")
    z2 = (z1 + 0.5 * rng.normal(size=(16, 6))).astype("float32")
    # Different distributions on the two replicas, so per-replica statistics differ from global ones.
    z1[8:] = 3.0 * z1[8:] + 1.0
    center = np.zeros([6], "float32")
    losses = {"barlow": lambda a, b, g: barlow_twins_loss(a, b, 0.1, cross_replica=g),
              "vicreg": lambda a, b, g: vicreg_loss(a, b, cross_replica=g)[0]}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {}
    for name, fn in losses.items():
        for gather in (True, False):
            def step():
                r = tf.distribute.get_replica_context().replica_id_in_sync_group
                a, b = tf.constant(z1)[r * 8:(r + 1) * 8], tf.constant(z2)[r * 8:(r + 1) * 8]
                with tf.GradientTape() as tape:
                    tape.watch([a, b])
                    loss = fn(a, b, gather)
                    scaled = loss / 2.0
                return (loss,) + tuple(tape.gradient(scaled, [a, b]))
            loss, ga, gb = strategy.run(tf.function(step))
            local = strategy.experimental_local_results
            out[f"{name}_{gather}"] = {
                "loss": [float(v.numpy()) for v in local(loss)],
                "grad": np.concatenate([np.concatenate([x.numpy() for x in local(ga)]),
                                        np.concatenate([x.numpy() for x in local(gb)])]).tolist()}
        z1t, z2t = tf.Variable(z1), tf.Variable(z2)
        with tf.GradientTape() as tape:
            single = fn(z1t, z2t, True)
        out[f"{name}_single"] = {"loss": float(single.numpy()),
                                 "grad": np.concatenate([g.numpy() for g in tape.gradient(single, [z1t, z2t])]).tolist()}
    def centre():
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        return dino_center_update(tf.constant(center), tf.constant(z1)[r * 8:(r + 1) * 8], 0.5)
    out["center"] = [v.numpy().tolist() for v in strategy.experimental_local_results(strategy.run(tf.function(centre)))]
    out["center_single"] = dino_center_update(center, z1, 0.5).numpy().tolist()
    print("RESULT" + json.dumps(out))
""")


def test_batch_statistics_are_global_across_replicas():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", REPLICAS], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    for name in ("barlow", "vicreg"):
        single, gathered, local = out[f"{name}_single"], out[f"{name}_True"], out[f"{name}_False"]
        # Every replica computes the global-batch loss, and the gradients of the 1/R-scaled replica losses
        # are the one-device gradients of every row.
        assert gathered["loss"] == pytest.approx([single["loss"]] * 2, rel=1e-5)
        np.testing.assert_allclose(gathered["grad"], single["grad"], rtol=1e-4, atol=1e-6)
        # Without the gather the statistics are per replica: different losses, different gradients.
        assert abs(np.mean(local["loss"]) - single["loss"]) > 1e-2 * abs(single["loss"])
        assert np.abs(np.array(local["grad"]) - np.array(single["grad"])).max() > 1e-3
    for replica_center in out["center"]:
        np.testing.assert_allclose(replica_center, out["center_single"], rtol=1e-6, atol=1e-6)
