"""The benchmark script's measurements run (speed targets are met by running it, never in a test)."""

import numpy as np
from PIL import Image

from sslzoo.augment.views import two_views
from sslzoo.bench import jpeg_augment_rate


def test_jpeg_augment_rate_reads_decodes_and_augments_every_batch(tmp_path):
    seen = []

    def augment(images, labels, seed):
        view_1, view_2 = two_views(images, seed)
        seen.append(view_1.shape)  # traced once inside tf.data: the static shape of a batch
        return {"view_1": view_1, "view_2": view_2}

    for i in range(20):
        pixels = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i:02d}.jpg")
    rate = jpeg_augment_rate(str(tmp_path), augment, batch_size=4, batches=3)
    assert np.isfinite(rate) and rate > 0
    assert seen and tuple(seen[0]) == (4, 32, 32, 3)
