import numpy as np
import pytest
import tensorflow as tf

from sslzoo.config import ConfigError
from sslzoo.data import load_splits
from sslzoo.methods import build_method
from sslzoo.backbones import build_encoder
from tests.harness import check_method_contract, first_batch, tiny_config
from sslzoo.training.trainer import build_models


@pytest.mark.parametrize("head", ["conv", "mlp"])
def test_rotnet_passes_the_method_contract(head, tmp_path):
    check_method_contract("rotnet", {"head": head, "head_width": 16}, tmp_path)


def test_nin_head_on_nin_encoder_builds_and_steps():
    encoder = build_encoder("nin", 32, blocks=2)
    method = build_method("rotnet", {"head": "nin"}, encoder, num_classes=10)
    images = tf.random.uniform((2, 32, 32, 3))
    data = method.augment(images, tf.constant([1, 2]), tf.constant([0, 0]))
    loss, logs = method.compute_loss_and_logs(data, training=False)
    # Untrained 4-way classifier: loss near log(4).
    assert abs(float(logs["loss"]) - np.log(4)) < 1.0


def test_batch_holds_every_image_in_every_rotation():
    config = tiny_config("rotnet", {"head": "mlp", "head_width": 8})
    splits = load_splits(config.data)
    _, method = build_models(config, num_classes=len(splits.class_names))
    batch = first_batch(method, splits, batch_size=4)
    images, labels = batch["images"].numpy(), batch["pretext_labels"].numpy()
    assert images.shape[0] == 16 and list(labels) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    for r in range(4):
        np.testing.assert_array_equal(images[4 * r:4 * r + 4], np.rot90(images[:4], r, axes=(1, 2)))
    np.testing.assert_array_equal(batch["labels"].numpy().shape, (4,))


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"rotations": [0, 0]}, "distinct quarter turns"),
        ({"rotations": [0, 5]}, "multiples of 90"),
        ({"head": "transformer"}, "'linear', 'mlp', 'conv', 'nin'"),
        ({"heads": "conv"}, "unknown method.options key"),
        ({"flip": "yes"}, "expected true/false"),
    ],
)
def test_bad_options_fail_clearly(options, fragment):
    encoder = build_encoder("convnet_small", 32, width=0.25)
    with pytest.raises(ConfigError, match=fragment):
        build_method("rotnet", options, encoder)


def test_online_probe_does_not_train_the_encoder():
    """The probe's loss must reach only the probe: the encoder gradient of the probe loss is zero."""
    encoder = build_encoder("convnet_small", 32, width=0.25)
    method = build_method("rotnet", {"head": "mlp", "head_width": 8}, encoder, num_classes=10)
    features = encoder(tf.random.uniform((4, 32, 32, 3)))
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss = method.online_probe(features, tf.constant([0, 1, 2, 3]), {})
    gradient = tape.gradient(loss, features, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert float(loss) > 0 and float(tf.reduce_max(tf.abs(gradient))) == 0.0
