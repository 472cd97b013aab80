"""Export a trained run's encoder for TF Serving, LiteRT and sslzoo.load.

    sslzoo export --run runs/<name> --output exported/<name> [--force]
        [--head none|linear|finetune] [--tflite float32,float16,dynamic,int8] [--int8-io]
        [--allow-accuracy-drop] [--no-evaluate] [--format onnx] [--debug]

Writes a SavedModel in TF Serving layout (<output>/1/: serving_default, embed_images, and classify /
classify_bytes with a head), TFLite variants with their measured quality in model_card.json, the Keras
encoder, labels.txt and a classifier .tflite with a head. An existing export is never overwritten unless
--force; the new export is written to a temporary folder and renamed into place, so a failure leaves the
previous export intact. `python export.py` in a checkout is the same command; --format onnx needs
pip install "sslzoo[onnx]".
"""

from __future__ import annotations

import argparse
import logging
import sys

from sslzoo.cli_errors import OneLineParser, report
from sslzoo.errors import AccuracyDropError, ExportParityError, TFLiteParityError

# Exit code of an export refused by one of its own checks (accuracy of a variant, parity); 2 is a user error.
FAILED_CHECK = 3


def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder written by train.py")
    parser.add_argument("--output", required=True, help="export folder, e.g. exported/<name>")
    parser.add_argument("--force", action="store_true", help="replace an existing export")
    parser.add_argument("--head", default="none", choices=["none", "linear", "finetune"],
                        help="attach the run's linear probe head, or export its fine-tuned encoder + head")
    parser.add_argument("--tflite", default="float32",
                        help="comma-separated TFLite variants: float32,float16,dynamic,int8 (float32 always)")
    parser.add_argument("--int8-io", action="store_true", help="int8 input/output tensors for the int8 variant")
    parser.add_argument("--allow-accuracy-drop", action="store_true",
                        help="export even if a TFLite variant loses more than 2 points of top-1")
    parser.add_argument("--format", action="append", default=[], choices=["onnx"],
                        help="extra formats besides SavedModel/TFLite/.keras: onnx (encoder.onnx; sslzoo[onnx])")
    parser.add_argument("--no-evaluate", action="store_true",
                        help="skip the validation top-1 of each TFLite variant (no data needed unless int8)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not just its line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    variants = [v.strip() for v in args.tflite.split(",") if v.strip()]
    try:
        from sslzoo import extras

        if "onnx" in args.format:
            extras.require("onnx", "--format onnx")
        print(f"sslzoo: exporting {args.run} -> {args.output}", flush=True)
        from sslzoo.startup import quiet_tensorflow

        quiet_tensorflow()
        from sslzoo.export.from_run import export_run

        path = export_run(args.run, args.output, force=args.force, head=args.head, tflite=variants,
                          int8_io=args.int8_io, allow_accuracy_drop=args.allow_accuracy_drop,
                          evaluate=not args.no_evaluate, onnx="onnx" in args.format)
    except Exception as error:
        # A plain ValueError is the exporter refusing its input (a --head without a head, card clashes).
        return report(error, args.debug, prefix="export error", also=(ValueError,),
                      codes={check: FAILED_CHECK for check in (AccuracyDropError, ExportParityError, TFLiteParityError)},
                      hints={AccuracyDropError: "pass --allow-accuracy-drop to export anyway"})
    print(f"exported {args.run} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
