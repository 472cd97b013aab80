"""SimCLR's view augmentation, batched and stateless-seeded: crop, flip, colour jitter, grayscale, blur.

Every random parameter is drawn per image from a stateless seed, so a batch's views are reproducible
(resume). The pixel work runs in XLA-compiled functions, because on two CPU cores the input pipeline
competes with the training step: crop, colour jitter (a compiled loop over the images), grayscale and clip
fuse into one function; the blur stays on TF's oneDNN kernel. The draws stay outside the compiled code,
whose stateless RNG gives other numbers than TF's kernels for the same seed. Keras' `RandomColorJitter` /
`RandomGaussianBlur` layers draw from a stateful SeedGenerator and cannot take a per-batch seed, so the
same operations are written here with `tf.image` ops on per-image parameters.

Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020, Appendix A and the official `data_util.py`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import tensorflow as tf

from sslzoo.augment.ops import solarize, split_seed
from sslzoo.config import option
from sslzoo.errors import ConfigError

# Tries per image to find a crop of the drawn area and aspect ratio that fits (torchvision/Inception
# use 10/100); all tries are drawn at once, the first fitting one wins, else the whole image.
_CROP_ATTEMPTS = 10
_ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def _uniform(seed, shape, low, high):
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def random_resized_crop_boxes(
    batch: tf.Tensor, seed: tf.Tensor, scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = _ASPECT_RATIO,
) -> tf.Tensor:
    """Inception-style crop boxes, normalized [y1, x1, y2, x2] per image (aspect ratios are exact for
    square images, which is what SimCLR's views are made from).

    Area ~ U(scale) of the image, log aspect ratio (width/height) ~ U(log ratio); crops that do not fit
    are redrawn (up to `_CROP_ATTEMPTS` times) and the whole image is used if none fits.
    """
    area_seed, ratio_seed, y_seed, x_seed = split_seed(seed, 4)
    shape = [batch, _CROP_ATTEMPTS]
    area = _uniform(area_seed, shape, scale[0], scale[1])
    log_ratio = _uniform(ratio_seed, shape, math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    width = tf.sqrt(area * aspect)
    height = tf.sqrt(area / aspect)
    fits = (width <= 1.0) & (height <= 1.0)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    any_fits = tf.reduce_any(fits, axis=1)
    width = tf.where(any_fits, tf.gather(width, first, batch_dims=1), 1.0)
    height = tf.where(any_fits, tf.gather(height, first, batch_dims=1), 1.0)
    top = _uniform(y_seed, [batch], 0.0, 1.0) * (1.0 - height)
    left = _uniform(x_seed, [batch], 0.0, 1.0) * (1.0 - width)
    return tf.stack([top, left, top + height, left + width], axis=1)


def crop_boxes_and_flips(batch, seed: tf.Tensor, scale: Sequence[float] = (0.08, 1.0), flip: bool = True
                         ) -> tf.Tensor:
    """`random_resized_crop_boxes`, with x1 and x2 swapped for the images drawn (p = 0.5) to be mirrored:
    the crop samples x1 -> x2, so a swapped box is the mirrored crop and the flip costs nothing."""
    box_seed, flip_seed = split_seed(seed, 2)
    boxes = random_resized_crop_boxes(batch, box_seed, scale)
    if flip:
        mirror = _uniform(flip_seed, [batch], 0.0, 1.0) < 0.5
        boxes = tf.where(mirror[:, tf.newaxis], tf.gather(boxes, [0, 3, 2, 1], axis=1), boxes)
    return boxes


def _sample_points(low, high, count: int, size: int):
    """Where `tf.image.crop_and_resize` samples `count` points between normalized `low` and `high` of an
    axis of `size` pixels: (lower index, upper index, weight of the upper), each [B, count]."""
    if count > 1:
        steps = tf.range(count, dtype=tf.float32)[tf.newaxis, :] * ((high - low) * (size - 1) / (count - 1))[:, None]
        points = low[:, tf.newaxis] * (size - 1) + steps
    else:
        points = (0.5 * (low + high) * (size - 1))[:, tf.newaxis]
    lower = tf.clip_by_value(tf.floor(points), 0.0, size - 1.0)
    upper = tf.minimum(lower + 1.0, size - 1.0)
    return tf.cast(lower, tf.int32), tf.cast(upper, tf.int32), points - lower


def _bilinear_crops(images: tf.Tensor, boxes: tf.Tensor, size=None) -> tf.Tensor:
    """`tf.image.crop_and_resize(images, boxes, range(B), [size, size])` (bilinear; the boxes lie inside
    the image; `size` None: the input size) as row and column gathers that XLA fuses with what follows;
    same values to ~1e-5."""
    height, width = images.shape[1], images.shape[2]
    top, bottom, y_weight = _sample_points(boxes[:, 0], boxes[:, 2], size or height, height)
    left, right, x_weight = _sample_points(boxes[:, 1], boxes[:, 3], size or width, width)
    images = tf.cast(images, tf.float32)

    def columns(rows):
        first = tf.gather(rows, left, axis=2, batch_dims=1)
        return first + (tf.gather(rows, right, axis=2, batch_dims=1) - first) * x_weight[:, tf.newaxis, :, tf.newaxis]

    upper = columns(tf.gather(images, top, axis=1, batch_dims=1))
    lower = columns(tf.gather(images, bottom, axis=1, batch_dims=1))
    return upper + (lower - upper) * y_weight[:, :, tf.newaxis, tf.newaxis]


@tf.function(jit_compile=True)
def _crops_compiled(images, boxes):
    return _bilinear_crops(images, boxes)


def random_resized_crop_and_flip(
    images: tf.Tensor, seed: tf.Tensor, scale: Sequence[float] = (0.08, 1.0), flip: bool = True
) -> tf.Tensor:
    """Random resized crop (bilinear, back to the input size) and horizontal flip with p = 0.5."""
    boxes = crop_boxes_and_flips(tf.shape(images)[0], seed, scale, flip)
    crops = _crops_compiled(tf.convert_to_tensor(images, tf.float32), boxes)
    crops.set_shape(images.shape)
    return crops


def _per_image(values: tf.Tensor) -> tf.Tensor:
    return values[:, tf.newaxis, tf.newaxis, tf.newaxis]


def _grayscale(images: tf.Tensor) -> tf.Tensor:
    """ITU-R 601 luma, [B, H, W, 1] (what tf.image.rgb_to_grayscale computes)."""
    return tf.reduce_sum(images * tf.constant([0.2989, 0.5870, 0.1140]), axis=-1, keepdims=True)


def _brightness(images, factor):
    # Multiplicative, as the SimCLR v2 code (`impl='simclrv2'`) and torchvision.
    return tf.clip_by_value(images * _per_image(factor), 0.0, 1.0)


def _contrast(images, factor):
    # tf.image.adjust_contrast: blend every channel with its own spatial mean.
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.clip_by_value((images - mean) * _per_image(factor) + mean, 0.0, 1.0)


def _saturation(images, factor):
    # tf.image.adjust_saturation (HSV: S * factor clipped to 1, H and V kept) without the HSV round trip:
    # with V = max and m = min over channels, S = (V - m) / V, and keeping H and V moves every channel
    # towards V by the same ratio, c' = V - (V - c) * min(factor, V / (V - m)).
    value = tf.reduce_max(images, axis=-1, keepdims=True)
    chroma = value - tf.reduce_min(images, axis=-1, keepdims=True)
    limit = tf.math.divide_no_nan(value, chroma)
    scale = tf.where(chroma > 0, tf.minimum(_per_image(factor), limit), 1.0)
    return tf.clip_by_value(value - (value - images) * scale, 0.0, 1.0)


def _hue(images, delta):
    hsv = tf.image.rgb_to_hsv(images)
    hue = tf.math.floormod(hsv[..., :1] + _per_image(delta), 1.0)
    return tf.clip_by_value(tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1)), 0.0, 1.0)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)
_SKIP = len(_JITTER_OPS)  # an order entry that leaves the image as it is (jitter not applied)


def _jitter_image(args):
    """One image [H, W, C] through its own four ops in its own order (order [4], factors [4])."""
    image, order, factors = args

    def step(index, image):
        branches = [lambda op=op, i=i: op(image, factors[i][tf.newaxis]) for i, op in enumerate(_JITTER_OPS)]
        return index + 1, tf.switch_case(order[index], [*branches, lambda: image])

    # A loop over the steps, not four switches one after another: XLA's compile time for the chained
    # switches grew with the image side (2 s at 32 px, 13.5 s at 128, 39 s at 224 on the 2-core CPU,
    # paid by every run's first batch), the loop's stays under a second. Same values bit for bit.
    _, image = tf.while_loop(lambda index, _: index < len(_JITTER_OPS), step, (tf.constant(0), image[tf.newaxis]))
    return image[0]


def _jitter_each(images, order, factors):
    # One image at a time in a loop (compiled by its callers): each image runs only the op its order names
    # at each step (4 ops per image, not 16), on an image that stays in cache; XLA fuses each op's
    # elementwise chain. On this 2-core CPU it is 3.4x the whole-batch version (dynamic_partition per
    # step), same values to 1e-5. The random draws stay outside: XLA's stateless RNG gives other numbers
    # than TF's kernels.
    return tf.map_fn(_jitter_image, (images, order, factors), fn_output_signature=images.dtype)


_jitter_compiled = tf.function(_jitter_each, jit_compile=True)


def jitter_draws(batch, seed: tf.Tensor, strength: float, apply=None, hue: Optional[float] = None):
    """Per-image jitter parameters: (order int32 [B, 4], factors float32 [B, 4]).

    Brightness, contrast and saturation factors ~ U(1 - 0.8s, 1 + 0.8s), hue shift ~ U(-0.2s, 0.2s) of a
    full turn (U(-hue, hue) when `hue` is given: torchvision's ColorJitter hue, e.g. MoCo v1's 0.4), in an
    order drawn per image (the official code's `random_order=True`); where `apply` (bool [B]) is False the
    order is all `_SKIP` and the image is left as it is.
    """
    b_seed, c_seed, s_seed, h_seed, order_seed = split_seed(seed, 5)
    amount = 0.8 * strength
    hue = 0.2 * strength if hue is None else hue
    factors = tf.stack([
        _uniform(b_seed, [batch], max(0.0, 1.0 - amount), 1.0 + amount),
        _uniform(c_seed, [batch], max(0.0, 1.0 - amount), 1.0 + amount),
        _uniform(s_seed, [batch], max(0.0, 1.0 - amount), 1.0 + amount),
        _uniform(h_seed, [batch], -hue, hue),
    ], axis=1)
    # argsort of uniform noise is a uniformly random permutation per image.
    order = tf.argsort(_uniform(order_seed, [batch, 4], 0.0, 1.0), axis=1)
    if apply is not None:
        order = tf.where(apply[:, tf.newaxis], order, _SKIP)
    return order, factors


def color_jitter(images: tf.Tensor, seed: tf.Tensor, strength: float, apply=None) -> tf.Tensor:
    """SimCLR colour jitter on every image, each with its own factors and its own random order
    (`jitter_draws`), clipping to [0, 1] after each op as `tf.image` does.

    Args:
        images: float32 [B, H, W, 3] in [0, 1]; seed: int [2]; strength: s.
        apply: optional bool [B]; images where it is False are returned unchanged (and cost nothing).
    """
    order, factors = jitter_draws(tf.shape(images)[0], seed, strength, apply)
    static_shape = images.shape
    images = _jitter_compiled(tf.convert_to_tensor(images, tf.float32), order, factors)
    images.set_shape(static_shape)
    return images


def gaussian_blur(images: tf.Tensor, sigma: tf.Tensor, kernel_size: int) -> tf.Tensor:
    """Separable Gaussian blur with one sigma per image and reflect padding.

    Args:
        images: [B, H, W, C]; sigma: [B]; kernel_size: odd number of taps.
    The batch is folded into the channels ([1, H, W, B*C]) so one depthwise convolution applies every
    image's own kernel.
    """
    radius = kernel_size // 2
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernels = tf.exp(-tf.square(taps)[tf.newaxis, :] / (2.0 * tf.square(sigma)[:, tf.newaxis]))
    kernels = kernels / tf.reduce_sum(kernels, axis=1, keepdims=True)  # [B, K]
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, height, width, batch * channels])
    folded = tf.pad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    per_channel = tf.repeat(kernels, channels, axis=0)  # [B*C, K], image-major like `folded`
    vertical = tf.transpose(per_channel)[:, tf.newaxis, :, tf.newaxis]  # [K, 1, B*C, 1]
    horizontal = tf.transpose(per_channel)[tf.newaxis, :, :, tf.newaxis]  # [1, K, B*C, 1]
    folded = tf.nn.depthwise_conv2d(folded, vertical, [1, 1, 1, 1], "VALID")
    folded = tf.nn.depthwise_conv2d(folded, horizontal, [1, 1, 1, 1], "VALID")
    blurred = tf.reshape(folded, [height, width, batch, channels])
    return tf.transpose(blurred, [2, 0, 1, 3])


def check_crop_scale(value, key: str, recipes: str) -> None:
    """ConfigError naming `key` and the papers' values (`recipes`) unless `value` is [low, high] with
    0 < low <= high <= 1: the area-fraction range of a random resized crop."""
    low, high = value
    if not 0 < low <= high <= 1:
        raise ConfigError(f"{key} {list(value)}: need [low, high] with 0 < low <= high <= 1 ({recipes})")


@dataclasses.dataclass(frozen=True)
class ViewOptions:
    """The view-augmentation options SimCLR and MoCo share (defaults: SimCLR's CIFAR recipe, paper B.9).

    A method's options dataclass inherits these fields (config keys stay flat: `method.options.crop_scale`)
    and may redeclare one to change its default; `as_kwargs()` is what `simclr_view` / `two_views` take.
    """

    crop_scale: tuple[float, float] = option(
        (0.08, 1.0), "[low, high] range of the crop's area fraction (paper: 0.08-1)", gt=0.0, le=1.0)
    color_strength: float = option(0.5, "s of the colour jitter (paper: 1.0 ImageNet, 0.5 CIFAR)", ge=0.0)
    color_probability: float = option(0.8, "chance that an image is colour-jittered (paper: 0.8)", ge=0.0, le=1.0)
    grayscale_probability: float = option(0.2, "chance that an image is turned to gray (paper: 0.2)", ge=0.0, le=1.0)
    # 0.5 for images of 96 px and more (ImageNet); off on CIFAR (B.9).
    blur_probability: float = option(
        0.0, "chance of a Gaussian blur, kernel 10% of the side, sigma ~ U(0.1, 2.0)", ge=0.0, le=1.0)
    flip: bool = option(True, "horizontal flips with p = 0.5")

    def __post_init__(self):
        check_crop_scale(self.crop_scale, "crop_scale", "SimCLR: [0.08, 1.0], MoCo: [0.2, 1.0]")

    def as_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of `simclr_view` / `two_views`."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(ViewOptions)}


def simclr_view(
    images: tf.Tensor,
    seed: tf.Tensor,
    *,
    crop_scale: Sequence[float] = (0.08, 1.0),
    color_strength: float = 0.5,
    color_probability: float = 0.8,
    grayscale_probability: float = 0.2,
    blur_probability: float = 0.0,
    flip: bool = True,
    size: Optional[int] = None,
    hue: Optional[float] = None,
) -> tf.Tensor:
    """One SimCLR view of every image: crop -> flip -> colour jitter (p) -> grayscale (p) -> blur (p).

    Args:
        images: float32 [B, S, S, 3] in [0, 1].
        seed: int [2] stateless seed.
        crop_scale: range of the crop's area fraction (paper: 0.08-1).
        color_strength: s of the colour jitter (paper: 1.0 ImageNet, 0.5 CIFAR).
        color_probability: chance that an image is colour-jittered (paper: 0.8).
        grayscale_probability: chance that an image is turned to gray (paper: 0.2).
        blur_probability: chance of a Gaussian blur, kernel 10% of the side, sigma ~ U(0.1, 2.0) (paper:
            0.5 on ImageNet, 0 on CIFAR).
        flip: horizontal flips with p = 0.5.
        size: side of the view in pixels (None: the input's S). A smaller side resamples the crop straight
            to it (multi-crop's local crops), and the colour and blur work runs at that size.
        hue: the jitter's hue shift range, a fraction of a turn (None: 0.2 x color_strength, SimCLR's).
    Returns:
        float32 [B, size, size, 3] in [0, 1].
    """
    crop_seed, jitter_seed, apply_seed, blur_seed = split_seed(seed, 4)
    images = tf.convert_to_tensor(images, tf.float32)
    size = None if size is None or size == images.shape[1] else int(size)
    static_shape = images.shape if size is None else tf.TensorShape([images.shape[0], size, size, images.shape[3]])
    batch = tf.shape(images)[0]
    boxes = crop_boxes_and_flips(batch, crop_seed, crop_scale, flip)
    draws = _uniform(apply_seed, [3, batch], 0.0, 1.0)
    jitter = color_probability > 0 and (color_strength > 0 or bool(hue))
    order, factors = jitter_draws(batch, jitter_seed, color_strength, apply=draws[0] < color_probability, hue=hue)
    images = _view_compiled(images, boxes, order, factors, draws[1] < grayscale_probability, jitter, size)
    if blur_probability > 0:
        kernel_size = _blur_kernel_size(static_shape[1])
        if kernel_size > 1:
            # Only the images drawn for a blur are blurred (the convolution is the costly part).
            chosen = tf.where(draws[2] < blur_probability)
            sigma = tf.gather_nd(_uniform(blur_seed, [batch], 0.1, 2.0), chosen)
            images = tf.cond(
                tf.size(chosen) > 0,  # the reflect padding refuses an empty batch
                lambda: tf.tensor_scatter_nd_update(
                    images, chosen, gaussian_blur(tf.gather_nd(images, chosen), sigma, kernel_size)),
                lambda: images)
            images = tf.clip_by_value(images, 0.0, 1.0)
    # The compiled functions lose static dimensions; the view has the input's shape (or size x size).
    images.set_shape(static_shape)
    return images


@tf.function(jit_compile=True)
def _view_compiled(images, boxes, order, factors, gray, jitter: bool, size=None):
    # Crop, jitter, grayscale and clip in one compiled function: the crop's gathers fuse with what follows,
    # the jitter runs image by image in cache, the rest is one pass. Decode + two views from 224-px JPEGs
    # at 128 px went from 372-389 to 1,175-1,222 images/s on a 2-core CPU. The blur stays outside: compiled,
    # its depthwise convolution made two blurred views ~15x slower (as shifted-slice sums, the blur alone
    # 2.8x slower) than TF's oneDNN kernel.
    images = _bilinear_crops(images, boxes, size)
    if jitter:
        images = _jitter_each(images, order, factors)
    images = tf.where(_per_image(gray), tf.broadcast_to(_grayscale(images), tf.shape(images)), images)
    return tf.clip_by_value(images, 0.0, 1.0)


def _blur_kernel_size(side) -> int:
    """Odd kernel of ~10% of the image side, as the official code: radius = (side // 10) // 2."""
    if side is None:
        raise ValueError("simclr_view with blur needs a static image size")
    return 2 * ((int(side) // 10) // 2) + 1


def two_views(images: tf.Tensor, seed: tf.Tensor, **kwargs) -> Tuple[tf.Tensor, tf.Tensor]:
    """Two independently augmented views of every image (same options, independent seeds)."""
    seed_1, seed_2 = split_seed(seed, 2)
    return simclr_view(images, seed_1, **kwargs), simclr_view(images, seed_2, **kwargs)


@dataclasses.dataclass(frozen=True)
class AsymmetricViewOptions(ViewOptions):
    """BYOL's two asymmetric views (Grill et al. 2020, Table 6), which Barlow Twins and VICReg reuse.

    The inherited options apply to both views, except blur and solarization, drawn with a different
    probability per view: `blur_probability` / `solarize_probability` are the first view's,
    `blur_probability_2` / `solarize_probability_2` the second's. Colour strength 0.5 gives brightness,
    contrast, saturation, hue 0.4, 0.4, 0.4, 0.1 (the paper's saturation is 0.2).
    """

    blur_probability: float = option(
        1.0, "first view's chance of a Gaussian blur (BYOL: 1.0; kernel 10% of the side: 3 taps at 32 px)",
        ge=0.0, le=1.0)
    blur_probability_2: float = option(0.1, "second view's chance of a Gaussian blur (BYOL: 0.1)", ge=0.0, le=1.0)
    solarize_probability: float = option(0.0, "first view's chance of solarization (BYOL: 0.0)", ge=0.0, le=1.0)
    solarize_probability_2: float = option(0.2, "second view's chance of solarization (BYOL: 0.2)",
                                           ge=0.0, le=1.0)
    solarize_threshold: float = option(0.5, "pixels >= this are inverted (PIL's 128 of 255)", ge=0.0, le=1.0)


def asymmetric_views(images: tf.Tensor, seed: tf.Tensor, options: AsymmetricViewOptions
                     ) -> Tuple[tf.Tensor, tf.Tensor]:
    """BYOL's two views: `simclr_view` with each view's blur probability, then solarization drawn per
    image from the view's own seed (solarization comes last, as in BYOL's pipeline)."""
    views = []
    probabilities = ((options.blur_probability, options.solarize_probability),
                     (options.blur_probability_2, options.solarize_probability_2))
    for view_seed, (blur, solar) in zip(split_seed(seed, 2), probabilities):
        crop_seed, solarize_seed = split_seed(view_seed, 2)
        view = simclr_view(images, crop_seed, **{**options.as_kwargs(), "blur_probability": blur})
        if solar > 0:
            apply = tf.random.stateless_uniform([tf.shape(view)[0]], seed=solarize_seed) < solar
            view = solarize(view, apply, options.solarize_threshold)
        views.append(view)
    return views[0], views[1]
