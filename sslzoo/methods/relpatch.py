"""Relative patch location: predict where a neighbouring patch sits relative to a centre patch (8-way)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

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
from sslzoo.config import option
from sslzoo.heads import mlp_head
from sslzoo.methods.base import SSLMethod, scaled_pixels, top1
from sslzoo.pictures import mosaic, save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class RelPatchOptions:
    # Geometry in pixels of the (resized) image. Defaults: the card's native CIFAR geometry 8/2/1 at 32 px
    # (its 9/2/1 needs 3*9 + 2*2 + 2*1 = 33 px with the jitter margin), scaled with the image the patches are
    # cut from; at 224 px that is 56/14/7. The paper's (D-code: 96 px patches, gap 48, jitter +-7, images
    # of 150k-450k pixels) need 398 px and are set explicitly. CIFAR zoo config: resize_to 64 with 13/8/4.
    patch_size: int | None = option(None, "side of every patch (None: 8 x S / 32, S = resize_to or the image "
                                          "size)", ge=1)
    gap: int | None = option(None, "pixels between neighbouring patches of the 3x3 grid, >= 2 * jitter "
                                   "(None: 2 x S / 32, at least 2 * jitter)", ge=0)
    jitter: int | None = option(None, "random shift of each patch from its cell, up to +-jitter pixels "
                                      "(None: 1 x S / 32, at most gap / 2)", ge=0)
    resize_to: int = option(0, "> 0: resize every image to resize_to x resize_to (bilinear) before cutting "
                               "patches; 0: native size", ge=0)
    # Countermeasures to the three shortcuts (card, "Pitfalls").
    color_drop: bool = option(True, "one random channel kept (mean-subtracted), the other two uniform noise")
    # Noise amplitude in [0, 1] pixel units: the D-code's +-0.5 on 0..255 pixels (the paper's is UNVERIFIED).
    color_noise: float = option(0.5 / 255.0, "amplitude of the colour-drop noise, +-color_noise", ge=0.0)
    per_patch_norm: bool = option(True, "zero mean / unit std per patch")
    pixelation: bool = option(True, "a third of the patches downsampled and upsampled back")
    # "all": every image gives all 8 (centre, neighbour) pairs of its grid (the D-code's "all valid pairs
    # drawn from each sampled grid"); "one": one random neighbour per image (the paper's description).
    pairs: Literal["all", "one"] = option("all", "which (centre, neighbour) pairs each image gives")
    # Late-fusion head: concat(f(centre), f(neighbour)) -> head_depth x (Dense-BN-ReLU) -> 8 logits.
    head_width: int = option(512, "hidden width of the late-fusion head", ge=1)
    head_depth: int = option(2, "hidden layers of the late-fusion head", ge=0)


@register_method("relpatch")
@keras.saving.register_keras_serializable(package="sslzoo")
class RelPatch(SSLMethod):
    """Relative patch location: a centre patch and one of its 8 neighbours, classified 8-way.

    Patches go through the encoder's layers and weights rebuilt at the patch size (`at_input_size`). With
    per_patch_norm, each patch goes to zero mean / unit std, then through the fixed affine `mean + std * z`
    into the encoder's input units, so the encoder's Normalization layer hands the convolutions exactly z
    (full images keep the dataset normalisation). The online probe reads full unaugmented images through
    `encoder`.

    Args (besides the base class'):
        head: part mapping concatenated pair features [N, 2D] to 8 logits.
    Reference: Doersch, Gupta, Efros, "Unsupervised Visual Representation Learning by Context
    Prediction", ICCV 2015.
    """

    Options = RelPatchOptions
    parts = ("head",)
    log_names = ("position_top1",)

    @classmethod
    def resolve_options(cls, options, encoder):
        """Scales the unset geometry to the image the patches are cut from; bad geometry fails with the
        numbers and a fix."""
        source = options.resize_to or int(encoder.input_shape[1])
        gap = options.gap
        if gap is None:
            gap = max(scaled_pixels(2, source), 2 * (options.jitter or 0))
        jitter = options.jitter
        if jitter is None:
            # Rounding could give jitter > gap / 2 (48 px: gap 3, jitter 2), letting patches overlap.
            jitter = min(scaled_pixels(1, source), gap // 2)
        patch = options.patch_size
        if patch is None:
            # Rounding up three patches, two gaps and the jitter can overrun a small image by a pixel or two.
            patch = max(1, min(scaled_pixels(8, source), (source - 2 * gap - 2 * jitter) // 3))
        options = dataclasses.replace(options, patch_size=patch, gap=gap, jitter=jitter)
        check_geometry(source, options.patch_size, options.gap, options.jitter, what="method.options for relpatch")
        return options

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        feature_dim = int(encoder.output_shape[-1])
        head = mlp_head(2 * feature_dim, [options.head_width] * options.head_depth, 8, name="position_head")
        return {"head": head}

    def setup(self):
        # The encoder's input normalisation; (0.5, 0.25) per channel if it has none.
        self.input_mean, self.input_std = input_normalization(
            self.encoder, default=(np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)))
        # The same encoder (shared layers and weights) on patches.
        self.patch_encoder = at_input_size(self.encoder, self.options.patch_size, name="patch_encoder")

    def _patch_transform(self, patches, seed):
        options = self.options
        pixel_seed, color_seed = split_seed(seed, 2)
        if options.pixelation:
            patches = random_pixelation(patches, pixel_seed)
        if options.color_drop:
            patches = color_drop(patches, color_seed, options.color_noise)
        if options.per_patch_norm:
            return to_encoder_input(normalize_patches(patches), self.input_mean, self.input_std)
        if options.color_drop:
            # Colour-dropped patches are zero-centred: shift them to the encoder's input mean.
            patches = patches + tf.constant(self.input_mean, tf.float32)
        return patches

    def augment(self, images, labels, seed):
        options = self.options
        size, gap, jitter = options.patch_size, options.gap, options.jitter
        sample_seed, transform_seed = split_seed(seed, 2)
        source = images
        if options.resize_to and options.resize_to != images.shape[1]:
            source = tf.image.resize(images, [options.resize_to, options.resize_to], method="bilinear")
        if options.pairs == "all":
            grid = sample_patch_grid(source, size, gap, jitter, sample_seed)["patches"]
            patches = tf.gather(grid, [4, *NEIGHBOUR_INDICES], axis=1)  # centre first
            pretext_labels = tf.tile(tf.range(8, dtype=tf.int32)[tf.newaxis], [tf.shape(images)[0], 1])
        else:
            pairs = sample_patch_pairs(source, size, gap, jitter, sample_seed)
            patches = tf.stack([pairs["centre"], pairs["neighbour"]], axis=1)
            pretext_labels = pairs["labels"][:, tf.newaxis]
        # Every patch gets its own countermeasures (colour, pixelation, normalisation).
        shape = tf.shape(patches)
        flat = tf.reshape(patches, [-1, size, size, 3])
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
        size = self.options.patch_size
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
        if "images" in data:
            loss = self.probe_images(data["images"], data, loss, logs)
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
