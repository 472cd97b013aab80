"""Image sources behind one interface: `load_splits(DataConfig) -> DataSplits`.

A source turns `cfg` into labelled uint8 RGB images; `sslzoo.data.splits` splits them the same way for
every source.
"""

from __future__ import annotations

import logging

from sslzoo.data.splits import DataSplits
from sslzoo.errors import DataError

logger = logging.getLogger(__name__)


def load_splits(cfg) -> DataSplits:
    """Loads the source named by `cfg.source` and splits it.

    Args:
        cfg: `sslzoo.config.DataConfig`.
    Returns:
        `DataSplits` with uint8 [N, cfg.image_size, cfg.image_size, 3] images.
    """
    # Imported here so that e.g. the synthetic source never pays for importing tensorflow_datasets.
    if cfg.source in ("folder", "list"):
        from sslzoo.data.folder import load_folder

        splits = load_folder(cfg)
    elif cfg.source == "tfrecord":
        from sslzoo.data.tfrecord_source import load_tfrecord

        splits = load_tfrecord(cfg)
    elif cfg.source == "tfds":
        from sslzoo.data.tfds_source import load_tfds

        splits = load_tfds(cfg)
    elif cfg.source == "synthetic":
        from sslzoo.data.synthetic import load_synthetic

        splits = load_synthetic(cfg)
    else:
        raise DataError(f"data.source '{cfg.source}' is not one of folder, list, tfrecord, tfds, synthetic")
    logger.info("data (%s): %d train, %d val, %d classes", cfg.source, len(splits.train), len(splits.val),
                len(splits.class_names))
    return splits
