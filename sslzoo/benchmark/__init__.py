"""The zoo benchmark: every registered image method, same encoder, same budget, one table.

    python -m sslzoo.benchmark --data folder:../shared/data/cifar10/train --epochs 3 --output runs/benchmark \
        [--encoder convnet_small] [--methods rotnet,simclr] [--max-examples 10000] [--steps-per-epoch N] [--finetune-epochs 10] \
        [--set eval.linear_epochs=10 ...] [--export exported [--force-export]] [--report-only]

Each entry is `zoo_configs/<method>(_v<k>)?_<encoder>_cifar10.yaml` (encoder `convnet_small` unless
--encoder names another with a supervised config, e.g. `vit_tiny`) trained by `train.py` in its own
subprocess into `<output>/runs/<stem>`; the supervised entry also gives the random-init row. The folder
gets results.csv, results.md, results.png and benchmark.json (the state that makes a rerun resume).
See docs/benchmark.md.
"""

from sslzoo.benchmark.entries import Entry, discover_entries, entry_overrides
from sslzoo.benchmark.report import build_rows, draw_chart, write_reports
from sslzoo.benchmark.state import BenchmarkState, SettingsMismatchError

__all__ = ["Entry", "discover_entries", "entry_overrides", "build_rows", "draw_chart", "write_reports",
           "BenchmarkState", "SettingsMismatchError"]
