"""RotNet: learn features by predicting which rotation (of four quarter turns, or eight) was applied to an image."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, rotate_batch, split_seed
from sslzoo.backbones import nin_block_count, nin_blocks
from sslzoo.config import ConfigError, option
from sslzoo.heads import conv_head, mlp_head
from sslzoo.methods.base import SSLMethod, require, top1, with_scaled_pixels
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class RotNetOptions:
    # The paper's best is all four (Table 2: 4 > 8 > 2 rotations).
    rotations: tuple[int, ...] = option((0, 1, 2, 3), "rotations to classify, in units of rotation_step (quarter "
                                                      "turns by default); label r is rotations[r]", ge=0)
    # 45: the paper's eight rotations (Table 2). Quarter turns stay exact (rot90); the eighth turns are
    # resampled, and their interpolation and corners are cues the paper blames for 8 doing worse than 4.
    rotation_step: Literal[90, 45] = option(90, "degrees of one unit of rotations: 90 (0-3) or 45 (0-7)")
    # conv | nin read the encoder's feature map, so the rotation-specific layers stay out of the exported
    # encoder (the paper probes block 2 of 4); linear | mlp read the pooled features.
    head: Literal["linear", "mlp", "conv", "nin"] = option("conv", "the rotation classifier")
    head_width: int = option(256, "hidden width of the mlp/conv head", ge=1)
    head_depth: int = option(2, "hidden layers of the mlp/conv head", ge=0)
    # The paper's depth ablation trains NINs of 3, 4 and 5 blocks (Table 1) and evaluates each block.
    nin_depth: int = option(4, "head nin: blocks of the whole NIN; the encoder is its first blocks, the head "
                               "the blocks after them", ge=1)
    # CIFAR augmentation of the official code: RandomCrop(32, padding=4) + horizontal flip; the padding
    # keeps that share of the image at other sizes.
    crop_padding: int | None = option(None, "random-crop padding in pixels, 0 disables "
                                            "(None: 4 x image_size / 32)", ge=0)
    flip: bool = option(True, "random horizontal flips")

    def __post_init__(self):
        step, turn = self.rotation_step, 360 // self.rotation_step
        require(len(self.rotations) >= 2 and len(set(self.rotations)) == len(self.rotations),
                f"rotations {list(self.rotations)}: need at least two distinct rotations (units of {step} degrees)")
        eighths = "" if step == 45 else " (rotation_step: 45 gives 0..7, multiples of 45 degrees)"
        require(max(self.rotations) < turn,
                f"rotations {list(self.rotations)}: each must be 0..{turn - 1}, multiples of {step} degrees{eighths}")


@register_method("rotnet")
@keras.saving.register_keras_serializable(package="sslzoo")
class RotNet(SSLMethod):
    """Rotation prediction: every image in all rotations in one batch, classified R-way.

    Args (besides the base class'):
        head: part mapping features [N, D] (linear, mlp) or the encoder's feature map [N, h, w, c]
            (conv, nin) to R rotation logits.
    Reference: Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image
    Rotations", ICLR 2018.
    """

    Options = RotNetOptions
    parts = ("head",)
    log_names = ("rotation_top1",)

    @classmethod
    def resolve_options(cls, options, encoder):
        if options.head == "nin":
            blocks = nin_block_count(encoder)
            if blocks is None:
                raise ConfigError(f"head nin continues a NIN encoder with its next blocks, and encoder "
                                  f"'{encoder.name}' is not one: use encoder.name: nin, or head: conv")
            if blocks > options.nin_depth:
                raise ConfigError(f"the encoder has {blocks} NIN blocks, more than nin_depth {options.nin_depth}: "
                                  f"set method.options.nin_depth >= {blocks} (the paper's NINs have 3, 4 or 5)")
        return with_scaled_pixels(options, int(encoder.input_shape[1]), crop_padding=4)

    @classmethod
    def probe_unavailable(cls, options):
        if 0 in options.rotations:
            return None
        return (f"rotations {list(options.rotations)} hold no unrotated images for it to read; include rotation 0 "
                "in method.options.rotations to get it")

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        return {"head": build_rotation_head(options, encoder)}

    def setup(self):
        # One functional view of the encoder giving both outputs; it shares the encoder's layers.
        self.backbone = keras.Model(
            self.encoder.inputs,
            [self.encoder.get_layer("feature_map").output, self.encoder.outputs[0]],
            name="backbone",
        ) if self.options.head in ("conv", "nin") else None

    def augment(self, images, labels, seed):
        crop_seed, flip_seed = split_seed(seed, 2)
        images = random_crop_with_padding(images, self.options.crop_padding, crop_seed)
        if self.options.flip:
            images = random_flip_left_right(images, flip_seed)
        # Crop/flip before rotating (card): the rotation must be the only orientation cue.
        rotated, pretext_labels = rotate_batch(images, list(self.options.rotations), self.options.rotation_step)
        return {"images": rotated, "pretext_labels": pretext_labels, "labels": labels}

    def compute_loss_and_logs(self, data, training):
        images, pretext_labels = data["images"], data["pretext_labels"]
        features, logits = self._features_and_logits(images, training)
        # loss(X) = -(1/R) sum_r log F^r(rot(X, r)), averaged over the batch (paper, eq. 2).
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(pretext_labels, logits, from_logits=True)
        )
        logs = {"loss": loss, "rotation_top1": top1(logits, pretext_labels)}
        if self.probe is not None and "labels" in data:
            # The block of unrotated images, as evaluation sees them (the constructor drops the probe when
            # there is none).
            batch = tf.shape(data["labels"])[0]
            start = self.options.rotations.index(0) * batch
            loss = self.add_probe_loss(loss, features[start:start + batch], data, logs)
        return loss, logs

    def _features_and_logits(self, images, training):
        if self.backbone is not None:
            feature_map, features = self.backbone(images, training=training)
            logits = self.head(feature_map, training=training)
        else:
            features = self.encoder(images, training=training)
            logits = self.head(features, training=training)
        return features, tf.cast(logits, tf.float32)

    def save_pictures(self, data, run_dir):
        """rotnet.png: a few images in every rotation, each with the predicted rotation."""
        per_block = int(data["labels"].shape[0])
        count = min(8, per_block)
        _, logits = self._features_and_logits(data["images"], training=False)
        predicted = np.argmax(np.asarray(logits), axis=-1)
        images = np.asarray(data["images"])
        rows, captions = [], []
        degrees = [self.options.rotation_step * r for r in self.options.rotations]
        for r, angle in enumerate(degrees):  # block r holds every image rotated by degrees[r]
            block = slice(r * per_block, r * per_block + count)
            rows.append((f"{angle} deg", images[block]))
            captions.append([
                f"pred {degrees[p]}" + ("" if p == r else " (wrong)") for p in predicted[block]
            ])
        return [save_image_grid(Path(run_dir) / "rotnet.png", rows, captions=captions,
                                title="RotNet: predicted rotation of each rotated image")]


def build_rotation_head(options: RotNetOptions, encoder: keras.Model) -> keras.Model:
    """The rotation classifier the options ask for, on pooled features or on the feature map."""
    kind, width, depth = options.head, options.head_width, options.head_depth
    num_outputs = len(options.rotations)
    feature_dim = int(encoder.output_shape[-1])
    if kind == "linear":
        return mlp_head(feature_dim, [], num_outputs, name="rotation_head")
    if kind == "mlp":
        return mlp_head(feature_dim, [width] * depth, num_outputs, name="rotation_head")
    map_shape = encoder.get_layer("feature_map").output.shape[1:]
    if kind == "conv":
        return conv_head(map_shape, [width] * depth, num_outputs, name="rotation_head")
    # nin, the paper's NIN of nin_depth blocks cut after the encoder's last block k (the evaluated one): blocks
    # k + 1..nin_depth + GAP + linear form the head (NIN4 on the default 2-block encoder: blocks 3-4).
    blocks = nin_block_count(encoder)
    inputs = keras.Input(tuple(map_shape), name="rotation_head_input")
    x = inputs
    if blocks < options.nin_depth:
        x = nin_blocks(blocks + 1, options.nin_depth, name="rotation_nin")(x)
    x = keras.layers.GlobalAveragePooling2D(name="rotation_head_pool")(x)
    outputs = keras.layers.Dense(num_outputs, name="rotation_head_out")(x)
    return keras.Model(inputs, outputs, name="rotation_head")

