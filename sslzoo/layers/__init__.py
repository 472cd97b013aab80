"""Layer-level pieces shared by encoders and methods: fused batch norm, batch-statistics control for keys."""

from sslzoo.layers.batch_norm import FusedBatchNormalization
from sslzoo.layers.shuffle_bn import all_gather_batch, batch_permutation, grouped_call, shuffled_grouped_call

__all__ = ["FusedBatchNormalization", "all_gather_batch", "batch_permutation", "grouped_call", "shuffled_grouped_call"]
