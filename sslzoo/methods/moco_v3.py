"""MoCo v3: queries of one view against the momentum encoder's keys of the other, in-batch, no queue."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Tuple

import keras
import tensorflow as tf

from sslzoo.augment.views import AsymmetricViewOptions, asymmetric_views
from sslzoo.backbones.vit import is_vit
from sslzoo.config import option
from sslzoo.heads import mlp_head
from sslzoo.layers import ema
from sslzoo.layers.batch_norm import use_global_batch_norm
from sslzoo.losses import moco_v3_loss
from sslzoo.methods.base import SSLMethod, top1
from sslzoo.pictures import pair_cosines, save_view_pairs
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class MoCoV3Options(AsymmetricViewOptions):
    """MoCo v3's hyperparameters (the official moco/builder.py and main_moco.py) and BYOL's asymmetric
    views, which the official code uses: blur 1.0 / 0.1, solarization 0.0 / 0.2.

    None (projector_layers, predictor_last_batch_norm) = the official value for the encoder's kind,
    filled in on construction: MoCo_ViT for a ViT encoder, MoCo_ResNet for any other.
    """

    # main_moco.py: --moco-t defaults to 1.0, the ResNet-50 recipes keep it; the ViT recipes (CONFIG.md)
    # pass --moco-t=.2.
    temperature: float = option(1.0, "tau of the contrastive loss (official: 1.0 ResNet, 0.2 ViT)",
                                search=(0.2, 0.5, 1.0), gt=0.0)
    # --moco-m 0.99 with --moco-m-cos in every recipe of CONFIG.md (the 1000-epoch ResNet: 0.996).
    base_momentum: float = option(
        0.99, "m of the momentum encoder at the first step, raised to 1 by a half cosine over the run "
              "(official: 0.99)", ge=0.0, le=1.0)
    cosine_momentum: bool = option(True, "raise m to 1 with the half cosine (official --moco-m-cos; False: m "
                                         "stays at base_momentum)")
    # --moco-mlp-dim 4096 and --moco-dim 256; one pair of widths for both MLPs.
    hidden_dim: int = option(4096, "hidden width of projector and predictor (official: 4096)", ge=1)
    projection_dim: int = option(256, "output width of projector and predictor (official: 256)", ge=1)
    projector_layers: int | None = option(
        None, "Linear layers of the projector (None: official 3 for a ViT, 2 otherwise)", ge=1)
    predictor_last_batch_norm: bool | None = option(
        None, "BN (no scale, no offset) on the predictor's output (None: official True for a ViT, False "
              "otherwise)")
    # The official code converts every BN to SyncBatchNorm under DistributedDataParallel: statistics of the
    # global batch, which one device has anyway.
    global_bn: bool = option(True, "all-reduce BN statistics across replicas (official: SyncBatchNorm)")
    # --crop-min defaults to 0.08 (the ViT recipes); the ResNet-50 recipes pass --crop-min=.2.
    crop_scale: tuple[float, float] = option(
        (0.08, 1.0), "[low, high] range of the crop's area fraction (official: 0.08 ViT, 0.2 ResNet)",
        gt=0.0, le=1.0)


@register_method("moco_v3")
@keras.saving.register_keras_serializable(package="sslzoo")
class MoCoV3(SSLMethod):
    """MoCo v3: ctr(q1, k2) + ctr(q2, k1) with q from encoder + projector + predictor and k from the
    momentum encoder + momentum projector; the other images' keys of the (global) batch are the negatives.

    Args (besides the base class'):
        projector: part features [N, D] -> [N, P]: (Dense-BN-ReLU) x (layers - 1), then a bias-free Dense and
            BN without scale and offset (the official `_build_mlp`, last_bn=True).
        predictor: part [N, P] -> [N, P]: Dense-BN-ReLU, then a bias-free Dense (ResNet) or a bias-free Dense
            and BN without scale and offset (ViT).
    State (tracked, so checkpoints and .keras files carry it): `momentum_encoder` and `momentum_projector`,
    copies of encoder and projector (the predictor has no momentum counterpart), updated after every
    optimizer step k (0-based) by theta_m <- m theta_m + (1 - m) theta with m = cosine_momentum(base,
    k + 1, K). The official code averages at the start of step k + 1, with m(k + 1), right before that
    step's keys; averaging right after step k with the same m gives the same keys. K: the run's steps
    (`set_run_length`; without it m stays at base_momentum). Only trainable weights are averaged, so a
    ViT's frozen patch projection keeps the value it was copied with, as the online one does, and BN
    moving statistics are each network's own. The online probe reads view 1's detached features.
    Reference: Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers",
    ICCV 2021.
    """

    Options = MoCoV3Options
    parts = ("projector", "predictor")
    log_names = ("contrastive_top1", "moco_momentum")

    @classmethod
    def resolve_options(cls, options, encoder):
        vit = is_vit(encoder)
        updates = {}
        if options.projector_layers is None:
            updates["projector_layers"] = 3 if vit else 2
        if options.predictor_last_batch_norm is None:
            updates["predictor_last_batch_norm"] = vit
        return dataclasses.replace(options, **updates) if updates else options

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        feature_dim = int(encoder.output_shape[-1])
        hidden, out = options.hidden_dim, options.projection_dim
        projector = mlp_head(feature_dim, [hidden] * (options.projector_layers - 1), out,
                             last_batch_norm=True, name="projector")
        predictor = mlp_head(out, [hidden], out, last_batch_norm=options.predictor_last_batch_norm,
                             output_bias=False, name="predictor")
        if options.global_bn:
            use_global_batch_norm([encoder, projector, predictor])
        return {"projector": projector, "predictor": predictor}

    def setup(self):
        # The official builder copies every parameter of the base encoder (projector included) into the
        # momentum encoder at construction.
        self.momentum_encoder = ema.momentum_copy(self.encoder, "momentum_encoder")
        self.momentum_projector = ema.momentum_copy(self.projector, "momentum_projector")

    # --- views --------------------------------------------------------------------------------------
    def augment(self, images, labels, seed):
        view_1, view_2 = asymmetric_views(images, seed, self.options)
        return {"images": images, "view_1": view_1, "view_2": view_2, "labels": labels}

    # --- networks and loss ----------------------------------------------------------------------------
    def queries(self, view, training):
        """(features [N, D], queries [N, P]). One forward pass per view (BN statistics per view), as the
        official forward applies the base encoder to x1 and x2 separately."""
        features = self.encoder(view, training=training)
        return features, self.predictor(self.projector(features, training=training), training=training)

    def compute_keys(self, data, training) -> Tuple[tf.Tensor, tf.Tensor]:
        """The momentum keys (k1, k2) of both views, without gradient; one pass per view."""
        keys = []
        for name in ("view_1", "view_2"):
            features = self.momentum_encoder(data[name], training=training)
            keys.append(tf.stop_gradient(self.momentum_projector(features, training=training)))
        return tuple(keys)

    def compute_loss_and_logs(self, data, training, keys=None):
        if keys is None:
            keys = self.compute_keys(data, training)
        key_1, key_2 = keys
        features, query_1 = self.queries(data["view_1"], training)
        _, query_2 = self.queries(data["view_2"], training)
        temperature = self.options.temperature
        loss_12, logits_12, labels = moco_v3_loss(query_1, key_2, temperature)
        loss_21, logits_21, _ = moco_v3_loss(query_2, key_1, temperature)
        loss = loss_12 + loss_21
        logs = {"loss": loss,
                "contrastive_top1": (top1(logits_12, labels) + top1(logits_21, labels)) / 2.0}
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def train_step(self, data):
        # Keys first, outside the tape: the tape records nothing of the momentum branch.
        keys = self.compute_keys(data, training=True)
        with tf.GradientTape() as tape:
            loss, logs = self.compute_loss_and_logs(data, training=True, keys=keys)
        step = tf.convert_to_tensor(self.optimizer.iterations)  # k of the step being taken
        self.apply_gradients(tape, loss, self.trainable_variables)
        momentum = self.momentum_at(step + 1)
        self.momentum_update(momentum)
        logs["moco_momentum"] = momentum
        return self.update_metrics(logs)

    def momentum_at(self, step) -> tf.Tensor:
        """m at 0-based step k: 1 - (1 - base)(cos(pi k / K) + 1) / 2 (official `adjust_moco_momentum`,
        with k / K = the fractional epoch over the epochs), or base without a run length."""
        return ema.scheduled_momentum(self.options.base_momentum, step, self.total_steps,
                                      self.options.cosine_momentum)

    def momentum_pairs(self):
        """(momentum variable, online variable) for every trainable parameter of encoder and projector."""
        return ema.momentum_pairs((self.encoder, self.projector),
                                  (self.momentum_encoder, self.momentum_projector))

    def momentum_update(self, momentum) -> None:
        """theta_m <- m theta_m + (1 - m) theta (the official `_update_momentum_encoder`)."""
        ema.momentum_update(self.momentum_pairs(), momentum)

    # --- pictures -----------------------------------------------------------------------------------
    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """The two views of 8 images (view 2 carries the solarization), captioned with the cosine of view
        1's query and view 2's momentum key, the positive the loss pulls up against the batch's other keys."""
        count = min(8, int(data["view_1"].shape[0]))
        sample = {key: data[key][:count] for key in ("view_1", "view_2")}
        _, key_2 = self.compute_keys(sample, training=False)
        _, query_1 = self.queries(sample["view_1"], training=False)
        name = "moco_v3_views.png"
        save_view_pairs(Path(run_dir) / name, data, count, pair_cosines(query_1, key_2), "cos",
                        "MoCo v3: cosine of view 1's query and view 2's momentum key")
        return [name]
