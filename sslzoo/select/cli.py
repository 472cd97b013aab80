"""Which pretext task suits my data? `sslzoo select` measures it within a wall-clock budget.

    sslzoo select --data photos/ --eval-data labelled/ --budget-minutes 60 \
        [--methods rotnet,simclr,byol] [--output runs/select] [--image-size 32]

--data: unlabelled images (a folder, any layout; or `synthetic`). --eval-data: a small labelled folder
root/<class>/<image> (10-50 images per class). Half of it (--held-back) is read only once, after the
winner is chosen, for the final report. Results: <output>/select.md, select.png, select.json, and the
winner's run folder <output>/winner (export it with `sslzoo export --run <output>/winner`). Rerunning the
same command resumes; the time already spent counts against the budget. `python -m sslzoo.select` is the
same command; it needs keras-tuner: pip install "sslzoo[tune]".
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from sslzoo.cli_errors import OneLineParser, report


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="unlabelled images: a folder (or folder:PATH), or synthetic")
    parser.add_argument("--eval-data", required=True, help="labelled folder root/<class>/<image>, 10-50 per class")
    parser.add_argument("--budget-minutes", type=float, required=True, help="wall-clock budget of the whole search")
    parser.add_argument("--methods", default="", help="comma-separated config names or methods (default: all image "
                                                      "methods that train at this image size; `sslzoo list`)")
    parser.add_argument("--output", default="runs/select", help="results folder (default runs/select)")
    parser.add_argument("--image-size", type=int, default=32, help="side the images are trained at (default 32)")
    parser.add_argument("--per-method", type=int, default=1,
                        help="candidates per method: the shipped config, then draws of its searched options")
    parser.add_argument("--eta", type=int, default=3, help="1/eta of the candidates continue at each rung")
    parser.add_argument("--search-share", type=float, default=0.5,
                        help="share of the budget for the rungs; the rest trains the winner (default 0.5)")
    parser.add_argument("--held-back", type=float, default=0.5,
                        help="share of every class of --eval-data kept for the final report (default 0.5)")
    parser.add_argument("--score", default="knn", choices=("knn", "linear"),
                        help="tuning score: leave-one-out kNN top-1 (default) or a 2-fold linear probe")
    parser.add_argument("--max-examples", type=int, default=0, help="use a fixed subset of the unlabelled images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not just its line")
    return parser.parse_args(argv)


def _invocation() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "sslzoo select" if name.startswith("sslzoo") else "python -m sslzoo.select"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    words = sys.argv[1:] if argv is None else list(argv)
    command = _invocation() + " " + " ".join(shlex.quote(w) for w in words)
    try:
        from sslzoo.select.search import Settings

        settings = Settings(data=args.data, eval_data=args.eval_data, budget_minutes=args.budget_minutes,
                            methods=[m.strip() for m in args.methods.split(",") if m.strip()],
                            per_method=args.per_method, eta=args.eta, search_share=args.search_share,
                            image_size=args.image_size, held_back=args.held_back, score=args.score,
                            max_examples=args.max_examples, seed=args.seed)
        settings.check()
        print(f"sslzoo select: {args.data} (labelled: {args.eval_data}), budget {args.budget_minutes:g} min "
              f"-> {args.output}", flush=True)
        from sslzoo.startup import quiet_tensorflow

        quiet_tensorflow()
        from sslzoo.select.search import select

        result = select(settings, args.output, command=command)
    except Exception as error:
        return report(error, debug=args.debug)
    print(summary(result, Path(args.output)))
    return 0


def summary(result: dict, output: Path) -> str:
    winner = result["winner"]
    lines = [f"winner: {winner['candidate']} ({winner['config']}), {winner['units']} units, "
             f"tuning score {winner['score']:.2f}"]
    for row in result["held_back"]:
        lines.append(f"  held-back {row['role']:<11} {row['candidate']:<24} kNN {row['knn_top1']:6.2f}  "
                     f"linear {row['linear_top1']:6.2f}")
    lines.append(f"spent {result['seconds']:.0f} of {result['budget_seconds']:.0f} s")
    lines.append(f"report: {output / 'select.md'}, {output / 'select.png'}; run: {output / winner['run']}")
    return "\n".join(lines)
