"""`<output>/benchmark.json`: the benchmark's settings and one record per entry, written atomically.

A rerun with the same settings skips the finished entries and resumes the others; other settings in the
same folder are refused, since the table would then mix budgets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from sslzoo.files import atomic_write_text
from sslzoo.errors import SettingsMismatchError  # noqa: F401  (raised here)

STATE_NAME = "benchmark.json"
DONE, FAILED, RUNNING = "done", "failed", "running"
# What a folder written before a setting existed meant by it.
ASSUMED = {"encoder": "convnet_small"}
# Settings that define the comparison; the command line and the chosen methods may change between reruns.
COMPARED = ("data", "encoder", "max_examples", "epochs", "budget_seconds", "steps_per_epoch", "finetune_epochs",
            "finetune_label_fraction", "overrides")


class BenchmarkState:
    """Settings plus `records[stem]` = {status, wall_clock_s, peak_mem_mb, returncode, log_tail, ...}."""

    def __init__(self, folder: str | Path, settings: Dict, records: Optional[Dict] = None):
        self.folder = Path(folder)
        self.settings = settings
        self.records: Dict[str, Dict] = records or {}

    @property
    def path(self) -> Path:
        return self.folder / STATE_NAME

    @classmethod
    def open(cls, folder: str | Path, settings: Dict) -> "BenchmarkState":
        """Loads the folder's state (checking its settings match) or starts a new one."""
        path = Path(folder) / STATE_NAME
        if not path.exists():
            return cls(folder, settings)
        saved = json.loads(path.read_text())
        check_settings(saved["settings"], settings, folder)
        # Keep the first run's command line too, so the report says how the earlier rows were made.
        merged = {**saved["settings"], **settings, "commands": _merge_commands(saved["settings"], settings)}
        return cls(folder, merged, saved.get("records", {}))

    @classmethod
    def load(cls, folder: str | Path) -> "BenchmarkState":
        path = Path(folder) / STATE_NAME
        if not path.exists():
            raise FileNotFoundError(f"'{folder}' has no {STATE_NAME}: run the benchmark there first")
        saved = json.loads(path.read_text())
        return cls(folder, saved["settings"], saved.get("records", {}))

    def is_done(self, stem: str) -> bool:
        return self.records.get(stem, {}).get("status") == DONE

    def update(self, stem: str, **fields) -> Dict:
        record = self.records.setdefault(stem, {})
        record.update(fields)
        self.save()
        return record

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"settings": self.settings, "records": self.records}, indent=2, sort_keys=True)
        atomic_write_text(self.path, text + "\n")


def check_settings(saved: Dict, wanted: Dict, folder) -> None:
    def value(settings, key):
        return settings.get(key, ASSUMED.get(key))

    differences = [f"{key}: {value(saved, key)!r} there, {value(wanted, key)!r} now"
                   for key in COMPARED if value(saved, key) != value(wanted, key)]
    if differences:
        raise SettingsMismatchError(
            f"'{folder}' holds a benchmark with other settings ({'; '.join(differences)}); its rows would not "
            f"be comparable. Use another --output, or delete '{folder}' to start over."
        )


def _merge_commands(saved: Dict, wanted: Dict) -> list:
    commands = list(saved.get("commands", []))
    for command in wanted.get("commands", []):
        if command not in commands:
            commands.append(command)
    return commands
