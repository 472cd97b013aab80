"""Fine-tuning: encoder + linear softmax head trained end to end on a stratified fraction of the labels."""

from __future__ import annotations

from typing import Tuple

import keras
import numpy as np

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, split_seed
from sslzoo.data import make_pipeline
from sslzoo.data.splits import stratified_split
from sslzoo.evaluation.linear import top1_percent


def labelled_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, deterministic `fraction` of the examples (at least one per class)."""
    labels = np.asarray(labels)
    count = max(int(round(fraction * len(labels))), len(np.unique(labels)))
    subset, _ = stratified_split(labels, val_fraction=0.0, seed=seed, max_examples=count)
    return subset


def _crop_flip(images, labels, seed):
    crop_seed, flip_seed = split_seed(seed, 2)
    images = random_flip_left_right(random_crop_with_padding(images, 4, crop_seed), flip_seed)
    return images, labels


def finetune(
    encoder: keras.Model,
    splits,
    *,
    label_fraction: float = 0.1,
    epochs: int = 10,
    learning_rate: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> Tuple[float, keras.Model, keras.Model]:
    """Fine-tunes a copy of `encoder` with a new softmax head on `label_fraction` of `splits.train`.

    Args:
        encoder: images float32 [N, S, S, 3] in [0, 1] -> features [N, D]; left unchanged (a copy trains).
        splits: `sslzoo.data.DataSplits`; accuracy is measured on `splits.val`.
        label_fraction: stratified share of the training labels used (e.g. 0.1 for the 10% protocol).
        epochs: passes over the labelled subset (random crop with 4-pixel padding + flip).
        learning_rate: Adam learning rate for encoder and head.
        batch_size: images per step.
        seed: subset choice, initialisation and batch order.
    Returns:
        (val top-1 percent, the fine-tuned encoder, the head: features [N, D] -> probabilities [N, C]).
    Reference: the semi-supervised fine-tuning protocol of Chen et al., SimCLR, ICML 2020 (1% / 10% labels).
    """
    keras.utils.set_random_seed(seed)
    tuned = keras.models.clone_model(encoder)
    tuned.set_weights(encoder.get_weights())
    num_classes = len(splits.class_names)
    head = keras.Sequential(
        [keras.Input((int(tuned.output_shape[-1]),), name="features"),
         keras.layers.Dense(num_classes, activation="softmax", name="probabilities")],
        name="finetune_head",
    )
    model = keras.Model(tuned.inputs, head(tuned.outputs[0]), name="finetuned")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")

    subset = labelled_subset(splits.train.labels, label_fraction, seed)
    images, labels = splits.train.take(subset), splits.train.labels[subset]
    batch = min(batch_size, len(subset))
    dataset = make_pipeline(images, labels, batch_size=batch, seed=seed, num_epochs=epochs, augment=_crop_flip)
    model.fit(dataset, epochs=epochs, steps_per_epoch=len(subset) // batch, verbose=0, shuffle=False)

    val_features = tuned.predict(splits.val.take(np.arange(len(splits.val))).astype(np.float32) / 255.0,
                                 batch_size=512, verbose=0)
    return top1_percent(head, val_features, splits.val.labels), tuned, head
