"""Contrastive losses as pure functions: NT-Xent (SimCLR), InfoNCE (MoCo) and MoCo v3's in-batch loss.

All return `(loss, logits, labels)` so a method can report contrastive accuracy from the same logits
(`top1(logits, labels)`), as the SimCLR code does.
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf

from sslzoo.layers.shuffle_bn import all_gather_batch

# Subtracted from a logit to remove it from the softmax; exp(-1e9 / tau) is exactly 0 in float32, and a
# finite value (unlike -inf) keeps 0 * logit terms of the gradient finite.
LARGE_NUM = 1e9


def _normalize(x: tf.Tensor) -> tf.Tensor:
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1)


def _distributed_replicas() -> Tuple[tf.distribute.ReplicaContext | None, int]:
    """The replica context and replica count when running inside a multi-replica `tf.distribute` step."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: the caller is not inside strategy.run
        return None, 1
    return context, context.num_replicas_in_sync


def _gather_global(z_1: tf.Tensor, z_2: tf.Tensor, cross_replica: bool):
    """Every replica's embeddings, and where this replica's rows sit in them.

    Returns (z_1 global [N, D], z_2 global [N, D], offset of the local rows in the global batch).
    `ReplicaContext.all_gather` concatenates along axis 0 in replica order and has a gradient: the
    upstream gradients of all replicas are summed and each replica keeps its own slice. That makes the
    per-replica losses (scaled by 1/replicas and their gradients summed, as `SSLMethod.train_step` does)
    differentiate exactly like the global-batch loss on one device.
    """
    context, replicas = _distributed_replicas()
    if not cross_replica or replicas == 1:
        return z_1, z_2, tf.constant(0, tf.int32)
    gathered_1 = context.all_gather(z_1, axis=0)
    gathered_2 = context.all_gather(z_2, axis=0)
    replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
    return gathered_1, gathered_2, replica_id * tf.shape(z_1)[0]


def nt_xent(
    z_1: tf.Tensor, z_2: tf.Tensor, temperature: float, *, cross_replica: bool = True, normalize: bool = True
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """SimCLR's normalized temperature-scaled cross-entropy over the 2N views of a batch.

    For anchor i with positive j: l(i, j) = -log[exp(s_ij / t) / sum_{k != i} exp(s_ik / t)], s the cosine
    similarity (the dot product with `normalize=False`); the loss is the mean of l over all 2N anchors
    (paper, Algorithm 1: L = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]). The official code sums the two
    directions instead (2x this value); learning rates here follow the paper's mean.

    Args:
        z_1: projections of the first views, [n, D] (n = this replica's batch); normalized here.
        z_2: projections of the second views, [n, D]; row i is the positive of z_1 row i.
        temperature: tau > 0.
        cross_replica: inside a `tf.distribute` replica context with more than one replica, take the
            negatives from the global batch (all-gather); False keeps only this replica's views
            (what many libraries do by accident: fewer, and easier, negatives).
        normalize: L2-normalise z (cosine similarity, the paper's); False scores raw dot products, the
            "without l2 norm" rows of the paper's Table 5.
    Returns:
        loss: scalar, the mean over this replica's 2n anchors. With R replicas each holding n = N/R
            images, (1/R) * sum of the per-replica losses is the global-batch loss.
        logits: [2n, 2N] float32; rows are this replica's anchors (view 1 rows then view 2 rows); columns
            are [all N second views, all N first views] for view-1 anchors and [all N first views, all N
            second views] for view-2 anchors, so the positive is in the first block. Each anchor's
            similarity with itself is set to about -1e9/t, leaving 2N-1 candidates.
        labels: [2n] int32, the column of each anchor's positive.
    Reference: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020 (Eq. 1, Algorithm 1; Table 5).
    """
    if normalize:
        z_1, z_2 = _normalize(z_1), _normalize(z_2)
    else:
        z_1, z_2 = tf.cast(z_1, tf.float32), tf.cast(z_2, tf.float32)
    global_1, global_2, offset = _gather_global(z_1, z_2, cross_replica)
    local_batch = tf.shape(z_1)[0]
    global_batch = tf.shape(global_1)[0]
    labels = offset + tf.range(local_batch, dtype=tf.int32)
    self_mask = tf.one_hot(labels, global_batch, dtype=tf.float32) * LARGE_NUM
    inverse_t = 1.0 / temperature
    logits_12 = tf.matmul(z_1, global_2, transpose_b=True) * inverse_t
    logits_11 = tf.matmul(z_1, global_1, transpose_b=True) * inverse_t - self_mask
    logits_21 = tf.matmul(z_2, global_1, transpose_b=True) * inverse_t
    logits_22 = tf.matmul(z_2, global_2, transpose_b=True) * inverse_t - self_mask
    logits = tf.concat(
        [tf.concat([logits_12, logits_11], axis=1), tf.concat([logits_21, logits_22], axis=1)], axis=0
    )
    labels = tf.concat([labels, labels], axis=0)
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    return loss, logits, labels


def info_nce(
    query: tf.Tensor, positive_key: tf.Tensor, negative_keys: tf.Tensor, temperature: float
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """MoCo's InfoNCE: each query against its positive key and K shared negative keys.

    L_q = -log[exp(q.k+ / t) / (exp(q.k+ / t) + sum_i exp(q.k_i / t))], averaged over the N queries.
    All three inputs are L2-normalized here (idempotent, so already-normalized inputs, such as MoCo's
    queue, are unchanged); MoCo should still enqueue normalized keys so the queue holds unit vectors.

    Args:
        query: [N, D] queries (MoCo: q from the query encoder).
        positive_key: [N, D]; row i is query i's positive (MoCo: k, no gradient by the caller's choice).
        negative_keys: [K, D] negatives shared by all queries (MoCo: the queue).
        temperature: tau > 0 (MoCo: 0.07, v2: 0.2).
    Returns:
        loss: scalar mean over N; logits: [N, 1 + K] float32 with the positive in column 0; labels: [N]
        int32 zeros.
    Reference: He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020 (Eq. 1, Algorithm 1); Oord, Li, Vinyals, "Representation Learning with
    Contrastive Predictive Coding", 2018.
    """
    query, positive_key, negative_keys = _normalize(query), _normalize(positive_key), _normalize(negative_keys)
    positive = tf.reduce_sum(query * positive_key, axis=-1, keepdims=True)
    negative = tf.matmul(query, negative_keys, transpose_b=True)
    logits = tf.concat([positive, negative], axis=1) / temperature
    labels = tf.zeros([tf.shape(query)[0]], dtype=tf.int32)
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    return loss, logits, labels


def moco_v3_loss(
    query: tf.Tensor, key: tf.Tensor, temperature: float, *, cross_replica: bool = True
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """MoCo v3's ctr(q, k): each query against every key of the global batch, scaled by 2 tau.

    ctr(q, k) = 2 tau * CrossEntropy(q k^T / tau, labels), q and k L2-normalised, the positive of query
    i the key of the same image (Algorithm 1; the official `contrastive_loss`). MoCo v3 symmetrises it:
    ctr(q1, k2) + ctr(q2, k1). With the factor 2 tau the gradient with respect to the cosines q.k is
    2 (softmax - one-hot), without the 1/tau the logits bring, so changing tau does not rescale the
    step as a whole.

    Args:
        query: [n, D] queries of this replica's images (encoder + projector + predictor).
        key: [n, D] momentum keys of the other view, row i the positive of query i. No gradient reaches
            them: the momentum branch is updated by averaging only (the official keys come from a
            `no_grad` block, gathered by a gradient-free all-gather).
        temperature: tau > 0 (official: 1.0 for ResNet, 0.2 for ViT).
        cross_replica: inside a multi-replica `tf.distribute` step, the keys are all-gathered, so every
            query is contrasted with the N keys of the global batch; positives sit at this replica's
            rows (`arange(n) + n * rank` in the official code). Queries are not gathered.
    Returns:
        loss: scalar, 2 tau times the mean cross-entropy over this replica's n queries. With R replicas
            of n = N/R images, the mean of the per-replica losses is the global-batch loss.
        logits: [n, N] float32 (q k^T / tau); labels: [n] int32, each query's positive column.
    Reference: Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers",
    ICCV 2021 (Algorithm 1; the official moco/builder.py).
    """
    query = _normalize(query)
    key = tf.stop_gradient(_normalize(key))
    offset = tf.constant(0, tf.int32)
    context, replicas = _distributed_replicas()
    if cross_replica and replicas > 1:
        key = all_gather_batch(key)
        offset = tf.cast(context.replica_id_in_sync_group, tf.int32) * tf.shape(query)[0]
    logits = tf.matmul(query, key, transpose_b=True) / temperature
    labels = offset + tf.range(tf.shape(query)[0], dtype=tf.int32)
    cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return cross_entropy * (2.0 * temperature), logits, labels
