"""Momentum (EMA) targets: a never-trained copy of a model that follows the trained one by averaging.

MoCo's key encoder, BYOL's target network, MoCo v3's momentum encoder and DINO's teacher are one idea:
after every optimizer step, theta_target <- m * theta_target + (1 - m) * theta_online. This module holds
it once: `momentum_copy` makes the target, `momentum_pairs` pairs its variables with the online ones,
`momentum_update` applies the rule on every replica, `cosine_momentum` is BYOL's schedule of m.

Only trainable parameters are averaged (MoCo's builder.py, BYOL's EMA of the parameters, DINO's
`zip(student.parameters(), teacher.parameters())`): a target's batch-norm moving statistics are its own,
accumulated by its own forward passes in training mode, and only used in inference mode.
"""

from __future__ import annotations

import math
from typing import Callable, List, Sequence, Tuple

import keras
import tensorflow as tf


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def update_replicated(updates: Sequence[Tuple[keras.Variable, Callable, tuple]]) -> None:
    """Applies `fn(tf_variable, *args)` for every `(variable, fn, args)`, on every replica's copy.

    Mirrored variables may not be assigned in a replica context directly; like Keras' optimizer, the
    update goes through `merge_call` and `extended.update`, which gives each device its own replica's
    args (identical here: every replica computes the same momentum average and the same gathered keys).
    Without a strategy this is a plain call.
    """
    context = tf.distribute.get_replica_context()
    if context is None:
        for variable, fn, args in updates:
            fn(_tf_variable(variable), *args)
        return

    def merge(strategy, *all_args):
        for (variable, fn, _), args in zip(updates, all_args):
            strategy.extended.update(_tf_variable(variable), fn, args=args, group=False)

    context.merge_call(merge, args=tuple(args for _, _, args in updates))


def momentum_copy(model: keras.Model, name: str) -> keras.Model:
    """A separate model with `model`'s architecture and (at creation) its exact weights, never trained.

    Its variables are marked non-trainable, so they never enter `trainable_variables` (and so never the
    optimizer or the gradient); its layers stay trainable so that its BN layers still normalise with
    batch statistics in training mode (Keras runs a non-trainable BN layer in inference mode).
    """
    config = model.get_config()
    config["name"] = name
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    for variable in copy.weights:
        variable.trainable = False
    return copy


def momentum_pairs(
    online: Sequence[keras.Model], targets: Sequence[keras.Model]
) -> List[Tuple[keras.Variable, keras.Variable]]:
    """(target variable, online variable) for every trainable parameter of the online models.

    `targets[i]` is `momentum_copy(online[i], ...)`: same architecture, so its weights list in the same
    order. Variables that are not trainable in the online model (BN moving statistics) are left out, so
    each target keeps its own.
    """
    pairs = []
    for online_model, target_model in zip(online, targets, strict=True):
        for source, target in zip(online_model.weights, target_model.weights, strict=True):
            if source.trainable:
                pairs.append((target, source))
    return pairs


def momentum_update(pairs: Sequence[Tuple[keras.Variable, keras.Variable]], momentum) -> None:
    """theta_target <- m * theta_target + (1 - m) * theta_online for every `(target, online)` pair.

    `momentum` m: a Python float (m = 1 freezes the target, m = 0 copies the online model) or a float32
    scalar tensor, e.g. `cosine_momentum(...)` of the optimizer's step.
    Reference: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020
    (Eq. 2); Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (Eq. 1).
    """
    m = momentum
    updates = []
    for target, online in pairs:
        value = m * tf.convert_to_tensor(target) + (1.0 - m) * tf.convert_to_tensor(online)
        updates.append((target, lambda variable, new: variable.assign(new), (value,)))
    update_replicated(updates)


def cosine_momentum(base: float, step, total_steps) -> tf.Tensor:
    """BYOL's schedule: tau = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2, from tau_base at k = 0 to 1 at K.

    Args:
        base: tau_base (BYOL: 0.996; DINO's teacher: 0.996; MoCo v3: 0.99).
        step: k, the current step (a Python number or an integer tensor such as `optimizer.iterations`).
        total_steps: K, the number of training steps.
    Returns:
        float32 scalar. k is clipped to [0, K]: the cosine is periodic, and a run trained past K (more
        epochs after a resume) should keep tau = 1 rather than fall back towards tau_base.
    Reference: Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
    NeurIPS 2020 (implementation details, "Optimization"; tau_base = 0.996).
    """
    progress = tf.cast(step, tf.float32) / tf.cast(total_steps, tf.float32)
    progress = tf.clip_by_value(progress, 0.0, 1.0)
    return 1.0 - (1.0 - base) * (tf.cos(math.pi * progress) + 1.0) / 2.0


def scheduled_momentum(base: float, step, total_steps, cosine: bool = True) -> tf.Tensor:
    """The momentum of a method's target at step k: `cosine_momentum(base, k, K)` when `cosine` and the run
    length K is known (the trainer's `set_run_length`: a number or an integer variable), else `base`
    throughout (e.g. outside the trainer)."""
    if cosine and total_steps is not None:
        return cosine_momentum(base, step, total_steps)
    return tf.constant(base, tf.float32)
