"""CPC v2: predict the encodings of patches further down the image from the rows above them.

An image is cut into an overlapping grid of patches; a patch encoder (layer norm, not batch norm) encodes
each; a masked (row-causal) convolutional context network summarises rows <= i; linear heads W_k predict
the patch encodings k rows below, scored by InfoNCE against every other patch of the batch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Literal

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, split_seed
from sslzoo.augment.grid import augment_patches, check_grid, cut_grid, patch_mosaic, patch_positions
from sslzoo.backbones import FEATURE_MAP, FEATURES, at_input_size, input_normalization
from sslzoo.config import ConfigError, option
from sslzoo.losses.cpc import cpc_loss, first_clear_step
from sslzoo.methods.base import SSLMethod, scaled_pixels
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class CPCOptions:
    # Geometry. CIFAR default: 8x8 patches at stride 4 on the 32x32 image, a 7x7 grid with 50% overlap:
    # the paper's 7x7 grid and overlap at native scale (the Lightning-Bolts CIFAR recipe). Upsampling to
    # 64x64 with 16-px patches would keep the same grid at 4x the pixels per step. Unset, patch and stride
    # scale with the (resized) image S, so any S that is a multiple of 8 keeps the 7x7 grid.
    resize: int = option(0, "> 0: bilinear resize of the image to resize x resize before cutting the grid", ge=0)
    # patch_size, patch_stride and steps are checked against the image size (sslzoo.augment.grid.check_grid).
    patch_size: int | None = option(None, "side of a patch in pixels (None: 8 x S / 32, S = resize or the image "
                                          "size, nudged so the grid tiles S)")
    patch_stride: int | None = option(None, "pixels between neighbouring patches, patch_size / 2 is the paper's "
                                            "50% overlap (None: 4 x S / 32)")
    # K: predict 1..K rows ahead (CPC v1: up to 5 on its 7x7 grid; card for CIFAR: 3).
    steps: int = option(3, "K: the context predicts the patch encodings of K rows below it")
    # With overlapping patches the nearest rows share pixels with (or border) the context's own row, a
    # shortcut: copying pixels across the seam solves them (8-px patches at stride 4: rows 1 and 2 below).
    # A common CPC v2 reimplementation skips them (steps_to_ignore = 2, predicting rows 3..5).
    skip_overlapping: bool = option(False, "predict rows first..first + K - 1 below, first the nearest whose "
                                           "patches neither overlap nor touch the context's (patch_size // "
                                           "patch_stride + 1); false: rows 1..K")
    # Candidates of each prediction: the patches of G images (its own and G - 1 others). 0: the whole
    # batch, as in the paper; on a CPU those B^2 scores cost several times the patch encoder.
    group_size: int = option(0, "images whose patches are the candidates of a prediction (0 = the whole batch)",
                             ge=0)
    # Context network: a PixelCNN-style stack of residual blocks with row-causal convolutions.
    context_width: int = option(0, "channels of the context network (0 = the patch encoder's feature width)",
                                ge=0)
    context_blocks: int = option(2, "residual blocks of the context network", ge=1)
    context_kernel: int = option(3, "a causal conv sees this many rows (its own and those above) and columns",
                                 ge=1)
    # "layer": the patch encoder is the configured encoder rebuilt with layer norm (CPC v2); "configured":
    # the configured encoder as it is (BN lets patches of a batch share statistics: CPC v2's shortcut).
    encoder_norm: Literal["layer", "configured"] = option("layer", "normalisation of the patch encoder")
    # What `method.encoder` (evaluated, exported) computes: "grid" mean-pools the patch encodings over the
    # image's grid (the paper's evaluation), "full" runs the patch encoder's weights on the whole image.
    features: Literal["grid", "full"] = option("grid", "what the evaluated encoder computes")
    # Augmentations. Image level: flip and a random shift (crop with padding). Patch level: CPC v2's
    # flips and colour dropping (keep 1 of 3 channels), CPC v1's position jitter.
    flip: bool = option(True, "random horizontal flips of the whole image")
    crop_padding: int = option(0, "random shift of the whole image: crop padding in pixels (0 disables)", ge=0)
    patch_flip: float = option(0.5, "probability of flipping each patch horizontally", ge=0, le=1)
    colour_drop: float = option(0.5, "probability of keeping only 1 of a patch's 3 colour channels", ge=0, le=1)
    patch_jitter: int = option(0, "shift of each patch's content by up to this many pixels (zero border)", ge=0)


def _scaled_grid(options: CPCOptions, source: int) -> CPCOptions:
    """The unset patch size and stride, scaled from 8 and 4 at 32 px to the `source` image the grid is cut
    from. The grid must end on the image's last pixel ((source - patch) a multiple of the stride), which
    the scaled values do when source is a multiple of 8; otherwise the unset one moves to the nearest
    value that tiles."""
    patch, stride = options.patch_size, options.patch_stride
    if stride is None:
        stride = scaled_pixels(4, source, minimum=1)
        if patch is not None and 0 < patch < source:
            span = source - patch
            stride = min((d for d in range(1, span + 1) if span % d == 0), key=lambda d: (abs(d - stride), -d))
    if options.patch_size is None:
        patch = min(scaled_pixels(8, source, minimum=1), source)
        rest = (source - patch) % stride if stride >= 1 else 0
        if rest:
            smaller, larger = patch - (stride - rest), patch + rest
            patch = smaller if smaller >= 1 and (stride - rest < rest or larger > source) else larger
    return dataclasses.replace(options, patch_size=patch, patch_stride=stride)


# A patch encoder without a Normalization layer: colour dropping fills with 0.5 grey.
_GREY_INPUT = (np.full(3, 0.5, np.float32), np.ones(3, np.float32))


def _has_batch_norm(model: keras.Model) -> bool:
    return any(isinstance(layer, layers.BatchNormalization) for layer in model.layers)


def context_network(
    grid: int, feature_dim: int, width: int, blocks: int, kernel: int, name: str = "context_network"
) -> keras.Model:
    """Autoregressive context over a grid of patch encodings: the output at row r sees only rows <= r.

    Each residual block is ReLU -> 1x1 conv -> ReLU -> causal kxk conv -> ReLU -> 1x1 conv, added to its
    input (PixelCNN-style). The causal conv pads k - 1 zero rows on top and none below, so row r's
    window covers rows r - k + 1 .. r; 1x1 convs and the residual sum keep that property, so no output
    row ever sees a row below it (the target rows it must predict).

    Args:
        grid: n, the grid is n x n.
        feature_dim: D of the patch encodings [N, n, n, D].
        width: C, channels of the context [N, n, n, C].
        blocks: residual blocks (>= 1).
        kernel: k >= 1, rows (and columns) each causal conv sees.
    Reference: van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018
    (section 3.2: a PixelCNN-style autoregressive model over the 7x7 grid, top to bottom).
    """
    inputs = keras.Input((grid, grid, feature_dim), name=f"{name}_input")
    x = layers.Conv2D(width, 1, name=f"{name}_in")(inputs)
    for b in range(1, blocks + 1):
        prefix = f"{name}_block{b}"
        h = layers.ReLU(name=f"{prefix}_relu1")(x)
        h = layers.Conv2D(width, 1, name=f"{prefix}_reduce")(h)
        h = layers.ReLU(name=f"{prefix}_relu2")(h)
        h = layers.ZeroPadding2D(((kernel - 1, 0), (kernel // 2, (kernel - 1) // 2)), name=f"{prefix}_pad")(h)
        h = layers.Conv2D(width, kernel, padding="valid", name=f"{prefix}_causal")(h)
        h = layers.ReLU(name=f"{prefix}_relu3")(h)
        h = layers.Conv2D(width, 1, name=f"{prefix}_expand")(h)
        x = layers.Add(name=f"{prefix}_add")([x, h])
    return keras.Model(inputs, x, name=name)


def prediction_heads(grid: int, width: int, feature_dim: int, steps: int, name: str = "prediction_heads"):
    """The K linear maps W_k: context [N, n, n, C] -> predictions [N, n, n, K, D] (block k - 1 is W_k c).

    One bias-free Dense with K * D outputs is exactly K separate W_k (disjoint blocks of its kernel).
    """
    inputs = keras.Input((grid, grid, width), name=f"{name}_input")
    x = layers.Dense(steps * feature_dim, use_bias=False, name=f"{name}_dense")(inputs)
    outputs = layers.Reshape((grid, grid, steps, feature_dim), name=f"{name}_steps")(x)
    return keras.Model(inputs, outputs, name=name)


def grid_encoder(
    patch_encoder: keras.Model, image_size: int, patch_size: int, stride: int, resize: int = 0,
    name: str = "cpc_grid_encoder",
) -> keras.Model:
    """Images -> the mean of their patch encodings over the grid (CPC's evaluation features).

    Built from built-in layers only (Resizing, Cropping2D, Reshape, Concatenate, TimeDistributed, pooling),
    so it saves, loads under safe_mode and exports to SavedModel / TFLite like any encoder.

    Returns:
        keras.Model images [N, S, S, 3] in [0, 1] -> features [N, D]; its layer "feature_map" is the grid
        of patch encodings [N, n, n, D] and "patch_encoder" (TimeDistributed) holds the patch encoder.
    """
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="images")
    x = inputs
    source = image_size
    if resize:
        x = layers.Resizing(resize, resize, interpolation="bilinear", name="resize")(x)
        source = resize
    positions = patch_positions(source, patch_size, stride)
    n = len(positions)
    crops = []
    for r, top in enumerate(positions):
        for c, left in enumerate(positions):
            crop = layers.Cropping2D(
                ((top, source - top - patch_size), (left, source - left - patch_size)), name=f"patch_{r}_{c}"
            )(x)
            crops.append(layers.Reshape((1, patch_size, patch_size, 3), name=f"patch_{r}_{c}_row")(crop))
    patches = layers.Concatenate(axis=1, name="patch_grid")(crops)  # [N, n * n, P, P, 3]
    encoded = layers.TimeDistributed(patch_encoder, name="patch_encoder")(patches)  # [N, n * n, D]
    feature_map = layers.Reshape((n, n, int(patch_encoder.output_shape[-1])), name=FEATURE_MAP)(encoded)
    features = layers.GlobalAveragePooling2D(name=FEATURES)(feature_map)
    return keras.Model(inputs, features, name=name)


@register_method("cpc")
@keras.saving.register_keras_serializable(package="sslzoo")
class CPC(SSLMethod):
    """Contrastive Predictive Coding v2 on an overlapping grid of image patches.

    Args (besides the base class'):
        encoder: the evaluated/exported encoder, images float32 [N, S, S, 3] in [0, 1] -> features [N, D].
            features "grid": a `grid_encoder` whose "patch_encoder" layer wraps the patch encoder;
            "full": the patch encoder's layers at the image size (patches use `at_input_size`).
        context_network: part mapping patch encodings [N, n, n, D] -> context [N, n, n, C], row-causal.
        predictor: part mapping context [N, n, n, C] -> predictions [N, n, n, K, D] (the W_k).
        options: `CPCOptions`.
        num_classes: > 0 adds the online linear probe (on the detached mean patch encoding for "grid",
            on the full-image features for "full").
    Reference: Hénaff et al., "Data-Efficient Image Recognition with Contrastive Predictive Coding",
    ICML 2020; van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018.
    """

    Options = CPCOptions
    parts = ("context_network", "predictor")
    log_names = ("cpc_top1",)

    @classmethod
    def resolve_options(cls, options, encoder):
        options = _scaled_grid(options, options.resize or int(encoder.input_shape[1]))
        check_grid(int(encoder.input_shape[1]), options.patch_size, options.patch_stride, options.steps,
                   resize=options.resize, first_step=_first_step(options))
        return options

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        image_size = int(encoder.input_shape[1])
        patch, stride, resize = options.patch_size, options.patch_stride, options.resize
        n = check_grid(image_size, patch, stride, options.steps, resize=resize, first_step=_first_step(options))
        full = _layer_norm_encoder(encoder, make_encoder, options.encoder_norm)
        try:
            patch_encoder = at_input_size(full, patch, name="patch_encoder")
        except Exception as error:  # noqa: BLE001 - any build failure is a geometry problem here
            raise ConfigError(
                f"encoder '{full.name}' cannot run on {patch}x{patch} patches ({error}); use a larger "
                "method.options.patch_size (with resize to upsample) or a shallower encoder"
            ) from error
        if options.features == "grid":
            evaluated = grid_encoder(patch_encoder, image_size, patch, stride, resize=resize)
        else:
            evaluated = full
        feature_dim = int(full.output_shape[-1])
        width = options.context_width or feature_dim
        return {
            "encoder": evaluated,
            "context_network": context_network(n, feature_dim, width, options.context_blocks,
                                               options.context_kernel),
            "predictor": prediction_heads(n, width, feature_dim, options.steps),
        }

    def setup(self):
        if self.options.features == "grid":
            self.patch_encoder = self.encoder.get_layer("patch_encoder").layer
        else:
            self.patch_encoder = at_input_size(self.encoder, self.options.patch_size, name="patch_encoder")
        self.grid = int(self.context_network.input_shape[1])
        # The encoder's input mean per channel (its Normalization layer): what colour dropping fills with.
        self.input_mean = [float(v) for v in input_normalization(self.patch_encoder, default=_GREY_INPUT)[0]]
        self.first_step = _first_step(self.options)
        # Per-step top-1: the near steps are the ones a pixel shortcut solves, so their accuracy says how much
        # of cpc_top1 is the shortcut.
        self.log_names = ("cpc_top1", *self.step_names())

    def step_names(self) -> List[str]:
        return [f"cpc_top1_k{k}" for k in range(self.first_step, self.first_step + self.options.steps)]

    def augment(self, images, labels, seed):
        flip_seed, crop_seed, patch_seed = split_seed(seed, 3)
        options = self.options
        source = images
        if options.resize:
            source = tf.image.resize(source, [options.resize, options.resize], method="bilinear")
        if options.flip:
            source = random_flip_left_right(source, flip_seed)
        source = random_crop_with_padding(source, options.crop_padding, crop_seed)
        patches = cut_grid(source, options.patch_size, options.patch_stride)
        patches = augment_patches(
            patches, patch_seed, flip_probability=options.patch_flip, colour_drop_probability=options.colour_drop,
            jitter=options.patch_jitter, fill=self.input_mean,
        )
        # "images" stay the unaugmented images: the encoder contract and the "full" probe use them.
        return {"images": images, "patches": patches, "labels": labels}

    def encode_grid(self, patches, training=False):
        """Patches [B, n * n, P, P, 3] -> patch encodings [B, n, n, D] (one encoder pass over all)."""
        size = self.options.patch_size
        flat = tf.reshape(patches, [-1, size, size, 3])
        encoded = self.patch_encoder(flat, training=training)
        return tf.reshape(encoded, [-1, self.grid, self.grid, self.feature_dim])

    def predict_grid(self, patches, training=False):
        """(encodings [B, n, n, D], predictions [B, n, n, K, D]) for a batch of patch grids."""
        encodings = self.encode_grid(patches, training=training)
        context = self.context_network(encodings, training=training)
        return encodings, self.predictor(context, training=training)

    def compute_loss_and_logs(self, data, training):
        encodings, predictions = self.predict_grid(data["patches"], training=training)
        loss, _, hits = cpc_loss(predictions, encodings, self.options.group_size, self.first_step)
        top1 = tf.reduce_sum([tf.reduce_sum(h) for h in hits]) / tf.cast(
            tf.reduce_sum([tf.size(h) for h in hits]), tf.float32
        )
        logs = {"loss": loss, "cpc_top1": top1}
        logs.update({name: tf.reduce_mean(h) for name, h in zip(self.step_names(), hits)})
        if self.options.features == "grid":
            loss = self.add_probe_loss(loss, tf.reduce_mean(encodings, axis=[1, 2]), data, logs)
        else:
            loss = self.probe_images(data["images"], data, loss, logs)
        return loss, logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """cpc_grid.png: images, their (augmented) patch grids, which step-1 predictions found their patch,
        and the validation top-1 of every step per target position (grey: rows no context predicts)."""
        shown = min(8, int(data["images"].shape[0]))
        encodings, predictions = self.predict_grid(data["patches"], training=False)
        _, step_losses, hits = cpc_loss(predictions, encodings, self.options.group_size, self.first_step)
        n = self.grid
        patches = data["patches"].numpy()
        mosaics = [patch_mosaic(patches[b], n) for b in range(shown)]

        def target_map(values, k):  # hits are indexed by the context row; draw them at the target row
            grid = np.full((n, n, 3), [0.6, 0.6, 0.9], np.float32)
            grid[k:] = np.asarray(values)[..., None]
            return grid

        first = self.first_step
        nearest = hits[0].numpy()
        per_image = [target_map(nearest[b], first) for b in range(shown)]
        means = [target_map(h.numpy().mean(axis=0), k) for k, h in enumerate(hits, start=first)]
        captions = [
            [""] * shown,
            [""] * shown,
            [f"{nearest[b].mean():.2f}" for b in range(shown)],
            [f"k={k}: {h.numpy().mean():.2f}, loss {float(step_losses[k - first]):.2f}" for k, h in
             enumerate(hits, start=first)],
        ]
        rows = [
            ("image", data["images"].numpy()[:shown]),
            ("patch grid", np.stack(mosaics)),
            (f"k={first} hit", np.stack(per_image)),
            ("top-1/position", np.stack(means)),
        ]
        batch = int(data["patches"].shape[0])
        candidates = min(self.options.group_size or batch, batch) * n * n
        title = (f"CPC: {n}x{n} grid of {self.options.patch_size}-px patches, stride {self.options.patch_stride}; "
                 f"white = the prediction picks its patch among {candidates}")
        return [save_image_grid(Path(run_dir) / "cpc_grid.png", rows, captions=captions, title=title)]


def _first_step(options: CPCOptions) -> int:
    return first_clear_step(options.patch_size, options.patch_stride) if options.skip_overlapping else 1


def _layer_norm_encoder(encoder: keras.Model, make_encoder, encoder_norm: str) -> keras.Model:
    """The patch encoder's full-size form: the configured encoder, rebuilt with layer norm if it has BN."""
    if encoder_norm == "configured" or not _has_batch_norm(encoder):
        return encoder
    if make_encoder is None:
        raise ConfigError(
            f"CPC v2 needs a patch encoder without batch norm, and encoder '{encoder.name}' has "
            "BatchNormalization: build it with encoder.options.norm: layer, pass make_encoder, or set "
            "method.options.encoder_norm: configured to keep BN (patches can then share batch statistics)"
        )
    try:
        return make_encoder(norm="layer")
    except TypeError as error:
        raise ConfigError(
            f"encoder '{encoder.name}' has no layer-norm option ({error}); CPC v2 wants one (convnet_small, "
            "resnet18 and resnet50 take norm: layer), or set method.options.encoder_norm: configured"
        ) from error
