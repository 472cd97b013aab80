"""The `synthetic` source: a deterministic, labelled dataset of coloured shapes made with NumPy.

No files, no network: for tests, smoke runs and demos. Eight of the ten classes have a canonical upright
orientation (a triangle points up, a house has its roof on top), so rotation prediction is learnable;
foreground colour, scale, position, a small tilt, background colour, gradient, stripes and noise vary per
image so that a representation has to look at the shape.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Tuple

import numpy as np

from sslzoo.data.splits import DataSplits, make_stats, split_arrays

logger = logging.getLogger(__name__)

_Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _triangle(u, v, apex=0.9, base=-0.8, half_width=0.9):
    """Upward triangle: apex (0, apex), base at v=base of half-width `half_width`."""
    return (v >= base) & (v <= apex) & (np.abs(u) <= half_width * (apex - v) / (apex - base))


def _heart(x, y):
    """The heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3, lobes up, point down."""
    r = x * x + y * y - 1
    return r * r * r <= x * x * y * y * y


def _disc(u, v, radius):
    return u * u + v * v <= radius * radius


def _box(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


# Shapes in local coordinates u (right) and v (up), both in about [-1, 1].
SHAPES: Dict[str, _Mask] = {
    "triangle": lambda u, v: _triangle(u, v),
    "arrow": lambda u, v: _triangle(u, v, apex=0.95, base=0.05, half_width=0.8) | _box(u, v, -0.22, 0.22, -0.95, 0.1),
    "letter T": lambda u, v: _box(u, v, -0.85, 0.85, 0.5, 0.9) | _box(u, v, -0.2, 0.2, -0.9, 0.55),
    "letter L": lambda u, v: _box(u, v, -0.65, -0.25, -0.9, 0.9) | _box(u, v, -0.65, 0.65, -0.9, -0.5),
    "house": lambda u, v: _box(u, v, -0.6, 0.6, -0.9, 0.1) | _triangle(u, v, apex=0.9, base=0.05, half_width=0.9),
    "heart": lambda u, v: _heart(1.15 * u, 1.15 * v - 0.25),
    "mushroom": lambda u, v: (_disc(u, v + 0.05, 0.9) & (v >= -0.05)) | _box(u, v, -0.22, 0.22, -0.9, 0.0),
    "cup": lambda u, v: _box(u, v, -0.75, 0.75, -0.85, 0.85) & ~_box(u, v, -0.38, 0.38, -0.45, 1.0),
    "disc": lambda u, v: _disc(u, v, 0.85),
    "ring": lambda u, v: _disc(u, v, 0.9) & ~_disc(u, v, 0.5),
}
CLASS_NAMES = list(SHAPES)

_SUPERSAMPLE = 2  # masks are drawn at 2x and averaged down: antialiased edges


def _uniform(rng: np.random.Generator, low: float, high: float, shape) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


def _colours(rng: np.random.Generator, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB in [0, 1], [n, 3] each, at least 0.45 apart (Euclidean)."""
    foreground = _uniform(rng, 0.0, 1.0, [n, 3])
    background = _uniform(rng, 0.0, 1.0, [n, 3])
    close = np.linalg.norm(foreground - background, axis=1) < 0.45
    background[close] = (foreground[close] + 0.5) % 1.0  # per-channel shift by half the range: >= 0.5 away
    return foreground, background


def _backgrounds(rng: np.random.Generator, colour: np.ndarray, size: int) -> np.ndarray:
    """Colour + linear gradient + stripes, float [n, S, S, 3]."""
    n = len(colour)
    line = np.linspace(-1, 1, size, dtype=np.float32)
    y, x = line[:, None], line[None, :]
    angle = rng.uniform(0, 2 * np.pi, [n, 1, 1]).astype(np.float32)
    ramp = np.cos(angle) * x + np.sin(angle) * y  # [n, S, S]
    gradient = _uniform(rng, 0.0, 0.25, [n, 1, 1]) * ramp
    stripe_angle = _uniform(rng, 0, np.pi, [n, 1, 1])
    frequency = _uniform(rng, 2.0, 8.0, [n, 1, 1])
    phase = _uniform(rng, 0, 2 * np.pi, [n, 1, 1])
    stripes = _uniform(rng, 0.0, 0.12, [n, 1, 1]) * np.sin(
        frequency * np.float32(np.pi) * (np.cos(stripe_angle) * x + np.sin(stripe_angle) * y) + phase)
    return colour[:, None, None, :] + (gradient + stripes)[..., None]


def _masks(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Antialiased shape coverage in [0, 1], float [n, S, S], at a random scale, position and small tilt."""
    n = len(labels)
    fine = size * _SUPERSAMPLE
    coords = ((np.arange(fine, dtype=np.float32) + 0.5) / fine * size)  # pixel units, fine-sample centres
    radius = rng.uniform(0.28, 0.46, n) * size  # shape half-extent in pixels
    margin = 0.8 * radius  # lets shapes touch the border a little, never leave the image
    cx = rng.uniform(margin, size - margin)
    cy = rng.uniform(margin, size - margin)
    tilt = np.deg2rad(rng.uniform(-12.0, 12.0, n))  # small: "up" stays up, for rotation prediction
    params = [p.astype(np.float32)[:, None, None] for p in (radius, cx, cy, np.cos(tilt), np.sin(tilt))]
    inside = np.zeros([n, fine, fine], bool)
    for label, mask_fn in enumerate(SHAPES.values()):
        chosen = np.flatnonzero(labels == label)
        if len(chosen) == 0:
            continue
        r, x0, y0, cos, sin = (p[chosen] for p in params)
        dx = (coords[None, None, :] - x0) / r
        dy = (y0 - coords[None, :, None]) / r  # image rows grow downwards, v grows upwards
        inside[chosen] = mask_fn(cos * dx + sin * dy, cos * dy - sin * dx)
    hits = inside.view(np.uint8).reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE).sum(axis=(2, 4), dtype=np.uint8)
    return hits.astype(np.float32) / np.float32(_SUPERSAMPLE ** 2)


def _render(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, S, S, 3] images of the shapes named by `labels`."""
    n = len(labels)
    foreground, background = _colours(rng, n)
    canvas = _backgrounds(rng, background, size)
    coverage = _masks(rng, labels, size)[..., None]
    # Shading across the shape, so the foreground is not a flat colour either.
    rows = np.linspace(-1, 1, size, dtype=np.float32)[None, :, None, None]
    shade = 1.0 + _uniform(rng, -0.15, 0.15, [n, 1, 1, 1]) * rows
    image = coverage * foreground[:, None, None, :] * shade + (1 - coverage) * canvas
    image += rng.standard_normal(image.shape, dtype=np.float32) * _uniform(rng, 0.0, 0.05, [n, 1, 1, 1])
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def make_shapes(num_examples: int, image_size: int = 32, seed: int = 0, chunk: int = 1000
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Generates the dataset deterministically for `seed`.

    Returns:
        images: uint8 [N, S, S, 3].
        labels: int32 [N], balanced: class i has N // 10 or N // 10 + 1 examples.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    labels = rng.permutation(np.arange(num_examples) % len(SHAPES)).astype(np.int32)
    # Chunks bound the memory of the supersampled float temporaries.
    images = [_render(rng, labels[i:i + chunk], image_size) for i in range(0, num_examples, chunk)]
    images = np.concatenate(images) if images else np.zeros([0, image_size, image_size, 3], np.uint8)
    return images, labels


def load_synthetic(cfg) -> DataSplits:
    """cfg.synthetic_examples shapes at cfg.image_size, generated for cfg.split_seed, then split."""
    start = time.perf_counter()
    images, labels = make_shapes(cfg.synthetic_examples, cfg.image_size, cfg.split_seed)
    logger.info("generated %d synthetic images in %.2f s", len(labels), time.perf_counter() - start)
    return split_arrays(images, labels, CLASS_NAMES, cfg, make_stats("synthetic", len(labels)))
