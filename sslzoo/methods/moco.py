"""MoCo v1 / v2: contrast each query with its momentum-encoded key and a queue of earlier keys."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment.views import two_views
from sslzoo.config import ConfigError
from sslzoo.heads import mlp_head
from sslzoo.layers import all_gather_batch, grouped_call, shuffled_grouped_call
from sslzoo.losses import info_nce
from sslzoo.methods.base import SSLMethod, check_options, top1
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method

# None = the version's own value (VERSION_DEFAULTS). Card ## 9: builder.py / main_moco.py.
DEFAULTS = {
    "version": 2,
    "queue_size": 65536,  # K; must be a multiple of the global batch size (builder.py asserts it)
    "momentum": 0.999,  # m of the key encoder; the CIFAR demo uses 0.99
    "temperature": None,  # v1 0.07, v2 0.2
    "projection_dim": 128,
    "hidden_dim": 0,  # v2 MLP hidden width; 0 = the encoder's feature width (official: dim_mlp = fc input)
    # BN subsets per replica for the shuffling-BN emulation (CIFAR demo: --bn-splits 8); 1 = one subset
    # per replica (on one device: plain BN, no protection against the batch-statistics leak).
    "shuffle_bn_groups": 8,
    "shuffle_seed": 0,
    # Augmentation (main_moco.py); crop 0.2-1 in both versions.
    "crop_scale": [0.2, 1.0],
    "color_strength": 0.5,  # SimCLR strength s: jitter (0.8s, 0.8s, 0.8s, 0.2s) = (0.4, 0.4, 0.4, 0.1)
    "color_probability": None,  # v1 1.0 (always), v2 0.8
    "grayscale_probability": 0.2,
    "blur_probability": None,  # v1 0.0, v2 0.5 ("aug+"; zoo configs turn it off at 32x32)
    "flip": True,
}

VERSION_DEFAULTS = {
    1: {"temperature": 0.07, "color_probability": 1.0, "blur_probability": 0.0},
    2: {"temperature": 0.2, "color_probability": 0.8, "blur_probability": 0.5},
}

VIEW_OPTIONS = ("crop_scale", "color_strength", "color_probability", "grayscale_probability",
                "blur_probability", "flip")


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def update_replicated(updates: Sequence[Tuple[keras.Variable, Callable, tuple]]) -> None:
    """Applies `fn(tf_variable, *args)` for every `(variable, fn, args)`, on every replica's copy.

    Mirrored variables may not be assigned in a replica context directly; like Keras' optimizer, the
    update goes through `merge_call` and `extended.update`, which gives each device its own replica's
    args (identical here: every replica computes the same momentum average and the same gathered keys).
    Without a strategy this is a plain call.
    """
    context = tf.distribute.get_replica_context()
    if context is None:
        for variable, fn, args in updates:
            fn(_tf_variable(variable), *args)
        return

    def merge(strategy, *all_args):
        for (variable, fn, _), args in zip(updates, all_args):
            strategy.extended.update(_tf_variable(variable), fn, args=args, group=False)

    context.merge_call(merge, args=tuple(args for _, _, args in updates))


def momentum_copy(model: keras.Model, name: str) -> keras.Model:
    """A separate model with `model`'s architecture and (at creation) its exact weights, never trained.

    Its variables are marked non-trainable, so they never enter `trainable_variables` (and so never the
    optimizer or the gradient); its layers stay trainable so that its BN layers still normalise with
    batch statistics in training mode (Keras runs a non-trainable BN layer in inference mode).
    """
    config = model.get_config()
    config["name"] = name
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    for variable in copy.weights:
        variable.trainable = False
    return copy


@keras.saving.register_keras_serializable(package="sslzoo")
class MoCo(SSLMethod):
    """Momentum contrast: InfoNCE of queries against momentum-encoder keys and a FIFO queue of keys.

    Args:
        encoder: images float32 [N, S, S, 3] in [0, 1] -> features [N, D]; the query encoder, which is
            the one evaluated and exported.
        projector: features [N, D] -> projections [N, P] (v1: one linear layer; v2: Dense-ReLU-Dense).
        queue_size: K, keys kept as negatives (a multiple of the global batch size).
        momentum: m in theta_k <- m * theta_k + (1 - m) * theta_q, applied after every optimizer step.
        temperature: tau of InfoNCE.
        shuffle_bn_groups: BN subsets per replica (sslzoo.layers.shuffle_bn explains the choice).
        shuffle_seed: base of the per-step stateless seed of the key shuffle.
        version: 1 or 2 (recorded; the differences are in the projector, tau and the augmentation).
        crop_scale, color_strength, color_probability, grayscale_probability, blur_probability, flip:
            the view augmentation (sslzoo.augment.views.simclr_view).
        num_classes: > 0 adds the online linear probe on the query features of view 1.
    State (tracked variables, so checkpoints and .keras files carry them): `key_encoder` and
    `key_projector` (momentum copies), `queue` float32 [K, P] of L2-normalised keys, `queue_pointer`
    int32 (the slot the next key goes to, i.e. the oldest key).
    Reference: He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive
    Learning", arXiv 2003.04297 (2020).
    """

    log_names = ("moco_top1",)

    def __init__(
        self,
        encoder: keras.Model,
        projector: keras.Model,
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.2,
        shuffle_bn_groups: int = 8,
        shuffle_seed: int = 0,
        version: int = 2,
        crop_scale: Sequence[float] = (0.2, 1.0),
        color_strength: float = 0.5,
        color_probability: float = 0.8,
        grayscale_probability: float = 0.2,
        blur_probability: float = 0.5,
        flip: bool = True,
        num_classes: int = 0,
        **kwargs,
    ):
        super().__init__(encoder, num_classes=num_classes, **kwargs)
        self.projector = projector
        self.queue_size = int(queue_size)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.shuffle_bn_groups = int(shuffle_bn_groups)
        self.shuffle_seed = int(shuffle_seed)
        self.version = int(version)
        self.crop_scale = [float(v) for v in crop_scale]
        self.color_strength = float(color_strength)
        self.color_probability = float(color_probability)
        self.grayscale_probability = float(grayscale_probability)
        self.blur_probability = float(blur_probability)
        self.flip = bool(flip)
        self.projection_dim = int(projector.output_shape[-1])
        # The key encoder starts as an exact copy of the query encoder (builder.py copies the params).
        self.key_encoder = momentum_copy(encoder, "key_encoder")
        self.key_projector = momentum_copy(projector, "key_projector")
        self.queue = self.add_weight(
            shape=(self.queue_size, self.projection_dim), initializer="zeros", dtype="float32",
            trainable=False, autocast=False, name="queue",
        )
        # builder.py starts from random unit vectors (randn, normalized along the feature axis).
        initial = tf.random.stateless_normal([self.queue_size, self.projection_dim], seed=[self.shuffle_seed, 1])
        self.queue.assign(tf.math.l2_normalize(initial, axis=1))
        self.queue_pointer = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="queue_pointer"
        )
        self.built = True  # every part above is built

    # --- the two encoders -------------------------------------------------------------------------
    def augment(self, images, labels, seed):
        view_1, view_2 = two_views(images, seed, **self.view_options())
        return {"images": images, "view_1": view_1, "view_2": view_2, "labels": labels}

    def view_options(self) -> dict:
        return {
            "crop_scale": tuple(self.crop_scale),
            "color_strength": self.color_strength,
            "color_probability": self.color_probability,
            "grayscale_probability": self.grayscale_probability,
            "blur_probability": self.blur_probability,
            "flip": self.flip,
        }

    def compute_queries(self, images, training):
        """(features [B, D], projections [B, P]) of the query encoder; BN per group in training."""

        def query_net(x):
            features = self.encoder(x, training=training)
            return features, self.projector(features, training=training)

        groups = self.shuffle_bn_groups if training else 1
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
            local, everything = shuffled_grouped_call(key_net, images, self.shuffle_bn_groups, self._shuffle_seed())
        else:
            local = key_net(images)
            everything = all_gather_batch(local)
        return tf.stop_gradient(local), tf.stop_gradient(everything)

    def _shuffle_seed(self) -> tf.Tensor:
        # Identical on every replica (all replicas must draw the same permutation) and reproducible on
        # resume: the optimizer's step counter is in the checkpoint.
        step = self.optimizer.iterations if getattr(self, "optimizer", None) is not None else 0
        return tf.stack([tf.constant(self.shuffle_seed, tf.int32), tf.cast(step, tf.int32)])

    # --- loss and the MoCo step ---------------------------------------------------------------------
    def compute_loss_and_logs(self, data, training, keys=None):
        if keys is None:
            keys, _ = self.compute_keys(data["view_2"], training)
        features, queries = self.compute_queries(data["view_1"], training)
        # M1 Eq. 1: the positive at logit 0, the K queued keys as negatives (read before this step's
        # enqueue, so no key of the current batch is its own negative).
        loss, logits, labels = info_nce(queries, keys, tf.stop_gradient(self.queue), self.temperature)
        logs = {"loss": loss, "moco_top1": top1(logits, labels)}
        if self.probe is not None and "labels" in data:
            loss = loss + self.online_probe(features, data["labels"], logs)
        return loss, logs

    def train_step(self, data):
        self.check_batch(data["view_1"])
        # Keys first, outside the tape: the key encoder gets no gradient, and the tape records nothing
        # of its forward pass.
        keys, global_keys = self.compute_keys(data["view_2"], training=True)
        with tf.GradientTape() as tape:
            loss, logs = self.compute_loss_and_logs(data, training=True, keys=keys)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        # Algorithm 1 order: update f_q, then f_k by momentum, then enqueue this batch's keys.
        self.momentum_update()
        self.enqueue(global_keys)
        return self.update_metrics(logs)

    def momentum_pairs(self) -> List[Tuple[keras.Variable, keras.Variable]]:
        """(key variable, query variable) for every trainable query parameter (encoder and projector).

        As in builder.py only parameters are averaged; the key encoder's BN moving statistics are its
        own (they are only used in inference mode, e.g. the validation loss).
        """
        pairs = []
        for query_model, key_model in ((self.encoder, self.key_encoder), (self.projector, self.key_projector)):
            for query, key in zip(query_model.weights, key_model.weights):
                if query.trainable:
                    pairs.append((key, query))
        return pairs

    def momentum_update(self) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q (M1 Eq. 2), for every pair of parameters."""
        m = self.momentum
        updates = []
        for key, query in self.momentum_pairs():
            value = m * tf.convert_to_tensor(key) + (1.0 - m) * tf.convert_to_tensor(query)
            updates.append((key, lambda variable, new: variable.assign(new), (value,)))
        update_replicated(updates)

    def enqueue(self, keys: tf.Tensor) -> None:
        """Writes `keys` [n, P] over the n oldest queue slots (FIFO ring) and advances the pointer.

        After any sequence of enqueues the queue holds exactly the last K keys; slot
        (pointer + j) % K is the j-th oldest. n <= K (the batch check guarantees it in training).
        """
        keys = tf.cast(keys, tf.float32)
        count = tf.shape(keys)[0]
        pointer = tf.convert_to_tensor(self.queue_pointer)
        indices = (pointer + tf.range(count)) % self.queue_size
        new_pointer = (pointer + count) % self.queue_size
        update_replicated([
            (self.queue, lambda variable, rows, where: variable.scatter_update(tf.IndexedSlices(rows, where)),
             (keys, indices)),
            (self.queue_pointer, lambda variable, value: variable.assign(value), (new_pointer,)),
        ])

    def check_batch(self, view: tf.Tensor) -> None:
        """Fails clearly (at trace time when the batch size is static) on batch sizes MoCo cannot use."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        local = view.shape[0]
        if local is None:
            global_batch = tf.shape(view)[0] * replicas
            tf.debugging.assert_equal(
                self.queue_size % global_batch, 0,
                message="method.options.queue_size must be a multiple of the global batch size",
            )
            return
        global_batch = local * replicas
        if self.queue_size % global_batch:
            raise ConfigError(
                f"method.options.queue_size {self.queue_size} is not a multiple of the global batch size "
                f"{global_batch} ({local} x {replicas} replicas); MoCo replaces whole batches of keys "
                f"(builder.py asserts K % batch == 0): use e.g. "
                f"{max(1, round(self.queue_size / global_batch)) * global_batch}"
            )
        if local % self.shuffle_bn_groups:
            raise ConfigError(
                f"method.options.shuffle_bn_groups {self.shuffle_bn_groups} does not divide the per-replica "
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
        _, logits, _ = info_nce(queries, keys, self.queue, self.temperature)
        logits = logits.numpy()
        ranks = 1 + np.sum(logits[:, 1:] >= logits[:, :1], axis=1)
        cosines = logits[:, 0] * self.temperature
        captions = [[""] * count, [""] * count, [f"cos {c:.2f} rank {r}" for c, r in zip(cosines, ranks)]]
        rows = [("image", data["images"][:count].numpy()), ("view 1 (query)", view_1.numpy()),
                ("view 2 (key)", view_2.numpy())]
        title = f"MoCo v{self.version}: rank of the positive key among {self.queue_size + 1} candidates"
        return [save_image_grid(Path(run_dir) / "moco_views.png", rows, captions=captions, title=title)]

    # --- serialization ------------------------------------------------------------------------------
    def get_config(self):
        return {
            **super().get_config(),
            "projector": keras.saving.serialize_keras_object(self.projector),
            "queue_size": self.queue_size,
            "momentum": self.momentum,
            "temperature": self.temperature,
            "shuffle_bn_groups": self.shuffle_bn_groups,
            "shuffle_seed": self.shuffle_seed,
            "version": self.version,
            "crop_scale": self.crop_scale,
            "color_strength": self.color_strength,
            "color_probability": self.color_probability,
            "grayscale_probability": self.grayscale_probability,
            "blur_probability": self.blur_probability,
            "flip": self.flip,
        }

    @classmethod
    def nested_models(cls):
        return ("encoder", "projector")


def resolve_options(options: dict) -> dict:
    """`method.options` merged over DEFAULTS, version defaults filled in, every value checked."""
    options = check_options("moco", options, DEFAULTS)
    version = options["version"]
    if version not in VERSION_DEFAULTS:
        raise ConfigError(f"method.options.version {version!r} for moco: use 1 (MoCo) or 2 (MoCo v2)")
    for key, value in VERSION_DEFAULTS[version].items():
        if options[key] is None:
            options[key] = value
        elif isinstance(options[key], bool) or not isinstance(options[key], (int, float)):
            raise ConfigError(f"method.options.{key} for moco: expected a number, got {options[key]!r}")
    checks = [
        (options["queue_size"] >= 1, "queue_size must be >= 1 (the paper: 65536; CIFAR demo: 4096)"),
        (0.0 <= options["momentum"] <= 1.0, "momentum must be in [0, 1] (the paper: 0.999; 0 fails to learn)"),
        (options["temperature"] > 0, "temperature must be > 0 (v1 0.07, v2 0.2)"),
        (options["projection_dim"] >= 1, "projection_dim must be >= 1 (the paper: 128)"),
        (options["hidden_dim"] >= 0, "hidden_dim must be >= 0 (0 = the encoder's feature width)"),
        (options["shuffle_bn_groups"] >= 1, "shuffle_bn_groups must be >= 1 (CIFAR demo: 8)"),
        (len(options["crop_scale"]) == 2 and 0 < options["crop_scale"][0] <= options["crop_scale"][1] <= 1,
         "crop_scale must be [low, high] with 0 < low <= high <= 1 (MoCo: [0.2, 1.0])"),
        (options["color_strength"] >= 0, "color_strength must be >= 0"),
    ]
    for key in ("color_probability", "grayscale_probability", "blur_probability"):
        checks.append((0.0 <= options[key] <= 1.0, f"{key} must be in [0, 1]"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"method.options.{message}; got {_mentioned(message, options)}")
    return options


def _mentioned(message: str, options: dict):
    return options[message.split(" ", 1)[0]]


def build_projector(options: dict, feature_dim: int) -> keras.Model:
    """v1: the fc layer replaced by a 128-d linear output; v2: Dense-ReLU-Dense (no BN, as main_moco --mlp)."""
    hidden = [options["hidden_dim"] or feature_dim] if options["version"] == 2 else []
    return mlp_head(feature_dim, hidden, options["projection_dim"], batch_norm=False, name="projector")


@register_method("moco")
def build_moco(options: dict, encoder: keras.Model, num_classes: int = 0, make_encoder=None) -> MoCo:
    """Builds MoCo v1 or v2 from `method.options` (see DEFAULTS)."""
    options = resolve_options(options)
    projector = build_projector(options, int(encoder.output_shape[-1]))
    return MoCo(
        encoder,
        projector,
        queue_size=options["queue_size"],
        momentum=float(options["momentum"]),
        temperature=float(options["temperature"]),
        shuffle_bn_groups=options["shuffle_bn_groups"],
        shuffle_seed=options["shuffle_seed"],
        version=options["version"],
        crop_scale=[float(v) for v in options["crop_scale"]],
        color_strength=float(options["color_strength"]),
        color_probability=float(options["color_probability"]),
        grayscale_probability=float(options["grayscale_probability"]),
        blur_probability=float(options["blur_probability"]),
        flip=options["flip"],
        num_classes=num_classes,
        name=f"moco_v{options['version']}",
    )
