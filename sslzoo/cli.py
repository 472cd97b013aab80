"""The `sslzoo` command (also `python -m sslzoo`): one entry point for every tool of the package.

    sslzoo list                                                  # shipped configs and encoders, where found
    sslzoo train --config rotnet_convnet_small_cifar10 --output runs/rotnet [--set key=value ...]
    sslzoo export --run runs/rotnet --output exported/rotnet
    sslzoo embed ... / sslzoo neighbors ...                      # sslzoo/embed/
    sslzoo tune | benchmark | bench | claims | report | prepare | track  # sslzoo <command> --help for each

Each command is the existing module's `main(argv)`, imported only when that command runs, so `sslzoo
--help` and `sslzoo list` never import TensorFlow. `train.py`, `export.py` and `tune.py` in a checkout are
the same commands.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

USER_ERROR = 2


@dataclass(frozen=True)
class Command:
    target: str  # "module:function" called with the remaining arguments
    help: str
    # Whether the command quiets TensorFlow's start-up itself (after parsing its arguments); the others
    # import TensorFlow with their module, so the dispatcher quiets it before importing them.
    quiets_itself: bool = False


COMMANDS: Dict[str, Command] = {
    "train": Command("sslzoo.training.cli:main", "pretrain an encoder from a config, evaluate it, write the run folder",
                     quiets_itself=True),
    "export": Command("sslzoo.export.cli:main", "export a run's encoder: SavedModel, TFLite, .keras, model card",
                      quiets_itself=True),
    "embed": Command("sslzoo.embed:embed_main", "embed images with a zoo encoder (sslzoo.embed)"),
    "neighbors": Command("sslzoo.embed:neighbors_main", "nearest neighbours among embedded images (sslzoo.embed)"),
    "tune": Command("sslzoo.tuning:main", "hyperparameter search with keras-tuner (pip install \"sslzoo[tune]\")",
                    quiets_itself=True),
    "select": Command("sslzoo.select.cli:main", "which method suits my images? successive halving within a budget "
                      "(pip install \"sslzoo[tune]\")", quiets_itself=True),
    "benchmark": Command("sslzoo.benchmark.__main__:main", "the zoo benchmark: every method under one budget"),
    "bench": Command("sslzoo.bench:main", "throughput benchmark: step, input pipeline, end to end"),
    "claims": Command("sslzoo.claims.__main__:main", "the papers' claims tested: each claim's arms over seeds, "
                      "and a verdict"),
    "report": Command("sslzoo.evaluation.report:main", "rebuild a finished run's report.md"),
    "list": Command("sslzoo.cli:list_main", "list the shipped configs and encoders and where they were found",
                    quiets_itself=True),
    "prepare": Command("sslzoo.prepare:main", "write TFRecord shards of an image folder"),
    "track": Command("sslzoo.video.track:main", "propagate a first-frame mask through a video's frames with an "
                     "exported embedding", quiets_itself=True),
}

EPILOG = """where things are found:
  configs (--config NAME)   $SSLZOO_CONFIGS, the checkout's zoo_configs/, the configs installed with the
                            package, ./zoo_configs; a path to a YAML file works everywhere
  encoders (load(NAME))     $SSLZOO_EXPORTED, the checkout's exported/, ./exported, the cache
                            $SSLZOO_HOME (default ~/.cache/sslzoo), then the index $SSLZOO_INDEX_URL
                            (a URL or path of index.json; none by default, so no network)
TensorFlow's C++ start-up lines follow TF_CPP_MIN_LOG_LEVEL (default 1 here: INFO hidden); 0 shows all.
Run `sslzoo COMMAND --help` for a command's options."""


def build_parser() -> argparse.ArgumentParser:
    from sslzoo import __version__

    parser = argparse.ArgumentParser(
        prog="sslzoo", description="Self-supervised visual representation learning: train, evaluate, export.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"sslzoo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, command in COMMANDS.items():
        # No options of its own: everything after the name goes to the command's own parser.
        commands.add_parser(name, help=command.help, add_help=False, allow_abbrev=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return USER_ERROR
    args, rest = parser.parse_known_args(argv)
    if args.command is None:  # only top-level options such as --version, or unknown ones
        parser.error(f"unrecognized arguments: {' '.join(rest)}" if rest else "name a COMMAND")
    return run(args.command, rest)


def run(name: str, argv: List[str]) -> int:
    """Runs command `name` with `argv`; returns its exit code."""
    command = COMMANDS[name]
    _check_module(name, command)  # a missing module is reported before TensorFlow is started for it
    if not command.quiets_itself:
        from sslzoo.startup import quiet_tensorflow

        quiet_tensorflow()
    function = _load(name, command)
    saved = sys.argv
    sys.argv = [f"sslzoo {name}", *argv]  # the command's usage line reads "sslzoo <name>"
    try:
        code = function(list(argv))
    finally:
        sys.argv = saved
    return code if isinstance(code, int) else 0


def _check_module(name: str, command: Command) -> None:
    from sslzoo.extras import importable

    module_name = command.target.partition(":")[0]
    if not importable(module_name):
        _fail(f"sslzoo {name}: this sslzoo has no {module_name} module ({command.target} runs the command); "
              f"update to a version of sslzoo that has {module_name.replace('.', '/')}.py (in a checkout: "
              "git pull, then pip install . again)")


def _load(name: str, command: Command):
    module_name, _, function_name = command.target.partition(":")
    module = importlib.import_module(module_name)  # a module it imports that is missing keeps its own error
    function = getattr(module, function_name, None)
    if function is None and callable(getattr(module, "main", None)):
        # A module with one main for several commands takes the command's name first.
        return lambda argv: module.main([name, *argv])
    if function is None:
        _fail(f"sslzoo {name}: {module_name} has no {function_name}() (nor main()) to run")
    return function


def _fail(message: str):
    print(message, file=sys.stderr)
    raise SystemExit(USER_ERROR)


# ------------------------------------------------------------------------------------------------- list


def list_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sslzoo list", description="The configs and encoders sslzoo finds by name, and where it found them.")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    from sslzoo.errors import SslzooError

    configs = list_configs()
    warnings: List[str] = []
    try:
        encoders = list_encoders(warnings)
    except SslzooError as error:  # a broken cache entry or index must not hide the rest
        encoders, warnings = [], warnings + [str(error)]
    if args.json:
        print(json.dumps({"configs": configs, "encoders": encoders, "warnings": warnings}, indent=2))
        return 0
    print(f"configs ({len(configs)}): sslzoo train --config NAME")
    _table(configs, ("name", "method", "encoder", "dataset", "found in"))
    print()
    print(f"encoders ({len(encoders)}): sslzoo.load(\"NAME\")")
    _table(encoders, ("name", "method", "encoder", "knn_top1", "linear_top1", "found in"))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def list_configs() -> List[dict]:
    """One row per config reachable by name: name, method, encoder, dataset, found in (its folder)."""
    import yaml

    from sslzoo import settings

    rows = []
    for name, path in sorted(settings.shipped_configs().items()):
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            values = {}
        values = values if isinstance(values, dict) else {}
        section = lambda key: values.get(key) if isinstance(values.get(key), dict) else {}  # noqa: E731
        data = section("data")
        dataset = data.get("name") if data.get("source") == "tfds" else data.get("source", "synthetic")
        rows.append({"name": name, "method": section("method").get("name"),
                     "encoder": section("encoder").get("name"), "dataset": dataset,
                     "found in": _where(path.parent, settings)})
    return rows


def list_encoders(warnings: List[str]) -> List[dict]:
    """One row per encoder loadable by name (local exports, the cache, the index when one is configured)."""
    from sslzoo import settings
    from sslzoo.errors import SslzooError
    from sslzoo.zoo import list_models
    from sslzoo.zoo import remote

    try:
        models = list_models(remote=remote.index_url() is not None)
    except SslzooError as error:  # an unreachable or broken index: still list what is here
        warnings.append(str(error))
        models = list_models(remote=False)
    rows = []
    for model in models:
        if model["path"] is None:
            where = f"index {remote.index_url()}"
        else:
            folder = Path(model["path"]).parent
            where = "cache " + str(folder) if _same(folder, remote.cache_root()) else _where(folder, settings)
        rows.append({"name": model["name"], "method": model.get("method"), "encoder": model.get("encoder"),
                     "knn_top1": model.get("knn_top1"), "linear_top1": model.get("linear_top1"), "found in": where})
    return rows


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _where(folder: Path, settings) -> str:
    """A folder, labelled by the search-path entry it is."""
    root = settings.checkout_root()
    if root is not None and folder.parent == root:
        return f"checkout {folder}"
    if _same(folder, settings.packaged_config_dir() or Path("/nonexistent")):
        return f"installed {folder}"
    return str(folder)


def _table(rows: List[dict], columns: Sequence[str]) -> None:
    if not rows:
        print("  (none)")
        return
    text = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in text)) for i, c in enumerate(columns)]
    print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for cells in text:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
