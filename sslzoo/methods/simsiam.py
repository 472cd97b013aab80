"""SimSiam: one encoder + projector on two views, a predictor, and a stop-gradient in place of a target."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List

import keras
import tensorflow as tf

from sslzoo.augment.views import ViewOptions, two_views
from sslzoo.config import option
from sslzoo.heads import mlp_head
from sslzoo.losses import simsiam_loss
from sslzoo.methods.base import SSLMethod
from sslzoo.optimizers import with_constant_learning_rate
from sslzoo.pictures import pair_cosines, save_view_pairs
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class SimSiamOptions(ViewOptions):
    """SimSiam's hyperparameters and its view augmentation (the paper's, = MoCo v2's)."""

    # The paper: 3 layers on ImageNet, 2 on CIFAR (appendix D); BN on every layer including the output.
    projection_layers: int = option(2, "fc layers of the projector (the paper: 3 ImageNet, 2 CIFAR)", ge=1)
    projection_dim: int = option(2048, "width of the projector's hidden and output layers (the paper: 2048)", ge=1)
    # Bottleneck: 512 for 2048 (a quarter).
    predictor_hidden: int = option(512, "hidden width of the predictor (the paper: 512 for 2048)", ge=1)
    # The paper (section 4.1, Table 1): the predictor does slightly better when its rate is not decayed,
    # and that is its default; the official code marks the predictor's parameter group `fix_lr`.
    fixed_predictor_lr: bool = option(True, "the predictor keeps the base learning rate while everything "
                                            "else follows the schedule (the paper's default)")
    stop_gradient: bool = option(True, "stop-gradient on the other view's projection; False only to show "
                                       "the collapse (paper Figure 2)")
    # Augmentation (the official main_simsiam.py): crop 0.2-1, jitter (0.4, 0.4, 0.4, 0.1) p 0.8 (= colour
    # strength 0.5), grayscale 0.2, blur 0.5 on ImageNet; off here by default (32 px CIFAR).
    crop_scale: tuple[float, float] = option(
        (0.2, 1.0), "[low, high] range of the crop's area fraction (SimSiam: 0.2-1)", gt=0.0, le=1.0)
    blur_probability: float = option(
        0.0, "chance of a Gaussian blur (the paper on ImageNet: 0.5; off on CIFAR)", ge=0.0, le=1.0)


@register_method("simsiam")
@keras.saving.register_keras_serializable(package="sslzoo")
class SimSiam(SSLMethod):
    """SimSiam: D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2 with D the negative cosine (Algorithm 1).

    Args (besides the base class'):
        projector: part features [N, D] -> z [N, P]; Dense-BN-ReLU per hidden layer, then Dense-BN
            (no scale or offset, as the official code's last BatchNorm1d(affine=False)).
        predictor: part z [N, P] -> p [N, P]; Dense-BN-ReLU-Dense, a bottleneck.
    The online probe reads view 1's detached features.
    Reference: Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021.
    """

    Options = SimSiamOptions
    parts = ("projector", "predictor")
    log_names = ("output_std",)

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        feature_dim, width = int(encoder.output_shape[-1]), options.projection_dim
        projector = mlp_head(feature_dim, [width] * (options.projection_layers - 1), width,
                             last_batch_norm=True, name="projector")
        predictor = mlp_head(width, [options.predictor_hidden], width, name="predictor")
        return {"projector": projector, "predictor": predictor}

    def compile(self, optimizer="rmsprop", **kwargs):
        """Keras' compile; with `fixed_predictor_lr`, also a copy of the optimizer at the schedule's base
        rate for the predictor (built now, under the caller's strategy scope, and held as an attribute so
        the run's checkpoint carries its slots)."""
        super().compile(optimizer=optimizer, **kwargs)
        self.predictor_optimizer = None
        if self.options.fixed_predictor_lr and isinstance(self.optimizer, keras.optimizers.Optimizer):
            self.predictor_optimizer = with_constant_learning_rate(self.optimizer, "predictor_optimizer")
            self.predictor_optimizer.build(self.predictor.trainable_variables)

    def compile_from_config(self, config):
        # Keras skips compile() when loading a .keras file of a class that overrides it; this is its
        # documented remedy, the same steps as Keras' own.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        if getattr(self, "predictor_optimizer", None) is None:
            return super().train_step(data)
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)  # over every variable, as the trainer builds it
        predictor = self.predictor.trainable_variables
        own = {id(v) for v in predictor}
        scheduled = [v for v in self.trainable_variables if id(v) not in own]
        with tf.GradientTape(persistent=True) as tape:
            loss, logs = self.compute_loss_and_logs(data, training=True)
        self.apply_gradients(tape, loss, predictor, self.predictor_optimizer)
        self.apply_gradients(tape, loss, scheduled)
        return self.update_metrics(logs)

    def augment(self, images, labels, seed):
        view_1, view_2 = two_views(images, seed, **self.options.as_kwargs())
        return {"images": images, "view_1": view_1, "view_2": view_2, "labels": labels}

    def embed(self, view, training):
        """(features [N, D], z [N, P], p [N, P]) of one view."""
        features = self.encoder(view, training=training)
        z = self.projector(features, training=training)
        return features, z, self.predictor(z, training=training)

    def compute_loss_and_logs(self, data, training):
        features, z_1, p_1 = self.embed(data["view_1"], training)
        _, z_2, p_2 = self.embed(data["view_2"], training)
        stop = self.options.stop_gradient
        loss = simsiam_loss(p_1, z_2, stop_gradient=stop) / 2 + simsiam_loss(p_2, z_1, stop_gradient=stop) / 2
        # The paper's collapse monitor (Figure 2): per-dimension std of z / |z|, ~1/sqrt(P) when healthy.
        logs = {"loss": loss, "output_std": output_std(z_1)}
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """The two views of 8 images, captioned with the cosine of p1 and z2 (what the loss maximises)."""
        count = min(8, int(data["view_1"].shape[0]))
        _, _, p_1 = self.embed(data["view_1"][:count], training=False)
        _, z_2, _ = self.embed(data["view_2"][:count], training=False)
        name = "simsiam_views.png"
        save_view_pairs(Path(run_dir) / name, data, count, pair_cosines(p_1, z_2), "cos",
                        "SimSiam: cosine of view 1's prediction p1 and view 2's projection z2")
        return [name]


def output_std(z: tf.Tensor) -> tf.Tensor:
    """Mean over dimensions of the batch std of z / |z| (SimSiam Figure 2; 1/sqrt(P) for spread-out
    outputs, 0 when collapsed to one vector)."""
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))
