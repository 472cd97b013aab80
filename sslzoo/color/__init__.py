"""Colour spaces and colour quantisation for the colour-prediction pretext tasks.

`lab`: sRGB <-> CIE Lab (D65) usable eagerly, in tf.data and inside functional models.
`quantize`: the ab grid and its in-gamut bins, the empirical prior, soft-encoding, class rebalancing and
annealed-mean decoding of colorization (Zhang, Isola, Efros, ECCV 2016).
"""

from sslzoo.color.lab import lab_to_rgb, lightness, linear_to_srgb, rgb_to_lab, srgb_to_linear

__all__ = ["rgb_to_lab", "lab_to_rgb", "lightness", "srgb_to_linear", "linear_to_srgb"]
