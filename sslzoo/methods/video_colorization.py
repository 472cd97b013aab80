"""Video colorization: learn to copy colours from reference frames by pointing; the pointer tracks.

Every frame enters the network as greyscale (the L of Lab); colours are quantised into clusters (k-means on
ab of training frames, fitted in `prepare`). For every location j of the target frame, a softmax over the
similarities to all locations i of the reference frames gives the attention A_ij; the predicted colour
distribution is sum_i A_ij c_i of the references' one-hot colour clusters, trained with cross-entropy
against the target's cluster. Colour reaches the prediction only through A, so A must find where each
target pixel came from. `colour_target: lab` is the paper's alternative the quantisation is argued against:
the same pointer copies the references' raw ab (Lab, /100), trained with squared error (ablation only).

On clips (the video sources, `sslzoo.video.run`) the pipeline hands `augment` frames tiled side by side;
on single images (the image sources, e.g. CIFAR-10) `augment` makes pseudo-clips by moving and zooming a
crop window over the image (the card's CIFAR suggestion: a changed task, not a replication).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Literal, Optional

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import split_seed
from sslzoo.backbones import FEATURE_MAP, FEATURES, feature_map_model
from sslzoo.color import lightness, rgb_to_lab
from sslzoo.config import ConfigError, option
from sslzoo.files import atomic_write
from sslzoo.methods.base import SSLMethod, require
from sslzoo.registry import register_method
from sslzoo.video.kmeans import assign_tf, fit_kmeans
from sslzoo.video.propagation import DOT, attention, copy_labels


@dataclasses.dataclass(frozen=True)
class VideoColorizationOptions:
    # The paper: 16 colour clusters (k-means in Lab's ab), 3 reference frames + 1 target.
    num_colors: int = option(16, "colour clusters K (paper: 16)", ge=2)
    num_references: int = option(3, "reference frames per clip; clips hold num_references + 1 frames, the "
                                    "target last (paper: 3)", ge=1)
    # The paper's A_ij = exp(f_i.f_j) / sum_k exp(f_k.f_j) is temperature 1.
    temperature: float = option(1.0, "softmax temperature of the attention A during training", gt=0)
    # "dot" (the paper) or "cosine" (L2-normalised embeddings; the temperature then sets the sharpness).
    similarity: Literal["dot", "cosine"] = option("dot", "similarity of embeddings in the attention")
    # Sharper than training helps on our clips (the paper's test-time value is not verified).
    propagation_temperature: float = option(1.0, "softmax temperature of A when propagating masks for "
                                                 "evaluation (the tracker)", gt=0)
    embedding_dim: int = option(64, "width of the per-location embedding (a 1x1 conv on the encoder's "
                                    "feature map); 0 = the feature map", ge=0)
    pseudo_clip_motion: float = option(0.08, "pseudo-clips from single images: largest crop-window motion per "
                                             "frame, as a fraction of the side")
    # The paper quantises because regressing colour averages multimodal colours; "lab" measures that claim.
    colour_target: Literal["clusters", "lab"] = option(
        "clusters", "what the pointer copies: colour clusters with cross-entropy (the paper) or raw ab "
                    "regressed with squared error (the ablation)")
    # k-means: ab of at most kmeans_pixels training pixels, seeded.
    kmeans_pixels: int = option(100000, "k-means fits ab of at most this many training pixels")
    kmeans_seed: int = option(0, "seed of the k-means pixel sample and initialisation")

    def __post_init__(self):
        require(self.kmeans_pixels >= self.num_colors,
                f"kmeans_pixels {self.kmeans_pixels}: must be >= num_colors ({self.num_colors})")


CENTERS_FILE = "color_centers.npy"
# ab spans about [-110, 110] in Lab units; regression targets are ab / AB_SCALE, of order 1.
AB_SCALE = 100.0


def default_centers(num_colors: int) -> np.ndarray:
    """A deterministic ab spread (a spiral) used until `prepare` fits the clusters to training frames."""
    index = np.arange(num_colors, dtype=np.float64)
    radius = 60.0 * np.sqrt((index + 0.5) / num_colors)
    angle = index * 2.399963  # the golden angle: evenly spread points
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)


def greyscale_embedding_encoder(encoder: keras.Model, embedding_dim: int) -> keras.Model:
    """The per-frame embedding network that is trained, evaluated and exported.

    RGB [N, S, S, 3] in [0, 1] -> L/100 replicated to 3 channels (colour never enters) -> the encoder's
    feature map -> an optional 1x1 conv embedding ("feature_map", [N, h, w, E]) -> pooled "features" [N, E].
    Built-in layers and keras.ops only, so it saves, loads under safe_mode and exports like any encoder.
    """
    size = encoder.input_shape[1:]
    inputs = keras.Input(size, dtype="float32", name="images")
    grey = keras.layers.Rescaling(0.01, name="lightness")(lightness(inputs))
    grey = keras.layers.Concatenate(name="greyscale")([grey, grey, grey])
    x = feature_map_model(encoder)(grey)
    if embedding_dim:
        x = keras.layers.Conv2D(embedding_dim, 1, name="embedding")(x)
    x = keras.layers.Identity(name=FEATURE_MAP)(x)
    features = keras.layers.GlobalAveragePooling2D(name=FEATURES)(x)
    return keras.Model(inputs, features, name=f"greyscale_{encoder.name}")


def pseudo_clips(images: tf.Tensor, num_frames: int, motion: float, seed: tf.Tensor) -> tf.Tensor:
    """[B, T, S, S, 3]: a crop window (80% of the side) moving at constant velocity and zooming slowly.

    Args:
        images: float [B, S, S, 3].
        motion: largest motion per frame as a fraction of the side.
    """
    batch, size = tf.shape(images)[0], tf.shape(images)[1]
    start_seed, velocity_seed, zoom_seed = split_seed(seed, 3)
    extent = 0.8
    start = tf.random.stateless_uniform([batch, 2], start_seed, 0.0, 1.0 - extent)
    velocity = tf.random.stateless_uniform([batch, 2], velocity_seed, -motion, motion)
    zoom = tf.random.stateless_uniform([batch, 1], zoom_seed, -0.02, 0.02)
    t = tf.range(num_frames, dtype=tf.float32)[tf.newaxis, :, tf.newaxis]  # [1, T, 1]
    centre = start[:, tf.newaxis] + extent / 2 + velocity[:, tf.newaxis] * t
    half = (extent / 2) * (1.0 + zoom[:, tf.newaxis] * t)
    # Keep windows inside the image: a window running into the border stops there.
    centre = tf.clip_by_value(centre, half, 1.0 - half)
    boxes = tf.reshape(tf.concat([centre - half, centre + half], axis=-1), [-1, 4])
    box_images = tf.repeat(tf.range(batch), num_frames)
    frames = tf.image.crop_and_resize(images, boxes, box_images, tf.stack([size, size]))
    return tf.reshape(frames, [batch, num_frames, size, size, 3])


def unpack_tiled_clips(tiled: tf.Tensor, num_frames: int) -> tf.Tensor:
    """[B, S, T*S, 3] (frames side by side, the pipeline's layout for clips) -> [B, T, S, S, 3]."""
    batch, size = tf.shape(tiled)[0], tf.shape(tiled)[1]
    frames = tf.reshape(tiled, [batch, size, num_frames, size, 3])
    return tf.transpose(frames, [0, 2, 1, 3, 4])


def cell_ab(frames: tf.Tensor, grid: int) -> tf.Tensor:
    """float [N, grid*grid, 2]: each feature-map cell's mean ab (Lab units) of RGB frames [N, S, S, 3]."""
    cells = tf.image.resize(rgb_to_lab(frames)[..., 1:], [grid, grid], method="area")
    return tf.reshape(cells, [tf.shape(frames)[0], grid * grid, 2])


def colour_labels(frames: tf.Tensor, centers: tf.Tensor, grid: int) -> tf.Tensor:
    """int32 [N, grid*grid]: each feature-map cell's colour cluster (mean ab of the cell, nearest centre)."""
    return assign_tf(cell_ab(frames, grid), centers)


@register_method("video_colorization")
@keras.saving.register_keras_serializable(package="sslzoo")
class VideoColorization(SSLMethod):
    """Colorization by pointing: copy quantised colours from reference frames to a target frame.

    Args (besides the base class'):
        encoder: the greyscale embedding network (`greyscale_embedding_encoder` around the configured
            encoder, built by `build_parts`): RGB [N, S, S, 3] in [0, 1] -> features [N, E], with a
            "feature_map" layer [N, h, w, E] the attention uses.
    No parts besides the encoder; the colour clusters (fitted by `prepare`) live in a non-trainable
    variable, `color_centers` [K, 2], so checkpoints and .keras files carry them.
    `sslzoo.video.run` reads `num_frames`, `num_references`, `num_colors`, `similarity`,
    `propagation_temperature`, `grid`, `embedder` and `color_centers`.
    Reference: Vondrick, Shrivastava, Fathi, Guadarrama, Murphy, "Tracking Emerges by Colorizing Videos",
    ECCV 2018.
    """

    Options = VideoColorizationOptions
    log_names = ("color_top1",)

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        try:
            encoder.get_layer(FEATURE_MAP)
        except ValueError as error:
            raise ConfigError(f"encoder '{encoder.name}' has no '{FEATURE_MAP}' layer: video colorization "
                              "needs spatial features") from error
        return {"encoder": greyscale_embedding_encoder(encoder, options.embedding_dim)}

    def setup(self):
        self.embedder = keras.Model(self.encoder.input, self.encoder.get_layer(FEATURE_MAP).output, name="embedder")
        self.grid = int(self.embedder.output_shape[1])
        # Non-trainable state: checkpoints and .keras files carry the clusters with the weights.
        num_colors = self.options.num_colors
        self.color_centers = self.add_weight(
            shape=(num_colors, 2), initializer=keras.initializers.Constant(default_centers(num_colors)),
            trainable=False, name="color_centers")

    # What the video training path (sslzoo.video.run, sslzoo.video.pictures) reads besides the options.
    @property
    def num_frames(self) -> int:
        return self.options.num_references + 1

    @property
    def num_references(self) -> int:
        return self.options.num_references

    @property
    def num_colors(self) -> int:
        return self.options.num_colors

    @property
    def similarity(self) -> str:
        return self.options.similarity

    @property
    def propagation_temperature(self) -> float:
        return self.options.propagation_temperature

    def prepare(self, train_images: np.ndarray, run_dir: Optional[Path]) -> None:
        """Fits the colour clusters on ab of training frames (uint8 [..., S, S, 3]: images or clips)."""
        options = self.options
        centers = fit_colour_clusters(train_images, options.num_colors, options.kmeans_seed, options.kmeans_pixels)
        self.color_centers.assign(centers)
        if run_dir is not None:
            atomic_write(Path(run_dir) / CENTERS_FILE, lambda tmp: np.save(tmp, centers, allow_pickle=False),
                         suffix=".npy")

    def augment(self, images, labels, seed):
        height, width = images.shape[1], images.shape[2]
        if width is not None and height is not None and width == height * self.num_frames:
            clips = unpack_tiled_clips(images, self.num_frames)
        else:
            clips = pseudo_clips(images, self.num_frames, self.options.pseudo_clip_motion, seed)
        size = tf.shape(clips)[2]
        return {"images": tf.reshape(clips, [-1, size, size, 3]), "labels": labels}

    def embed(self, frames: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[N, h*w, E] per-location embeddings of frames [N, S, S, 3] (L2-normalised for "cosine")."""
        feature_map = tf.cast(self.embedder(frames, training=training), tf.float32)
        flat = tf.reshape(feature_map, [tf.shape(frames)[0], self.grid * self.grid, -1])
        return tf.math.l2_normalize(flat, axis=-1) if self.options.similarity == "cosine" else flat

    def predict_colours(self, frames: tf.Tensor, training: bool = False):
        """What the pointer copies to each clip's target frame, and the truth.

        Args:
            frames: [B*T, S, S, 3], clip by clip, the target last in each clip.
        Returns:
            (predicted, true, embeddings [B, T, h*w, E]); for colour clusters predicted [B, h*w, K]
            distributions and true int32 [B, h*w] clusters; for "lab" both [B, h*w, 2] ab / AB_SCALE.
        """
        steps, cells = self.num_frames, self.grid * self.grid
        embeddings = self.embed(frames, training)
        embeddings = tf.reshape(embeddings, [-1, steps, cells, tf.shape(embeddings)[-1]])
        batch = tf.shape(embeddings)[0]
        references = tf.reshape(embeddings[:, :-1], [batch, -1, tf.shape(embeddings)[-1]])
        weights = attention(references, embeddings[:, -1], self.options.temperature, DOT)
        if self.options.colour_target == "lab":
            ab = tf.reshape(cell_ab(frames, self.grid) / AB_SCALE, [batch, steps, cells, 2])
            return copy_labels(weights, tf.reshape(ab[:, :-1], [batch, -1, 2])), ab[:, -1], embeddings
        labels = tf.reshape(colour_labels(frames, self.color_centers, self.grid), [-1, steps, cells])
        reference_colours = tf.one_hot(tf.reshape(labels[:, :-1], [batch, -1]), self.options.num_colors)
        return copy_labels(weights, reference_colours), labels[:, -1], embeddings

    def predicted_ab(self, predicted: tf.Tensor) -> tf.Tensor:
        """[..., 2] ab in Lab units of `predict_colours`' prediction (the expected colour for clusters)."""
        if self.options.colour_target == "lab":
            return predicted * AB_SCALE
        return tf.tensordot(predicted, self.color_centers, axes=[[-1], [0]])

    def compute_loss_and_logs(self, data, training):
        predicted, target, embeddings = self.predict_colours(data["images"], training)
        if self.options.colour_target == "lab":
            loss = tf.reduce_mean(ab_squared_error(predicted, target))
            # The same accuracy as the clusters' for comparable logs: nearest cluster of copied vs true ab.
            hits = tf.equal(assign_tf(self.predicted_ab(predicted), self.color_centers),
                            assign_tf(self.predicted_ab(target), self.color_centers))
        else:
            loss = tf.reduce_mean(colour_cross_entropy(predicted, target))
            hits = tf.equal(tf.argmax(predicted, axis=-1, output_type=tf.int32), target)
        logs = {"loss": loss, "color_top1": tf.reduce_mean(tf.cast(hits, tf.float32))}
        if self.probe is not None and "labels" in data:
            features = tf.reduce_mean(embeddings[:, -1], axis=1)
            loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        from sslzoo.video.pictures import save_colorization_picture

        return [save_colorization_picture(self, data["images"], Path(run_dir) / "colorization.png")]


def colour_cross_entropy(predicted: tf.Tensor, target: tf.Tensor, epsilon: float = 1e-7) -> tf.Tensor:
    """[B, M]: -log of the predicted probability of each target location's true colour cluster.

    `predicted` is already a distribution (attention-weighted one-hots), so this is the cross-entropy of
    the paper's loss, sum_j CE(c_hat_j, c_j); epsilon keeps a colour absent from every reference finite.
    """
    picked = tf.gather(predicted, target, axis=-1, batch_dims=2)
    return -tf.math.log(picked + epsilon)


def ab_squared_error(predicted: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """[B, M]: |ab_hat_j - ab_j|^2 of each target location (the regression the paper's quantisation avoids)."""
    return tf.reduce_sum(tf.square(tf.cast(predicted, tf.float32) - tf.cast(target, tf.float32)), axis=-1)


def fit_colour_clusters(images: np.ndarray, num_colors: int, seed: int, max_pixels: int) -> np.ndarray:
    """k-means centres [K, 2] on ab of a seeded sample of pixels of uint8 images/clips [..., S, S, 3]."""
    pixels = np.asarray(images).reshape(-1, 3)
    rng = np.random.default_rng([seed, 0xC0102])
    if len(pixels) > max_pixels:
        pixels = pixels[np.sort(rng.choice(len(pixels), max_pixels, replace=False))]
    ab = rgb_to_lab(tf.constant(pixels, tf.float32) / 255.0).numpy()[:, 1:]
    return fit_kmeans(ab, num_colors, seed=seed, max_points=max_pixels)


__all__ = ["VideoColorization", "VideoColorizationOptions", "ab_squared_error", "fit_colour_clusters",
           "greyscale_embedding_encoder"]
