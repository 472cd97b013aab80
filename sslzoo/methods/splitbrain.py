"""Split-brain autoencoders: two half-width networks predict each other's channels, L -> ab and ab -> L.

    lab = rgb_to_lab(images); F1(L) classifies ab over the in-gamut ab bins and F2(ab) classifies L over
    50 bins of width 2, each per pixel at 1/4 resolution with 1-hot targets and no rebalancing ((cl, cl),
    the paper's full method). The representation is both halves' features side by side.

The evaluated and exported encoder takes RGB like every other encoder and computes Lab inside itself
(`splitbrain_encoder`): its "feature_map" is the two halves' feature maps concatenated along channels
and its "features" their global average, i.e. the concatenation of both halves' pooled features.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

import keras
import tensorflow as tf

from sslzoo.backbones import FEATURE_MAP, FEATURES
from sslzoo.color import lab_to_rgb, quantize, rgb_to_lab
from sslzoo.config import ConfigError, option
from sslzoo.methods.base import SSLMethod, top1
from sslzoo.pictures import save_image_grid
from sslzoo.methods.colorization import (
    L_CENTER,
    L_SCALE,
    as_normalized_input,
    augment_images,
    check_prediction_stride,
    combine_l_ab,
    subsample,
    upsampling_head,
)
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class SplitBrainOptions:
    sub_width: float = option(0.5, "each sub-network's width as a fraction of the configured encoder's "
                                   "(paper: 1/2)", gt=0, le=1)
    # The colorization ab bins (paper: 313 bins on a 10x10 grid; 261 for sRGB here).
    grid_size: int = option(10, "L -> ab: ab cell size of the colour bins (paper: 10)", gt=0)
    l_bins: int = option(50, "ab -> L: L in [0, 100] as this many bins (paper: 50 bins of width 2)", ge=2)
    # Paper: 12x12 from 180x180 crops; must divide the image size.
    prediction_stride: int = option(4, "predict at 1/stride resolution (paper: 4)", gt=0)
    head_width: int = option(64, "width of the two upsampling heads", gt=0)
    # Paper (Lab): equal weights; its RGB-D variant weights one side 200x.
    ab_loss_weight: float = option(1.0, "weight of the L -> ab cross-entropy", ge=0)
    l_loss_weight: float = option(1.0, "weight of the ab -> L cross-entropy", ge=0)
    temperature: float = option(0.38, "annealed mean of the predicted ab, for the pictures only", gt=0)
    crop_padding: int = option(0, "random-crop padding in pixels (0 disables)", ge=0)
    flip: bool = option(True, "random horizontal flips")


# ab enters its network as ab / 50 (sRGB's a, b stay within about +-110), with a third, all-zero channel.
AB_SCALE = 50.0


def _half_network(encoder: keras.Model, name: str) -> keras.Model:
    """The encoder's images -> feature map, under a name unique within the joint encoder."""
    return keras.Model(encoder.input, encoder.get_layer(FEATURE_MAP).output, name=name)


def splitbrain_encoder(l_encoder: keras.Model, ab_encoder: keras.Model,
                       name: str = "splitbrain_encoder") -> keras.Model:
    """RGB [N, S, S, 3] in [0, 1] -> Lab -> [F1(L), F2(ab)] feature maps -> "feature_map" -> "features".

    Each sub-network keeps its 3-channel input and own Normalization: L enters as z = (L - 50) / 50 in all
    three channels (a 1-channel conv with the kernels summed), ab as (a / 50, b / 50, 0) after
    normalisation (a 2-channel conv: the zero channel contributes nothing). Built from keras.ops and
    built-in layers only, so it saves, loads under safe_mode and exports like any encoder.
    """
    inputs = keras.Input(l_encoder.input_shape[1:], dtype="float32", name="images")
    lab = rgb_to_lab(inputs)
    z_l = (lab[..., 0:1] - L_CENTER) / L_SCALE
    z_ab = lab[..., 1:3] / AB_SCALE
    l_input = keras.layers.Concatenate(name="l_channels")([z_l, z_l, z_l])
    ab_input = keras.layers.Concatenate(name="ab_channels")([z_ab, keras.ops.zeros_like(z_l)])
    l_map = _half_network(l_encoder, "l_to_ab_net")(as_normalized_input(l_input, l_encoder))
    ab_map = _half_network(ab_encoder, "ab_to_l_net")(as_normalized_input(ab_input, ab_encoder))
    feature_map = keras.layers.Concatenate(name=FEATURE_MAP)([l_map, ab_map])
    features = keras.layers.GlobalAveragePooling2D(name=FEATURES)(feature_map)
    return keras.Model(inputs, features, name=name)


@register_method("splitbrain")
@keras.saving.register_keras_serializable(package="sslzoo")
class SplitBrain(SSLMethod):
    """Split-brain autoencoder (cl, cl): F1 classifies ab from L, F2 classifies L from ab.

    Args (besides the base class'):
        encoder: `splitbrain_encoder` of two `sub_width` copies of the configured encoder (built by
            `build_parts` through `make_encoder`): RGB [N, S, S, 3] in [0, 1] -> [F1(L), F2(ab)] pooled
            features; its "feature_map" layer concatenates the two halves' maps (the first input is F1's).
        ab_head: part mapping F1's feature map to ab-bin logits [N, S / stride, S / stride, Q].
        l_head: part mapping F2's feature map to L-bin logits [N, S / stride, S / stride, l_bins].
    Reference: Zhang, Isola, Efros, "Split-Brain Autoencoders: Unsupervised Learning by Cross-Channel
    Prediction", CVPR 2017.
    """

    Options = SplitBrainOptions
    parts = ("ab_head", "l_head")
    log_names = ("ab_ce", "l_ce", "ab_top1", "l_top1")

    @classmethod
    def resolve_options(cls, options, encoder):
        check_prediction_stride("splitbrain", options.prediction_stride, int(encoder.input_shape[1]))
        return options

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        l_encoder, ab_encoder = half_width_encoders(encoder, make_encoder, options.sub_width)
        joint = splitbrain_encoder(l_encoder, ab_encoder)
        l_map, ab_map = joint.get_layer(FEATURE_MAP).input
        output_size = int(encoder.input_shape[1]) // options.prediction_stride
        num_ab = len(quantize.ab_bins(options.grid_size))
        return {
            "encoder": joint,
            "ab_head": upsampling_head(l_map.shape[1:], output_size, num_ab, options.head_width, name="ab_head"),
            "l_head": upsampling_head(ab_map.shape[1:], output_size, options.l_bins, options.head_width,
                                      name="l_head"),
        }

    def setup(self):
        self.centers = quantize.ab_bins(self.options.grid_size)
        l_map, ab_map = self.encoder.get_layer(FEATURE_MAP).input
        self.backbone = keras.Model(self.encoder.inputs, [l_map, ab_map, self.encoder.outputs[0]], name="backbone")

    def augment(self, images, labels, seed):
        images = augment_images(images, seed, self.options.crop_padding, self.options.flip)
        lab = rgb_to_lab(subsample(images, self.options.prediction_stride))
        return {
            "images": images,
            "ab_targets": quantize.nearest_bin(lab[..., 1:], self.centers),
            "l_targets": quantize.lightness_bin(lab[..., 0], self.options.l_bins),
            "labels": labels,
        }

    def predict_logits(self, images, training=False):
        """(ab logits from L, L logits from ab, joint features) for RGB images."""
        l_map, ab_map, features = self.backbone(images, training=training)
        ab_logits = tf.cast(self.ab_head(l_map, training=training), tf.float32)
        l_logits = tf.cast(self.l_head(ab_map, training=training), tf.float32)
        return ab_logits, l_logits, features

    def compute_loss_and_logs(self, data, training):
        ab_logits, l_logits, features = self.predict_logits(data["images"], training=training)
        ab_targets, l_targets = data["ab_targets"], data["l_targets"]
        # 1-hot cross-entropy, averaged over pixels (SB-paper Eq. 2, no rebalancing: App. B).
        ab_ce = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(ab_targets, ab_logits, from_logits=True))
        l_ce = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(l_targets, l_logits, from_logits=True))
        loss = self.options.ab_loss_weight * ab_ce + self.options.l_loss_weight * l_ce
        logs = {
            "loss": loss, "ab_ce": ab_ce, "l_ce": l_ce,
            "ab_top1": top1(tf.reshape(ab_logits, [-1, len(self.centers)]), tf.reshape(ab_targets, [-1])),
            "l_top1": top1(tf.reshape(l_logits, [-1, self.options.l_bins]), tf.reshape(l_targets, [-1])),
        }
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def save_pictures(self, data, run_dir):
        images = data["images"][:12]
        lab = rgb_to_lab(images)
        l_true, ab_true = lab[..., 0:1], lab[..., 1:]
        ab_logits, l_logits, _ = self.predict_logits(images)
        ab_pred = quantize.annealed_mean_from_logits(ab_logits, self.centers, self.options.temperature)
        # The expected L (T = 1): the L classes are ordered, their mean is the regression estimate.
        l_pred = quantize.annealed_mean_from_logits(l_logits, quantize.lightness_centers(self.options.l_bins), 1.0)
        l_pred = tf.image.resize(l_pred, tf.shape(images)[1:3], method="bilinear")
        grey = lambda l_channel: lab_to_rgb(tf.concat([l_channel, tf.zeros_like(ab_true)], -1))  # noqa: E731
        rows = [
            ("original", images.numpy()),
            ("true L", grey(l_true).numpy()),
            ("L -> ab (true L)", combine_l_ab(l_true, ab_pred).numpy()),
            ("ab -> L", grey(l_pred).numpy()),
            ("ab -> L (true ab)", lab_to_rgb(tf.concat([l_pred, ab_true], -1)).numpy()),
        ]
        return [save_image_grid(Path(run_dir) / "splitbrain.png", rows,
                                title="split-brain: ab predicted from L (annealed mean), L predicted from ab")]


def half_width_encoders(encoder: keras.Model, make_encoder: Optional[Callable[..., keras.Model]],
                        fraction: float) -> tuple[keras.Model, keras.Model]:
    """Two fresh encoders of the configured kind at `fraction` of the configured width.

    The configured width is read off the feature sizes (D(configured) / D(width=1)), since the builder
    receives the encoder, not its options.
    """
    if make_encoder is None:
        raise ConfigError(
            "split-brain builds its two sub-networks with make_encoder (the trainer passes it): build it "
            "through sslzoo.training.trainer.build_models or pass make_encoder to build_method"
        )
    try:
        unit = make_encoder(width=1.0)
    except TypeError as error:
        raise ConfigError(
            f"split-brain needs an encoder with a 'width' option for its half-width sub-networks ({error}); "
            "use e.g. convnet_small or resnet18"
        ) from error
    width = float(encoder.output_shape[-1]) / float(unit.output_shape[-1]) * fraction
    return make_encoder(width=width), make_encoder(width=width)
