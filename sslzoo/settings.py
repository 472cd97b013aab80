"""Where sslzoo finds what is not Python code: zoo configs, shipped exports, the training command.

The package never assumes it runs from its checkout. Each place is looked up in order:
- configs: `$SSLZOO_CONFIGS`, then the checkout's `zoo_configs/` when the package sits in one, then
  `./zoo_configs`;
- exports by name: every folder in `$SSLZOO_EXPORTED` (os.pathsep-separated), the checkout's `exported/`,
  then `./exported` (`sslzoo.zoo` adds the download cache and the index after these);
- training in a child process (benchmark, bench): `python -m sslzoo.training`, which needs no checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

from sslzoo.config import config_folder_message
from sslzoo.errors import ConfigError

CONFIGS_ENV = "SSLZOO_CONFIGS"
EXPORT_ROOTS_ENV = "SSLZOO_EXPORTED"
_PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def checkout_root() -> Optional[Path]:
    """The repository the package runs from, or None for an installed package."""
    return _PACKAGE_PARENT if (_PACKAGE_PARENT / "zoo_configs").is_dir() else None


def _unique(paths: List[Path]) -> List[Path]:
    unique: List[Path] = []
    for path in paths:
        if path.resolve() not in [p.resolve() for p in unique]:
            unique.append(path)
    return unique


def _search_path(env: str, folder: str) -> List[Path]:
    """The folders named in `$env` (os.pathsep-separated), then `folder` in the checkout and in `./`."""
    paths = [Path(p).expanduser() for p in os.environ.get(env, "").split(os.pathsep) if p]
    if checkout_root() is not None:
        paths.append(checkout_root() / folder)
    paths.append(Path.cwd() / folder)
    return _unique(paths)


def config_dirs() -> List[Path]:
    """Folders holding `<method>_<encoder>_<dataset>.yaml` zoo configs, in lookup order."""
    return _search_path(CONFIGS_ENV, "zoo_configs")


def config_dir() -> Path:
    """The first existing config folder (the one the benchmark discovers entries in)."""
    for folder in config_dirs():
        if folder.is_dir():
            return folder
    return config_dirs()[0]


def resolve_config(name_or_path: str | Path) -> Path:
    """A config path as given, or a shipped config's name (`rotnet_convnet_small_cifar10`) found in
    `config_dirs()`."""
    path = Path(name_or_path)
    if path.is_dir():
        raise ConfigError(config_folder_message(path))
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    for folder in config_dirs():
        candidate = folder / f"{path.name}.yaml"
        if candidate.is_file():
            return candidate
    return path  # config.load names the missing file


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
