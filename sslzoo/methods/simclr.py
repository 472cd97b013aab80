"""SimCLR: two augmented views of every image, pulled together against all other views of the batch."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment.views import two_views
from sslzoo.config import ConfigError
from sslzoo.heads import mlp_head
from sslzoo.losses import nt_xent
from sslzoo.methods.base import SSLMethod, check_options, top1
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method

DEFAULTS = {
    # CIFAR (paper B.9 and the official README's CIFAR recipe): tau 0.5, colour strength 0.5, no blur.
    "temperature": 0.5,
    # The paper's head g(h) = W2 ReLU(W1 h): hidden width = the encoder's feature width (2048 for a
    # ResNet-50; 0 means "the encoder's"), 128-d output.
    "projection_hidden": 0,
    "projection_dim": 128,
    "projection_batch_norm": True,  # BN after the hidden layer, as the official code's head
    "crop_scale": [0.08, 1.0],
    "color_strength": 0.5,
    "color_probability": 0.8,
    "grayscale_probability": 0.2,
    "blur_probability": 0.0,  # 0.5 for images of 96 px and more (ImageNet); off on CIFAR (B.9)
    "flip": True,
    # Global BN (paper 2.2): with more than one replica, BN statistics are all-reduced across replicas so
    # the two views of an image (always on the same replica) cannot leak through per-replica statistics.
    "global_bn": True,
}

AUGMENT_KEYS = (
    "crop_scale", "color_strength", "color_probability", "grayscale_probability", "blur_probability", "flip",
)


@keras.saving.register_keras_serializable(package="sslzoo")
class SimCLR(SSLMethod):
    """SimCLR: encoder f, projection head g, NT-Xent over the 2N views of a batch.

    Args:
        encoder: images float32 [N, S, S, 3] in [0, 1] -> features h [N, D] (what is evaluated/exported).
        projector: model h [N, D] -> projections z [N, P]; discarded after training (paper 2.1).
        temperature: tau of NT-Xent.
        augmentation: keyword arguments of `sslzoo.augment.views.simclr_view` (crop_scale,
            color_strength, color_probability, grayscale_probability, blur_probability, flip).
        num_classes: > 0 adds the online linear probe (on the first view's detached features).
    Under `tf.distribute`, negatives come from the global batch (`nt_xent` all-gathers), so training
    on R replicas is training on one device with the same global batch.
    Reference: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020.
    """

    log_names = ("contrastive_top1",)

    def __init__(
        self,
        encoder: keras.Model,
        projector: keras.Model,
        temperature: float = 0.5,
        augmentation: dict | None = None,
        num_classes: int = 0,
        **kwargs,
    ):
        super().__init__(encoder, num_classes=num_classes, **kwargs)
        self.projector = projector
        self.temperature = float(temperature)
        self.augmentation = dict(augmentation or {})
        if "crop_scale" in self.augmentation:
            self.augmentation["crop_scale"] = [float(v) for v in self.augmentation["crop_scale"]]
        self.built = True  # encoder and projector are built functional models

    def augment(self, images, labels, seed):
        view_1, view_2 = two_views(images, seed, **self.augmentation)
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
        loss, logits, labels = nt_xent(z_1, z_2, self.temperature)
        logs = {"loss": loss, "contrastive_top1": top1(logits, labels)}
        if self.probe is not None and "labels" in data:
            loss = loss + self.online_probe(features, data["labels"], logs)
        return loss, logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """The two views of 8 images with their projections' cosine similarity and whether each view's
        positive is its nearest other view in the batch ("found") or not ("missed")."""
        count = min(8, int(data["view_1"].shape[0]))
        _, z_1, z_2 = self.embed(data["view_1"], data["view_2"], training=False)
        z_1 = tf.math.l2_normalize(tf.cast(z_1, tf.float32), -1).numpy()
        z_2 = tf.math.l2_normalize(tf.cast(z_2, tf.float32), -1).numpy()
        _, logits, labels = nt_xent(z_1, z_2, self.temperature, cross_replica=False)
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

    def get_config(self):
        return {
            **super().get_config(),
            "projector": keras.saving.serialize_keras_object(self.projector),
            "temperature": self.temperature,
            "augmentation": self.augmentation,
        }

    @classmethod
    def nested_models(cls):
        return ("encoder", "projector")


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


def _check(options: dict) -> None:
    if not options["temperature"] > 0:
        raise ConfigError(f"method.options.temperature for simclr must be > 0, got {options['temperature']}")
    low_high = options["crop_scale"]
    if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1] <= 1:
        raise ConfigError(
            f"method.options.crop_scale for simclr: need [low, high] with 0 < low <= high <= 1 (paper: "
            f"[0.08, 1.0]), got {low_high}"
        )
    for key in ("color_probability", "grayscale_probability", "blur_probability"):
        if not 0 <= options[key] <= 1:
            raise ConfigError(f"method.options.{key} for simclr must be in [0, 1], got {options[key]}")
    if options["color_strength"] < 0:
        raise ConfigError(f"method.options.color_strength for simclr must be >= 0, got {options['color_strength']}")
    if options["projection_dim"] < 1 or options["projection_hidden"] < 0:
        raise ConfigError(
            "method.options.projection_dim must be >= 1 and projection_hidden >= 0 (0 = the encoder's "
            f"feature width), got {options['projection_dim']} and {options['projection_hidden']}"
        )


@register_method("simclr")
def build_simclr(options: dict, encoder: keras.Model, num_classes: int = 0, make_encoder=None) -> SimCLR:
    """Builds SimCLR from `method.options` (see DEFAULTS)."""
    options = check_options("simclr", options, DEFAULTS)
    _check(options)
    feature_dim = int(encoder.output_shape[-1])
    hidden = int(options["projection_hidden"]) or feature_dim
    projector = mlp_head(
        feature_dim, [hidden], int(options["projection_dim"]),
        batch_norm=bool(options["projection_batch_norm"]), name="projector",
    )
    if options["global_bn"]:
        use_global_batch_norm([encoder, projector])
    augmentation = {key: options[key] for key in AUGMENT_KEYS}
    augmentation["crop_scale"] = [float(v) for v in augmentation["crop_scale"]]
    for key in ("color_strength", "color_probability", "grayscale_probability", "blur_probability"):
        augmentation[key] = float(augmentation[key])
    augmentation["flip"] = bool(augmentation["flip"])
    return SimCLR(
        encoder,
        projector,
        temperature=float(options["temperature"]),
        augmentation=augmentation,
        num_classes=num_classes,
        name="simclr",
    )
