"""MoCo v1 / v2: contrast each query with its momentum-encoded key and a queue of earlier keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Literal, Tuple

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment.views import ViewOptions, two_views
from sslzoo.config import ConfigError, option
from sslzoo.heads import mlp_head
from sslzoo.layers import all_gather_batch, ema, grouped_call, shuffled_grouped_call
from sslzoo.losses import info_nce
from sslzoo.methods.base import SSLMethod, require, top1
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method

# The values that differ between the versions: an option left None takes its version's value.
VERSION_DEFAULTS = {
    1: {"temperature": 0.07, "color_probability": 1.0, "blur_probability": 0.0},
    2: {"temperature": 0.2, "color_probability": 0.8, "blur_probability": 0.5},
}


@dataclasses.dataclass(frozen=True)
class MoCoOptions(ViewOptions):
    """MoCo v1/v2's hyperparameters (card ## 9: builder.py / main_moco.py) and its view augmentation.

    None (temperature, color_probability, blur_probability) = the version's own value (VERSION_DEFAULTS),
    filled in on construction, so the options a method runs with (and records) hold numbers only. `hue`
    None stays None: the hue range follows color_strength (0.2 x s), wherever s comes from.
    """

    version: Literal[1, 2] = option(2, "1 (MoCo) or 2 (MoCo v2: MLP head, tau 0.2, blur)")
    queue_size: int = option(65536, "K, keys kept as negatives; a multiple of the global batch size "
                                    "(builder.py asserts it; the paper: 65536; CIFAR demo: 4096)", ge=1)
    momentum: float = option(0.999, "m of the key encoder (the paper: 0.999, CIFAR demo 0.99; 0 fails to learn)",
                             ge=0.0, le=1.0)
    temperature: float | None = option(None, "tau of InfoNCE (None: v1 0.07, v2 0.2)", search=(0.07, 0.1, 0.2),
                                       gt=0.0)
    projection_dim: int = option(128, "output width of the projector (the paper: 128)", ge=1)
    # Official: dim_mlp = the fc layer's input width.
    hidden_dim: int = option(0, "v2 MLP hidden width (0 = the encoder's feature width)", ge=0)
    # BN subsets per replica for the shuffling-BN emulation (CIFAR demo: --bn-splits 8); 1 = one subset
    # per replica (on one device: plain BN, no protection against the batch-statistics leak).
    shuffle_bn_groups: int = option(8, "BN subsets per replica (sslzoo.layers.shuffle_bn; CIFAR demo: 8)", ge=1)
    shuffle_seed: int = option(0, "base of the per-step stateless seed of the key shuffle")
    # Augmentation (main_moco.py); crop 0.2-1 in both versions. color_strength 0.5 (the shared default) is
    # SimCLR's s: jitter (0.8s, 0.8s, 0.8s, 0.2s) = (0.4, 0.4, 0.4, 0.1).
    crop_scale: tuple[float, float] = option(
        (0.2, 1.0), "[low, high] range of the crop's area fraction (MoCo: 0.2-1)", gt=0.0, le=1.0)
    color_probability: float | None = option(
        None, "chance that an image is colour-jittered (None: v1 1.0 (always), v2 0.8)", ge=0.0, le=1.0)
    # "aug+"; zoo configs turn it off at 32x32.
    blur_probability: float | None = option(
        None, "chance of a Gaussian blur (None: v1 0.0, v2 0.5)", ge=0.0, le=1.0)
    # main_moco.py: v1 ColorJitter(0.4, 0.4, 0.4, 0.4), v2 (0.4, 0.4, 0.4, 0.1). SimCLR's jitter ties hue
    # to the other three (0.2s against 0.8s), which gives v2's 0.1 at s = 0.5 but not v1's 0.4.
    hue: float | None = option(
        None, "hue shift range of the colour jitter, a fraction of a turn (None: 0.2 x color_strength; "
              "main_moco.py: v1 0.4, v2 0.1)", ge=0.0, le=0.5)

    def __post_init__(self):
        require(self.version in VERSION_DEFAULTS, f"version {self.version!r}: use 1 (MoCo) or 2 (MoCo v2)")
        for key, value in VERSION_DEFAULTS[self.version].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)  # frozen: the version's value, set once here
        super().__post_init__()


@register_method("moco")
@keras.saving.register_keras_serializable(package="sslzoo")
class MoCo(SSLMethod):
    """Momentum contrast: InfoNCE of queries against momentum-encoder keys and a FIFO queue of keys.

    Args (besides the base class'):
        projector: part features [N, D] -> projections [N, P] (v1: one linear layer; v2:
            Dense-ReLU-Dense).
    The encoder is the query encoder, the one evaluated and exported; the online probe reads the query
    features of view 1. `momentum` m: theta_k <- m * theta_k + (1 - m) * theta_q after every optimizer step.
    State (tracked variables, so checkpoints and .keras files carry them): `key_encoder` and
    `key_projector` (momentum copies), `queue` float32 [K, P] of L2-normalised keys, `queue_pointer`
    int32 (the slot the next key goes to, i.e. the oldest key).
    Reference: He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive
    Learning", arXiv 2003.04297 (2020).
    """

    Options = MoCoOptions
    parts = ("projector",)
    log_names = ("moco_top1",)

    @classmethod
    def default_name(cls, options):
        return f"moco_v{options.version}"

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        return {"projector": build_projector(options, int(encoder.output_shape[-1]))}

    def setup(self):
        queue_size, projection_dim = self.options.queue_size, int(self.projector.output_shape[-1])
        # The key encoder starts as an exact copy of the query encoder (builder.py copies the params).
        self.key_encoder = ema.momentum_copy(self.encoder, "key_encoder")
        self.key_projector = ema.momentum_copy(self.projector, "key_projector")
        self.queue = self.add_weight(
            shape=(queue_size, projection_dim), initializer="zeros", dtype="float32",
            trainable=False, autocast=False, name="queue",
        )
        # builder.py starts from random unit vectors (randn, normalized along the feature axis).
        initial = tf.random.stateless_normal([queue_size, projection_dim], seed=[self.options.shuffle_seed, 1])
        self.queue.assign(tf.math.l2_normalize(initial, axis=1))
        self.queue_pointer = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="queue_pointer"
        )

    # --- the two encoders -------------------------------------------------------------------------
    def augment(self, images, labels, seed):
        view_1, view_2 = two_views(images, seed, **self.options.as_kwargs(), hue=self.options.hue)
        return {"images": images, "view_1": view_1, "view_2": view_2, "labels": labels}

    def compute_queries(self, images, training):
        """(features [B, D], projections [B, P]) of the query encoder; BN per group in training."""

        def query_net(x):
            features = self.encoder(x, training=training)
            return features, self.projector(features, training=training)

        groups = self.options.shuffle_bn_groups if training else 1
        return grouped_call(query_net, images, groups)

    def compute_keys(self, images, training):
        """(local keys [B, P], global keys [R*B, P]), L2-normalised float32, without gradient.

        Training mode uses shuffling BN (sslzoo.layers.shuffle_bn); in inference mode BN uses moving
        statistics, so there is no batch leak and no need to shuffle.
        """

        def key_net(x):
            features = self.key_encoder(x, training=training)
            projections = self.key_projector(features, training=training)
            return tf.math.l2_normalize(tf.cast(projections, tf.float32), axis=1)

        if training:
            local, everything = shuffled_grouped_call(
                key_net, images, self.options.shuffle_bn_groups, self._shuffle_seed())
        else:
            local = key_net(images)
            everything = all_gather_batch(local)
        return tf.stop_gradient(local), tf.stop_gradient(everything)

    def _shuffle_seed(self) -> tf.Tensor:
        # Identical on every replica (all replicas must draw the same permutation) and reproducible on
        # resume: the optimizer's step counter is in the checkpoint.
        step = self.optimizer.iterations if getattr(self, "optimizer", None) is not None else 0
        return tf.stack([tf.constant(self.options.shuffle_seed, tf.int32), tf.cast(step, tf.int32)])

    # --- loss and the MoCo step ---------------------------------------------------------------------
    def compute_loss_and_logs(self, data, training, keys=None):
        if keys is None:
            keys, _ = self.compute_keys(data["view_2"], training)
        features, queries = self.compute_queries(data["view_1"], training)
        # M1 Eq. 1: the positive at logit 0, the K queued keys as negatives (read before this step's
        # enqueue, so no key of the current batch is its own negative).
        loss, logits, labels = info_nce(queries, keys, tf.stop_gradient(self.queue), self.options.temperature)
        logs = {"loss": loss, "moco_top1": top1(logits, labels)}
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def train_step(self, data):
        self.check_batch(data["view_1"])
        # Keys first, outside the tape: the key encoder gets no gradient, and the tape records nothing
        # of its forward pass.
        keys, global_keys = self.compute_keys(data["view_2"], training=True)
        with tf.GradientTape() as tape:
            loss, logs = self.compute_loss_and_logs(data, training=True, keys=keys)
        self.apply_gradients(tape, loss, self.trainable_variables)
        # Algorithm 1 order: update f_q, then f_k by momentum, then enqueue this batch's keys.
        self.momentum_update()
        self.enqueue(global_keys)
        return self.update_metrics(logs)

    def momentum_pairs(self) -> List[Tuple[keras.Variable, keras.Variable]]:
        """(key variable, query variable) for every trainable query parameter (encoder and projector).

        As in builder.py only parameters are averaged; the key encoder's BN moving statistics are its
        own (they are only used in inference mode, e.g. the validation loss).
        """
        return ema.momentum_pairs((self.encoder, self.projector), (self.key_encoder, self.key_projector))

    def momentum_update(self) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q (M1 Eq. 2), for every pair of parameters."""
        ema.momentum_update(self.momentum_pairs(), self.options.momentum)

    def enqueue(self, keys: tf.Tensor) -> None:
        """Writes `keys` [n, P] over the n oldest queue slots (FIFO ring) and advances the pointer.

        After any sequence of enqueues the queue holds exactly the last K keys; slot
        (pointer + j) % K is the j-th oldest. n <= K (the batch check guarantees it in training).
        """
        keys = tf.cast(keys, tf.float32)
        count = tf.shape(keys)[0]
        pointer = tf.convert_to_tensor(self.queue_pointer)
        queue_size = self.options.queue_size
        indices = (pointer + tf.range(count)) % queue_size
        new_pointer = (pointer + count) % queue_size
        ema.update_replicated([
            (self.queue, lambda variable, rows, where: variable.scatter_update(tf.IndexedSlices(rows, where)),
             (keys, indices)),
            (self.queue_pointer, lambda variable, value: variable.assign(value), (new_pointer,)),
        ])

    def check_batch(self, view: tf.Tensor) -> None:
        """Fails clearly (at trace time when the batch size is static) on batch sizes MoCo cannot use."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        queue_size, groups = self.options.queue_size, self.options.shuffle_bn_groups
        local = view.shape[0]
        if local is None:
            global_batch = tf.shape(view)[0] * replicas
            tf.debugging.assert_equal(
                queue_size % global_batch, 0,
                message="method.options.queue_size must be a multiple of the global batch size",
            )
            return
        global_batch = local * replicas
        if queue_size % global_batch:
            raise ConfigError(
                f"method.options.queue_size {queue_size} is not a multiple of the global batch size "
                f"{global_batch} ({local} x {replicas} replicas); MoCo replaces whole batches of keys "
                f"(builder.py asserts K % batch == 0): use e.g. "
                f"{max(1, round(queue_size / global_batch)) * global_batch}"
            )
        if local % groups:
            raise ConfigError(
                f"method.options.shuffle_bn_groups {groups} does not divide the per-replica "
                f"batch {local}; use a divisor of it (e.g. 8 for batches that are multiples of 8)"
            )

    # --- pictures -----------------------------------------------------------------------------------
    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """The two views of a few validation images, captioned with the positive's cosine and its rank
        among the K + 1 candidates (1 = the query picks its own key over the whole queue)."""
        count = min(8, int(data["view_1"].shape[0]))
        view_1, view_2 = data["view_1"][:count], data["view_2"][:count]
        keys, _ = self.compute_keys(view_2, training=False)
        _, queries = self.compute_queries(view_1, training=False)
        temperature = self.options.temperature
        _, logits, _ = info_nce(queries, keys, self.queue, temperature)
        logits = logits.numpy()
        ranks = 1 + np.sum(logits[:, 1:] >= logits[:, :1], axis=1)
        cosines = logits[:, 0] * temperature
        captions = [[""] * count, [""] * count, [f"cos {c:.2f} rank {r}" for c, r in zip(cosines, ranks)]]
        rows = [("image", data["images"][:count].numpy()), ("view 1 (query)", view_1.numpy()),
                ("view 2 (key)", view_2.numpy())]
        title = (f"MoCo v{self.options.version}: rank of the positive key among "
                 f"{self.options.queue_size + 1} candidates")
        return [save_image_grid(Path(run_dir) / "moco_views.png", rows, captions=captions, title=title)]


def build_projector(options: MoCoOptions, feature_dim: int) -> keras.Model:
    """v1: the fc layer replaced by a 128-d linear output; v2: Dense-ReLU-Dense (no BN, as main_moco --mlp)."""
    hidden = [options.hidden_dim or feature_dim] if options.version == 2 else []
    return mlp_head(feature_dim, hidden, options.projection_dim, batch_norm=False, name="projector")
