"""The pointer: attention from target locations to reference locations, and tracking by propagating it.

    A = attention(reference_features, target_features, temperature)   # rows sum to 1
    predicted = copy_labels(A, reference_labels)                      # colours, or instance masks

Training copies colour labels; evaluation copies the first frame's instance masks through a clip (as the
paper does for DAVIS) and scores them with the region similarity J (mean IoU). Two baselines are measured
the same way: copying the first mask unchanged, and propagating with raw-pixel similarity.
Reference: Vondrick, Shrivastava, Fathi, Guadarrama, Murphy, "Tracking Emerges by Colorizing Videos",
ECCV 2018.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

DOT = "dot"  # the paper: A_ij = exp(f_i . f_j) / sum_k exp(f_k . f_j)
NEG_SQUARED_DISTANCE = "neg_squared_distance"  # raw pixels: closer colours, larger similarity


def similarity_logits(reference: tf.Tensor, target: tf.Tensor, temperature: float, similarity: str = DOT
                      ) -> tf.Tensor:
    """[B, M, N] logits of every target location (M) against every reference location (N).

    Args:
        reference: float [B, N, D] (all locations of all reference frames).
        target: float [B, M, D].
        temperature: the softmax temperature (smaller is sharper).
        similarity: DOT (f_i . f_j) or NEG_SQUARED_DISTANCE (-|f_i - f_j|^2).
    """
    reference = tf.cast(reference, tf.float32)
    target = tf.cast(target, tf.float32)
    dots = tf.einsum("bmd,bnd->bmn", target, reference)
    if similarity == DOT:
        return dots / temperature
    if similarity == NEG_SQUARED_DISTANCE:
        # -|t - r|^2 = 2 t.r - |r|^2 - |t|^2; |t|^2 is constant along the softmax axis and drops out.
        return (2.0 * dots - tf.reduce_sum(tf.square(reference), axis=-1)[:, tf.newaxis, :]) / temperature
    raise ValueError(f"similarity '{similarity}': use '{DOT}' or '{NEG_SQUARED_DISTANCE}'")


def attention(reference: tf.Tensor, target: tf.Tensor, temperature: float = 1.0, similarity: str = DOT
              ) -> tf.Tensor:
    """A [B, M, N]: for each target location a softmax over all reference locations (rows sum to 1)."""
    return tf.nn.softmax(similarity_logits(reference, target, temperature, similarity), axis=-1)


def copy_labels(weights: tf.Tensor, reference_labels: tf.Tensor) -> tf.Tensor:
    """[B, M, K]: the attention-weighted reference label distributions, c_j = sum_i A_ij c_i.

    Args:
        weights: A [B, M, N].
        reference_labels: float [B, N, K] (one-hot colour clusters, or soft instance masks).
    """
    return tf.einsum("bmn,bnk->bmk", weights, tf.cast(reference_labels, tf.float32))


def reference_frames(t: int, num_references: int) -> list:
    """Reference frame indices for target t: the first frame (its labels are ground truth) and the
    num_references - 1 frames just before t (their labels are predictions)."""
    recent = list(range(max(1, t - num_references + 1), t))
    return [0] + recent


def propagate(features: np.ndarray, first_labels: np.ndarray, temperature: float, num_references: int = 3,
              similarity: str = DOT) -> np.ndarray:
    """Soft labels [T, h, w, K] for every frame, propagated from frame 0.

    Args:
        features: float [T, h, w, D] per-frame features (learned embeddings, or raw pixels).
        first_labels: float [h, w, K] label distribution of frame 0 (e.g. a one-hot mask, area-downsampled).
    """
    steps, height, width, depth = features.shape
    flat = tf.reshape(tf.constant(features, tf.float32), [steps, height * width, depth])
    labels = [tf.reshape(tf.constant(first_labels, tf.float32), [height * width, -1])]
    for t in range(1, steps):
        refs = reference_frames(t, num_references)
        reference = tf.concat([flat[r] for r in refs], axis=0)[tf.newaxis]
        reference_labels = tf.concat([labels[r] for r in refs], axis=0)[tf.newaxis]
        weights = attention(reference, flat[t][tf.newaxis], temperature, similarity)
        labels.append(copy_labels(weights, reference_labels)[0])
    return tf.reshape(tf.stack(labels), [steps, height, width, -1]).numpy()


def one_hot_masks(masks: np.ndarray, num_labels: int) -> np.ndarray:
    """float [..., K] one-hot of instance masks [...] (0 = background)."""
    return np.eye(num_labels, dtype=np.float32)[masks]


def downsample_labels(labels: np.ndarray, grid: int) -> np.ndarray:
    """Area-average soft labels [S, S, K] to [grid, grid, K] (S a multiple of grid)."""
    size = labels.shape[0]
    if size % grid:
        return tf.image.resize(labels, [grid, grid], method="area").numpy()
    factor = size // grid
    return labels.reshape(grid, factor, grid, factor, -1).mean(axis=(1, 3))


def upsample_to_masks(soft: np.ndarray, size: int) -> np.ndarray:
    """Instance masks uint8 [T, S, S]: bilinear upsampling of soft labels [T, h, w, K], then arg-max."""
    full = tf.image.resize(tf.constant(soft, tf.float32), [size, size], method="bilinear")
    return tf.argmax(full, axis=-1, output_type=tf.int32).numpy().astype(np.uint8)


def jaccard(predicted: np.ndarray, truth: np.ndarray, num_objects: int) -> np.ndarray:
    """IoU [num_objects, T] of each object (ids 1..num_objects) in each frame; both empty counts as 1
    (the DAVIS convention: an object correctly reported absent)."""
    scores = np.ones([num_objects, len(truth)], np.float64)
    for k in range(1, num_objects + 1):
        pred_k, true_k = predicted == k, truth == k
        intersection = (pred_k & true_k).sum(axis=(1, 2))
        union = (pred_k | true_k).sum(axis=(1, 2))
        scores[k - 1] = np.where(union > 0, intersection / np.maximum(union, 1), 1.0)
    return scores


def clip_j(predicted: np.ndarray, truth: np.ndarray) -> Optional[float]:
    """Mean J over a clip's objects, each averaged over frames 1..T-1 (frame 0 is given); None without
    objects."""
    num_objects = int(truth[0].max())
    if num_objects == 0:
        return None
    return float(jaccard(predicted[1:], truth[1:], num_objects).mean(axis=1).mean())


FeatureFn = Callable[[np.ndarray], np.ndarray]


def track_clip(frames: np.ndarray, masks: np.ndarray, features_fn: FeatureFn, temperature: float,
               num_references: int = 3, similarity: str = DOT) -> np.ndarray:
    """Predicted instance masks uint8 [T, S, S] of one clip, from its first ground-truth mask.

    Args:
        frames: uint8 [T, S, S, 3].
        masks: uint8 [T, S, S]; only masks[0] is read.
        features_fn: frames uint8 [T, S, S, 3] -> features [T, h, w, D].
    """
    size = frames.shape[1]
    features = np.asarray(features_fn(frames), np.float32)
    num_labels = int(masks[0].max()) + 1
    first = downsample_labels(one_hot_masks(masks[0], num_labels), features.shape[1])
    soft = propagate(features, first, temperature, num_references, similarity)
    predicted = upsample_to_masks(soft, size)
    predicted[0] = masks[0]
    return predicted


def track_video(frames: np.ndarray, first_mask: np.ndarray, features_fn: FeatureFn, temperature: float,
                num_references: int = 3, similarity: str = DOT) -> np.ndarray:
    """Predicted instance masks uint8 [T, H, W] at the first mask's own resolution (the DAVIS protocol).

    The first mask is area-averaged onto the feature grid, propagated there, and every frame's soft labels
    are upsampled (bilinear) to the mask's resolution before the arg-max; frame 0 is the given mask.

    Args:
        frames: uint8 [T, h, w, 3] (any aspect ratio the feature function accepts).
        first_mask: uint8 [H, W] object ids of frame 0.
        features_fn: frames -> features [T, fh, fw, D].
    """
    features = np.asarray(features_fn(frames), np.float32)
    grid = features.shape[1:3]
    first = one_hot_masks(first_mask, int(first_mask.max()) + 1)
    first = tf.image.resize(first, grid, method="area").numpy()
    soft = propagate(features, first, temperature, num_references, similarity)
    height, width = first_mask.shape
    predicted = np.empty([len(frames), height, width], np.uint8)
    predicted[0] = first_mask
    for t in range(1, len(frames)):  # one frame at a time: [T, 480, 854, K] floats would be large
        full = tf.image.resize(soft[t], [height, width], method="bilinear")
        predicted[t] = tf.argmax(full, axis=-1, output_type=tf.int32).numpy().astype(np.uint8)
    return predicted


def copy_first_mask(masks: np.ndarray) -> np.ndarray:
    """The no-motion baseline: every frame gets the first frame's mask."""
    return np.repeat(masks[:1], len(masks), axis=0)


def pixel_features(grid, colour: bool = True) -> FeatureFn:
    """Raw-pixel features on the same grid as the learned embedding: each cell's mean colour (RGB in
    [0, 1]) or grey level, concatenated over its 3x3 neighbourhood of cells so a cell is described by
    its surroundings too.

    Args:
        grid: cells per side (square frames), or (rows, columns), or a callable frames -> (rows, columns)
            (e.g. the learned embedding's stride applied to each video's frame size).
    """

    def features(frames: np.ndarray) -> np.ndarray:
        images = tf.cast(frames, tf.float32) / 255.0
        if not colour:
            images = tf.image.rgb_to_grayscale(images)
        cells_shape = grid(frames) if callable(grid) else (grid, grid) if np.isscalar(grid) else tuple(grid)
        cells = tf.image.resize(images, cells_shape, method="area")
        patches = tf.image.extract_patches(cells, sizes=[1, 3, 3, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1],
                                           padding="SAME")
        return patches.numpy()

    return features


def summarize(per_clip: Sequence[Optional[float]]) -> Dict[str, float]:
    scores = [s for s in per_clip if s is not None]
    return {"j_mean": round(float(np.mean(scores)) * 100.0, 2) if scores else float("nan"),
            "clips": len(scores)}
