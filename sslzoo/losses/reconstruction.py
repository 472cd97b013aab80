"""Reconstruction losses as pure functions, tensors in, tensors out: colour regression's per-pixel L2
(`pixel_l2`; Zhang et al. 2016 and 2017), the context encoder's losses (Pathak et al., CVPR 2016) and
MAE's per-patch MSE on the masked patches (`mae_loss`; He et al., CVPR 2022).

For the context encoder, with M = 1 on dropped pixels and F the context encoder:
    L_rec = || M * (x - F((1 - M) * x)) ||^2                       (weighted: overlap ring 10x, see below)
    L_adv = max_D  E[log D(x) + log(1 - D(F((1 - M) * x)))]
    L     = lambda_rec * L_rec + lambda_adv * L_adv,   lambda_rec = 0.999, lambda_adv = 0.001.
The discriminator takes logits here (its sigmoid is folded into the losses for numerical stability).
"""

from __future__ import annotations

import tensorflow as tf

# The paper's joint weights (context-encoder code: wtl2 = 0.999).
RECONSTRUCTION_WEIGHT = 0.999


def masked_l2(predictions: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Weighted squared error over the predicted region, normalised like the code's `MSECriterion`.

    The context-encoder code scales the MSE gradient by a weight matrix (`wtl2Matrix`: 10 on the overlap
    ring, 1 in the hole) and keeps MSECriterion's normalisation by the number of predicted values; this is
    the loss whose gradient that is: mean over every value of `weights * (predictions - targets)^2`.

    Args:
        predictions: [B, H, W, C] the decoder's output over the predicted region.
        targets: [B, H, W, C] the true pixels there, in the same scaling.
        weights: [B, H, W, 1] (or [B, H, W, C]): 1 in the hole, the overlap weight on the ring, 0 on
            pixels that do not count.
    Returns:
        scalar float32.
    """
    predictions = tf.cast(predictions, tf.float32)
    squared = tf.square(predictions - tf.cast(targets, tf.float32))
    weights = tf.broadcast_to(tf.cast(weights, tf.float32), tf.shape(squared))
    return tf.reduce_mean(weights * squared)


def region_l2(predictions: tf.Tensor, targets: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Unweighted mean squared error over the pixels where `mask` is 1, per value as `masked_l2` counts
    (a pixel of C channels is C values); 0 when the mask is empty. The context encoder logs it for the
    hole and for the overlap ring separately (`hole_l2`, `ring_l2`).

    Args:
        predictions, targets: [B, H, W, C]; mask: [B, H, W, 1] (or [B, H, W, C]) of 0/1.
    Returns:
        scalar float32.
    """
    predictions = tf.cast(predictions, tf.float32)
    squared = tf.square(predictions - tf.cast(targets, tf.float32))
    mask = tf.broadcast_to(tf.cast(mask, tf.float32), tf.shape(squared))
    return tf.math.divide_no_nan(tf.reduce_sum(mask * squared), tf.reduce_sum(mask))


def pixel_l2(predictions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """1/2 ||y - y_hat||^2 per pixel, summed over channels: [B, h, w, C] twice -> [B, h, w] float32.

    The summand of colorization's regression baseline, L2(Y_hat, Y) = 1/2 sum_{h,w} ||Y_hw - Y_hat_hw||^2
    (Zhang et al. 2016, Eq. 1), which split-brain's regression arms use for either direction (Zhang et al.
    2017, Eq. 1); callers average it over the pixels that count.
    """
    difference = tf.cast(predictions, tf.float32) - tf.cast(targets, tf.float32)
    return 0.5 * tf.reduce_sum(tf.square(difference), axis=-1)


def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """-[log D(x) + log(1 - D(G(x)))], each term averaged over the batch (the code's errD_real + errD_fake).

    Minimising it maximises the adversarial objective over D. D outputting 0.5 everywhere (logits 0)
    gives 2 log 2.
    """
    real_logits = tf.cast(real_logits, tf.float32)
    fake_logits = tf.cast(fake_logits, tf.float32)
    # -log sigmoid(z) = softplus(-z);  -log(1 - sigmoid(z)) = softplus(z).
    return tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(tf.nn.softplus(fake_logits))


def generator_adversarial_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """-log D(G(x)) averaged over the batch: the non-saturating generator loss the code trains with
    ("fake labels are real for generator cost"). D outputting 0.5 (logits 0) gives log 2."""
    return tf.reduce_mean(tf.nn.softplus(-tf.cast(fake_logits, tf.float32)))


def joint_loss(reconstruction: tf.Tensor, adversarial: tf.Tensor,
               reconstruction_weight: float = RECONSTRUCTION_WEIGHT) -> tf.Tensor:
    """lambda_rec * L_rec + (1 - lambda_rec) * L_adv: the paper's 0.999 / 0.001 by default."""
    return reconstruction_weight * reconstruction + (1.0 - reconstruction_weight) * adversarial


NORM_PIX_EPSILON = 1e-6  # the official forward_loss: (var + 1e-6) ** 0.5


def mae_loss(predictions: tf.Tensor, target_patches: tf.Tensor, mask: tf.Tensor,
             norm_pix_loss: bool = False) -> tf.Tensor:
    """MAE's loss: the mean squared error of each patch, averaged over the masked patches only.

    The official `forward_loss`: with `norm_pix_loss` every target patch is standardised by its own mean
    and its unbiased variance (torch's `.var` default, n - 1), (t - mean) / (var + 1e-6)^0.5; then
    loss_k = mean over the patch's values of (pred - target)^2 and L = sum(loss_k * mask_k) / sum(mask_k).

    Args:
        predictions: [N, L, V] the decoder's output for every patch.
        target_patches: [N, L, V] the patches of the (normalised) image, `augment.tokens.patchify`.
        mask: [N, L], 1 on masked patches (the ones that count), 0 on visible ones.
        norm_pix_loss: standardise each target patch first.
    Returns:
        scalar float32; 0 when nothing is masked (the official code would divide by 0).
    """
    predictions = tf.cast(predictions, tf.float32)
    target = tf.cast(target_patches, tf.float32)
    if norm_pix_loss:
        target = normalize_patches(target)
    per_patch = tf.reduce_mean(tf.square(predictions - target), axis=-1)
    mask = tf.cast(mask, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_patch * mask), tf.reduce_sum(mask))


def patch_statistics(patches: tf.Tensor):
    """(mean, std) of every patch over its values, [N, L, 1] each, as `norm_pix_loss` uses them: the
    unbiased variance plus 1e-6 under the square root."""
    patches = tf.cast(patches, tf.float32)
    count = tf.cast(tf.shape(patches)[-1], tf.float32)
    mean = tf.reduce_mean(patches, axis=-1, keepdims=True)
    variance = tf.reduce_sum(tf.square(patches - mean), axis=-1, keepdims=True) / (count - 1.0)
    return mean, tf.sqrt(variance + NORM_PIX_EPSILON)


def normalize_patches(patches: tf.Tensor) -> tf.Tensor:
    """Each patch standardised by its own `patch_statistics`: the `norm_pix_loss` target."""
    mean, std = patch_statistics(patches)
    return (tf.cast(patches, tf.float32) - mean) / std
