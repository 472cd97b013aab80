"""sRGB <-> CIE Lab (D65) with the sRGB transfer curve, written once for eager, graph and model use.

    lab = rgb_to_lab(images)        # float32 [..., 3]: L in [0, 100], a and b roughly in [-128, 127]
    rgb = lab_to_rgb(lab)           # back to sRGB in [0, 1] (clipped; clip=False keeps out-of-gamut values)

Both functions are built from `keras.ops` on the TensorFlow backend: called on `tf.Tensor`s (eagerly, in a
`tf.function` or inside `tf.data`) they return `tf.Tensor`s; called on a functional model's symbolic
tensors they become ordinary Keras operations. That is what lets an encoder compute Lab *inside itself*
from its RGB input with built-in operations only, so its `.keras` file loads with `safe_mode=True`
without importing sslzoo, and its SavedModel/TFLite exports carry the conversion (nothing to
re-implement at serving time). `tf.image` has no Lab conversion.

The constants are the sRGB primaries' RGB -> XYZ matrix (IEC 61966-2-1, as tabulated by B. Lindbloom) and
its D65 white, taken as the matrix's row sums so that sRGB white maps to exactly (100, 0, 0). They
reproduce skimage's `rgb2lab` to 1e-4 on the primaries (e.g. red -> (53.2408, 80.0925, 67.2032)).
"""

from __future__ import annotations

import numpy as np
from keras import ops

# Linear sRGB -> XYZ (D65), rows X, Y, Z.
RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    np.float64,
)
D65_WHITE = RGB_TO_XYZ.sum(axis=1)  # XYZ of sRGB white: (0.95047, 1.0, 1.08883)

# CIE f(t): cube root above (6/29)^3, a linear segment below (avoids the infinite slope at 0).
_DELTA = 6.0 / 29.0
_EPSILON = _DELTA**3
_LINEAR_SLOPE = 1.0 / (3.0 * _DELTA**2)
_LINEAR_OFFSET = 4.0 / 29.0

# Row-vector form: xyz_normalised = linear_rgb @ _RGB_TO_XYZ_N; the white division is folded in.
_RGB_TO_XYZ_N = (RGB_TO_XYZ / D65_WHITE[:, None]).T.astype(np.float32)
_XYZ_N_TO_RGB = np.linalg.inv(RGB_TO_XYZ / D65_WHITE[:, None]).T.astype(np.float32)


def srgb_to_linear(rgb):
    """The sRGB decoding curve: [0, 1] gamma-encoded -> linear light."""
    # The clamp keeps `power` away from negative bases in the branch `where` discards (NaN gradients).
    curve = ops.power((ops.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4)
    return ops.where(rgb > 0.04045, curve, rgb / 12.92)


def linear_to_srgb(linear):
    """The sRGB encoding curve: linear light -> gamma-encoded [0, 1]."""
    curve = 1.055 * ops.power(ops.maximum(linear, 0.0031308), 1.0 / 2.4) - 0.055
    return ops.where(linear > 0.0031308, curve, linear * 12.92)


def _lab_f(t):
    cube_root = ops.power(ops.maximum(t, _EPSILON), 1.0 / 3.0)
    return ops.where(t > _EPSILON, cube_root, t * _LINEAR_SLOPE + _LINEAR_OFFSET)


def _lab_f_inverse(f):
    return ops.where(f > _DELTA, f * f * f, (f - _LINEAR_OFFSET) / _LINEAR_SLOPE)


def rgb_to_lab(rgb):
    """sRGB -> CIE Lab (D65).

    Args:
        rgb: float [..., 3] in [0, 1] (gamma-encoded sRGB, as decoded images are).
    Returns:
        float32 [..., 3]: L in [0, 100], a and b roughly in [-86, 98] and [-108, 94] for sRGB colours.
    """
    rgb = ops.cast(rgb, "float32")
    xyz = ops.matmul(srgb_to_linear(rgb), _RGB_TO_XYZ_N)
    f = _lab_f(xyz)
    fx, fy, fz = f[..., 0:1], f[..., 1:2], f[..., 2:3]
    return ops.concatenate([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab, clip: bool = True):
    """CIE Lab (D65) -> sRGB.

    Args:
        lab: float [..., 3], L in [0, 100].
        clip: clip to [0, 1]; Lab colours outside the sRGB gamut (e.g. a predicted ab with a dark L)
            otherwise come back below 0 or above 1.
    Returns:
        float32 [..., 3] gamma-encoded sRGB.
    """
    lab = ops.cast(lab, "float32")
    fy = (lab[..., 0:1] + 16.0) / 116.0
    fx = fy + lab[..., 1:2] / 500.0
    fz = fy - lab[..., 2:3] / 200.0
    xyz = _lab_f_inverse(ops.concatenate([fx, fy, fz], axis=-1))
    rgb = linear_to_srgb(ops.matmul(xyz, _XYZ_N_TO_RGB))
    return ops.clip(rgb, 0.0, 1.0) if clip else rgb


def lightness(rgb):
    """L of sRGB images, float32 [..., 1] in [0, 100] (depends on the luminance Y only)."""
    luminance = ops.matmul(srgb_to_linear(ops.cast(rgb, "float32")), _RGB_TO_XYZ_N[:, 1:2])
    return 116.0 * _lab_f(luminance) - 16.0
