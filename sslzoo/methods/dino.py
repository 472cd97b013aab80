"""DINO: a student matches a momentum teacher's centred, sharpened distribution over K prototypes, across crops."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from sslzoo.augment.ops import split_seed
from sslzoo.augment.views import AsymmetricViewOptions, asymmetric_views, check_crop_scale, simclr_view
from sslzoo.backbones import at_input_size
from sslzoo.config import ConfigError, option
from sslzoo.heads import dino_head
from sslzoo.layers import ema
from sslzoo.layers.weight_norm import WeightNormalizedDense
from sslzoo.losses.distillation import dino_center_update, dino_loss
from sslzoo.methods.base import SSLMethod, require, scaled_pixels
from sslzoo.optimizers.schedules import epochs_to_steps
from sslzoo.pictures import save_image_grid
from sslzoo.registry import register_method

# The optimizers whose weight decay Keras reads as a tensor when it applies it (decoupled decay in
# `_apply_weight_decay`), so a per-step value can stand in for it. The zoo's coupled ones (sgd, adam, lars)
# test the value in Python (`if self.weight_decay`), which a per-step tensor cannot pass.
_SCHEDULABLE_DECAY = (keras.optimizers.AdamW, keras.optimizers.Lamb)


def _keep_if(variable, frozen, old):
    return variable.assign(tf.where(frozen, old, variable))


def _assign(variable, value):
    return variable.assign(value)


def _crop_scale(value, key: str) -> None:
    check_crop_scale(value, key, "DINO: global [0.4, 1], local [0.05, 0.4]; ResNet-50 run: [0.14, 1], [0.05, 0.14]")


@dataclasses.dataclass(frozen=True)
class DINOOptions:
    """DINO's hyperparameters. Names follow the official main_dino.py flags where it has one; the defaults
    are its defaults (the ViT-S/16 recipe) except where a comment says otherwise."""

    # --- head (vision_transformer.py `DINOHead`) ---
    out_dim: int = option(65536, "K, the number of prototypes the head scores (official: 65536)", ge=1)
    hidden_dim: int = option(2048, "hidden width of the head's MLP (official: 2048)", ge=1)
    bottleneck_dim: int = option(256, "width before the L2 normalisation and the last layer (official: 256)", ge=1)
    head_layers: int = option(3, "Dense layers of the head's MLP (official nlayers: 3)", ge=1)
    use_bn_in_head: bool = option(False, "BatchNorm after the head's hidden layers (official default: False)")
    norm_last_layer: bool = option(True, "last layer's column norms fixed at 1 (official default; the README "
                                         "sets False for ViT-S: better, but can be unstable)")
    # --- teacher, centre and temperatures (`DINOLoss`) ---
    momentum_teacher: float = option(
        0.996, "teacher EMA momentum at the first step, raised to 1 by a cosine over the run (official: 0.996)",
        search=(0.99, 0.996), ge=0.0, le=1.0)
    center_momentum: float = option(
        0.9, "EMA momentum of the centre (official: 0.9); 1.0 keeps the centre at 0, i.e. no centring",
        ge=0.0, le=1.0)
    student_temp: float = option(0.1, "tau_s of the student softmax (official: 0.1)", gt=0.0)
    teacher_temp: float = option(0.04, "tau_t after the warmup (official default 0.04; 0.07 in the README's "
                                       "longer ViT-S run)", gt=0.0)
    warmup_teacher_temp: float = option(0.04, "tau_t at the first step (official: 0.04)", gt=0.0)
    warmup_teacher_temp_epochs: float = option(
        0.0, "epochs of the linear tau_t warmup (official default 0; 30 in the README's longer run)", ge=0.0)
    # --- optimisation (train_one_epoch) ---
    freeze_last_layer: float = option(
        1.0, "epochs during which the head's last layer is not updated (official: 1)", ge=0.0)
    weight_decay_end: Optional[float] = option(
        None, "weight decay at the last step, reached by a cosine from optimizer.weight_decay (official ViT: "
              "0.04 -> 0.4); None keeps optimizer.weight_decay; needs optimizer adamw or lamb", ge=0.0)
    clip_grad: float = option(
        3.0, "each variable's gradient clipped to this L2 norm (official: 3.0); 0 turns it off", ge=0.0)
    # --- multi-crop (`DataAugmentationDINO`) ---
    global_crop_scale: Tuple[float, float] = option(
        (0.4, 1.0), "[low, high] area fraction of the two global crops (official: 0.4-1; ResNet-50: 0.14-1)",
        gt=0.0, le=1.0)
    local_crop_scale: Tuple[float, float] = option(
        (0.05, 0.4), "[low, high] area fraction of the local crops (official: 0.05-0.4; ResNet-50: 0.05-0.14)",
        gt=0.0, le=1.0)
    local_crops_number: int = option(8, "local crops per image, seen only by the student (official: 8)", ge=0)
    # 224 -> 96 px is 0.43 of the side; half the side gives 16 px at 32, which the 4-block ConvNet pools
    # evenly (16 -> 8 -> 4 -> 2), where 0.43 would give 14 px.
    local_crop_size: Optional[int] = option(
        None, "side of the local crops in pixels (None: half the image side, 16 at 32 px; official: 96 at 224)",
        ge=1)
    # --- photometric augmentation, the official values ---
    color_strength: float = option(
        0.5, "s of the colour jitter: brightness, contrast, saturation, hue 0.8s, 0.8s, 0.8s, 0.2s (official: "
             "0.4, 0.4, 0.2, 0.1; 0.5 gives 0.4, 0.4, 0.4, 0.1)", ge=0.0)
    color_probability: float = option(0.8, "chance of the colour jitter (official: 0.8)", ge=0.0, le=1.0)
    grayscale_probability: float = option(0.2, "chance of grayscale (official: 0.2)", ge=0.0, le=1.0)
    flip: bool = option(True, "horizontal flips with p = 0.5 (official)")
    blur_probability: float = option(
        1.0, "first global crop's chance of a Gaussian blur (official: 1.0; kernel 10% of the side: 3 taps "
             "at 32 px)", ge=0.0, le=1.0)
    blur_probability_2: float = option(0.1, "second global crop's chance of a blur (official: 0.1)", ge=0.0, le=1.0)
    local_blur_probability: float = option(
        0.5, "local crops' chance of a blur (official: 0.5; under 20 px the kernel is 1 tap, no blur)",
        ge=0.0, le=1.0)
    solarize_probability: float = option(0.0, "first global crop's chance of solarization (official: 0)",
                                         ge=0.0, le=1.0)
    solarize_probability_2: float = option(0.2, "second global crop's chance of solarization (official: 0.2)",
                                           ge=0.0, le=1.0)
    solarize_threshold: float = option(0.5, "pixels >= this are inverted (PIL's 128 of 255)", ge=0.0, le=1.0)

    def __post_init__(self):
        _crop_scale(self.global_crop_scale, "global_crop_scale")
        _crop_scale(self.local_crop_scale, "local_crop_scale")

    def global_views(self) -> AsymmetricViewOptions:
        """The two global crops are BYOL's asymmetric views with DINO's crop scale."""
        return AsymmetricViewOptions(
            crop_scale=self.global_crop_scale, color_strength=self.color_strength,
            color_probability=self.color_probability, grayscale_probability=self.grayscale_probability,
            flip=self.flip, blur_probability=self.blur_probability, blur_probability_2=self.blur_probability_2,
            solarize_probability=self.solarize_probability, solarize_probability_2=self.solarize_probability_2,
            solarize_threshold=self.solarize_threshold)


@register_method("dino")
@keras.saving.register_keras_serializable(package="sslzoo")
class DINO(SSLMethod):
    """Self-distillation with no labels: the student's softmax(g(x') / tau_s) on every crop x' is trained
    towards the teacher's softmax((g_t(x) - C) / tau_t) on each *other* global crop x (`dino_loss`).

    Args (besides the base class'):
        head: part features [N, D] -> logits [N, K] (`dino_head`: MLP with GELU, L2 normalisation, a
            weight-normalised bias-free last layer).
    State (tracked, so checkpoints and .keras files carry it):
        `teacher_encoder`, `teacher_head`: momentum copies of the student, starting as exact copies and
            updated after every optimizer step by theta_t <- m theta_t + (1 - m) theta_s, m the cosine from
            `momentum_teacher` to 1 over the run (`set_run_length`; outside the trainer m stays at its
            base). They see only the two global crops, in training mode (the official teacher is never put
            in eval mode), and get no gradient.
        `center` [1, K]: non-trainable; after each step C <- c C + (1 - c) * mean of the teacher's logits
            over both global crops of the global batch (`dino_center_update`), the loss using the old C.
    Multi-crop: the student runs the two global crops through the encoder together, the local crops through
    the same layers and weights at the local size (`local_encoder`, `at_input_size`) together, and the head
    on all of them at once, as the official `MultiCropWrapper` (batch-norm statistics per resolution).
    Schedules over steps k (0-based, the optimizer step being taken), told by the trainer
    (`set_run_length`: K steps, E steps per epoch; without E, e.g. outside the trainer, warmup and freeze
    are 0 steps):
        tau_t(k): linear from warmup_teacher_temp to teacher_temp over W = warmup_teacher_temp_epochs * E
            steps (np.linspace(start, end, W)[k], then teacher_temp); the official schedule is the same
            linspace over epochs, so it steps once per epoch.
        weight decay (weight_decay_end set): end + (start - end) (1 + cos(pi k / K)) / 2, start the
            optimizer's configured weight_decay, put on the optimizer for step k (official `wd_schedule`).
        last layer frozen while k < freeze_last_layer * E: its gradient is zeroed and it and its optimizer
            slots are put back after the step, so the step leaves them as they were (the official code sets
            their `.grad` to None, which the optimizer skips).
    k is `optimizer.iterations`, which counts applied steps: under mixed_float16 the steps the loss scale
    skips do not advance the schedules (the official loop index does).
    Each variable's gradient is clipped to norm `clip_grad` before the freeze (official `clip_gradients`).
    The online probe reads the first global crop's detached student features.
    Reference: Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, "Emerging Properties in
    Self-Supervised Vision Transformers", ICCV 2021 (Algorithm 1; the official main_dino.py, utils.py and
    vision_transformer.py).
    """

    Options = DINOOptions
    parts = ("head",)

    @classmethod
    def resolve_options(cls, options, encoder):
        image_size = int(encoder.input_shape[1])
        if options.local_crop_size is None:
            options = dataclasses.replace(options, local_crop_size=scaled_pixels(16, image_size, minimum=1))
        size = options.local_crop_size
        require(size <= image_size, f"method.options.local_crop_size {size}: larger than the {image_size}-px "
                                    "images the crops are cut from; use at most data.image_size")
        if options.local_crops_number and size != image_size:
            try:
                at_input_size(encoder, size)
            except Exception as error:  # noqa: BLE001 - any build failure means this size cannot run
                # A ViT's position table fixes its input size. Local crops at the full size still work (cut
                # at the local scale, resampled to the image side), at the cost of full-size passes.
                raise ConfigError(
                    f"method.options.local_crop_size {size}: encoder '{encoder.name}' cannot run on {size}x{size} "
                    f"local crops ({error}); set local_crop_size to the image size ({image_size}) to feed them "
                    "resized to it, or local_crops_number 0") from error
        return options

    @classmethod
    def build_parts(cls, options, encoder, make_encoder=None):
        head = dino_head(int(encoder.output_shape[-1]), options.out_dim, hidden_dim=options.hidden_dim,
                         bottleneck_dim=options.bottleneck_dim, num_layers=options.head_layers,
                         batch_norm=options.use_bn_in_head, norm_last_layer=options.norm_last_layer,
                         name="dino_head")
        return {"head": head}

    def setup(self):
        options = self.options
        # The teacher starts as an exact copy of the student (official: load_state_dict of the student).
        self.teacher_encoder = ema.momentum_copy(self.encoder, "teacher_encoder")
        self.teacher_head = ema.momentum_copy(self.head, "teacher_head")
        image_size = int(self.encoder.input_shape[1])
        self.local_size = options.local_crop_size or scaled_pixels(16, image_size, minimum=1)
        self.local_encoder = None
        if options.local_crops_number and self.local_size != image_size:
            self.local_encoder = at_input_size(self.encoder, self.local_size, name="local_encoder")
        # A variable of the method: tf.train.Checkpoint and .keras files carry it with the run.
        self.center = self.add_weight(name="center", shape=(1, options.out_dim), initializer="zeros",
                                      trainable=False)
        self.global_view_options = options.global_views()
        self.last_layer = [layer for layer in self.head.layers if isinstance(layer, WeightNormalizedDense)][0]
        self.log_names = ("teacher_temp", "teacher_momentum", "teacher_entropy", "teacher_mean_entropy",
                          *(("weight_decay",) if options.weight_decay_end is not None else ()))

    def set_run_length(self, total_steps: int, steps_per_epoch: Optional[int] = None) -> None:
        super().set_run_length(total_steps, steps_per_epoch)
        self.check_optimizer()
        # The schedules are read when the train step is traced: a new run length needs a new trace.
        self.train_function = None

    def check_optimizer(self) -> None:
        """Refuses a weight-decay schedule the compiled optimizer could not follow (it would silently stay
        flat). Called by `set_run_length` (the trainer: before any file is written) and when the train step
        is traced."""
        if self.options.weight_decay_end is None or getattr(self, "optimizer", None) is None:
            return
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        # Kept here, outside any replica: under tf.distribute every replica's trace swaps the attribute,
        # so one replica could read another's tensor there.
        if isinstance(inner.weight_decay, (int, float)) or inner.weight_decay is None:
            self._configured_weight_decay = inner.weight_decay
        if not isinstance(inner, _SCHEDULABLE_DECAY):
            raise ConfigError(
                f"method.options.weight_decay_end {self.options.weight_decay_end}: a weight-decay schedule "
                f"needs optimizer.name adamw or lamb (decoupled decay, set per step), not {type(inner).__name__}; "
                "leave weight_decay_end unset (null) to keep optimizer.weight_decay constant, as the official "
                "ResNet-50 run does")

    # --- crops -----------------------------------------------------------------------------------------
    def augment(self, images, labels, seed):
        """{"images", "global_1", "global_2" [B, S, S, 3], "local_crops" [B, N, s, s, 3] (N > 0), "labels"}."""
        options = self.options
        global_seed, local_seed = split_seed(seed, 2)
        global_1, global_2 = asymmetric_views(images, global_seed, self.global_view_options)
        data = {"images": images, "global_1": global_1, "global_2": global_2, "labels": labels}
        count = options.local_crops_number
        if count:
            # One pass over the images repeated N times (crop-major): every crop draws its own parameters.
            tiled = tf.tile(images, [count, 1, 1, 1])
            crops = simclr_view(
                tiled, local_seed, crop_scale=options.local_crop_scale, color_strength=options.color_strength,
                color_probability=options.color_probability, grayscale_probability=options.grayscale_probability,
                blur_probability=options.local_blur_probability, flip=options.flip, size=self.local_size)
            crops = tf.reshape(crops, [count, -1, self.local_size, self.local_size, 3])
            # Batch first, so tf.data and tf.distribute split the batch, not the crops.
            data["local_crops"] = tf.transpose(crops, [1, 0, 2, 3, 4])
        return data

    # --- networks ----------------------------------------------------------------------------------------
    def teacher_logits(self, data, training) -> List[tf.Tensor]:
        """The teacher's logits [B, K] on the two global crops, without gradient."""
        crops = tf.concat([data["global_1"], data["global_2"]], axis=0)
        logits = self.teacher_head(self.teacher_encoder(crops, training=training), training=training)
        return [tf.stop_gradient(t) for t in tf.split(logits, 2, axis=0)]

    def student_logits(self, data, training) -> Tuple[tf.Tensor, List[tf.Tensor]]:
        """(features of global crop 1 [B, D], logits [B, K] per crop: global 1, global 2, then the local ones)."""
        global_features = self.encoder(tf.concat([data["global_1"], data["global_2"]], axis=0), training=training)
        features = [global_features]
        count = self.options.local_crops_number
        if count:
            local = data["local_crops"]
            size = local.shape[2]
            local = tf.reshape(tf.transpose(local, [1, 0, 2, 3, 4]), [-1, size, size, 3])  # crop-major
            encoder = self.local_encoder if self.local_encoder is not None else self.encoder
            features.append(encoder(local, training=training))
        logits = self.head(tf.concat(features, axis=0), training=training)
        return tf.split(global_features, 2, axis=0)[0], tf.split(logits, 2 + count, axis=0)

    # --- schedules ---------------------------------------------------------------------------------------
    def _epochs_to_steps(self, epochs: float) -> int:
        return epochs_to_steps(epochs, self.steps_per_epoch) if self.steps_per_epoch else 0

    def current_step(self) -> tf.Tensor:
        """k, the 0-based index of the optimizer step about to be taken (0 before compile)."""
        optimizer = getattr(self, "optimizer", None)
        if optimizer is None:
            return tf.constant(0, tf.int64)
        return tf.convert_to_tensor(optimizer.iterations)

    def teacher_temp_at(self, step) -> tf.Tensor:
        """tau_t at step k: np.linspace(warmup_teacher_temp, teacher_temp, W)[k] for k < W, then teacher_temp."""
        start, end = self.options.warmup_teacher_temp, self.options.teacher_temp
        warmup = self._epochs_to_steps(self.options.warmup_teacher_temp_epochs)
        if warmup == 0:
            return tf.constant(end, tf.float32)
        k = tf.cast(step, tf.float32)
        ramp = start + (end - start) * tf.minimum(k, warmup - 1.0) / max(warmup - 1.0, 1.0)
        return tf.where(k < warmup, ramp, tf.constant(end, tf.float32))

    def momentum_at(self, step) -> tf.Tensor:
        """m at step k: the cosine from momentum_teacher to 1 over the run (official `momentum_schedule`)."""
        return ema.scheduled_momentum(self.options.momentum_teacher, step, self.total_steps)

    def weight_decay_at(self, step, start: float) -> tf.Tensor:
        """The weight decay of step k: the cosine from `start` to weight_decay_end over the run."""
        end = self.options.weight_decay_end
        if self.total_steps is None:
            return tf.constant(start, tf.float32)
        progress = tf.clip_by_value(tf.cast(step, tf.float32) / tf.cast(self.total_steps, tf.float32), 0.0, 1.0)
        return end + 0.5 * (start - end) * (1.0 + tf.cos(math.pi * progress))

    def last_layer_frozen(self, step) -> Optional[tf.Tensor]:
        """bool scalar, True while k < freeze_last_layer epochs; None when there is no freeze at all."""
        steps = self._epochs_to_steps(self.options.freeze_last_layer)
        return tf.less(step, steps) if steps else None

    # --- loss and step -------------------------------------------------------------------------------------
    def compute_loss_and_logs(self, data, training, teacher=None, step=None):
        if teacher is None:
            teacher = self.teacher_logits(data, training)
        if step is None:
            step = self.current_step()
        temp = self.teacher_temp_at(step)
        features, student = self.student_logits(data, training)
        loss = dino_loss(student, teacher, self.center, teacher_temp=temp, student_temp=self.options.student_temp)
        logs = {"loss": loss, "teacher_temp": temp, **self.teacher_entropies(teacher, temp)}
        loss = self.add_probe_loss(loss, features, data, logs)
        return loss, logs

    def teacher_entropies(self, teacher: Sequence[tf.Tensor], temp) -> Dict[str, tf.Tensor]:
        """The two collapse monitors (nats): the mean entropy of the teacher's targets (0 when sharpening
        wins: one-hot targets), and the entropy of their batch mean (0 when one prototype takes every
        image; log K when the batch spreads evenly, or when every target is uniform)."""
        logits = tf.cast(tf.concat(teacher, axis=0), tf.float32)
        targets = tf.nn.softmax((logits - self.center) / temp, axis=-1)
        mean = tf.reduce_mean(targets, axis=0)

        def entropy(p):
            return -tf.reduce_sum(p * tf.math.log(tf.maximum(p, 1e-12)), axis=-1)

        return {"teacher_entropy": tf.reduce_mean(entropy(targets)), "teacher_mean_entropy": entropy(mean)}

    def train_step(self, data):
        step = self.current_step()
        # The teacher first, outside the tape: nothing of its forward pass is recorded.
        teacher = self.teacher_logits(data, training=True)
        with tf.GradientTape() as tape:
            loss, logs = self.compute_loss_and_logs(data, training=True, teacher=teacher, step=step)
        with self._weight_decay_for(step, logs):
            self.apply_gradients(tape, loss, self.trainable_variables, step=step)
        momentum = self.momentum_at(step)
        ema.momentum_update(self.momentum_pairs(), momentum)
        # Algorithm 1: C is updated after the loss used it.
        center = dino_center_update(self.center, teacher, self.options.center_momentum)
        ema.update_replicated([(self.center, _assign, (center,))])
        logs["teacher_momentum"] = momentum
        return self.update_metrics(logs)

    def apply_gradients(self, tape, loss, variables, optimizer=None, step=None) -> None:
        """The base step, with the official order between backward and update: clip each gradient, then
        cancel the last layer's update while it is frozen."""
        optimizer = optimizer or self.optimizer
        grads = self.gradients(tape, loss, variables, optimizer)
        if self.options.clip_grad:
            grads = self._clip(grads, optimizer)
        frozen = self.last_layer_frozen(self.current_step() if step is None else step)
        if frozen is None:
            optimizer.apply(grads, variables)
            return
        last = {id(v) for v in self.last_layer.trainable_weights}
        grads = [tf.where(frozen, tf.zeros_like(g), g) if id(v) in last and g is not None else g
                 for g, v in zip(grads, variables)]
        kept = self.last_layer_state(optimizer)
        before = [tf.identity(tf.convert_to_tensor(v)) for v in kept]
        optimizer.apply(grads, variables)
        # Weight decay and momentum would still move a layer whose gradient is zero: put them back.
        ema.update_replicated([(v, _keep_if, (frozen, old)) for v, old in zip(kept, before)])

    def _clip(self, grads, optimizer):
        """Each gradient times clip / (||g|| + 1e-6) where that is < 1 (official `clip_gradients`). Under a
        loss scale s the gradients are s g, so the norm is divided by s first."""
        clip = self.options.clip_grad
        scale = getattr(optimizer, "dynamic_scale", None)
        scale = 1.0 if scale is None else tf.cast(tf.convert_to_tensor(scale), tf.float32)
        clipped = []
        for g in grads:
            if g is None:
                clipped.append(g)
                continue
            norm = tf.norm(tf.cast(g, tf.float32)) / scale
            coefficient = tf.minimum(clip / (norm + 1e-6), 1.0)
            clipped.append(g * tf.cast(coefficient, g.dtype))
        return clipped

    def last_layer_state(self, optimizer=None) -> List[keras.Variable]:
        """The head's last-layer variables and their optimizer slots (Keras names a slot
        `<variable path with _>_<slot name>`, with the variable's shape)."""
        optimizer = optimizer or self.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        state = list(self.last_layer.trainable_weights)
        for variable in self.last_layer.trainable_weights:
            prefix = variable.path.replace("/", "_") + "_"
            state += [slot for slot in inner.variables
                      if slot.name.startswith(prefix) and tuple(slot.shape) == tuple(variable.shape)]
        return state

    @contextlib.contextmanager
    def _weight_decay_for(self, step, logs):
        """Within it, the optimizer's weight decay is the scheduled value of step k (weight_decay_end set)."""
        if self.options.weight_decay_end is None:
            yield
            return
        if not hasattr(self, "_configured_weight_decay"):
            self.check_optimizer()
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        configured = self._configured_weight_decay
        value = self.weight_decay_at(step, float(configured or 0.0))
        logs["weight_decay"] = value
        # Keras reads `weight_decay` while tracing the update (a tensor there becomes part of the graph);
        # the configured float comes back at once, so get_config and checkpoints never see the tensor.
        inner.weight_decay = value
        try:
            yield
        finally:
            inner.weight_decay = configured

    def momentum_pairs(self):
        """(teacher variable, student variable) for every trainable parameter of encoder and head."""
        return ema.momentum_pairs((self.encoder, self.head), (self.teacher_encoder, self.teacher_head))

    # --- pictures -------------------------------------------------------------------------------------
    def save_pictures(self, data, run_dir: Path) -> List[str]:
        """Up to 8 images with their global and (up to 4) local crops, each crop captioned with the
        prototype the student puts most mass on and that mass; the global crops also with the teacher's
        (centred, sharpened) choice. Crops of one image agreeing on a prototype is what the loss asks."""
        count = min(8, int(data["global_1"].shape[0]))
        sample = {key: value[:count] for key, value in data.items() if key != "labels"}
        temp = self.teacher_temp_at(self.current_step())
        teacher = tf.nn.softmax((tf.concat(self.teacher_logits(sample, False), 0) - self.center) / temp, -1)
        _, student = self.student_logits(sample, training=False)
        student = [tf.nn.softmax(tf.cast(s, tf.float32) / self.options.student_temp, -1).numpy() for s in student]
        teacher = np.split(teacher.numpy(), 2)

        def top(p, who=""):
            return [f"{who}#{int(np.argmax(row))} {float(np.max(row)):.2f}" for row in p]

        rows = [("image", np.asarray(sample["images"]))]
        captions = [[""] * count]
        for index, key in enumerate(("global_1", "global_2")):
            rows.append((f"global {index + 1}", np.asarray(sample[key])))
            captions.append([f"{s} / {t}" for s, t in zip(top(student[index], "s"), top(teacher[index], "t"))])
        for index in range(min(4, self.options.local_crops_number)):
            rows.append((f"local {index + 1}", np.asarray(sample["local_crops"][:, index])))
            captions.append(top(student[2 + index], "s"))
        name = "dino_crops.png"
        save_image_grid(Path(run_dir) / name, rows, captions=captions,
                        title=f"DINO: student (s) and teacher (t) top prototype of {self.options.out_dim}, and its mass")
        return [name]
