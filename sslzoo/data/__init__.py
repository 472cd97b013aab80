"""Data for sslzoo: sources (`folder`, `tfds`, `synthetic`) behind `load_splits`, and `make_pipeline`.

    splits = load_splits(cfg.data)   # DataSplits: train/val ImageSet (uint8 [N, S, S, 3], int32 [N]), ...
    ds = make_pipeline(splits.train.images, splits.train.labels, batch_size=128, seed=0, first_epoch=0,
                       num_epochs=10, augment=method_augment)
"""

from sslzoo.data.pipeline import make_pipeline
from sslzoo.data.stream import make_file_pipeline, split_pipeline
from sslzoo.data.sources import load_splits
from sslzoo.data.splits import DataSplits, ImageSet
from sslzoo.errors import DataError, DatasetNotPreparedError

__all__ = ["load_splits", "make_pipeline", "make_file_pipeline", "split_pipeline", "DataSplits", "ImageSet", "DataError", "DatasetNotPreparedError"]
