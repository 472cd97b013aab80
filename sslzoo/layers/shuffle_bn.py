"""Shuffling BN for momentum-contrast keys, on one device and across `tf.distribute` replicas.

Why (MoCo, He et al. CVPR 2020, section 3.3): with batch normalization, each output depends on the
statistics of the batch it was normalized with. If a query and its positive key are normalized with
statistics of the same images (two views of the same batch), the network can "cheat" the pretext task:
it recognises the positive by the shared batch statistics instead of by content, and the loss drops
without the features getting better. MoCo's fix: BN statistics come from subsets of the batch (one per
GPU), and the key batch is shuffled before it is split into subsets and unshuffled afterwards, so a query
and its positive key are normalized with statistics of (mostly) different images.

What this module does, with plain Keras `BatchNormalization` (no custom layer, so the exported encoder
keeps only built-in layers):
- `grouped_call(fn, x, groups)`: runs `fn` on `groups` equal, contiguous slices of the batch and
  concatenates the results. In training mode every BN inside `fn` then normalizes with the statistics of
  its own slice: the single-device emulation of per-GPU BN (MoCo's CIFAR demo uses `SplitBatchNorm` with
  8 splits for the same purpose; separate calls give the same statistics without a custom layer).
- `shuffled_grouped_call(fn, x, groups, seed)`: the key side. On one device: a random permutation of the
  batch, `grouped_call`, the inverse permutation. Under `tf.distribute` with R > 1 replicas: the inputs of
  all replicas are all-gathered, permuted with a permutation every replica draws identically (same
  stateless seed), each replica encodes its slice of the shuffled global batch (with `groups` slices of
  its own), the outputs are all-gathered and unpermuted: MoCo's `_batch_shuffle_ddp` /
  `_batch_unshuffle_ddp`. It also returns the global keys in global-batch order, which MoCo enqueues.
Queries go through `grouped_call` without shuffling, so query i and key i sit in different random
subsets, as in MoCo with one BN subset per GPU.
"""

from __future__ import annotations

from typing import Callable, Tuple

import tensorflow as tf


def batch_permutation(size, seed: tf.Tensor) -> tf.Tensor:
    """int32 [size]: a uniformly random permutation drawn from a stateless seed (int [2])."""
    noise = tf.random.stateless_uniform(tf.reshape(size, [1]), seed=seed)
    return tf.cast(tf.argsort(noise, stable=True), tf.int32)


def grouped_call(fn: Callable, inputs: tf.Tensor, groups: int):
    """`fn` applied to `groups` contiguous equal slices of `inputs` [B, ...]; outputs concatenated on axis 0.

    `fn` may return a tensor or a nested structure of tensors. B must be divisible by `groups`
    (the caller validates it; tf.split raises otherwise).
    """
    if groups <= 1:
        return fn(inputs)
    outputs = [fn(chunk) for chunk in tf.split(inputs, groups, axis=0)]
    return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *outputs)


def _replica_context():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def shuffled_grouped_call(
    fn: Callable, inputs: tf.Tensor, groups: int, seed: tf.Tensor
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Shuffling BN: `fn` on shuffled slices of the (global) batch, results back in input order.

    Args:
        fn: images [b, ...] -> outputs [b, D] (e.g. key encoder + projector in training mode).
        inputs: this replica's batch [B, ...].
        groups: BN subsets per replica (1: one subset per replica).
        seed: int [2] stateless seed; must be the same on every replica (e.g. derived from the step).
    Returns:
        (local [B, D]: outputs for this replica's inputs, in their order;
         global [R*B, D]: outputs for the whole global batch in replica order, i.e. what
         `all_gather(local)` would give; equal to `local` on one device).
    """
    context = _replica_context()
    if context is None:
        permutation = batch_permutation(tf.shape(inputs)[0], seed)
        shuffled = grouped_call(fn, tf.gather(inputs, permutation), groups)
        local = tf.gather(shuffled, tf.math.invert_permutation(permutation))
        return local, local
    local_batch = tf.shape(inputs)[0]
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    everything = context.all_gather(inputs, axis=0)
    permutation = batch_permutation(tf.shape(everything)[0], seed)
    mine = permutation[replica * local_batch:(replica + 1) * local_batch]
    outputs = grouped_call(fn, tf.gather(everything, mine), groups)
    # Row j of the gathered outputs belongs to global example permutation[j]: invert to global order.
    gathered = context.all_gather(outputs, axis=0)
    global_outputs = tf.gather(gathered, tf.math.invert_permutation(permutation))
    local = global_outputs[replica * local_batch:(replica + 1) * local_batch]
    return local, global_outputs


def all_gather_batch(values: tf.Tensor) -> tf.Tensor:
    """This replica's rows [B, ...] -> the global batch [R*B, ...] in replica order (identity on one device)."""
    context = _replica_context()
    return values if context is None else context.all_gather(values, axis=0)
