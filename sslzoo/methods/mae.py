"""MAE: mask most patches of an image, encode the visible ones with the ViT, reconstruct the pixels of the
masked ones with a light decoder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import split_seed
from sslzoo.augment.tokens import keep_count, patchify, random_masking, unpatchify
from sslzoo.augment.views import check_crop_scale, random_resized_crop_and_flip
from sslzoo.backbones import input_normalization
from sslzoo.backbones.vit import TOKENS, encode_visible, is_vit, vit_patch_size
from sslzoo.config import ConfigError, option
from sslzoo.heads import masked_decoder
from sslzoo.losses import mae_loss
from sslzoo.losses.reconstruction import patch_statistics
from sslzoo.methods.base import SSLMethod, require
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method


@dataclasses.dataclass(frozen=True)
class MAEOptions:
    """MAE's hyperparameters (the official models_mae.py and main_pretrain.py; decoder: the paper's default
    for every encoder size, 8 blocks of width 512)."""

    mask_ratio: float = option(0.75, "fraction of the patches hidden from the encoder, per image (official: "
                                     "0.75)", ge=0.0, lt=1.0)
    decoder_width: int = option(512, "token width of the decoder (official decoder_embed_dim: 512)", ge=4)
    decoder_depth: int = option(8, "transformer blocks of the decoder (official: 8)", ge=1)
    decoder_heads: int = option(16, "attention heads per decoder block (official: 16)", ge=1)
    decoder_mlp_ratio: float = option(4.0, "decoder MLP hidden width / decoder_width (official: 4)", gt=0.0)
    # main_pretrain.py's flag defaults to off; PRETRAIN.md's commands and the paper's best results
    # (Table 1d) use it.
    norm_pix_loss: bool = option(True, "targets are each patch standardised by its own mean and std (official "
                                       "recipe: on)")
    crop_scale: tuple[float, float] = option((0.2, 1.0), "[low, high] area fraction of the random resized crop "
                                                         "(official: 0.2-1)", gt=0.0, le=1.0)
    flip: bool = option(True, "horizontal flips with p = 0.5 (official)")

    def __post_init__(self):
        check_crop_scale(self.crop_scale, "crop_scale", "MAE: [0.2, 1.0]")
        require(self.decoder_width % self.decoder_heads == 0 and self.decoder_width % 4 == 0,
                f"decoder_width {self.decoder_width} must be a multiple of 4 (the sin-cos positions) and of "
                f"decoder_heads {self.decoder_heads}; e.g. method.options.decoder_width="
                f"{4 * self.decoder_heads * max(1, round(self.decoder_width / (4 * self.decoder_heads)))}")


@register_method("mae")
@keras.saving.register_keras_serializable(package="sslzoo")
class MAE(SSLMethod):
    """Masked autoencoder: L = mean over the masked patches of the per-patch MSE between the decoder's
    pixels and the image's (`mae_loss`), the encoder seeing only the visible patches.

    Args (besides the base class'):
        encoder: a ViT (`vit_tiny`, `vit_small`); in training its own layers run on the visible patches
            (`backbones.vit.encode_visible`); its normal forward, the full image's class token, is what is
            evaluated and exported.
        decoder: part `[latent [N, 1 + K, D], ids_restore [N, L]] -> [N, L, p*p*3]` (`heads.masked_decoder`).
    Targets are the patches of the image as the encoder sees it (normalised by the encoder's input mean and
    std, as the official targets are ImageNet-normalised), standardised per patch with `norm_pix_loss`. The
    masks are drawn in `augment` from the batch's seed, one per image. The online probe reads the full
    crop's detached features in inference mode (`probe_images`).
    Reference: He, Chen, Xie, Li, Dollar, Girshick, "Masked Autoencoders Are Scalable Vision Learners",
    CVPR 2022.
    """

    Options = MAEOptions
    parts = ("decoder",)
    log_names = ("reconstruction_loss",)

    @classmethod
    def resolve_options(cls, options, encoder):
        if not is_vit(encoder):
            raise ConfigError(
                f"mae needs a ViT encoder (it hides patch tokens from it), got '{encoder.name}'; set "
                "encoder.name=vit_tiny (or vit_small)")
        patches = _num_patches(encoder)
        kept = keep_count(patches, options.mask_ratio)
        require(1 <= kept < patches,
                f"method.options.mask_ratio {options.mask_ratio} keeps {kept} of the {patches} patches; the encoder "
                "needs at least one and the loss at least one masked: use a ratio in "
                f"[{1 / patches:.3g}, {1 - 1 / patches:.3g}] (MAE: 0.75)")
        return options

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        patch = vit_patch_size(encoder)
        decoder = masked_decoder(_num_patches(encoder), int(encoder.get_layer(TOKENS).output.shape[-1]),
                                 patch * patch * 3, width=options.decoder_width, depth=options.decoder_depth,
                                 num_heads=options.decoder_heads, mlp_ratio=options.decoder_mlp_ratio,
                                 name="decoder")
        return {"decoder": decoder}

    def setup(self):
        self.patch_size = vit_patch_size(self.encoder)
        self.num_patches = _num_patches(self.encoder)
        mean, std = input_normalization(self.encoder, default=(np.zeros(3, np.float32), np.ones(3, np.float32)))
        self.pixel_mean, self.pixel_std = np.float32(mean), np.float32(std)

    # --- data -----------------------------------------------------------------------------------
    def augment(self, images, labels, seed):
        crop_seed, mask_seed = split_seed(seed, 2)
        options = self.options
        views = random_resized_crop_and_flip(images, crop_seed, options.crop_scale, options.flip)
        ids_keep, ids_restore, mask = random_masking(tf.shape(views)[0], self.num_patches, options.mask_ratio,
                                                     mask_seed)
        return {"images": views, "ids_keep": ids_keep, "ids_restore": ids_restore, "mask": mask, "labels": labels}

    # --- loss -----------------------------------------------------------------------------------
    def target_patches(self, images):
        """The images as the encoder normalises them, as patches [N, L, p*p*3]."""
        return patchify((tf.cast(images, tf.float32) - self.pixel_mean) / self.pixel_std, self.patch_size)

    def reconstruct(self, data, training=False):
        """The decoder's prediction for every patch, [N, L, p*p*3] float32."""
        latent = encode_visible(self.encoder, data["images"], data["ids_keep"], training=training)
        ids_restore = tf.convert_to_tensor(data["ids_restore"], tf.int32)
        return tf.cast(self.decoder([latent, ids_restore], training=training), tf.float32)

    def compute_loss_and_logs(self, data, training):
        predictions = self.reconstruct(data, training)
        loss = mae_loss(predictions, self.target_patches(data["images"]), data["mask"], self.options.norm_pix_loss)
        logs = {"loss": loss, "reconstruction_loss": loss}
        loss = self.probe_images(data["images"], data, loss, logs)
        return loss, logs

    # --- pictures -------------------------------------------------------------------------------
    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """mae_reconstruction.png: 8 crops, their visible patches (masked ones grey), the prediction of
        every patch, and the prediction on the masked patches pasted among the visible ones (the official
        demo's rows). With norm_pix_loss the prediction is put back in each patch's own mean and std."""
        count = min(8, int(data["images"].shape[0]))
        sample = {key: data[key][:count] for key in ("images", "ids_keep", "ids_restore", "mask")}
        images = tf.cast(sample["images"], tf.float32)
        predictions = self.reconstruct(sample, training=False)
        if self.options.norm_pix_loss:
            mean, std = patch_statistics(self.target_patches(images))
            predictions = predictions * std + mean
        predicted = unpatchify(predictions, self.patch_size) * self.pixel_std + self.pixel_mean
        predicted = tf.clip_by_value(predicted, 0.0, 1.0)
        patch_values = self.patch_size * self.patch_size * 3
        masked = unpatchify(tf.repeat(sample["mask"][..., tf.newaxis], patch_values, axis=-1), self.patch_size)
        rows = [("original", images.numpy()),
                ("masked", (images * (1.0 - masked) + 0.5 * masked).numpy()),
                ("reconstruction", predicted.numpy()),
                ("reconstruction + visible", (images * (1.0 - masked) + predicted * masked).numpy())]
        title = f"MAE, {self.options.mask_ratio:.0%} of the patches masked"
        return [save_image_grid(Path(run_dir) / "mae_reconstruction.png", rows, title=title)]


def _num_patches(encoder: keras.Model) -> int:
    """L of a ViT encoder: its "tokens" output has 1 + L tokens."""
    return int(encoder.get_layer(TOKENS).output.shape[1]) - 1
