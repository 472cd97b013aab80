"""Where the package finds configs and exports: by name, by path, from the environment, never by assuming
the checkout."""

from __future__ import annotations

import pytest

from sslzoo import settings
from sslzoo.config import ConfigError


def test_a_shipped_config_resolves_by_name_and_a_path_stays_a_path(tmp_path, monkeypatch):
    own = tmp_path / "configs"
    own.mkdir()
    (own / "mine.yaml").write_text("trainer: {epochs: 1}\n")
    monkeypatch.setenv(settings.CONFIGS_ENV, str(own))
    assert settings.resolve_config("mine") == own / "mine.yaml"
    assert settings.config_dirs()[0] == own
    assert settings.resolve_config("rotnet_convnet_small_cifar10").name == "rotnet_convnet_small_cifar10.yaml"
    assert settings.resolve_config(str(tmp_path / "absent.yaml")) == tmp_path / "absent.yaml"


def test_a_folder_as_config_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; name one YAML file in it"):
        settings.resolve_config(tmp_path)


def test_export_roots_put_the_environment_first(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.EXPORT_ROOTS_ENV, str(tmp_path))
    roots = settings.export_roots()
    assert roots[0] == tmp_path and len(roots) == len({r.resolve() for r in roots})


def test_children_train_through_the_package_not_the_checkout_script():
    command = settings.train_command()
    assert command[1:] == ["-m", "sslzoo.training"]
