"""Training for a wall-clock budget (`trainer.time_budget_s`) instead of a number of epochs.

A budgeted run does not know its length in steps until it has measured its own speed, yet its schedules
(the learning rate's cosine, BYOL's and DINO's momentum, DINO's weight decay) are functions of that length.
So the length is a variable, the run's *horizon*: every schedule reads it at every step, and `TimeBudget`
keeps it at the steps the budget affords at the rate measured so far (steps done + seconds left / seconds
per step), correcting it after every step once the first ones (tracing) are behind. Near the end the
estimate and the truth meet, so the schedules reach their ends as the budget runs out.

The seconds spent and the horizon are saved with every checkpoint, so a killed run resumes within the same
budget: the seconds of earlier runs of the folder count, and the horizon continues from its last value.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import keras
import tensorflow as tf


def now() -> float:
    """The budget's clock: monotonic seconds (a module function, so a test can replace it)."""
    return time.perf_counter()


# Steps of each `fit` call not used for a rate (the first traces the train step, the next settles its
# caches); `sslzoo.bench` skips the same.
SETTLING_STEPS = 2


class BudgetState:
    """The variables a budgeted run checkpoints: seconds of training so far and the horizon in steps."""

    def __init__(self, initial_horizon: int):
        self.spent = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="budget_spent_seconds")
        self.horizon = tf.Variable(max(int(initial_horizon), 1), dtype=tf.int64, trainable=False,
                                   name="budget_horizon_steps")

    def finished(self, budget: float, step: int) -> bool:
        """Whether a run at optimizer step `step` has nothing left: its seconds are spent, or it stopped
        because one more step would have passed them (then the horizon is the step it stopped at)."""
        return float(self.spent.numpy()) >= budget or step >= int(self.horizon.numpy())

    def trackables(self) -> dict:
        return {"budget_spent_seconds": self.spent, "budget_horizon_steps": self.horizon}


class TimeBudget(keras.callbacks.Callback):
    """Stops training when one more step would pass `budget` seconds, and re-estimates the horizon.

    Must run before the checkpoint's callback: an epoch's end records the seconds spent in the state
    the checkpoint then saves. The stop comes at a step's end; Keras still ends the epoch, so that state
    is saved as well.

    Args:
        budget: seconds of training the run may spend, earlier runs of the folder included.
        state: the run's `BudgetState` (restored from the checkpoint on a resume).
        max_steps: the horizon's ceiling (`trainer.epochs` epochs: a budget never trains past them).
        clock: seconds, monotonic (a test's fake clock); default `now`.
    """

    def __init__(self, budget: float, state: BudgetState, max_steps: int,
                 clock: Optional[Callable[[], float]] = None):
        super().__init__()
        self.budget, self.state, self.max_steps = float(budget), state, int(max_steps)
        self.clock = clock or now
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.begin = self.clock()
        self.spent_before = float(self.state.spent.numpy())
        self.first_step = int(self.model.optimizer.iterations.numpy())
        self.steps = 0
        self.mark = None  # (time, steps) after the settling steps: where the rate is measured from

    def spent(self, now: float) -> float:
        return self.spent_before + (now - self.begin)

    def seconds_per_step(self, now: float) -> float:
        if self.mark is None or self.steps == self.mark[1]:
            return (now - self.begin) / max(self.steps, 1)  # tracing included: an overestimate, briefly
        return (now - self.mark[0]) / (self.steps - self.mark[1])

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        self.steps += 1
        if self.steps == SETTLING_STEPS:
            self.mark = (now, self.steps)
        step_seconds = self.seconds_per_step(now)
        left = self.budget - self.spent(now)
        done = self.first_step + self.steps
        if self.steps >= SETTLING_STEPS:
            self.state.horizon.assign(min(max(done + int(max(left, 0.0) / step_seconds), done), self.max_steps))
        if left < step_seconds:
            self.model.stop_training = True
            self.stopped = True
            self.state.horizon.assign(done)

    def on_epoch_end(self, epoch, logs=None):
        self.state.spent.assign(self.spent(self.clock()))
        if logs is not None:
            logs["budget_seconds_left"] = max(self.budget - float(self.state.spent.numpy()), 0.0)
            logs["horizon_steps"] = int(self.state.horizon.numpy())
