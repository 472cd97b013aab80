"""Self-supervised methods; importing this package registers every method by name.

A method builder is registered with `@register_method(name)` and has the signature
`builder(options, encoder, num_classes=0, make_encoder=None) -> SSLMethod`:
- `options`: the config's `method.options`, checked with `check_options` against the method's defaults;
- `encoder`: the configured encoder, images [N, S, S, 3] in [0, 1] -> features [N, D];
- `num_classes`: > 0 attaches the online linear probe;
- `make_encoder(**overrides)`: builds another encoder of the configured kind with options overridden
  (e.g. `width=0.5` for split-brain's two half-width networks); None outside the trainer.
The method's `encoder` attribute is what is evaluated and exported; a method may wrap the configured
encoder there (e.g. colour conversion inside the model).
"""

from __future__ import annotations

from typing import Callable, Optional

import keras

from sslzoo.methods import rotnet  # noqa: F401  (registers "rotnet")
from sslzoo.methods import jigsaw  # noqa: F401
from sslzoo.methods import relpatch  # noqa: F401
from sslzoo.methods import simclr  # noqa: F401
from sslzoo.methods import video_colorization  # noqa: F401
from sslzoo.methods import moco  # noqa: F401
from sslzoo.methods import context_encoder  # noqa: F401
from sslzoo.methods import cpc  # noqa: F401
from sslzoo.methods import colorization  # noqa: F401
from sslzoo.methods import splitbrain  # noqa: F401
from sslzoo.methods import supervised  # noqa: F401  (the benchmark's labelled baseline)
from sslzoo.methods.base import SSLMethod
from sslzoo.registry import METHODS


def build_method(
    name: str,
    options: dict,
    encoder: keras.Model,
    num_classes: int = 0,
    make_encoder: Optional[Callable[..., keras.Model]] = None,
) -> SSLMethod:
    """Builds a registered method around `encoder`; unknown names list the registered ones."""
    return METHODS.get(name)(dict(options), encoder, num_classes, make_encoder=make_encoder)


__all__ = ["SSLMethod", "build_method"]
