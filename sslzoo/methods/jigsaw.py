"""Jigsaw puzzles: learn features by recognising which permutation shuffled a 3x3 grid of tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import split_seed
from sslzoo.augment.jigsaw import (
    NUM_TILES,
    check_geometry,
    cut_tiles,
    max_hamming_permutations,
    normalize_tiles,
    random_grayscale,
    shuffle_tiles,
)
from sslzoo.backbones import at_input_size, input_normalization
from sslzoo.config import ConfigError
from sslzoo.heads import mlp_head
from sslzoo.methods.base import SSLMethod, check_options, top1
from sslzoo.pictures import mosaic, save_image_grid
from sslzoo.registry import register_method

DEFAULTS = {
    # N permutations, greedy maximal mean Hamming distance (paper: 100 to 1000; card: 100 for CIFAR).
    "num_permutations": 100,
    "permutation_seed": 0,
    # Geometry. CIFAR default: the card's "central 30x30" option (a 30x30 grid at a random offset in the
    # 32x32 image, 10x10 cells, 8x8 tiles) at native scale: measured on a 2-core CPU, 8x8 tiles train
    # ~3.7x faster than tiles upsampled to 16x16 (1,621 vs 436 images/s) and transferred no worse.
    # The paper's: resize 0 on 256-resized images, grid_size 255, tile_size 64, tile_resize 0.
    "resize": 0,  # > 0: bilinear resize of the image to resize x resize before cutting (card: 96)
    "grid_size": 30,
    "tile_size": 8,
    "tile_resize": 0,  # > 0: bilinear resize of every tile before the encoder (e.g. 16)
    # Countermeasures against shortcuts (card, "Pitfalls").
    "normalize_tiles": True,
    "grayscale_probability": 0.3,
    "channel_jitter": 0,  # pixels of independent per-channel shift (paper: 0-2 px); needs cell slack
    # Head on the 9 concatenated tile features.
    "head_width": 512,
    "head_depth": 1,
}


def _input_stats(encoder: keras.Model) -> tuple[list[float], list[float]]:
    """The encoder's own input normalisation (mean, std per channel); identity when it has none."""
    stats = input_normalization(encoder)
    mean, std = stats if stats else (np.zeros(3), np.ones(3))
    return [float(v) for v in mean], [float(v) for v in std]


@keras.saving.register_keras_serializable(package="sslzoo")
class Jigsaw(SSLMethod):
    """Jigsaw puzzle solving with a context-free network (9 weight-shared encoder columns).

    Args:
        encoder: images float32 [N, S, S, 3] in [0, 1] -> features [N, D]; the exported encoder. Tiles go
            through the same layers and weights rebuilt at the tile size (`at_input_size`).
        head: model features [N, 9 * D] (tile features concatenated in shuffled order) -> N logits.
        permutations: the set [N, 9] (list of lists); label k means position i holds tile p_k[i]. Stored
            in the config, so the .keras file of a run carries the labels' meaning.
        resize, grid_size, tile_size, tile_resize, normalize_tiles, grayscale_probability, channel_jitter:
            see DEFAULTS.
        num_classes: > 0 adds the online linear probe on the full, unaugmented images.
    Reference: Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
    Puzzles", ECCV 2016.
    """

    log_names = ("jigsaw_top1",)

    def __init__(
        self,
        encoder: keras.Model,
        head: keras.Model,
        permutations: Sequence[Sequence[int]],
        resize: int = 0,
        grid_size: int = 30,
        tile_size: int = 8,
        tile_resize: int = 0,
        normalize_tiles: bool = True,
        grayscale_probability: float = 0.3,
        channel_jitter: int = 0,
        num_classes: int = 0,
        **kwargs,
    ):
        super().__init__(encoder, num_classes=num_classes, **kwargs)
        self.head = head
        self.permutations = [[int(v) for v in p] for p in permutations]
        self.resize = int(resize)
        self.grid_size = int(grid_size)
        self.tile_size = int(tile_size)
        self.tile_resize = int(tile_resize)
        self.normalize_tiles = bool(normalize_tiles)
        self.grayscale_probability = float(grayscale_probability)
        self.channel_jitter = int(channel_jitter)
        self.input_mean, self.input_std = _input_stats(encoder)
        self.encoder_tile_size = self.tile_resize or self.tile_size
        # The same layers and weights on tiles: one pass over all B * 9 tiles per step.
        self.tile_encoder = at_input_size(encoder, self.encoder_tile_size, name="tile_encoder")
        self._permutation_table = np.asarray(self.permutations, np.int32)
        self.built = True  # every part above is a built functional model

    def augment(self, images, labels, seed):
        gray_seed, tile_seed, shuffle_seed = split_seed(seed, 3)
        source = images
        if self.resize:
            source = tf.image.resize(source, [self.resize, self.resize], method="bilinear")
        source = random_grayscale(source, self.grayscale_probability, gray_seed)
        tiles = cut_tiles(source, self.grid_size, self.tile_size, tile_seed, self.channel_jitter)
        if self.tile_resize and self.tile_resize != self.tile_size:
            batch = tf.shape(tiles)[0]
            flat = tf.reshape(tiles, [-1, self.tile_size, self.tile_size, 3])
            flat = tf.image.resize(flat, [self.tile_resize, self.tile_resize], method="bilinear")
            tiles = tf.reshape(flat, [batch, NUM_TILES, self.tile_resize, self.tile_resize, 3])
        if self.normalize_tiles:
            tiles = normalize_tiles(tiles, self.input_mean, self.input_std)
        shuffled, pretext_labels = shuffle_tiles(tiles, tf.constant(self._permutation_table), shuffle_seed)
        # "images" stay the full, unaugmented images: the online probe (and the encoder contract) use them.
        return {"images": images, "tiles": shuffled, "pretext_labels": pretext_labels, "labels": labels}

    def compute_loss_and_logs(self, data, training):
        tiles, pretext_labels = data["tiles"], data["pretext_labels"]
        size = self.encoder_tile_size
        batch = tf.shape(tiles)[0]
        flat = tf.reshape(tiles, [-1, size, size, 3])  # [B * 9, t, t, 3], tile-major per puzzle
        features = self.tile_encoder(flat, training=training)
        # Concatenated in (shuffled) position order: [B, 9 * D].
        joined = tf.reshape(features, [batch, NUM_TILES * self.feature_dim])
        logits = tf.cast(self.head(joined, training=training), tf.float32)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(pretext_labels, logits, from_logits=True)
        )
        logs = {"loss": loss, "jigsaw_top1": top1(logits, pretext_labels)}
        if self.probe is not None and "labels" in data:
            full = self.encoder(data["images"], training=training)
            loss = loss + self.online_probe(full, data["labels"], logs)
        return loss, logs

    def save_pictures(self, data, run_dir):
        """jigsaw.png: each image, its shuffled puzzle, and the puzzle put back with the predicted
        permutation (true and predicted permutation index under each)."""
        count = min(8, int(data["tiles"].shape[0]))
        tiles = data["tiles"][:count]
        size = self.encoder_tile_size
        features = self.tile_encoder(tf.reshape(tiles, [-1, size, size, 3]), training=False)
        logits = self.head(tf.reshape(features, [count, NUM_TILES * self.feature_dim]), training=False)
        predicted = np.argmax(np.asarray(logits), axis=-1)
        truth = np.asarray(data["pretext_labels"][:count])
        tiles = np.asarray(tiles)
        shuffled, solved, captions = [], [], []
        for i in range(count):
            shuffled.append(mosaic(list(tiles[i])))
            # Position j holds original tile p[j]; so original tile p[j] goes back to cell p[j].
            order = self._permutation_table[predicted[i]]
            restored = [None] * NUM_TILES
            for position, original in enumerate(order):
                restored[original] = tiles[i][position]
            solved.append(mosaic(restored))
            mark = "ok" if predicted[i] == truth[i] else "wrong"
            captions.append(f"true {truth[i]} / pred {predicted[i]} ({mark})")
        rows = [("image", np.asarray(data["images"][:count])), ("puzzle", shuffled), ("solved", solved)]
        return [save_image_grid(Path(run_dir) / "jigsaw.png", rows, captions=[[], captions, []],
                                title="Jigsaw: shuffled tiles and the prediction's reassembly")]

    def get_config(self):
        return {
            **super().get_config(),
            "head": keras.saving.serialize_keras_object(self.head),
            "permutations": self.permutations,
            "resize": self.resize,
            "grid_size": self.grid_size,
            "tile_size": self.tile_size,
            "tile_resize": self.tile_resize,
            "normalize_tiles": self.normalize_tiles,
            "grayscale_probability": self.grayscale_probability,
            "channel_jitter": self.channel_jitter,
        }

    @classmethod
    def nested_models(cls):
        return ("encoder", "head")


@register_method("jigsaw")
def build_jigsaw(options: dict, encoder: keras.Model, num_classes: int = 0, make_encoder=None) -> Jigsaw:
    """Builds Jigsaw from `method.options` (see DEFAULTS)."""
    options = check_options("jigsaw", options, DEFAULTS)
    image_size = int(encoder.input_shape[1])
    for key in ("resize", "tile_resize", "channel_jitter", "head_depth"):
        if options[key] < 0:
            raise ConfigError(f"method.options.{key} {options[key]}: must be >= 0")
    if not 0.0 <= options["grayscale_probability"] <= 1.0:
        raise ConfigError(
            f"method.options.grayscale_probability {options['grayscale_probability']}: must be in [0, 1]"
        )
    check_geometry(image_size, options["grid_size"], options["tile_size"], options["channel_jitter"],
                   resize=options["resize"])
    tile_input = options["tile_resize"] or options["tile_size"]
    try:
        at_input_size(encoder, tile_input)
    except Exception as error:  # noqa: BLE001 - any build failure is a geometry problem here
        raise ConfigError(
            f"encoder '{encoder.name}' cannot run on {tile_input}x{tile_input} tiles ({error}); raise "
            "method.options.tile_resize (e.g. 16 for the 4-block ConvNet) or tile_size"
        ) from error
    permutations = max_hamming_permutations(options["num_permutations"], options["permutation_seed"])
    feature_dim = int(encoder.output_shape[-1])
    head = mlp_head(
        NUM_TILES * feature_dim, [options["head_width"]] * options["head_depth"], len(permutations),
        name="jigsaw_head",
    )
    return Jigsaw(
        encoder,
        head,
        permutations=permutations.tolist(),
        resize=options["resize"],
        grid_size=options["grid_size"],
        tile_size=options["tile_size"],
        tile_resize=options["tile_resize"],
        normalize_tiles=options["normalize_tiles"],
        grayscale_probability=float(options["grayscale_probability"]),
        channel_jitter=options["channel_jitter"],
        num_classes=num_classes,
        name="jigsaw",
    )
