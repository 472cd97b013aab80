"""The TensorBoard projector files of an embedding folder: `tensorboard --logdir DIR` shows the map.

    DIR/embedding.ckpt-1.*, DIR/checkpoint   tf.train.Checkpoint(embedding=tf.Variable(embeddings))
    DIR/metadata.tsv                         one row per embedding: the path (and its class, with a header)
    DIR/sprite.png                           the thumbnails, row-major, ceil(sqrt(N)) per row
    DIR/projector_config.pbtxt               names the tensor, the metadata and the sprite (relative paths)

The projector reads a sprite of at most 8192 x 8192 pixels (`SPRITE_MAX_SIDE`) and needs one thumbnail per
point in point order, so the thumbnails shrink as N grows: `thumbnail_size(n, image_size)` is the
encoder's input size capped at 64 px and at 8192 // ceil(sqrt(N)); below `MIN_THUMBNAIL` px (above
`SPRITE_MAX_IMAGES` = 262,144 images) no sprite is written and embed.json says why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np

PROJECTOR_CONFIG = "projector_config.pbtxt"  # tensorboard.plugins.projector.metadata.PROJECTOR_FILENAME
CHECKPOINT_PREFIX = "embedding.ckpt"
# tf.train.Checkpoint(embedding=variable) stores the variable under this key.
TENSOR_NAME = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
METADATA = "metadata.tsv"
SPRITE = "sprite.png"
SPRITE_MAX_SIDE = 8192  # the projector's limit on the sprite's width and height
MAX_THUMBNAIL = 64
MIN_THUMBNAIL = 16
SPRITE_MAX_IMAGES = (SPRITE_MAX_SIDE // MIN_THUMBNAIL) ** 2  # 262,144


def thumbnail_size(n: int, image_size: int) -> int:
    """Side of each sprite thumbnail for n images, 0 when no sprite is made (n > SPRITE_MAX_IMAGES)."""
    if n <= 0:
        return 0
    side = min(image_size, MAX_THUMBNAIL, SPRITE_MAX_SIDE // math.ceil(math.sqrt(n)))
    return side if side >= min(MIN_THUMBNAIL, image_size) else 0


def sprite_layout(n: int, thumb: int) -> tuple[int, int]:
    """(columns, rows) of the sprite grid: ceil(sqrt(n)) columns, as the projector reads it."""
    columns = max(1, math.ceil(math.sqrt(n)))
    return columns, max(1, math.ceil(n / columns))


def write_sprite(path: Path, thumbnails: Iterable[np.ndarray], n: int, thumb: int) -> List[int]:
    """Pastes n thumbnails uint8 [t, t, 3] (given in blocks [b, t, t, 3]) row-major into one PNG.

    Returns the sprite's [width, height].
    """
    from PIL import Image

    columns, rows = sprite_layout(n, thumb)
    canvas = np.zeros((rows * thumb, columns * thumb, 3), np.uint8)
    position = 0
    for block in thumbnails:
        for image in block:
            row, column = divmod(position, columns)
            canvas[row * thumb:(row + 1) * thumb, column * thumb:(column + 1) * thumb] = image
            position += 1
    if position != n:
        raise ValueError(f"sprite: {position} thumbnails for {n} points")
    Image.fromarray(canvas).save(path, format="PNG")
    return [canvas.shape[1], canvas.shape[0]]


def _tsv_field(text: str) -> str:
    # A tab or line break inside a field would shift the columns; the projector has no quoting.
    return " ".join(str(text).replace("\t", " ").splitlines())


def write_metadata(path: Path, paths: Sequence[str], classes: Optional[Sequence[str]]) -> None:
    """metadata.tsv: with classes a header row "path<TAB>class" and two columns, else one column and no
    header (the projector reads a header only when there are two columns or more)."""
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as stream:
        if classes is None:
            for name in paths:
                stream.write(_tsv_field(name) + "\n")
        else:
            stream.write("path\tclass\n")
            for name, label in zip(paths, classes):
                stream.write(f"{_tsv_field(name)}\t{_tsv_field(label)}\n")


def write_checkpoint(folder: Path, embeddings: np.ndarray) -> str:
    """Saves the embeddings as the checkpoint the projector reads; returns the checkpoint prefix (relative).

    `Checkpoint.save` also writes the `checkpoint` state file (with relative paths), which is how the
    projector finds the latest checkpoint in its log folder, wherever the folder is moved.
    """
    import tensorflow as tf

    variable = tf.Variable(np.asarray(embeddings), trainable=False, name="embedding")
    saved = tf.train.Checkpoint(embedding=variable).save(str(Path(folder) / CHECKPOINT_PREFIX))
    return Path(saved).name


def config_text(n: int, dim: int, sprite: Optional[dict]) -> str:
    """projector_config.pbtxt, through tensorboard's own proto when it is installed, else the same text."""
    try:
        from google.protobuf import text_format
        from tensorboard.plugins.projector import ProjectorConfig
    except ImportError:
        return _config_text_by_hand(n, dim, sprite)
    config = ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = TENSOR_NAME
    embedding.metadata_path = METADATA
    embedding.tensor_shape.extend([int(n), int(dim)])
    if sprite is not None:
        embedding.sprite.image_path = sprite["image_path"]
        embedding.sprite.single_image_dim.extend(sprite["single_image_dim"])
    return text_format.MessageToString(config)


def _config_text_by_hand(n: int, dim: int, sprite: Optional[dict]) -> str:
    """The text `text_format.MessageToString` writes for the same ProjectorConfig (tested equal)."""
    lines = ["embeddings {", f'  tensor_name: "{TENSOR_NAME}"', f'  metadata_path: "{METADATA}"',
             f"  tensor_shape: {int(n)}", f"  tensor_shape: {int(dim)}"]
    if sprite is not None:
        width, height = sprite["single_image_dim"]
        lines += ["  sprite {", f'    image_path: "{sprite["image_path"]}"', f"    single_image_dim: {width}",
                  f"    single_image_dim: {height}", "  }"]
    return "\n".join(lines + ["}"]) + "\n"
