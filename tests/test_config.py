import re
from pathlib import Path

import pytest

from sslzoo import config as config_lib
from sslzoo.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ZOO_CONFIGS = sorted((ROOT / "zoo_configs").glob("*.yaml"))
FOLDER_OVERRIDES = ["data.source=folder", "data.path=../shared/data/cifar10/train", "trainer.epochs=1"]


def test_defaults_validate():
    config = config_lib.from_dict({})
    assert config.method.name == "rotnet" and config.data.source == "synthetic"


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as error:
        config_lib.from_dict({"trainer": {"epoch": 3}})
    message = str(error.value)
    assert "trainer.epoch" in message and "epochs" in message and "batch_size" in message


def test_unknown_section_is_refused():
    with pytest.raises(ConfigError, match="unknown config key 'trainr'"):
        config_lib.from_dict({"trainr": {}})


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("trainer.epochs=two", "trainer.epochs: expected int"),
        ("trainer.epochs=1.5", "trainer.epochs: expected int"),
        ("method.online_probe=3", "expected true/false"),
        ("data.source=ftp", "data.source: 'ftp' is not one of"),
        ("optimizer.values=3", "expected a list"),
        ("trainer.epochs", "expected key=value"),
        ("trainer.epochs=0", "trainer.epochs must be >= 1"),
        ("optimizer.boundaries=[60, 30]", "increasing order"),
        ("optimizer.warmup_epochs=-1", "warmup_epochs must be >= 0"),
        ("optimizer.beta_2=1.0", r"beta_2 must be in \[0, 1\)"),
        ("eval.knn_temperature=0", "knn_temperature must be > 0"),
    ],
)
def test_bad_overrides_fail_before_work(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_lib.from_dict({}, [override])


def test_overrides_are_typed_yaml_scalars():
    config = config_lib.from_dict(
        {}, ["optimizer.learning_rate=1e-3", "trainer.epochs=3", "optimizer.boundaries=[1, 2]",
             "method.options.rotations=[0,2]", "data.path=a=b"]
    )
    assert config.optimizer.learning_rate == pytest.approx(1e-3)
    assert config.trainer.epochs == 3
    assert config.optimizer.boundaries == [1.0, 2.0]
    assert config.method.options == {"rotations": [0, 2]}
    assert config.data.path == "a=b"


def test_int_is_accepted_for_float():
    assert config_lib.from_dict({"optimizer": {"learning_rate": 1}}).optimizer.learning_rate == 1.0


def test_folder_source_needs_a_path():
    with pytest.raises(ConfigError, match="data.path"):
        config_lib.from_dict({}, ["data.source=folder"])


def test_resolved_config_round_trips(tmp_path):
    config = config_lib.from_dict({}, ["trainer.epochs=2", "method.options.head=mlp"])
    config_lib.dump(config, tmp_path / "config.yaml")
    assert config_lib.load(tmp_path / "config.yaml") == config


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config_lib.load(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("trainer: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception) as error:
        config_lib.load(path)
    assert "python/object" in str(error.value) or "constructor" in str(error.value)


@pytest.mark.parametrize("path", ZOO_CONFIGS, ids=lambda p: p.name)
def test_zoo_configs_load_with_the_folder_overrides(path):
    header = path.read_text().splitlines()[0]
    assert header.startswith("#"), f"{path.name} must begin with a comment giving its command and result"
    assert "python train.py" in path.read_text().split("\n\n")[0] or "Run:" in path.read_text()
    config = config_lib.load(path, FOLDER_OVERRIDES)
    assert config.data.source == "folder" and config.trainer.epochs == 1
    # Names follow <method>[_<version>]_<encoder>_<dataset>.yaml (e.g. moco_v2_convnet_small_cifar10).
    method, encoder = config.method.name, config.encoder.name
    assert re.fullmatch(rf"{method}(_v\d)?_{encoder}_\w+", path.stem), path.stem


def test_zoo_config_methods_and_encoders_exist():
    import sslzoo.backbones  # noqa: F401  (registers encoders)
    import sslzoo.methods  # noqa: F401
    from sslzoo.registry import ENCODERS, METHODS

    for path in ZOO_CONFIGS:
        config = config_lib.load(path)
        assert config.method.name in METHODS and config.encoder.name in ENCODERS
