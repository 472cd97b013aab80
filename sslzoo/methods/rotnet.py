"""RotNet: learn features by predicting which of four rotations was applied to an image."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, rotate_batch, split_seed
from sslzoo.backbones import nin_blocks
from sslzoo.config import ConfigError
from sslzoo.heads import conv_head, mlp_head
from sslzoo.methods.base import SSLMethod, check_options, top1
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method

DEFAULTS = {
    # Multiples of 90 degrees; the paper's best is all four (Table 2: 4 > 8 > 2 rotations).
    "rotations": [0, 1, 2, 3],
    # linear | mlp: on pooled features; conv | nin: on the encoder's feature map, so the
    # rotation-specific layers stay out of the exported encoder (the paper probes block 2 of 4).
    "head": "conv",
    "head_width": 256,
    "head_depth": 2,
    # CIFAR augmentation of the official code: RandomCrop(32, padding=4) + horizontal flip.
    "crop_padding": 4,
    "flip": True,
}


@keras.saving.register_keras_serializable(package="sslzoo")
class RotNet(SSLMethod):
    """Rotation prediction: every image in all rotations in one batch, classified R-way.

    Args:
        encoder: images float32 [N, S, S, 3] in [0, 1] -> features [N, D]; has a "feature_map" layer
            when the head works on feature maps.
        head: model mapping features [N, D] (head_input="features") or the feature map [N, h, w, c]
            (head_input="feature_map") to R rotation logits.
        rotations: quarter turns, e.g. [0, 1, 2, 3]; label r means rotations[r] * 90 degrees.
        head_input: "features" or "feature_map".
        crop_padding: random-crop padding in pixels (0 disables).
        flip: random horizontal flips.
        num_classes: > 0 adds the online linear probe (on the unrotated images' features).
    Reference: Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image
    Rotations", ICLR 2018.
    """

    log_names = ("rotation_top1",)

    def __init__(
        self,
        encoder: keras.Model,
        head: keras.Model,
        rotations: Sequence[int] = (0, 1, 2, 3),
        head_input: str = "feature_map",
        crop_padding: int = 4,
        flip: bool = True,
        num_classes: int = 0,
        **kwargs,
    ):
        super().__init__(encoder, num_classes=num_classes, **kwargs)
        self.head = head
        self.rotations = [int(r) for r in rotations]
        self.head_input = head_input
        self.crop_padding = crop_padding
        self.flip = flip
        # One functional view of the encoder giving both outputs; it shares the encoder's layers.
        self.backbone = keras.Model(
            encoder.inputs,
            [encoder.get_layer("feature_map").output, encoder.outputs[0]],
            name="backbone",
        ) if head_input == "feature_map" else None
        self.built = True  # every part above is a built functional model

    def augment(self, images, labels, seed):
        crop_seed, flip_seed = split_seed(seed, 2)
        images = random_crop_with_padding(images, self.crop_padding, crop_seed)
        if self.flip:
            images = random_flip_left_right(images, flip_seed)
        # Crop/flip before rotating (card): the rotation must be the only orientation cue.
        rotated, pretext_labels = rotate_batch(images, self.rotations)
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
            loss = loss + self.online_probe(features[:batch], data["labels"], logs)
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
        for r, quarter_turns in enumerate(self.rotations):  # block r holds every image rotated by r
            block = slice(r * per_block, r * per_block + count)
            rows.append((f"{90 * quarter_turns} deg", images[block]))
            captions.append([
                f"pred {90 * self.rotations[p]}" + ("" if p == r else " (wrong)") for p in predicted[block]
            ])
        return [save_image_grid(Path(run_dir) / "rotnet.png", rows, captions=captions,
                                title="RotNet: predicted rotation of each rotated image")]

    def get_config(self):
        return {
            **super().get_config(),
            "head": keras.saving.serialize_keras_object(self.head),
            "rotations": self.rotations,
            "head_input": self.head_input,
            "crop_padding": self.crop_padding,
            "flip": self.flip,
        }

    @classmethod
    def nested_models(cls):
        return ("encoder", "head")


def build_rotation_head(options: dict, encoder: keras.Model, num_outputs: int) -> tuple[keras.Model, str]:
    """The rotation classifier the options ask for, and which encoder output it reads."""
    kind, width, depth = options["head"], options["head_width"], options["head_depth"]
    feature_dim = int(encoder.output_shape[-1])
    if kind == "linear":
        return mlp_head(feature_dim, [], num_outputs, name="rotation_head"), "features"
    if kind == "mlp":
        return mlp_head(feature_dim, [width] * depth, num_outputs, name="rotation_head"), "features"
    map_shape = encoder.get_layer("feature_map").output.shape[1:]
    if kind == "conv":
        return conv_head(map_shape, [width] * depth, num_outputs, name="rotation_head"), "feature_map"
    if kind == "nin":
        # The paper's NIN4: the encoder is blocks 1-2, blocks 3-4 + GAP + linear form the head.
        inputs = keras.Input(tuple(map_shape), name="rotation_head_input")
        x = nin_blocks(3, 4, name="rotation_nin")(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="rotation_head_pool")(x)
        outputs = keras.layers.Dense(num_outputs, name="rotation_head_out")(x)
        return keras.Model(inputs, outputs, name="rotation_head"), "feature_map"
    raise ConfigError(f"method.options.head '{kind}' for rotnet: use linear, mlp, conv or nin")


@register_method("rotnet")
def build_rotnet(options: dict, encoder: keras.Model, num_classes: int = 0, make_encoder=None) -> RotNet:
    """Builds RotNet from `method.options` (see DEFAULTS)."""
    options = check_options("rotnet", options, DEFAULTS)
    rotations = [int(r) for r in options["rotations"]]
    if len(rotations) < 2 or len(set(rotations)) != len(rotations) or not set(rotations) <= {0, 1, 2, 3}:
        raise ConfigError(
            f"method.options.rotations {options['rotations']}: need at least two distinct quarter turns "
            "from 0, 1, 2, 3 (multiples of 90 degrees; other angles need interpolation, whose borders "
            "give the rotation away)"
        )
    head, head_input = build_rotation_head(options, encoder, len(rotations))
    return RotNet(
        encoder,
        head,
        rotations=rotations,
        head_input=head_input,
        crop_padding=int(options["crop_padding"]),
        flip=bool(options["flip"]),
        num_classes=num_classes,
        name="rotnet",
    )
