"""Relative patch location: predict where a neighbouring patch sits relative to a centre patch (8-way)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import split_seed
from sslzoo.augment.patches import (
    NEIGHBOUR_INDICES,
    check_geometry,
    color_drop,
    normalize_patches,
    random_pixelation,
    sample_patch_grid,
    sample_patch_pairs,
    to_encoder_input,
)
from sslzoo.backbones import at_input_size, input_normalization
from sslzoo.config import ConfigError
from sslzoo.heads import mlp_head
from sslzoo.methods.base import SSLMethod, check_options, top1
from sslzoo.pictures import mosaic, save_image_grid
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
    # "all": every image gives all 8 (centre, neighbour) pairs of its grid (the D-code's "all valid pairs
    # drawn from each sampled grid"); "one": one random neighbour per image (the paper's description).
    "pairs": "all",
    # Late-fusion head: concat(f(centre), f(neighbour)) -> head_depth x (Dense-BN-ReLU) -> 8 logits.
    "head_width": 512,
    "head_depth": 2,
}


def encoder_input_stats(encoder: keras.Model) -> tuple[list, list]:
    """Per-channel (mean, std) of the encoder's input Normalization layer; (0.5, 0.25) if it has none."""
    stats = input_normalization(encoder)
    mean, std = stats if stats else (np.full(3, 0.5), np.full(3, 0.25))
    return [float(m) for m in mean], [float(s) for s in std]


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
        pairs: "all" trains on the 8 (centre, neighbour) pairs of each image's grid, "one" on one pair.
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
        pairs: str = "one",
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
        self.pairs = pairs
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
        sample_seed, transform_seed = split_seed(seed, 2)
        source = images
        if self.resize_to and self.resize_to != images.shape[1]:
            source = tf.image.resize(images, [self.resize_to, self.resize_to], method="bilinear")
        if self.pairs == "all":
            grid = sample_patch_grid(source, self.patch_size, self.gap, self.jitter, sample_seed)["patches"]
            patches = tf.gather(grid, [4, *NEIGHBOUR_INDICES], axis=1)  # centre first
            pretext_labels = tf.tile(tf.range(8, dtype=tf.int32)[tf.newaxis], [tf.shape(images)[0], 1])
        else:
            pairs = sample_patch_pairs(source, self.patch_size, self.gap, self.jitter, sample_seed)
            patches = tf.stack([pairs["centre"], pairs["neighbour"]], axis=1)
            pretext_labels = pairs["labels"][:, tf.newaxis]
        # Every patch gets its own countermeasures (colour, pixelation, normalisation).
        shape = tf.shape(patches)
        flat = tf.reshape(patches, [-1, self.patch_size, self.patch_size, 3])
        patches = tf.reshape(self._patch_transform(flat, transform_seed), shape)
        return {
            "centre": patches[:, 0],
            "neighbours": patches[:, 1:],  # [B, M, p, p, 3]; M = 8 ("all") or 1 ("one")
            "pretext_labels": pretext_labels,  # [B, M] position of each neighbour, 0..7
            "images": images,  # unaugmented full images, for the online probe
            "labels": labels,
        }

    def position_logits(self, data, training):
        """Logits [B * M, 8] for every (centre, neighbour) pair, in the order of `pretext_labels`."""
        centre, neighbours = data["centre"], data["neighbours"]
        batch, count = tf.shape(neighbours)[0], tf.shape(neighbours)[1]
        size = self.patch_size
        # One pass over all patches of the batch: batch norm sees centres and neighbours together.
        flat = tf.concat([centre, tf.reshape(neighbours, [-1, size, size, 3])], axis=0)
        features = self.patch_encoder(flat, training=training)
        centre_features = tf.repeat(features[:batch], count, axis=0)  # [B * M, D], pair order
        fused = tf.concat([centre_features, features[batch:]], axis=-1)  # late fusion
        return tf.cast(self.head(fused, training=training), tf.float32)

    def compute_loss_and_logs(self, data, training):
        pretext_labels = tf.reshape(data["pretext_labels"], [-1])
        logits = self.position_logits(data, training)
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

    def save_pictures(self, data, run_dir):
        """relpatch.png: per image, one pair as the network sees it (after the countermeasures) laid out
        on the 3x3 grid at the neighbour's true position, with the true and predicted positions."""
        count = min(8, int(data["centre"].shape[0]))
        pairs = {"centre": data["centre"][:count], "neighbours": data["neighbours"][:count, :1]}
        predicted = np.argmax(np.asarray(self.position_logits(pairs, training=False)), axis=-1)
        truth = np.asarray(data["pretext_labels"][:count, 0])
        layouts, captions = [], []
        for i in range(count):
            cells = [None] * 9
            cells[4] = np.asarray(pairs["centre"][i])
            cells[NEIGHBOUR_INDICES[truth[i]]] = np.asarray(pairs["neighbours"][i, 0])
            layouts.append(mosaic(cells))
            mark = "ok" if predicted[i] == truth[i] else "wrong"
            captions.append(f"true {truth[i]} / pred {predicted[i]} ({mark})")
        rows = [("image", np.asarray(data["images"][:count])), ("pair", layouts)]
        return [save_image_grid(Path(run_dir) / "relpatch.png", rows, captions=[[], captions],
                                title="Relative patch location (positions 0-7 in reading order)")]

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
            "pairs": self.pairs,
        }

    @classmethod
    def nested_models(cls):
        return ("encoder", "head")


@register_method("relpatch")
def build_relpatch(options: dict, encoder: keras.Model, num_classes: int = 0, make_encoder=None) -> RelPatch:
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
    if options["pairs"] not in ("all", "one"):
        raise ConfigError(f"method.options.pairs {options['pairs']!r} for relpatch: use 'all' or 'one'")
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
        pairs=options["pairs"],
        num_classes=num_classes,
        name="relpatch",
    )
