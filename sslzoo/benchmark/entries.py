"""Which configs the benchmark trains, and the overrides that give them the same data and budget."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import yaml

from sslzoo.config import ConfigError

from sslzoo import settings

CONFIG_DIR = settings.config_dir()
# The table compares methods on one encoder: entries are `<method>(_v<k>)?_<encoder>_cifar10.yaml`.
DEFAULT_ENCODER = "convnet_small"
SUPERVISED = "supervised"
IMAGE_SOURCES = ("folder", "tfds", "synthetic")
# How the table groups methods; a method missing here is listed as "pretext".
KINDS = {"simclr": "contrastive", "moco": "contrastive", "moco_v3": "contrastive", "cpc": "contrastive",
         SUPERVISED: "supervised", "byol": "non-contrastive", "simsiam": "non-contrastive",
         "barlow_twins": "non-contrastive", "vicreg": "non-contrastive",
         "dino": "self-distillation", "mae": "masked image modelling"}
# With --budget-seconds, the most epochs an entry may train unless --epochs says otherwise.
BUDGET_EPOCH_CAP = 1000
# Encoder options allowed to differ between entries: CPC v2 swaps batch norm for layer norm, as its paper
# does (batch statistics leak between the patches of one image); layers and width stay the same.
EXEMPT_ENCODER_OPTIONS = ("norm",)


@dataclass(frozen=True)
class Entry:
    """One benchmark row: a zoo config trained with the benchmark's data and budget."""

    stem: str  # config file name without .yaml; also the run folder and export name
    method: str
    config: Path
    encoder: str
    encoder_options: Dict
    batch_size: int

    @property
    def kind(self) -> str:
        return KINDS.get(self.method, "pretext")

    @property
    def is_supervised(self) -> bool:
        return self.method == SUPERVISED


def parse_data(spec: str, resolve: bool = True, must_exist: bool = False) -> Dict[str, str]:
    """`folder:PATH`, `synthetic` or `tfds:NAME` -> data.* config values.

    A folder path is made absolute (`resolve`), since train.py runs from the repository root. `must_exist`:
    the command is about to train on it, so a missing folder fails here, before any run folder is made,
    not inside the first train.py child (saved settings are re-read without it: the data may have moved)."""
    if spec == "synthetic":
        return {"source": "synthetic"}
    kind, _, value = spec.partition(":")
    if kind == "folder" and value:
        if must_exist and not Path(value).is_dir():
            raise ConfigError(f"--data {spec}: no such folder (give a folder of class subfolders of images)")
        return {"source": "folder", "path": str(Path(value).resolve()) if resolve else value}
    if kind == "tfds" and value:
        return {"source": "tfds", "name": value}
    raise ConfigError(f"--data '{spec}': use folder:PATH, tfds:NAME or synthetic")


def config_pattern(encoder: str) -> "re.Pattern":
    return re.compile(rf"^[a-z0-9_]+?(_v\d+)?_{re.escape(encoder)}_cifar10$")


def benchmark_encoders(config_dir: Path = CONFIG_DIR) -> List[str]:
    """Encoders that have a supervised CIFAR-10 config, so a table of theirs gets its random-init row."""
    return sorted(path.stem[len(f"{SUPERVISED}_"):-len("_cifar10")]
                  for path in Path(config_dir).glob(f"{SUPERVISED}_*_cifar10.yaml"))


def discover_entries(registered: Iterable[str], config_dir: Path = CONFIG_DIR,
                     only: Optional[Sequence[str]] = None, encoder: str = DEFAULT_ENCODER) -> List[Entry]:
    """Entries for the CIFAR-10 configs of registered image methods on `encoder`, supervised first.

    Args:
        registered: method names in the registry.
        config_dir: where the zoo configs are.
        only: restrict to these config stems or method names (the supervised baseline only if named).
        encoder: the encoder every entry uses, as config names spell it (`convnet_small`, `vit_tiny`).
    """
    available = benchmark_encoders(config_dir)
    if encoder not in available:
        raise ConfigError(f"--encoder {encoder}: no zoo_configs/{SUPERVISED}_{encoder}_cifar10.yaml to give the "
                          f"table its supervised and random-init rows; benchmark encoders: {', '.join(available)}")
    registered = set(registered)
    entries = []
    pattern = config_pattern(encoder)
    for path in sorted(Path(config_dir).glob(f"*_{encoder}_cifar10.yaml")):
        if not pattern.match(path.stem):
            continue
        values = yaml.safe_load(path.read_text()) or {}
        method = values.get("method", {}).get("name")
        source = values.get("data", {}).get("source", "synthetic")
        if method not in registered or source not in IMAGE_SOURCES:
            continue
        section = values.get("encoder", {})
        entries.append(Entry(stem=path.stem, method=method, config=path, encoder=section.get("name", DEFAULT_ENCODER),
                             encoder_options=dict(section.get("options") or {}),
                             batch_size=int(values.get("trainer", {}).get("batch_size", 128))))
    if only:
        wanted = set(only)
        unknown = wanted - {e.stem for e in entries} - {e.method for e in entries}
        if unknown:
            raise ConfigError(f"--methods {', '.join(sorted(unknown))}: not a benchmark entry; available: "
                              f"{', '.join(e.stem for e in entries)}")
        entries = [e for e in entries if e.stem in wanted or e.method in wanted]
    return sorted(entries, key=lambda e: (not e.is_supervised, e.stem))


def check_same_encoder(entries: Sequence[Entry]) -> None:
    """Fails when an entry's encoder is not the others' (then the table would compare architectures)."""
    def key(entry):
        options = {k: v for k, v in entry.encoder_options.items() if k not in EXEMPT_ENCODER_OPTIONS}
        return entry.encoder, tuple(sorted(options.items()))

    if not entries:
        return
    reference = key(entries[0])
    for entry in entries[1:]:
        if key(entry) != reference:
            raise ConfigError(
                f"{entry.config.name} uses encoder {entry.encoder} {entry.encoder_options}, but "
                f"{entries[0].config.name} uses {entries[0].encoder} {entries[0].encoder_options}; the "
                "benchmark compares methods on one encoder: align the configs or leave one out with --methods"
            )


def encoder_label(entries: Sequence[Entry]) -> str:
    if not entries:
        return "-"
    first = entries[0]
    options = {k: v for k, v in first.encoder_options.items() if k not in EXEMPT_ENCODER_OPTIONS}
    return f"{first.encoder} {options}" if options else first.encoder


def has_norm_option(encoder: str) -> bool:
    """Whether the encoder's builder takes `norm` (the ConvNets and ResNets; a ViT has only LayerNorm)."""
    import inspect

    from sslzoo.backbones import ENCODERS  # importing the backbones registers them

    return "norm" in inspect.signature(ENCODERS.get(encoder)).parameters


def entry_overrides(entry: Entry, settings: Dict) -> List[str]:
    """`--set` values giving `entry` the benchmark's data and budget.

    Every entry makes the same number of passes over the same training split; each keeps its own batch
    size. Only the supervised entry evaluates the random-init encoder (one baseline serves the table).
    """
    data = parse_data(settings["data"])
    overrides = [f"data.{key}={value}" for key, value in data.items()]
    if settings.get("max_examples"):
        key = "synthetic_examples" if data["source"] == "synthetic" else "max_examples"
        overrides.append(f"data.{key}={settings['max_examples']}")
    overrides.append(f"trainer.epochs={settings['epochs']}")
    if settings.get("budget_seconds"):
        overrides.append(f"trainer.time_budget_s={settings['budget_seconds']}")
        optimizer = (yaml.safe_load(entry.config.read_text()) or {}).get("optimizer", {})
        if optimizer.get("schedule") == "piecewise":
            # A table of epochs cannot span seconds (trainer.time_budget_s refuses it): the cosine from the
            # table's first rate, the zoo's other methods' schedule. In the command, so the card says so.
            overrides += ["optimizer.schedule=cosine", f"optimizer.learning_rate={optimizer['values'][0]}"]
    if settings.get("steps_per_epoch"):
        overrides.append(f"trainer.steps_per_epoch={settings['steps_per_epoch']}")
    if has_norm_option(entry.encoder) and entry.encoder_options.get("norm", "batch") == "batch":
        # The fused kernel is the default now; the entries' commands keep naming it (its older name) so
        # the shipped cards' commands, and the settings a rerun is compared on, stay as recorded.
        overrides.append("encoder.options.norm=batch_fused")
    overrides += [
        f"eval.finetune_epochs={settings['finetune_epochs']}",
        f"eval.finetune_label_fraction={settings['finetune_label_fraction']}",
        f"eval.random_init={'true' if entry.is_supervised else 'false'}",
    ]
    return overrides + list(settings.get("overrides", []))
