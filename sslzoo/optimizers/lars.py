"""LARS: layer-wise adaptive rate scaling with coupled weight decay, as SimCLR trains with it."""

from __future__ import annotations

import re
from typing import Optional, Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sslzoo")
class LARS(keras.optimizers.Optimizer):
    """Momentum SGD whose step for each variable is scaled by the trust ratio eta * ||w|| / ||g||.

    For every variable `w` with gradient `g` (SimCLR's `lars_optimizer.py`, classic momentum):

    ```
    g' = g + weight_decay * w                        if w takes weight decay, else g
    r  = eta * ||w|| / ||g'||   if ||w|| > 0 and ||g'|| > 0, else 1   (only if w is adapted, else 1)
    v  = momentum * v + learning_rate * r * g'
    w  = w - v                                       (nesterov: w - (momentum * v + learning_rate * r * g'))
    ```

    Which variables are left out. SimCLR excludes `["batch_normalization", "bias"]` by name from both weight
    decay and adaptation; in its ResNet those are exactly the 1-D variables (BN gamma/beta, biases). Keras 3
    names variables by layer path (`"block1_bn/gamma"`, `"dense/bias"`), and a BN layer named by its author
    does not contain "batch_normalization", so name matching alone is fragile. Hence `skip_1d_variables=True`
    (the default) excludes every variable of rank <= 1 from both, whatever its name; the two name lists are
    extra `re.search` patterns matched against `variable.path` (e.g. `"projector"` to exclude a head).

    Args:
        learning_rate: float or `LearningRateSchedule`.
        momentum: float in [0, 1), momentum of the velocity `v`.
        weight_decay: float, coupled L2 coefficient added to the gradient (the paper's form). It is NOT
            Keras' decoupled `weight_decay`: the base class's decoupled step is switched off.
        eta: float, trust coefficient.
        nesterov: bool, Nesterov momentum.
        exclude_from_weight_decay: list of regex patterns; a variable whose path matches takes no decay.
        exclude_from_layer_adaptation: list of regex patterns; a matching variable uses r = 1. `None` means
            the same list as `exclude_from_weight_decay` (SimCLR's behaviour).
        skip_1d_variables: bool, exclude all variables of rank <= 1 from weight decay and adaptation.
        name: optimizer name; other base keyword args (clipnorm, use_ema, ...) pass through.

    Reference: You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks", 2017;
    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020.
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        nesterov: bool = False,
        exclude_from_weight_decay: Optional[Sequence[str]] = None,
        exclude_from_layer_adaptation: Optional[Sequence[str]] = None,
        skip_1d_variables: bool = True,
        name: str = "lars",
        **kwargs,
    ):
        # `weight_decay` is not passed on: Keras' base one is decoupled (w -= lr * wd * w outside the
        # momentum), while LARS couples it into the gradient before the trust ratio.
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum}")
        if weight_decay is None or float(weight_decay) < 0.0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay}")
        if float(eta) <= 0.0:
            raise ValueError(f"LARS: eta must be > 0, got {eta}")
        self.momentum = float(momentum)
        # Stored under the base class's attribute name so configs read naturally; `_apply_weight_decay` is
        # overridden below so the base class does not also apply it decoupled.
        self.weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.nesterov = bool(nesterov)
        # These shadow the base method `exclude_from_weight_decay()`, which LARS could not honour anyway
        # (it matches `variable.name` only); calling it now fails loudly instead of doing nothing.
        self.exclude_from_weight_decay = list(exclude_from_weight_decay or [])
        self.exclude_from_layer_adaptation = (
            None if exclude_from_layer_adaptation is None else list(exclude_from_layer_adaptation)
        )
        self.skip_1d_variables = bool(skip_1d_variables)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, name="momentum") for v in variables]
        # Decided once here, on Keras variables that know their `path`: under the TF backend
        # `update_step` receives the raw tf.Variable, which does not.
        self._decay_flags = [self._takes_weight_decay(v) for v in variables]
        self._adapt_flags = [self._takes_layer_adaptation(v) for v in variables]

    def _takes_weight_decay(self, variable) -> bool:
        if self.skip_1d_variables and len(variable.shape) <= 1:
            return False
        return not _matches_any(_variable_path(variable), self.exclude_from_weight_decay)

    def _takes_layer_adaptation(self, variable) -> bool:
        if self.skip_1d_variables and len(variable.shape) <= 1:
            return False
        patterns = self.exclude_from_layer_adaptation
        if patterns is None:
            patterns = self.exclude_from_weight_decay
        return not _matches_any(_variable_path(variable), patterns)

    def _apply_weight_decay(self, variables):
        # Weight decay is coupled into the gradient in `update_step`; the base class's decoupled step
        # (which fires whenever `self.weight_decay` is set) must do nothing.
        return

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)

        if self.weight_decay > 0.0 and self._decay_flags[index]:
            gradient = ops.add(gradient, ops.multiply(ops.cast(self.weight_decay, dtype), variable))

        scaled_lr = learning_rate
        if self._adapt_flags[index]:
            scaled_lr = ops.multiply(learning_rate, self._trust_ratio(variable, gradient))

        velocity = self.momentums[index]
        momentum = ops.cast(self.momentum, dtype)
        step = ops.multiply(scaled_lr, gradient)
        self.assign(velocity, ops.add(ops.multiply(momentum, velocity), step))
        if self.nesterov:
            self.assign_sub(variable, ops.add(ops.multiply(momentum, velocity), step))
        else:
            self.assign_sub(variable, velocity)

    def _trust_ratio(self, variable, gradient):
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
        # The ratio is 1 for a zero weight (e.g. a zero-initialised layer must still move) or a zero gradient.
        # The inner where keeps the division finite so no NaN leaks through the unselected branch.
        safe_g_norm = ops.where(ops.greater(g_norm, 0.0), g_norm, ops.ones_like(g_norm))
        ratio = ops.divide(ops.multiply(ops.cast(self.eta, variable.dtype), w_norm), safe_g_norm)
        usable = ops.logical_and(ops.greater(w_norm, 0.0), ops.greater(g_norm, 0.0))
        return ops.where(usable, ratio, ops.ones_like(ratio))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.weight_decay,
                "eta": self.eta,
                "nesterov": self.nesterov,
                "exclude_from_weight_decay": list(self.exclude_from_weight_decay),
                "exclude_from_layer_adaptation": (
                    None
                    if self.exclude_from_layer_adaptation is None
                    else list(self.exclude_from_layer_adaptation)
                ),
                "skip_1d_variables": self.skip_1d_variables,
            }
        )
        return config


def _variable_path(variable) -> str:
    """Keras 3 variables carry `path` ("block1_bn/gamma"); fall back to `name` for anything else."""
    return str(getattr(variable, "path", None) or variable.name)


def _matches_any(text: str, patterns: Sequence[str]) -> bool:
    return any(re.search(pattern, text) is not None for pattern in patterns)
