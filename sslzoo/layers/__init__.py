"""Layer-level pieces shared by encoders and methods: fused batch norm, the small-map conv (and
`with_builtin_layers`, which swaps both back to Keras' own for artifacts), batch-statistics control for keys,
momentum (EMA) targets, DINO's weight-normalised output layer."""

from sslzoo.layers.batch_norm import FusedBatchNormalization
from sslzoo.layers.builtin import with_builtin_layers
from sslzoo.layers.conv import SmallMapConv2D
from sslzoo.layers.ema import cosine_momentum, momentum_copy, momentum_pairs, momentum_update, update_replicated
from sslzoo.layers.shuffle_bn import all_gather_batch, batch_permutation, grouped_call, shuffled_grouped_call
from sslzoo.layers.weight_norm import WeightNormalizedDense

__all__ = [
    "FusedBatchNormalization", "SmallMapConv2D", "WeightNormalizedDense", "all_gather_batch", "batch_permutation",
    "cosine_momentum", "grouped_call", "momentum_copy", "momentum_pairs", "momentum_update",
    "shuffled_grouped_call", "update_replicated", "with_builtin_layers",
]
