"""Reusable heads: MLPs on pooled features (DINO's head among them), conv heads on feature maps."""

from sslzoo.heads.heads import conv_head, dino_head, mlp_head

__all__ = ["conv_head", "dino_head", "mlp_head"]
