"""VICReg: two views' embeddings kept close (invariance), spread (variance) and decorrelated (covariance)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List

import keras

from sslzoo.augment.views import AsymmetricViewOptions, asymmetric_views
from sslzoo.config import option
from sslzoo.heads import mlp_head
from sslzoo.losses import vicreg_loss
from sslzoo.methods.base import SSLMethod
from sslzoo.pictures import pair_cosines, save_view_pairs
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class VICRegOptions(AsymmetricViewOptions):
    """VICReg's hyperparameters; its views are BYOL's (the official augmentations.py: blur 1.0 / 0.1,
    solarization 0.0 / 0.2), from `AsymmetricViewOptions`."""

    # The paper: a 3-layer expander of 8192 (Linear-BN-ReLU twice, then Linear).
    expander_layers: int = option(3, "fc layers of the expander (the paper: 3)", ge=1)
    expander_dim: int = option(8192, "width of every expander layer (the paper: 8192)", ge=2)
    sim_coeff: float = option(25.0, "lambda, weight of the invariance term (the paper: 25)",
                             search=(10.0, 25.0, 50.0), ge=0.0)
    std_coeff: float = option(25.0, "mu, weight of the variance term (the paper: 25)", ge=0.0)
    cov_coeff: float = option(1.0, "nu, weight of the covariance term (the paper: 1)", ge=0.0)


@register_method("vicreg")
@keras.saving.register_keras_serializable(package="sslzoo")
class VICReg(SSLMethod):
    """VICReg: lambda s(Z, Z') + mu [v(Z) + v(Z')] / 2 + nu [c(Z) + c(Z')] on the expander outputs.

    Args (besides the base class'):
        expander: part features [N, D] -> z [N, P]; Dense-BN-ReLU per hidden layer, then a Dense.
    Every term is over the global batch under `tf.distribute` (`vicreg_loss` gathers across replicas);
    the three unweighted terms are logged. The online probe reads view 1's detached features.
    Reference: Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", ICLR 2022.
    """

    Options = VICRegOptions
    parts = ("expander",)
    log_names = ("invariance", "variance", "covariance")

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        width = options.expander_dim
        expander = mlp_head(int(encoder.output_shape[-1]), [width] * (options.expander_layers - 1), width,
                            name="expander")
        return {"expander": expander}

    def augment(self, images, labels, seed):
        view_1, view_2 = asymmetric_views(images, seed, self.options)
        return {"images": images, "view_1": view_1, "view_2": view_2, "labels": labels}

    def embed(self, view, training):
        """(features [N, D], embeddings z [N, P]) of one view."""
        features = self.encoder(view, training=training)
        return features, self.expander(features, training=training)

    def compute_loss_and_logs(self, data, training):
        features, z_1 = self.embed(data["view_1"], training)
        _, z_2 = self.embed(data["view_2"], training)
        options = self.options
        loss, terms = vicreg_loss(z_1, z_2, options.sim_coeff, options.std_coeff, options.cov_coeff)
        logs = {"loss": loss, **terms}
        return self.add_probe_loss(loss, features, data, logs), logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """The two views of 8 images, captioned with the cosine of their embeddings."""
        count = min(8, int(data["view_1"].shape[0]))
        _, z_1 = self.embed(data["view_1"][:count], training=False)
        _, z_2 = self.embed(data["view_2"][:count], training=False)
        name = "vicreg_views.png"
        save_view_pairs(Path(run_dir) / name, data, count, pair_cosines(z_1, z_2), "cos",
                        "VICReg: cosine of the two views' embeddings")
        return [name]
