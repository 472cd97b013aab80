"""Building a run's models from its config: the method around the configured encoder, and the encoder at
its initial weights (the random-init baseline every evaluation compares against)."""

from __future__ import annotations

from pathlib import Path

import keras

from sslzoo.backbones import build_encoder
from sslzoo.config import Config
from sslzoo.layers.builtin import with_builtin_layers
from sslzoo.layers.conv import SmallMapConv2D
from sslzoo.methods import build_method

INIT_WEIGHTS = "init.weights.h5"


def build_models(config: Config, num_classes: int):
    """The evaluated encoder (with its untrained weights) and the method around it.

    The evaluated encoder is `method.encoder`: usually the configured encoder itself, but a method may
    wrap it (e.g. RGB -> Lab inside the model) or build it from several encoders via `make_encoder`.
    """

    def make_encoder(**overrides) -> keras.Model:
        options = {**config.encoder.options, **overrides}
        return build_encoder(config.encoder.name, config.data.image_size, **options)

    method = build_method(
        config.method.name,
        config.method.options,
        make_encoder(),
        num_classes=num_classes if config.method.online_probe else 0,
        make_encoder=make_encoder,
    )
    return method.encoder, method


def initial_encoder(config: Config, run_dir: Path, num_classes: int) -> keras.Model:
    """The run's encoder at the weights it had before training (the random-init baseline), with Keras' own
    layers, as the trainer saves them (`with_builtin_layers`)."""
    encoder, _ = build_models(config, num_classes)
    builtin = with_builtin_layers(encoder)
    try:
        builtin.load_weights(run_dir / INIT_WEIGHTS)
    except ValueError:
        if builtin is encoder:
            raise
        # A run folder from before the trainer saved them so holds the fused batch norm's weights beside
        # Keras' own convs.
        fused = with_builtin_layers(encoder, only=(SmallMapConv2D,))
        fused.load_weights(run_dir / INIT_WEIGHTS)
        return fused
    return builtin
