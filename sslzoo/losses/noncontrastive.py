"""Non-contrastive losses as pure functions: BYOL, SimSiam, Barlow Twins, VICReg.

None uses negatives. BYOL and SimSiam regress one view's prediction onto the other view's projection,
which gets no gradient; the caller symmetrises (swaps the views and adds or averages). Barlow Twins and
VICReg instead constrain statistics of the embeddings over the batch, so under `tf.distribute` those
statistics must be the global batch's: with `cross_replica=True` (the default, as `nt_xent`) each replica
all-gathers the embeddings (`sslzoo.layers.all_gather_batch`) and computes the global-batch loss. The
gather's gradient sums the replicas' upstream gradients and keeps this replica's rows, so with the
trainer's 1/replicas loss scaling and summed gradients, R replicas train exactly like one device.

All math is float32 (inputs are cast in, so bfloat16 activations are fine); every function is traceable
by `tf.function` and holds no Keras layer.
"""

from __future__ import annotations

from typing import Dict, Tuple

import tensorflow as tf

from sslzoo.layers.shuffle_bn import all_gather_batch


def _float32(x) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def _cosine_to_target(p: tf.Tensor, z: tf.Tensor, stop_gradient: bool = True) -> tf.Tensor:
    """float32 [N]: the cosine of each row of p with the same row of z, by default no gradient through z."""
    p = tf.math.l2_normalize(_float32(p), axis=-1)
    z = _float32(z)
    z = tf.math.l2_normalize(tf.stop_gradient(z) if stop_gradient else z, axis=-1)
    return tf.reduce_sum(p * z, axis=-1)


def byol_loss(p: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    """BYOL's regression loss: mean over the batch of ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z).

    Args:
        p: online predictions q_theta(z_theta) of one view, [N, D].
        z: target projections z'_xi of the other view, [N, D]; stop-gradient inside.
    Returns:
        float32 scalar in [0, 4]; BYOL's total loss is byol_loss(p1, z2) + byol_loss(p2, z1).
    Reference: Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
    NeurIPS 2020 (Eq. 2, Algorithm 1; the official `regression_loss`, averaged over the batch).
    """
    return tf.reduce_mean(2.0 - 2.0 * _cosine_to_target(p, z))


def simsiam_loss(p: tf.Tensor, z: tf.Tensor, *, stop_gradient: bool = True) -> tf.Tensor:
    """SimSiam's D(p, stopgrad(z)): the negative cosine similarity, averaged over the batch.

    Args:
        p: predictions h(f(x1)) of one view, [N, D].
        z: projections f(x2) of the other view, [N, D]; stop-gradient inside.
        stop_gradient: False lets the gradient flow into z too: the paper's ablation that collapses
            (Figure 2); the value is the same, only the gradient changes.
    Returns:
        float32 scalar in [-1, 1]; SimSiam's loss is simsiam_loss(p1, z2) / 2 + simsiam_loss(p2, z1) / 2.
    Reference: Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (Eq. 1 and 3,
    Algorithm 1).
    """
    return -tf.reduce_mean(_cosine_to_target(p, z, stop_gradient))


def _off_diagonal_square_sum(matrix: tf.Tensor) -> tf.Tensor:
    # Zeroing the diagonal, not subtracting its squares from the total: with c_ii near 1 the difference
    # of two sums near D would lose the small off-diagonal mass to float32 rounding.
    return tf.reduce_sum(tf.square(tf.linalg.set_diag(matrix, tf.zeros_like(tf.linalg.diag_part(matrix)))))


def _global(z: tf.Tensor, cross_replica: bool) -> tf.Tensor:
    z = _float32(z)
    return all_gather_batch(z) if cross_replica else z


def cross_correlation(z1: tf.Tensor, z2: tf.Tensor, eps: float = 1e-5) -> tf.Tensor:
    """Barlow Twins' C [D, D] = z1n^T z2n / N: each batch of embeddings [N, D] standardised per dimension
    over its rows ((z - mean) / sqrt(biased variance + eps), BatchNorm1d(affine=False) in training mode)."""
    def standardize(z):
        z = _float32(z)
        mean, variance = tf.nn.moments(z, axes=[0])
        return (z - mean) * tf.math.rsqrt(variance + eps)

    return tf.matmul(standardize(z1), standardize(z2), transpose_a=True) / tf.cast(tf.shape(z1)[0], tf.float32)


def barlow_twins_loss(
    z1: tf.Tensor, z2: tf.Tensor, lambd: float = 0.0051, *, eps: float = 1e-5, cross_replica: bool = True
) -> tf.Tensor:
    """Barlow Twins: drive the cross-correlation of the two views' embeddings to the identity.

    Each embedding is standardised per dimension over the batch, c = z1n^T z2n / N [D, D], and
    L = sum_i (1 - c_ii)^2 + lambd * sum_{i != j} c_ij^2.
    The standardisation is the official code's (`nn.BatchNorm1d(D, affine=False)` in training mode):
    (z - mean) / sqrt(var + eps) with the biased variance (divide by N) and eps = 1e-5. The paper's
    pseudocode divides by `z.std(0)`, torch's unbiased std (N - 1), which makes c_ii = (N - 1) / N for
    identical views, so perfectly aligned, decorrelated embeddings would still pay D / N^2; with the
    biased variance they pay (almost exactly) 0, and the loss is the one the published numbers come from.
    Args:
        z1, z2: projections of the two views, [n, D] (n = this replica's batch).
        lambd: weight of the redundancy-reduction (off-diagonal) term (official default 0.0051, D = 8192).
        eps: added to the variance, as BatchNorm1d's.
        cross_replica: inside a multi-replica `tf.distribute` step, standardise and correlate over the
            global batch (all-gather); every replica then returns the same, global-batch loss.
    Returns:
        float32 scalar.
    Reference: Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", ICML 2021 (Eq. 1-2, Algorithm 1; the official main.py).
    """
    c = cross_correlation(_global(z1, cross_replica), _global(z2, cross_replica), eps)
    on_diagonal = tf.reduce_sum(tf.square(1.0 - tf.linalg.diag_part(c)))
    return on_diagonal + lambd * _off_diagonal_square_sum(c)


def vicreg_loss(
    z1: tf.Tensor,
    z2: tf.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    *,
    cross_replica: bool = True,
) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """VICReg: invariance + variance + covariance regularisation of the two views' embeddings.

    invariance s = mean over rows and dimensions of (z1 - z2)^2 (torch's `F.mse_loss`);
    variance v = (v(z1) + v(z2)) / 2, v(z) = mean_j relu(gamma - sqrt(Var(z_j) + eps));
    covariance c = c(z1) + c(z2), c(z) = sum_{i != j} Cov(z)_ij^2 / D;
    loss = sim_coeff * s + std_coeff * v + cov_coeff * c.
    Var and Cov are the unbiased (N - 1) estimates, as in both the pseudocode and the official code.
    The paper's Algorithm 1 sums the two branches' variance terms; the official main_vicreg.py averages
    them (`/ 2`), and its coefficients (25, 25, 1) were tuned with that: this follows the official code.
    Both sum the two covariance terms.
    Args:
        z1, z2: embeddings (expander outputs) of the two views, [n, D], n >= 2 (the global batch).
        sim_coeff, std_coeff, cov_coeff: lambda, mu, nu of the paper (25, 25, 1).
        gamma: target standard deviation (1); eps: numerical floor inside the square root (1e-4).
        cross_replica: inside a multi-replica `tf.distribute` step, compute every term over the global
            batch (all-gather); every replica then returns the global-batch values. (The official code
            takes the invariance term on the local batch; averaged over replicas it is the same number.)
    Returns:
        (loss, {"invariance": s, "variance": v, "covariance": c}): float32 scalars, the terms unweighted.
    Reference: Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", ICLR 2022 (section 3, Algorithm 1; the official main_vicreg.py).
    """
    z1, z2 = _global(z1, cross_replica), _global(z2, cross_replica)
    invariance = tf.reduce_mean(tf.square(z1 - z2))
    dims = tf.cast(tf.shape(z1)[1], tf.float32)
    degrees = tf.cast(tf.shape(z1)[0], tf.float32) - 1.0

    def variance_and_covariance(z):
        centered = z - tf.reduce_mean(z, axis=0)
        std = tf.sqrt(tf.reduce_sum(tf.square(centered), axis=0) / degrees + eps)
        covariance = tf.matmul(centered, centered, transpose_a=True) / degrees
        return tf.reduce_mean(tf.nn.relu(gamma - std)), _off_diagonal_square_sum(covariance) / dims

    variance_1, covariance_1 = variance_and_covariance(z1)
    variance_2, covariance_2 = variance_and_covariance(z2)
    terms = {
        "invariance": invariance,
        "variance": (variance_1 + variance_2) / 2.0,
        "covariance": covariance_1 + covariance_2,
    }
    loss = sim_coeff * terms["invariance"] + std_coeff * terms["variance"] + cov_coeff * terms["covariance"]
    return loss, terms
