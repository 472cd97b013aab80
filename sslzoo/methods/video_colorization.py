"""Video colorization: learn to copy colours from reference frames by pointing; the pointer tracks.

Every frame enters the network as greyscale (the L of Lab); colours are quantised into clusters (k-means on
ab of training frames, fitted in `prepare`). For every location j of the target frame, a softmax over the
similarities to all locations i of the reference frames gives the attention A_ij; the predicted colour
distribution is sum_i A_ij c_i of the references' one-hot colour clusters, trained with cross-entropy
against the target's cluster. Colour reaches the prediction only through A, so A must find where each
target pixel came from.

On clips (the video sources, `sslzoo.video.run`) the pipeline hands `augment` frames tiled side by side;
on single images (the image sources, e.g. CIFAR-10) `augment` makes pseudo-clips by moving and zooming a
crop window over the image (the card's CIFAR suggestion: a changed task, not a replication).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment import split_seed
from sslzoo.backbones import FEATURE_MAP, FEATURES, feature_map_model
from sslzoo.color import lightness, rgb_to_lab
from sslzoo.config import ConfigError
from sslzoo.methods.base import SSLMethod, check_options
from sslzoo.registry import register_method
from sslzoo.video.kmeans import assign_tf, fit_kmeans
from sslzoo.video.propagation import DOT, attention, copy_labels

DEFAULTS = {
    # The paper: 16 colour clusters (k-means in Lab's ab), 3 reference frames + 1 target.
    "num_colors": 16,
    "num_references": 3,
    # Softmax temperature of A during training; the paper's A_ij = exp(f_i.f_j) / sum_k exp(f_k.f_j) is 1.
    "temperature": 1.0,
    # "dot" (the paper) or "cosine" (L2-normalised embeddings; the temperature then sets the sharpness).
    "similarity": "dot",
    # Softmax temperature of A when propagating masks for evaluation (the tracker); sharper than training
    # helps on our clips (the paper's test-time value is not verified).
    "propagation_temperature": 1.0,
    # Width of the per-location embedding (a 1x1 conv on the encoder's feature map); 0 = the feature map.
    "embedding_dim": 64,
    # Pseudo-clips from single images: largest crop-window motion per frame, as a fraction of the side.
    "pseudo_clip_motion": 0.08,
    # k-means: ab of at most this many training pixels, seeded.
    "kmeans_pixels": 100000,
    "kmeans_seed": 0,
}
SIMILARITIES = ("dot", "cosine")
CENTERS_FILE = "color_centers.npy"


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


def colour_labels(frames: tf.Tensor, centers: tf.Tensor, grid: int) -> tf.Tensor:
    """int32 [N, grid*grid]: each feature-map cell's colour cluster (mean ab of the cell, nearest centre)."""
    ab = rgb_to_lab(frames)[..., 1:]
    cells = tf.image.resize(ab, [grid, grid], method="area")
    return tf.reshape(assign_tf(cells, centers), [tf.shape(frames)[0], grid * grid])


@keras.saving.register_keras_serializable(package="sslzoo")
class VideoColorization(SSLMethod):
    """Colorization by pointing: copy quantised colours from reference frames to a target frame.

    Args:
        encoder: the greyscale embedding network (`greyscale_embedding_encoder`): RGB [N, S, S, 3] in
            [0, 1] -> features [N, E], with a "feature_map" layer [N, h, w, E] the attention uses.
        num_colors: colour clusters K.
        num_references: reference frames R per clip (clips hold R + 1 frames, the target last).
        temperature: softmax temperature of the attention.
        similarity: "dot" (the paper) or "cosine".
        propagation_temperature: the attention's temperature when tracking (evaluation).
        pseudo_clip_motion: crop-window motion per frame for pseudo-clips made from single images.
        num_classes: > 0 adds the online linear probe (on the target frames' pooled features).
    Reference: Vondrick, Shrivastava, Fathi, Guadarrama, Murphy, "Tracking Emerges by Colorizing Videos",
    ECCV 2018.
    """

    log_names = ("color_top1",)

    def __init__(self, encoder: keras.Model, num_colors: int = 16, num_references: int = 3,
                 temperature: float = 1.0, similarity: str = "dot", propagation_temperature: float = 1.0,
                 pseudo_clip_motion: float = 0.08,
                 kmeans_pixels: int = 100000, kmeans_seed: int = 0, num_classes: int = 0, **kwargs):
        super().__init__(encoder, num_classes=num_classes, **kwargs)
        self.num_colors = int(num_colors)
        self.num_references = int(num_references)
        self.temperature = float(temperature)
        self.similarity = similarity
        self.propagation_temperature = float(propagation_temperature)
        self.pseudo_clip_motion = float(pseudo_clip_motion)
        self.kmeans_pixels = int(kmeans_pixels)
        self.kmeans_seed = int(kmeans_seed)
        self.embedder = keras.Model(encoder.input, encoder.get_layer(FEATURE_MAP).output, name="embedder")
        self.grid = int(self.embedder.output_shape[1])
        # Non-trainable state: checkpoints and .keras files carry the clusters with the weights.
        self.color_centers = self.add_weight(
            shape=(self.num_colors, 2), initializer=keras.initializers.Constant(default_centers(self.num_colors)),
            trainable=False, name="color_centers")
        self.built = True

    @property
    def num_frames(self) -> int:
        return self.num_references + 1

    def prepare(self, train_images: np.ndarray, run_dir: Optional[Path]) -> None:
        """Fits the colour clusters on ab of training frames (uint8 [..., S, S, 3]: images or clips)."""
        centers = fit_colour_clusters(train_images, self.num_colors, self.kmeans_seed, self.kmeans_pixels)
        self.color_centers.assign(centers)
        if run_dir is not None:
            from sslzoo.training.checkpoints import atomic_write

            atomic_write(Path(run_dir) / CENTERS_FILE, lambda tmp: np.save(tmp, centers, allow_pickle=False),
                         suffix=".npy")

    def augment(self, images, labels, seed):
        height, width = images.shape[1], images.shape[2]
        if width is not None and height is not None and width == height * self.num_frames:
            clips = unpack_tiled_clips(images, self.num_frames)
        else:
            clips = pseudo_clips(images, self.num_frames, self.pseudo_clip_motion, seed)
        size = tf.shape(clips)[2]
        return {"images": tf.reshape(clips, [-1, size, size, 3]), "labels": labels}

    def embed(self, frames: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[N, h*w, E] per-location embeddings of frames [N, S, S, 3] (L2-normalised for "cosine")."""
        feature_map = tf.cast(self.embedder(frames, training=training), tf.float32)
        flat = tf.reshape(feature_map, [tf.shape(frames)[0], self.grid * self.grid, -1])
        return tf.math.l2_normalize(flat, axis=-1) if self.similarity == "cosine" else flat

    def predict_colours(self, frames: tf.Tensor, training: bool = False):
        """Predicted colour distributions of each clip's target frame and its true clusters.

        Args:
            frames: [B*T, S, S, 3], clip by clip, the target last in each clip.
        Returns:
            (predicted [B, h*w, K], true int32 [B, h*w], embeddings [B, T, h*w, E]).
        """
        steps, cells = self.num_frames, self.grid * self.grid
        embeddings = self.embed(frames, training)
        embeddings = tf.reshape(embeddings, [-1, steps, cells, tf.shape(embeddings)[-1]])
        labels = tf.reshape(colour_labels(frames, self.color_centers, self.grid), [-1, steps, cells])
        references = tf.reshape(embeddings[:, :-1], [tf.shape(embeddings)[0], -1, tf.shape(embeddings)[-1]])
        reference_colours = tf.one_hot(tf.reshape(labels[:, :-1], [tf.shape(labels)[0], -1]), self.num_colors)
        weights = attention(references, embeddings[:, -1], self.temperature, DOT)
        return copy_labels(weights, reference_colours), labels[:, -1], embeddings

    def compute_loss_and_logs(self, data, training):
        predicted, target, embeddings = self.predict_colours(data["images"], training)
        loss = tf.reduce_mean(colour_cross_entropy(predicted, target))
        hits = tf.equal(tf.argmax(predicted, axis=-1, output_type=tf.int32), target)
        logs = {"loss": loss, "color_top1": tf.reduce_mean(tf.cast(hits, tf.float32))}
        if self.probe is not None and "labels" in data:
            features = tf.reduce_mean(embeddings[:, -1], axis=1)
            loss = loss + self.online_probe(features, data["labels"], logs)
        return loss, logs

    def save_pictures(self, data, run_dir: Path) -> List[str]:
        from sslzoo.video.pictures import save_colorization_picture

        return [save_colorization_picture(self, data["images"], Path(run_dir) / "colorization.png")]

    def get_config(self):
        return {
            **super().get_config(),
            "num_colors": self.num_colors,
            "num_references": self.num_references,
            "temperature": self.temperature,
            "similarity": self.similarity,
            "propagation_temperature": self.propagation_temperature,
            "pseudo_clip_motion": self.pseudo_clip_motion,
            "kmeans_pixels": self.kmeans_pixels,
            "kmeans_seed": self.kmeans_seed,
        }


def colour_cross_entropy(predicted: tf.Tensor, target: tf.Tensor, epsilon: float = 1e-7) -> tf.Tensor:
    """[B, M]: -log of the predicted probability of each target location's true colour cluster.

    `predicted` is already a distribution (attention-weighted one-hots), so this is the cross-entropy of
    the paper's loss, sum_j CE(c_hat_j, c_j); epsilon keeps a colour absent from every reference finite.
    """
    picked = tf.gather(predicted, target, axis=-1, batch_dims=2)
    return -tf.math.log(picked + epsilon)


def fit_colour_clusters(images: np.ndarray, num_colors: int, seed: int, max_pixels: int) -> np.ndarray:
    """k-means centres [K, 2] on ab of a seeded sample of pixels of uint8 images/clips [..., S, S, 3]."""
    pixels = np.asarray(images).reshape(-1, 3)
    rng = np.random.default_rng([seed, 0xC0102])
    if len(pixels) > max_pixels:
        pixels = pixels[np.sort(rng.choice(len(pixels), max_pixels, replace=False))]
    ab = rgb_to_lab(tf.constant(pixels, tf.float32) / 255.0).numpy()[:, 1:]
    return fit_kmeans(ab, num_colors, seed=seed, max_points=max_pixels)


@register_method("video_colorization")
def build_video_colorization(options: dict, encoder: keras.Model, num_classes: int = 0,
                             make_encoder=None) -> VideoColorization:
    """Builds video colorization from `method.options` (see DEFAULTS)."""
    options = check_options("video_colorization", options, DEFAULTS)
    if options["num_colors"] < 2:
        raise ConfigError("method.options.num_colors must be >= 2 (the paper uses 16)")
    if options["num_references"] < 1:
        raise ConfigError("method.options.num_references must be >= 1 (the paper uses 3)")
    if options["temperature"] <= 0 or options["propagation_temperature"] <= 0:
        raise ConfigError("method.options.temperature and propagation_temperature must be > 0")
    if options["similarity"] not in SIMILARITIES:
        raise ConfigError(f"method.options.similarity '{options['similarity']}': use dot or cosine")
    if options["embedding_dim"] < 0 or options["kmeans_pixels"] < options["num_colors"]:
        raise ConfigError("method.options.embedding_dim must be >= 0 and kmeans_pixels >= num_colors")
    try:
        encoder.get_layer(FEATURE_MAP)
    except ValueError as error:
        raise ConfigError(f"encoder '{encoder.name}' has no '{FEATURE_MAP}' layer: video colorization "
                          "needs spatial features") from error
    embedder = greyscale_embedding_encoder(encoder, int(options["embedding_dim"]))
    return VideoColorization(
        embedder,
        num_colors=int(options["num_colors"]),
        num_references=int(options["num_references"]),
        temperature=float(options["temperature"]),
        similarity=options["similarity"],
        propagation_temperature=float(options["propagation_temperature"]),
        pseudo_clip_motion=float(options["pseudo_clip_motion"]),
        kmeans_pixels=int(options["kmeans_pixels"]),
        kmeans_seed=int(options["kmeans_seed"]),
        num_classes=num_classes,
        name="video_colorization",
    )


__all__ = ["VideoColorization", "build_video_colorization", "greyscale_embedding_encoder"]
