"""Context encoders: learn features by inpainting a masked region from its context.

The configured encoder embeds the image with a hole filled by the dataset mean; a decoder behind the
paper's channel-wise fully-connected bottleneck predicts the region (hole plus an overlap ring weighted
10x); optionally a discriminator with its own optimizer adds the adversarial loss (0.999 / 0.001).
`method.encoder` (not the decoder) is what gets evaluated and exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import random_crop_with_padding, random_flip_left_right, split_seed
from sslzoo.augment.masks import check_mask_options, make_hole, overlap_weights
from sslzoo.backbones import FEATURE_MAP, input_normalization
from sslzoo.config import ConfigError
from sslzoo.heads.decoders import context_decoder, context_discriminator, upsampling_steps
from sslzoo.losses.reconstruction import (
    discriminator_loss,
    generator_adversarial_loss,
    joint_loss,
    masked_l2,
)
from sslzoo.methods.base import SSLMethod, check_options
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method

DEFAULTS = {
    # central | random_block | random_region (paper, section 3.3). random_region is the default for feature
    # learning: on CIFAR-10 (8,000 images, 3 epochs) it gained kNN/linear +3.8/+3.4 over random init vs
    # +2.3/+1.1 for central and +2.6/-0.4 for random blocks (zoo_configs/context_encoder_convnet_small_cifar10.yaml).
    "mask": "random_region",
    # central: the predicted square (paper: the central quarter of the area, half the side); the input hole
    # is it shrunk by `overlap` per side (code: overlapPred = 4 at 128 px; card: 2 at 32 px).
    "region_size": 16,
    "overlap": 2,
    "overlap_weight": 10.0,  # code: overlapL2Weight
    # random_block: this many squares of block_size at random positions (4 x 8^2 <= 1/4 of 32^2).
    "block_size": 8,
    "num_blocks": 4,
    # random_region: blob masks covering a uniform fraction in `coverage` (code keeps 20-30%).
    "coverage": [0.2, 0.3],
    "noise_size": 8,
    # Hole fill in [0, 1] RGB; [] = the encoder's own input mean (the dataset mean), so the hole is exactly
    # zero after the encoder's normalisation ("the fill value must match your input normalisation").
    "fill": [],
    "decoder_width": 64,
    # The adversarial term: off by default for feature learning (card; the released feature model used
    # reconstruction only; measured here, see zoo_configs/context_encoder_convnet_small_cifar10.yaml).
    "adversarial": False,
    "reconstruction_weight": 0.999,
    "discriminator_width": 64,
    # The code's D optimizer: Adam(lr, beta1 = 0.5); its generator runs at 10x this rate when adversarial.
    "discriminator_learning_rate": 2e-4,
    "discriminator_beta_1": 0.5,
    "flip": True,
    "crop_padding": 0,
}


def _encoder_mean(encoder: keras.Model) -> list:
    """The per-channel mean of the encoder's Normalization layer, in [0, 1] units."""
    stats = input_normalization(encoder)
    if stats is None:
        raise ConfigError(
            f"encoder '{encoder.name}' has no 'normalization' layer to read the dataset mean from; set "
            "method.options.fill to the dataset's RGB mean in [0, 1], e.g. [0.49, 0.48, 0.45]"
        )
    return [float(v) for v in stats[0]]


@keras.saving.register_keras_serializable(package="sslzoo")
class ContextEncoder(SSLMethod):
    """Inpainting with a context encoder: encoder -> channel-wise FC -> decoder, optional adversary.

    Args:
        encoder: images float32 [N, S, S, 3] in [0, 1] -> features [N, D], with a "feature_map" layer
            [N, h, w, C]; it sees the masked image and is what gets exported.
        decoder: feature map [N, h, w, C] -> predicted region [N, R, R, 3] in [-1, 1] (R = region_size
            for central masks, S for random ones).
        discriminator: region [N, R, R, 3] in [-1, 1] -> logits [N, 1], or None (reconstruction only).
        mask: "central", "random_block" or "random_region"; region_size, overlap, overlap_weight,
            block_size, num_blocks, coverage, noise_size: see DEFAULTS.
        fill: RGB [3] in [0, 1] written into the hole.
        reconstruction_weight: lambda_rec (lambda_adv = 1 - lambda_rec) when there is a discriminator.
        discriminator_learning_rate, discriminator_beta_1: its Adam (the code's optimStateD).
        flip, crop_padding: augmentation before masking.
        num_classes: > 0 adds the online linear probe (on the masked images' features).
    Reference: Pathak, Krahenbuhl, Donahue, Darrell, Efros, "Context Encoders: Feature Learning by
    Inpainting", CVPR 2016.
    """

    log_names = ("reconstruction_loss",)
    adversarial_log_names = ("adversarial_loss", "discriminator_loss", "discriminator_real", "discriminator_fake")

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        discriminator: keras.Model | None = None,
        mask: str = "central",
        region_size: int = 16,
        overlap: int = 2,
        overlap_weight: float = 10.0,
        block_size: int = 8,
        num_blocks: int = 4,
        coverage: Sequence[float] = (0.2, 0.3),
        noise_size: int = 8,
        fill: Sequence[float] = (0.5, 0.5, 0.5),
        reconstruction_weight: float = 0.999,
        discriminator_learning_rate: float = 2e-4,
        discriminator_beta_1: float = 0.5,
        flip: bool = True,
        crop_padding: int = 0,
        num_classes: int = 0,
        **kwargs,
    ):
        super().__init__(encoder, num_classes=num_classes, **kwargs)
        self.decoder = decoder
        self.discriminator = discriminator
        self.mask = mask
        self.region_size = int(region_size)
        self.overlap = int(overlap)
        self.overlap_weight = float(overlap_weight)
        self.block_size = int(block_size)
        self.num_blocks = int(num_blocks)
        self.coverage = [float(c) for c in coverage]
        self.noise_size = int(noise_size)
        self.fill = [float(v) for v in fill]
        self.reconstruction_weight = float(reconstruction_weight)
        self.discriminator_learning_rate = float(discriminator_learning_rate)
        self.discriminator_beta_1 = float(discriminator_beta_1)
        self.flip = bool(flip)
        self.crop_padding = int(crop_padding)
        self.image_size = int(encoder.input_shape[1])
        # Central masks predict only the central square; random masks predict the whole image.
        self.output_size = self.region_size if mask == "central" else self.image_size
        self.region_offset = (self.image_size - self.output_size) // 2
        # One functional view of the encoder giving both outputs; it shares the encoder's layers.
        self.backbone = keras.Model(
            encoder.inputs, [encoder.get_layer(FEATURE_MAP).output, encoder.outputs[0]], name="backbone"
        )
        self.discriminator_optimizer = None
        if discriminator is not None:
            for name in self.adversarial_log_names:
                self.trackers[name] = keras.metrics.Mean(name=name)
            optimizer = keras.optimizers.Adam(
                learning_rate=self.discriminator_learning_rate, beta_1=self.discriminator_beta_1,
                name="discriminator_adam",
            )
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            # Built now (under the caller's strategy scope) and held as an attribute, so tf.train.Checkpoint
            # (the trainer's RunState) and .keras files carry its slots and step counter with the model.
            optimizer.build(discriminator.trainable_variables)
            self.discriminator_optimizer = optimizer
        self.built = True  # every part above is a built functional model

    # --- data -----------------------------------------------------------------------------------
    def mask_options(self) -> dict:
        return {
            "region_size": self.region_size, "overlap": self.overlap, "block_size": self.block_size,
            "num_blocks": self.num_blocks, "coverage": self.coverage, "noise_size": self.noise_size,
        }

    def augment(self, images, labels, seed):
        crop_seed, flip_seed, mask_seed = split_seed(seed, 3)
        images = random_crop_with_padding(images, self.crop_padding, crop_seed)
        if self.flip:
            images = random_flip_left_right(images, flip_seed)
        batch = tf.shape(images)[0]
        hole = make_hole(self.mask, batch, self.image_size, self.mask_options(), mask_seed)
        fill = tf.constant(self.fill, tf.float32)
        masked = images * (1.0 - hole) + fill * hole
        weights = self._crop(overlap_weights(hole, self.overlap, self.overlap_weight))
        # "images" stay the full images: the online probe's labels and the encoder contract refer to them.
        return {"images": images, "masked": masked, "weights": weights, "labels": labels}

    def _crop(self, x):
        """The predicted region of full-size [B, S, S, C] maps."""
        if self.output_size == self.image_size:
            return x
        start, size = self.region_offset, self.output_size
        return x[:, start:start + size, start:start + size, :]

    # --- losses ---------------------------------------------------------------------------------
    def inpaint(self, masked, training=False):
        """(predicted region [B, R, R, 3] in [-1, 1], features of the masked images [B, D])."""
        feature_map, features = self.backbone(masked, training=training)
        return tf.cast(self.decoder(feature_map, training=training), tf.float32), features

    def _regions(self, data, predictions):
        """(real region, fake region) in [-1, 1]. The fake one is the prediction where it is scored
        (weight > 0) and the real image elsewhere: for central masks, the prediction itself."""
        real = 2.0 * self._crop(tf.cast(data["images"], tf.float32)) - 1.0
        scored = tf.cast(data["weights"] > 0, tf.float32)
        return real, scored * predictions + (1.0 - scored) * real

    def discriminator_step_loss(self, real, fake, training):
        """D's own loss on a real and a (detached) generated region: no gradient reaches the generator."""
        real_logits = self.discriminator(real, training=training)
        fake_logits = self.discriminator(tf.stop_gradient(fake), training=training)
        return discriminator_loss(real_logits, fake_logits), real_logits, fake_logits

    def _generator_loss_and_logs(self, data, training):
        predictions, features = self.inpaint(data["masked"], training=training)
        real, fake = self._regions(data, predictions)
        reconstruction = masked_l2(predictions, real, data["weights"])
        logs = {"reconstruction_loss": reconstruction}
        loss = reconstruction
        if self.discriminator is not None:
            adversarial = generator_adversarial_loss(self.discriminator(fake, training=training))
            loss = joint_loss(reconstruction, adversarial, self.reconstruction_weight)
            logs["adversarial_loss"] = adversarial
        logs["loss"] = loss
        if self.probe is not None and "labels" in data:
            loss = loss + self.online_probe(features, data["labels"], logs)
        return loss, logs, real, fake

    def _discriminator_logs(self, logs, d_loss, real_logits, fake_logits):
        logs["discriminator_loss"] = d_loss
        logs["discriminator_real"] = tf.reduce_mean(tf.sigmoid(tf.cast(real_logits, tf.float32)))
        logs["discriminator_fake"] = tf.reduce_mean(tf.sigmoid(tf.cast(fake_logits, tf.float32)))

    def compute_loss_and_logs(self, data, training):
        loss, logs, real, fake = self._generator_loss_and_logs(data, training)
        if self.discriminator is not None:
            self._discriminator_logs(logs, *self.discriminator_step_loss(real, fake, training))
        return loss, logs

    # --- training -------------------------------------------------------------------------------
    def generator_variables(self) -> list:
        """What the configured optimizer trains: encoder, decoder (with its bottleneck), online probe."""
        variables = list(self.encoder.trainable_variables) + list(self.decoder.trainable_variables)
        if self.probe is not None:
            variables += list(self.probe.trainable_variables)
        return variables

    def train_step(self, data):
        if self.discriminator is None:
            return super().train_step(data)
        if not self.optimizer.built:
            # Over every trainable variable, as the trainer builds it: an optimizer built lazily on the
            # generator's subset would not match the one a loaded .keras file builds.
            self.optimizer.build(self.trainable_variables)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        generator_variables = self.generator_variables()
        discriminator_variables = self.discriminator.trainable_variables
        # One forward pass serves both players (simultaneous updates, as the code's D step then G step
        # reuse one generator output). D's loss sees the prediction detached, and only D's optimizer
        # applies its gradient; the generator's loss back-propagates through D without updating it.
        with tf.GradientTape() as generator_tape, tf.GradientTape() as discriminator_tape:
            loss, logs, real, fake = self._generator_loss_and_logs(data, training=True)
            d_loss, real_logits, fake_logits = self.discriminator_step_loss(real, fake, training=True)
            scaled = self.optimizer.scale_loss(loss / replicas)
            d_scaled = self.discriminator_optimizer.scale_loss(d_loss / replicas)
        d_grads = discriminator_tape.gradient(d_scaled, discriminator_variables)
        grads = generator_tape.gradient(scaled, generator_variables)
        self.discriminator_optimizer.apply(d_grads, discriminator_variables)
        self.optimizer.apply(grads, generator_variables)
        self._discriminator_logs(logs, d_loss, real_logits, fake_logits)
        return self.update_metrics(logs)

    # --- pictures -------------------------------------------------------------------------------
    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """inpainting.png: the input with its hole, the inpainted image (prediction pasted over the
        predicted region), the original."""
        count = 8
        masked = data["masked"][:count]
        images = tf.cast(data["images"][:count], tf.float32)
        predictions, _ = self.inpaint(masked, training=False)
        predicted = (predictions + 1.0) / 2.0
        scored = tf.cast(data["weights"][:count] > 0, tf.float32)
        start, size = self.region_offset, self.output_size
        region = self._crop(masked)
        pasted = scored * predicted + (1.0 - scored) * region
        pad = [[0, 0], [start, self.image_size - start - size], [start, self.image_size - start - size], [0, 0]]
        outside = 1.0 - tf.pad(tf.ones_like(pasted), pad)
        inpainted = tf.pad(pasted, pad) + outside * masked
        rows = [("input", masked.numpy()), ("prediction", np.clip(inpainted.numpy(), 0, 1)),
                ("original", images.numpy())]
        title = f"context encoder, {self.mask} mask"
        return [save_image_grid(Path(run_dir) / "inpainting.png", rows, title=title)]

    # --- serialization --------------------------------------------------------------------------
    def get_config(self):
        return {
            **super().get_config(),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "discriminator": (None if self.discriminator is None
                              else keras.saving.serialize_keras_object(self.discriminator)),
            "mask": self.mask,
            "region_size": self.region_size,
            "overlap": self.overlap,
            "overlap_weight": self.overlap_weight,
            "block_size": self.block_size,
            "num_blocks": self.num_blocks,
            "coverage": self.coverage,
            "noise_size": self.noise_size,
            "fill": self.fill,
            "reconstruction_weight": self.reconstruction_weight,
            "discriminator_learning_rate": self.discriminator_learning_rate,
            "discriminator_beta_1": self.discriminator_beta_1,
            "flip": self.flip,
            "crop_padding": self.crop_padding,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.nested_models():
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    @classmethod
    def nested_models(cls):
        return ("encoder", "decoder", "discriminator")


@register_method("context_encoder")
def build_context_encoder(options: dict, encoder: keras.Model, num_classes: int = 0,
                          make_encoder=None) -> ContextEncoder:
    """Builds the context encoder from `method.options` (see DEFAULTS)."""
    options = check_options("context_encoder", options, DEFAULTS)
    image_size = int(encoder.input_shape[1])
    check_mask_options(options["mask"], image_size, options)
    fill = options["fill"] or _encoder_mean(encoder)
    if len(fill) != 3 or not all(0.0 <= float(v) <= 1.0 for v in fill):
        raise ConfigError(f"method.options.fill {options['fill']}: need 3 RGB values in [0, 1], or [] for "
                          "the encoder's own input mean")
    if not 0.0 < options["reconstruction_weight"] <= 1.0:
        raise ConfigError(f"method.options.reconstruction_weight {options['reconstruction_weight']}: must be in "
                          "(0, 1] (paper: 0.999; the adversarial weight is 1 - it)")
    for key in ("decoder_width", "discriminator_width"):
        if options[key] < 1:
            raise ConfigError(f"method.options.{key} {options[key]}: must be >= 1")
    if options["crop_padding"] < 0:
        raise ConfigError(f"method.options.crop_padding {options['crop_padding']}: must be >= 0")
    try:
        map_shape = tuple(int(d) for d in encoder.get_layer(FEATURE_MAP).output.shape[1:])
    except ValueError as error:
        raise ConfigError(f"encoder '{encoder.name}' has no '{FEATURE_MAP}' layer for the decoder") from error
    output_size = options["region_size"] if options["mask"] == "central" else image_size
    if map_shape[0] != map_shape[1]:
        raise ConfigError(f"the decoder needs a square feature map, encoder '{encoder.name}' gives {map_shape}")
    upsampling_steps(map_shape[0], output_size)
    decoder = context_decoder(map_shape, output_size, width=options["decoder_width"], name="decoder")
    discriminator = None
    if options["adversarial"]:
        discriminator = context_discriminator(output_size, width=options["discriminator_width"],
                                              name="discriminator")
    return ContextEncoder(
        encoder,
        decoder,
        discriminator,
        mask=options["mask"],
        region_size=options["region_size"],
        overlap=options["overlap"],
        overlap_weight=float(options["overlap_weight"]),
        block_size=options["block_size"],
        num_blocks=options["num_blocks"],
        coverage=[float(c) for c in options["coverage"]],
        noise_size=options["noise_size"],
        fill=[float(v) for v in fill],
        reconstruction_weight=float(options["reconstruction_weight"]),
        discriminator_learning_rate=float(options["discriminator_learning_rate"]),
        discriminator_beta_1=float(options["discriminator_beta_1"]),
        flip=options["flip"],
        crop_padding=options["crop_padding"],
        num_classes=num_classes,
        name="context_encoder",
    )
