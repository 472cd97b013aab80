"""The per-location embedding a tracker compares, from any encoder with a "feature_map" layer, for frames
of any size.

    embedder = feature_map_model(encoder)                 # images [N, h, w, 3] -> [N, h/s, w/s, E]
    features = embedding_function(embedder, cosine=True)  # uint8 frames -> float32 features, batched
"""

from __future__ import annotations

import numpy as np


def any_size(model):
    """The same Keras model (same weights) accepting images of any height and width.

    Fully convolutional feature maps do not depend on the input size, but a functional model checks its
    input against the size it was built for; rebuilding it from its config with free spatial dimensions in
    every image input (nested models included) lifts that check. Raises ValueError for a model whose layers
    need the original size (e.g. a ViT's position embeddings).
    """
    import keras

    def relax(config):
        if isinstance(config, dict):
            if config.get("class_name") == "InputLayer":
                shape = config["config"].get("batch_shape")
                if shape and len(shape) == 4:
                    config["config"]["batch_shape"] = [shape[0], None, None, shape[3]]
            for value in config.values():
                relax(value)
        elif isinstance(config, list):
            for value in config:
                relax(value)

    serialized = keras.saving.serialize_keras_object(model)
    relax(serialized)
    try:
        flexible = keras.saving.deserialize_keras_object(serialized)
        flexible.set_weights(model.get_weights())
    except Exception as error:  # noqa: BLE001 - any rebuild failure means the model needs its own size
        raise ValueError(f"model '{model.name}' cannot take frames of another size than "
                         f"{tuple(model.input_shape[1:3])} ({error})") from error
    return flexible


def embedding_function(embedder, cosine: bool, batch_size: int = 16):
    """frames uint8 [T, h, w, 3] -> float32 [T, fh, fw, E], in batches (whole videos at 480p would not fit
    in one)."""
    import tensorflow as tf

    def features(frames: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(frames), batch_size):
            images = tf.constant(frames[start:start + batch_size], tf.float32) / 255.0
            embeddings = tf.cast(embedder(images, training=False), tf.float32)
            if cosine:
                embeddings = tf.math.l2_normalize(embeddings, axis=-1)
            parts.append(embeddings.numpy())
        return np.concatenate(parts)

    return features


def feature_map_model(encoder):
    """The encoder's per-location embedding (its "feature_map" layer) as a model of any input size."""
    import keras

    from sslzoo.backbones import FEATURE_MAP

    try:
        layer = encoder.get_layer(FEATURE_MAP)
    except ValueError as error:
        raise ValueError(f"encoder '{encoder.name}' has no '{FEATURE_MAP}' layer: tracking needs a per-location "
                         "embedding, such as video_colorization's") from error
    return any_size(keras.Model(encoder.input, layer.output))
