"""The package's layers, enforced: parts at the bottom, methods above them, the trainer above the methods.

Every `import` in sslzoo/ (module level or inside a function: a lazy import is still a dependency) is
read with `ast` and checked against the rooms below. A new module joins the room of its folder; a
top-level module not listed fails the test, so every new file is placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sslzoo"

# module prefix -> room. The longest matching prefix wins (sslzoo.video.plugin vs sslzoo.video).
ROOMS = {
    "sslzoo": "api",
    "sslzoo.errors": "foundation", "sslzoo.files": "foundation", "sslzoo.config": "foundation",
    "sslzoo.registry": "foundation", "sslzoo.settings": "foundation", "sslzoo.cli_errors": "foundation",
    "sslzoo.extras": "foundation", "sslzoo.startup": "foundation", "sslzoo.portable": "foundation",
    "sslzoo.augment": "parts", "sslzoo.backbones": "parts", "sslzoo.heads": "parts", "sslzoo.losses": "parts",
    "sslzoo.layers": "parts", "sslzoo.color": "parts", "sslzoo.optimizers": "parts", "sslzoo.pictures": "parts",
    "sslzoo.video": "parts",  # kmeans, propagation, clip generator and sources: parts video methods use
    "sslzoo.data": "data",
    "sslzoo.evaluation": "evaluation",
    "sslzoo.methods": "methods",
    "sslzoo.video.plugin": "plugins",  # the clip data kind and the tracking evaluator
    "sslzoo.video.track": "tools",  # `sslzoo track`: loads an export and tracks with it
    "sslzoo.training": "training",
    "sslzoo.export": "export",
    "sslzoo.zoo": "load",
    "sslzoo.bench": "tools", "sslzoo.benchmark": "tools", "sslzoo.tuning": "tools", "sslzoo.evaluate": "tools",
    "sslzoo.prepare": "tools", "sslzoo.embed": "tools", "sslzoo.select": "tools", "sslzoo.claims": "tools",
    "sslzoo.cli": "tools", "sslzoo.__main__": "tools",  # the `sslzoo` command: dispatches to every tool
}

# room -> rooms it may import (besides itself). Everything else is a leak.
ALLOWED = {
    "foundation": set(),
    "parts": {"foundation", "data"},
    "data": {"foundation", "parts"},
    "evaluation": {"foundation", "parts", "data"},
    "methods": {"foundation", "parts", "data"},
    "plugins": {"foundation", "parts", "data", "evaluation", "methods"},
    "training": {"foundation", "parts", "data", "evaluation", "methods", "plugins"},
    "export": {"foundation", "parts", "data", "evaluation"},
    "load": {"foundation", "export"},
    "tools": {"foundation", "parts", "data", "evaluation", "methods", "training", "export", "load", "api"},
    "api": {"foundation", "methods", "load"},
}


def room_of(module: str) -> str:
    matches = [prefix for prefix in ROOMS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise KeyError(module)
    return ROOMS[max(matches, key=len)]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every sslzoo module `path` imports, with relative imports resolved."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            # `from sslzoo import video` names a module, not a symbol: count it.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # The root package holds __version__ and lazy names only: importing it is free.
    return {name for name in found if name.startswith("sslzoo.")}


def known(name: str) -> bool:
    dotted = PACKAGE.parent / Path(*name.split("."))
    return dotted.with_suffix(".py").is_file() or (dotted / "__init__.py").is_file()


def all_edges():
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for target in imports_of(path, module):
            if known(target):
                yield module, target


def test_every_module_has_a_room():
    unplaced = sorted({module_name(p) for p in PACKAGE.rglob("*.py")} - {m for m in map(module_name, PACKAGE.rglob("*.py"))
                                                                          if _placed(m)})
    assert not unplaced, f"modules in no room of tests/test_layers.py: {unplaced}; add them to ROOMS"


def _placed(module: str) -> bool:
    try:
        room_of(module)
        return True
    except KeyError:
        return False


def test_no_import_crosses_a_layer_upwards():
    leaks = []
    for module, target in all_edges():
        source_room, target_room = room_of(module), room_of(target)
        if source_room != target_room and target_room not in ALLOWED[source_room]:
            leaks.append(f"{module} ({source_room}) -> {target} ({target_room})")
    assert not leaks, "imports that break the layers:\n" + "\n".join(leaks)


@pytest.mark.parametrize("room", ["methods", "parts", "data", "evaluation", "export", "load", "plugins"])
def test_named_rooms_never_import_the_trainer(room):
    """The issue's rule in so many words: no methods, parts, export or load module imports training."""
    offenders = [f"{m} -> {t}" for m, t in all_edges() if room_of(m) == room and room_of(t) == "training"]
    assert not offenders, offenders


def test_the_checker_sees_a_planted_leak(tmp_path):
    """The parser must catch a lazy, function-level import: the kind that slipped through before."""
    planted = tmp_path / "leaky.py"
    planted.write_text("def f():\n    from sslzoo.training.trainer import train_run\n    return train_run\n")
    assert "sslzoo.training.trainer" in imports_of(planted, "sslzoo.methods.leaky")
    assert room_of("sslzoo.training.trainer") not in ALLOWED[room_of("sslzoo.methods.leaky")]
