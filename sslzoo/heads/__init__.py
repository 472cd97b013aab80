"""Reusable heads: MLPs on pooled features (SimCLR's projection head and DINO's among them), conv heads on
feature maps, MAE's transformer decoder (`masked_decoder`)."""

from sslzoo.heads.heads import conv_head, dino_head, mlp_head, projection_head
from sslzoo.heads.masked_decoder import masked_decoder

__all__ = ["conv_head", "dino_head", "masked_decoder", "mlp_head", "projection_head"]
