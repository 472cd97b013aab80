"""BYOL: an online network predicts a slowly moving target network's projection of another view."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Tuple

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment.ops import solarize, split_seed
from sslzoo.augment.views import ViewOptions, simclr_view
from sslzoo.config import option
from sslzoo.heads import mlp_head
from sslzoo.layers import ema
from sslzoo.losses import byol_loss
from sslzoo.methods.base import SSLMethod
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class BYOLOptions(ViewOptions):
    """BYOL's hyperparameters and its asymmetric view augmentation (paper, appendix B, Table 6).

    The view options inherited from `ViewOptions` apply to both views, except blur and solarization,
    which BYOL draws with a different probability per view: `blur_probability` / `solarize_probability`
    are the first view's, `blur_probability_2` / `solarize_probability_2` the second's.
    """

    # 0.996 is the paper's for ImageNet at 1000 epochs (300 epochs: 0.99). A short CIFAR-scale run has
    # few steps, so a target with m 0.996 (a horizon of ~250 steps) would barely follow the online network
    # during the first epochs; 0.99 (~100 steps) is the usual CIFAR choice. The cosine schedule raises m
    # to 1 at the last step.
    base_momentum: float = option(
        0.99, "tau_base of the target's EMA, raised to 1 by a cosine over the run (the paper: 0.996 on "
              "ImageNet at 1000 epochs; 0.99 here for short CIFAR-scale runs)", ge=0.0, le=1.0)
    cosine_momentum: bool = option(True, "follow BYOL's cosine schedule of tau (False: tau_base throughout)")
    # The paper: 4096 hidden (twice ResNet-50's 2048 features), 256 out; same shape for the predictor.
    hidden_dim: int = option(0, "hidden width of projector and predictor (0 = twice the encoder's feature width; "
                                "the paper: 4096 for 2048 features)", ge=0)
    projection_dim: int = option(256, "output width of projector and predictor (the paper: 256)", ge=1)
    # Augmentation (Table 6): crop 0.08-1, flip, jitter p 0.8 with brightness 0.4, contrast 0.4,
    # saturation 0.2, hue 0.1 (colour strength 0.5 gives 0.4/0.4/0.4/0.1: saturation 0.4, not 0.2),
    # grayscale p 0.2, blur p 1.0 / 0.1, solarize p 0.0 / 0.2.
    blur_probability: float = option(
        1.0, "first view's chance of a Gaussian blur (the paper: 1.0; kernel 10% of the side: 3 taps at "
             "32 px)", ge=0.0, le=1.0)
    blur_probability_2: float = option(0.1, "second view's chance of a Gaussian blur (the paper: 0.1)",
                                       ge=0.0, le=1.0)
    solarize_probability: float = option(0.0, "first view's chance of solarization (the paper: 0.0)",
                                         ge=0.0, le=1.0)
    solarize_probability_2: float = option(0.2, "second view's chance of solarization (the paper: 0.2)",
                                           ge=0.0, le=1.0)
    solarize_threshold: float = option(0.5, "pixels >= this are inverted (PIL's 128 of 255)", ge=0.0, le=1.0)


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
        view_1, view_2 = byol_views(images, seed, self.options)
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
        if self.options.cosine_momentum and self.total_steps:
            return ema.cosine_momentum(self.options.base_momentum, step, self.total_steps)
        return tf.constant(self.options.base_momentum, tf.float32)

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
        cosine = tf.reduce_sum(tf.math.l2_normalize(tf.cast(prediction_1, tf.float32), -1)
                               * tf.math.l2_normalize(tf.cast(target_2, tf.float32), -1), -1).numpy()
        rows = [("image", np.asarray(data["images"][:count])), ("view 1", np.asarray(sample["view_1"])),
                ("view 2", np.asarray(sample["view_2"]))]
        captions = [[""] * count, [""] * count, [f"cos {c:.2f}" for c in cosine]]
        name = "byol_views.png"
        save_image_grid(Path(run_dir) / name, rows, captions=captions,
                        title="BYOL: cosine of view 1's online prediction and view 2's target projection")
        return [name]


def byol_views(images: tf.Tensor, seed: tf.Tensor, options: BYOLOptions) -> Tuple[tf.Tensor, tf.Tensor]:
    """BYOL's two asymmetric views: `simclr_view` with each view's blur probability, then solarization
    drawn per image from the view's own seed (solarization comes last, as in the paper's pipeline)."""
    views = []
    probabilities = ((options.blur_probability, options.solarize_probability),
                     (options.blur_probability_2, options.solarize_probability_2))
    for view_seed, (blur, solar) in zip(split_seed(seed, 2), probabilities):
        crop_seed, solarize_seed = split_seed(view_seed, 2)
        kwargs = {**options.as_kwargs(), "blur_probability": blur}
        view = simclr_view(images, crop_seed, **kwargs)
        if solar > 0:
            apply = tf.random.stateless_uniform([tf.shape(view)[0]], seed=solarize_seed) < solar
            view = solarize(view, apply, options.solarize_threshold)
        views.append(view)
    return views[0], views[1]
