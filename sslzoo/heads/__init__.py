"""Reusable heads: MLPs on pooled features, conv heads on feature maps."""

from sslzoo.heads.heads import conv_head, mlp_head

__all__ = ["conv_head", "mlp_head"]
