"""The zoo benchmark (python -m sslzoo.benchmark): entries, budget, state, ETA, table, chart, resume."""

import json
import sys
from pathlib import Path

import pytest

from sslzoo.benchmark import runner
from sslzoo.benchmark.__main__ import main as benchmark_main
from sslzoo.benchmark.entries import (Entry, check_same_encoder, discover_entries, entry_overrides,
                                      parse_data)
from sslzoo.benchmark.export import benchmark_card, export_entries, reproduce_entry
from sslzoo.benchmark.report import COLUMNS, build_rows, draw_chart, rows_csv, write_reports
from sslzoo.benchmark.state import BenchmarkState, SettingsMismatchError
from sslzoo.config import ConfigError
from sslzoo.config import load as load_config
from sslzoo.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"data": "synthetic", "max_examples": 200, "epochs": 2, "steps_per_epoch": 0, "finetune_epochs": 3,
            "finetune_label_fraction": 0.1, "overrides": ["eval.linear_epochs=2"], "commands": ["cmd"]}
INFO = {"cpu": "Test CPU", "cores": 2, "ram_gb": 8.0, "tensorflow": "2.x", "keras": "3.x", "python": "3.11"}


def entry(stem, method, **kwargs):
    values = dict(config=ROOT / "zoo_configs" / f"{stem}.yaml", encoder="convnet_small",
                  encoder_options={"width": 0.5}, batch_size=128)
    values.update(kwargs)
    return Entry(stem=stem, method=method, **values)


def test_discovery_has_every_registered_image_method_once_and_no_video():
    entries = discover_entries(METHODS.names())
    methods = {e.method for e in entries}
    # MAE hides patch tokens from a ViT, so it cannot run on the small ConvNet: it is in the ViT table.
    image_methods = set(METHODS.names()) - {"video_colorization", "mae"}
    assert "mae" in {e.method for e in discover_entries(METHODS.names(), encoder="vit_tiny")}
    assert methods == image_methods
    assert len({e.stem for e in entries}) == len(entries)
    assert {"moco_v1_convnet_small_cifar10", "moco_v2_convnet_small_cifar10"} <= {e.stem for e in entries}
    assert entries[0].method == "supervised"  # first, so the baselines appear early in a partial table
    assert all(e.stem.endswith("_convnet_small_cifar10") for e in entries)
    check_same_encoder(entries)  # the shipped configs share one encoder


def test_methods_restricts_by_stem_or_method_name_and_rejects_unknown():
    chosen = discover_entries(METHODS.names(), only=["moco", "rotnet_convnet_small_cifar10"])
    assert [e.stem for e in chosen] == ["moco_v1_convnet_small_cifar10", "moco_v2_convnet_small_cifar10",
                                        "rotnet_convnet_small_cifar10"]
    with pytest.raises(ConfigError, match="nope"):
        discover_entries(METHODS.names(), only=["nope"])


def test_a_different_encoder_fails_naming_the_config():
    same = [entry("a_convnet_small_cifar10", "rotnet"),
            entry("b_convnet_small_cifar10", "cpc", encoder_options={"width": 0.5, "norm": "layer"})]
    check_same_encoder(same)  # normalisation may follow the method's paper
    wider = same + [entry("c_convnet_small_cifar10", "simclr", encoder_options={"width": 1.0})]
    with pytest.raises(ConfigError, match="c_convnet_small_cifar10.yaml"):
        check_same_encoder(wider)


def test_overrides_give_every_entry_the_same_data_and_budget():
    entries = discover_entries(METHODS.names(), only=["supervised", "rotnet", "simclr"])
    settings = {**SETTINGS, "data": "folder:/data/cifar", "steps_per_epoch": 5}
    configs = {e.stem: load_config(e.config, entry_overrides(e, settings)) for e in entries}
    for stem, config in configs.items():
        assert (config.data.source, config.data.path, config.data.max_examples) == ("folder", "/data/cifar", 200)
        assert (config.trainer.epochs, config.trainer.steps_per_epoch) == (2, 5)
        assert (config.eval.finetune_epochs, config.eval.finetune_label_fraction) == (3, 0.1)
        assert config.eval.linear_epochs == 2
        # Only the supervised run pays for the random-init evaluation.
        assert config.eval.random_init == (config.method.name == "supervised")
    synthetic = load_config(entries[0].config, entry_overrides(entries[0], SETTINGS))
    assert (synthetic.data.source, synthetic.data.synthetic_examples) == ("synthetic", 200)
    assert parse_data("tfds:cifar10") == {"source": "tfds", "name": "cifar10"}
    with pytest.raises(ConfigError, match="folder:PATH"):
        parse_data("cifar")


def test_a_missing_data_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    """The command stops at the front door; re-reading saved settings does not ask the folder to exist."""
    missing = f"folder:{tmp_path / 'missing'}"
    output = tmp_path / "bench"
    assert benchmark_main(["--data", missing, "--output", str(output), "--methods", "rotnet"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not output.exists()
    assert parse_data(missing)["path"] == str(tmp_path / "missing")
    (tmp_path / "missing").mkdir()
    assert parse_data(missing, must_exist=True)["source"] == "folder"


def test_a_vit_table_has_its_own_entries_and_random_init_row():
    """--encoder vit_tiny: the ViT configs, supervised first (its run gives the ViT's random-init row), with
    the benchmark's data and budget and no ConvNet-only override (a ViT has no batch norm option)."""
    entries = discover_entries(METHODS.names(), only=["supervised", "moco_v3"], encoder="vit_tiny")
    assert [e.stem for e in entries] == ["supervised_vit_tiny_cifar10", "moco_v3_vit_tiny_cifar10"]
    assert {e.encoder for e in entries} == {"vit_tiny"}
    settings = {**SETTINGS, "encoder": "vit_tiny", "data": "folder:/data/cifar"}
    for e in entries:
        overrides = entry_overrides(e, settings)
        assert not any(o.startswith("encoder.options.norm") for o in overrides)
        config = load_config(e.config, overrides)
        assert (config.encoder.name, config.data.path, config.trainer.epochs) == ("vit_tiny", "/data/cifar", 2)
        assert config.eval.random_init == e.is_supervised
    assert all(not e.stem.endswith("_vit_tiny_cifar10") for e in discover_entries(METHODS.names()))


def test_an_encoder_without_a_supervised_config_is_refused_naming_the_ones_there_are(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"--encoder resnet9: no .*supervised_resnet9_cifar10.*convnet_small, vit_tiny"):
        discover_entries(METHODS.names(), encoder="resnet9")
    output = tmp_path / "bench"
    assert benchmark_main(["--data", "synthetic", "--encoder", "resnet9", "--output", str(output)]) == 2
    assert "supervised_resnet9_cifar10" in capsys.readouterr().err
    assert not output.exists()


def test_a_folder_keeps_its_encoder(tmp_path):
    """A folder written before the encoder setting existed is a ConvNet table; another encoder is refused."""
    BenchmarkState(tmp_path, SETTINGS).save()  # no "encoder" key, as older folders
    assert BenchmarkState.open(tmp_path, {**SETTINGS, "encoder": "convnet_small"}).settings["encoder"] == "convnet_small"
    with pytest.raises(SettingsMismatchError, match=r"encoder: 'convnet_small' there, 'vit_tiny' now"):
        BenchmarkState.open(tmp_path, {**SETTINGS, "encoder": "vit_tiny"})


def test_eta_arithmetic():
    # Two finished entries at 100 s and 300 s: mean 200; current at 50 s, two more to go.
    assert runner.estimate_eta([100.0, 300.0], 2, 50.0, 0.5) == pytest.approx(150 + 400)
    assert runner.estimate_eta([100.0], 0, 250.0, 1.0) == 0.0  # overrunning never gives a negative ETA
    # Nothing finished: extrapolate the current entry from its finished epochs.
    assert runner.estimate_eta([], 3, 30.0, 0.25) == pytest.approx(90 + 3 * 120)
    assert runner.estimate_eta([], 3, 30.0, 0.0) is None
    assert runner.format_seconds(3723) == "1:02:03" and runner.format_seconds(None) == "?"


def test_phase_is_read_from_the_run_folder(tmp_path):
    started = 0.0
    assert runner.phase(tmp_path, 3, started).startswith("starting")
    (tmp_path / "init.weights.h5").write_text("")
    assert runner.phase(tmp_path, 3, started) == "pretraining epoch 1/3"
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n1,0.9\n")
    assert runner.phase(tmp_path, 3, started) == "pretraining epoch 3/3"
    # With --budget-seconds the epochs are a cap the run does not reach: the phase names the budget.
    assert runner.phase(tmp_path, 1000, started, budget_seconds=600.0) == "pretraining epoch 3 of a 600 s budget"
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
    assert runner.phase(tmp_path, 3, started) == runner.EVALUATING
    (tmp_path / "metrics.json").write_text("{}")
    assert runner.phase(tmp_path, 3, started) == "done"
    # metrics.json of an earlier attempt does not count as done for this one.
    assert runner.phase(tmp_path, 3, (tmp_path / "metrics.json").stat().st_mtime + 10) == runner.EVALUATING


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    state = BenchmarkState.open(tmp_path, SETTINGS)
    state.update("rotnet_convnet_small_cifar10", status="done", wall_clock_s=12.0)
    reopened = BenchmarkState.open(tmp_path, {**SETTINGS, "commands": ["cmd --methods rotnet"]})
    assert reopened.is_done("rotnet_convnet_small_cifar10")
    assert reopened.settings["commands"] == ["cmd", "cmd --methods rotnet"]
    with pytest.raises(SettingsMismatchError, match=r"epochs: 2 there, 5 now.*another --output"):
        BenchmarkState.open(tmp_path, {**SETTINGS, "epochs": 5})


def fake_run(folder, stem, metrics):
    run = folder / "runs" / stem
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))


def fake_benchmark(tmp_path):
    entries = [entry("supervised_convnet_small_cifar10", "supervised"), entry("rotnet_convnet_small_cifar10", "rotnet"),
               entry("simclr_convnet_small_cifar10", "simclr"), entry("jigsaw_convnet_small_cifar10", "jigsaw")]
    state = BenchmarkState(tmp_path, SETTINGS)
    fake_run(tmp_path, entries[0].stem, {"knn_top1": 70.5, "linear_top1": 72.25, "finetune_top1": 60.0,
                                         "images_per_second": 900.0, "random_init": {
                                             "knn_top1": 30.1, "linear_top1": 38.2, "finetune_top1": 35.5}})
    fake_run(tmp_path, entries[1].stem, {"knn_top1": 50.0, "linear_top1": 55.5, "finetune_top1": 45.0,
                                         "images_per_second": 500.0})
    state.records = {entries[0].stem: {"status": "done", "wall_clock_s": 100.0, "peak_mem_mb": 900.5},
                     entries[1].stem: {"status": "done", "wall_clock_s": 200.0, "peak_mem_mb": 1000.0},
                     entries[2].stem: {"status": "failed", "wall_clock_s": 3.0, "peak_mem_mb": 300.0,
                                       "log_tail": "boom"}}
    return entries, state


def test_rows_come_from_the_run_folders_with_random_init_from_the_supervised_run(tmp_path):
    entries, state = fake_benchmark(tmp_path)
    rows = build_rows(entries, state)
    by_name = {row["name"]: row for row in rows}
    assert [row["name"] for row in rows][0] == "random_init"
    assert by_name["random_init"]["kind"] == "baseline"
    assert (by_name["random_init"]["knn_top1"], by_name["random_init"]["linear_top1"],
            by_name["random_init"]["finetune10_top1"]) == (30.1, 38.2, 35.5)
    rotnet = by_name["rotnet_convnet_small_cifar10"]
    assert (rotnet["knn_top1"], rotnet["linear_top1"], rotnet["finetune10_top1"], rotnet["train_images_per_s"],
            rotnet["wall_clock_s"], rotnet["peak_mem_mb"], rotnet["kind"]) == (50.0, 55.5, 45.0, 500.0, 200.0, 1000.0,
                                                                              "pretext")
    assert by_name["supervised_convnet_small_cifar10"]["kind"] == "supervised"
    assert by_name["simclr_convnet_small_cifar10"]["status"] == "failed"
    assert by_name["simclr_convnet_small_cifar10"]["knn_top1"] is None
    assert by_name["jigsaw_convnet_small_cifar10"]["status"] == "pending"
    header, *lines = rows_csv(rows).splitlines()
    assert header.split(",") == list(COLUMNS) and len(lines) == 5

    write_reports(entries, state, excluded=["video_colorization"], info=INFO)
    markdown = (tmp_path / "results.md").read_text()
    assert "| rotnet_convnet_small_cifar10 | rotnet | pretext | 50.00 | 55.50 | 45.00 |" in markdown
    for expected in ("Test CPU", "video_colorization", "GPU", "cmd", "Failed: simclr_convnet_small_cifar10"):
        assert expected in markdown


def test_chart_is_a_png(tmp_path):
    entries, state = fake_benchmark(tmp_path)
    path = draw_chart(build_rows(entries, state), tmp_path / "chart.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_export_keeps_existing_exports_and_skips_unfinished_entries(tmp_path):
    entries, state = fake_benchmark(tmp_path)
    rows = build_rows(entries, state)
    (tmp_path / "exported" / "rotnet_convnet_small_cifar10").mkdir(parents=True)
    outcomes = export_entries(entries[1:], rows, state, tmp_path / "exported", INFO)
    assert outcomes["rotnet_convnet_small_cifar10"].startswith("kept existing")
    assert outcomes["simclr_convnet_small_cifar10"] == "not finished"
    card = benchmark_card(entries[1], rows, state, INFO)
    assert card["row"]["linear_top1"] == 55.5 and card["random_init"]["knn_top1"] == 30.1
    assert card["supervised"]["name"] == "supervised_convnet_small_cifar10" and card["command"] == ["cmd"]
    json.dumps(card, allow_nan=False)  # the model card takes plain JSON only


def test_card_reproduce_command_rebuilds_the_entry_from_the_repository_root(tmp_path):
    """The relative data path as given (not this machine's absolute one), the zoo config, the budget."""
    settings = {**SETTINGS, "data": "folder:../shared/data/cifar10/train", "max_examples": 0}
    rotnet = entry("rotnet_convnet_small_cifar10", "rotnet")
    command = reproduce_entry(rotnet, settings, ("float32",))
    assert command.startswith("python train.py --config zoo_configs/rotnet_convnet_small_cifar10.yaml ")
    assert "data.path=../shared/data/cifar10/train " in command and "trainer.epochs=2" in command
    assert command.endswith("--output exported/rotnet_convnet_small_cifar10 --head linear --tflite float32")
    assert str(Path("../shared").resolve()) not in command


def test_run_entry_records_time_memory_and_failures(tmp_path, monkeypatch):
    """A stand-in train.py (no TensorFlow): an interrupted attempt's time is added; a failure keeps its log."""
    script = ("import json, sys, pathlib; out = pathlib.Path(sys.argv[1]); "
              "out.joinpath('history.csv').write_text('epoch\\n0\\n'); data = bytearray(60 * 2**20); "
              "print('training'); ok = sys.argv[2] == 'ok'; "
              "ok and out.joinpath('metrics.json').write_text('{}'); sys.exit(0 if ok else 3)")
    state = BenchmarkState(tmp_path, SETTINGS, {"rotnet": {"status": "running", "wall_clock_s": 40.0, "attempts": 1}})
    rotnet = entry("rotnet", "rotnet")
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(runner, "train_command", lambda e, o, run_dir: [sys.executable, "-c", script, str(run_dir), o[0]])
    phases = []
    record = runner.run_entry(rotnet, ["ok"], tmp_path / "rotnet", state, lambda p, s: phases.append(p), epochs=1)
    assert record["status"] == "done" and record["attempts"] == 2
    assert 40.0 < record["wall_clock_s"] < 70.0
    assert record["peak_mem_mb"] >= 60  # the child's own peak, in MB
    assert json.loads(state.path.read_text())["records"]["rotnet"]["status"] == "done"
    failed = runner.run_entry(entry("jigsaw", "jigsaw"), ["fail"], tmp_path / "jigsaw", state, lambda p, s: None, 1)
    assert (failed["status"], failed["returncode"]) == ("failed", 3)
    assert "training" in failed["log_tail"]


def test_end_to_end_two_entries_then_rerun_skips_them(tmp_path, capsys):
    """Supervised + RotNet through train.py subprocesses on tiny synthetic data (~45 s on 2 busy cores).

    The benchmark's own process runs in the test process (TensorFlow is already imported here).
    """
    output = tmp_path / "bench"
    argv = ["--data", "synthetic", "--max-examples", "200", "--epochs", "1", "--steps-per-epoch", "2",
            "--finetune-epochs", "1", "--methods", "rotnet,supervised",
            "--set", "trainer.batch_size=32", "eval.linear_epochs=1", "eval.knn_k=5", "--output", str(output)]
    assert benchmark_main(argv) == 0, capsys.readouterr().err[-3000:]
    first = capsys.readouterr().err
    assert "evaluating (kNN, linear, fine-tune)" in first and "ETA" in first
    header, *lines = (output / "results.csv").read_text().splitlines()
    assert header.split(",") == list(COLUMNS)
    rows = {line.split(",")[0]: dict(zip(COLUMNS, line.split(","))) for line in lines}
    assert set(rows) == {"random_init", "supervised_convnet_small_cifar10", "rotnet_convnet_small_cifar10"}
    for name, row in rows.items():
        assert row["status"] == "done"
        for key in ("knn_top1", "linear_top1", "finetune10_top1"):
            assert 0.0 <= float(row[key]) <= 100.0, (name, key)
    for name in ("supervised_convnet_small_cifar10", "rotnet_convnet_small_cifar10"):
        assert float(rows[name]["train_images_per_s"]) > 0 and float(rows[name]["peak_mem_mb"]) > 100
    assert (output / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "python -m sslzoo.benchmark --data synthetic" in (output / "results.md").read_text()
    before = json.loads((output / "benchmark.json").read_text())["records"]

    assert benchmark_main(argv) == 0
    assert capsys.readouterr().err.count("already done") == 2
    assert json.loads((output / "benchmark.json").read_text())["records"] == before  # train.py not started again
    log = (output / "runs" / "rotnet_convnet_small_cifar10" / "train.log").read_text()
    assert log.count("=== benchmark attempt") == 1


def test_a_budget_in_seconds_gives_every_entry_the_same_seconds(tmp_path):
    from sslzoo.benchmark.__main__ import parse_args, settings_from
    from sslzoo.benchmark.report import budget_label

    argv = ["--data", "synthetic", "--budget-seconds", "600"]
    settings = settings_from(parse_args(argv), argv)
    assert settings["budget_seconds"] == 600 and settings["epochs"] == 1000  # the cap, unless --epochs
    entries = discover_entries(METHODS.names(), only=["moco_v1_convnet_small_cifar10", "simclr"])
    configs = {e.stem: load_config(e.config, entry_overrides(e, settings)) for e in entries}
    for config in configs.values():
        assert (config.trainer.time_budget_s, config.trainer.epochs) == (600, 1000)
    # MoCo v1's table of epochs becomes the cosine from its first rate; SimCLR's own cosine stays.
    table = load_config(entries[0].config).optimizer
    assert table.schedule == "piecewise" and configs[entries[0].stem].optimizer.schedule == "cosine"
    assert configs[entries[0].stem].optimizer.learning_rate == table.values[0]
    assert configs[entries[1].stem].optimizer == load_config(entries[1].config).optimizer
    assert "600 s of pretraining per entry" in budget_label(settings)
    # Without it nothing changes, and a folder made with one is not continued with the other.
    plain = settings_from(parse_args(["--data", "synthetic"]), [])
    assert plain["epochs"] == 3 and plain["budget_seconds"] is None
    assert "time_budget_s" not in " ".join(entry_overrides(entries[0], plain))
    BenchmarkState.open(tmp_path, settings).save()
    with pytest.raises(SettingsMismatchError, match="budget_seconds: 600"):
        BenchmarkState.open(tmp_path, plain)
    with pytest.raises(ConfigError, match="--budget-seconds"):
        settings_from(parse_args(["--data", "synthetic", "--budget-seconds", "-5"]), [])
