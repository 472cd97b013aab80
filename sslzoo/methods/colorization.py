"""Colorization: learn features by predicting the colour (ab) of a greyscale image (L) as a distribution.

    lab = rgb_to_lab(images); the network sees L only and predicts, at 1/4 resolution, a distribution
    over the Q in-gamut ab bins; the target is the soft-encoded true ab; the loss is cross-entropy,
    optionally rebalanced towards rare colours by the training set's colour prior. `loss: regression` is
    the paper's L2 baseline instead: the network regresses ab itself.

The evaluated and exported encoder takes RGB like every other encoder and computes L inside itself
(`lightness_encoder`), so downstream users see the features of L, as in the paper.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, split_seed
from sslzoo.backbones import FEATURE_MAP, FEATURES, IDENTITY_NORMALIZATION, input_normalization
from sslzoo.color import lab_to_rgb, lightness, rgb_to_lab
from sslzoo.color import quantize
from sslzoo.config import ConfigError, option
from sslzoo.files import atomic_write
from sslzoo.losses import pixel_l2
from sslzoo.methods.base import SSLMethod, require
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class ColorizationOptions:
    # 261 in-gamut sRGB bins at the paper's 10 (paper: 313), see sslzoo.color.quantize.
    grid_size: int = option(10, "ab cell size of the colour bins (paper: 10)", gt=0)
    # Paper: 5; the released code: 10.
    neighbors: int = option(5, "soft-encoding over the k nearest bins (paper: 5)", ge=1)
    sigma: float = option(5.0, "soft-encoding Gaussian (paper: 5)", gt=0)
    # Paper Sec. 2.1, Eq. 1: the L2 baseline, which averages multimodal colours towards grey.
    loss: Literal["classification", "regression"] = option(
        "classification", "cross-entropy over the ab bins (paper) or L2 on ab / 50 (the paper's L2 baseline; "
                          "the bin, soft-encoding and rebalancing keys then do nothing)")
    rebalance: bool = option(True, "class rebalancing by the smoothed colour prior (paper: on)")
    rebalance_lambda: float = option(0.5, "mix of the prior with uniform (paper: 1/2)", ge=0, le=1)
    prior_sigma: float = option(5.0, "smoothing of the prior (paper: 5)", gt=0)
    temperature: float = option(0.38, "annealed mean for the pictures (paper: 0.38)", gt=0)
    # Released code: targets subsampled by 4; must divide the image size.
    prediction_stride: int = option(4, "predict ab at 1/stride resolution (paper: 4)", gt=0)
    head_width: int = option(128, "width of the upsampling colour head", gt=0)
    # Zero padding would add black, colourless borders to the targets.
    crop_padding: int = option(0, "random-crop padding in pixels (0 disables)", ge=0)
    flip: bool = option(True, "random horizontal flips (released code: mirroring)")

    def __post_init__(self):
        if self.grid_size > 0:
            num_bins = len(quantize.ab_bins(self.grid_size))
            require(self.neighbors <= num_bins,
                    f"neighbors {self.neighbors}: must be in [1, {num_bins}] (paper: 5)")


# The encoder's input: z = (L - 50) / 50 in [-1, 1], the paper's L - 50 up to a scale the first conv absorbs.
L_CENTER = 50.0
L_SCALE = 50.0
# ab as a network sees or predicts it: ab / 50 (sRGB's a, b stay within about +-110).
AB_SCALE = 50.0
# Greyscale photos (no |a| or |b| above 5 among the target pixels) carry no colour signal (NonGrayMaskLayer).
GREY_THRESHOLD = 5.0


def as_normalized_input(standardized, encoder: keras.Model):
    """Values [..., 3] that the encoder's Normalization layer turns back into exactly `standardized`.

    The configured encoders take RGB and normalise it with fixed per-channel stats; feeding
    mean + std * z makes the first conv see z itself, whatever the stats are (none: mean 0, std 1).
    """
    mean, std = input_normalization(encoder, default=IDENTITY_NORMALIZATION)
    return standardized * std + mean


def lightness_encoder(encoder: keras.Model, name: Optional[str] = None) -> keras.Model:
    """RGB [N, S, S, 3] in [0, 1] -> L -> the encoder's feature map ("feature_map") -> "features".

    L enters as z = (L - 50) / 50 replicated to the encoder's 3 input channels. A 3-channel conv on three
    equal channels is a 1-channel conv whose kernel is the sum of the three (sum_c w_c z = (sum_c w_c) z),
    so this is the paper's 1-channel L input with the configured encoder unchanged. Built from keras.ops
    and built-in layers only: it saves, loads under safe_mode and exports (SavedModel, TFLite) like any
    encoder; the encoder's weights are shared, not copied.
    """
    inputs = keras.Input(encoder.input_shape[1:], dtype="float32", name="images")
    z = (lightness(inputs) - L_CENTER) / L_SCALE
    grey = keras.layers.Concatenate(name="lightness_channels")([z, z, z])
    return _wrap(encoder, inputs, as_normalized_input(grey, encoder), name or f"lightness_{encoder.name}")


def _wrap(encoder: keras.Model, inputs, encoder_inputs, name: str) -> keras.Model:
    feature_map = keras.Model(encoder.input, encoder.get_layer(FEATURE_MAP).output, name=encoder.name)
    x = keras.layers.Identity(name=FEATURE_MAP)(feature_map(encoder_inputs))
    features = keras.layers.GlobalAveragePooling2D(name=FEATURES)(x)
    return keras.Model(inputs, features, name=name)


def upsampling_head(map_shape, output_size: int, num_outputs: int, width: int, name: str) -> keras.Model:
    """Feature map [N, h, w, C] -> per-pixel logits [N, output_size, output_size, num_outputs].

    Like the paper's conv8 (a stride-2 deconvolution, then convs) and its 1x1 classifier: one
    Conv2DTranspose(4, stride 2)-BN-ReLU per doubling up to `output_size`, a Conv3x3-BN-ReLU, a 1x1 conv.
    """
    size = int(map_shape[0])
    inputs = keras.Input(tuple(int(d) for d in map_shape), name=f"{name}_input")
    x = inputs
    step = 0
    while size < output_size:
        step += 1
        x = keras.layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False,
                                         name=f"{name}_deconv{step}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_deconv_bn{step}")(x)
        x = keras.layers.ReLU(name=f"{name}_deconv_relu{step}")(x)
        size *= 2
    if size != output_size:
        raise ConfigError(
            f"the encoder's feature map is {int(map_shape[0])}x{int(map_shape[0])}, which cannot be "
            f"doubled up to the {output_size}x{output_size} prediction; set method.options.prediction_stride "
            "so that image_size / prediction_stride is the feature-map size times a power of 2"
        )
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    outputs = keras.layers.Conv2D(num_outputs, 1, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


def subsample(images: tf.Tensor, stride: int) -> tf.Tensor:
    """The target lattice: one pixel per stride x stride block (the block's centre-most pixel), as the
    released code's stride-4 1x1 convolution picks one pixel per block."""
    offset = stride // 2
    return images[:, offset::stride, offset::stride, :]


def nongrey(ab: tf.Tensor) -> tf.Tensor:
    """float32 [B]: 1 for images with any |a| or |b| above 5 at the target pixels, 0 for greyscale ones."""
    return tf.cast(tf.reduce_any(tf.abs(ab) > GREY_THRESHOLD, axis=[1, 2, 3]), tf.float32)


def masked_pixel_mean(values: tf.Tensor, image_mask: tf.Tensor) -> tf.Tensor:
    """Mean of per-pixel values [B, h, w] over the pixels of the images kept by `image_mask` [B]."""
    pixels = tf.cast(tf.reduce_prod(tf.shape(values)[1:]), tf.float32)
    total = tf.reduce_sum(values * image_mask[:, tf.newaxis, tf.newaxis])
    return total / (tf.maximum(tf.reduce_sum(image_mask), 1.0) * pixels)


def augment_images(images, seed, crop_padding: int, flip: bool):
    """The released code's augmentation at CIFAR scale: optional padded random crop, horizontal flip."""
    crop_seed, flip_seed = split_seed(seed, 2)
    images = random_crop_with_padding(images, crop_padding, crop_seed)
    if flip:
        images = random_flip_left_right(images, flip_seed)
    return images


@register_method("colorization")
@keras.saving.register_keras_serializable(package="sslzoo")
class Colorization(SSLMethod):
    """Colorful image colorization: L -> a distribution over quantised ab per pixel.

    Args (besides the base class'):
        encoder: RGB images [N, S, S, 3] in [0, 1] -> features [N, D], computing L inside itself
            (`lightness_encoder` around the configured encoder, built by `build_parts`), with a
            "feature_map" layer; the evaluated and exported encoder.
        head: part mapping the feature map to logits [N, S / stride, S / stride, Q] over the in-gamut
            ab bins; with `loss: regression`, to ab / 50 [N, S / stride, S / stride, 2].
    The colour prior p (fitted by `prepare` on the training images) and the rebalancing weights w live in
    non-trainable variables, so checkpoints and saved models carry them; before `prepare` p is uniform.
    Reference: Zhang, Isola, Efros, "Colorful Image Colorization", ECCV 2016.
    """

    Options = ColorizationOptions
    parts = ("head",)
    log_names = ("colour_ce", "colour_top1")

    @classmethod
    def resolve_options(cls, options, encoder):
        check_prediction_stride("colorization", options.prediction_stride, int(encoder.input_shape[1]))
        return options

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        image_size = int(encoder.input_shape[1])
        num_bins = 2 if options.loss == "regression" else len(quantize.ab_bins(options.grid_size))
        try:
            map_shape = encoder.get_layer(FEATURE_MAP).output.shape[1:]
        except ValueError as error:
            raise ConfigError(f"encoder '{encoder.name}' has no '{FEATURE_MAP}' layer for the colour head") from error
        # The head first, then the L-only encoder around the configured one (the order of the layer names).
        head = upsampling_head(map_shape, image_size // options.prediction_stride, num_bins,
                               options.head_width, name="colour_head")
        return {"head": head, "encoder": lightness_encoder(encoder)}

    def setup(self):
        self.centers = quantize.ab_bins(self.options.grid_size)
        num_bins = len(self.centers)
        outputs = 2 if self.regression else num_bins
        if int(self.head.output_shape[-1]) != outputs:
            raise ConfigError(f"colorization head predicts {self.head.output_shape[-1]} values per pixel, "
                              f"{self.options.loss} needs {outputs}")
        if self.regression:
            self.log_names = ("colour_l2",)
        self.backbone = keras.Model(
            self.encoder.inputs, [self.encoder.get_layer(FEATURE_MAP).output, self.encoder.outputs[0]],
            name="backbone",
        )
        self.prior = self.add_weight(
            shape=(num_bins,), initializer=keras.initializers.Constant(1.0 / num_bins), trainable=False,
            name="prior",
        )
        self.class_weights = self.add_weight(
            shape=(num_bins,), initializer="ones", trainable=False, name="class_weights"
        )

    @property
    def regression(self) -> bool:
        return self.options.loss == "regression"

    def augment(self, images, labels, seed):
        options = self.options
        images = augment_images(images, seed, options.crop_padding, options.flip)
        ab = rgb_to_lab(subsample(images, options.prediction_stride))[..., 1:]
        if self.regression:
            return {"images": images, "ab_targets": ab / AB_SCALE, "colourful": nongrey(ab), "labels": labels}
        indices, weights = quantize.soft_encode(ab, self.centers, options.neighbors, options.sigma)
        return {"images": images, "target_indices": indices, "target_weights": weights,
                "colourful": nongrey(ab), "labels": labels}

    def prepare(self, train_images: np.ndarray, run_dir: Optional[Path]) -> None:
        """p from the training images' target pixels; p~ and w from p (deterministic). The L2 baseline
        has no bins to weigh: nothing to fit."""
        if self.regression:
            return
        options = self.options
        prior = colour_prior(train_images, self.centers, options.prediction_stride, options.grid_size)
        smoothed = quantize.smooth_prior(prior, self.centers, options.prior_sigma)
        self.prior.assign(prior.astype(np.float32))
        self.class_weights.assign(quantize.rebalancing_weights(smoothed, options.rebalance_lambda).astype(np.float32))
        if run_dir is not None:
            atomic_write(Path(run_dir) / "prior.npy", lambda tmp: np.save(tmp, prior), suffix=".npy")

    def compute_loss_and_logs(self, data, training):
        feature_map, features = self.backbone(data["images"], training=training)
        logits = tf.cast(self.head(feature_map, training=training), tf.float32)
        if self.regression:
            # Greyscale photos stay out here too: their all-zero ab would pull the regression towards grey.
            loss = masked_pixel_mean(pixel_l2(logits, data["ab_targets"]), data["colourful"])
            logs = {"loss": loss, "colour_l2": loss}
            return self.add_probe_loss(loss, features, data, logs), logs
        indices, weights = data["target_indices"], data["target_weights"]
        cross_entropy = quantize.soft_cross_entropy(logits, indices, weights)  # [B, h, w]
        mask = data["colourful"]
        # v(Z) = w_{q*}, q* = the nearest bin. Weighting the loss gives exactly the released code's
        # gradient (ClassRebalanceMultLayer: identity forward, gradient times w).
        pixel_weights = tf.gather(self.class_weights, indices[..., 0]) if self.options.rebalance else 1.0
        loss = masked_pixel_mean(cross_entropy * pixel_weights, mask)
        hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), indices[..., 0]), tf.float32)
        logs = {"loss": loss, "colour_ce": masked_pixel_mean(cross_entropy, mask),
                "colour_top1": masked_pixel_mean(hits, mask)}
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def colorize(self, images: tf.Tensor) -> tf.Tensor:
        """RGB [N, S, S, 3] -> the annealed-mean (or regressed) colorization of its L, RGB [N, S, S, 3]."""
        feature_map, _ = self.backbone(images, training=False)
        logits = self.head(feature_map, training=False)
        if self.regression:
            return combine_l_ab(lightness(images), tf.cast(logits, tf.float32) * AB_SCALE)
        ab = quantize.annealed_mean_from_logits(logits, self.centers, self.options.temperature)
        return combine_l_ab(lightness(images), ab)

    def save_pictures(self, data, run_dir):
        images = data["images"][:12]
        grey = lab_to_rgb(tf.concat([lightness(images), tf.zeros_like(images[..., :2])], axis=-1))
        how = "L2-regressed ab" if self.regression else "annealed-mean ab"
        label = "L2 regression" if self.regression else f"prediction T={self.options.temperature:g}"
        rows = [("L (input)", grey.numpy()), (label, self.colorize(images).numpy()), ("original", images.numpy())]
        return [save_image_grid(Path(run_dir) / "colorization.png", rows,
                                title=f"colorization: L input, {how} with the true L, original")]


def combine_l_ab(l_channel: tf.Tensor, ab: tf.Tensor) -> tf.Tensor:
    """RGB from L [N, S, S, 1] and ab [N, h, w, 2] (bilinearly upsampled to S x S when h < S)."""
    size = tf.shape(l_channel)[1:3]
    ab = tf.image.resize(ab, size, method="bilinear")
    return lab_to_rgb(tf.concat([l_channel, ab], axis=-1))


def colour_prior(images_uint8: np.ndarray, centers: np.ndarray, stride: int, grid_size: int,
                 chunk: int = 2048) -> np.ndarray:
    """p over `centers` from the pixels that become targets (one per stride x stride block)."""
    counts = np.zeros(len(centers), np.float64)
    for start in range(0, len(images_uint8), chunk):
        batch = tf.constant(images_uint8[start:start + chunk], tf.float32) / 255.0
        ab = rgb_to_lab(subsample(batch, stride))[..., 1:].numpy()
        counts += quantize.empirical_prior(ab, centers, grid_size) * ab[..., 0].size
    return counts / max(counts.sum(), 1.0)


def check_prediction_stride(method: str, stride: int, image_size: int) -> None:
    """The prediction lattice must tile the image: a stride that does not divide it names the key and the fix."""
    if image_size % stride:
        raise ConfigError(
            f"method.options.prediction_stride {stride} for {method} does not divide the image size "
            f"{image_size}; use a divisor (paper: 4, i.e. predictions at 1/4 resolution)"
        )
