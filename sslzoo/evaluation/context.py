"""What an evaluator is handed at the end of a training run.

An evaluator is registered in `sslzoo.registry.EVALUATORS` as `evaluate(run: RunContext) -> Evaluation`.
It scores the trained encoder against the same encoder at its initial weights, measures the pretext
task's own metrics, draws the run's pictures, and says which labelled split the exported classifier and
the parity samples come from.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict

import keras
import tensorflow as tf

from sslzoo import __version__


@dataclass
class RunContext:
    """A finished (or resumed and already finished) training run.

    Args:
        config: the run's `sslzoo.config.Config`.
        run_dir: the run folder.
        encoder: the trained encoder (`method.encoder`).
        method: the trained method.
        data: the `sslzoo.data.kinds.TrainingData` it trained on.
        training: figures of the training itself (seconds, speed, epochs, steps, batch size).
        initial_encoder: builds the same encoder at its initial weights (the random-init baseline).
    """

    config: Any
    run_dir: Path
    encoder: keras.Model
    method: keras.Model
    data: Any
    training: Dict[str, Any]
    initial_encoder: Callable[[], keras.Model]


@dataclass
class Evaluation:
    """An evaluator's result: metrics for metrics.json, and the labelled split behind the run's linear head
    and parity samples (`probe_splits`)."""

    metrics: Dict[str, Any]
    probe_splits: Any
    features: Dict[str, Any] = field(default_factory=dict)


def machine() -> Dict[str, Any]:
    """What metrics.json records of the machine and the software a run was measured on."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "sslzoo": __version__,
    }
