"""Typed run configuration: dataclasses, YAML via `yaml.safe_load`, `--set a.b=c` overrides.

Everything is validated before any work starts: an unknown key or a value of the wrong type raises
`ConfigError` naming the key and what is allowed. Method-specific settings live in `method.options`,
checked against the method's own options dataclass by `parse_options` (the same type machinery as the
rest of the config), so adding a method never changes this file.

Options are declared once, as a frozen dataclass whose fields come from `option()`:

    @dataclasses.dataclass(frozen=True)
    class RotNetOptions:
        rotations: tuple[int, ...] = option((0, 1, 2, 3), "quarter turns to classify")
        head_width: int = option(256, "hidden width of the rotation head", ge=1)
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping

import yaml

from sslzoo.errors import ConfigError


@dataclass
class DataConfig:
    source: str = "synthetic"  # folder | list | tfrecord | tfds | synthetic (| video_* for clips)
    path: str = ""  # folder: root/<class>/<image> (or any tree, labels=none); list: a text file; tfrecord: shards
    labels: str = "subfolders"  # folder: subfolders (root/<class>/<image>) | none (every image, recursively)
    cache: str = "auto"  # auto | memory | none: decoded training images held in memory, or streamed from files
    memory_limit_mb: int = 2048  # auto: hold the training images in memory only below this size
    max_pixels: int = 64_000_000  # refuse (count as bad) images whose header declares more pixels
    name: str = "cifar10"  # tfds source: TFDS dataset name
    split: str = "train"  # tfds source: the split train/val are carved from
    data_dir: str = ""  # tfds source: TFDS data_dir ("" = TFDS default)
    image_size: int = 32
    val_fraction: float = 0.1
    split_seed: int = 0
    max_examples: int = 0  # 0 = all; else a deterministic stratified subset taken before the split
    synthetic_examples: int = 6000
    max_bad_fraction: float = 0.01
    # validation | tuning. "tuning" (tune.py's trials) keeps the validation split out of sight: it carves a
    # stratified tuning_fraction of the training split and uses that as the run's validation split.
    holdout: str = "validation"
    tuning_fraction: float = 0.1
    # Video sources (video_synthetic | video_folder | video_tfds; sslzoo.video), ignored by image sources.
    # video_synthetic reads data.path, when set, as an image folder to cut objects and backgrounds from;
    # video_folder reads data.path as <root>/<video>/<frame>.jpg; video_tfds reads data.name/data.split.
    clip_length: int = 4  # frames per training clip: clip_length - 1 references + 1 target
    frame_step: int = 1  # real videos: keep every k-th frame (the paper samples Kinetics at 6 fps)
    num_clips: int = 1000  # training clips: generated (video_synthetic), or at most this many (0 = all)
    eval_clips: int = 32  # tracking-evaluation clips (generated, or at most this many annotated videos)
    eval_clip_length: int = 12  # frames per generated tracking-evaluation clip (0 = whole videos)
    # Instance masks <root>/<video>/<frame>.png (DAVIS layout) of real videos (video_folder, or
    # video_synthetic with data.track_frames_path); those videos are tracked whole (the DAVIS protocol) and
    # scored at the masks' own resolution.
    annotations_path: str = ""
    # Short side of the annotated videos' frames fed to the tracker, aspect kept (0 = data.image_size).
    # video_folder's training frames are resized the same way to image_size and cut into square windows
    # across the long side.
    track_size: int = 0
    # The annotated videos' frames when they are not data.path: tracking real videos after training on
    # generated clips (video_synthetic), or on other videos.
    track_frames_path: str = ""


@dataclass
class EncoderConfig:
    name: str = "convnet_small"
    options: Dict[str, Any] = field(default_factory=dict)  # passed to the encoder builder


@dataclass
class MethodConfig:
    name: str = "rotnet"
    options: Dict[str, Any] = field(default_factory=dict)  # checked by the method's builder
    online_probe: bool = True  # linear probe on detached features, a live sign of learning


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | adam | adamw | lamb | lars
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    beta_2: float = 0.999  # adam | adamw | lamb: decay of the second-moment estimate (Keras' 0.999; MAE: 0.95)
    schedule: str = "cosine"  # cosine | piecewise | constant
    warmup_epochs: float = 0.0
    boundaries: List[float] = field(default_factory=list)  # piecewise: epochs where the rate changes
    values: List[float] = field(default_factory=list)  # piecewise: len(boundaries) + 1 rates (learning_rate unused)


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 128
    steps_per_epoch: int = 0  # 0 = one pass over the training split
    seed: int = 0
    mixed_precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16
    strategy: str = "default"  # default | mirrored | multi_worker
    cpu_replicas: int = 2  # mirrored on a machine without GPUs: this many logical CPU devices
    jit_compile: bool = False  # XLA was slower on the 2-core CPU (ResNet-18 SimCLR step 17.5 vs 27.9 images/s); an option for GPUs
    checkpoint_every: int = 1  # epochs
    # > 0: train for this many seconds of this machine (earlier runs of the same folder count), trainer.epochs
    # becoming the most it may train; schedules span the steps the budget affords (sslzoo/training/budget.py).
    time_budget_s: float = 0.0


@dataclass
class EvalConfig:
    knn_k: int = 200
    knn_temperature: float = 0.07
    linear_epochs: int = 30
    linear_learning_rate: float = 1e-3
    linear_weight_decay: float = 1e-4
    linear_batch_size: int = 256
    random_init: bool = True  # also evaluate the identical encoder untrained, on the same split
    finetune_epochs: int = 0  # > 0: also fine-tune encoder + head end to end (export.py --head finetune)
    finetune_label_fraction: float = 0.1  # stratified share of the training labels for fine-tuning
    finetune_learning_rate: float = 1e-3
    evaluator: str = ""  # "" = the data kind's own (knn_linear for images, tracking for clips)
    # A labelled root/<class>/<image> folder for kNN, linear probe and fine-tuning, separate from the training
    # images; split by val_fraction (stratified, data.split_seed) into probe-train and probe-val parts.
    data_path: str = ""
    val_fraction: float = 0.2
    keep_features: bool = True  # keep features.npz in the run folder for the export's accuracy check
    # > 0: every that many epochs, kNN top-1 of the current encoder on a fixed subset of the probe data goes
    # into the epoch logs (history.csv, TensorBoard) as knn_monitor_top1, its cost as knn_monitor_seconds.
    monitor_every: int = 0
    monitor_examples: int = 1000  # the monitor's kNN bank (training split) and queries (validation split), each


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    "data.source": ("folder", "list", "tfrecord", "tfds", "synthetic", "video_synthetic", "video_folder",
                    "video_tfds"),
    "data.labels": ("subfolders", "none"),
    "data.cache": ("auto", "memory", "none"),
    "data.holdout": ("validation", "tuning"),
    "optimizer.name": ("sgd", "adam", "adamw", "lamb", "lars"),
    "optimizer.schedule": ("cosine", "piecewise", "constant"),
    "trainer.mixed_precision": ("float32", "mixed_float16", "mixed_bfloat16"),
    "trainer.strategy": ("default", "mirrored", "multi_worker"),
}


def type_name(annotation: Any) -> str:
    """How a field's type reads in an error message: `int`, `tuple[float, ...]`, `'conv' | 'nin'`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks `value` against a dataclass field annotation; ints are accepted for floats, lists for
    tuples (YAML has no tuples), and `Literal[...]` / `X | None` are honoured."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        members = typing.get_args(annotation)
        if value is None and type(None) in members:
            return None
        errors = []
        for member in members:
            if member is type(None):
                continue
            try:
                return coerce(value, member, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{key}: expected {type_name(annotation)}, got {type(value).__name__} {value!r}")
    if origin in (list, List, collections.abc.Sequence):
        (item_type,) = typing.get_args(annotation) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list ({type_name(annotation)}), got "
                              f"{type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values ({type_name(annotation)}), got {list(value)!r}")
        return tuple(coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
    if origin in (dict, Dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation in (int, float, str) and (type(value) is not annotation):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


# --- options: one typed declaration per method (or any other part with options) ------------------
_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


def option(default: Any, doc: str = "", search: tuple = (), **bounds: float) -> Any:
    """A field of an options dataclass: its default, a one-line doc, optional bounds `ge`, `gt`, `le`,
    `lt` (checked on the value, or on every item of a tuple), and `search`: the values `sslzoo select`
    tries for one of the method's few most sensitive options (empty: not searched)."""
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"option(): unknown bound(s) {sorted(unknown)}; use {', '.join(_BOUNDS)}")
    if not isinstance(search, tuple):
        raise TypeError("option(): search takes a tuple of values")
    metadata = {"doc": doc, "bounds": bounds, "search": search}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option(): use a tuple for a sequence default (options are frozen)")
    return field(default=default, metadata=metadata)


def _check_bounds(key: str, value: Any, bounds: Mapping[str, float], doc: str) -> None:
    if value is None or not bounds:
        return
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        for name, bound in bounds.items():
            test, sign = _BOUNDS[name]
            if not test(item, bound):
                hint = f" ({doc})" if doc else ""
                raise ConfigError(f"{key} {value!r}: must be {sign} {bound}{hint}")


def searched_options(cls) -> Dict[str, tuple]:
    """Option name -> the values `sslzoo select` tries, for the options of `cls` declared with `search=`."""
    return {f.name: f.metadata["search"] for f in dataclasses.fields(cls) if f.metadata.get("search")}


def describe_options(cls) -> str:
    """`key: type = default` for every field of an options dataclass, one per line (for error messages)."""
    hints = typing.get_type_hints(cls)
    return "; ".join(f"{f.name}: {type_name(hints[f.name])} = {f.default!r}" for f in dataclasses.fields(cls))


def parse_options(cls, values: Mapping[str, Any] | Any, prefix: str = "options"):
    """Builds the frozen options dataclass `cls` from a mapping (a config's `method.options`).

    Unknown keys fail before any work, listing every allowed key with its type and default; each value
    is type-checked and bound-checked; the dataclass' own `__post_init__` may add checks across fields
    (raising `ConfigError`). An instance of `cls` is returned as it is.
    """
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping of options, got {type(values).__name__} {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {prefix} key(s) {', '.join(unknown)}; allowed: {describe_options(cls)}")
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}"
        kwargs[key] = coerce(value, hints[key], full)
        _check_bounds(full, kwargs[key], fields[key].metadata.get("bounds", {}), fields[key].metadata.get("doc", ""))
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{prefix}: {error}") from None


def options_to_dict(options) -> Dict[str, Any]:
    """Plain YAML/JSON data of an options dataclass (tuples become lists)."""
    return yaml.safe_load(yaml.safe_dump(_plain(dataclasses.asdict(options)), sort_keys=False))


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _build(cls, values: Mapping[str, Any], prefix: str):
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{full}'; allowed keys here: {', '.join(names)}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, f"{full}.")
        else:
            kwargs[key] = coerce(value, annotation, full)
            if full in _CHOICES and kwargs[key] not in _CHOICES[full]:
                raise ConfigError(f"{full}: '{value}' is not one of {', '.join(_CHOICES[full])}")
    return cls(**kwargs)


def _set_path(tree: Dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`"a.b=c"` -> `("a.b", c)`, with `c` parsed as a YAML scalar (so 1 is an int, 1e-3 a float)."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected key=value, e.g. trainer.epochs=1")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set '{text}': the value is not plain YAML data ({yaml_problem(error)}); write a "
                          "number, a word, true/false or a [list], and put any other string in quotes") from None
    # YAML 1.1 reads 1e-3 as a string; a config number written that way is meant as a float.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key.strip(), value


def from_dict(values: Mapping[str, Any], overrides: List[str] = ()) -> Config:
    """Builds a validated `Config` from a nested mapping plus `a.b=c` override strings."""
    tree = yaml.safe_load(yaml.safe_dump(dict(values or {})))  # deep copy of plain data
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    config = _build(Config, tree, "")
    validate(config)
    return config


def load(path: str | Path, overrides: List[str] = ()) -> Config:
    """Reads a YAML config file (safe_load only) and applies overrides."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(config_folder_message(path))
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; configs live in zoo_configs/")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        fix = ("configs hold plain mappings, lists and scalars only: remove the !! tag"
               if isinstance(error, yaml.constructor.ConstructorError) else "fix it there")
        raise ConfigError(f"config file '{path}' is not valid YAML ({yaml_problem(error)}); {fix}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file '{path}' is not UTF-8 text ({error.reason} at byte {error.start}); "
                          "is it the YAML config?") from None
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"config file '{path}' holds a YAML {type(values).__name__}, not a mapping of sections "
                          "(data:, encoder:, method:, optimizer:, trainer:, eval:); see zoo_configs/ for the layout")
    return from_dict(values or {}, overrides)


def config_folder_message(folder: Path) -> str:
    """What `--config <folder>` is told: that it is a folder, and the configs in it to choose from."""
    names = sorted(p.name for p in folder.glob("*.y*ml") if p.is_file())
    if not names:
        return (f"--config '{folder}' is a folder; name one YAML file in it (it holds none; the shipped "
                "configs are in zoo_configs/)")
    example = "rotnet_convnet_small_synthetic.yaml" if "rotnet_convnet_small_synthetic.yaml" in names else names[0]
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return (f"--config '{folder}' is a folder; name one YAML file in it, e.g. {folder / example} "
            f"(it holds {len(names)}: {shown}; ls {folder}/*.yaml lists them)")


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line, column) and what."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def dump(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


PIECEWISE_BUDGET = ("optimizer.schedule=piecewise changes the rate at fixed epochs, and a run with "
                    "trainer.time_budget_s does not know its epochs in advance: use optimizer.schedule=cosine "
                    "(it spans the budget) or constant, or train for trainer.epochs without a budget")


def validate(config: Config) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        (config.data.image_size >= 8, "data.image_size must be >= 8"),
        (0.0 < config.data.val_fraction < 1.0, "data.val_fraction must be in (0, 1)"),
        (0.0 <= config.data.max_bad_fraction <= 1.0, "data.max_bad_fraction must be in [0, 1]"),
        (0.0 < config.data.tuning_fraction < 1.0, "data.tuning_fraction must be in (0, 1)"),
        (config.data.source != "folder" or bool(config.data.path),
         "data.path must name the image folder when data.source=folder"),
        (config.data.source not in ("list", "tfrecord") or bool(config.data.path),
         f"data.path must name the {'list of image paths' if config.data.source == 'list' else 'shard folder'} "
         f"when data.source={config.data.source}"),
        (config.data.memory_limit_mb >= 0, "data.memory_limit_mb must be >= 0"),
        (config.data.max_pixels >= 1, "data.max_pixels must be >= 1"),
        (0.0 < config.eval.val_fraction < 1.0, "eval.val_fraction must be in (0, 1)"),
        (config.data.source != "video_folder" or bool(config.data.path),
         "data.path must name the video folder (<root>/<video>/<frame>.jpg) when data.source=video_folder"),
        (config.data.clip_length >= 2, "data.clip_length must be >= 2 (at least one reference and a target)"),
        (config.data.frame_step >= 1, "data.frame_step must be >= 1"),
        (config.data.num_clips >= 0 and (config.data.source != "video_synthetic" or config.data.num_clips >= 1),
         "data.num_clips must be >= 1 for video_synthetic (>= 0 for real videos, 0 = all)"),
        (config.data.eval_clips >= 1, "data.eval_clips must be >= 1"),
        (config.data.track_size >= 0, "data.track_size must be >= 0 (0 = data.image_size)"),
        (config.data.eval_clip_length == 0 or config.data.eval_clip_length >= 2,
         "data.eval_clip_length must be 0 (whole videos) or >= 2"),
        (config.trainer.epochs >= 1, "trainer.epochs must be >= 1"),
        (config.trainer.batch_size >= 1, "trainer.batch_size must be >= 1"),
        (config.trainer.steps_per_epoch >= 0, "trainer.steps_per_epoch must be >= 0 (0 = one pass over the data)"),
        (config.trainer.time_budget_s >= 0, "trainer.time_budget_s must be >= 0 (0 = train for trainer.epochs)"),
        (not config.trainer.time_budget_s or config.optimizer.schedule != "piecewise", PIECEWISE_BUDGET),
        (not config.trainer.time_budget_s or config.trainer.strategy != "multi_worker",
         "trainer.time_budget_s with trainer.strategy=multi_worker: each worker's clock would stop it at a "
         "different step and the others would wait for it forever; train for trainer.epochs instead"),
        # The seed reaches numpy's global generator, which takes 32-bit unsigned seeds.
        (0 <= config.trainer.seed < 2**32, "trainer.seed must be in [0, 2**32 - 1]"),
        (config.data.split_seed >= 0, "data.split_seed must be >= 0"),
        (config.optimizer.learning_rate > 0, "optimizer.learning_rate must be > 0"),
        (config.optimizer.schedule != "piecewise"
         or len(config.optimizer.values) == len(config.optimizer.boundaries) + 1,
         "optimizer.values must have one more entry than optimizer.boundaries"),
        (config.optimizer.warmup_epochs >= 0, "optimizer.warmup_epochs must be >= 0"),
        (0.0 <= config.optimizer.beta_2 < 1.0,
         f"optimizer.beta_2 must be in [0, 1) (Keras' default 0.999; MAE: 0.95), got {config.optimizer.beta_2}"),
        (all(0 < a < b for a, b in zip(config.optimizer.boundaries, config.optimizer.boundaries[1:] + [float("inf")])),
         "optimizer.boundaries must be positive epochs in increasing order"),
        (config.eval.knn_k >= 1, "eval.knn_k must be >= 1"),
        (config.eval.knn_temperature > 0, "eval.knn_temperature must be > 0"),
        (config.eval.linear_epochs >= 1, "eval.linear_epochs must be >= 1"),
        (config.eval.linear_batch_size >= 1, "eval.linear_batch_size must be >= 1"),
        (config.eval.finetune_epochs >= 0, "eval.finetune_epochs must be >= 0"),
        (0.0 < config.eval.finetune_label_fraction <= 1.0, "eval.finetune_label_fraction must be in (0, 1]"),
        (config.eval.monitor_every >= 0,
         f"eval.monitor_every must be >= 0 (0 = no kNN monitor, N = every N epochs), got {config.eval.monitor_every}"),
        (config.eval.monitor_examples >= 1,
         f"eval.monitor_examples must be >= 1 (images in the monitor's kNN bank and queries), "
         f"got {config.eval.monitor_examples}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
