"""CPC's InfoNCE over a grid of patch encodings, a pure function (van den Oord et al. 2018; Hénaff et al. 2020).

For a prediction step k, the context c_{i,j} of every patch predicts the encoding of the patch k rows
below: z_hat_{i+k,j} = W_k c_{i,j}. The score of a candidate encoding z is f_k(z, c_{i,j}) = exp(z^T W_k c_{i,j})
(a bilinear score: no normalisation, no temperature). The true z_{i+k,j} must be picked out of every patch
encoding in the batch: the other patches of the same image and all patches of the other images (CPC v1,
section 3.2 and Eq. 4; CPC v2, section 3).
"""

from __future__ import annotations

from typing import List, Tuple

import tensorflow as tf


# Subtracted from the logits of padding candidates: exp(-1e9) is exactly 0 in float32, and a finite value
# (unlike -inf) keeps the gradient's 0 * logit terms finite.
LARGE_NUM = 1e9


def cpc_step_loss(
    predictions: tf.Tensor, encodings: tf.Tensor, step: int, group_size: int = 0
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """InfoNCE for one prediction step k over a batch of patch grids.

    L_k = -mean over (b, i, j) with i + k < n of log[exp(z_{b,i+k,j}^T zhat) / sum_m exp(z_m^T zhat)],
    zhat = predictions[b, i, j] = W_k c_{b,i,j}, and m running over the n * n patch encodings of every
    image in b's group (the positive among them): the other patches of the same image and all patches of
    the other images. group_size 0 makes the whole batch one group (the paper); G > 0 splits the batch
    into consecutive groups of G images (the last one may be smaller), which costs B * G instead of B^2
    per step: on a CPU the full-batch scores cost several times the patch encoder itself.

    Args:
        predictions: [B, n, n, D]; row i holds the predictions made by the contexts of row i for row i + k.
        encodings: [B, n, n, D], the patch encodings z (targets and negatives).
        step: k in [1, n - 1].
        group_size: G >= 0 images per group of candidates (0: all B).
    Returns:
        loss: scalar, mean over the B * (n - k) * n predictions.
        logits: [groups, G * (n - k) * n, G * n * n] float32: per group, rows in (b, i, j) order with
            i < n - k, columns the flattened (b, i, j) of the group's encodings (b within the group). A
            batch that G does not divide is padded with empty images whose rows are ignored and whose
            columns score -1e9.
        labels: [groups, G * (n - k) * n] int32, the column of each row's positive:
            (b mod G) * n * n + (i + k) * n + j.
    """
    predictions = tf.cast(predictions, tf.float32)
    encodings = tf.cast(encodings, tf.float32)
    shape = tf.shape(encodings)
    batch, n, depth = shape[0], shape[1], shape[3]
    group = batch if group_size <= 0 else tf.minimum(batch, group_size)
    groups = (batch + group - 1) // group
    padding = [[0, groups * group - batch], [0, 0], [0, 0], [0, 0]]
    queries = tf.reshape(tf.pad(predictions[:, : n - step], padding), [groups, -1, depth])
    candidates = tf.reshape(tf.pad(encodings, padding), [groups, -1, depth])
    b, i, j = tf.meshgrid(tf.range(group), tf.range(n - step), tf.range(n), indexing="ij")
    labels = tf.tile(tf.reshape(b * n * n + (i + step) * n + j, [1, -1]), [groups, 1])
    image = tf.range(groups)[:, tf.newaxis] * group + tf.range(group)[tf.newaxis, :]  # [groups, G]
    real = image < batch
    real_candidates = tf.repeat(real, n * n, axis=1)  # [groups, G * n * n]
    real_queries = tf.repeat(real, (n - step) * n, axis=1)  # [groups, G * (n - k) * n]
    logits = tf.matmul(queries, candidates, transpose_b=True)
    logits -= LARGE_NUM * (1.0 - tf.cast(real_candidates, tf.float32))[:, tf.newaxis, :]
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    loss = tf.reduce_mean(tf.boolean_mask(losses, real_queries))
    return loss, logits, labels


def cpc_loss(
    predictions: tf.Tensor, encodings: tf.Tensor, group_size: int = 0, first_step: int = 1
) -> Tuple[tf.Tensor, tf.Tensor, List[tf.Tensor]]:
    """CPC's loss over the K prediction steps k = first_step .. first_step + K - 1: the mean of the K
    per-step InfoNCE losses.

    Args:
        predictions: [B, n, n, K, D]; predictions[..., s, :] = W_k c, the predictions of step
            k = first_step + s.
        encodings: [B, n, n, D], the patch encodings.
        group_size: candidates come from groups of this many images (0: the whole batch); see
            `cpc_step_loss`.
        first_step: the nearest row predicted (1: the next row); `first_clear_step` skips the rows whose
            patches overlap or touch the context's.
    Returns:
        loss: scalar, mean over k of `cpc_step_loss` (each step's mean over its own predictions, so the far
            steps with fewer valid rows weigh as much as the near ones).
        step_losses: [K] float32.
        hits: K tensors [B, n - k, n] float32, 1 where the positive has the highest score among the
            candidates, for accuracy logs and pictures.
    """
    steps = predictions.shape[3]
    if steps is None:
        raise ValueError("cpc_loss needs a static number of prediction steps (predictions.shape[3])")
    losses, hits = [], []
    shape = tf.shape(encodings)
    for s in range(steps):
        k = first_step + s
        loss, logits, labels = cpc_step_loss(predictions[:, :, :, s], encodings, k, group_size)
        losses.append(loss)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
        # Groups are consecutive images: flattening them back gives batch order, padding last.
        correct = tf.reshape(correct, [-1, shape[1] - k, shape[2]])[: shape[0]]
        hits.append(correct)
    step_losses = tf.stack(losses)
    return tf.reduce_mean(step_losses), step_losses, hits


def first_clear_step(patch_size: int, stride: int) -> int:
    """The smallest k whose patches neither overlap nor touch the ones k rows above (k * stride >
    patch_size): nearer targets share pixels with (or border) the context's own row, a shortcut that
    needs no understanding of the image (8-px patches at stride 4: k = 1 shares half its pixels, k = 2
    touches, k = 3 is the first clear row)."""
    return patch_size // stride + 1

