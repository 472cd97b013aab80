"""Encoders: `images [N, S, S, 3]` float32 in [0, 1] -> `features [N, D]`.

Every encoder is a functional keras.Model of built-in layers only: input "images", a Normalization layer
with the dataset's per-channel stats, a last spatial activation named "feature_map" and a global average
pool named "features". Spatial features share the encoder's weights:
`keras.Model(encoder.input, encoder.get_layer("feature_map").output)`. The Vision Transformers
(`vit_tiny`, `vit_small`) output their class token and have no "feature_map" (see sslzoo/backbones/vit.py).
"""

from __future__ import annotations

import inspect
import typing
from typing import Optional, Tuple

import keras
import numpy as np

# Imported for their `@register_encoder` side effect.
from sslzoo.backbones import convnet, nin, resnet, vit  # noqa: F401
from sslzoo.backbones.common import BN_MOMENTUM, CIFAR_MEAN, CIFAR_STD, FEATURE_MAP, FEATURES
from sslzoo.backbones.nin import nin_block_count, nin_blocks
from sslzoo.config import ConfigError, coerce, type_name
from sslzoo.registry import ENCODERS

__all__ = [
    "build_encoder",
    "encoder_options",
    "validate_encoder_options",
    "at_input_size",
    "input_normalization",
    "IDENTITY_NORMALIZATION",
    "feature_map_model",
    "nin_blocks",
    "nin_block_count",
    "BN_MOMENTUM",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "FEATURE_MAP",
    "FEATURES",
]


def encoder_options(name: str) -> dict:
    """The options an encoder accepts besides `image_size`, with their defaults: the builder's signature
    is the one declaration of an encoder's options (types from its annotations)."""
    parameters = inspect.signature(ENCODERS.get(name)).parameters
    return {key: p.default for key, p in parameters.items() if key != "image_size"}


def validate_encoder_options(name: str, options: dict) -> dict:
    """`encoder.options` checked by the config's type machinery against the builder's annotated signature;
    unknown keys or mistyped values raise `ConfigError` naming the key, before any work."""
    builder = ENCODERS.get(name)
    allowed = encoder_options(name)
    hints = typing.get_type_hints(builder)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        described = ", ".join(f"{key}: {type_name(hints.get(key, typing.Any))} = {default!r}"
                              for key, default in allowed.items())
        raise ConfigError(f"encoder.options {', '.join(unknown)} not accepted by '{name}'; allowed: {described}")
    return {key: coerce(value, hints.get(key, typing.Any), f"encoder.options.{key}")
            for key, value in options.items()}


def build_encoder(name: str, image_size: int = 32, **options) -> keras.Model:
    """Build a registered encoder.

    Args:
        name: registered encoder name ("convnet_small", "nin", "resnet18", "resnet50", "vit_tiny", ...).
        image_size: S; the encoder takes float32 RGB `[N, S, S, 3]` in [0, 1].
        **options: the encoder's options (see `encoder_options(name)`).

    Returns:
        keras.Model `images [N, S, S, 3] -> features [N, D]`, with a "feature_map" layer (the ViTs:
        a "tokens" layer instead).

    Raises:
        KeyError: unknown name (the message lists the registered ones).
        TypeError: unknown option (the message lists the allowed ones).
    """
    builder = ENCODERS.get(name)
    allowed = encoder_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"encoder '{name}' got unknown option(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return builder(image_size=image_size, **options)


def feature_map_model(encoder: keras.Model) -> keras.Model:
    """`images -> feature_map [N, H, W, C]`, sharing the encoder's layers and weights."""
    feature_map = encoder.get_layer(FEATURE_MAP).output
    return keras.Model(encoder.input, feature_map, name=f"{encoder.name}_feature_map")


def at_input_size(encoder: keras.Model, size: int, name: str | None = None) -> keras.Model:
    """The same encoder (same layers, same weights) rebuilt on `[N, size, size, 3]` inputs.

    Patch-based pretext tasks train the encoder on patches smaller than the images it is evaluated and
    exported on; the convolutional encoders are fully convolutional up to global pooling, so one set of
    weights serves both sizes. A ViT is not: its position table is fixed by the input size (ValueError).
    """
    if size != encoder.input_shape[1] and any(layer.name == vit.TOKENS for layer in encoder.layers):
        raise ValueError(f"encoder '{encoder.name}' is a Vision Transformer: its position table fixes its input "
                         f"size ({encoder.input_shape[1]} px), so it cannot run on {size} px patches; use a "
                         "convolutional encoder (convnet_small, resnet18, ...) for this method")
    patches = keras.Input((size, size, 3), name=f"{name or encoder.name}_input")
    return keras.models.clone_model(encoder, input_tensors=patches, clone_function=lambda layer: layer)


IDENTITY_NORMALIZATION = (np.zeros(3, np.float32), np.ones(3, np.float32))


def input_normalization(encoder: keras.Model, default=None) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(mean, std), float32 [3] each, of the encoder's input "normalization" layer; `default` without one
    (e.g. `IDENTITY_NORMALIZATION`, or None for a caller that must then ask the user for statistics).

    Methods that feed the encoder something other than RGB images (normalised patches, L, ab) pre-shift
    their input by these so that the encoder's first conv sees exactly the standardised values.
    """
    try:
        config = encoder.get_layer("normalization").get_config()
    except ValueError:
        return default
    mean = np.broadcast_to(np.asarray(config["mean"], np.float32).reshape(-1), (3,))
    std = np.sqrt(np.broadcast_to(np.asarray(config["variance"], np.float32).reshape(-1), (3,)))
    return mean.astype(np.float32), std.astype(np.float32)
