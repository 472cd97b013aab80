"""`--export DIR`: each finished entry's run to DIR/<stem>, its model card carrying the benchmark's numbers."""

from __future__ import annotations

import datetime
import logging
import shlex
from pathlib import Path
from typing import Dict, Sequence

from sslzoo.benchmark.entries import Entry, entry_overrides, parse_data
from sslzoo.benchmark.report import RANDOM_INIT, budget_label, data_label, machine_label
from sslzoo.benchmark.state import BenchmarkState

log = logging.getLogger(__name__)
TFLITE_VARIANTS = ("float32", "int8")


def benchmark_card(entry: Entry, rows: Sequence[Dict], state: BenchmarkState, info: Dict) -> Dict:
    """The model card's `benchmark` section: how to reproduce the table, and this entry's row in it."""
    by_name = {row["name"]: row for row in rows}
    supervised = next((row for row in rows if row["kind"] == "supervised"), None)
    return {
        "reproduce": reproduce_entry(entry, state.settings),
        "command": list(state.settings.get("commands", [])),
        "budget": budget_label(state.settings),
        "data": data_label(state.settings),
        "machine": machine_label(info),
        "date": _utc(state.records.get(entry.stem, {}).get("finished")),
        "row": by_name.get(entry.stem),
        "random_init": by_name.get(RANDOM_INIT),
        "supervised": supervised,
    }


def reproduce_entry(entry: Entry, settings: Dict, variants: Sequence[str] = TFLITE_VARIANTS) -> str:
    """train.py + export.py commands that rebuild this one export, from the repository root."""
    overrides = entry_overrides(entry, settings)
    raw = parse_data(settings["data"], resolve=False)  # the path as the user gave it, not this machine's
    overrides = [f"data.path={raw['path']}" if item.startswith("data.path=") and "path" in raw else item
                 for item in overrides]
    run = f"runs/benchmark/runs/{entry.stem}"
    sets = " ".join(shlex.quote(item) for item in overrides)
    return (f"python train.py --config zoo_configs/{entry.config.name} --set {sets} --output {run} && "
            f"python export.py --run {run} --output exported/{entry.stem} --head linear "
            f"--tflite {','.join(variants)}")


def _utc(timestamp) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def export_entries(entries: Sequence[Entry], rows: Sequence[Dict], state: BenchmarkState, folder: Path,
                   info: Dict, force: bool = False) -> Dict[str, str]:
    """Exports every finished entry; keeps an existing export unless `force`. Returns {stem: outcome}."""
    from sslzoo.export.from_run import export_run
    from sslzoo.export.tflite_quality import AccuracyDropError

    outcomes = {}
    for entry in entries:
        target = Path(folder) / entry.stem
        if not state.is_done(entry.stem):
            outcomes[entry.stem] = "not finished"
            continue
        if target.exists() and not force:
            outcomes[entry.stem] = f"kept existing {target} (--force-export replaces it)"
            continue
        card = {"benchmark": benchmark_card(entry, rows, state, info)}
        try:
            try:
                export_run(state.folder / "runs" / entry.stem, target, force=force, head="linear",
                           tflite=TFLITE_VARIANTS, card_extra=card)
                outcomes[entry.stem] = f"exported to {target}"
            except AccuracyDropError as error:
                # An int8 model that loses accuracy is not shipped; the float32 one still is, and the
                # card says why int8 is missing.
                card["benchmark"]["int8_refused"] = str(error)
                card["benchmark"]["reproduce"] = reproduce_entry(entry, state.settings, ("float32",))
                export_run(state.folder / "runs" / entry.stem, target, force=force, head="linear",
                           tflite=("float32",), card_extra=card)
                outcomes[entry.stem] = f"exported to {target} without int8 ({error})"
        except Exception as error:  # one failed export must not lose the others
            log.exception("export of %s failed", entry.stem)
            outcomes[entry.stem] = f"export failed: {error}"
    return outcomes
