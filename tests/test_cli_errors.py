"""Every user error of train.py and export.py is one line on stderr, exit code 2, and leaves no trace.

The commands run in-process (`main([...])`): what matters is the exit code, stderr and the files left
behind, not the process boundary, and an in-process call costs no TensorFlow start-up.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import export as export_cli
from sslzoo.cli_errors import report, user_message
from sslzoo.training import cli
from sslzoo.training import trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "zoo_configs" / "rotnet_convnet_small_synthetic.yaml")
TINY = ["data.synthetic_examples=200", "encoder.options.width=0.25", "method.options.head_width=16",
        "trainer.batch_size=16", "trainer.epochs=1", "trainer.steps_per_epoch=1", "eval.linear_epochs=1",
        "eval.knn_k=5", "eval.random_init=false"]

FILES = {
    "list.yaml": "- data\n- trainer\n",
    "scalar.yaml": "just words\n",
    "broken.yaml": "trainer: {epochs: 1\n",
    "tabs.yaml": "trainer:\n\tepochs: 1\n",
    "tag.yaml": "trainer: !!python/object/apply:os.system ['echo owned']\n",
    "section.yaml": "trainer: 3\n",
    "bytes.yaml": b"\xff\xfe\x00binary",
    "empty_folder/": None,
}

# (command line after `--config`, fragment the one line must hold). `{d}` is the test's folder.
CASES = [
    ([CONFIG, "--set", "trainer.epoch=1"], "unknown config key 'trainer.epoch'"),
    ([CONFIG, "--set", "method.options.head_widht=8"], "head_widht"),
    ([CONFIG, "--set", "encoder.options.depth=3"], "encoder.options depth not accepted"),
    ([CONFIG, "--set", "encoder.name=resnet19"], "encoder.name 'resnet19' is not registered"),
    ([CONFIG, "--set", "trainer.seed=-1"], "trainer.seed must be in [0, 2**32 - 1]"),
    ([CONFIG, "--set", "trainer.seed=4294967296"], "trainer.seed must be in [0, 2**32 - 1]"),
    ([CONFIG, "--set", "trainer.steps_per_epoch=-5"], "trainer.steps_per_epoch must be >= 0"),
    ([CONFIG, "--set", "eval.linear_batch_size=0"], "eval.linear_batch_size must be >= 1"),
    ([CONFIG, "--set", "data.split_seed=-1"], "data.split_seed must be >= 0"),
    ([CONFIG, "--set", "trainer.epochs=[1"], "--set 'trainer.epochs=[1': the value is not plain YAML"),
    ([CONFIG, "--set", "trainer.epochs=!!python/object/apply:os.system [echo]"], "python/object/apply"),
    ([CONFIG, "--set", "trainer.epochs"], "expected key=value"),
    ([CONFIG, "--set", "trainer=3"], "trainer: expected a mapping"),
    (["{d}/list.yaml"], "holds a YAML list, not a mapping of sections"),
    (["{d}/scalar.yaml"], "holds a YAML str, not a mapping"),
    (["{d}/broken.yaml"], "is not valid YAML (line 2, column 1"),
    (["{d}/tabs.yaml"], "is not valid YAML (line 2"),
    (["{d}/tag.yaml"], "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'); "
                       "configs hold plain mappings, lists and scalars only: remove the !! tag"),
    (["{d}/section.yaml"], "trainer: expected a mapping, got 3"),
    (["{d}/bytes.yaml"], "is not UTF-8 text"),
    (["{d}/absent.yaml"], "does not exist"),
    ([str(ROOT / "zoo_configs")], "is a folder; name one YAML file in it, e.g. "),
    (["{d}/empty_folder"], "is a folder; name one YAML file in it (it holds none"),
    ([CONFIG, "--set", "data.source=folder", "data.path={d}/no_images"], "data.path '{d}/no_images' does not exist"),
    ([CONFIG, "--set", "eval.data_path={d}/no_labels"], "eval.data_path '{d}/no_labels' does not exist"),
    ([CONFIG, "--set", "data.source=list", "data.path=missing.txt"], "does not exist (relative to"),
    ([CONFIG, "--set", "data.source=folder"], "data.path must name the image folder"),
    ([CONFIG, "--eval-only"], "has no config.yaml or encoder.keras"),
    # Refused after the data is read (the lock has made the folder by then): it is removed again.
    ([CONFIG, "--set", *TINY, "trainer.batch_size=512"], "trainer.batch_size=512 is larger than the 180"),
    ([CONFIG, "--outptu", "x"], "unrecognized arguments: --outptu"),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    for name, content in FILES.items():
        if content is None:
            (folder / name).mkdir()
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    return folder


def run_main(main, argv):
    """Exit code of `main(argv)`, argparse's exits included."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def assert_one_line(stderr: str, fragment: str = "") -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and fragment in lines[0], stderr
    return lines[0]


@pytest.mark.parametrize("args, fragment", CASES, ids=[" ".join(c[0][1:]) or Path(c[0][0]).name for c in CASES])
def test_bad_command_is_one_line_exit_2_and_leaves_no_trace(args, fragment, bad_files, tmp_path, capsys):
    output = tmp_path / "runs" / "run"
    argv = ["--config", *[a.replace("{d}", str(bad_files)) for a in args], "--output", str(output)]
    assert run_main(cli.main, argv) == 2
    assert_one_line(capsys.readouterr().err, fragment.replace("{d}", str(bad_files)))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("output", ["file", "file/run"])
def test_output_on_a_file_is_refused_before_any_work(output, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("keep me")
    monkeypatch.setattr("sslzoo.data.kinds.load_splits", _no_data_expected)
    assert run_main(cli.main, ["--config", CONFIG, "--set", *TINY, "--output", str(tmp_path / output)]) == 2
    assert_one_line(capsys.readouterr().err, "pass --output a folder")
    assert (tmp_path / "file").read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["file"]


def _no_data_expected(*args, **kwargs):
    raise AssertionError("data was read before the command was refused")


def test_the_corrected_command_runs_after_a_refused_one(bad_files, tmp_path, capsys, monkeypatch):
    """The complaint that started this: a typo left config.yaml behind and the fix was then refused."""
    output = tmp_path / "run"
    assert run_main(cli.main, ["--config", CONFIG, "--set", *TINY, "method.options.head_widht=8",
                               "--output", str(output)]) == 2
    assert not output.exists()
    assert run_main(cli.main, ["--config", CONFIG, "--quiet", "--set", *TINY, "--output", str(output)]) == 0
    assert json.loads((output / "metrics.json").read_text())["method"] == "rotnet"
    assert not (output / ".lock").exists()


def test_full_disk_during_training_is_one_line_and_leaves_no_trace(tmp_path, capsys, monkeypatch):
    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(trainer, "atomic_write_text", full)
    output = tmp_path / "run"
    assert run_main(cli.main, ["--config", CONFIG, "--quiet", "--set", *TINY, "--output", str(output)]) == 2
    line = assert_one_line(capsys.readouterr().err, "No space left on device")
    assert "config.yaml" in line and "free space on that disk" in line
    assert not output.exists()


def test_an_output_it_may_not_write_is_one_line(tmp_path, capsys, monkeypatch):
    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(Path, "mkdir", refused)  # tests run as root, for whom chmod refuses nothing
    output = tmp_path / "run"
    assert run_main(cli.main, ["--config", CONFIG, "--set", *TINY, "--output", str(output)]) == 2
    assert_one_line(capsys.readouterr().err, f"error: Permission denied '{output}'; fix its permissions")
    assert not output.exists()


def test_debug_adds_the_traceback_above_the_same_line(tmp_path, capsys):
    argv = ["--config", CONFIG, "--set", "trainer.seed=-1", "--output", str(tmp_path / "run"), "--debug"]
    assert run_main(cli.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "ConfigError" in err
    assert err.strip().splitlines()[-1] == "error: trainer.seed must be in [0, 2**32 - 1]"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(KeyError):
        try:
            {}["missing"]
        except KeyError as error:
            report(error)


def test_tensorflow_file_errors_are_user_errors():
    import tensorflow as tf

    full = tf.errors.ResourceExhaustedError(None, None, "runs/x/checkpoints/ckpt-1.data; No space left on device")
    assert "No space left on device" in user_message(full) and "free space" in user_message(full)
    assert user_message(tf.errors.InvalidArgumentError(None, None, "shapes differ")) is None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder as train.py leaves it, without training: an untrained tiny encoder is enough to export."""
    from tests.harness import tiny_config
    from sslzoo.training.build import build_models

    run = tmp_path_factory.mktemp("runs") / "tiny"
    run.mkdir()
    config = tiny_config("rotnet", {"head_width": 16})
    encoder, _ = build_models(config, num_classes=0)
    encoder.save(run / "encoder.keras")
    (run / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    (run / "metrics.json").write_text(json.dumps({"method": "rotnet", "encoder": "convnet_small",
                                                  "dataset": "synthetic"}))
    return run


def test_full_disk_during_export_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    real = Path.write_bytes

    def write_bytes(path, data):
        if path.suffix == ".tflite":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    out = tmp_path / "exported" / "tiny"
    assert run_main(export_cli.main, ["--run", str(tiny_run), "--output", str(out), "--no-evaluate"]) == 2
    line = assert_one_line(capsys.readouterr().err, "No space left on device")
    assert line.startswith("export error: ") and "encoder.tflite" in line
    assert os.listdir(out.parent) == []  # the staging folder went with the failure


def test_export_usage_errors_are_one_line(tiny_run, tmp_path, capsys):
    assert run_main(export_cli.main, ["--run", str(tiny_run), "--output", str(tmp_path / "x"), "--head", "linear"]) == 2
    assert_one_line(capsys.readouterr().err, "lacks linear_head.keras")
    assert run_main(export_cli.main, ["--run", str(tiny_run)]) == 2
    assert_one_line(capsys.readouterr().err, "the following arguments are required: --output")
    assert not (tmp_path / "x").exists()


# Config files and --set values as a hurried user or a broken editor makes them. Every one is refused
# (the --output is a file, the last check before any work), as one line, without touching anything.
_KEYS = st.sampled_from(["data", "encoder", "method", "optimizer", "trainer", "eval", "name", "options",
                         "source", "path", "epochs", "seed", "batch_size", "image_size", "width", "head"])
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | _TEXT
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_KEYS | _TEXT, inner, max_size=3), max_leaves=8)
_CONFIGS = st.dictionaries(_KEYS, _VALUES, max_size=4).map(yaml.safe_dump) | _TEXT
_DOTTED = st.lists(_KEYS, min_size=1, max_size=3).map(".".join)
_SETS = st.lists(st.builds("{}={}".format, _DOTTED, _TEXT) | _TEXT, max_size=3)


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(config=_CONFIGS, sets=_SETS)
def test_any_config_or_override_is_refused_in_one_line(config, sets):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "config.yaml").write_text(config, encoding="utf-8")
        (folder / "output").write_text("a file")
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = run_main(cli.main, ["--config", str(folder / "config.yaml"), *[f"--set={s}" for s in sets],
                                       "--output", str(folder / "output")])
        assert code == 2
        assert_one_line(stderr.getvalue())
        assert sorted(os.listdir(folder)) == ["config.yaml", "output"]
        assert (folder / "output").read_text() == "a file"
