"""`build_optimizer`: an `OptimizerConfig` plus the run length -> a Keras optimizer with its schedule."""

from __future__ import annotations

import keras

from sslzoo.config import OptimizerConfig
from sslzoo.optimizers.coupled import CoupledAdam, CoupledSGD
from sslzoo.optimizers.lars import LARS
from sslzoo.optimizers.schedules import base_learning_rate, build_schedule

# adamw / lamb use Keras' decoupled decay, which matches on `variable.name` ("kernel", "bias", "gamma",
# "beta"): leaving out biases and normalisation scales/offsets is the usual practice for both (BERT, LAMB).
_NO_DECAY_NAMES = ["bias", "gamma", "beta"]


def build_optimizer(cfg: OptimizerConfig, steps_per_epoch: int, epochs: int, horizon=None) -> keras.optimizers.Optimizer:
    """Builds the optimizer named by `cfg.name`, its learning rate from `build_schedule`.

    Weight decay semantics per name (`cfg.weight_decay`; adam, adamw and lamb take `cfg.beta_2`):
      sgd   -> `CoupledSGD`: momentum, Nesterov, coupled L2 on every variable (RotNet / PyTorch semantics).
      adam  -> `CoupledAdam`: coupled L2 on every variable (PyTorch `Adam(weight_decay=)` semantics).
      adamw -> `keras.optimizers.AdamW`: decoupled decay, not on biases / norm gamma, beta.
      lamb  -> `keras.optimizers.Lamb`: decoupled decay, not on biases / norm gamma, beta.
      lars  -> `LARS`: coupled decay; 1-D variables (BN gamma/beta, biases) take neither decay nor adaptation
               (SimCLR). `cfg.momentum` and `cfg.nesterov` are honoured (SimCLR uses nesterov=False).

    Args:
        cfg: the run's `OptimizerConfig`.
        steps_per_epoch: optimizer steps in one epoch (> 0).
        epochs: number of epochs (> 0); the schedule ends at `steps_per_epoch * epochs`.
        horizon: optional integer `tf.Variable` the schedule ends at instead (`build_schedule`).
    """
    learning_rate = build_schedule(cfg, steps_per_epoch, epochs, horizon)
    weight_decay = float(cfg.weight_decay)
    beta_2 = float(cfg.beta_2)
    name = cfg.name
    if name == "sgd":
        return CoupledSGD(
            learning_rate=learning_rate,
            momentum=float(cfg.momentum),
            nesterov=bool(cfg.nesterov),
            weight_decay=weight_decay or None,
        )
    if name == "adam":
        return CoupledAdam(learning_rate=learning_rate, beta_2=beta_2, weight_decay=weight_decay or None)
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, beta_2=beta_2, weight_decay=weight_decay)
        optimizer.exclude_from_weight_decay(var_names=_NO_DECAY_NAMES)
        return optimizer
    if name == "lamb":
        optimizer = keras.optimizers.Lamb(learning_rate=learning_rate, beta_2=beta_2, weight_decay=weight_decay or None)
        optimizer.exclude_from_weight_decay(var_names=_NO_DECAY_NAMES)
        return optimizer
    if name == "lars":
        return LARS(
            learning_rate=learning_rate,
            momentum=float(cfg.momentum),
            weight_decay=weight_decay,
            nesterov=bool(cfg.nesterov),
            skip_1d_variables=True,
        )
    raise ValueError(f"optimizer.name: unknown optimizer '{name}'; allowed: sgd, adam, adamw, lamb, lars")


def with_constant_learning_rate(optimizer: keras.optimizers.Optimizer, name: str) -> keras.optimizers.Optimizer:
    """A new, unbuilt optimizer of the same kind and settings whose learning rate stays at the base rate of
    `optimizer`'s schedule (`base_learning_rate`): for parameters the paper keeps out of the decay
    (SimSiam's predictor). A mixed_float16 `LossScaleOptimizer` is unwrapped and the copy wrapped again."""
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return keras.optimizers.LossScaleOptimizer(with_constant_learning_rate(inner, name), name=f"{name}_loss_scale")
    config = optimizer.get_config()
    config.update(learning_rate=base_learning_rate(config["learning_rate"]), name=name)
    copy = type(optimizer).from_config(config)
    if isinstance(copy, (keras.optimizers.AdamW, keras.optimizers.Lamb)):
        copy.exclude_from_weight_decay(var_names=_NO_DECAY_NAMES)  # not part of get_config
    return copy
