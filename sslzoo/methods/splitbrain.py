"""Split-brain autoencoders: two half-width networks predict each other's channels, L -> ab and ab -> L.

    lab = rgb_to_lab(images); F1(L) classifies ab over the in-gamut ab bins and F2(ab) classifies L over
    50 bins of width 2, each per pixel at 1/4 resolution with 1-hot targets and no rebalancing ((cl, cl),
    the paper's full method). The representation is both halves' features side by side.

The evaluated and exported encoder takes RGB like every other encoder and computes Lab inside itself
(`splitbrain_encoder`): its "feature_map" is the two halves' feature maps concatenated along channels
and its "features" their global average, i.e. the concatenation of both halves' pooled features.

The paper's ablations (Table 2/3) are options: `l_to_ab_loss` / `ab_to_l_loss: regression` make a direction
an L2 regression of the channel values (Eq. 1) instead of a classification (Eq. 2), and `features: l | ab`
evaluates one half alone. The halves share no weight and no loss term, so training both and evaluating F1
is training F1 alone: `features: l` is the paper's "L -> ab" row, `features: ab` its "ab -> L" row.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Literal, Optional

import keras
import tensorflow as tf

from sslzoo.backbones import FEATURE_MAP, FEATURES
from sslzoo.color import lab_to_rgb, quantize, rgb_to_lab
from sslzoo.config import ConfigError, option
from sslzoo.losses import pixel_l2
from sslzoo.methods.base import SSLMethod, top1
from sslzoo.pictures import save_image_grid
from sslzoo.methods.colorization import (
    AB_SCALE,
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
    # Paper Table 2: (cl, cl) is the full method, (reg, reg) its L2 twin; for ab -> L regression did
    # slightly better. Regression targets are the channels as the networks see them: (L - 50) / 50 and
    # ab / 50, i.e. the paper's L2 on Lab values up to a constant factor.
    l_to_ab_loss: Literal["classification", "regression"] = option(
        "classification", "L -> ab: cross-entropy over the ab bins (Eq. 2) or L2 on ab (Eq. 1)")
    ab_to_l_loss: Literal["classification", "regression"] = option(
        "classification", "ab -> L: cross-entropy over the L bins (Eq. 2) or L2 on L (Eq. 1)")
    features: Literal["both", "l", "ab"] = option(
        "both", "the evaluated representation: both halves' features (paper), or F1's alone (l: the network "
                "that sees L) or F2's (ab)")


def _half_network(encoder: keras.Model, name: str) -> keras.Model:
    """The encoder's images -> feature map, under a name unique within the joint encoder."""
    return keras.Model(encoder.input, encoder.get_layer(FEATURE_MAP).output, name=name)


def splitbrain_encoder(l_encoder: keras.Model, ab_encoder: keras.Model, features: str = "both",
                       name: str = "splitbrain_encoder") -> tuple[keras.Model, Optional[keras.Model]]:
    """(the evaluated encoder, the other half): RGB [N, S, S, 3] in [0, 1] -> Lab -> F1(L), F2(ab).

    The encoder's "feature_map" is [F1(L), F2(ab)] concatenated (`features` "both"), or F1(L) ("l") or
    F2(ab) ("ab") alone, and its "features" that map's global average. The other half is the network left
    out of the evaluated encoder, RGB -> its feature map: it is trained but not evaluated (None for "both").
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
    other = None
    if features == "both":
        feature_map = keras.layers.Concatenate(name=FEATURE_MAP)([l_map, ab_map])
    else:
        kept, dropped = (l_map, ab_map) if features == "l" else (ab_map, l_map)
        feature_map = keras.layers.Identity(name=FEATURE_MAP)(kept)
        # A functional model holds only the layers between its inputs and outputs, so the encoder
        # leaves the other half out and this model carries it (saved, trained, never evaluated).
        other = keras.Model(inputs, dropped, name="ab_half" if features == "l" else "l_half")
    pooled = keras.layers.GlobalAveragePooling2D(name=FEATURES)(feature_map)
    return keras.Model(inputs, pooled, name=name), other


@register_method("splitbrain")
@keras.saving.register_keras_serializable(package="sslzoo")
class SplitBrain(SSLMethod):
    """Split-brain autoencoder (cl, cl): F1 classifies ab from L, F2 classifies L from ab.

    Args (besides the base class'):
        encoder: `splitbrain_encoder` of two `sub_width` copies of the configured encoder (built by
            `build_parts` through `make_encoder`): RGB [N, S, S, 3] in [0, 1] -> [F1(L), F2(ab)] pooled
            features; its "feature_map" layer concatenates the two halves' maps (the first input is F1's).
            With `features` l or ab, only that half's.
        ab_head: part mapping F1's feature map to ab-bin logits [N, S / stride, S / stride, Q], or with
            `l_to_ab_loss: regression` to ab / 50 [..., 2].
        l_head: part mapping F2's feature map to L-bin logits [N, S / stride, S / stride, l_bins], or with
            `ab_to_l_loss: regression` to (L - 50) / 50 [..., 1].
        other_half: part, the half network the evaluated encoder leaves out (`features` l or ab), RGB ->
            its feature map; None for `features: both`.
    Reference: Zhang, Isola, Efros, "Split-Brain Autoencoders: Unsupervised Learning by Cross-Channel
    Prediction", CVPR 2017.
    """

    Options = SplitBrainOptions
    parts = ("ab_head", "l_head", "other_half")

    @classmethod
    def resolve_options(cls, options, encoder):
        check_prediction_stride("splitbrain", options.prediction_stride, int(encoder.input_shape[1]))
        return options

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        l_encoder, ab_encoder = half_width_encoders(encoder, make_encoder, options.sub_width)
        joint, other_half = splitbrain_encoder(l_encoder, ab_encoder, options.features)
        output_size = int(encoder.input_shape[1]) // options.prediction_stride
        ab_outputs = 2 if options.l_to_ab_loss == "regression" else len(quantize.ab_bins(options.grid_size))
        l_outputs = 1 if options.ab_to_l_loss == "regression" else options.l_bins
        l_shape = l_encoder.get_layer(FEATURE_MAP).output.shape[1:]
        ab_shape = ab_encoder.get_layer(FEATURE_MAP).output.shape[1:]
        return {
            "encoder": joint,
            "ab_head": upsampling_head(l_shape, output_size, ab_outputs, options.head_width, name="ab_head"),
            "l_head": upsampling_head(ab_shape, output_size, l_outputs, options.head_width, name="l_head"),
            "other_half": other_half,
        }

    def setup(self):
        self.centers = quantize.ab_bins(self.options.grid_size)
        if self.other_half is None:
            l_map, ab_map = self.encoder.get_layer(FEATURE_MAP).input
        else:
            kept = self.encoder.get_layer(FEATURE_MAP).input
            other = self.other_half(self.encoder.inputs[0])
            l_map, ab_map = (kept, other) if self.options.features == "l" else (other, kept)
        self.backbone = keras.Model(self.encoder.inputs, [l_map, ab_map, self.encoder.outputs[0]], name="backbone")
        kinds = {"ab": self.options.l_to_ab_loss, "l": self.options.ab_to_l_loss}
        self.log_names = (tuple(f"{side}_{'l2' if kind == 'regression' else 'ce'}" for side, kind in kinds.items())
                          + tuple(f"{side}_top1" for side, kind in kinds.items() if kind == "classification"))

    def augment(self, images, labels, seed):
        images = augment_images(images, seed, self.options.crop_padding, self.options.flip)
        lab = rgb_to_lab(subsample(images, self.options.prediction_stride))
        if self.options.l_to_ab_loss == "regression":
            ab_targets = lab[..., 1:] / AB_SCALE
        else:
            ab_targets = quantize.nearest_bin(lab[..., 1:], self.centers)
        if self.options.ab_to_l_loss == "regression":
            l_targets = (lab[..., 0:1] - L_CENTER) / L_SCALE
        else:
            l_targets = quantize.lightness_bin(lab[..., 0], self.options.l_bins)
        return {"images": images, "ab_targets": ab_targets, "l_targets": l_targets, "labels": labels}

    def predict_logits(self, images, training=False):
        """(ab outputs from L, L outputs from ab, the evaluated features) for RGB images: logits, or the
        scaled channel values of a regression direction."""
        l_map, ab_map, features = self.backbone(images, training=training)
        ab_logits = tf.cast(self.ab_head(l_map, training=training), tf.float32)
        l_logits = tf.cast(self.l_head(ab_map, training=training), tf.float32)
        return ab_logits, l_logits, features

    def compute_loss_and_logs(self, data, training):
        ab_logits, l_logits, features = self.predict_logits(data["images"], training=training)
        logs = {}
        ab_loss = direction_loss("ab", ab_logits, data["ab_targets"], self.options.l_to_ab_loss, logs)
        l_loss = direction_loss("l", l_logits, data["l_targets"], self.options.ab_to_l_loss, logs)
        loss = self.options.ab_loss_weight * ab_loss + self.options.l_loss_weight * l_loss
        logs = {"loss": loss, **logs}
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def save_pictures(self, data, run_dir):
        images = data["images"][:12]
        lab = rgb_to_lab(images)
        l_true, ab_true = lab[..., 0:1], lab[..., 1:]
        ab_logits, l_logits, _ = self.predict_logits(images)
        if self.options.l_to_ab_loss == "regression":
            ab_pred = ab_logits * AB_SCALE
        else:
            ab_pred = quantize.annealed_mean_from_logits(ab_logits, self.centers, self.options.temperature)
        if self.options.ab_to_l_loss == "regression":
            l_pred = l_logits * L_SCALE + L_CENTER
        else:
            # The expected L (T = 1): the L classes are ordered, their mean is the regression estimate.
            l_pred = quantize.annealed_mean_from_logits(
                l_logits, quantize.lightness_centers(self.options.l_bins), 1.0)
        l_pred = tf.image.resize(l_pred, tf.shape(images)[1:3], method="bilinear")
        grey = lambda l_channel: lab_to_rgb(tf.concat([l_channel, tf.zeros_like(ab_true)], -1))  # noqa: E731
        rows = [
            ("original", images.numpy()),
            ("true L", grey(l_true).numpy()),
            ("L -> ab (true L)", combine_l_ab(l_true, ab_pred).numpy()),
            ("ab -> L", grey(l_pred).numpy()),
            ("ab -> L (true ab)", lab_to_rgb(tf.concat([l_pred, ab_true], -1)).numpy()),
        ]
        how = "regressed" if self.options.l_to_ab_loss == "regression" else "annealed mean"
        return [save_image_grid(Path(run_dir) / "splitbrain.png", rows,
                                title=f"split-brain: ab predicted from L ({how}), L predicted from ab")]


def direction_loss(side: str, outputs: tf.Tensor, targets: tf.Tensor, kind: str, logs: dict) -> tf.Tensor:
    """One direction's loss, averaged over pixels, logged under `side`: a classification's 1-hot
    cross-entropy (SB-paper Eq. 2, no rebalancing: App. B; logs <side>_ce and <side>_top1) or a
    regression's L2 (Eq. 1; logs <side>_l2)."""
    if kind == "regression":
        logs[f"{side}_l2"] = loss = tf.reduce_mean(pixel_l2(outputs, targets))
        return loss
    logs[f"{side}_ce"] = loss = tf.reduce_mean(
        keras.losses.sparse_categorical_crossentropy(targets, outputs, from_logits=True))
    logs[f"{side}_top1"] = top1(tf.reshape(outputs, [-1, outputs.shape[-1]]), tf.reshape(targets, [-1]))
    return loss


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
