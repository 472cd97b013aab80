"""The contract every method shares: one loss computation behind `train_step` and `test_step`.

A method subclass implements `compute_loss_and_logs(data, training) -> (loss, logs)` and `augment`;
this base class owns the gradient step, loss scaling for mixed precision and `tf.distribute`, metric
bookkeeping, and the optional online linear probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from sslzoo.config import ConfigError


def check_options(method: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """Merges `method.options` from a config over a method's defaults; unknown keys fail by name."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown method.options key(s) {', '.join(unknown)} for method '{method}'; "
            f"allowed: {', '.join(sorted(defaults))}"
        )
    merged = dict(defaults)
    for key, value in options.items():
        default = defaults[key]
        if default is not None and not _same_kind(value, default):
            raise ConfigError(
                f"method.options.{key} for '{method}': expected {type(default).__name__}, got {value!r}"
            )
        merged[key] = value
    return merged


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _in_multi_worker() -> bool:
    return isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)


@keras.saving.register_keras_serializable(package="sslzoo")
class SSLMethod(keras.Model):
    """Base class of every self-supervised method.

    Args:
        encoder: functional Keras model, images float32 [N, S, S, 3] in [0, 1] -> features [N, D].
        num_classes: > 0 attaches an online linear probe on detached features (needs `labels` in the
            data); 0 disables it.
    Subclasses set `log_names` (the per-batch values `compute_loss_and_logs` reports besides "loss").
    """

    log_names: Sequence[str] = ()

    def __init__(self, encoder: keras.Model, num_classes: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.num_classes = num_classes
        self.feature_dim = int(encoder.output_shape[-1])
        self.probe = None
        if num_classes:
            self.probe = layers.Dense(num_classes, name="online_probe")
            # Built here, not on the first step: under a strategy, lazily created variables make the
            # optimizer fail ("Unknown variable ... can only be called for the variables it was built with").
            self.probe.build((None, self.feature_dim))
        names = ["loss", *self.log_names] + (["probe_loss", "probe_top1"] if num_classes else [])
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    # --- what a subclass provides ---------------------------------------------------------------
    def compute_loss_and_logs(self, data: Mapping[str, tf.Tensor], training: bool) -> Tuple[tf.Tensor, dict]:
        """Returns (loss to minimise, {name: batch value}) for one batch from `augment`."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss_and_logs")

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Batched input transform run inside tf.data: float32 images [B,S,S,3] in [0,1] -> model data."""
        return {"images": images, "labels": labels}

    def prepare(self, train_images: np.ndarray, run_dir: Optional[Path]) -> None:
        """Fits what the method needs from the training data before training (e.g. a colour prior or
        colour clusters), from uint8 images [N, S, S, 3]. Must be deterministic: a resumed run calls it
        again before restoring the checkpoint. Values belong in variables (so checkpoints carry them);
        a copy for people may be written to `run_dir`. Default: nothing to fit."""

    def save_pictures(self, data: Mapping[str, tf.Tensor], run_dir: Path) -> List[str]:
        """Draws the pretext task on one validation batch from `augment` (e.g. puzzles with the true and
        predicted answers) into PNGs in `run_dir`; returns their file names. Default: none."""
        return []

    # --- shared machinery -----------------------------------------------------------------------
    def call(self, images, training=False):
        return self.encoder(images, training=training)

    def online_probe(self, features: tf.Tensor, labels: tf.Tensor, logs: dict) -> tf.Tensor:
        """Linear probe on detached features: its loss trains only the probe, never the encoder."""
        if self.probe is None:
            return tf.constant(0.0)
        logits = tf.cast(self.probe(tf.stop_gradient(features)), tf.float32)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
        logs["probe_loss"] = loss
        logs["probe_top1"] = top1(logits, labels)
        return loss

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, logs = self.compute_loss_and_logs(data, training=True)
            # Each replica's loss is its local mean; gradients are summed across replicas, so scale by
            # 1/replicas. scale_loss is the mixed_float16 loss scale (identity otherwise).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.update_metrics(logs)

    def test_step(self, data):
        _, logs = self.compute_loss_and_logs(data, training=False)
        return self.update_metrics(logs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer MEAN-reduces the first distributed batch only to build an unbuilt model; under
        # MultiWorkerMirroredStrategy that reduction fails on dict batches ("Attempt to convert a value
        # ({'images': PerReplica...}) to a Tensor"). Methods are built in __init__ and the trainer builds
        # the optimizer, so there is nothing to build: skip it.
        if all(layer.built for layer in self._flatten_layers()) and getattr(self.optimizer, "built", False):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def update_metrics(self, logs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        for name, value in logs.items():
            self.trackers[name].update_state(value)
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        if _in_multi_worker():
            # Scalar logs fail in Keras' cross-worker reduction ("Invalid reduction dimension 0").
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    @property
    def metrics(self):
        return list(self.trackers.values())

    def get_config(self):
        return {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_classes": self.num_classes,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.nested_models():
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    @classmethod
    def nested_models(cls) -> Sequence[str]:
        """Config keys that hold serialized Keras models."""
        return ("encoder",)


def top1(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Fraction of rows whose arg-max equals the label."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32))
