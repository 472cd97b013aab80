"""Losses as pure functions: tensors in, tensors out (contrastive ones return `(loss, logits, labels)`).

contrastive: NT-Xent (SimCLR) and InfoNCE (MoCo), negatives from the global batch across replicas.
cpc: CPC's InfoNCE of row-ahead predictions against patch encodings of the same and other images.
reconstruction: the context encoder's overlap-weighted masked L2 and its adversarial losses.
"""

from sslzoo.losses.contrastive import info_nce, nt_xent
from sslzoo.losses.cpc import cpc_loss
from sslzoo.losses.reconstruction import discriminator_loss, generator_adversarial_loss, masked_l2

__all__ = ["cpc_loss", "discriminator_loss", "generator_adversarial_loss", "info_nce", "masked_l2", "nt_xent"]
