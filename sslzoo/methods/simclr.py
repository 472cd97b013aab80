"""SimCLR: two augmented views of every image, pulled together against all other views of the batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Sequence

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment.views import ViewOptions, two_views
from sslzoo.config import option
from sslzoo.heads import mlp_head
from sslzoo.losses import nt_xent
from sslzoo.methods.base import SSLMethod, top1
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class SimCLROptions(ViewOptions):
    """SimCLR's hyperparameters; the view augmentation (crop_scale ... flip) comes from `ViewOptions`."""

    # CIFAR (paper B.9 and the official README's CIFAR recipe): tau 0.5, colour strength 0.5, no blur.
    temperature: float = option(0.5, "tau of NT-Xent", gt=0.0)
    # The paper's head g(h) = W2 ReLU(W1 h): hidden width = the encoder's feature width (2048 for a
    # ResNet-50; 0 means "the encoder's"), 128-d output.
    projection_hidden: int = option(0, "hidden width of the projection head (0 = the encoder's feature width)", ge=0)
    projection_dim: int = option(128, "output width of the projection head", ge=1)
    projection_batch_norm: bool = option(True, "BN after the hidden layer, as the official code's head")
    # Global BN (paper 2.2): with more than one replica, BN statistics are all-reduced across replicas so
    # the two views of an image (always on the same replica) cannot leak through per-replica statistics.
    global_bn: bool = option(True, "all-reduce BN statistics across replicas")


@register_method("simclr")
@keras.saving.register_keras_serializable(package="sslzoo")
class SimCLR(SSLMethod):
    """SimCLR: encoder f, projection head g, NT-Xent over the 2N views of a batch.

    Args (besides the base class'):
        projector: part h [N, D] -> projections z [N, P]; discarded after training (paper 2.1).
    The online probe reads the first view's detached features. Under `tf.distribute`, negatives come
    from the global batch (`nt_xent` all-gathers), so training on R replicas is training on one device
    with the same global batch.
    Reference: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020.
    """

    Options = SimCLROptions
    parts = ("projector",)
    log_names = ("contrastive_top1",)

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        feature_dim = int(encoder.output_shape[-1])
        projector = mlp_head(
            feature_dim, [options.projection_hidden or feature_dim], options.projection_dim,
            batch_norm=options.projection_batch_norm, name="projector",
        )
        if options.global_bn:
            # Flags the encoder's and the projector's BN layers (saved in their configs, so a loaded
            # method keeps them).
            use_global_batch_norm([encoder, projector])
        return {"projector": projector}

    def augment(self, images, labels, seed):
        view_1, view_2 = two_views(images, seed, **self.options.as_kwargs())
        # "images" (unaugmented) is what callers look at; the loss only uses the views.
        return {"images": images, "view_1": view_1, "view_2": view_2, "labels": labels}

    def embed(self, view_1, view_2, training):
        """(features of view 1 [n, D], projections z_1 [n, P], z_2 [n, P]) from one encoder pass.

        Both views go through the encoder as one batch, so on one replica BN normalizes them with shared
        statistics, like the paper's global BN over all 2N views.
        """
        n = tf.shape(view_1)[0]
        features = self.encoder(tf.concat([view_1, view_2], axis=0), training=training)
        projections = self.projector(features, training=training)
        return features[:n], projections[:n], projections[n:]

    def compute_loss_and_logs(self, data, training):
        features, z_1, z_2 = self.embed(data["view_1"], data["view_2"], training)
        loss, logits, labels = nt_xent(z_1, z_2, self.options.temperature)
        logs = {"loss": loss, "contrastive_top1": top1(logits, labels)}
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """The two views of 8 images with their projections' cosine similarity and whether each view's
        positive is its nearest other view in the batch ("found") or not ("missed")."""
        count = min(8, int(data["view_1"].shape[0]))
        _, z_1, z_2 = self.embed(data["view_1"], data["view_2"], training=False)
        z_1 = tf.math.l2_normalize(tf.cast(z_1, tf.float32), -1).numpy()
        z_2 = tf.math.l2_normalize(tf.cast(z_2, tf.float32), -1).numpy()
        _, logits, labels = nt_xent(z_1, z_2, self.options.temperature, cross_replica=False)
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


def use_global_batch_norm(models: Sequence[keras.Model]) -> None:
    """Makes every BatchNormalization in `models` all-reduce its batch statistics across replicas.

    Only under a strategy with more than one replica (on one device, local statistics already are the
    global batch's). `synchronized` is read at call time, so flipping it on built layers is enough; the
    flag is saved in the layer config and has no effect in inference (moving statistics).
    """
    if tf.distribute.get_strategy().num_replicas_in_sync <= 1:
        return
    for layer in _all_layers(models):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _all_layers(models):
    for model in models:
        for layer in model.layers:
            yield layer
            if hasattr(layer, "layers"):  # a nested model or block
                yield from _all_layers([layer])
