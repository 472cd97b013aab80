"""Self-supervised methods; importing this package registers every method by name."""

from __future__ import annotations

import keras

from sslzoo.methods import rotnet  # noqa: F401  (registers "rotnet")
from sslzoo.methods import jigsaw  # noqa: F401
from sslzoo.methods import relpatch  # noqa: F401
from sslzoo.methods.base import SSLMethod
from sslzoo.registry import METHODS


def build_method(name: str, options: dict, encoder: keras.Model, num_classes: int = 0) -> SSLMethod:
    """Builds a registered method around `encoder`; unknown names list the registered ones."""
    return METHODS.get(name)(dict(options), encoder, num_classes)


__all__ = ["SSLMethod", "build_method"]
