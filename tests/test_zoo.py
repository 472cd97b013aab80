"""Zoo: resolution by path and name, sha256 verification, safe loading, listing."""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import sslzoo
from sslzoo.zoo import loader as zoo
from sslzoo.export import export_encoder, sha256_file
from sslzoo.zoo import ArtifactIntegrityError, ModelNotFoundError, UnsafeModelError

SIZE = 16


def tiny_encoder(seed=0, channels=8):
    """Normalization + Conv2D + BatchNormalization + ReLU + GAP."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.08, 0.07, 0.06])(images)
    x = keras.layers.Conv2D(channels, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    features = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, features)


def random_images(n, seed=1):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3), dtype=np.float32)


CARDS = {
    "beta_model": {"method": "rotnet", "encoder": {"name": "convnet_small", "options": {}},
                   "dataset": "cifar10", "metrics": {"knn_top1": 0.41, "linear_top1": 0.52}},
    "alpha_model": {"method": "simclr", "metrics": {"knn_top1": 0.63}},
}


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory):
    """An export root holding two exports; returns (root, {name: original encoder})."""
    root = tmp_path_factory.mktemp("zoo_root")
    encoders = {}
    for seed, (name, card) in enumerate(sorted(CARDS.items())):
        encoders[name] = tiny_encoder(seed=seed)
        export_encoder(encoders[name], root / name, image_size=SIZE, card=card)
    return root, encoders


@pytest.fixture
def isolated(zoo_root, monkeypatch, tmp_path):
    """SSLZOO_EXPORTED points at the test root, and ./exported is an empty temp folder."""
    root, encoders = zoo_root
    monkeypatch.setenv("SSLZOO_EXPORTED", str(root))
    monkeypatch.chdir(tmp_path)
    return root, encoders


def copy_export(root, name, tmp_path):
    target = tmp_path / "copies" / name
    shutil.copytree(root / name, target)
    return target


def test_load_by_path_matches_original_and_is_trainable(zoo_root):
    root, encoders = zoo_root
    model = zoo.load(root / "alpha_model")
    images = random_images(5)
    expected = encoders["alpha_model"](images, training=False).numpy()
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-6)
    assert model.trainable and model.trainable_weights
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(images, np.ones((5, 8), "float32"), epochs=1, verbose=0)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))


def test_load_by_name_through_env_root(isolated):
    _, encoders = isolated
    images = random_images(3)
    model = sslzoo.load("beta_model")  # the package-level entry point
    expected = encoders["beta_model"](images, training=False).numpy()
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-6)
    served = zoo.load("beta_model", format="saved_model")
    got = served.signatures["serving_default"](images=tf.constant(images))["features"].numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5


def test_saved_model_format_uses_highest_version(zoo_root, tmp_path):
    root, encoders = zoo_root
    export = copy_export(root, "alpha_model", tmp_path)
    card = json.loads((export / "model_card.json").read_text())
    saved_model_files = [(k, v) for k, v in card["files"].items() if k.startswith("1/")]
    for version in ("9", "10"):  # "10" > "9" numerically, not alphabetically
        shutil.copytree(export / "1", export / version)
        card["files"].update({version + k[1:]: v for k, v in saved_model_files})
    (export / "model_card.json").write_text(json.dumps(card))
    assert zoo.saved_model_version_dir(export).name == "10"
    assert "serving_default" in zoo.load(export, format="saved_model").signatures


def test_unknown_name_lists_available_names(isolated):
    root, _ = isolated
    with pytest.raises(ModelNotFoundError) as error:
        zoo.load("no_such_model")
    message = str(error.value)
    assert "no_such_model" in message and "alpha_model" in message and "beta_model" in message
    assert str(root) in message  # says where it looked
    assert isinstance(error.value, LookupError)


def test_flipped_byte_is_refused(zoo_root, tmp_path):
    root, _ = zoo_root
    export = copy_export(root, "alpha_model", tmp_path)
    data = bytearray((export / "encoder.keras").read_bytes())
    data[len(data) // 2] ^= 0x01
    (export / "encoder.keras").write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="encoder.keras"):
        zoo.load(export)
    with pytest.raises(ArtifactIntegrityError, match="encoder.keras"):
        zoo.load(export, format="saved_model")  # any bad file condemns the whole export


def test_missing_and_unlisted_files_are_refused(zoo_root, tmp_path):
    root, _ = zoo_root
    export = copy_export(root, "alpha_model", tmp_path)
    (export / "encoder.tflite").unlink()
    with pytest.raises(ArtifactIntegrityError, match="encoder.tflite.*missing"):
        zoo.load(export)
    export = copy_export(root, "beta_model", tmp_path)
    (export / "1" / "assets" / "extra.txt").write_text("planted")
    with pytest.raises(ArtifactIntegrityError, match="extra.txt"):
        zoo.load(export, format="saved_model")


def _lambda_model(function):
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(function)(inputs)))


def _double(t):
    return t * 2.0


@pytest.mark.parametrize("function", [lambda t: t * 2.0, _double], ids=["python_lambda", "named_function"])
def test_keras_file_with_lambda_is_refused(tmp_path, function):
    path = tmp_path / "lambda.keras"
    _lambda_model(function).save(path)
    with pytest.raises(UnsafeModelError, match="Lambda.*never deserializes code"):
        zoo.load(path)


def test_lambda_inside_a_consistent_export_is_refused(zoo_root, tmp_path):
    """Correct hashes do not make code safe: a re-hashed export with a Lambda is still refused."""
    root, _ = zoo_root
    export = copy_export(root, "alpha_model", tmp_path)
    _lambda_model(_double).save(export / "encoder.keras")
    card = json.loads((export / "model_card.json").read_text())
    card["files"]["encoder.keras"] = sha256_file(export / "encoder.keras")
    (export / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(UnsafeModelError, match="Lambda"):
        zoo.load(export)


def test_list_models_reports_card_numbers(isolated):
    root, _ = isolated
    ours = [m for m in zoo.list_models() if Path(m["path"]).parent == root]
    assert [m["name"] for m in ours] == ["alpha_model", "beta_model"]
    alpha, beta = ours
    assert alpha == {"name": "alpha_model", "method": "simclr", "encoder": None, "dataset": None,
                     "knn_top1": 0.63, "linear_top1": None, "finetune_top1": None, "budget": None,
                     "path": str(root / "alpha_model")}
    assert beta["method"] == "rotnet" and beta["encoder"] == "convnet_small"
    assert beta["dataset"] == "cifar10" and beta["knn_top1"] == 0.41 and beta["linear_top1"] == 0.52


def test_temporary_folders_are_not_models(isolated):
    root, _ = isolated
    (root / ".alpha_model.tmp-abc").mkdir()
    (root / ".alpha_model.tmp-abc" / "model_card.json").write_text("{}")
    try:
        assert ".alpha_model.tmp-abc" not in [m["name"] for m in zoo.list_models()]
    finally:
        shutil.rmtree(root / ".alpha_model.tmp-abc")
