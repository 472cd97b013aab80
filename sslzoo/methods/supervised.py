"""Supervised baseline: the same encoder trained with the labels, on the same path and budget.

Not a self-supervised method: it is the upper reference the benchmark puts beside them ("how much of the
supervised accuracy does a pretext task recover with no labels?"). It goes through the same trainer,
evaluation and export as every method, so its numbers are comparable.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, split_seed
from sslzoo.config import option, parse_options
from sslzoo.heads import mlp_head
from sslzoo.methods.base import SSLMethod, require, top1, with_scaled_pixels
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class SupervisedOptions:
    # The standard CIFAR recipe (He et al., ResNet, CVPR 2016): 4-pixel-padded random crop + flip; the
    # padding keeps that share of the image at other sizes.
    crop_padding: int | None = option(None, "random-crop padding in pixels, 0 disables "
                                            "(None: 4 x image_size / 32)", ge=0)
    flip: bool = option(True, "random horizontal flips")
    # Label smoothing is off: the baseline should be the plain cross-entropy everyone compares with.
    label_smoothing: float = option(0.0, "cross-entropy label smoothing", ge=0.0, lt=1.0)


@register_method("supervised")
@keras.saving.register_keras_serializable(package="sslzoo")
class Supervised(SSLMethod):
    """Encoder + linear softmax classifier trained with cross-entropy on the labels.

    The classifier is the method itself, so there is no separate online probe (the base gets
    num_classes=0); `create` takes the class count to size the classifier.

    Args (besides the base class'):
        classifier: part mapping features [N, D] to class logits [N, C].
    """

    Options = SupervisedOptions
    parts = ("classifier",)
    log_names = ("top1",)

    @classmethod
    def resolve_options(cls, options, encoder):
        return with_scaled_pixels(options, int(encoder.input_shape[1]), crop_padding=4)

    @classmethod
    def create(cls, options, encoder, num_classes=0, make_encoder=None):
        """Builds the baseline from `method.options`; needs the class count (the trainer's num_classes)."""
        options = cls.resolve_options(parse_options(cls.Options, options, "method.options"), encoder)
        require(num_classes >= 2,
                "method 'supervised' trains on the labels and needs the number of classes: keep "
                "method.online_probe: true (the trainer passes the class count only then) and labelled data")
        classifier = mlp_head(int(encoder.output_shape[-1]), [], num_classes, name="classifier")
        return cls(encoder, options, num_classes=0, classifier=classifier)

    def augment(self, images, labels, seed):
        crop_seed, flip_seed = split_seed(seed, 2)
        images = random_crop_with_padding(images, self.options.crop_padding, crop_seed)
        if self.options.flip:
            images = random_flip_left_right(images, flip_seed)
        return {"images": images, "labels": labels}

    def _logits(self, images, training):
        return tf.cast(self.classifier(self.encoder(images, training=training), training=training), tf.float32)

    def compute_loss_and_logs(self, data, training):
        labels = tf.cast(data["labels"], tf.int32)
        logits = self._logits(data["images"], training)
        num_classes = tf.shape(logits)[-1]
        targets = tf.one_hot(labels, num_classes)
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(
            targets, logits, from_logits=True, label_smoothing=self.options.label_smoothing))
        return loss, {"loss": loss, "top1": top1(logits, labels)}

    def save_pictures(self, data, run_dir):
        """supervised.png: training images with their true and predicted classes (indices)."""
        count = min(8, int(data["labels"].shape[0]))
        images = np.asarray(data["images"])[:count]
        labels = np.asarray(data["labels"])[:count]
        predicted = np.argmax(np.asarray(self._logits(data["images"][:count], False)), axis=-1)
        rows = [("true->pred", images)]
        captions = [[f"{t}->{p}" for t, p in zip(labels, predicted)]]
        return [save_image_grid(Path(run_dir) / "supervised.png", rows, captions=captions,
                                title="Supervised baseline: true -> predicted class index")]
