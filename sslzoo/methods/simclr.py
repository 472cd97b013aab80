"""SimCLR: two augmented views of every image, pulled together against all other views of the batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Literal

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment.views import ViewOptions, two_views
from sslzoo.config import option
from sslzoo.heads import projection_head
from sslzoo.layers.batch_norm import use_global_batch_norm
from sslzoo.losses import nt_xent
from sslzoo.methods.base import SSLMethod, top1
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class SimCLROptions(ViewOptions):
    """SimCLR's hyperparameters; the view augmentation (crop_scale ... flip) comes from `ViewOptions`."""

    # CIFAR (paper B.9 and the official README's CIFAR recipe): tau 0.5, colour strength 0.5, no blur.
    temperature: float = option(0.5, "tau of NT-Xent", search=(0.1, 0.2, 0.5), gt=0.0)
    # The paper's head g(h) = W2 ReLU(W1 h): hidden width = the encoder's feature width (2048 for a
    # ResNet-50; 0 means "the encoder's"), 128-d output. Fig. 8 compares it with a linear head and none.
    projection: Literal["none", "linear", "nonlinear"] = option(
        "nonlinear", "projection head g: none (z = h), linear (one Dense), nonlinear (MLP; paper Fig. 8)")
    projection_hidden: int = option(0, "hidden width of the projection head (0 = the encoder's feature width)", ge=0)
    projection_depth: int = option(1, "hidden layers of the nonlinear head (paper: 1; SimCLR v2: 2-3)", ge=1)
    projection_dim: int = option(128, "output width of the linear and nonlinear heads", ge=1)
    projection_batch_norm: bool = option(True, "BN after the hidden layers, as the official code's head")
    # Sec. 4.2: h is the better representation; z = g(h) is the other arm. With z, the evaluated and
    # exported encoder is g(f(x)), so the trainer's kNN and linear probes (and the online probe) read z.
    probe_features: Literal["h", "z"] = option(
        "h", "the evaluated representation: h (encoder output) or z (projection; the encoder becomes g(f(x)))")
    normalize: bool = option(True, "L2-normalise z in NT-Xent (cosine similarity); false: dot products (Table 5)")
    # Global BN (paper 2.2): with more than one replica, BN statistics are all-reduced across replicas so
    # the two views of an image (always on the same replica) cannot leak through per-replica statistics.
    global_bn: bool = option(True, "all-reduce BN statistics across replicas")


@register_method("simclr")
@keras.saving.register_keras_serializable(package="sslzoo")
class SimCLR(SSLMethod):
    """SimCLR: encoder f, projection head g, NT-Xent over the 2N views of a batch.

    Args (besides the base class'):
        encoder: f, images -> h [N, D]; with `probe_features: z`, `projected_encoder(f, g)`, images -> z
            (built by `build_parts`), what the trainer evaluates, saves and exports.
        projector: part g, h [N, D] -> projections z [N, P] (`projection: none`: z = h); discarded after
            training (paper 2.1). None with `probe_features: z`, where g is inside the encoder.
    The online probe reads the first view's detached encoder output (h, or z). Under `tf.distribute`,
    negatives come from the global batch (`nt_xent` all-gathers), so training on R replicas is training on
    one device with the same global batch.
    Reference: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020.
    """

    Options = SimCLROptions
    parts = ("projector",)
    log_names = ("contrastive_top1",)

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        projector = projection_head(
            int(encoder.output_shape[-1]), options.projection, options.projection_dim,
            hidden_dim=options.projection_hidden, depth=options.projection_depth,
            batch_norm=options.projection_batch_norm, name="projector",
        )
        if options.global_bn:
            # Flags the encoder's and the projector's BN layers (saved in their configs, so a loaded
            # method keeps them).
            use_global_batch_norm([encoder, projector])
        if options.probe_features == "z":
            # g goes inside the evaluated encoder and is no part of its own: a part would be saved, and
            # loaded, as a second copy of the same layers.
            return {"encoder": projected_encoder(encoder, projector), "projector": None}
        return {"projector": projector}

    def augment(self, images, labels, seed):
        view_1, view_2 = two_views(images, seed, **self.options.as_kwargs())
        # "images" (unaugmented) is what callers look at; the loss only uses the views.
        return {"images": images, "view_1": view_1, "view_2": view_2, "labels": labels}

    def embed(self, view_1, view_2, training):
        """(the encoder's output for view 1 [n, D], projections z_1 [n, P], z_2 [n, P]) from one encoder
        pass.

        Both views go through the encoder as one batch, so on one replica BN normalizes them with shared
        statistics, like the paper's global BN over all 2N views.
        """
        n = tf.shape(view_1)[0]
        features = self.encoder(tf.concat([view_1, view_2], axis=0), training=training)
        # With probe_features z the encoder's output already is z.
        projections = features if self.projector is None else self.projector(features, training=training)
        return features[:n], projections[:n], projections[n:]

    def compute_loss_and_logs(self, data, training):
        features, z_1, z_2 = self.embed(data["view_1"], data["view_2"], training)
        loss, logits, labels = nt_xent(z_1, z_2, self.options.temperature, normalize=self.options.normalize)
        logs = {"loss": loss, "contrastive_top1": top1(logits, labels)}
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """The two views of 8 images with their projections' cosine similarity and whether each view's
        positive is its nearest other view in the batch ("found") or not ("missed")."""
        count = min(8, int(data["view_1"].shape[0]))
        _, z_1, z_2 = self.embed(data["view_1"], data["view_2"], training=False)
        _, logits, labels = nt_xent(z_1, z_2, self.options.temperature, cross_replica=False,
                                    normalize=self.options.normalize)
        z_1 = tf.math.l2_normalize(tf.cast(z_1, tf.float32), -1).numpy()
        z_2 = tf.math.l2_normalize(tf.cast(z_2, tf.float32), -1).numpy()
        found = np.argmax(logits.numpy(), axis=-1) == labels.numpy()
        n = len(z_1)
        similarity = np.sum(z_1 * z_2, axis=-1)
        verdict = np.where(found, "found", "missed")
        rows = [
            ("image", np.asarray(data["images"][:count])),
            ("view 1", np.asarray(data["view_1"][:count])),
            ("view 2", np.asarray(data["view_2"][:count])),
        ]
        captions = [
            [f"pair cos {similarity[i]:.2f}" for i in range(count)],
            [f"v1 {verdict[i]}" for i in range(count)],
            [f"v2 {verdict[n + i]}" for i in range(count)],
        ]
        name = "simclr_views.png"
        save_image_grid(
            Path(run_dir) / name, rows, captions=captions,
            title=f"SimCLR view pairs: cosine of their projections; is each view's positive its nearest "
                  f"of {2 * n - 1} candidates",
        )
        return [name]


def projected_encoder(encoder: keras.Model, projector: keras.Model) -> keras.Model:
    """images [N, S, S, 3] in [0, 1] -> f -> g -> z [N, P]: the evaluated encoder of `probe_features: z`.

    f and g are nested as they are (their weights, not copies), so training through it trains both.
    """
    inputs = keras.Input(encoder.input_shape[1:], dtype="float32", name="images")
    return keras.Model(inputs, projector(encoder(inputs)), name=f"{encoder.name}_z")
