"""Where the package finds configs and exports: by name, by path, from the environment, never by assuming
the checkout."""

from __future__ import annotations

from pathlib import Path

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


def test_a_shipped_config_resolves_by_bare_name_with_or_without_yaml():
    by_name = settings.resolve_config("rotnet_convnet_small_cifar10")
    assert by_name == settings.resolve_config("rotnet_convnet_small_cifar10.yaml")
    assert by_name.parent.name == "zoo_configs" and by_name.is_file()


def test_an_unknown_config_name_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        settings.resolve_config("rotnet_convnet_smal_cifar10")
    message = str(error.value)
    assert "rotnet_convnet_small_cifar10" in message and "simclr_convnet_small_cifar10" in message
    assert settings.CONFIGS_ENV in message and "path of a YAML file" in message


def test_installed_configs_come_after_the_checkout_and_before_the_working_folder(tmp_path, monkeypatch):
    """An installed wheel ships zoo_configs/ inside the package; outside a checkout `zoo_configs/<name>.yaml`
    (the README's form) still finds the shipped config."""
    installed = tmp_path / "site-packages" / "sslzoo" / "zoo_configs"
    installed.mkdir(parents=True)
    (installed / "only_installed.yaml").write_text("trainer: {epochs: 1}\n")
    monkeypatch.setattr(settings, "packaged_config_dir", lambda: installed)
    monkeypatch.setattr(settings, "checkout_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    assert settings.config_dirs() == [installed, tmp_path / "zoo_configs"]
    assert settings.resolve_config("only_installed") == installed / "only_installed.yaml"
    assert settings.resolve_config("zoo_configs/only_installed.yaml") == installed / "only_installed.yaml"
    assert settings.resolve_config("zoo_configs/absent.yaml") == Path("zoo_configs/absent.yaml")
    with pytest.raises(ConfigError, match="only_installed"):
        settings.resolve_config("absent")
