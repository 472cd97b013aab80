"""The encoder an embedding is made with: resolved and verified as `sslzoo.load` does, recorded, reloaded.

    encoder = load_encoder("simclr_convnet_small_cifar10")    # or an export folder, or a .keras file
    encoder.record        # what embed.json keeps: name, resolved path, sha256, input size, preprocessing
    encoder.embed(uint8_images)                               # float32 [N, D]
    again = load_recorded(encoder.record)                     # the same model again, or an error

The sha256 recorded is the one `sslzoo.load(..., sha256=)` pins: the export's `model_card.json`, which
lists the sha256 of every file of the export (so it pins them all); for a loose `.keras` file, the file's
own hash. `load_recorded` reloads with that pin, so a query image of `neighbors` is embedded by exactly
the model that made the embeddings, or not at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from sslzoo.errors import ArtifactIntegrityError, ModelNotFoundError
from sslzoo.export.card import CARD_NAME, read_card
from sslzoo.files import sha256_file
from sslzoo.zoo import loader

# What every image goes through before the encoder: the export's own `embed_images` signature
# (`sslzoo.export.saved_model.ServingModule.decode`) and the training data path (`sslzoo.data.decode`).
PREPROCESSING = {
    "decode": "by content (JPEG, PNG, BMP, GIF first frame, WebP); grayscale, alpha, palette and 16-bit "
              "images converted to RGB uint8 (sslzoo.data.decode.decode_image)",
    "resize": "shorter side to image_size (bilinear, antialiased), centre crop image_size x image_size; "
              "no-op at that size",
    "scale": "uint8 / 255 -> float32 [0, 1] RGB; the encoder normalises inside itself",
    "same_as": "the export's embed_images signature and the training pipeline",
}


@dataclass
class Encoder:
    """A loaded encoder and what identifies it.

    Attributes:
        model: the Keras encoder (float32 images [N, S, S, 3] in [0, 1] -> features [N, D]).
        image_size: S.
        dim: D.
        record: JSON-ready description (embed.json's "model" entry).
    """

    model: object
    image_size: int
    dim: int
    record: dict
    _function: object = None

    def function(self):
        """A traced inference function, uint8 [N, S, S, 3] -> float32 [N, D] (one trace for any N)."""
        if self._function is None:
            import tensorflow as tf

            model = self.model
            spec = tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.uint8)

            @tf.function(input_signature=[spec], autograph=False)
            def features(images):
                # The serving path's conversion (saved_model.uint8_to_float01): x / 255 in float32.
                scaled = tf.cast(images, tf.float32) / 255.0
                return tf.cast(model(scaled, training=False), tf.float32)

            self._function = features
        return self._function

    def embed(self, images_uint8) -> np.ndarray:
        return self.function()(images_uint8).numpy()


def load_encoder(name_or_path: str, sha256: Optional[str] = None) -> Encoder:
    """Resolves `name_or_path` like `sslzoo.load` (shipped name, cache, export folder, .keras file),
    verifies every file's sha256 against the card (and the card against `sha256` when given), loads it.

    Raises:
        ModelNotFoundError, ArtifactIntegrityError, UnsafeModelError: as `sslzoo.load`.
    """
    location = loader.resolve(name_or_path)
    record = {"argument": str(name_or_path), "path": str(location.resolve())}
    if location.is_dir():
        card_hash = sha256_file(location / CARD_NAME)
        model = loader.load(location, sha256=sha256 or card_hash)
        card = read_card(location)
        record.update({"name": card.get("name") or location.name, "sha256": card_hash,
                       "sha256_of": CARD_NAME, "method": card.get("method"), "encoder": card.get("encoder"),
                       "dataset": card.get("dataset")})
    else:
        file_hash = sha256_file(location)
        if sha256 is not None and file_hash != sha256:
            raise ArtifactIntegrityError(f"'{location}' has sha256 {file_hash}, but the embedding was made with "
                                         f"{sha256}: it is not the same model")
        model = loader.load(location)
        record.update({"name": location.stem, "sha256": file_hash, "sha256_of": location.name})
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ModelNotFoundError(f"'{location}' is not an image encoder of float32 [N, S, S, 3] in [0, 1]: its "
                                 f"input shape is {shape}")
    dim = int(model.output_shape[-1])
    image_size = int(shape[1])
    record.update({"image_size": image_size, "dim": dim})
    return Encoder(model, image_size, dim, record)


def load_recorded(record: dict) -> Encoder:
    """The encoder an embed.json names, pinned to its recorded sha256: the recorded path if it still
    exists, else the name (resolved as `sslzoo.load` does).

    Raises:
        ArtifactIntegrityError: what is found there is not the recorded model.
        ModelNotFoundError: neither the path nor the name can be found.
    """
    path = Path(record.get("path", ""))
    target = str(path) if record.get("path") and path.exists() else record.get("name") or record.get("argument")
    try:
        return load_encoder(target, sha256=record["sha256"])
    except ArtifactIntegrityError as error:
        raise ArtifactIntegrityError(
            f"the embeddings were made with {record.get('name')} (sha256 {record['sha256']} of "
            f"{record.get('sha256_of')}), and '{target}' is not that model ({error}); embed the query with "
            "the original model, or embed the folder again with this one") from error


def embed_file(encoder: Encoder, path: str, max_pixels: Optional[int] = None) -> np.ndarray:
    """float32 [D]: one image file through the same header check, preprocessing and encoder as `embed`.

    Raises:
        BadImageError (a DataError): the file is not a readable image, or declares more than max_pixels.
    """
    import tensorflow as tf

    from sslzoo.data.decode import read_and_decode
    from sslzoo.data.headers import BadImageError, check_pixels

    check_pixels(path, max_pixels or 0)
    try:
        image = read_and_decode(tf.constant(os.fsencode(path)), encoder.image_size)
    except tf.errors.OpError as error:
        raise BadImageError(path, "garbled", f"could not be decoded ({' '.join(error.message.split())})") from None
    return encoder.embed(image[None])[0]
