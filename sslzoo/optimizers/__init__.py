"""Optimizers Keras 3 lacks (LARS, coupled-L2 SGD/Adam) and `build_optimizer` from an `OptimizerConfig`."""

from sslzoo.optimizers.coupled import CoupledAdam, CoupledSGD
from sslzoo.optimizers.factory import build_optimizer, with_constant_learning_rate
from sslzoo.optimizers.lars import LARS

__all__ = ["LARS", "CoupledSGD", "CoupledAdam", "build_optimizer", "with_constant_learning_rate"]
