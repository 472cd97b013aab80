"""Name -> builder registries for methods and encoders.

A registry is a plain dict behind two functions, so a typo in a config fails with the list of names that
do exist, and registering the same name twice fails at import time instead of silently shadowing.
"""

from __future__ import annotations

from typing import Callable, Dict


class Registry:
    """Maps names to builder callables.

    Args:
        kind: what the registry holds ("method", "encoder"); used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: Dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def decorator(builder: Callable) -> Callable:
            if name in self._builders:
                raise ValueError(
                    f"{self.kind} '{name}' is already registered (by {self._builders[name].__module__}); "
                    f"pick another name"
                )
            self._builders[name] = builder
            return builder

        return decorator

    def get(self, name: str) -> Callable:
        if name not in self._builders:
            raise KeyError(
                f"unknown {self.kind} '{name}'; available: {', '.join(sorted(self._builders)) or '(none)'}"
            )
        return self._builders[name]

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders


METHODS = Registry("method")
ENCODERS = Registry("encoder")
# What a config's data.source trains on (sslzoo.data.kinds), and what scores a finished run (the
# trainer's evaluators: kNN + linear probe for images, tracking J for clips).
DATA_KINDS = Registry("data kind")
EVALUATORS = Registry("evaluator")


def register_method(name: str):
    """Class decorator: `@register_method("rotnet")` on an `SSLMethod` subclass; records the name on the
    class (`registered_name`), which is also its default Keras model name."""

    def decorator(cls):
        cls.registered_name = name
        return METHODS.register(name)(cls)

    return decorator


def register_encoder(name: str):
    """Decorator: `@register_encoder("resnet18")` on a `build(image_size, **options) -> keras.Model`."""
    return ENCODERS.register(name)
