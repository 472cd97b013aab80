"""Batched image ops and pretext transforms, all stateless-seeded so an epoch's batches reproduce."""

from sslzoo.augment.ops import (
    random_crop_with_padding,
    random_flip_left_right,
    rotate_batch,
    solarize,
    split_seed,
)

__all__ = ["random_crop_with_padding", "random_flip_left_right", "rotate_batch", "solarize", "split_seed"]
