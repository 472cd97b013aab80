"""What `sslzoo select` chooses among: arms (a method's zoo config), their searched options, candidates.

An arm is one image method's small-ConvNet zoo config (`moco_v1` and `moco_v2` are two arms, as in the zoo
benchmark). Its search space is the options its method declares with `option(..., search=...)` (its most
sensitive ones) plus the learning rate at half, once and twice the config's. In keras-tuner's terms the
arm is the `Choice` "method" and each searched value a hyperparameter conditional on it.

A candidate is an arm with one setting of its space: the first candidate of every arm is the config as
shipped, further ones (`per_arm` > 1) are distinct draws from its space.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from sslzoo.config import ConfigError, searched_options

LEARNING_RATE_FACTORS = (0.5, 1.0, 2.0)
SUFFIX = "_convnet_small_cifar10"
CONDITION = "method"  # the keras-tuner Choice every other hyperparameter is conditional on


@dataclass(frozen=True)
class Arm:
    """One method's zoo config as a choice of the search."""

    name: str  # the config's stem without _convnet_small_cifar10: "rotnet", "moco_v2"
    method: str
    config: Path
    space: Dict[str, Tuple[Any, ...]] = field(default_factory=dict)  # dotted config key -> values tried

    def hp_name(self, key: str) -> str:
        """The keras-tuner name of one of this arm's values (unique across arms)."""
        return f"{self.name}:{key}"


@dataclass(frozen=True)
class Candidate:
    """An arm with one setting of its space: what a first-rung trial trains."""

    arm: Arm
    index: int  # 0: the shipped config; k > 0: the k-th draw from the arm's space
    setting: Dict[str, Any] = field(default_factory=dict)  # dotted config key -> value, over the config

    @property
    def name(self) -> str:
        return self.arm.name if self.index == 0 else f"{self.arm.name}#{self.index}"

    def overrides(self) -> List[str]:
        return [f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
                for key, value in self.setting.items()]

    def values(self) -> Dict[str, Any]:
        """The candidate as keras-tuner hyperparameter values."""
        values: Dict[str, Any] = {CONDITION: self.arm.name}
        shipped = config_values(self.arm)
        for key in self.arm.space:
            values[self.arm.hp_name(key)] = self.setting.get(key, shipped[key])
        return values


def discover_arms(only: Optional[Sequence[str]] = None) -> List[Arm]:
    """The image methods' small-ConvNet zoo configs (no supervised baseline), with their search spaces.

    Args:
        only: config short names ("moco_v2"), stems or method names; None for all.
    """
    import sslzoo.methods  # noqa: F401  (registers the methods)
    from sslzoo.benchmark.entries import discover_entries
    from sslzoo.registry import METHODS

    entries = [e for e in discover_entries(METHODS.names()) if not e.is_supervised]
    arms = [_arm(e.stem[: -len(SUFFIX)], e.method, e.config, METHODS.get(e.method).Options) for e in entries]
    if only:
        wanted = list(dict.fromkeys(only))
        known = {a.name for a in arms} | {a.method for a in arms} | {str(a.config.stem) for a in arms}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ConfigError(f"--methods {', '.join(unknown)}: not an image method's zoo config; available: "
                              f"{', '.join(a.name for a in arms)}")
        arms = [a for a in arms if a.name in wanted or a.method in wanted or a.config.stem in wanted]
    return arms


def _arm(name: str, method: str, path: Path, options_class) -> Arm:
    values = yaml.safe_load(path.read_text()) or {}
    space: Dict[str, Tuple[Any, ...]] = {f"method.options.{option}": tuple(choices)
                                         for option, choices in searched_options(options_class).items()}
    rate = float((values.get("optimizer") or {}).get("learning_rate", 0.1))
    space["optimizer.learning_rate"] = tuple(float(f"{rate * factor:.6g}") for factor in LEARNING_RATE_FACTORS)
    return Arm(name=name, method=method, config=path, space=space)


def config_values(arm: Arm) -> Dict[str, Any]:
    """The shipped config's value of every key of the arm's space (an unset option: its dataclass default)."""
    from sslzoo import config as config_lib

    config = config_lib.load(arm.config).to_dict()
    values = {}
    for key in arm.space:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None and key.startswith("method.options."):
            node = _option_default(arm.method, key.rsplit(".", 1)[1])
        values[key] = node
    return values


def _option_default(method: str, option: str) -> Any:
    import dataclasses

    from sslzoo.registry import METHODS

    for item in dataclasses.fields(METHODS.get(method).Options):
        if item.name == option:
            return item.default
    raise ConfigError(f"{method} has no option {option}")


def candidates(arms: Sequence[Arm], per_arm: int, seed: int) -> List[Candidate]:
    """`per_arm` candidates per arm, arm by arm: the shipped config first, then distinct draws (seeded)."""
    if per_arm < 1:
        raise ConfigError(f"--per-method {per_arm}: must be at least 1")
    chosen: List[Candidate] = []
    for number, arm in enumerate(arms):
        shipped = config_values(arm)
        keys = list(arm.space)
        settings = [dict(zip(keys, combo)) for combo in itertools.product(*(arm.space[k] for k in keys))]
        others = [s for s in settings if s != shipped]
        rng = np.random.default_rng([seed, number])
        picks = [others[i] for i in rng.permutation(len(others))[: per_arm - 1]]
        chosen.append(Candidate(arm, 0, {}))
        for index, setting in enumerate(picks, start=1):
            chosen.append(Candidate(arm, index, {k: v for k, v in setting.items() if v != shipped[k]}))
    return chosen


def declare(hp, arms: Sequence[Arm]) -> None:
    """The search space in keras-tuner: the Choice "method" and each arm's values conditional on it."""
    hp.Choice(CONDITION, [arm.name for arm in arms])
    for arm in arms:
        shipped = config_values(arm)
        with hp.conditional_scope(CONDITION, [arm.name]):
            for key, choices in arm.space.items():
                values = list(dict.fromkeys([shipped[key], *choices]))
                hp.Choice(arm.hp_name(key), values, default=shipped[key])
