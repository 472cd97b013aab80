"""Hyperparameter search (tune.py, sslzoo.tuning): --param parsing, the tuning split, both searches, resume."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import yaml

import tune
from sslzoo import config as config_lib
from sslzoo import tuning
from sslzoo.backbones import build_encoder
from sslzoo.config import ConfigError
from sslzoo.data import load_splits
from sslzoo.data.splits import split_indices
from sslzoo.training import trainer
from tests.harness import tiny_config


def test_parse_param_choices_and_ranges():
    spec = tuning.parse_param("method.options.temperature=0.05,0.1, 0.5")
    assert (spec.key, spec.kind, spec.values) == ("method.options.temperature", "choice", [0.05, 0.1, 0.5])
    assert tuning.parse_param("trainer.epochs=1,2").values == [1, 2]
    assert tuning.parse_param("a.b=1,0.5").values == [1.0, 0.5]  # mixed numbers: all floats, ordered
    lists = tuning.parse_param("method.options.rotations=[0,2],[0, 1, 2, 3]")
    assert lists.values == ["[0,2]", "[0, 1, 2, 3]"]  # lists travel as YAML text (keras-tuner wants scalars)
    assert lists.override("[0,2]") == "method.options.rotations=[0,2]"
    assert config_lib.parse_override(lists.override("[0,2]"))[1] == [0, 2]
    ranged = tuning.parse_param("optimizer.learning_rate=float:0.001:1:log")
    assert (ranged.kind, ranged.low, ranged.high, ranged.log) == ("float", 0.001, 1.0, True)
    assert tuning.parse_param("trainer.batch_size=int:16:64").describe() == {
        "key": "trainer.batch_size", "kind": "int", "low": 16, "high": 64, "log": False}
    assert tuning.split_top_level("[0,1],{a: 1, b: 2},x") == ["[0,1]", "{a: 1, b: 2}", "x"]


@pytest.mark.parametrize("text, message", [
    ("method.options.temperature", "expected key=a,b,c"),
    ("method.options.temperature=", "empty choice list"),
    ("a.b= , ,", "empty choice list"),
    ("a.b=float:1:0.1", "low bound must be below"),
    ("a.b=float:0:1:log", "positive low bound"),
    ("a.b=int:1:x", "bounds must be ints"),
    ("a.b=float:0.1:1:exp", "expected key=a,b,c"),
    ("a.b=1,1", "repeated choice"),
])
def test_parse_param_rejects_bad_specs(text, message):
    with pytest.raises(ConfigError, match=message):
        tuning.parse_param(text)


def test_check_specs_names_valid_keys_and_refuses_split_keys():
    config = tiny_config("rotnet", {"rotations": [0, 1, 2, 3]})
    tuning.check_specs([tuning.parse_param("method.options.rotations=[0,2],[0,1,2,3]")], config)
    with pytest.raises(ConfigError, match=r"optimizer.learning_rat: no such config key; valid keys: .*"
                                          r"optimizer.learning_rate"):
        tuning.check_specs([tuning.parse_param("optimizer.learning_rat=0.1,0.2")], config)
    with pytest.raises(ConfigError, match="must be set in the config or with --set"):
        tuning.check_specs([tuning.parse_param("method.options.temperature=0.1,0.2")], config)
    with pytest.raises(ConfigError, match="defines the data split"):
        tuning.check_specs([tuning.parse_param("data.split_seed=0,1")], config)
    with pytest.raises(ConfigError, match="trainer.epochs: expected int"):  # a float for an int key, up front
        tuning.check_specs([tuning.parse_param("trainer.epochs=float:1:3")], config)


def test_tuning_split_is_carved_from_training_split_deterministically():
    labels = np.arange(1000) % 10
    official = config_lib.from_dict({"data": {"val_fraction": 0.1, "split_seed": 3}}).data
    tuned = config_lib.from_dict({"data": {"val_fraction": 0.1, "split_seed": 3, "holdout": "tuning",
                                           "tuning_fraction": 0.2}}).data
    train, val = split_indices(labels, official)
    fit, tune_idx = split_indices(labels, tuned)
    assert not set(tune_idx) & set(val) and not set(fit) & set(val)  # the validation split is never used
    assert sorted(np.concatenate([fit, tune_idx])) == sorted(train)
    assert len(tune_idx) == 180 and np.all(np.bincount(labels[tune_idx]) == 18)  # stratified 20% of 900
    again = split_indices(labels, tuned)
    assert np.array_equal(again[0], fit) and np.array_equal(again[1], tune_idx)
    # The sources use it too: a synthetic run with holdout=tuning trains and validates inside the train split.
    base = {"source": "synthetic", "synthetic_examples": 200}
    full = load_splits(config_lib.from_dict({"data": base}).data)
    carved = load_splits(config_lib.from_dict({"data": {**base, "holdout": "tuning"}}).data)
    assert len(carved.train) + len(carved.val) == len(full.train) == 180 and len(carved.val) == 20
    with pytest.raises(ConfigError, match="data.holdout: 'test' is not one of validation, tuning"):
        config_lib.from_dict({"data": {"holdout": "test"}})


def _tiny_run(tmp_path):
    """A run folder as train.py leaves it, minus the training: an untrained tiny encoder is enough here."""
    config = tiny_config("rotnet", {}, eval={"linear_epochs": 3, "knn_k": 10})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    build_encoder(config.encoder.name, config.data.image_size, **config.encoder.options).save(run / "encoder.keras")
    return run


def test_probe_search_writes_results_with_best_trial_inside_space(tmp_path, capsys):
    """Three Hyperband trials on an untrained tiny encoder's features: ~4-6 s on 2 shared cores."""
    run = _tiny_run(tmp_path)
    assert tune.main(["probe", "--run", str(run), "--max-trials", "3"]) == 0
    out = run / "tuning" / "probe"
    results = json.loads((out / "tuning.json").read_text())
    trials = results["trials"]
    assert results["algorithm"] == "hyperband" and len(trials) == 3
    assert results["best"]["objective"] == max(t["objective"] for t in trials)
    for trial in trials:
        hp = trial["hyperparameters"]
        assert 1e-4 <= hp["learning_rate"] <= 1e-1 and 1e-6 <= hp["weight_decay"] <= 1e-2
        assert 1 <= trial["epochs"] <= 3  # Hyperband's resource: probe epochs up to eval.linear_epochs
    assert 0 <= results["best"]["val_top1"] <= 100 and 0 <= results["default"]["val_top1"] <= 100
    assert results["num_train"] == 180 and results["num_tuning"] == 20 and results["num_val"] == 20
    assert "| best |" in (out / "tuning.md").read_text()
    assert "probe search (hyperband): 3 trials" in capsys.readouterr().out


def test_pretext_search_trains_trials_picks_best_and_resumes(tmp_path, monkeypatch, capsys):
    """Two one-step RotNet trials on 200 synthetic images, then a resume: ~16 s on 2 shared cores."""
    config = tiny_config("rotnet", {"rotations": [0, 1, 2, 3]}, eval={"linear_epochs": 1, "knn_k": 10})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    out = tmp_path / "search"
    argv = ["pretext", "--config", str(path), "--param", "method.options.rotations=[0,2],[0,1,2,3]",
            "--set", "trainer.batch_size=8", "--algorithm", "random", "--max-trials", "2", "--output", str(out)]
    assert tune.main(argv) == 0
    results = json.loads((out / "tuning.json").read_text())
    trials = results["trials"]
    assert sorted(t["hyperparameters"]["method.options.rotations"] for t in trials) == ["[0,1,2,3]", "[0,2]"]
    assert results["best"]["objective"] == max(t["objective"] for t in trials)
    for trial in trials:  # every trial is an ordinary run folder, trained on the tuning split's complement
        saved = config_lib.load(out / "trials" / trial["trial_id"] / "config.yaml")
        assert saved.data.holdout == "tuning" and not saved.eval.random_init
        assert str(saved.method.options["rotations"]).replace(" ", "") == trial["hyperparameters"][
            "method.options.rotations"]
        metrics = json.loads((out / "trials" / trial["trial_id"] / "metrics.json").read_text())
        assert metrics["knn_top1"] == trial["objective"] and metrics["data"]["num_val"] == 20
    assert set(results["best"]["val"]) == {"knn_top1", "linear_top1"} and "val" in results["default"]
    # The default (all four rotations) is one of the choices: its trial doubles as the default run.
    default_trial = [t for t in trials if t["hyperparameters"]["method.options.rotations"] == "[0,1,2,3]"][0]
    assert results["default"]["run"] == str(out / "trials" / default_trial["trial_id"])
    assert not (out / "default").exists()
    assert results["reproduce"] in capsys.readouterr().out
    assert shlex.split(results["reproduce"])[-2:] == ["trainer.batch_size=8", results["best"]["set"][0]]

    # The same command again resumes: every trial (and the default run) is done, nothing is retrained.
    def refuse(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(trainer, "train_run", refuse)
    assert tune.main(argv) == 0
    assert [t["trial_id"] for t in json.loads((out / "tuning.json").read_text())["trials"]] == \
        [t["trial_id"] for t in trials]

    # Another search in the same folder is refused instead of mixed in.
    other = [*argv[:4], "method.options.rotations=[0,1],[0,1,2,3]", *argv[5:]]
    assert tune.main(other) == 2
    assert "holds a different search (differs in: space)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["pretext", "--config", "zoo_configs/rotnet_convnet_small_cifar10.yaml", "--param",
      "method.options.temprature=0.1,0.2"], "method.options.temprature: no such config key"),
    (["pretext", "--config", "zoo_configs/rotnet_convnet_small_cifar10.yaml", "--param",
      "method.options.head="], "empty choice list"),
    (["pretext", "--config", "zoo_configs/rotnet_convnet_small_cifar10.yaml", "--param",
      "data.val_fraction=0.1,0.2"], "defines the data split"),
    (["pretext", "--config", "zoo_configs/rotnet_convnet_small_cifar10.yaml", "--param", "trainer.epochs=1,2",
      "--algorithm", "random", "--max-trials", "0"], "--max-trials must be >= 1"),
])
def test_cli_bad_input_exits_2_with_message(argv, message, capsys):
    assert tune.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_probe_refuses_unfinished_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config_lib.Config().to_dict()))
    assert tune.main(["probe", "--run", str(run)]) == 2
    assert "has no encoder.keras: is the run finished?" in capsys.readouterr().err
    assert tune.main(["probe", "--run", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
