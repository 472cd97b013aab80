"""Self-supervised methods; importing this package registers every method by name.

A method is an `SSLMethod` subclass registered with `@register_method(name)`; `build_method` calls its
`create(options, encoder, num_classes, make_encoder)`:
- `options`: the config's `method.options`, parsed into the method's `Options` dataclass;
- `encoder`: the configured encoder, images [N, S, S, 3] in [0, 1] -> features [N, D];
- `num_classes`: > 0 attaches the online linear probe;
- `make_encoder(**overrides)`: builds another encoder of the configured kind with options overridden
  (e.g. `width=0.5` for split-brain's two half-width networks); None outside the trainer.
The method's `encoder` attribute is what is evaluated and exported; a method may wrap the configured
encoder there (e.g. colour conversion inside the model).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Optional

import keras

from sslzoo.methods.base import SSLMethod
from sslzoo.registry import METHODS

# Every module in this folder is a method (or the base): importing them registers each by name, so
# adding a method is adding its file.
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_method(
    name: str,
    options: dict,
    encoder: keras.Model,
    num_classes: int = 0,
    make_encoder: Optional[Callable[..., keras.Model]] = None,
) -> SSLMethod:
    """Builds a registered method around `encoder`; unknown names list the registered ones."""
    return METHODS.get(name).create(dict(options), encoder, num_classes, make_encoder=make_encoder)


def method_options(name: str):
    """The options dataclass of a registered method (its fields, types, defaults and docs)."""
    return METHODS.get(name).Options


__all__ = ["SSLMethod", "build_method", "method_options"]
