"""`sslzoo select`: successive halving across methods within a budget (sslzoo/select/).

One tiny search (three methods, two rungs, synthetic images) serves most tests: it completes, prunes a
diverging method with a note, keeps to its budget, reads the held-back labelled images once and only after
every decision, and leaves an exportable winner. A second search is killed between the rungs and resumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from sslzoo import config as config_lib
from sslzoo.config import ConfigError, searched_options
from sslzoo.data.synthetic import make_shapes
from sslzoo.evaluation.knn import knn_leave_one_out_top1, knn_top1
from sslzoo.methods.simclr import SimCLROptions
from sslzoo.select import labelled as labelled_module
from sslzoo.select import search, space
from sslzoo.select import trial as trial_module
from sslzoo.select.plan import Speed, make_plan, rung_sizes, schedule_overrides
from sslzoo.training import trainer
from tests.harness import tiny_config

METHODS = ["rotnet", "simclr", "simsiam"]
DIVERGING = "rotnet"  # trained at an absurd learning rate in the tiny search: its loss becomes NaN
BUDGET_MINUTES = 2.0  # calibration on a slower 2-core machine under the suite's load asked for up to 2


# ------------------------------------------------------------------------------------------- closed forms
def test_leave_one_out_knn_is_knn_against_all_the_others():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 6))
    labels = rng.integers(0, 4, size=40)
    for k in (1, 5, 200):
        expected = np.mean([knn_top1(np.delete(features, i, 0), np.delete(labels, i), features[i:i + 1],
                                     labels[i:i + 1], 4, k=k, temperature=0.1) for i in range(40)])
        assert knn_leave_one_out_top1(features, labels, 4, k=k, temperature=0.1) == pytest.approx(expected)
    # Two tight, well separated clusters: every example's neighbours are its own class.
    clusters = np.repeat([[1.0, 0.0], [0.0, 1.0]], 5, axis=0) + 0.01 * rng.normal(size=(10, 2))
    assert knn_leave_one_out_top1(clusters, np.repeat([0, 1], 5), 2, k=3) == 100.0
    with pytest.raises(ValueError, match="at least 2"):
        knn_leave_one_out_top1(features[:1], labels[:1], 4)


def test_rung_sizes_halve_by_eta_until_one_remains():
    assert rung_sizes(16, 3) == [16, 6, 2, 1]
    assert rung_sizes(3, 3) == [3, 1]
    assert rung_sizes(9, 3) == [9, 3, 1]
    assert rung_sizes(8, 2) == [8, 4, 2, 1]
    assert rung_sizes(1, 3) == [1]


def test_plan_spends_its_share_of_the_budget():
    speeds = {"a": Speed(0.001, 2.0, 64), "b": Speed(0.003, 4.0, 128), "c": Speed(0.002, 3.0, 256)}
    plan = make_plan(speeds, budget_seconds=1000.0, spent_seconds=100.0, eta=3, search_share=0.5,
                     train_images=10 ** 6)
    assert plan.rung_sizes == [3, 1] and plan.rung_units == [1, 3]
    # Closed form: 450 s = (3 + 1) trials x mean overhead 3 s + unit x mean 0.002 s/image x (3 x 1 + 1 x 2) units.
    assert plan.unit_images == round((450.0 - 4 * 3.0) / (0.002 * 5))
    assert plan.steps_per_unit == {name: round(plan.unit_images / s.batch_size) for name, s in speeds.items()}
    assert plan.planned_final_seconds == pytest.approx(450.0)
    for name, speed in speeds.items():  # a winner's schedule spans what the final 450 s can train
        unit_seconds = plan.steps_per_unit[name] * speed.batch_size * speed.seconds_per_image
        assert plan.horizon_units[name] == 3 + int(450.0 // unit_seconds)
    with pytest.raises(ConfigError, match=r"too little for 3 candidates.*about \d+ minutes.*--budget-minutes"):
        make_plan(speeds, budget_seconds=35.0, spent_seconds=10.0, eta=3, search_share=0.5, train_images=10 ** 6)


def test_schedule_keeps_its_shape_over_the_units():
    config = tiny_config("simclr", {}, optimizer={"warmup_epochs": 2.0}, trainer={"epochs": 10})
    overrides = schedule_overrides(config, horizon_units=40, steps_per_unit=7)
    assert "trainer.epochs=40" in overrides and "trainer.steps_per_epoch=7" in overrides
    assert "optimizer.warmup_epochs=8.0" in overrides  # 2 of 10 epochs -> the same fifth of 40 units


def test_a_resized_schedule_keeps_what_it_has_trained_through():
    config = tiny_config("rotnet", {}, optimizer={"warmup_epochs": 2.0, "boundaries": [3.0, 6.0],
                                                  "values": [0.1, 0.02, 0.004]}, trainer={"epochs": 10})
    planned = schedule_overrides(config, horizon_units=40, steps_per_unit=7)
    assert "optimizer.boundaries=[12.0, 24.0]" in planned
    # Planned for 40 units, re-sized to 80 after 15: the warmup (8 units) and the boundary at 12 are behind
    # the run and stay; the boundary at 24 is ahead and moves to the same share of 80 units.
    resized = schedule_overrides(config, horizon_units=80, steps_per_unit=7, planned_units=40, trained_units=15)
    assert "trainer.epochs=80" in resized and "optimizer.warmup_epochs=8.0" in resized
    assert "optimizer.boundaries=[12.0, 48.0]" in resized
    resized_config = config_lib.from_dict(config.to_dict(), resized)
    assert resized_config.optimizer.boundaries == [12.0, 48.0] and resized_config.trainer.epochs == 80


# ------------------------------------------------------------------------------------------- search space
def test_methods_declare_their_searched_options_once():
    assert searched_options(SimCLROptions) == {"temperature": (0.1, 0.2, 0.5)}
    arms = {arm.name: arm for arm in space.discover_arms()}
    assert "supervised" not in arms and "video_colorization" not in arms
    assert {"moco_v1", "moco_v2", "rotnet", "simclr"} <= set(arms)
    assert arms["simclr"].space["method.options.temperature"] == (0.1, 0.2, 0.5)
    rate = space.config_values(arms["rotnet"])["optimizer.learning_rate"]
    assert arms["rotnet"].space["optimizer.learning_rate"] == pytest.approx((rate / 2, rate, rate * 2))
    with pytest.raises(ConfigError, match="--methods nope: not an image method's zoo config; available: .*rotnet"):
        space.discover_arms(["nope"])


def test_candidates_start_with_the_shipped_config_then_distinct_draws():
    arms = space.discover_arms(["simclr", "rotnet"])
    pool = space.candidates(arms, per_arm=3, seed=0)
    assert [c.name for c in pool] == ["rotnet", "rotnet#1", "rotnet#2", "simclr", "simclr#1", "simclr#2"]
    for arm in arms:
        mine = [c for c in pool if c.arm is arm]
        assert mine[0].setting == {}
        values = [c.values() for c in mine]
        assert len({json.dumps(v, sort_keys=True) for v in values}) == 3  # distinct settings
        for value in values:
            assert value[space.CONDITION] == arm.name
            assert all(value[arm.hp_name(k)] in (*arm.space[k], space.config_values(arm)[k]) for k in arm.space)
    assert space.candidates(arms, per_arm=3, seed=0) == pool  # seeded


def test_oracle_promotes_the_best_third_from_its_checkpoint(tmp_path):
    """keras-tuner's Hyperband oracle, one bracket: every candidate once, then the top 1/eta continue."""
    arms = space.discover_arms(["rotnet", "simclr", "byol", "jigsaw"])
    pool = space.candidates(arms, per_arm=2, seed=0)  # 8 candidates: rungs of 8, 3, 1
    scores = {c.name: float(i) for i, c in enumerate(pool)}
    seen = []

    def trial_fn(trial_id, values):
        candidate = next(c for c in pool if search._values_key(values, c))
        seen.append((candidate.name, values["tuner/epochs"], values.get("tuner/trial_id")))
        return {"score": scores[candidate.name] + values["tuner/epochs"] / 100}

    tuner = search._make_tuner(search.make_oracle(pool, eta=3, seed=0), tmp_path, arms, trial_fn)
    tuner.search(verbose=0)
    first = [name for name, units, parent in seen if units == 1]
    assert first == [c.name for c in pool]  # every candidate, in order, once
    second = [(name, parent) for name, units, parent in seen if units == 3]
    top3 = sorted(scores, key=scores.get)[-3:]
    assert sorted(name for name, _ in second) == sorted(top3)
    ids = {name: i for i, (name, units, _) in enumerate(seen) if units == 1}
    assert all(parent == f"{ids[name]:04d}" for name, parent in second)  # continued, not restarted
    assert [(name, units) for name, units, _ in seen if units == 9] == [(top3[-1], 9)]


# ----------------------------------------------------------------------------------------------- data
def _labelled_folder(root: Path, count: int = 100) -> Path:
    images, labels = make_shapes(count, image_size=32, seed=7)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return root


def test_labelled_set_splits_paths_before_decoding(tmp_path):
    root = _labelled_folder(tmp_path / "labelled", 60)
    part = labelled_module.LabelledSet(str(root), 32, held_back_fraction=0.5, seed=3)
    assert not set(part.tuning_paths) & set(part.held_back_paths)
    assert len(part.tuning_paths) + len(part.held_back_paths) == 60
    assert np.all(np.bincount(part.held_back_labels) == 3)  # stratified: half of each class of 6
    images, labels = part.tuning()
    assert images.shape == (30, 32, 32, 3) and np.array_equal(labels, part.tuning_labels)
    with pytest.raises(Exception, match="at least 2: root/<class>/<image>"):
        one = tmp_path / "one"
        shutil.copytree(root / "class_0", one / "class_0")
        labelled_module.LabelledSet(str(one), 32)


def test_deadline_stops_training_at_an_epoch_end():
    # Epochs last exact lengths of a fake clock (binary-exact), so the stopping epoch is one number, not a
    # race with the machine's load.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    clock = {"now": 0.0}
    ends = []

    class Epochs(keras.callbacks.Callback):
        def __init__(self, length):
            super().__init__()
            self.length = length

        def on_epoch_end(self, epoch, logs=None):
            clock["now"] += self.length(epoch)
            ends.append(clock["now"])

    def fit(start, deadline, length):
        clock["now"], ends[:] = start, []
        callback = trial_module.Deadline(deadline, clock=lambda: clock["now"])
        model.fit(np.zeros((8, 4)), np.zeros((8, 1)), epochs=100, verbose=0, callbacks=[Epochs(length), callback])
        return callback

    deadline = fit(10.0, 10.0 + 1.5, lambda epoch: 0.125)
    assert deadline.stopped_early
    # Twelve epochs end exactly at the deadline; a thirteenth would end after it, so it never starts ...
    assert len(ends) == 12 and ends[-1] == 10.0 + 1.5
    # ... and an epoch that ends exactly at the deadline is allowed: at eleven epochs (1.375 s) one more
    # fits, so training went on.

    # The last epoch's length is the prediction: after a 0.5 s fourth epoch ending at 0.875 s training stops,
    # where another 0.125 s epoch would still have fitted before 1.0.
    deadline = fit(0.0, 1.0, lambda epoch: 0.5 if epoch == 3 else 0.125)
    assert ends == [0.125, 0.25, 0.375, 0.875] and deadline.stopped_early


def test_pretrain_to_an_epoch_then_on_is_one_run(tmp_path):
    """A rung continued later trains exactly as the uninterrupted run (what successive halving relies on)."""
    from sslzoo.data.kinds import ImageKind

    config = tiny_config("rotnet", {}, trainer={"epochs": 3, "steps_per_epoch": 2})
    config = config_lib.from_dict(config.to_dict(), ["method.online_probe=false"])

    data = ImageKind().load(config)
    straight, _, _ = trainer.pretrain(config, tmp_path / "straight", data)
    trainer.pretrain(config, tmp_path / "stopped", data, until_epoch=1)
    assert trial_module.trained_units(tmp_path / "stopped") == 1
    continued, _, _ = trainer.pretrain(config, tmp_path / "stopped", data)
    for a, b in zip(straight.get_weights(), continued.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="until_epoch=4 must lie in 1..trainer.epochs"):
        trainer.pretrain(config, tmp_path / "x", data, until_epoch=4)


# ----------------------------------------------------------------------------------------- the search
def _settings(eval_data: Path, **changes) -> search.Settings:
    values = dict(data="synthetic", eval_data=str(eval_data), budget_minutes=BUDGET_MINUTES, methods=METHODS,
                  max_examples=600, search_share=0.5)
    return search.Settings(**{**values, **changes})


def _patch_search(patcher, horizon_factor: int = 50):
    """One method diverges, and horizons are stretched so the final training must be cut by the budget."""
    original_config, original_plan = search.candidate_config, search.make_plan

    def diverging(candidate, settings, plan=None, resized=None):
        config = original_config(candidate, settings, plan, resized)
        if candidate.arm.name == DIVERGING:
            return config_lib.from_dict(config.to_dict(), ["optimizer.learning_rate=1e30"])
        return config

    def stretched(*args, **kwargs):
        plan = original_plan(*args, **kwargs)
        plan.horizon_units = {k: v * horizon_factor for k, v in plan.horizon_units.items()}
        return plan

    patcher.setattr(search, "candidate_config", diverging)
    patcher.setattr(search, "make_plan", stretched)


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    eval_data = _labelled_folder(root / "labelled")
    reads = []  # (paths, whether the winner's final score existed when they were decoded)
    output = root / "out"
    decode = labelled_module.decode_paths

    def spy(paths, image_size):
        reads.append((list(paths), (output / search.WINNER / trial_module.SCORE_FILE).exists(),
                      len(search._records(output / search.TRIALS))))
        return decode(paths, image_size)

    with pytest.MonkeyPatch.context() as patcher:
        patcher.setattr(labelled_module, "decode_paths", spy)
        _patch_search(patcher)
        result = search.select(_settings(eval_data), output, command="test")
    return result, output, reads, eval_data


def test_tiny_search_completes_with_two_rungs(tiny_search):
    result, output, _, _ = tiny_search
    assert result["plan"]["rung_sizes"] == [3, 1] and result["plan"]["rung_units"] == [1, 3]
    first = [r for r in result["trials"] if r["target_units"] == 1]
    second = [r for r in result["trials"] if r["target_units"] == 3]
    assert sorted(r["candidate"] for r in first) == sorted(METHODS) and len(second) == 1
    best = max((r for r in first if r["score"] is not None), key=lambda r: r["score"])
    assert second[0]["parent"] == best["trial"] and second[0]["candidate"] == best["candidate"]
    assert result["winner"]["candidate"] == best["candidate"]
    # The second rung continued the first's run: its history starts with the parent's epoch, unchanged.
    parent = (output / "trials" / best["trial"] / "history.csv").read_text().splitlines()
    child = (output / "trials" / second[0]["trial"] / "history.csv").read_text().splitlines()
    assert child[:2] == parent[:2] and len(child) == 4 and second[0]["units"] == 3
    for name in ("select.md", "select.png", "select.json"):
        assert (output / name).stat().st_size > 0
    text = (output / "select.md").read_text()
    assert "## Rung 0" in text and "## Rung 1" in text and f"**{best['candidate']}**" in text
    assert [row["role"] for row in result["held_back"]] == ["winner", "runner-up", "default", "random init"]


def test_a_diverging_method_is_pruned_with_a_note(tiny_search):
    result, output, _, _ = tiny_search
    diverged = [r for r in result["trials"] if r["candidate"] == DIVERGING]
    assert len(diverged) == 1 and diverged[0]["score"] is None and "diverged" in diverged[0]["diverged"]
    assert result["winner"]["candidate"] != DIVERGING
    assert f"| {DIVERGING} | as shipped | - |" in (output / "select.md").read_text()


def test_the_budget_is_kept_within_one_rung(tiny_search):
    result, _, _, _ = tiny_search
    budget = BUDGET_MINUTES * 60
    rung = max(float(r["seconds"]) for r in result["trials"])
    assert result["budget_seconds"] == budget
    assert result["seconds"] <= budget + rung
    # The stretched horizon could not be reached: the final training was stopped by the budget.
    assert result["winner"]["cut_by_budget"]
    assert result["winner"]["units"] > result["plan"]["rung_units"][-1]


def test_the_held_back_part_is_read_once_after_every_decision(tiny_search):
    result, output, reads, eval_data = tiny_search
    part = labelled_module.LabelledSet(str(eval_data), 32)
    held = set(part.held_back_paths)
    touching = [(paths, after_final, trials) for paths, after_final, trials in reads if held & set(paths)]
    assert len(touching) == 1
    paths, after_final, trials = touching[0]
    assert set(paths) == held and after_final and trials == len(result["trials"])
    assert all(not held & set(p) for p, _, _ in reads if p is not paths)


def test_the_winner_exports(tiny_search, tmp_path):
    from sslzoo.export.from_run import export_run
    from sslzoo.zoo import load

    _, output, _, _ = tiny_search
    exported = export_run(output / search.WINNER, tmp_path / "winner", evaluate=False)
    encoder = load(str(exported), format="keras")
    images = np.load(output / search.WINNER / "parity_samples.npy")[:4].astype("float32") / 255.0
    expected = trial_module.load_encoder(output / search.WINNER)(images, training=False)
    np.testing.assert_allclose(encoder(images, training=False), expected, atol=1e-5)


def test_a_search_killed_between_rungs_resumes_with_the_same_decisions(tiny_search, tmp_path, monkeypatch):
    result, first_output, _, eval_data = tiny_search
    output = tmp_path / "out"
    output.mkdir()
    for name in (search.CALIBRATION_FILE, search.PLAN_FILE):  # the same plan, so the same rungs
        shutil.copy(first_output / name, output / name)
    _patch_search(monkeypatch)
    real = trial_module.train_and_score

    def killed_at_second_rung(config, run_dir, data, until_units, *args, **kwargs):
        if until_units > 1:
            raise KeyboardInterrupt  # as if the process were killed between the rungs
        return real(config, run_dir, data, until_units, *args, **kwargs)

    monkeypatch.setattr(trial_module, "train_and_score", killed_at_second_rung)
    with pytest.raises(KeyboardInterrupt):
        search.select(_settings(eval_data), output)
    assert len(search._records(output / search.TRIALS)) == 3
    monkeypatch.setattr(trial_module, "train_and_score", real)
    decided = {}
    monkeypatch.setattr(search, "_finish", lambda *args: decided.setdefault("records", args[5]))
    search.select(_settings(eval_data), output)

    def decisions(records):
        return sorted((r["candidate"], r["target_units"], r["parent"], r["score"]) for r in records)

    assert decisions(decided["records"]) == decisions(result["trials"])


def test_a_winner_left_more_time_than_planned_uses_it_and_resumes_on_the_same_schedule(tiny_search, tmp_path,
                                                                                     monkeypatch):
    """The plan gives no final stage (every horizon ends at the last rung), so all the budget after the rungs
    is time the plan did not count on: the winner's schedule is re-sized once to use it, and a final stage
    killed after its first unit resumes on that same schedule."""
    _, first_output, _, eval_data = tiny_search
    output = tmp_path / "out"
    output.mkdir()
    shutil.copy(first_output / search.CALIBRATION_FILE, output / search.CALIBRATION_FILE)
    plan = json.loads((first_output / search.PLAN_FILE).read_text())
    last_rung = plan["rung_units"][-1]
    plan["horizon_units"] = {name: last_rung for name in plan["horizon_units"]}
    (output / search.PLAN_FILE).write_text(json.dumps(plan))
    _patch_search(monkeypatch)
    settings = _settings(eval_data, budget_minutes=1.0)
    real = trial_module.train_and_score

    class KilledInSecondUnit(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.begun = 0

        def on_epoch_begin(self, epoch, logs=None):  # after the first unit's checkpoint
            self.begun += 1
            if self.begun == 2:
                raise KeyboardInterrupt

    def killed_in_final(config, run_dir, data, until_units, score, extra_callbacks=(), extra=None):
        if extra and extra.get("final"):
            extra_callbacks = [*extra_callbacks, KilledInSecondUnit()]
        return real(config, run_dir, data, until_units, score, extra_callbacks=extra_callbacks, extra=extra)

    monkeypatch.setattr(trial_module, "train_and_score", killed_in_final)
    with pytest.raises(KeyboardInterrupt):
        search.select(settings, output)
    decided = json.loads((output / search.HORIZON_FILE).read_text())
    assert decided["planned_horizon_units"] == last_rung and decided["from_units"] == last_rung
    assert decided["horizon_units"] > last_rung + 1
    assert trial_module.trained_units(output / search.WINNER) == last_rung + 1
    monkeypatch.setattr(trial_module, "train_and_score", real)
    result = search.select(settings, output)  # a schedule re-decided here would be refused as another run
    assert json.loads((output / search.HORIZON_FILE).read_text()) == decided
    winner = result["winner"]
    assert winner["planned_horizon_units"] == last_rung and winner["horizon_units"] == decided["horizon_units"]
    assert winner["units"] > last_rung + 1
    saved = config_lib.load(output / search.WINNER / "config.yaml")
    assert saved.trainer.epochs == decided["horizon_units"]
    assert f"re-sized from the planned {last_rung} to {decided['horizon_units']} units" in (
        output / "select.md").read_text()


# ------------------------------------------------------------------------------------------------ command
def test_select_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    from sslzoo.select.cli import main

    assert main(["--data", "synthetic", "--eval-data", str(tmp_path), "--budget-minutes", "0"]) == 2
    assert "--budget-minutes 0.0: must be positive" in capsys.readouterr().err
    assert main(["--data", "synthetic", "--eval-data", str(tmp_path / "missing"), "--budget-minutes", "1",
                 "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and len(err.strip().splitlines()) == 1


def test_select_help_does_not_start_tensorflow():
    import subprocess
    import sys

    code = ("import sys\nfrom sslzoo import cli\ntry:\n    cli.main(['select', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert "--budget-minutes" in result.stdout and result.stdout.strip().endswith("[]"), result.stdout[-300:]
