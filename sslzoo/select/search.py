"""The search behind `sslzoo select`: successive halving across methods on the user's own images.

1. Load the unlabelled images once, and the tuning part of the labelled set (the held-back part stays
   unread).
2. Calibrate every arm (a few timed steps); an arm that cannot train at this image size is left out.
3. Plan the rungs (`plan.make_plan`) within the budget.
4. keras-tuner's Hyperband oracle, restricted to its most exploratory bracket, runs the rungs: every
   candidate trains one unit; the top 1/eta by tuning score continue from their checkpoints to eta times
   as many units, until one remains. A trial that would overrun the budget is not started; a diverging
   candidate scores 0 and is pruned with a note.
5. The winner trains on to the end of the budget, in `<output>/winner`. Its schedule spans the units the
   plan expected the final stage to afford; when the rungs leave more time than planned, it is re-sized
   (once, recorded in `winner_horizon.json`) so that the winner uses the whole budget.
6. Only now the held-back part is read: the winner, the runner-up, the default method (SimCLR) and the
   random-init encoder are scored on it, and select.json, select.md and select.png are written.

Rerunning the same command on the same output resumes: finished trials are kept, an interrupted one
continues from its checkpoint, and the seconds already spent count against the budget.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from sslzoo import config as config_lib
from sslzoo import extras
from sslzoo.config import ConfigError
from sslzoo.files import atomic_write_text
from sslzoo.portable import portable_path
from sslzoo.select.labelled import LabelledSet
from sslzoo.select.plan import Plan, Speed, make_plan, schedule_overrides, seconds_of
from sslzoo.select.space import Candidate, candidates, declare, discover_arms

log = logging.getLogger(__name__)

STATE_FILE = "select_state.json"  # seconds spent by earlier invocations
CALIBRATION_FILE = "calibration.json"
PLAN_FILE = "plan.json"
HORIZON_FILE = "winner_horizon.json"  # the winner's schedule length, decided when its final training starts
RESULT_FILE = "select.json"
TRIALS = "trials"
WINNER = "winner"
PROJECT = "keras_tuner"
DEFAULT_ARM = "simclr"  # the method a user would pick without measuring
SCORES = ("knn", "linear")


@dataclass
class Settings:
    """Everything that defines a search; a resumed search must have the same."""

    data: str  # folder path, folder:PATH, synthetic
    eval_data: str  # labelled root/<class>/<image>
    budget_minutes: float
    methods: List[str] = field(default_factory=list)  # empty: every image method that trains at this size
    per_method: int = 1
    eta: int = 3
    search_share: float = 0.5  # of the budget left after calibration, for the rungs; the rest: the winner
    image_size: int = 32
    held_back: float = 0.5
    score: str = "knn"
    max_examples: int = 0
    seed: int = 0

    def check(self) -> None:
        if self.budget_minutes <= 0:
            raise ConfigError(f"--budget-minutes {self.budget_minutes}: must be positive")
        if self.eta < 2:
            raise ConfigError(f"--eta {self.eta}: must be at least 2 (the share of candidates kept is 1/eta)")
        if not 0.0 < self.search_share <= 1.0:
            raise ConfigError(f"--search-share {self.search_share}: must lie in (0, 1]")
        if self.score not in SCORES:
            raise ConfigError(f"--score {self.score}: use one of {', '.join(SCORES)}")
        if self.image_size < 8:
            raise ConfigError(f"--image-size {self.image_size}: must be at least 8")


class BudgetSpent(Exception):
    """The next trial would end after the budget: the search stops and the best so far wins."""


class Clock:
    """Seconds spent on this search over all invocations, kept in `<output>/select_state.json`."""

    def __init__(self, output: Path, budget_seconds: float):
        self.path = output / STATE_FILE
        self.budget = budget_seconds
        state = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.before = state.get("seconds", 0.0)
        self.phases: Dict[str, float] = state.get("phases", {})  # seconds per phase, over all invocations
        self.start = time.perf_counter()

    def add(self, phase: str, since: float) -> None:
        """Adds the seconds since `since` (perf_counter) to `phase`."""
        self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - since

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"seconds": round(self.elapsed(), 2), "phases": self.phases}))


def data_overrides(settings: Settings) -> List[str]:
    """The `--set` values every candidate trains with: the user's images, unlabelled, at one size."""
    from sslzoo.benchmark.entries import parse_data

    spec = settings.data
    if spec != "synthetic" and not spec.startswith(("folder:", "tfds:")):
        spec = f"folder:{spec}"
    data = parse_data(spec)
    overrides = [f"data.{key}={value}" for key, value in data.items()]
    if data["source"] == "folder":
        overrides.append("data.labels=none")
    if settings.max_examples:
        key = "synthetic_examples" if data["source"] == "synthetic" else "max_examples"
        overrides.append(f"data.{key}={settings.max_examples}")
    return overrides + [f"data.image_size={settings.image_size}", "method.online_probe=false",
                        "eval.random_init=false", "eval.monitor_every=0"]


def candidate_config(candidate: Candidate, settings: Settings, plan: Optional[Plan] = None,
                     resized: Optional[Dict[str, int]] = None):
    """The config a candidate trains: its arm's config, the user's data, its setting, and the plan's
    schedule (without a plan: as calibration builds it; with `resized`, a winner's `_winner_horizon`: the
    schedule re-sized at the final stage)."""
    config = config_lib.load(candidate.arm.config, [*data_overrides(settings), *candidate.overrides()])
    more = []
    if plan is not None:
        planned = plan.horizon_units[candidate.name]
        if resized:
            more += schedule_overrides(config, resized["horizon_units"], plan.steps_per_unit[candidate.name],
                                       planned_units=planned, trained_units=resized["from_units"])
        else:
            more += schedule_overrides(config, planned, plan.steps_per_unit[candidate.name])
    return config_lib.from_dict(config.to_dict(), more) if more else config


def _values_key(values: Dict[str, Any], candidate: Candidate) -> bool:
    return all(values.get(key) == value for key, value in candidate.values().items())


def make_oracle(pool: Sequence[Candidate], eta: int, seed: int):
    """keras-tuner's Hyperband oracle limited to one bracket that starts every candidate in `pool`, in order.

    Hyperband's most exploratory bracket is successive halving: rung r runs ceil(n / eta^r) trials for
    eta^r epochs (here: units), each the best remaining trial of rung r-1 continued (`tuner/trial_id`).
    Its first rung draws random values; here they are the candidates, so every method is tried once.
    """
    import keras_tuner as kt

    from sslzoo.select.plan import rung_sizes

    class SuccessiveHalvingOracle(kt.oracles.HyperbandOracle):
        def __init__(self):
            self._pool = [c.values() for c in pool]
            self._sizes = rung_sizes(len(pool), eta)
            super().__init__(kt.Objective("score", direction="max"), max_epochs=eta ** (len(self._sizes) - 1),
                             factor=eta, hyperband_iterations=1, seed=seed)

        def _get_num_brackets(self):
            return len(self._sizes)

        def _get_size(self, bracket_num, round_num):
            return self._sizes[round_num]

        def _get_epochs(self, bracket_num, round_num):
            return self.factor ** round_num

        def _random_values(self):
            started = len(self._brackets[0]["rounds"][0]) if self._brackets else len(self._pool)
            return dict(self._pool[started]) if started < len(self._pool) else None

        def populate_space(self, trial_id):
            self._remove_completed_brackets()
            if not self._brackets:  # the one bracket is done: no second one
                return {"status": "IDLE"} if self.ongoing_trials else {"status": "STOPPED"}
            return super().populate_space(trial_id)

    return SuccessiveHalvingOracle()


def _make_tuner(oracle, output: Path, arms, trial_fn):
    import keras_tuner as kt

    class _Tuner(kt.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            try:
                return trial_fn(trial.trial_id, dict(trial.hyperparameters.values))
            except Exception as error:  # keras-tuner would log it and retry: stop the search with it instead
                raise kt.errors.FatalError(str(error)) from error

    class _Space(kt.HyperModel):
        def declare_hyperparameters(self, hp):
            declare(hp, arms)

        def build(self, hp):  # keras-tuner discovers the space through it; nothing is built
            declare(hp, arms)

    return _Tuner(oracle, hypermodel=_Space(), directory=str(output), project_name=PROJECT, overwrite=False)


def select(settings: Settings, output: str | Path, command: str = "") -> Dict[str, Any]:
    """Runs (or resumes) the search into `output`; returns what select.json holds."""
    from sslzoo.tuning import check_output
    from sslzoo.training.lock import hold_run_folder

    settings.check()
    extras.require("tune", "sslzoo select")
    output = Path(output)
    arms = discover_arms(settings.methods or None)
    pool = candidates(arms, settings.per_method, settings.seed)
    labelled = LabelledSet(settings.eval_data, settings.image_size, settings.held_back, settings.seed)
    if (output / RESULT_FILE).exists():
        finished = json.loads((output / RESULT_FILE).read_text())
        if finished.get("settings") == json.loads(json.dumps(asdict(settings))):
            return finished
    with hold_run_folder(output):
        check_output(output, {"kind": "select", **asdict(settings)})
        return _search(settings, output, arms, pool, labelled, command)


def _search(settings: Settings, output: Path, arms, pool: List[Candidate], labelled: LabelledSet,
            command: str) -> Dict[str, Any]:
    import keras_tuner as kt

    from sslzoo.data.kinds import ImageKind
    from sslzoo.select import trial as trials

    clock = Clock(output, settings.budget_minutes * 60.0)
    mark = time.perf_counter()
    data = ImageKind().load(candidate_config(pool[0], settings))
    tuning_images, tuning_labels = labelled.tuning()
    clock.add("load_seconds", mark)
    log.info("select: %d unlabelled training images, %d tuning / %d held-back labelled images, %d candidates",
             len(data.splits.train), len(tuning_labels), len(labelled.held_back_labels), len(pool))

    mark = time.perf_counter()
    speeds, excluded = _calibrations(settings, output, pool, data, tuning_images, clock)
    clock.add("calibration_seconds", mark)
    pool = [c for c in pool if c.name in speeds]
    if not pool:
        raise ConfigError("no method can train on this data at --image-size "
                          f"{settings.image_size}: " + "; ".join(f"{k}: {v}" for k, v in excluded.items()))
    # One scoring protocol for every candidate: the first arm's kNN and linear-probe settings.
    evaluation = candidate_config(pool[0], settings).eval
    reserve = _report_reserve(output, [speeds[c.name] for c in pool], tuning_labels, labelled.num_classes,
                              evaluation)
    plan_path = output / PLAN_FILE
    if plan_path.exists():
        plan = Plan.from_dict(json.loads(plan_path.read_text()))
    else:
        plan = make_plan({c.name: speeds[c.name] for c in pool}, clock.budget, clock.elapsed() + reserve,
                         settings.eta, settings.search_share, len(data.splits.train))
        atomic_write_text(plan_path, json.dumps(plan.to_dict(), indent=2))
    configs = {c.name: candidate_config(c, settings, plan) for c in pool}
    by_name = {c.name: c for c in pool}
    trials_dir = output / TRIALS

    def score(encoder) -> float:
        features = trials.extract_features(encoder, tuning_images)
        return trials.score_features(features, tuning_labels, labelled.num_classes, settings.score, evaluation,
                                     settings.seed)

    def trial_fn(trial_id: str, values: Dict[str, Any]) -> Dict[str, float]:
        candidate = next(c for c in pool if _values_key(values, c))
        units, parent = int(values["tuner/epochs"]), values.get("tuner/trial_id")
        run_dir = trials_dir / trial_id
        record = trials.read_score(run_dir)
        if record is None:
            record = _run_rung(candidate, trial_id, parent, units, run_dir)
        log.info("select: trial %s %s to %d units -> %s", trial_id, candidate.name, units,
                 f"score {record['score']:.2f}" if record["score"] is not None else record.get("diverged"))
        return {"score": float(record["score"] or 0.0)}

    def _run_rung(candidate, trial_id, parent, units, run_dir) -> Dict[str, Any]:
        extra = {"trial": trial_id, "candidate": candidate.name, "setting": candidate.setting, "parent": parent,
                 "target_units": units}
        inherited = (trials.read_score(trials_dir / parent) or {}) if parent is not None else {}
        if inherited.get("diverged"):  # nothing to continue: the parent's last checkpoint diverges again
            record = {**extra, "units": inherited["units"], "score": None, "seconds": 0.0,
                      "diverged": inherited["diverged"]}
            atomic_write_text(_score_path(run_dir), json.dumps(record, indent=2))
            return record
        estimate = seconds_of([candidate.name], speeds, plan, units - inherited.get("units", 0))
        if clock.elapsed() + estimate + reserve > clock.budget:
            raise BudgetSpent(f"trial {trial_id} ({candidate.name}, about {estimate:.0f} s) would end after the "
                              f"budget ({clock.elapsed():.0f} of {clock.budget:.0f} s spent)")
        if parent is not None:
            trials.inherit(trials_dir / parent, run_dir)
        record = trials.train_and_score(configs[candidate.name], run_dir, data, units, score, extra=extra)
        clock.save()
        return record

    oracle = make_oracle(pool, settings.eta, settings.seed)
    tuner = _make_tuner(oracle, output, arms, trial_fn)
    stopped = None
    mark = time.perf_counter()
    try:
        tuner.search(verbose=0)
    except kt.errors.FatalError as error:
        cause = error.__cause__
        if isinstance(cause, BudgetSpent):
            stopped = str(cause)
            log.warning("select: %s; the best candidate so far wins", stopped)
        elif cause is not None:
            raise cause from None
        else:
            raise
    clock.add("search_seconds", mark)
    clock.save()
    records = _records(trials_dir)
    if not any(r["score"] is not None for r in records):
        raise ConfigError("every candidate diverged (NaN) or none finished a rung within the budget: "
                          + "; ".join(f"{r['candidate']}: {r.get('diverged', 'no score')}" for r in records))
    return _finish(settings, output, plan, speeds, excluded, records, configs, by_name, data, labelled,
                   tuning_images, tuning_labels, score, evaluation, clock, stopped, command, reserve)


def _winner_horizon(output: Path, plan: Plan, name: str, start_units: int, room: int) -> Optional[Dict[str, int]]:
    """The winner's schedule re-sized to what the budget's rest affords, when that is more than the plan's
    horizon (the rungs took less time than planned); None keeps the plan's. Decided once: a resumed
    final stage reads the decision back, so its checkpoints and config stay one run."""
    path = output / HORIZON_FILE
    if path.exists():
        return json.loads(path.read_text())
    planned = plan.horizon_units[name]
    if start_units + room <= planned:
        return None
    resized = {"candidate": name, "planned_horizon_units": planned, "horizon_units": start_units + room,
               "from_units": start_units}
    atomic_write_text(path, json.dumps(resized, indent=2))
    log.info("select: the rungs left time: %s's schedule re-sized from %d to %d units", name, planned,
             start_units + room)
    return resized


def _winner_config(winner: Candidate, settings: Settings, plan: Plan, configs, resized):
    return candidate_config(winner, settings, plan, resized) if resized else configs[winner.name]


def _score_path(run_dir: Path) -> Path:
    from sslzoo.select.trial import SCORE_FILE

    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / SCORE_FILE


def _read(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def _calibrations(settings, output, pool, data, tuning_images, clock):
    """Speed per candidate, measured once per arm (cached in calibration.json), and the arms left out."""
    from sslzoo.select import trial as trials

    path = output / CALIBRATION_FILE
    cached = _read(path, {"speeds": {}, "excluded": {}})
    for candidate in pool:
        arm = candidate.arm.name
        if arm in cached["speeds"] or arm in cached["excluded"]:
            continue
        try:
            speed = trials.calibrate(candidate_config(candidate, settings), data, tuning_images)
            cached["speeds"][arm] = speed.to_dict()
            log.info("select: calibrated %s: %.2f ms/image, %.1f s per trial overhead", arm,
                     1000 * speed.seconds_per_image, speed.overhead_seconds)
        except Exception as error:  # noqa: BLE001  (any failure to build or train here leaves the arm out)
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
            cached["excluded"][arm] = reason
            log.warning("select: %s left out: %s", arm, reason)
        atomic_write_text(path, json.dumps(cached, indent=2))
        clock.save()
    speeds = {c.name: Speed(**cached["speeds"][c.arm.name]) for c in pool if c.arm.name in cached["speeds"]}
    return speeds, dict(cached["excluded"])


def _report_reserve(output: Path, speeds: Sequence[Speed], labels: np.ndarray, num_classes: int, evaluation
                    ) -> float:
    """Seconds kept for the final report: four encoders, each loaded or built (a trial's overhead at most)
    with two feature passes and a linear probe. The probe is timed once on random features the size of the
    report's (its cost does not depend on what they hold, and the held-back images stay unread)."""
    from sslzoo.select import trial as trials

    path = output / CALIBRATION_FILE
    cached = _read(path, {})
    if "report_probe_seconds" not in cached:
        features = np.random.default_rng(0).normal(size=(len(labels), 256)).astype("float32")
        start = time.perf_counter()
        trials.held_back_scores(features, labels, features, labels, num_classes, evaluation)
        cached["report_probe_seconds"] = round(time.perf_counter() - start, 2)
        atomic_write_text(path, json.dumps(cached, indent=2))
    scoring = max(s.score_seconds for s in speeds)
    return 4 * (float(cached["report_probe_seconds"]) + 2 * scoring) + max(s.overhead_seconds for s in speeds)


def _records(trials_dir: Path) -> List[Dict[str, Any]]:
    from sslzoo.select.trial import read_score

    if not trials_dir.exists():
        return []
    found = [read_score(folder) for folder in sorted(trials_dir.iterdir()) if folder.is_dir()]
    return [r for r in found if r and "candidate" in r]


def _finish(settings, output, plan, speeds, excluded, records, configs, by_name, data, labelled,
            tuning_images, tuning_labels, score, evaluation, clock, stopped, command, reserve) -> Dict[str, Any]:
    """Trains the winner to the end of the budget, then reads the held-back part once and reports."""
    from sslzoo.select import report
    from sslzoo.select import trial as trials
    from sslzoo.training.build import initial_encoder
    from sslzoo.training.trainer import save_run_config

    scored = [r for r in records if r["score"] is not None]
    best = max(scored, key=_rank)
    winner = by_name[best["candidate"]]
    winner_dir = output / WINNER
    mark = time.perf_counter()
    final = trials.read_score(winner_dir)
    resized = _read(output / HORIZON_FILE, None)
    if final is None or "final" not in final:
        trials.inherit(output / TRIALS / best["trial"], winner_dir)
        speed = speeds[winner.name]
        unit_seconds = plan.steps_per_unit[winner.name] * speed.batch_size * speed.seconds_per_image
        start_units = max(best["units"], trials.trained_units(winner_dir))
        room = int(max(0.0, clock.left() - reserve - speed.overhead_seconds) // unit_seconds)
        resized = _winner_horizon(output, plan, winner.name, start_units, room)
        config = _winner_config(winner, settings, plan, configs, resized)
        if resized:  # replaces the config.yaml the folder inherited from its trial
            save_run_config(config, winner_dir)
        target = min(config.trainer.epochs, start_units + room)
        deadline = time.perf_counter() + max(0.0, clock.left() - reserve)
        final = trials.train_and_score(
            config, winner_dir, data, max(target, start_units), score,
            extra_callbacks=[trials.Deadline(deadline)],
            extra={"candidate": winner.name, "trial": best["trial"], "final": True, "start_units": start_units,
                   "planned_units": target, "horizon_units": config.trainer.epochs})
    else:
        config = _winner_config(winner, settings, plan, configs, resized)
    clock.add("final_training_seconds", mark)
    clock.save()

    # The held-back labelled images are read here, once, after every decision is made.
    mark = time.perf_counter()
    held_images, held_labels = labelled.held_back()
    runner = _runner_up(scored, winner.name)
    default = _deepest(scored, DEFAULT_ARM)
    rows = []
    for role, record, folder in (("winner", final, winner_dir),
                                 ("runner-up", runner, output / TRIALS / runner["trial"] if runner else None),
                                 ("default", default, output / TRIALS / default["trial"] if default else None)):
        if record is None:
            continue
        encoder = trials.load_encoder(folder)
        rows.append({"role": role, "candidate": record["candidate"], "units": record["units"],
                     "tuning_score": record["score"],
                     **_held_back(encoder, tuning_images, tuning_labels, held_images, held_labels, labelled,
                                  evaluation, settings.seed)})
    initial = initial_encoder(config, winner_dir, 0)
    rows.append({"role": "random init", "candidate": f"{winner.name} at initialization", "units": 0,
                 "tuning_score": score(initial),
                 **_held_back(initial, tuning_images, tuning_labels, held_images, held_labels, labelled,
                              evaluation, settings.seed)})
    clock.add("report_seconds", mark)
    _write_winner_outputs(winner_dir, winner, data, rows[0], config)
    clock.save()
    result = {
        "settings": asdict(settings),
        "command": command,
        "labelled": {**labelled.describe(), "root": portable_path(labelled.root)},
        "excluded": excluded,
        "speeds": {name: speed.to_dict() for name, speed in speeds.items()},
        "plan": plan.to_dict(),
        "trials": sorted(records, key=lambda r: int(r["trial"])),
        "winner": {"candidate": winner.name, "method": winner.arm.method, "config": winner.arm.config.name,
                   "setting": winner.setting, "run": WINNER, **{k: final[k] for k in ("units", "score", "seconds")},
                   "horizon_units": config.trainer.epochs, "planned_horizon_units": plan.horizon_units[winner.name],
                   "cut_by_budget": final["units"] < config.trainer.epochs},
        "held_back": rows,
        "budget_seconds": clock.budget,
        "seconds": round(clock.elapsed(), 1),
        "phases": {k: round(v, 1) for k, v in clock.phases.items()},
        "stopped": stopped,
    }
    report.write(output, result)
    clock.save()
    atomic_write_text(output / RESULT_FILE, json.dumps(result, indent=2, default=_json_default))
    return result


def _held_back(encoder, tuning_images, tuning_labels, held_images, held_labels, labelled, evaluation, seed):
    from sslzoo.select import trial as trials

    bank = trials.extract_features(encoder, tuning_images)
    queries = trials.extract_features(encoder, held_images)
    return trials.held_back_scores(bank, tuning_labels, queries, held_labels, labelled.num_classes, evaluation,
                                   seed)


def _rank(record: Dict[str, Any]):
    """Deepest rung first, then the tuning score; among equals the earlier trial (as the oracle keeps it)."""
    return record["units"], record["score"], -int(record["trial"])


def _runner_up(scored, winner: str) -> Optional[Dict[str, Any]]:
    others = [r for r in scored if r["candidate"] != winner]
    return max(others, key=_rank) if others else None


def _deepest(scored, name: str) -> Optional[Dict[str, Any]]:
    mine = [r for r in scored if r["candidate"] == name]
    return max(mine, key=lambda r: r["units"]) if mine else None


def _write_winner_outputs(winner_dir: Path, winner: Candidate, data, row: Dict[str, Any], config) -> None:
    """What `sslzoo export --run <output>/winner` needs: encoder.keras (there), metrics.json, parity samples."""
    from sslzoo.data.kinds import dataset_label
    from sslzoo.evaluation.context import machine
    from sslzoo.files import atomic_write
    from sslzoo.training.evaluators import PARITY_SAMPLES

    val = data.splits.val
    samples = val.take(np.arange(min(32, len(val))))
    atomic_write(winner_dir / PARITY_SAMPLES, lambda tmp: np.save(tmp, samples, allow_pickle=False))
    metrics = {"method": winner.arm.method, "encoder": config.encoder.name, "dataset": dataset_label(config),
               "knn_top1": row["knn_top1"], "linear_top1": row["linear_top1"],
               "evaluation": "sslzoo select: top-1 on the held-back part of the labelled set "
                             "(kNN bank and linear probe: its tuning part)",
               "data": {"num_train": int(len(data.splits.train)), "num_val": int(len(val)), "class_names": []},
               "machine": machine()}
    atomic_write_text(winner_dir / "metrics.json", json.dumps(metrics, indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
