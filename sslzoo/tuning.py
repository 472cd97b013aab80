"""Hyperparameter search with keras-tuner, without ever looking at the reported validation split.

Two searches, both driven by a keras-tuner oracle (Hyperband, Bayesian optimisation or random search) through
a `keras_tuner.Tuner` whose `run_trial` returns the objective (keras-tuner's way to tune work that is not one
`model.fit`):

- `search_probe(run_dir, output)`: the linear probe's learning rate and weight decay on the frozen features
  of a finished run's encoder (features computed once, shared by every trial; Hyperband's resource is the
  probe's epochs).
- `search_pretext(config, specs, output)`: any config value (e.g. `method.options.temperature`); each trial
  is an ordinary `trainer.train_run` into `<output>/trials/<trial_id>`, scored by its kNN top-1.

Objectives are measured on the tuning split (`data.holdout=tuning`: a stratified share of the training
split); the validation split is used once at the end, for the best setting and the default one. Results:
`<output>/tuning.json` and `<output>/tuning.md`. Rerunning the same search on the same output resumes it.

The command (`sslzoo tune`, `python tune.py` in a checkout, `python -m sslzoo.tuning`) is `main` below;
keras-tuner is the extra `sslzoo[tune]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import yaml

from sslzoo import config as config_lib
from sslzoo import extras
from sslzoo.config import Config, ConfigError

log = logging.getLogger(__name__)

ALGORITHMS = ("hyperband", "bayesian", "random")
PROBE_SPACE = {"learning_rate": (1e-4, 1e-1), "weight_decay": (1e-6, 1e-2)}  # both searched on a log scale
# Values that define which examples the tuning split holds: tuning them would move the goalposts.
_SPLIT_KEYS = ("data.holdout", "data.tuning_fraction", "data.val_fraction", "data.split_seed",
               "data.max_examples", "data.source", "data.path", "data.name", "data.split")
SEARCH_FILE = "search.json"
VALIDATION_FILE = "validation_scores.json"  # in a trial folder: its encoder on the official split
PROJECT = "keras_tuner"


# --------------------------------------------------------------------------------------------- --param specs
@dataclass
class ParamSpec:
    """One searched config value: `key=a,b,c` (choices) or `key=float:lo:hi[:log]` / `key=int:lo:hi[:log]`.

    Args:
        key: dotted config key, e.g. "method.options.temperature".
        kind: "choice", "float" or "int".
        values: the choices (numbers, or YAML text for anything else) when kind == "choice".
        low, high, log: the range otherwise.
    """

    key: str
    kind: str
    values: List[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    def describe(self) -> Dict[str, Any]:
        if self.kind == "choice":
            return {"key": self.key, "kind": "choice", "values": list(self.values)}
        return {"key": self.key, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log}

    def define(self, hp):
        """Declares this value in a `keras_tuner.HyperParameters`."""
        if self.kind == "choice":
            return hp.Choice(self.key, self.values)
        sampling = "log" if self.log else "linear"
        if self.kind == "int":
            return hp.Int(self.key, int(self.low), int(self.high), sampling=sampling)
        return hp.Float(self.key, self.low, self.high, sampling=sampling)

    def override(self, value: Any) -> str:
        """The `--set key=value` text for one sampled value."""
        return f"{self.key}={value!r}" if isinstance(value, float) else f"{self.key}={value}"


def split_top_level(text: str) -> List[str]:
    """Splits at commas outside brackets/braces: "[0,1],[0,1,2,3]" -> ["[0,1]", "[0,1,2,3]"]."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_param(text: str) -> ParamSpec:
    """Parses one --param argument; raises ConfigError saying what is wrong and the expected forms."""
    forms = "expected key=a,b,c or key=float:lo:hi[:log] or key=int:lo:hi[:log]"
    if "=" not in text:
        raise ConfigError(f"--param '{text}': {forms}, e.g. method.options.temperature=0.1,0.2,0.5")
    key, raw = (s.strip() for s in text.split("=", 1))
    if not key:
        raise ConfigError(f"--param '{text}': empty key; {forms}")
    head = raw.split(":", 1)[0]
    if head in ("float", "int"):
        return _parse_range(text, key, raw, forms)
    items = [item for item in split_top_level(raw) if item]
    if not items:
        raise ConfigError(f"--param '{text}': empty choice list; {forms}")
    parsed = [config_lib.parse_override(f"{key}={item}")[1] for item in items]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parsed):
        values = [float(v) for v in parsed] if any(isinstance(v, float) for v in parsed) else list(parsed)
    else:
        values = items  # YAML text, e.g. "[0,1,2,3]" or "true": keras-tuner choices must be scalars
    if len(set(values)) != len(values):
        raise ConfigError(f"--param '{text}': repeated choice")
    return ParamSpec(key, "choice", values=values)


def _parse_range(text: str, key: str, raw: str, forms: str) -> ParamSpec:
    parts = raw.split(":")
    log_scale = len(parts) == 4 and parts[3] == "log"
    if len(parts) not in (3, 4) or (len(parts) == 4 and not log_scale):
        raise ConfigError(f"--param '{text}': {forms}")
    kind = parts[0]
    try:
        low, high = (int(p) if kind == "int" else float(p) for p in parts[1:3])
    except ValueError:
        raise ConfigError(f"--param '{text}': bounds must be {kind}s; {forms}") from None
    if not low < high:
        raise ConfigError(f"--param '{text}': the low bound must be below the high bound")
    if log_scale and low <= 0:
        raise ConfigError(f"--param '{text}': a log range needs a positive low bound")
    return ParamSpec(key, kind, low=low, high=high, log=log_scale)


def _leaves(tree: Dict[str, Any], prefix: str = "") -> List[str]:
    keys = []
    for name, value in tree.items():
        if isinstance(value, dict) and value:
            keys.extend(_leaves(value, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def check_specs(specs: Sequence[ParamSpec], config: Config) -> None:
    """Every key exists in `config` (method/encoder options only if the config sets them), is not a
    split-defining key, and every choice builds a valid config."""
    if not specs:
        raise ConfigError("no --param given: name at least one value to search, e.g. "
                          "--param method.options.temperature=0.1,0.2,0.5")
    keys = [spec.key for spec in specs]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--param names a key twice: {', '.join(sorted(k for k in set(keys) if keys.count(k) > 1))}")
    valid = _leaves(config.to_dict())
    for spec in specs:
        if spec.key in _SPLIT_KEYS:
            raise ConfigError(f"--param {spec.key}: this key defines the data split and cannot be tuned")
        if spec.key not in valid:
            section = spec.key.rsplit(".", 1)[0]
            nearby = [k for k in valid if k.startswith(section + ".")] or valid
            hint = (" (a method/encoder option must be set in the config or with --set to be searched)"
                    if ".options." in spec.key else "")
            raise ConfigError(f"--param {spec.key}: no such config key{hint}; valid keys: {', '.join(nearby)}")
        samples = spec.values if spec.kind == "choice" else [spec.low, spec.high]
        for value in samples:
            # Types are checked by the config itself (a float for an int key fails here, not in trial 3).
            config_lib.from_dict(config.to_dict(), [spec.override(value)])


# ----------------------------------------------------------------------------------------------- keras-tuner
class _Fatal(Exception):
    """Carries a ConfigError/DataError out of a trial (keras-tuner would otherwise retry and log it)."""


def _make_oracle(algorithm: str, objective: str, max_trials: int, seed: int, max_epochs: int):
    extras.require("tune", "hyperparameter search")
    import keras_tuner as kt

    goal = kt.Objective(objective, direction="max")
    if algorithm == "hyperband":
        oracle = kt.oracles.HyperbandOracle(goal, max_epochs=max_epochs, factor=3, seed=seed)
        # HyperbandOracle takes no max_trials; the base Oracle still honours the attribute (0/None = no cap).
        oracle.max_trials = max_trials or None
        return oracle
    if algorithm == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(goal, max_trials=max_trials, seed=seed,
                                                     num_initial_points=min(3, max_trials))
    if algorithm == "random":
        return kt.oracles.RandomSearchOracle(goal, max_trials=max_trials, seed=seed)
    raise ConfigError(f"--algorithm '{algorithm}' is not one of {', '.join(ALGORITHMS)}")


def _make_tuner(oracle, output: Path, declare, trial_fn):
    """A `keras_tuner.Tuner` over `oracle` whose trials call `trial_fn(hp_values) -> {metric: value}`."""
    import keras_tuner as kt

    class _Tuner(kt.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            from sslzoo.training.trainer import TrainingDivergedError

            try:
                return trial_fn(trial.trial_id, dict(trial.hyperparameters.values))
            except TrainingDivergedError as error:  # a bad setting, not a bad search: the trial fails
                raise kt.errors.FailedTrialError(str(error)) from error
            except (ConfigError, ValueError) as error:  # DataError is a ValueError: stop the search
                raise kt.errors.FatalError(str(error)) from _Fatal(error)

    class _Space(kt.HyperModel):
        def declare_hyperparameters(self, hp):
            declare(hp)

        def build(self, hp):  # only used by keras-tuner to discover the space; nothing is built
            declare(hp)

    return _Tuner(oracle, hypermodel=_Space(), directory=str(output), project_name=PROJECT, overwrite=False)


def _run_search(tuner) -> None:
    import keras_tuner as kt

    try:
        tuner.search(verbose=0)
    except kt.errors.FatalError as error:
        cause = error.__cause__
        if isinstance(cause, _Fatal):
            raise cause.args[0] from None
        raise


def _trials(tuner, objective: str) -> List[Dict[str, Any]]:
    rows = []
    for trial in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id):
        if trial.status != "COMPLETED":
            continue
        values = dict(trial.hyperparameters.values)
        metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
        rows.append({
            "trial_id": trial.trial_id,
            "hyperparameters": {k: v for k, v in values.items() if not k.startswith("tuner/")},
            **({"epochs": values["tuner/epochs"]} if "tuner/epochs" in values else {}),
            "objective": metrics.get(objective),
            "metrics": metrics,
        })
    return rows


def check_output(output: Path, search: Dict[str, Any]) -> None:
    """Writes `<output>/search.json`, or refuses an output folder that holds a different search."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / SEARCH_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != json.loads(json.dumps(search)):
            changed = sorted(k for k in set(previous) | set(search) if previous.get(k) != search.get(k))
            raise ConfigError(
                f"output folder '{output}' holds a different search (differs in: {', '.join(changed)}); "
                "resuming it with this one would mix two searches. Use another --output, or delete the folder.")
        return
    path.write_text(json.dumps(search, indent=2))


# ------------------------------------------------------------------------------------------------ probe search
def _probe_data(run_dir: Path):
    """Config, features and labels of a finished run: (config, {"fit", "tune", "train", "val"} -> (x, y), C)."""
    import keras

    from sslzoo.data import load_splits
    from sslzoo.data.splits import tuning_carve
    from sslzoo.evaluation.features import extract_features

    if not run_dir.is_dir():
        raise ConfigError(f"--run '{run_dir}' is not a folder; pass a run folder written by train.py")
    for name in ("config.yaml", "encoder.keras"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"run folder '{run_dir}' has no {name}: is the run finished? "
                              f"(train.py writes it at the end of training)")
    config = config_lib.load(run_dir / "config.yaml")
    if config.data.holdout != "validation":
        raise ConfigError(f"run folder '{run_dir}' was trained with data.holdout={config.data.holdout}; "
                          "tune the probe of a run made with the official split")
    encoder = keras.saving.load_model(run_dir / "encoder.keras", safe_mode=True)
    splits = load_splits(config.data)
    train_x = extract_features(encoder, splits.train.images)
    val_x = extract_features(encoder, splits.val.images)
    keep, tune = tuning_carve(splits.train.labels, config.data)
    train_y, val_y = splits.train.labels, splits.val.labels
    data = {"fit": (train_x[keep], train_y[keep]), "tune": (train_x[tune], train_y[tune]),
            "train": (train_x, train_y), "val": (val_x, val_y)}
    return config, data, len(splits.class_names)


def search_probe(run_dir: str | Path, output: str | Path | None = None, algorithm: str = "hyperband",
                 max_trials: int = 0, seed: Optional[int] = None, command: str = "") -> Dict[str, Any]:
    """Tunes the linear probe's learning rate and weight decay on a finished run's frozen features.

    Args:
        run_dir: folder written by train.py (config.yaml, encoder.keras).
        output: results folder (default `<run_dir>/tuning/probe`).
        algorithm: "hyperband" (resource: probe epochs, up to eval.linear_epochs), "bayesian" or "random".
        max_trials: cap on trials (0: 10 for bayesian/random, Hyperband's own schedule otherwise).
        seed: oracle seed (default: the run's trainer.seed).
        command: the command line, recorded in tuning.json.
    Returns:
        the dict written to `<output>/tuning.json`.
    """
    from sslzoo.evaluation.linear import linear_probe

    start = time.perf_counter()
    run_dir = Path(run_dir)
    output = Path(output) if output else run_dir / "tuning" / "probe"
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"--algorithm '{algorithm}' is not one of {', '.join(ALGORITHMS)}")
    if max_trials < 0:
        raise ConfigError("--max-trials must be >= 0")
    config, data, num_classes = _probe_data(run_dir)
    evaluation = config.eval
    seed = config.trainer.seed if seed is None else seed
    max_trials = max_trials or (0 if algorithm == "hyperband" else 10)
    space = [ParamSpec(name, "float", low=lo, high=hi, log=True) for name, (lo, hi) in PROBE_SPACE.items()]
    check_output(output, {"kind": "probe", "run": str(run_dir.resolve()), "algorithm": algorithm, "seed": seed,
                          "space": [s.describe() for s in space], "max_epochs": evaluation.linear_epochs})

    def probe(split_fit, split_eval, learning_rate, weight_decay, epochs):
        top1, _ = linear_probe(*data[split_fit], *data[split_eval], num_classes, epochs=int(epochs),
                               learning_rate=float(learning_rate), weight_decay=float(weight_decay),
                               batch_size=evaluation.linear_batch_size, seed=seed)
        return round(float(top1), 2)

    def trial_fn(trial_id, values):
        epochs = values.get("tuner/epochs", evaluation.linear_epochs)
        top1 = probe("fit", "tune", values["learning_rate"], values["weight_decay"], epochs)
        log.info("trial %s: lr=%.3g wd=%.3g epochs=%d -> tuning top-1 %.2f%%", trial_id,
                 values["learning_rate"], values["weight_decay"], epochs, top1)
        return {"tuning_top1": top1}

    tuner = _make_tuner(_make_oracle(algorithm, "tuning_top1", max_trials, seed, evaluation.linear_epochs),
                        output, lambda hp: [s.define(hp) for s in space], trial_fn)
    _run_search(tuner)
    trials = _trials(tuner, "tuning_top1")
    if not trials:
        raise ConfigError("no trial completed; see the keras-tuner messages above")
    best = _best(trials)
    default = {"learning_rate": evaluation.linear_learning_rate, "weight_decay": evaluation.linear_weight_decay}
    epochs = evaluation.linear_epochs
    # The validation split, once per setting: refit on the whole training split as the run's protocol does.
    results = {
        "kind": "probe",
        "run": str(run_dir),
        "algorithm": algorithm,
        "objective": "tuning_top1 (linear probe top-1 %, trained on the training split minus the tuning split)",
        "space": [s.describe() for s in space],
        "num_train": int(len(data["train"][1])), "num_tuning": int(len(data["tune"][1])),
        "num_val": int(len(data["val"][1])),
        "trials": trials,
        "best": {**best, "val_top1": probe("train", "val", **best["hyperparameters"], epochs=epochs)},
        "default": {"hyperparameters": default,
                    "tuning_top1": probe("fit", "tune", **default, epochs=epochs),
                    "val_top1": probe("train", "val", **default, epochs=epochs)},
        "command": command,
        "seconds": round(time.perf_counter() - start, 1),
    }
    _write_results(output, results)
    return results


def _best(trials: List[Dict[str, Any]]) -> Dict[str, Any]:
    # Highest objective; among equals (common with Hyperband's short trials) the one trained longest.
    return max(trials, key=lambda t: (t["objective"], t.get("epochs", 0), -int(t["trial_id"])))


# ---------------------------------------------------------------------------------------------- pretext search
def trial_config(config: Config, overrides: Sequence[str]) -> Config:
    """The config one search trial trains: `overrides`, the tuning split, and no random-init baseline."""
    return config_lib.from_dict(config.to_dict(), [*overrides, "data.holdout=tuning", "eval.random_init=false"])


def _validation_scores(run_dir: Path, config: Config, splits: Callable[[], Any]) -> Dict[str, float]:
    """kNN and linear top-1 of a trial's trained encoder on the official split (training -> validation)."""
    import keras

    from sslzoo.evaluation.protocol import evaluate_encoder
    from sslzoo.files import atomic_write_text

    cached = run_dir / VALIDATION_FILE  # a resumed search does not evaluate the same encoder again
    if cached.exists():
        return json.loads(cached.read_text())
    encoder = keras.saving.load_model(run_dir / "encoder.keras", safe_mode=True)
    scores, _ = evaluate_encoder(encoder, splits(), config.eval, seed=config.trainer.seed)
    atomic_write_text(cached, json.dumps(scores))
    return scores


def _train_or_reuse(config: Config, run_dir: Path) -> Dict[str, Any]:
    """A finished run folder's metrics, else trains it (train_run also resumes an interrupted one)."""
    from sslzoo.training import trainer

    metrics_path = run_dir / "metrics.json"
    saved = run_dir / "config.yaml"
    if metrics_path.exists() and (run_dir / "encoder.keras").exists() and saved.exists() \
            and yaml.safe_load(saved.read_text()) == config.to_dict():
        return json.loads(metrics_path.read_text())
    return trainer.train_run(config, run_dir, verbose=0)


def search_pretext(config: Config, specs: Sequence[ParamSpec], output: str | Path, algorithm: str = "bayesian",
                   max_trials: int = 6, seed: Optional[int] = None, config_path: str = "",
                   sets: Sequence[str] = (), command: str = "") -> Dict[str, Any]:
    """Searches config values by training one run per trial and scoring its kNN top-1 on the tuning split.

    Args:
        config: the base config (after --set overrides).
        specs: the searched values (`parse_param`).
        output: results folder; trials train into `<output>/trials/<trial_id>`, the default setting into
            `<output>/default`.
        algorithm: "bayesian" or "random" ("hyperband" would need resumable partial runs per trial).
        max_trials: number of trials.
        seed: oracle seed (default: trainer.seed).
        config_path, sets: the config file and --set overrides, for the reproducing command.
        command: the command line, recorded in tuning.json.
    Returns:
        the dict written to `<output>/tuning.json`.
    """
    from sslzoo.data import load_splits
    from sslzoo.training.trainer import check_names

    start = time.perf_counter()
    output = Path(output)
    if algorithm not in ("bayesian", "random"):
        raise ConfigError(f"--algorithm '{algorithm}' for the pretext search: use bayesian or random (each trial "
                          "is a whole training run, so Hyperband's epoch budgets do not apply)")
    if max_trials < 1:
        raise ConfigError("--max-trials must be >= 1")
    check_names(config)
    check_specs(specs, config)
    if config.data.source.startswith("video_"):
        raise ConfigError("the pretext search scores kNN top-1 on labelled images; video sources are not supported")
    seed = config.trainer.seed if seed is None else seed
    check_output(output, {"kind": "pretext", "config": config.to_dict(), "algorithm": algorithm, "seed": seed,
                          "space": [s.describe() for s in specs]})
    by_key = {spec.key: spec for spec in specs}

    def overrides(values):
        return [by_key[key].override(value) for key, value in values.items() if key in by_key]

    def trial_fn(trial_id, values):
        metrics = _train_or_reuse(trial_config(config, overrides(values)), output / "trials" / trial_id)
        log.info("trial %s: %s -> tuning kNN top-1 %.2f%%", trial_id, " ".join(overrides(values)),
                 metrics["knn_top1"])
        return {"knn_top1": float(metrics["knn_top1"]), "linear_top1": float(metrics["linear_top1"])}

    tuner = _make_tuner(_make_oracle(algorithm, "knn_top1", max_trials, seed, 1), output,
                        lambda hp: [s.define(hp) for s in specs], trial_fn)
    _run_search(tuner)
    trials = _trials(tuner, "knn_top1")
    if not trials:
        raise ConfigError("no trial completed; see the keras-tuner messages above")
    best = _best(trials)
    best_overrides = overrides(best["hyperparameters"])
    # The default setting is often one of the choices: then its trial is the default run.
    default_config = trial_config(config, [])
    same = [t["trial_id"] for t in trials
            if trial_config(config, overrides(t["hyperparameters"])).to_dict() == default_config.to_dict()]
    default_run = output / "trials" / same[0] if same else output / "default"
    default_metrics = _train_or_reuse(default_config, default_run)
    loaded = []

    def splits():  # the official split, used only here, and loaded only if a score is not cached
        if not loaded:
            loaded.append(load_splits(config.data))
        return loaded[0]

    best_run = output / "trials" / best["trial_id"]
    best_val = _validation_scores(best_run, config, splits)
    default_val = best_val if default_run == best_run else _validation_scores(default_run, config, splits)
    reproduce = _reproduce(config_path, [*sets, *best_overrides])
    results = {
        "kind": "pretext",
        "config": config_path,
        "set": list(sets),
        "algorithm": algorithm,
        "objective": "knn_top1 (kNN top-1 % on the tuning split, a trial trained on the training split minus it)",
        "space": [s.describe() for s in specs],
        "trials": trials,
        "best": {**best, "set": best_overrides, "val": best_val},
        "default": {"hyperparameters": {s.key: _lookup(config, s.key) for s in specs}, "run": str(default_run),
                    "knn_top1": float(default_metrics["knn_top1"]),
                    "linear_top1": float(default_metrics["linear_top1"]), "val": default_val},
        "note": "val: the trial's encoder evaluated once on the official split (kNN/probe fit on the whole "
                "training split, scored on the validation split)",
        "reproduce": reproduce,
        "command": command,
        "seconds": round(time.perf_counter() - start, 1),
    }
    _write_results(output, results)
    return results


def _lookup(config: Config, key: str) -> Any:
    node: Any = config.to_dict()
    for part in key.split("."):
        node = node[part]
    return node


def _reproduce(config_path: str, sets: Sequence[str]) -> str:
    import shlex

    line = f"python train.py --config {shlex.quote(config_path or '<config>')}"
    return line + (" --set " + " ".join(shlex.quote(s) for s in sets) if sets else "")


# --------------------------------------------------------------------------------------------------- results
def _write_results(output: Path, results: Dict[str, Any]) -> None:
    from sslzoo.files import atomic_write_text

    # A resumed search reports its total time, not the seconds of the run that found everything done.
    previous = output / "tuning.json"
    results["seconds_this_invocation"] = results["seconds"]
    if previous.exists():
        results["seconds"] = round(json.loads(previous.read_text()).get("seconds", 0.0) + results["seconds"], 1)
    atomic_write_text(output / "tuning.json", json.dumps(results, indent=2, default=_json_default))
    atomic_write_text(output / "tuning.md", markdown(results))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if (value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4)) else f"{value:g}"
    return str(value)


def markdown(results: Dict[str, Any]) -> str:
    """tuning.md: what was searched, every trial in a table, best vs default on the validation split."""
    keys = [s["key"] for s in results["space"]]
    objective = results["objective"].split(" ", 1)[0]
    lines = [f"# {results['kind']} search ({results['algorithm']})", "", f"Objective: {results['objective']}.", ""]
    extra = ["epochs"] if any("epochs" in t for t in results["trials"]) else []
    lines.append("| trial | " + " | ".join(keys + extra) + f" | {objective} |")
    lines.append("|" + "---|" * (len(keys) + len(extra) + 2))
    best_id = results["best"]["trial_id"]
    for trial in results["trials"]:
        cells = [_fmt(trial["hyperparameters"].get(k)) for k in keys] + [str(trial.get(e, "")) for e in extra]
        mark = " (best)" if trial["trial_id"] == best_id else ""
        lines.append(f"| {trial['trial_id']}{mark} | " + " | ".join(cells) + f" | {trial['objective']:.2f} |")
    lines += ["", "Best vs default, validation split (seen once, after the search):", ""]
    lines += ["| setting | " + " | ".join(keys) + " | tuning split | validation split |",
              "|" + "---|" * (len(keys) + 3)]
    for name in ("best", "default"):
        entry = results[name]
        tuning = entry.get("objective", entry.get("tuning_top1", entry.get("knn_top1")))
        val = entry.get("val_top1")
        if val is None:
            val_text = f"kNN {entry['val']['knn_top1']:.2f} / linear {entry['val']['linear_top1']:.2f}"
        else:
            val_text = f"{val:.2f}"
        cells = [_fmt(entry["hyperparameters"].get(k)) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {tuning:.2f} | {val_text} |")
    if results.get("reproduce"):
        lines += ["", f"Reproduce the best trial: `{results['reproduce']}`"]
    lines += ["", f"{len(results['trials'])} trials, {results['seconds']} s. Command: `{results['command']}`", ""]
    return "\n".join(lines)


def summary(results: Dict[str, Any], output: Path) -> str:
    """The few lines tune.py prints."""
    best, default = results["best"], results["default"]
    params = " ".join(f"{k}={_fmt(v)}" for k, v in best["hyperparameters"].items())
    lines = [f"{results['kind']} search ({results['algorithm']}): {len(results['trials'])} trials, "
             f"{results['seconds']} s", f"best trial {best['trial_id']}: {params}"]
    if results["kind"] == "probe":
        lines.append(f"linear top-1 tuning split {best['objective']:.2f}% (default {default['tuning_top1']:.2f}%), "
                     f"validation {best['val_top1']:.2f}% (default {default['val_top1']:.2f}%)")
    else:
        lines.append(f"kNN top-1 tuning split {best['objective']:.2f}% (default {default['knn_top1']:.2f}%)")
        lines.append(f"validation: kNN {best['val']['knn_top1']:.2f}% / linear {best['val']['linear_top1']:.2f}% "
                     f"(default kNN {default['val']['knn_top1']:.2f}% / linear {default['val']['linear_top1']:.2f}%)")
        lines.append(f"reproduce: {results['reproduce']}")
    lines.append(f"results: {output / 'tuning.json'}, {output / 'tuning.md'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ command line
USAGE = """Hyperparameter search with keras-tuner; never measured on the reported validation split.

    sslzoo tune probe --run runs/<name> [--algorithm hyperband|bayesian|random] [--max-trials N]
        [--output <run>/tuning/probe]
    sslzoo tune pretext --config <zoo config name or path> \\
        --param method.options.temperature=0.05,0.1,0.2,0.5 [--param optimizer.learning_rate=float:0.01:1:log] \\
        [--set trainer.epochs=2 data.max_examples=8000] [--algorithm bayesian|random] [--max-trials N] \\
        [--output runs/tune_<config name>]

(`python tune.py ...` in a checkout is the same command.)
probe: the linear probe's learning rate and weight decay on a finished run's frozen features.
pretext: any config value; each trial is an ordinary training run (<output>/trials/<id>), scored by kNN top-1.
--param forms: key=a,b,c (choices; lists as [0,1],[0,1,2,3]), key=float:lo:hi[:log], key=int:lo:hi[:log].
Objectives use a tuning split carved from the training split (data.holdout=tuning); the best and the default
setting are evaluated once on the validation split at the end. Results: <output>/tuning.json and tuning.md.
Rerunning the same command on the same --output resumes the search. Needs keras-tuner: pip install "sslzoo[tune]".
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="search", required=True)

    probe = commands.add_parser("probe", help="tune the linear probe of a finished run")
    probe.add_argument("--run", required=True, help="run folder written by train.py")
    probe.add_argument("--algorithm", default="hyperband", choices=("hyperband", "bayesian", "random"))
    probe.add_argument("--max-trials", type=int, default=0,
                       help="cap on trials (default: 10; Hyperband's own schedule for hyperband)")

    pretext = commands.add_parser("pretext", help="tune config values, one training run per trial")
    pretext.add_argument("--config", required=True,
                         help="YAML config: a path, or a shipped config's name (rotnet_convnet_small_cifar10)")
    pretext.add_argument("--param", action="append", default=[], metavar="KEY=SPEC", required=True,
                         help="a searched value: key=a,b,c | key=float:lo:hi[:log] | key=int:lo:hi[:log]")
    pretext.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                         help="override config values for every trial, e.g. --set trainer.epochs=2")
    pretext.add_argument("--algorithm", default="bayesian", choices=("bayesian", "random"))
    pretext.add_argument("--max-trials", type=int, default=6)

    for sub in (probe, pretext):
        sub.add_argument("--output", help="results folder (probe: <run>/tuning/probe; pretext: runs/tune_<config>)")
        sub.add_argument("--seed", type=int, help="oracle seed (default: the config's trainer.seed)")
    return parser.parse_args(argv)


def _invocation() -> str:
    """How this command was typed, for the record in tuning.json."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if name == "tune.py":
        return "python tune.py"
    if name.startswith("sslzoo"):
        return "sslzoo tune"
    return "python -m sslzoo.tuning"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from sslzoo.errors import DataError  # not sslzoo.data: that imports TensorFlow
    from sslzoo.settings import resolve_config
    from sslzoo.startup import quiet_tensorflow

    words = sys.argv[1:] if argv is None else argv
    command = _invocation() + " " + " ".join(shlex.quote(a) for a in words)
    try:
        extras.require("tune", "hyperparameter search")
        quiet_tensorflow()
        if args.search == "probe":
            output = Path(args.output) if args.output else Path(args.run) / "tuning" / "probe"
            results = search_probe(args.run, output, algorithm=args.algorithm, max_trials=args.max_trials,
                                   seed=args.seed, command=command)
        else:
            specs = [parse_param(text) for text in args.param]
            config = config_lib.load(resolve_config(args.config), args.set)
            output = Path(args.output or Path("runs") / f"tune_{Path(args.config).stem}")
            results = search_pretext(config, specs, output, algorithm=args.algorithm,
                                     max_trials=args.max_trials, seed=args.seed, config_path=args.config,
                                     sets=args.set, command=command)
    except (config_lib.ConfigError, DataError, extras.MissingExtraError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(results, output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
