"""Layer-level pieces shared by encoders and methods: fused batch norm, batch-statistics control for keys,
momentum (EMA) targets, DINO's weight-normalised output layer."""

from sslzoo.layers.batch_norm import FusedBatchNormalization
from sslzoo.layers.ema import cosine_momentum, momentum_copy, momentum_pairs, momentum_update, update_replicated
from sslzoo.layers.shuffle_bn import all_gather_batch, batch_permutation, grouped_call, shuffled_grouped_call
from sslzoo.layers.weight_norm import WeightNormalizedDense

__all__ = [
    "FusedBatchNormalization", "WeightNormalizedDense", "all_gather_batch", "batch_permutation",
    "cosine_momentum", "grouped_call", "momentum_copy", "momentum_pairs", "momentum_update",
    "shuffled_grouped_call", "update_replicated",
]
