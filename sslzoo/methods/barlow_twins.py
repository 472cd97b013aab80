"""Barlow Twins: make the cross-correlation of two views' embeddings the identity matrix."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List

import keras

from sslzoo.augment.views import AsymmetricViewOptions, asymmetric_views
from sslzoo.config import option
from sslzoo.heads import mlp_head
from sslzoo.losses import barlow_twins_loss
from sslzoo.methods.base import SSLMethod
from sslzoo.pictures import pair_cosines, save_view_pairs
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class BarlowTwinsOptions(AsymmetricViewOptions):
    """Barlow Twins' hyperparameters; its views are BYOL's (the paper, section 4: blur 1.0 / 0.1,
    solarization 0.0 / 0.2), from `AsymmetricViewOptions`."""

    # The paper: 3 layers of 8192 (Linear-BN-ReLU twice, then Linear); performance keeps rising with the
    # width (Figure 4), the cost is D^2 per layer.
    projector_layers: int = option(3, "fc layers of the projector (the paper: 3)", ge=1)
    projector_dim: int = option(8192, "width of every projector layer, D of the cross-correlation "
                                      "(the paper: 8192)", ge=2)
    lambd: float = option(0.0051, "lambda, weight of the off-diagonal (redundancy-reduction) term "
                                  "(the paper: 0.0051)", search=(0.0051, 0.02), ge=0.0)


@register_method("barlow_twins")
@keras.saving.register_keras_serializable(package="sslzoo")
class BarlowTwins(SSLMethod):
    """Barlow Twins: sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2, C the cross-correlation of the two
    views' projections, each standardised over the batch (Eq. 1-2, Algorithm 1).

    Args (besides the base class'):
        projector: part features [N, D] -> z [N, P]; Dense-BN-ReLU per hidden layer, then a Dense.
    Under `tf.distribute` the standardisation and C are the global batch's (`barlow_twins_loss` gathers
    across replicas), as the official code's all_reduce of C. The online probe reads view 1's detached
    features.
    Reference: Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", ICML 2021.
    """

    Options = BarlowTwinsOptions
    parts = ("projector",)

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        width = options.projector_dim
        projector = mlp_head(int(encoder.output_shape[-1]), [width] * (options.projector_layers - 1), width,
                             name="projector")
        return {"projector": projector}

    def augment(self, images, labels, seed):
        view_1, view_2 = asymmetric_views(images, seed, self.options)
        return {"images": images, "view_1": view_1, "view_2": view_2, "labels": labels}

    def embed(self, view, training):
        """(features [N, D], projections z [N, P]) of one view."""
        features = self.encoder(view, training=training)
        return features, self.projector(features, training=training)

    def compute_loss_and_logs(self, data, training):
        features, z_1 = self.embed(data["view_1"], training)
        _, z_2 = self.embed(data["view_2"], training)
        loss = barlow_twins_loss(z_1, z_2, self.options.lambd)
        logs = {"loss": loss}
        return self.add_probe_loss(loss, features, data, logs), logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """The two views of 8 images, captioned with the cosine of their projections."""
        count = min(8, int(data["view_1"].shape[0]))
        _, z_1 = self.embed(data["view_1"][:count], training=False)
        _, z_2 = self.embed(data["view_2"][:count], training=False)
        name = "barlow_twins_views.png"
        save_view_pairs(Path(run_dir) / name, data, count, pair_cosines(z_1, z_2), "cos",
                        "Barlow Twins: cosine of the two views' projections")
        return [name]

