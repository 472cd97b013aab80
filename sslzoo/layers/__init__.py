"""Layer-level helpers shared by methods (batch-statistics control for contrastive keys)."""

from sslzoo.layers.shuffle_bn import all_gather_batch, batch_permutation, grouped_call, shuffled_grouped_call

__all__ = ["all_gather_batch", "batch_permutation", "grouped_call", "shuffled_grouped_call"]
