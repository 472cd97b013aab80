"""Jigsaw puzzles: learn features by recognising which permutation shuffled a 3x3 grid of tiles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import split_seed
from sslzoo.augment.jigsaw import (
    MAX_PERMUTATIONS,
    NUM_TILES,
    check_geometry,
    cut_tiles,
    max_hamming_permutations,
    normalize_tiles,
    random_grayscale,
    shuffle_tiles,
)
from sslzoo.backbones import IDENTITY_NORMALIZATION, at_input_size, input_normalization
from sslzoo.config import ConfigError, option
from sslzoo.heads import mlp_head
from sslzoo.methods.base import SSLMethod, scaled_pixels, top1
from sslzoo.pictures import mosaic, save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class JigsawOptions:
    # N permutations, greedy maximal mean Hamming distance (paper: 100 to 1000; card: 100 for CIFAR).
    num_permutations: int = option(100, "N, the puzzle's classes: permutations chosen greedily for maximal "
                                        "mean Hamming distance (9! = 362880 orders of 9 tiles)",
                                   ge=2, le=MAX_PERMUTATIONS)
    permutation_seed: int = option(0, "picks the permutation set's starting permutation", ge=0)
    # Geometry. CIFAR default: the card's "central 30x30" option (a 30x30 grid at a random offset in the
    # 32x32 image, 10x10 cells, 8x8 tiles) at native scale: measured on a 2-core CPU, 8x8 tiles train
    # ~3.7x faster than tiles upsampled to 16x16 (1,621 vs 436 images/s) and transferred no worse.
    # Unset, grid and tile keep those shares of the (resized) image S at any size (224 px: 210 and 56).
    # The paper's: resize 0 on 256-resized images, grid_size 255, tile_size 64, tile_resize 0.
    resize: int = option(0, "> 0: bilinear resize of the image to resize x resize before cutting (card: 96)",
                         ge=0)
    grid_size: int | None = option(None, "side of the 3x3 grid cut at a random offset in the (resized) image "
                                         "(None: 30 x S / 32, S = resize or the image size, a multiple of 3)",
                                   ge=3)
    tile_size: int | None = option(None, "side of the tile taken at a random place inside each grid cell "
                                         "(None: 8 x S / 32, at most the cell minus channel_jitter)", ge=1)
    tile_resize: int = option(0, "> 0: bilinear resize of every tile before the encoder (e.g. 16)", ge=0)
    # Countermeasures against shortcuts (card, "Pitfalls").
    normalize_tiles: bool = option(True, "each tile channel to zero mean / unit std (after the encoder's "
                                         "input normalisation)")
    grayscale_probability: float = option(0.3, "probability of a grey image (against chromatic aberration)",
                                          ge=0.0, le=1.0)
    channel_jitter: int = option(0, "pixels of independent per-channel shift (paper: 0-2 px); needs cell slack",
                                 ge=0)
    # Head on the 9 concatenated tile features.
    head_width: int = option(512, "hidden width of the head on the 9 concatenated tile features", ge=1)
    head_depth: int = option(1, "hidden layers of the head", ge=0)


@register_method("jigsaw")
@keras.saving.register_keras_serializable(package="sslzoo")
class Jigsaw(SSLMethod):
    """Jigsaw puzzle solving with a context-free network (9 weight-shared encoder columns).

    The encoder's layers and weights run on the tiles rebuilt at the tile size (`at_input_size`); the
    permutation set [N, 9] (label k: position i holds tile p_k[i]) is a deterministic function of
    num_permutations and permutation_seed, so the options in a run's .keras file carry the labels' meaning.

    Args (besides the base class'):
        head: part mapping features [N, 9 * D] (tile features concatenated in shuffled order) to
            num_permutations logits.
    Reference: Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
    Puzzles", ECCV 2016.
    """

    Options = JigsawOptions
    parts = ("head",)
    log_names = ("jigsaw_top1",)

    @classmethod
    def resolve_options(cls, options, encoder):
        image_size = int(encoder.input_shape[1])
        source = options.resize or image_size
        grid = options.grid_size
        if grid is None:
            # A multiple of 3 gives equal cells with no pixel of the grid left unused.
            grid = max(3, min(scaled_pixels(30, source, multiple_of=3), source - source % 3))
        tile = options.tile_size
        if tile is None:
            tile = max(1, min(scaled_pixels(8, source), grid // 3 - options.channel_jitter))
        options = dataclasses.replace(options, grid_size=grid, tile_size=tile)
        check_geometry(image_size, options.grid_size, options.tile_size, options.channel_jitter,
                       resize=options.resize)
        tile_input = options.tile_resize or options.tile_size
        try:
            at_input_size(encoder, tile_input)
        except Exception as error:  # noqa: BLE001 - any build failure is a geometry problem here
            raise ConfigError(
                f"encoder '{encoder.name}' cannot run on {tile_input}x{tile_input} tiles ({error}); raise "
                "method.options.tile_resize (e.g. 16 for the 4-block ConvNet) or tile_size"
            ) from error
        return options

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        feature_dim = int(encoder.output_shape[-1])
        head = mlp_head(NUM_TILES * feature_dim, [options.head_width] * options.head_depth,
                        options.num_permutations, name="jigsaw_head")
        return {"head": head}

    def setup(self):
        options = self.options
        self.permutations = max_hamming_permutations(options.num_permutations, options.permutation_seed).tolist()
        self._permutation_table = np.asarray(self.permutations, np.int32)
        # The encoder's own input normalisation; identity when it has none.
        self.input_mean, self.input_std = input_normalization(self.encoder, default=IDENTITY_NORMALIZATION)
        self.encoder_tile_size = options.tile_resize or options.tile_size
        # The same layers and weights on tiles: one pass over all B * 9 tiles per step.
        self.tile_encoder = at_input_size(self.encoder, self.encoder_tile_size, name="tile_encoder")

    def augment(self, images, labels, seed):
        options = self.options
        gray_seed, tile_seed, shuffle_seed = split_seed(seed, 3)
        source = images
        if options.resize:
            source = tf.image.resize(source, [options.resize, options.resize], method="bilinear")
        source = random_grayscale(source, options.grayscale_probability, gray_seed)
        tiles = cut_tiles(source, options.grid_size, options.tile_size, tile_seed, options.channel_jitter)
        if options.tile_resize and options.tile_resize != options.tile_size:
            batch = tf.shape(tiles)[0]
            flat = tf.reshape(tiles, [-1, options.tile_size, options.tile_size, 3])
            flat = tf.image.resize(flat, [options.tile_resize, options.tile_resize], method="bilinear")
            tiles = tf.reshape(flat, [batch, NUM_TILES, options.tile_resize, options.tile_resize, 3])
        if options.normalize_tiles:
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
        loss = self.probe_images(data["images"], data, loss, logs)
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
