"""DINO's self-distillation loss and its centre, as pure functions.

The student matches the teacher's centred, sharpened distribution over K prototypes on every pair of
different views. Centring (subtracting a running mean of the teacher's logits) keeps one prototype from
dominating; sharpening (a low teacher temperature) keeps the distribution from going uniform; together
they avoid collapse without negatives or a predictor.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from sslzoo.layers.shuffle_bn import all_gather_batch


def dino_loss(
    student_logits: Sequence[tf.Tensor],
    teacher_logits: Sequence[tf.Tensor],
    center: tf.Tensor,
    *,
    teacher_temp: float,
    student_temp: float = 0.1,
) -> tf.Tensor:
    """Cross-entropy H(P_t(x), P_s(x')) over every pair of a teacher view x and a different student view x'.

    P_t = softmax((t - center) / teacher_temp), without gradient (teacher and centre alike);
    log P_s = log_softmax(s / student_temp). Each pair's cross-entropy is averaged over the batch, and the
    loss is the mean over pairs (the official `DINOLoss`: `total_loss /= n_loss_terms`). With two teacher
    views and V student views there are 2 (V - 1) pairs; for V = 2 this is Algorithm 1's
    H(t1, s2) / 2 + H(t2, s1) / 2.
    Args:
        student_logits: V_s tensors [B, K], the student's outputs; the first V_t are the same views (in
            the same order) as the teacher's (the global crops), the rest are the local crops.
        teacher_logits: V_t tensors [B, K], the teacher's outputs on the global crops, 1 <= V_t <= V_s.
        center: [K] or [1, K], the running centre C (`dino_center_update`), from before this step.
        teacher_temp: tau_t (the paper: 0.04 warmed up to 0.07 over the first 30 epochs).
        student_temp: tau_s (0.1).
    Returns:
        float32 scalar, >= 0.
    Reference: Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, "Emerging Properties in
    Self-Supervised Vision Transformers", ICCV 2021 (section 3.1, Algorithm 1; the official `DINOLoss`).
    """
    if not 1 <= len(teacher_logits) <= len(student_logits) or len(student_logits) < 2:
        raise ValueError(f"{len(teacher_logits)} teacher and {len(student_logits)} student views: need "
                         "1 <= teacher views <= student views and at least 2 student views")
    center = tf.stop_gradient(tf.cast(center, tf.float32))
    targets = [tf.stop_gradient(tf.nn.softmax((tf.cast(t, tf.float32) - center) / teacher_temp, axis=-1))
               for t in teacher_logits]
    log_predictions = [tf.nn.log_softmax(tf.cast(s, tf.float32) / student_temp, axis=-1) for s in student_logits]
    terms = [tf.reduce_mean(tf.reduce_sum(-target * log_prediction, axis=-1))
             for i, target in enumerate(targets)
             for j, log_prediction in enumerate(log_predictions) if i != j]
    return tf.add_n(terms) / float(len(terms))


def dino_center_update(
    center: tf.Tensor, teacher_logits, momentum: float = 0.9, *, cross_replica: bool = True
) -> tf.Tensor:
    """The new centre: C <- m * C + (1 - m) * mean of the teacher's logits over the batch and its views.

    Args:
        center: [K] or [1, K] float32, the current centre.
        teacher_logits: a tensor [N, K] or a sequence of views [B, K] (concatenated); no gradient.
        momentum: m (the official `center_momentum`: 0.9).
        cross_replica: inside a multi-replica `tf.distribute` step, the mean over the global batch (the
            official code all-reduces the batch sum), so every replica computes the same centre.
    Returns:
        float32 tensor shaped like `center`; the caller assigns it after computing this step's loss
        with the old centre (Algorithm 1 updates C after the loss).
    Reference: Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021
    (section 3.1, "Avoiding collapse"; Algorithm 1; the official `DINOLoss.update_center`).
    """
    if isinstance(teacher_logits, (list, tuple)):
        teacher_logits = tf.concat(teacher_logits, axis=0)
    teacher_logits = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
    if cross_replica:
        teacher_logits = all_gather_batch(teacher_logits)
    batch_center = tf.reshape(tf.reduce_mean(teacher_logits, axis=0), tf.shape(center))
    return momentum * tf.cast(center, tf.float32) + (1.0 - momentum) * batch_center
