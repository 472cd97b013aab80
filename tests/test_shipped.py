"""The encoders shipped in exported/ load offline from a fresh clone, verify and embed."""

from pathlib import Path

import numpy as np
import pytest

import sslzoo
from sslzoo.export import read_card, sha256_file

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (ROOT / "exported").iterdir() if (p / "model_card.json").is_file())


def test_the_zoo_ships_a_rotnet_encoder_trained_on_cifar10():
    assert "rotnet_convnet_small_cifar10" in SHIPPED
    listed = {entry["name"]: entry for entry in sslzoo.list_models()}
    entry = listed["rotnet_convnet_small_cifar10"]
    assert entry["method"] == "rotnet" and entry["knn_top1"] > 0 and entry["linear_top1"] > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_by_name_and_embeds(name):
    export = ROOT / "exported" / name
    card = read_card(export)
    for relative, digest in card["files"].items():
        assert sha256_file(export / relative) == digest, relative
    encoder = sslzoo.load(name)
    size = card["input"]["shape"][1]
    images = np.random.default_rng(0).random((4, size, size, 3), dtype=np.float32)
    features = encoder.predict(images, verbose=0)
    assert features.shape == (4, card["output"]["features"][-1]) and np.isfinite(features).all()
    served = sslzoo.load(name, format="saved_model")
    np.testing.assert_allclose(
        served.signatures["serving_default"](images=images)["features"].numpy(), features, atol=1e-5
    )


def test_unknown_name_lists_the_shipped_models():
    with pytest.raises(LookupError) as error:
        sslzoo.load("rotnet_does_not_exist")
    for name in SHIPPED:
        assert name in str(error.value)
