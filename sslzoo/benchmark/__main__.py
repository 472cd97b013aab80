"""`python -m sslzoo.benchmark ...`: see sslzoo/benchmark/__init__.py and docs/benchmark.md."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

from sslzoo.benchmark.entries import (BUDGET_EPOCH_CAP, DEFAULT_ENCODER, SUPERVISED, check_same_encoder,
                                     discover_entries, entry_overrides, parse_data)
from sslzoo.benchmark.report import machine, write_reports
from sslzoo.benchmark.runner import estimate_eta, finished_epochs, format_seconds, run_entry
from sslzoo.benchmark.state import DONE, BenchmarkState, SettingsMismatchError
from sslzoo.config import ConfigError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sslzoo.benchmark", description=__doc__)
    parser.add_argument("--data", help="folder:PATH, tfds:NAME or synthetic (required unless --report-only)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="pretraining passes over the training split (the budget; default 3), or with "
                             "--budget-seconds the most an entry may train (default 1000)")
    parser.add_argument("--budget-seconds", type=float, default=0,
                        help="train every entry for this many seconds of this machine instead of --epochs "
                             "(trainer.time_budget_s: its schedule spans them), comparing methods per unit of compute")
    parser.add_argument("--steps-per-epoch", type=int, default=0, help="cap on steps an epoch (smoke runs; 0 = none)")
    parser.add_argument("--max-examples", type=int, default=0, help="stratified subset of the data (0 = all)")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning epochs on 10%% of the labels")
    parser.add_argument("--encoder", default=None,
                        help=f"the encoder every entry uses: its configs are <method>_<encoder>_cifar10.yaml "
                             f"(default {DEFAULT_ENCODER}; vit_tiny for the ViT methods)")
    parser.add_argument("--methods", default="", help="comma-separated config stems or method names (default: all)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="config overrides for every entry, e.g. eval.linear_epochs=10")
    parser.add_argument("--output", default="runs/benchmark", help="benchmark folder (default: runs/benchmark)")
    parser.add_argument("--export", metavar="DIR", help="export every finished entry to DIR/<name>")
    parser.add_argument("--force-export", action="store_true", help="replace existing exports")
    parser.add_argument("--report-only", action="store_true", help="only rebuild results.* from the folder")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, argv: List[str]) -> dict:
    if not args.data:
        raise ConfigError("--data is required: folder:PATH, tfds:NAME or synthetic")
    parse_data(args.data, must_exist=True)  # fail early on a bad --data
    if args.budget_seconds < 0:
        raise ConfigError(f"--budget-seconds {args.budget_seconds}: give seconds > 0, or leave it out to train --epochs")
    epochs = args.epochs if args.epochs is not None else (BUDGET_EPOCH_CAP if args.budget_seconds else 3)
    return {
        "data": args.data, "encoder": args.encoder or DEFAULT_ENCODER, "max_examples": args.max_examples,
        "epochs": epochs,
        "budget_seconds": args.budget_seconds or None,
        "steps_per_epoch": args.steps_per_epoch, "finetune_epochs": args.finetune_epochs,
        "finetune_label_fraction": 0.1, "overrides": list(args.set),
        "commands": ["python -m sslzoo.benchmark " + " ".join(shlex.quote(a) for a in argv)],
    }


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from sslzoo.methods import METHODS  # registers every method (imports TensorFlow)

    output = Path(args.output)
    try:
        if args.report_only:
            state = BenchmarkState.load(output)
        else:
            state = BenchmarkState.open(output, settings_from(args, argv))
        # --report-only reads the encoder from the folder; a run names it, or gets the default.
        encoder = args.encoder or state.settings.get("encoder", DEFAULT_ENCODER)
        if args.encoder and args.encoder != state.settings.get("encoder", DEFAULT_ENCODER):
            raise ConfigError(f"--encoder {args.encoder}: '{output}' holds a benchmark of "
                              f"{state.settings.get('encoder', DEFAULT_ENCODER)}; use another --output")
        everything = discover_entries(METHODS.names(), encoder=encoder)
        chosen = discover_entries(METHODS.names(), only=[m for m in args.methods.split(",") if m] or None,
                                  encoder=encoder)
        if not args.report_only:  # a report shows rows that were checked when they ran
            check_same_encoder(chosen)
    except (ConfigError, SettingsMismatchError, FileNotFoundError) as error:
        say(f"error: {error}")
        return 2
    excluded = sorted(name for name in METHODS.names() if name.startswith("video_"))
    if SUPERVISED not in METHODS.names():
        say("warning: method 'supervised' is not registered: no supervised and random-init rows")
    # The table shows the chosen entries and any entry an earlier run in this folder recorded.
    # --report-only without --methods: just the entries this folder has records for.
    planned = [] if args.report_only and not args.methods else chosen
    shown = [e for e in everything if e in planned or e.stem in state.records]
    info = machine()
    if not args.report_only:
        state.save()
        run_all(chosen, state, output)
    rows = write_reports(shown, state, excluded, info)
    say(f"results: {output / 'results.md'}, {output / 'results.csv'}, {output / 'results.png'}")
    if args.export:
        from sslzoo.benchmark.export import export_entries

        for stem, outcome in export_entries(shown, rows, state, Path(args.export), info, args.force_export).items():
            say(f"export {stem}: {outcome}")
    failed = [e.stem for e in shown if state.records.get(e.stem, {}).get("status") == "failed"]
    if failed:
        say(f"failed: {', '.join(failed)} (see {output}/runs/<name>/train.log)")
    return 1 if failed else 0


def run_all(entries, state: BenchmarkState, output: Path) -> None:
    epochs = state.settings["epochs"]
    durations = [state.records[e.stem]["wall_clock_s"] for e in entries if state.is_done(e.stem)]
    for index, entry in enumerate(entries, start=1):
        label = f"[{index}/{len(entries)}] {entry.stem}"
        if state.is_done(entry.stem):
            say(f"{label}  already done ({format_seconds(state.records[entry.stem]['wall_clock_s'])}), skipped")
            continue
        run_dir = output / "runs" / entry.stem
        remaining = sum(1 for e in entries[index:] if not state.is_done(e.stem))
        started = time.perf_counter()

        def progress(phase: str, elapsed: float) -> None:
            budget = state.settings.get("budget_seconds")
            fraction = min(elapsed / budget, 1.0) if budget else min(finished_epochs(run_dir), epochs) / epochs
            eta = estimate_eta(durations, remaining, elapsed, fraction)
            total = sum(durations) + elapsed
            say(f"{label}  {phase}  elapsed {format_seconds(total)}  ETA {format_seconds(eta)}")

        record = run_entry(entry, entry_overrides(entry, state.settings), run_dir, state, progress, epochs)
        say(f"{label}  {record['status']} in {format_seconds(time.perf_counter() - started)}"
            + (f"\n{record['log_tail']}" if record["status"] != DONE else ""))
        if record["status"] == DONE:
            durations.append(record["wall_clock_s"])


if __name__ == "__main__":
    sys.exit(main())
