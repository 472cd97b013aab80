#!/usr/bin/env python
"""What tf.data's autotuning thread costs a training run on this machine, and what turning it off costs.

    python scripts/pipeline_teardown.py [--config rotnet_convnet_small_cifar10] [--seconds 40] [--pairs 3]

Alternates fits of the method with the zoo's own pipeline (`make_pipeline` on 5,000 random uint8 images)
with the autotuning thread on (tf.data's default) and off (`without_autotune`, what every sslzoo pipeline
uses). Each fit stops at the first epoch end after `--seconds`, as a deadline or Ctrl-C would. Prints, per
fit, the steady images/s (epochs after the first) and the seconds between the last callback and `fit`
returning: the destruction of the abandoned iterator, which waits out the autotuning thread's sleep.
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import keras
import numpy as np

from sslzoo import config as config_lib
from sslzoo import settings
from sslzoo.data import pipeline
from sslzoo.optimizers import build_optimizer
from sslzoo.training.build import build_models

STEPS = 39  # one epoch: 39 batches of 128 = 5,000 images


class _Stop(keras.callbacks.Callback):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.ends = seconds, []

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())
        if self.ends[-1] - self.start > self.seconds:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()


def one_fit(method, images, seconds: float, autotune: bool) -> tuple[float, float]:
    keep = (lambda dataset: dataset) if autotune else pipeline.without_autotune
    with mock.patch.object(pipeline, "without_autotune", keep):
        dataset = pipeline.make_pipeline(images, np.zeros(len(images), np.int32), batch_size=128, seed=0,
                                         num_epochs=10_000, steps_per_epoch=STEPS, augment=method.augment)
    stop = _Stop(seconds)
    method.fit(dataset, epochs=10_000, steps_per_epoch=STEPS, callbacks=[stop], verbose=0)
    returned = time.perf_counter()
    steady = (len(stop.ends) - 1) * STEPS * 128 / (stop.ends[-1] - stop.ends[0])
    return steady, returned - stop.end


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="rotnet_convnet_small_cifar10")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args(argv)
    config = config_lib.load(settings.resolve_config(args.config), ["data.source=synthetic"])
    _, method = build_models(config, num_classes=10)
    method.compile(optimizer=build_optimizer(config.optimizer, steps_per_epoch=STEPS, epochs=10_000))
    images = np.random.default_rng(0).integers(0, 256, (STEPS * 128, 32, 32, 3), dtype=np.uint8)
    print(f"{args.config}: fits of {args.seconds:.0f} s, alternating")
    for _ in range(args.pairs):
        for autotune in (True, False):
            rate, teardown = one_fit(method, images, args.seconds, autotune)
            print(f"  autotune {'on ' if autotune else 'off'}  {rate:7.0f} images/s   fit returned "
                  f"{teardown:6.2f} s after its last callback", flush=True)


if __name__ == "__main__":
    main()
