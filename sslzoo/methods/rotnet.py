"""RotNet: learn features by predicting which of four rotations was applied to an image."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, rotate_batch, split_seed
from sslzoo.backbones import nin_blocks
from sslzoo.config import option
from sslzoo.heads import conv_head, mlp_head
from sslzoo.methods.base import SSLMethod, require, top1, with_scaled_pixels
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class RotNetOptions:
    # The paper's best is all four (Table 2: 4 > 8 > 2 rotations).
    rotations: tuple[int, ...] = option((0, 1, 2, 3), "quarter turns (multiples of 90 degrees) to classify; label r is rotations[r]",
                                        ge=0, le=3)
    # conv | nin read the encoder's feature map, so the rotation-specific layers stay out of the exported
    # encoder (the paper probes block 2 of 4); linear | mlp read the pooled features.
    head: Literal["linear", "mlp", "conv", "nin"] = option("conv", "the rotation classifier")
    head_width: int = option(256, "hidden width of the mlp/conv head", ge=1)
    head_depth: int = option(2, "hidden layers of the mlp/conv head", ge=0)
    # CIFAR augmentation of the official code: RandomCrop(32, padding=4) + horizontal flip; the padding
    # keeps that share of the image at other sizes.
    crop_padding: int | None = option(None, "random-crop padding in pixels, 0 disables "
                                            "(None: 4 x image_size / 32)", ge=0)
    flip: bool = option(True, "random horizontal flips")

    def __post_init__(self):
        require(len(self.rotations) >= 2 and len(set(self.rotations)) == len(self.rotations),
                f"rotations {list(self.rotations)}: need at least two distinct quarter turns from 0, 1, 2, 3 "
                "(multiples of 90 degrees; other angles need interpolation, whose borders give the rotation away)")


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
        return with_scaled_pixels(options, int(encoder.input_shape[1]), crop_padding=4)

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
        rotated, pretext_labels = rotate_batch(images, list(self.options.rotations))
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
            # Block 0 of the batch holds the images unrotated (label 0): probe those.
            batch = tf.shape(data["labels"])[0]
            loss = self.add_probe_loss(loss, features[:batch], data, logs)
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
        rotations = self.options.rotations
        for r, quarter_turns in enumerate(rotations):  # block r holds every image rotated by r
            block = slice(r * per_block, r * per_block + count)
            rows.append((f"{90 * quarter_turns} deg", images[block]))
            captions.append([
                f"pred {90 * rotations[p]}" + ("" if p == r else " (wrong)") for p in predicted[block]
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
    # nin, the paper's NIN4: the encoder is blocks 1-2, blocks 3-4 + GAP + linear form the head.
    inputs = keras.Input(tuple(map_shape), name="rotation_head_input")
    x = nin_blocks(3, 4, name="rotation_nin")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="rotation_head_pool")(x)
    outputs = keras.layers.Dense(num_outputs, name="rotation_head_out")(x)
    return keras.Model(inputs, outputs, name="rotation_head")

