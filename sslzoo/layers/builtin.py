"""Artifacts hold Keras' own layers: the training-speed layers swapped back, same weights."""

from __future__ import annotations

from typing import Optional, Sequence

import keras

from sslzoo.layers.batch_norm import FusedBatchNormalization
from sslzoo.layers.conv import SmallMapConv2D
from sslzoo.layers.walk import all_layers

# Each training-speed layer and the Keras layer it computes (same config, same weights).
BUILTIN = {FusedBatchNormalization: keras.layers.BatchNormalization, SmallMapConv2D: keras.layers.Conv2D}


def with_builtin_layers(model: keras.Model, only: Optional[Sequence[type]] = None) -> keras.Model:
    """`model` with every layer of `BUILTIN` (or of its classes in `only`) replaced by its Keras twin, same
    weights.

    Artifacts (exports, shipped encoders, saved run encoders) hold built-in layers only, so they load with
    plain Keras and no sslzoo import. Returns `model` itself if it has none.
    """
    swap = {kind: twin for kind, twin in BUILTIN.items() if only is None or kind in only}
    if not any(type(layer) in swap for layer in all_layers(model)):
        return model

    def builtin(layer):
        return swap.get(type(layer), layer.__class__).from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=builtin, recursive=True)
    clone.set_weights(model.get_weights())
    return clone
