"""BYOL: an online network predicts a slowly moving target network's projection of another view."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Tuple

import keras
import tensorflow as tf

from sslzoo.augment.views import AsymmetricViewOptions, asymmetric_views
from sslzoo.config import option
from sslzoo.heads import mlp_head
from sslzoo.layers import ema
from sslzoo.losses import byol_loss
from sslzoo.methods.base import SSLMethod
from sslzoo.pictures import pair_cosines, save_view_pairs
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class BYOLOptions(AsymmetricViewOptions):
    """BYOL's hyperparameters; its asymmetric views (paper, appendix B, Table 6) come from
    `AsymmetricViewOptions`: blur 1.0 / 0.1, solarization 0.0 / 0.2 for the two views."""

    # 0.996 is the paper's for ImageNet at 1000 epochs (300 epochs: 0.99). A short CIFAR-scale run has
    # few steps, so a target with m 0.996 (a horizon of ~250 steps) would barely follow the online network
    # during the first epochs; 0.99 (~100 steps) is the usual CIFAR choice. The cosine schedule raises m
    # to 1 at the last step.
    base_momentum: float = option(
        0.99, "tau_base of the target's EMA, raised to 1 by a cosine over the run (the paper: 0.996 on "
              "ImageNet at 1000 epochs; 0.99 here for short CIFAR-scale runs)", search=(0.9, 0.99, 0.996),
        ge=0.0, le=1.0)
    cosine_momentum: bool = option(True, "follow BYOL's cosine schedule of tau (False: tau_base throughout)")
    # The paper: 4096 hidden (twice ResNet-50's 2048 features), 256 out; same shape for the predictor.
    hidden_dim: int = option(0, "hidden width of projector and predictor (0 = twice the encoder's feature width; "
                                "the paper: 4096 for 2048 features)", ge=0)
    projection_dim: int = option(256, "output width of projector and predictor (the paper: 256)", ge=1)


@register_method("byol")
@keras.saving.register_keras_serializable(package="sslzoo")
class BYOL(SSLMethod):
    """Bootstrap Your Own Latent: online encoder + projector + predictor regress the target's projection.

    Args (besides the base class'):
        projector: part features [N, D] -> projections [N, P] (Dense-BN-ReLU-Dense).
        predictor: part projections [N, P] -> predictions [N, P] (same shape as the projector).
    State (tracked, so checkpoints and .keras files carry it): `target_encoder` and `target_projector`,
    momentum copies of the online encoder and projector, updated after every optimizer step by
    xi <- tau xi + (1 - tau) theta with tau = cosine_momentum(base_momentum, k, K): k the step just
    taken (0-based), K the run's total steps (`set_run_length`; without it, e.g. outside the trainer,
    tau stays at base_momentum). The target network gets no gradient. The online probe reads view 1's
    detached online features.
    Reference: Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
    NeurIPS 2020.
    """

    Options = BYOLOptions
    parts = ("projector", "predictor")
    log_names = ("target_momentum",)

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        feature_dim = int(encoder.output_shape[-1])
        hidden = options.hidden_dim or 2 * feature_dim
        projector = mlp_head(feature_dim, [hidden], options.projection_dim, name="projector")
        predictor = mlp_head(options.projection_dim, [hidden], options.projection_dim, name="predictor")
        return {"projector": projector, "predictor": predictor}

    def setup(self):
        # The target starts as an exact copy of the online network (the paper initialises xi = theta).
        self.target_encoder = ema.momentum_copy(self.encoder, "target_encoder")
        self.target_projector = ema.momentum_copy(self.projector, "target_projector")

    # --- views ----------------------------------------------------------------------------------------
    def augment(self, images, labels, seed):
        view_1, view_2 = asymmetric_views(images, seed, self.options)
        return {"images": images, "view_1": view_1, "view_2": view_2, "labels": labels}

    # --- networks and loss ----------------------------------------------------------------------------
    def online(self, view, training):
        """(features [N, D], predictions q(g(f(view))) [N, P]). Each view is its own forward pass (BN
        statistics per view), as the official code applies the network to each view separately."""
        features = self.encoder(view, training=training)
        projections = self.projector(features, training=training)
        return features, self.predictor(projections, training=training)

    def compute_targets(self, data, training) -> Tuple[tf.Tensor, tf.Tensor]:
        """The target projections (z'_1, z'_2) of both views, without gradient."""
        targets = []
        for key in ("view_1", "view_2"):
            features = self.target_encoder(data[key], training=training)
            targets.append(tf.stop_gradient(self.target_projector(features, training=training)))
        return tuple(targets)

    def compute_loss_and_logs(self, data, training, targets=None):
        if targets is None:
            targets = self.compute_targets(data, training)
        target_1, target_2 = targets
        features, prediction_1 = self.online(data["view_1"], training)
        _, prediction_2 = self.online(data["view_2"], training)
        # Algorithm 1: the symmetrised loss, each view's prediction against the other view's target.
        loss = byol_loss(prediction_1, target_2) + byol_loss(prediction_2, target_1)
        logs = {"loss": loss}
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def train_step(self, data):
        # Targets first, outside the tape: the tape records nothing of the target's forward passes.
        targets = self.compute_targets(data, training=True)
        with tf.GradientTape() as tape:
            loss, logs = self.compute_loss_and_logs(data, training=True, targets=targets)
        step = tf.convert_to_tensor(self.optimizer.iterations)  # k of the step being taken
        self.apply_gradients(tape, loss, self.trainable_variables)
        momentum = self.momentum_at(step)
        self.momentum_update(momentum)
        logs["target_momentum"] = momentum
        return self.update_metrics(logs)

    def momentum_at(self, step) -> tf.Tensor:
        """tau at 0-based step k: the cosine schedule over the run's K steps, or tau_base."""
        return ema.scheduled_momentum(self.options.base_momentum, step, self.total_steps,
                                      self.options.cosine_momentum)

    def momentum_pairs(self):
        """(target variable, online variable) for every trainable parameter of encoder and projector."""
        return ema.momentum_pairs((self.encoder, self.projector), (self.target_encoder, self.target_projector))

    def momentum_update(self, momentum) -> None:
        """xi <- tau xi + (1 - tau) theta (BYOL Eq. 1)."""
        ema.momentum_update(self.momentum_pairs(), momentum)

    # --- pictures -----------------------------------------------------------------------------------
    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """The two views of 8 images (view 2 carries the solarization), captioned with the cosine of
        view 1's prediction and view 2's target projection (1 = the online network predicts it)."""
        count = min(8, int(data["view_1"].shape[0]))
        sample = {key: data[key][:count] for key in ("view_1", "view_2")}
        _, target_2 = self.compute_targets(sample, training=False)
        _, prediction_1 = self.online(sample["view_1"], training=False)
        name = "byol_views.png"
        save_view_pairs(Path(run_dir) / name, data, count, pair_cosines(prediction_1, target_2), "cos",
                        "BYOL: cosine of view 1's online prediction and view 2's target projection")
        return [name]

