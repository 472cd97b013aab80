"""Data for sslzoo: sources (`folder`, `tfds`, `synthetic`) behind `load_splits`, and `make_pipeline`.

    splits = load_splits(cfg.data)   # DataSplits: train/val ImageSet (uint8 [N, S, S, 3], int32 [N]), ...
    ds = make_pipeline(splits.train.images, splits.train.labels, batch_size=128, seed=0, first_epoch=0,
                       num_epochs=10, augment=method_augment)
"""

from sslzoo.data.pipeline import make_pipeline
from sslzoo.data.sources import DataError, DatasetNotPreparedError, DataSplits, ImageSet, load_splits

__all__ = ["load_splits", "make_pipeline", "DataSplits", "ImageSet", "DataError", "DatasetNotPreparedError"]
