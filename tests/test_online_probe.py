"""The online probe is a read-out: switching it on must not change what the encoder learns.

Methods whose pretext branch feeds the shared encoder tiles or patches give the probe an extra pass over
whole images (`SSLMethod.probe_images`). In training mode that pass would fold whole-image statistics into
batch norm's moving mean and variance, so the exported encoder would differ with the probe on and off.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.data import load_splits, make_pipeline
from sslzoo.optimizers import build_optimizer
from sslzoo.training.trainer import build_models
from tests.harness import tiny_config

STEPS = 3

# Each method with a batch-norm encoder shared between its pretext input and the probe's whole images.
SHARED_ENCODER_METHODS = {
    "jigsaw": {"num_permutations": 10, "head_width": 16},
    # "full": the probe runs the patch encoder's weights on whole images; "configured" keeps batch norm.
    "cpc": {"features": "full", "encoder_norm": "configured", "patch_size": 16, "patch_stride": 8, "steps": 1,
            "context_blocks": 1},
    "relpatch": {"patch_size": 8, "gap": 2, "jitter": 1, "head_width": 16, "head_depth": 1},
}


def _train(method_name, options, online_probe, num_classes, batches):
    keras.utils.set_random_seed(0)
    config = tiny_config(method_name, options)
    config.method.online_probe = online_probe  # what `method.online_probe: false` in a config sets
    encoder, method = build_models(config, num_classes=num_classes)
    assert (method.probe is not None) == online_probe
    initial = [w.numpy().copy() for w in encoder.weights]
    method.compile(optimizer=build_optimizer(config.optimizer, steps_per_epoch=STEPS, epochs=1))
    dataset = functools.reduce(lambda a, b: a.concatenate(b), [tf.data.Dataset.from_tensors(b) for b in batches])
    history = method.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return encoder, initial, history.history


@pytest.mark.parametrize("method_name", sorted(SHARED_ENCODER_METHODS))
def test_the_encoder_trains_the_same_with_the_probe_on_and_off(method_name):
    options = SHARED_ENCODER_METHODS[method_name]
    config = tiny_config(method_name, options)
    splits = load_splits(config.data)
    _, method = build_models(config, num_classes=len(splits.class_names))
    pipeline = make_pipeline(splits.train.images, splits.train.labels, batch_size=16, shuffle=True, seed=0,
                             augment=method.augment)
    batches = list(pipeline.take(STEPS))
    assert "labels" in batches[0]

    num_classes = len(splits.class_names)
    on, initial, history = _train(method_name, options, True, num_classes, batches)
    off, initial_off, _ = _train(method_name, options, False, num_classes, batches)
    assert "probe_loss" in history  # the probe really ran
    names = [w.path for w in on.weights]
    assert names == [w.path for w in off.weights]
    moving = [i for i, name in enumerate(names) if "moving_mean" in name or "moving_variance" in name]
    assert moving, f"{method_name}: the encoder under test has no batch norm"
    for name, a, b in zip(names, initial, initial_off):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} differs before training")
    # Every variable, BN moving statistics included, is the same with and without the probe, and training
    # moved them (else equality would prove nothing).
    for name, a, b in zip(names, on.weights, off.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{method_name}: {name}")
    assert all(not np.array_equal(on.weights[i].numpy(), initial[i]) for i in moving)
