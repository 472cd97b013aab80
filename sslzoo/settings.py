"""Where sslzoo finds what is not Python code: zoo configs, shipped exports, the training command.

The package never assumes it runs from its checkout. Each place is looked up in order:
- configs: `$SSLZOO_CONFIGS`, then the checkout's `zoo_configs/` when the package sits in one, then the
  configs installed with the package (`sslzoo/zoo_configs/` inside an installed wheel: the build maps the
  repository's top-level `zoo_configs/` there, see pyproject.toml), then `./zoo_configs`;
- exports by name: every folder in `$SSLZOO_EXPORTED` (os.pathsep-separated), the checkout's `exported/`,
  then `./exported` (`sslzoo.zoo` adds the download cache and the index after these);
- training in a child process (benchmark, bench): `python -m sslzoo.training`, which needs no checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

from sslzoo.config import config_folder_message
from sslzoo.errors import ConfigError

CONFIGS_ENV = "SSLZOO_CONFIGS"
EXPORT_ROOTS_ENV = "SSLZOO_EXPORTED"
CONFIG_FOLDER = "zoo_configs"
CONFIG_SUFFIXES = (".yaml", ".yml")
_PACKAGE = Path(__file__).resolve().parent
_PACKAGE_PARENT = _PACKAGE.parent


def checkout_root() -> Optional[Path]:
    """The repository the package runs from, or None for an installed package."""
    return _PACKAGE_PARENT if (_PACKAGE_PARENT / CONFIG_FOLDER).is_dir() else None


def packaged_config_dir() -> Optional[Path]:
    """The configs installed with the package (a wheel's `sslzoo/zoo_configs/`), or None in a checkout."""
    folder = _PACKAGE / CONFIG_FOLDER
    return folder if folder.is_dir() else None


def _unique(paths: List[Path]) -> List[Path]:
    unique: List[Path] = []
    for path in paths:
        if path.resolve() not in [p.resolve() for p in unique]:
            unique.append(path)
    return unique


def _search_path(env: str, folder: str, installed: Optional[Path] = None) -> List[Path]:
    """The folders named in `$env` (os.pathsep-separated), then `folder` in the checkout, then
    `installed` (what the wheel ships), then `folder` in `./`."""
    paths = [Path(p).expanduser() for p in os.environ.get(env, "").split(os.pathsep) if p]
    if checkout_root() is not None:
        paths.append(checkout_root() / folder)
    if installed is not None:
        paths.append(installed)
    paths.append(Path.cwd() / folder)
    return _unique(paths)


def config_dirs() -> List[Path]:
    """Folders holding `<method>_<encoder>_<dataset>.yaml` zoo configs, in lookup order."""
    return _search_path(CONFIGS_ENV, CONFIG_FOLDER, packaged_config_dir())


def shipped_configs() -> Dict[str, Path]:
    """name -> path of every config reachable by name; an earlier folder shadows a later one."""
    found: Dict[str, Path] = {}
    for folder in config_dirs():
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.suffix in CONFIG_SUFFIXES and path.is_file():
                    found.setdefault(path.stem, path)
    return found


def config_dir() -> Path:
    """The first existing config folder (the one the benchmark discovers entries in)."""
    for folder in config_dirs():
        if folder.is_dir():
            return folder
    return config_dirs()[0]


def resolve_config(name_or_path: str | Path) -> Path:
    """A config path as given, or a shipped config's name found in `config_dirs()`.

    - an existing file is used as is;
    - a bare name, with or without `.yaml` (`rotnet_convnet_small_cifar10`,
      `rotnet_convnet_small_cifar10.yaml`), is looked up in `config_dirs()`; an unknown one raises
      `ConfigError` listing the known names;
    - `zoo_configs/<name>.yaml` that does not exist here (an installed package run outside the checkout)
      is the shipped config of that name, so the README's commands work from any folder;
    - any other path is returned as is, and `config.load` names the missing file.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise ConfigError(config_folder_message(path))
    if path.is_file():
        return path
    bare = len(path.parts) == 1
    if not (bare or path.parent.name == CONFIG_FOLDER):
        return path
    stem = path.stem if path.suffix in CONFIG_SUFFIXES else path.name
    shipped = shipped_configs()
    if stem in shipped:
        return shipped[stem]
    if not bare:
        return path  # config.load: "config file 'zoo_configs/x.yaml' does not exist"
    looked = ", ".join(str(folder) for folder in config_dirs() if folder.is_dir()) or "(no config folder found)"
    raise ConfigError(
        f"--config '{name_or_path}' is neither a file nor a shipped config's name; known names: "
        f"{', '.join(shipped) or '(none)'} (looked in: {looked}; set {CONFIGS_ENV} to add a folder), or "
        "pass the path of a YAML file"
    )


def export_roots() -> List[Path]:
    """The folders searched for exports by name, in order."""
    return _search_path(EXPORT_ROOTS_ENV, "exported")


def train_command() -> List[str]:
    """The command that trains a config in a child process (add `--config ... --output ...`)."""
    return [sys.executable, "-m", "sslzoo.training"]


def child_cwd() -> Path:
    """Working folder for child processes: the checkout when there is one (relative data paths in its
    configs resolve there), else the current folder."""
    return checkout_root() or Path.cwd()
