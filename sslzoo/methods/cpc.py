"""CPC v2: predict the encodings of patches further down the image from the rows above them.

An image is cut into an overlapping grid of patches; a patch encoder (layer norm, not batch norm) encodes
each; a masked (row-causal) convolutional context network summarises rows <= i; linear heads W_k predict
the patch encodings k rows below, scored by InfoNCE against every other patch of the batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, split_seed
from sslzoo.augment.grid import augment_patches, check_grid, cut_grid, patch_mosaic, patch_positions
from sslzoo.backbones import FEATURE_MAP, FEATURES, at_input_size, input_normalization
from sslzoo.config import ConfigError
from sslzoo.losses.cpc import cpc_loss
from sslzoo.methods.base import SSLMethod, check_options
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method

FEATURE_MODES = ("grid", "full")
ENCODER_NORMS = ("layer", "configured")

DEFAULTS = {
    # Geometry. CIFAR default: 8x8 patches at stride 4 on the 32x32 image, a 7x7 grid with 50% overlap:
    # the paper's 7x7 grid and overlap at native scale (the Lightning-Bolts CIFAR recipe). Upsampling to
    # 64x64 with 16-px patches would keep the same grid at 4x the pixels per step.
    "resize": 0,  # > 0: bilinear resize of the image to resize x resize before cutting the grid
    "patch_size": 8,
    "patch_stride": 4,
    "steps": 3,  # K: predict 1..K rows ahead (CPC v1: up to 5 on its 7x7 grid; card for CIFAR: 3)
    # Candidates of each prediction: the patches of G images (its own and G - 1 others). 0: the whole
    # batch, as in the paper; on a CPU those B^2 scores cost several times the patch encoder.
    "group_size": 0,
    # Context network: a PixelCNN-style stack of residual blocks with row-causal convolutions.
    "context_width": 0,  # 0: the patch encoder's feature width
    "context_blocks": 2,
    "context_kernel": 3,  # a causal conv sees `context_kernel` rows (its own and those above) and columns
    # "layer": the patch encoder is the configured encoder rebuilt with layer norm (CPC v2); "configured":
    # the configured encoder as it is (BN lets patches of a batch share statistics: CPC v2's shortcut).
    "encoder_norm": "layer",
    # What `method.encoder` (evaluated, exported) computes: "grid" mean-pools the patch encodings over the
    # image's grid (the paper's evaluation), "full" runs the patch encoder's weights on the whole image.
    "features": "grid",
    # Augmentations. Image level: flip and a random shift (crop with padding). Patch level: CPC v2's
    # flips and colour dropping (keep 1 of 3 channels), CPC v1's position jitter.
    "flip": True,
    "crop_padding": 0,
    "patch_flip": 0.5,
    "colour_drop": 0.5,
    "patch_jitter": 0,
}


def _input_mean(encoder: keras.Model) -> list[float]:
    """The encoder's input mean per channel (its Normalization layer); 0.5 grey when it has none."""
    stats = input_normalization(encoder)
    return [float(v) for v in stats[0]] if stats else [0.5, 0.5, 0.5]


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


@keras.saving.register_keras_serializable(package="sslzoo")
class CPC(SSLMethod):
    """Contrastive Predictive Coding v2 on an overlapping grid of image patches.

    Args:
        encoder: the evaluated/exported encoder, images float32 [N, S, S, 3] in [0, 1] -> features [N, D].
            features "grid": a `grid_encoder` whose "patch_encoder" layer wraps the patch encoder;
            "full": the patch encoder's layers at the image size (patches use `at_input_size`).
        context_network: patch encodings [N, n, n, D] -> context [N, n, n, C], row-causal.
        predictor: context [N, n, n, C] -> predictions [N, n, n, K, D] (the W_k).
        resize, patch_size, patch_stride, steps, group_size, features, flip, crop_padding, patch_flip,
            colour_drop, patch_jitter: see DEFAULTS.
        num_classes: > 0 adds the online linear probe (on the detached mean patch encoding for "grid",
            on the full-image features for "full").
    Reference: Hénaff et al., "Data-Efficient Image Recognition with Contrastive Predictive Coding",
    ICML 2020; van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018.
    """

    log_names = ("cpc_top1",)

    def __init__(
        self,
        encoder: keras.Model,
        context_network: keras.Model,
        predictor: keras.Model,
        resize: int = 0,
        patch_size: int = 8,
        patch_stride: int = 4,
        steps: int = 3,
        group_size: int = 0,
        features: str = "grid",
        flip: bool = True,
        crop_padding: int = 0,
        patch_flip: float = 0.5,
        colour_drop: float = 0.5,
        patch_jitter: int = 0,
        num_classes: int = 0,
        **kwargs,
    ):
        super().__init__(encoder, num_classes=num_classes, **kwargs)
        self.context_network = context_network
        self.predictor = predictor
        self.resize = int(resize)
        self.patch_size = int(patch_size)
        self.patch_stride = int(patch_stride)
        self.steps = int(steps)
        self.group_size = int(group_size)
        self.features = str(features)
        self.flip = bool(flip)
        self.crop_padding = int(crop_padding)
        self.patch_flip = float(patch_flip)
        self.colour_drop = float(colour_drop)
        self.patch_jitter = int(patch_jitter)
        if self.features == "grid":
            self.patch_encoder = encoder.get_layer("patch_encoder").layer
        else:
            self.patch_encoder = at_input_size(encoder, self.patch_size, name="patch_encoder")
        self.grid = int(context_network.input_shape[1])
        self.input_mean = _input_mean(self.patch_encoder)
        self.built = True  # every part above is a built functional model

    def augment(self, images, labels, seed):
        flip_seed, crop_seed, patch_seed = split_seed(seed, 3)
        source = images
        if self.resize:
            source = tf.image.resize(source, [self.resize, self.resize], method="bilinear")
        if self.flip:
            source = random_flip_left_right(source, flip_seed)
        source = random_crop_with_padding(source, self.crop_padding, crop_seed)
        patches = cut_grid(source, self.patch_size, self.patch_stride)
        patches = augment_patches(
            patches, patch_seed, flip_probability=self.patch_flip, colour_drop_probability=self.colour_drop,
            jitter=self.patch_jitter, fill=self.input_mean,
        )
        # "images" stay the unaugmented images: the encoder contract and the "full" probe use them.
        return {"images": images, "patches": patches, "labels": labels}

    def encode_grid(self, patches, training=False):
        """Patches [B, n * n, P, P, 3] -> patch encodings [B, n, n, D] (one encoder pass over all)."""
        size = self.patch_size
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
        loss, _, hits = cpc_loss(predictions, encodings, self.group_size)
        top1 = tf.reduce_sum([tf.reduce_sum(h) for h in hits]) / tf.cast(
            tf.reduce_sum([tf.size(h) for h in hits]), tf.float32
        )
        logs = {"loss": loss, "cpc_top1": top1}
        if self.probe is not None and "labels" in data:
            if self.features == "grid":
                features = tf.reduce_mean(encodings, axis=[1, 2])
            else:
                features = self.encoder(data["images"], training=training)
            loss = loss + self.online_probe(features, data["labels"], logs)
        return loss, logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """cpc_grid.png: images, their (augmented) patch grids, which step-1 predictions found their patch,
        and the validation top-1 of every step per target position (grey: rows no context predicts)."""
        shown = min(8, int(data["images"].shape[0]))
        encodings, predictions = self.predict_grid(data["patches"], training=False)
        _, step_losses, hits = cpc_loss(predictions, encodings, self.group_size)
        n = self.grid
        patches = data["patches"].numpy()
        mosaics = [patch_mosaic(patches[b], n) for b in range(shown)]

        def target_map(values, k):  # hits are indexed by the context row; draw them at the target row
            grid = np.full((n, n, 3), [0.6, 0.6, 0.9], np.float32)
            grid[k:] = np.asarray(values)[..., None]
            return grid

        step1 = hits[0].numpy()
        per_image = [target_map(step1[b], 1) for b in range(shown)]
        means = [target_map(h.numpy().mean(axis=0), k) for k, h in enumerate(hits, start=1)]
        captions = [
            [""] * shown,
            [""] * shown,
            [f"{step1[b].mean():.2f}" for b in range(shown)],
            [f"k={k}: {h.numpy().mean():.2f}, loss {float(step_losses[k - 1]):.2f}" for k, h in
             enumerate(hits, start=1)],
        ]
        rows = [
            ("image", data["images"].numpy()[:shown]),
            ("patch grid", np.stack(mosaics)),
            ("k=1 hit", np.stack(per_image)),
            ("top-1/position", np.stack(means)),
        ]
        batch = int(data["patches"].shape[0])
        candidates = min(self.group_size or batch, batch) * n * n
        title = (f"CPC: {n}x{n} grid of {self.patch_size}-px patches, stride {self.patch_stride}; "
                 f"white = the prediction picks its patch among {candidates}")
        return [save_image_grid(Path(run_dir) / "cpc_grid.png", rows, captions=captions, title=title)]

    def get_config(self):
        return {
            **super().get_config(),
            "context_network": keras.saving.serialize_keras_object(self.context_network),
            "predictor": keras.saving.serialize_keras_object(self.predictor),
            "resize": self.resize,
            "patch_size": self.patch_size,
            "patch_stride": self.patch_stride,
            "steps": self.steps,
            "group_size": self.group_size,
            "features": self.features,
            "flip": self.flip,
            "crop_padding": self.crop_padding,
            "patch_flip": self.patch_flip,
            "colour_drop": self.colour_drop,
            "patch_jitter": self.patch_jitter,
        }

    @classmethod
    def nested_models(cls):
        return ("encoder", "context_network", "predictor")


def _check_choices(options: dict) -> None:
    for key, choices in (("features", FEATURE_MODES), ("encoder_norm", ENCODER_NORMS)):
        if options[key] not in choices:
            raise ConfigError(f"method.options.{key} {options[key]!r}: use one of {', '.join(choices)}")
    for key in ("patch_flip", "colour_drop"):
        if not 0.0 <= options[key] <= 1.0:
            raise ConfigError(f"method.options.{key} {options[key]}: a probability, must be in [0, 1]")
    for key in ("resize", "crop_padding", "patch_jitter", "context_width", "group_size"):
        if options[key] < 0:
            raise ConfigError(f"method.options.{key} {options[key]}: must be >= 0")
    for key in ("context_blocks", "context_kernel"):
        if options[key] < 1:
            raise ConfigError(f"method.options.{key} {options[key]}: must be >= 1")


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


@register_method("cpc")
def build_cpc(options: dict, encoder: keras.Model, num_classes: int = 0, make_encoder=None) -> CPC:
    """Builds CPC v2 from `method.options` (see DEFAULTS)."""
    options = check_options("cpc", options, DEFAULTS)
    _check_choices(options)
    image_size = int(encoder.input_shape[1])
    patch, stride, resize = options["patch_size"], options["patch_stride"], options["resize"]
    n = check_grid(image_size, patch, stride, options["steps"], resize=resize)
    full = _layer_norm_encoder(encoder, make_encoder, options["encoder_norm"])
    try:
        patch_encoder = at_input_size(full, patch, name="patch_encoder")
    except Exception as error:  # noqa: BLE001 - any build failure is a geometry problem here
        raise ConfigError(
            f"encoder '{full.name}' cannot run on {patch}x{patch} patches ({error}); use a larger "
            "method.options.patch_size (with resize to upsample) or a shallower encoder"
        ) from error
    if options["features"] == "grid":
        evaluated = grid_encoder(patch_encoder, image_size, patch, stride, resize=resize)
    else:
        evaluated = full
    feature_dim = int(full.output_shape[-1])
    width = options["context_width"] or feature_dim
    return CPC(
        evaluated,
        context_network(n, feature_dim, width, options["context_blocks"], options["context_kernel"]),
        prediction_heads(n, width, feature_dim, options["steps"]),
        resize=resize,
        patch_size=patch,
        patch_stride=stride,
        steps=options["steps"],
        group_size=options["group_size"],
        features=options["features"],
        flip=options["flip"],
        crop_padding=options["crop_padding"],
        patch_flip=float(options["patch_flip"]),
        colour_drop=float(options["colour_drop"]),
        patch_jitter=options["patch_jitter"],
        num_classes=num_classes,
        name="cpc",
    )
