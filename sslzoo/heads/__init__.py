"""Reusable heads: MLPs on pooled features (SimCLR's projection head and DINO's among them), conv heads on
feature maps."""

from sslzoo.heads.heads import conv_head, dino_head, mlp_head, projection_head

__all__ = ["conv_head", "dino_head", "mlp_head", "projection_head"]
