"""The contract every method shares, and the plumbing so that a method file holds only its idea.

A method is a subclass of `SSLMethod` that declares:
- `Options`: a frozen dataclass of its hyperparameters (types, defaults, bounds, one-line docs; see
  `sslzoo.config.option`). `method.options` in a config is parsed into it before any work starts.
- `parts`: the names of the sub-models it trains beside the encoder (heads, decoders, projectors);
  `build_parts(options, encoder, make_encoder)` makes them from the options.
- `augment(images, labels, seed)`: the batched input transform run inside tf.data.
- `compute_loss_and_logs(data, training) -> (loss, logs)`: the paper's objective on one batch.
and, when it needs them, `setup()` (state such as queues, built from the options and parts), `prepare`
(statistics fitted on the training data), `save_pictures` and its own `train_step`.

The base class owns the rest: parsing options, the constructor, `get_config`/`from_config` (options plus
the serialized encoder and parts), the online linear probe, the gradient step with loss scaling for mixed
precision and `tf.distribute`, and metric bookkeeping.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from sslzoo.config import ConfigError, options_to_dict, parse_options

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A method without hyperparameters of its own."""


def _in_multi_worker() -> bool:
    return isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)


@keras.saving.register_keras_serializable(package="sslzoo")
class SSLMethod(keras.Model):
    """Base class of every self-supervised method.

    Args:
        encoder: functional Keras model, images float32 [N, S, S, 3] in [0, 1] -> features [N, D]; what is
            evaluated and exported.
        options: the method's `Options` instance, or a mapping parsed into it.
        num_classes: > 0 attaches an online linear probe on detached features (needs `labels` in the
            data), unless `probe_unavailable(options)` says why it cannot; 0 disables it.
        **parts: one built Keras model per name in `parts` (from `build_parts`, or deserialized).
    """

    Options: ClassVar[type] = NoOptions
    parts: ClassVar[Tuple[str, ...]] = ()
    log_names: Sequence[str] = ()
    # The run's optimizer steps (steps_per_epoch * epochs) and the steps of one epoch, told by the trainer
    # through `set_run_length` before training; None when the method is trained outside the trainer
    # (tests, bench).
    total_steps: Optional[int] = None
    steps_per_epoch: Optional[int] = None

    def __init__(self, encoder: keras.Model, options: Any = None, num_classes: int = 0,
                 name: Optional[str] = None, **parts):
        options = parse_options(self.Options, options or {}, "method.options")
        super().__init__(name=name or self.default_name(options))
        self.options = options
        self.encoder = encoder
        unknown = sorted(set(parts) - set(self.parts))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown part(s) {unknown}; its parts: {list(self.parts)}")
        self.num_classes = int(num_classes)
        unavailable = self.num_classes and self.probe_unavailable(options)
        if unavailable:
            log.warning("%s: no online probe: %s", self.name, unavailable)
            self.num_classes = 0
        self.feature_dim = int(encoder.output_shape[-1])
        self.probe = None
        if self.num_classes:
            self.probe = layers.Dense(self.num_classes, name="online_probe")
            # Built here, not on the first step: under a strategy, lazily created variables make the
            # optimizer fail ("Unknown variable ... can only be called for the variables it was built with").
            self.probe.build((None, self.feature_dim))
        # After the probe: the order of trainable_variables indexes the optimizer's slots in checkpoints,
        # so runs saved before this base class existed (encoder, probe, then parts) still resume.
        for key in self.parts:
            setattr(self, key, parts.get(key))
        self.setup()
        names = ["loss", *self.log_names] + (["probe_loss", "probe_top1"] if self.num_classes else [])
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.built = True  # the encoder and every part are built functional models

    # --- what a method provides ---------------------------------------------------------------------
    @classmethod
    def resolve_options(cls, options, encoder: keras.Model):
        """Fills option values that depend on the encoder (e.g. a fill colour from its input mean) and
        checks options against it; returns the options the method runs with. Default: as given."""
        return options

    @classmethod
    def build_parts(cls, options, encoder: keras.Model, make_encoder=None) -> Dict[str, keras.Model]:
        """The sub-models named in `parts`, built from the options. May also return "encoder" to replace
        the evaluated encoder (e.g. one that converts RGB to Lab inside the model). Default: none."""
        return {}

    @classmethod
    def probe_unavailable(cls, options) -> Optional[str]:
        """Why these options leave the online probe nothing to read (with how to get it), or None. The
        constructor logs the reason and runs without the probe. Default: None."""
        return None

    def setup(self) -> None:
        """Creates state beyond the parts (queues, momentum copies, views of the encoder) from
        `self.options` and the parts; may set `self.log_names`. Default: nothing."""

    def set_run_length(self, total_steps: int, steps_per_epoch: Optional[int] = None) -> None:
        """Told by the trainer before `fit`: the run's total optimizer steps, the K of schedules a method
        keeps itself (BYOL's momentum), as the optimizer's learning-rate schedule gets it, and the steps
        of one epoch, for options a paper counts in epochs (DINO's last-layer freeze). Called again on
        every resume, so it need not be saved. `total_steps` may be an integer `tf.Variable` (a
        time-budgeted run re-estimates its length as it trains): schedules read it at every step. Default:
        kept in `self.total_steps` and `self.steps_per_epoch`."""
        self.total_steps = total_steps if isinstance(total_steps, tf.Variable) else int(total_steps)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)

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

    @classmethod
    def default_name(cls, options) -> str:
        """The Keras model name (a registered method uses its registry name)."""
        return getattr(cls, "registered_name", cls.__name__.lower())

    # --- construction from a config ---------------------------------------------------------------
    @classmethod
    def create(cls, options: Mapping[str, Any], encoder: keras.Model, num_classes: int = 0,
               make_encoder=None) -> "SSLMethod":
        """Parses `method.options`, resolves them against the encoder, builds the parts, constructs."""
        options = parse_options(cls.Options, options, "method.options")
        options = cls.resolve_options(options, encoder)
        parts = dict(cls.build_parts(options, encoder, make_encoder))
        encoder = parts.pop("encoder", encoder)
        return cls(encoder, options, num_classes=num_classes, **parts)

    # --- shared machinery -----------------------------------------------------------------------------
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

    def add_probe_loss(self, loss: tf.Tensor, features: tf.Tensor, data: Mapping[str, tf.Tensor],
                       logs: dict) -> tf.Tensor:
        """`loss` plus the online probe's loss on `features` when the probe is on and labels came."""
        if self.probe is None or "labels" not in data:
            return loss
        return loss + self.online_probe(features, data["labels"], logs)

    def probe_images(self, images: tf.Tensor, data: Mapping[str, tf.Tensor], loss: tf.Tensor,
                     logs: dict) -> tf.Tensor:
        """Like `add_probe_loss`, on the encoder's features of whole `images`, for methods whose pretext
        branch feeds the encoder something else (tiles, patches).

        The encoder runs in inference mode, also in training: this pass is not the pretext task's, and in
        training mode its batch norm would fold whole images into the moving statistics the tiles or
        patches build, so the trained (and exported) encoder would depend on whether the probe is on.
        """
        if self.probe is None or "labels" not in data:
            return loss
        return self.add_probe_loss(loss, self.encoder(images, training=False), data, logs)

    def gradients(self, tape: tf.GradientTape, loss: tf.Tensor, variables: Sequence, optimizer) -> List:
        """Ends `tape` and returns the gradient of `loss` (the replica-local mean, recorded on `tape`).

        Each replica's loss is its local mean and gradients are summed across replicas, so the loss is
        scaled by 1/replicas; `scale_loss` is the mixed_float16 loss scale (identity otherwise), so the
        gradients are scaled by it too (the optimizer unscales them in `apply`).
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tape:
            scaled = optimizer.scale_loss(loss / replicas)
        return tape.gradient(scaled, variables)

    def apply_gradients(self, tape: tf.GradientTape, loss: tf.Tensor, variables: Sequence,
                        optimizer=None) -> None:
        """Ends `tape` and applies the gradient of `loss` (`gradients`) with `optimizer` (default: the
        method's)."""
        optimizer = optimizer or self.optimizer
        optimizer.apply(self.gradients(tape, loss, variables, optimizer), variables)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, logs = self.compute_loss_and_logs(data, training=True)
        self.apply_gradients(tape, loss, self.trainable_variables)
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

    # --- serialization: the options plus the sub-models by name ------------------------------------
    def get_config(self):
        config = {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "options": options_to_dict(self.options),
            "num_classes": self.num_classes,
            "name": self.name,
        }
        for key in self.parts:
            part = getattr(self, key)
            config[key] = None if part is None else keras.saving.serialize_keras_object(part)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", *cls.parts):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def top1(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Fraction of rows whose arg-max equals the label."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32))


def scaled_pixels(value_at_32: int, image_size: int, *, minimum: int = 0, multiple_of: int = 1) -> int:
    """A pixel size tuned on 32x32 images, scaled to `image_size`: value_at_32 * image_size / 32.

    Rounds half up to the nearest multiple of `multiple_of` (integer arithmetic, so 32 px gives
    `value_at_32` exactly), then raises to at least `minimum` (kept a multiple). Options declared
    `int | None` resolve None with this in `resolve_options`; methods clamp the result where their
    geometry needs more (a grid that must fit, a size that must tile the image).
    """
    step = int(multiple_of)
    if step < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    numerator, denominator = int(value_at_32) * int(image_size), 32 * step
    value = step * ((2 * numerator + denominator) // (2 * denominator))
    return max(value, step * -(-int(minimum) // step))


def with_scaled_pixels(options, image_size: int, **values_at_32: int):
    """`options` with every field named here that is None set to its 32-px value scaled to `image_size`."""
    updates = {name: scaled_pixels(value, image_size) for name, value in values_at_32.items()
               if getattr(options, name) is None}
    return dataclasses.replace(options, **updates) if updates else options


def require(ok: bool, message: str) -> None:
    """Raises `ConfigError(message)` unless `ok`: for the checks an options dataclass makes across fields
    in its `__post_init__` (single-field types and bounds come from `option()`)."""
    if not ok:
        raise ConfigError(message)
