"""A built-in, offline, deterministic generator of short clips with ground-truth instance masks.

Objects are cut from images (a shape mask from `sslzoo.data.synthetic.SHAPES` filled with the texture of
another image, so every object has the look of a real image region), and move, scale and rotate over a
background image that itself pans a little (camera motion). Objects are drawn back to front, so they
occlude each other; the instance mask of a frame records the object visible at each pixel.

No files, no network: this is the tests' and the demo's data, and the tracking benchmark when no real
video set is prepared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from sslzoo.data.synthetic import SHAPES, make_shapes

_SHAPE_FNS = list(SHAPES.values())


@dataclass
class Clips:
    """Video clips held in memory.

    Args:
        frames: uint8 [N, T, S, S, 3], RGB.
        masks: uint8 [N, T, S, S]: 0 is background, k >= 1 the k-th object where it is visible.
        labels: int32 [N]: the shape class of each clip's first object (a label for probes), or 0.
        names: N clip names (video names for real videos).
    """

    frames: np.ndarray
    masks: Optional[np.ndarray]
    labels: np.ndarray
    names: list

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_objects(self) -> np.ndarray:
        """int32 [N]: the largest instance id of each clip (0 without masks)."""
        if self.masks is None:
            return np.zeros(len(self), np.int32)
        return self.masks.reshape(len(self), -1).max(axis=1).astype(np.int32)


@dataclass
class _Motion:
    """One object's trajectory in pixel units: centre, half-extent and angle at every frame."""

    cx: np.ndarray  # [T]
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray  # radians


def _bounce(start: float, velocity: float, low: float, high: float, steps: int) -> np.ndarray:
    """Positions start + velocity * t, reflected off [low, high] so the object stays in view."""
    span = max(high - low, 1e-6)
    raw = start - low + velocity * np.arange(steps)
    folded = np.mod(raw, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def _motion(rng: np.random.Generator, size: int, steps: int, speed: float) -> _Motion:
    radius0 = rng.uniform(0.16, 0.30) * size
    growth = rng.uniform(-0.025, 0.025)  # relative scale change per frame
    radius = radius0 * np.clip(1.0 + growth * np.arange(steps), 0.6, 1.5)
    direction = rng.uniform(0, 2 * np.pi)
    pixels_per_frame = speed * size * rng.uniform(0.4, 1.0)
    margin = 0.6 * radius0
    cx = _bounce(rng.uniform(margin, size - margin), pixels_per_frame * np.cos(direction), margin,
                 size - margin, steps)
    cy = _bounce(rng.uniform(margin, size - margin), pixels_per_frame * np.sin(direction), margin,
                 size - margin, steps)
    angle = rng.uniform(-np.pi, np.pi) + np.deg2rad(rng.uniform(-8.0, 8.0)) * np.arange(steps)
    return _Motion(cx, cy, radius, angle)


def _object_layer(shape_fn, texture: np.ndarray, motion: _Motion, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Coverage bool [T, S, S] and the object's texture float [T, S, S, 3] at every pixel.

    The texture is sampled in the object's own coordinates, so it moves, scales and turns with it.
    """
    centres = np.arange(size, dtype=np.float32) + 0.5
    r = motion.radius[:, None, None]
    dx = (centres[None, None, :] - motion.cx[:, None, None]) / r
    dy = (motion.cy[:, None, None] - centres[None, :, None]) / r  # rows grow downwards, v upwards
    cos, sin = np.cos(motion.angle)[:, None, None], np.sin(motion.angle)[:, None, None]
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    covered = shape_fn(u, v)
    side = texture.shape[0]
    columns = np.clip(np.round((u + 1.0) * 0.5 * (side - 1)), 0, side - 1).astype(np.int64)
    rows = np.clip(np.round((1.0 - v) * 0.5 * (side - 1)), 0, side - 1).astype(np.int64)
    return covered, texture[rows, columns]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of one float image [H, W, 3] to [size, size, 3] (NumPy, deterministic)."""
    height, width = image.shape[:2]
    ys = np.clip((np.arange(size) + 0.5) * height / size - 0.5, 0, height - 1)
    xs = np.clip((np.arange(size) + 0.5) * width / size - 0.5, 0, width - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def _background(rng: np.random.Generator, image: np.ndarray, size: int, steps: int, speed: float) -> np.ndarray:
    """float [T, S, S, 3]: a window of the upscaled image panning slowly (the camera moves)."""
    pan = max(1, int(round(0.25 * size)))
    canvas = _resize(image, size + 2 * pan)
    direction = rng.uniform(0, 2 * np.pi)
    step = 0.25 * speed * size
    y = np.clip(np.round(pan + step * np.sin(direction) * np.arange(steps)), 0, 2 * pan).astype(int)
    x = np.clip(np.round(pan + step * np.cos(direction) * np.arange(steps)), 0, 2 * pan).astype(int)
    return np.stack([canvas[y[t]:y[t] + size, x[t]:x[t] + size] for t in range(steps)])


def render_clip(rng: np.random.Generator, pool: np.ndarray, size: int, steps: int, num_objects: int,
                speed: float, noise: float) -> Tuple[np.ndarray, np.ndarray, int]:
    """One clip: float frames [T, S, S, 3] in [0, 1], uint8 instance masks [T, S, S], first shape class.

    Args:
        pool: float [M, H, W, 3] source images for the background and the object textures.
    """
    picks = rng.choice(len(pool), size=num_objects + 1, replace=False)
    frames = _background(rng, pool[picks[0]], size, steps, speed)
    coverages = []
    classes = rng.integers(0, len(_SHAPE_FNS), num_objects)
    for k in range(num_objects):
        covered, texture = _object_layer(_SHAPE_FNS[classes[k]], pool[picks[k + 1]], _motion(rng, size, steps, speed),
                                         size)
        # Painter's algorithm: object k covers the background and every object before it.
        frames = np.where(covered[..., None], texture, frames)
        coverages.append(covered)
    masks = visible_instances(np.stack(coverages)) if coverages else np.zeros([steps, size, size], np.uint8)
    frames = frames + rng.standard_normal(frames.shape).astype(np.float32) * noise
    return np.clip(frames, 0.0, 1.0), masks, int(classes[0]) if num_objects else 0


def visible_instances(coverages: np.ndarray) -> np.ndarray:
    """uint8 [T, S, S]: the id (1-based) of the front-most covering object, 0 where none covers.

    Args:
        coverages: bool [K, T, S, S], object k drawn after (in front of) objects 0..k-1.
    """
    count = len(coverages)
    front = count - 1 - np.argmax(coverages[::-1], axis=0)  # the last object covering each pixel
    return np.where(coverages.any(axis=0), front + 1, 0).astype(np.uint8)


def builtin_pool(count: int, size: int, seed: int) -> np.ndarray:
    """float [count, S, S, 3] source images from the built-in synthetic shapes (no files)."""
    images, _ = make_shapes(count, image_size=size, seed=seed)
    return images.astype(np.float32) / 255.0


def generate_clips(num_clips: int, clip_length: int, size: int = 32, seed: int = 0,
                   pool: Optional[np.ndarray] = None, max_objects: int = 3, speed: float = 0.06,
                   noise: float = 0.02) -> Clips:
    """Generates `num_clips` clips deterministically for `seed`.

    Args:
        num_clips, clip_length: N and T.
        size: S, the frame side in pixels.
        pool: uint8 or float [M, H, W, 3] images to cut objects and backgrounds from (e.g. CIFAR-10);
            None uses 256 built-in synthetic images made for `seed`.
        max_objects: each clip holds 1..max_objects objects.
        speed: an object's largest motion per frame, as a fraction of S.
        noise: per-pixel Gaussian noise (std, in [0, 1] units) added to every frame.
    Returns:
        `Clips` with frames uint8 [N, T, S, S, 3] and masks uint8 [N, T, S, S].
    """
    if pool is None:
        pool = builtin_pool(256, size, seed)
    pool = np.asarray(pool)
    pool = pool.astype(np.float32) / 255.0 if pool.dtype == np.uint8 else pool.astype(np.float32)
    if len(pool) < max_objects + 1:
        raise ValueError(f"the image pool holds {len(pool)} images; need at least {max_objects + 1}")
    rng = np.random.default_rng([seed, 0xC1195])
    frames = np.zeros([num_clips, clip_length, size, size, 3], np.uint8)
    masks = np.zeros([num_clips, clip_length, size, size], np.uint8)
    labels = np.zeros([num_clips], np.int32)
    for i in range(num_clips):
        count = int(rng.integers(1, max_objects + 1))
        clip, masks[i], labels[i] = render_clip(rng, pool, size, clip_length, count, speed, noise)
        frames[i] = np.round(clip * 255.0).astype(np.uint8)
    return Clips(frames, masks, labels, [f"generated_{seed}_{i:05d}" for i in range(num_clips)])
