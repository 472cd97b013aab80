"""sslzoo as a user installs it: the wheel built from the checkout's files, installed into a fresh venv, run
from a folder outside the checkout.

The venv is created with --system-site-packages (TensorFlow and the rest come from the suite's
environment) and the wheel is installed with --no-deps; a .pth file in the venv makes the optional pieces
(tf2onnx, onnxruntime, tensorflow-serving-api, keras-tuner) unimportable there, so the core path is shown
to need none of them and each refused extra to name its install command. Everything runs with the
environment's TF_CPP_MIN_LOG_LEVEL removed: the commands' own quiet start is what is tested.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the build reads: pyproject's readme and license-files, the package and the configs it maps in.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "sslzoo", "zoo_configs")
BLOCKED = ("tf2onnx", "onnxruntime", "tensorflow_serving", "keras_tuner")
COMMANDS = ("train", "export", "embed", "neighbors", "select", "tune", "benchmark", "bench", "report", "list",
            "prepare", "track")
TINY = ["data.synthetic_examples=200", "encoder.options.width=0.25", "method.options.head_width=16",
        "trainer.batch_size=16", "trainer.epochs=1", "trainer.steps_per_epoch=1", "eval.linear_epochs=1",
        "eval.knn_k=5", "eval.random_init=false"]
NOISE = ("absl::InitializeLog", "cuInit", "cudart_stub", "cpu_feature_guard", "port.cc")


def _setuptools_can_build_offline() -> bool:
    """Whether this environment's setuptools meets pyproject's build requirement (then no index is needed)."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 77


def _package_folders() -> set:
    return {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sslzoo").rglob("__init__.py")}


def test_pyproject_lists_every_package_folder_and_maps_the_configs_in():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(tool["packages"]) == _package_folders() | {"sslzoo.zoo_configs"}
    assert tool["package-dir"] == {"sslzoo.zoo_configs": "zoo_configs"}
    assert not any(name.startswith("exported") for name in tool["packages"])


# ------------------------------------------------------------------ the parts, in process (no build needed)


def test_arguments_reach_the_command_unchanged_and_in_order(monkeypatch):
    from sslzoo import cli

    seen = {}
    stand_in = types.ModuleType("sslzoo_stand_in")
    stand_in.main = lambda argv: seen.update(argv=argv, prog=sys.argv[0]) or 7
    monkeypatch.setitem(sys.modules, "sslzoo_stand_in", stand_in)
    monkeypatch.setitem(cli.COMMANDS, "report", cli.Command("sslzoo_stand_in:main", "stand-in", quiets_itself=True))
    argv = ["--config", "x", "--set", "a=1", "b=[0,1]", "-h", "pos", "--output", "-1"]
    assert cli.main(["report", *argv]) == 7
    assert seen == {"argv": argv, "prog": "sslzoo report"}


def test_a_command_whose_module_is_missing_says_so(monkeypatch, capsys):
    from sslzoo import cli

    monkeypatch.setitem(cli.COMMANDS, "embed", cli.Command("sslzoo.no_such_module:embed_main", "x", quiets_itself=True))
    with pytest.raises(SystemExit) as exit:
        cli.main(["embed", "photos/"])
    assert exit.value.code == 2
    assert "no sslzoo.no_such_module module" in capsys.readouterr().err


def test_top_level_help_lists_every_command(capsys):
    from sslzoo import cli

    with pytest.raises(SystemExit) as exit:
        cli.main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert all(f"    {name}" in out for name in COMMANDS) and "SSLZOO_HOME" in out


def test_a_missing_extra_names_its_install_command(monkeypatch, tmp_path):
    from sslzoo import extras
    from sslzoo.export.from_run import export_run

    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    assert extras.missing("onnx") == ["tf2onnx"]
    with pytest.raises(extras.MissingExtraError, match=r'--format onnx needs tf2onnx.*pip install "sslzoo\[onnx\]"'):
        export_run(tmp_path / "no_run", tmp_path / "out", onnx=True)  # refused before the run is read
    assert isinstance(extras.MissingExtraError("x"), ImportError)


def test_start_up_noise_is_dropped_by_level_and_nothing_else():
    from sslzoo.startup import start_up_noise

    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1796032206.822019   25191 port.cc:153] oneDNN custom operations are on.\n",
        "I0000 00:00:1796032206.953959   25191 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n",
        "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow\n",
        "W0000 00:00:1796032206.9   25191 some.cc:1] a warning\n",
        "E0000 00:00:1796032213.198157   25191 cuda_platform.cc:52] failed call to cuInit: INTERNAL: (303)\n",
        "E0000 00:00:1796032213.2   25191 other.cc:9] a real error\n",
        "/x/y.py:3: UserWarning: something Python says\n",
        "To enable the following instructions: not after a dropped line, so kept\n",
    ]
    dropped = lambda level, driver: [i for i, d in enumerate(start_up_noise(lines, level, driver)) if d]  # noqa: E731
    assert dropped(1, driver=False) == [0, 1, 2, 3, 5]
    assert dropped(1, driver=True) == [0, 1, 2, 3]  # with an NVIDIA driver a failing cuInit is a real problem
    assert dropped(2, driver=True) == [0, 1, 2, 3, 4]
    assert dropped(3, driver=True) == [0, 1, 2, 3, 4, 5, 6]
    assert dropped(0, driver=False) == []


def test_paths_in_artifacts_are_relative_to_the_project():
    from sslzoo.portable import portable

    root = "/home/someone/sslzoo"
    card = {"config": {"data": {"path": "/home/someone/data/cifar10", "name": "cifar10"}},
            "dataset": "folder:/home/someone/data/cifar10",
            "reproduce": "python train.py --config /home/someone/sslzoo/runs/a/config.yaml --output /tmp/x/run",
            "sets": ["data.path=/home/someone/data/x", "https://host/a/b", "file:///srv/index.json", "rel/a"],
            "n": 3}
    assert portable(card, root) == {
        "config": {"data": {"path": "../data/cifar10", "name": "cifar10"}},
        "dataset": "folder:../data/cifar10",
        "reproduce": "python train.py --config runs/a/config.yaml --output <external>/run",
        "sets": ["data.path=../data/x", "https://host/a/b", "file:///srv/index.json", "rel/a"],
        "n": 3}


# ------------------------------------------------------------------ the wheel, installed into a venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, bin folder, work folder outside the checkout, wheel, environment for its commands)."""
    base = tmp_path_factory.mktemp("package")
    source = base / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = base / "dist"
    offline = ["--no-build-isolation"] if _setuptools_can_build_offline() else []
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(dist),
                            *offline], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("sslzoo-*.whl")

    venv = base / "venv"
    # No pip of its own: the suite's pip (a system site package) installs into the venv it runs in.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "_sslzoo_test_block_extras.pth").write_text(
        f"import sys; sys.modules.update(dict.fromkeys({list(BLOCKED)!r}))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "SSLZOO_CONFIGS", "SSLZOO_EXPORTED",
                        "SSLZOO_INDEX_URL", "PYTHONSTARTUP")}
    env.update(SSLZOO_HOME=str(base / "cache"), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall",
                              "-q", str(wheel)], capture_output=True, text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    work = base / "work"
    work.mkdir()
    return python, venv / "bin", work, wheel, env


def run(args, installed, **extra_env):
    _, _, work, _, env = installed
    return subprocess.run([str(a) for a in args], cwd=work, env={**env, **extra_env}, capture_output=True,
                          text=True, timeout=600)


def test_wheel_holds_the_package_configs_and_license_but_no_encoders(installed):
    import zipfile

    names = zipfile.ZipFile(installed[3]).namelist()
    configs = {Path(n).stem for n in names if n.startswith("sslzoo/zoo_configs/") and n.endswith(".yaml")}
    assert configs == {p.stem for p in (ROOT / "zoo_configs").glob("*.yaml")}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any("exported" in n or n.startswith("tests/") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(installed[3]).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    core = [line for line in text.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any(name in line for line in core for name in ("tf2onnx", "onnxruntime", "serving", "keras-tuner"))


def test_the_command_runs_from_the_installed_package_outside_the_checkout(installed):
    python, bin_dir, work, _, _ = installed
    where = run([python, "-c", "import sslzoo, sys; print(sslzoo.__file__); "
                 "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"], installed)
    assert where.returncode == 0, where.stderr
    location, heavy = where.stdout.splitlines()
    assert Path(location).is_relative_to(bin_dir.parent) and heavy == "[]"  # the wheel's copy, TensorFlow-free

    for command in ([bin_dir / "sslzoo", "--help"], [python, "-m", "sslzoo", "--help"]):
        result = run(command, installed)
        assert result.returncode == 0, result.stderr
        assert all(name in result.stdout for name in COMMANDS), result.stdout

    listed = run([bin_dir / "sslzoo", "list", "--json"], installed)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert {c["name"] for c in report["configs"]} == {p.stem for p in (ROOT / "zoo_configs").glob("*.yaml")}
    assert all(c["found in"].startswith("installed ") for c in report["configs"])
    assert report["encoders"] == []  # the wheel ships no encoders, and nothing is cached or indexed here

    unknown = run([bin_dir / "sslzoo", "train", "--config", "no_such_config"], installed)
    assert unknown.returncode == 2 and "rotnet_convnet_small_cifar10" in unknown.stderr, unknown.stderr


def test_missing_extras_are_refused_with_their_install_command(installed):
    bin_dir = installed[1]
    onnx = run([bin_dir / "sslzoo", "export", "--run", "runs/none", "--output", "out", "--format", "onnx"], installed)
    assert onnx.returncode == 2 and 'pip install "sslzoo[onnx]"' in onnx.stderr, onnx.stderr
    tune = run([bin_dir / "sslzoo", "tune", "probe", "--run", "runs/none"], installed)
    assert tune.returncode == 2 and 'pip install "sslzoo[tune]"' in tune.stderr, tune.stderr
    select = run([bin_dir / "sslzoo", "select", "--data", "synthetic", "--eval-data", "labelled",
                  "--budget-minutes", "1", "--output", "out"], installed)
    assert select.returncode == 2 and 'pip install "sslzoo[tune]"' in select.stderr, select.stderr
    assert not (installed[2] / "out").exists()


def test_train_export_and_load_from_the_installed_package(installed):
    """A tiny run trained by name, exported and loaded by path and by name, all outside the checkout, with
    none of the optional extras importable."""
    python, bin_dir, work, _, _ = installed
    train = run([bin_dir / "sslzoo", "train", "--config", "rotnet_convnet_small_synthetic", "--output", "runs/tiny",
                 "--quiet", "--set", *TINY], installed)
    assert train.returncode == 0, train.stderr
    assert train.stdout.startswith("sslzoo: training rotnet (convnet_small) on synthetic data -> runs/tiny\n")
    if not os.path.exists("/proc/driver/nvidia/version"):  # on a machine with a GPU its messages may appear
        assert not [line for line in train.stderr.splitlines() if any(n in line for n in NOISE)], train.stderr

    # `sslzoo export` and the loads in one process (the console script is `sslzoo.cli:main`, run above): one
    # TensorFlow start-up fewer. Absolute paths on purpose: the card must record them relative to ./. The
    # loads resolve the export by path and, through SSLZOO_EXPORTED, by name.
    script = f"""if True:
        import numpy as np
        from sslzoo.cli import main
        assert main(["export", "--run", "{work}/runs/tiny", "--output", "{work}/exports/tiny", "--no-evaluate"]) == 0
        import sslzoo
        x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
        by_path = sslzoo.load("exports/tiny").predict(x, verbose=0)
        by_name = sslzoo.load("tiny").predict(x, verbose=0)
        np.testing.assert_allclose(by_path, by_name)
        print("features", by_path.shape, sslzoo.__file__)
    """
    export = run([python, "-c", script], installed, SSLZOO_EXPORTED=str(work / "exports"))
    assert export.returncode == 0, export.stderr
    assert "no TF Serving warmup file written" in export.stderr and "sslzoo[serving]" in export.stderr
    features = export.stdout.strip().splitlines()[-1].split()
    assert features[1:3] == ["(2,", "64)"] and Path(features[3]).is_relative_to(bin_dir.parent), export.stdout
    card_text = (work / "exports" / "tiny" / "model_card.json").read_text()
    assert str(work) not in card_text and str(work.resolve()) not in card_text  # no absolute path of this machine
    assert "runs/tiny/config.yaml" in json.loads(card_text)["reproduce"]
