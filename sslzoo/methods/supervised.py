"""Supervised baseline: the same encoder trained with the labels, on the same path and budget.

Not a self-supervised method: it is the upper reference the benchmark puts beside them ("how much of the
supervised accuracy does a pretext task recover with no labels?"). It goes through the same trainer,
evaluation and export as every method, so its numbers are comparable.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, split_seed
from sslzoo.config import ConfigError
from sslzoo.heads import mlp_head
from sslzoo.methods.base import SSLMethod, check_options, top1
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method

DEFAULTS = {
    # The standard CIFAR recipe (He et al., ResNet, CVPR 2016): 4-pixel-padded random crop + flip.
    "crop_padding": 4,
    "flip": True,
    # Label smoothing is off: the baseline should be the plain cross-entropy everyone compares with.
    "label_smoothing": 0.0,
}


@keras.saving.register_keras_serializable(package="sslzoo")
class Supervised(SSLMethod):
    """Encoder + linear softmax classifier trained with cross-entropy on the labels.

    Args:
        encoder: images float32 [N, S, S, 3] in [0, 1] -> features [N, D].
        classifier: features [N, D] -> class logits [N, C].
        crop_padding: random-crop padding in pixels (0 disables).
        flip: random horizontal flips.
        label_smoothing: cross-entropy label smoothing.
    """

    log_names = ("top1",)

    def __init__(self, encoder: keras.Model, classifier: keras.Model, crop_padding: int = 4,
                 flip: bool = True, label_smoothing: float = 0.0, **kwargs):
        # The classifier is the method itself, so no separate online probe (num_classes=0).
        kwargs.pop("num_classes", None)
        super().__init__(encoder, num_classes=0, **kwargs)
        self.classifier = classifier
        self.crop_padding = crop_padding
        self.flip = flip
        self.label_smoothing = label_smoothing
        self.built = True

    def augment(self, images, labels, seed):
        crop_seed, flip_seed = split_seed(seed, 2)
        images = random_crop_with_padding(images, self.crop_padding, crop_seed)
        if self.flip:
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
            targets, logits, from_logits=True, label_smoothing=self.label_smoothing))
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

    def get_config(self):
        config = super().get_config()
        config.pop("num_classes", None)
        return {
            **config,
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "crop_padding": self.crop_padding,
            "flip": self.flip,
            "label_smoothing": self.label_smoothing,
        }

    @classmethod
    def nested_models(cls):
        return ("encoder", "classifier")


@register_method("supervised")
def build_supervised(options: dict, encoder: keras.Model, num_classes: int = 0, make_encoder=None) -> Supervised:
    """Builds the supervised baseline from `method.options` (see DEFAULTS); needs the class count."""
    options = check_options("supervised", options, DEFAULTS)
    if num_classes < 2:
        raise ConfigError(
            "method 'supervised' trains on the labels and needs the number of classes: keep "
            "method.online_probe: true (the trainer passes the class count only then) and labelled data"
        )
    if not 0.0 <= options["label_smoothing"] < 1.0:
        raise ConfigError(f"method.options.label_smoothing {options['label_smoothing']}: use a value in [0, 1)")
    classifier = mlp_head(int(encoder.output_shape[-1]), [], num_classes, name="classifier")
    return Supervised(encoder, classifier, crop_padding=int(options["crop_padding"]), flip=bool(options["flip"]),
                      label_smoothing=float(options["label_smoothing"]), name="supervised")
