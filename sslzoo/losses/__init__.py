"""Losses as pure functions: tensors in, tensors out (contrastive ones return `(loss, logits, labels)`).

contrastive: NT-Xent (SimCLR), InfoNCE (MoCo) and MoCo v3's in-batch loss, negatives from the global
    batch across replicas.
noncontrastive: BYOL's and SimSiam's regression to a stopped target; Barlow Twins' cross-correlation and
    VICReg's variance/covariance terms, with statistics of the global batch across replicas.
distillation: DINO's cross-entropy between the centred, sharpened teacher and the student, and its centre.
cpc: CPC's InfoNCE of row-ahead predictions against patch encodings of the same and other images.
reconstruction: colour regression's per-pixel L2; the context encoder's overlap-weighted masked L2 and its
    adversarial losses.
"""

from sslzoo.losses.contrastive import info_nce, moco_v3_loss, nt_xent
from sslzoo.losses.cpc import cpc_loss
from sslzoo.losses.distillation import dino_center_update, dino_loss
from sslzoo.losses.noncontrastive import barlow_twins_loss, byol_loss, simsiam_loss, vicreg_loss
from sslzoo.losses.reconstruction import (
    discriminator_loss,
    generator_adversarial_loss,
    mae_loss,
    masked_l2,
    pixel_l2,
)

__all__ = [
    "barlow_twins_loss", "byol_loss", "cpc_loss", "dino_center_update", "dino_loss", "discriminator_loss",
    "generator_adversarial_loss", "info_nce", "mae_loss", "masked_l2", "moco_v3_loss", "nt_xent", "pixel_l2",
    "simsiam_loss", "vicreg_loss",
]
