"""Resumable training state.

A run's complete state (the method model with its encoder, heads and any SSL state such as queues or
momentum encoders, the optimizer's slots and step counter, and the epoch) is one `tf.train.Checkpoint`.
TensorFlow writes a checkpoint's data files first and updates the `checkpoint` index last, so a run killed
mid-save still points at the previous complete checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf


class RunState:
    """The epoch counter plus everything a method and its optimizer track, saved per epoch.

    Args:
        model: the method (a `keras.Model`).
        optimizer: its optimizer, already built for the model's trainable variables.
        directory: checkpoint folder inside the run.
        max_to_keep: how many epoch checkpoints to keep.
        budget: a time-budgeted run's `BudgetState`, or None.
    """

    def __init__(self, model: keras.Model, optimizer, directory: str | Path, max_to_keep: int = 2, budget=None):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.budget = budget  # a time-budgeted run's BudgetState (seconds spent, horizon), saved alongside
        extra = budget.trackables() if budget is not None else {}
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch, **extra)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=max_to_keep)

    def restore_latest(self) -> int:
        """Restores the newest checkpoint if there is one; returns the number of finished epochs."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def save(self, finished_epochs: int) -> str:
        self.epoch.assign(finished_epochs)
        return self.manager.save(checkpoint_number=finished_epochs)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the run state every `every` epochs, after the last one, and after an epoch a callback stopped
    the training in (a time budget's end, a deadline): that state is the run's last.

    Runs only when an epoch ends normally: a NaN raised mid-epoch by TerminateOnNaN(raise_error=True)
    never reaches it, so the last checkpoint on disk is the last good one.
    """

    def __init__(self, state: RunState, every: int, last_epoch: int):
        super().__init__()
        self.state, self.every, self.last_epoch = state, max(1, every), last_epoch

    def on_epoch_end(self, epoch, logs=None):
        finished = epoch + 1
        if finished % self.every == 0 or finished == self.last_epoch or self.model.stop_training:
            self.state.save(finished)
