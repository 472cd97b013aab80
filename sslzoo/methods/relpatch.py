"""Relative patch location: predict where a neighbouring patch sits relative to a centre patch (8-way)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import split_seed
from sslzoo.augment.patches import (
    check_geometry,
    color_drop,
    normalize_patches,
    random_pixelation,
    sample_patch_pairs,
    to_encoder_input,
)
from sslzoo.backbones import at_input_size
from sslzoo.config import ConfigError
from sslzoo.heads import mlp_head
from sslzoo.methods.base import SSLMethod, check_options, top1
from sslzoo.registry import register_method

DEFAULTS = {
    # Geometry in pixels of the (resized) image. Defaults are the paper's for large images (D-code: 96 px
    # patches, gap 48, jitter +-7, images of 150k-450k pixels). CIFAR (card): resize_to 64 with 16/4/2,
    # or native 32 with 8/2/1 (the card's 9/2/1 needs 3*9 + 2*2 + 2*1 = 33 px with the jitter margin).
    "patch_size": 96,
    "gap": 48,
    "jitter": 7,
    # > 0: resize every image to resize_to x resize_to (bilinear) before cutting patches; 0: native size.
    "resize_to": 0,
    # Countermeasures to the three shortcuts (card, "Pitfalls").
    "color_drop": True,  # one random channel kept (mean-subtracted), the other two uniform noise
    # Noise amplitude in [0, 1] pixel units: the D-code's +-0.5 on 0..255 pixels (the paper's is UNVERIFIED).
    "color_noise": 0.5 / 255.0,
    "per_patch_norm": True,  # zero mean / unit std per patch
    "pixelation": True,  # a third of the patches downsampled and upsampled back
    # Late-fusion head: concat(f(centre), f(neighbour)) -> head_depth x (Dense-BN-ReLU) -> 8 logits.
    "head_width": 512,
    "head_depth": 2,
}


def encoder_input_stats(encoder: keras.Model) -> tuple[list, list]:
    """Per-channel (mean, std) of the encoder's input Normalization layer; (0.5, 0.25) if it has none."""
    try:
        config = encoder.get_layer("normalization").get_config()
        mean = np.broadcast_to(np.asarray(config["mean"], "float32").reshape(-1), (3,))
        std = np.sqrt(np.broadcast_to(np.asarray(config["variance"], "float32").reshape(-1), (3,)))
        return [float(m) for m in mean], [float(s) for s in std]
    except (ValueError, KeyError, TypeError):
        return [0.5] * 3, [0.25] * 3


@keras.saving.register_keras_serializable(package="sslzoo")
class RelPatch(SSLMethod):
    """Relative patch location: a centre patch and one of its 8 neighbours, classified 8-way.

    Args:
        encoder: images float32 [N, S, S, 3] in [0, 1] -> features [N, D] (the evaluated/exported encoder).
        head: model mapping concatenated pair features [N, 2D] to 8 logits.
        patch_size, gap, jitter: grid geometry in pixels of the (resized) image.
        resize_to: > 0 resizes images to resize_to x resize_to before sampling; 0 keeps them.
        color_drop, color_noise: one channel kept per patch, the others uniform noise in +-color_noise.
        per_patch_norm: each patch to zero mean / unit std, then mapped by the fixed affine
            `mean + std * z` into the encoder's input units, so the encoder's Normalization layer hands
            the convolutions exactly z (full images keep the dataset normalisation).
        pixelation: a third of the patches downsampled and upsampled back.
        num_classes: > 0 adds the online linear probe, on full unaugmented images through `encoder`.
    Reference: Doersch, Gupta, Efros, "Unsupervised Visual Representation Learning by Context
    Prediction", ICCV 2015.
    """

    log_names = ("position_top1",)

    def __init__(
        self,
        encoder: keras.Model,
        head: keras.Model,
        patch_size: int = 96,
        gap: int = 48,
        jitter: int = 7,
        resize_to: int = 0,
        color_drop: bool = True,
        color_noise: float = 0.5 / 255.0,
        per_patch_norm: bool = True,
        pixelation: bool = True,
        num_classes: int = 0,
        **kwargs,
    ):
        super().__init__(encoder, num_classes=num_classes, **kwargs)
        self.head = head
        self.patch_size = int(patch_size)
        self.gap = int(gap)
        self.jitter = int(jitter)
        self.resize_to = int(resize_to)
        self.color_drop = bool(color_drop)
        self.color_noise = float(color_noise)
        self.per_patch_norm = bool(per_patch_norm)
        self.pixelation = bool(pixelation)
        self.input_mean, self.input_std = encoder_input_stats(encoder)
        # The same encoder (shared layers and weights) on patches.
        self.patch_encoder = at_input_size(encoder, self.patch_size, name="patch_encoder")
        self.built = True  # every part above is a built functional model

    def _patch_transform(self, patches, seed):
        pixel_seed, color_seed = split_seed(seed, 2)
        if self.pixelation:
            patches = random_pixelation(patches, pixel_seed)
        if self.color_drop:
            patches = color_drop(patches, color_seed, self.color_noise)
        if self.per_patch_norm:
            return to_encoder_input(normalize_patches(patches), self.input_mean, self.input_std)
        if self.color_drop:
            # Colour-dropped patches are zero-centred: shift them to the encoder's input mean.
            patches = patches + tf.constant(self.input_mean, tf.float32)
        return patches

    def augment(self, images, labels, seed):
        pair_seed, centre_seed, neighbour_seed = split_seed(seed, 3)
        source = images
        if self.resize_to and self.resize_to != images.shape[1]:
            source = tf.image.resize(images, [self.resize_to, self.resize_to], method="bilinear")
        pairs = sample_patch_pairs(source, self.patch_size, self.gap, self.jitter, pair_seed)
        return {
            "centre": self._patch_transform(pairs["centre"], centre_seed),
            "neighbour": self._patch_transform(pairs["neighbour"], neighbour_seed),
            "pretext_labels": pairs["labels"],
            "images": images,  # unaugmented full images, for the online probe
            "labels": labels,
        }

    def compute_loss_and_logs(self, data, training):
        centre, neighbour, pretext_labels = data["centre"], data["neighbour"], data["pretext_labels"]
        batch = tf.shape(centre)[0]
        # One pass over both patches: batch norm sees centre and neighbour patches together.
        features = self.patch_encoder(tf.concat([centre, neighbour], axis=0), training=training)
        fused = tf.concat([features[:batch], features[batch:]], axis=-1)  # late fusion
        logits = tf.cast(self.head(fused, training=training), tf.float32)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(pretext_labels, logits, from_logits=True)
        )
        logs = {"loss": loss, "position_top1": top1(logits, pretext_labels)}
        if self.probe is not None and "labels" in data and "images" in data:
            # Full images through the evaluated encoder in inference mode, as kNN/linear evaluation sees it;
            # the probe's loss is detached from the encoder anyway.
            full = self.encoder(data["images"], training=False)
            loss = loss + self.online_probe(full, data["labels"], logs)
        return loss, logs

    def get_config(self):
        return {
            **super().get_config(),
            "head": keras.saving.serialize_keras_object(self.head),
            "patch_size": self.patch_size,
            "gap": self.gap,
            "jitter": self.jitter,
            "resize_to": self.resize_to,
            "color_drop": self.color_drop,
            "color_noise": self.color_noise,
            "per_patch_norm": self.per_patch_norm,
            "pixelation": self.pixelation,
        }

    @classmethod
    def nested_models(cls):
        return ("encoder", "head")


@register_method("relpatch")
def build_relpatch(options: dict, encoder: keras.Model, num_classes: int = 0) -> RelPatch:
    """Builds RelPatch from `method.options` (see DEFAULTS); bad geometry fails with the numbers and a fix."""
    options = check_options("relpatch", options, DEFAULTS)
    image_size = int(encoder.input_shape[1])
    resize_to = int(options["resize_to"])
    if resize_to < 0:
        raise ConfigError(f"method.options.resize_to {resize_to} for relpatch: use 0 (native size) or > 0")
    patch, gap, jitter = int(options["patch_size"]), int(options["gap"]), int(options["jitter"])
    check_geometry(resize_to or image_size, patch, gap, jitter, what="method.options for relpatch")
    if options["head_depth"] < 0 or options["head_width"] < 1:
        raise ConfigError("method.options for relpatch: head_depth must be >= 0 and head_width >= 1")
    if options["color_noise"] < 0:
        raise ConfigError(f"method.options.color_noise {options['color_noise']} for relpatch: must be >= 0")
    feature_dim = int(encoder.output_shape[-1])
    head = mlp_head(
        2 * feature_dim, [int(options["head_width"])] * int(options["head_depth"]), 8, name="position_head"
    )
    return RelPatch(
        encoder,
        head,
        patch_size=patch,
        gap=gap,
        jitter=jitter,
        resize_to=resize_to,
        color_drop=bool(options["color_drop"]),
        color_noise=float(options["color_noise"]),
        per_patch_norm=bool(options["per_patch_norm"]),
        pixelation=bool(options["pixelation"]),
        num_classes=num_classes,
        name="relpatch",
    )
