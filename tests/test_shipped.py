"""The encoders shipped in exported/ load offline from a fresh clone, verify and embed."""

from pathlib import Path

import numpy as np
import pytest

import sslzoo
from sslzoo.export import read_card, sha256_file

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (ROOT / "exported").iterdir() if (p / "model_card.json").is_file())


def test_every_benchmarked_method_ships_a_reference_encoder_with_its_numbers():
    """exported/ holds one encoder per benchmark entry (every registered image method and the supervised
    baseline), each listed with the benchmark's budget and its kNN / linear / fine-tune figures."""
    from sslzoo.benchmark import discover_entries
    from sslzoo.registry import METHODS

    expected = {entry.stem for entry in discover_entries(METHODS.names())}
    assert expected <= set(SHIPPED), sorted(expected - set(SHIPPED))
    listed = {entry["name"]: entry for entry in sslzoo.list_models()}
    for name in expected:
        entry = listed[name]
        assert entry["budget"], name  # trained by the benchmark, which states its budget
        for key in ("knn_top1", "linear_top1", "finetune_top1"):
            assert 10.0 < entry[key] <= 100.0, (name, key, entry[key])  # better than chance on 10 classes
        card = read_card(ROOT / "exported" / name)
        assert card["benchmark"]["row"]["knn_top1"] == entry["knn_top1"], name


def test_exported_folder_stays_small():
    total = sum(p.stat().st_size for p in (ROOT / "exported").rglob("*") if p.is_file())
    assert total < 60 * 2**20, f"exported/ is {total / 2**20:.1f} MiB; keep it under ~60 MiB"


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
