"""Export a trained run's encoder: the checkout's entry point of `sslzoo export`.

    python export.py --run runs/<name> --output exported/<name> [--force]
        [--head none|linear|finetune] [--tflite float32,float16,dynamic,int8] [--int8-io]
        [--allow-accuracy-drop] [--no-evaluate] [--format onnx] [--debug]

The same command as `sslzoo export` and `python -m sslzoo.export.cli` (sslzoo/export/cli.py).
"""

import sys

from sslzoo.export.cli import FAILED_CHECK, main  # noqa: F401  (the checkout's entry point)

if __name__ == "__main__":
    sys.exit(main())
