"""Zoo: resolution by path and name, sha256 verification and pinning, safe loading, listing."""

import json
import shutil
import struct
import tracemalloc
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import sslzoo
from sslzoo.zoo import loader as zoo
from sslzoo.errors import DisallowedOpsError
from sslzoo.export import export_encoder, sha256_file
from sslzoo.export.card import file_hashes
from sslzoo.export.saved_model import check_saved_model
from sslzoo.zoo import ArtifactIntegrityError, ModelNotFoundError, UnsafeModelError

SIZE = 16
REPO = Path(__file__).resolve().parents[1]


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


def rehash_card(export):
    """What someone who can write the folder does after changing a file: make the card agree again."""
    card = json.loads((export / "model_card.json").read_text())
    card["files"] = file_hashes(export)
    (export / "model_card.json").write_text(json.dumps(card))


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


# ------------------------------------------------------------------------ SavedModel graphs, vetted


def planted_saved_model(directory, target):
    """A SavedModel whose serving signature writes `target`, prints and saves a checkpoint, and which also
    writes `target` while `tf.saved_model.load` restores it (a resource initializer runs at load time)."""
    target = str(target)

    class WritesOnLoad(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="", container="")

        def _initialize(self):
            tf.io.write_file(target, "written by tf.saved_model.load")
            return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)

    class Leaky(tf.Module):
        def __init__(self):
            super().__init__()
            self.resource = WritesOnLoad()

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")])
        def leak(self, images):
            tf.io.write_file(target, "written by serving_default")
            tf.print("leaked", tf.reduce_sum(images))
            # A checkpoint write is accepted only inside the saver's own functions, never in a signature.
            tf.raw_ops.SaveV2(prefix=target + ".ckpt", tensor_names=["images"], shape_and_slices=[""],
                              tensors=[images])
            return {"features": tf.reduce_mean(images, axis=[1, 2])}

    module = Leaky()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.leak})


def test_saved_model_with_file_and_print_ops_is_refused_before_loading(zoo_root, tmp_path):
    root, _ = zoo_root
    export = copy_export(root, "alpha_model", tmp_path)
    shutil.rmtree(export / "1")
    target = tmp_path / "leaked.txt"
    planted_saved_model(export / "1", target)
    rehash_card(export)  # the card agrees: only the graph check stands in the way
    assert not target.exists()
    with pytest.raises(DisallowedOpsError) as error:
        zoo.load(export, format="saved_model")
    message = str(error.value)
    assert "WriteFile (file_write, in " in message and "PrintV2 (print, in " in message
    assert "SaveV2 (checkpoint_io, in function __inference_leak_" in message
    assert "function __inference_leak_" in message  # the serving function that holds them
    assert "function __inference__initializer_" in message  # and the load-time one
    assert str(export / "1") in message and "\n" not in message
    assert not target.exists()
    # The plant is real: TensorFlow alone writes the file while loading.
    tf.saved_model.load(str(export / "1"))
    assert target.read_text() == "written by tf.saved_model.load"


def test_genuine_saved_models_pass_the_graph_check_and_load(zoo_root):
    root, encoders = zoo_root
    shipped = sorted((REPO / "exported").glob("*/1"))
    assert shipped
    for folder in shipped:
        check_saved_model(folder)
    served = zoo.load(root / "alpha_model", format="saved_model")
    images = random_images(4)
    got = served.signatures["serving_default"](images=tf.constant(images))["features"].numpy()
    expected = encoders["alpha_model"](images, training=False).numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5


# --------------------------------------------------------------------------- .keras config, bounded

BOMB_LIMIT = 64 << 10


def keras_zip(path, config: bytes, declared_size=None):
    """A .keras-shaped zip; `declared_size` overwrites config.json's size fields (a lying header)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", config)
        archive.writestr("metadata.json", "{}")
    if declared_size is not None:
        data = bytearray(path.read_bytes())
        local = data.index(b"PK\x03\x04")  # config.json is the first member
        central = data.index(b"PK\x01\x02")
        struct.pack_into("<I", data, local + 22, declared_size)  # uncompressed size, local header
        struct.pack_into("<I", data, central + 24, declared_size)  # uncompressed size, central directory
        path.write_bytes(bytes(data))
    return path


def bomb_config():
    """Valid JSON of 4 MiB that deflates to a few KiB."""
    return b'{"class_name": "Functional", "pad": "' + b" " * (4 << 20) + b'"}'


def bounded_reads(monkeypatch):
    """Records the size of every read from a zip member (-1 or None: read to the end)."""
    sizes = []
    real_read = zipfile.ZipExtFile.read

    def read(self, n=-1):
        sizes.append(n)
        return real_read(self, n)

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    return sizes


@pytest.mark.parametrize("lying_header", [False, True], ids=["declared_size", "lying_header"])
def test_keras_config_bomb_is_refused_with_a_bounded_read(tmp_path, monkeypatch, lying_header):
    monkeypatch.setattr(zoo, "MAX_KERAS_CONFIG_BYTES", BOMB_LIMIT)
    path = keras_zip(tmp_path / "bomb.keras", bomb_config(), declared_size=100 if lying_header else None)
    assert path.stat().st_size < 64 << 10
    sizes = bounded_reads(monkeypatch)
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeModelError) as error:
            zoo.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    if lying_header:
        assert "not a valid .keras archive" in message  # inflating past the header fails its CRC
        assert sizes and all(n is not None and 0 <= n <= BOMB_LIMIT + 1 for n in sizes)
    else:
        assert f"config.json declares {len(bomb_config())} bytes" in message
        assert "MAX_KERAS_CONFIG_BYTES" in message
        assert sizes == []  # refused on the declared size, nothing inflated
    assert peak < 1 << 20  # the 4 MiB config never reached memory


def test_keras_config_under_the_limit_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "MAX_KERAS_CONFIG_BYTES", BOMB_LIMIT)
    config = {"class_name": "Functional", "config": {"layers": [{"class_name": "Lambda",
                                                                 "config": {"name": "planted"}}]}}
    path = keras_zip(tmp_path / "small.keras", json.dumps(config).encode())
    with pytest.raises(UnsafeModelError, match=r"Lambda layer\(s\) \['planted'\]"):
        zoo.check_keras_archive(path)  # the config was read and walked, not refused for its size


# ---------------------------------------------------------------------------- pinned card hash


def test_pinned_card_hash_loads_and_a_wrong_one_is_refused_first(zoo_root, tmp_path):
    root, encoders = zoo_root
    export = copy_export(root, "alpha_model", tmp_path)
    pinned = sha256_file(export / "model_card.json")
    images = random_images(3)
    model = sslzoo.load(export, sha256=pinned.upper())
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               encoders["alpha_model"](images, training=False).numpy(), atol=1e-6)
    assert "serving_default" in zoo.load(export, format="saved_model", sha256=pinned).signatures
    zoo.load(export / "encoder.keras", sha256=pinned)  # a .keras inside the export: its card is pinned

    (export / "encoder.keras").unlink()  # the pin is checked before any other file is looked at
    wrong = "ab" * 32
    with pytest.raises(ArtifactIntegrityError) as error:
        zoo.load(export, sha256=wrong)
    message = str(error.value)
    assert f"pins {wrong}" in message and pinned in message and "\n" not in message
    with pytest.raises(ValueError, match="64 hex digits"):
        zoo.load(export, sha256="not-a-hash")


def test_rehashed_tampered_weights_load_unless_the_card_is_pinned(zoo_root, tmp_path):
    """The card's hashes stop corruption, not someone who can write the folder: a pin stops them."""
    root, encoders = zoo_root
    export = copy_export(root, "alpha_model", tmp_path)
    pinned = sha256_file(export / "model_card.json")
    tiny_encoder(seed=7).save(export / "encoder.keras")  # the attacker's weights
    rehash_card(export)
    tampered = sha256_file(export / "model_card.json")
    images = random_images(3)
    unpinned = zoo.load(export).predict(images, verbose=0)  # every hash agrees with the rewritten card
    assert not np.allclose(unpinned, encoders["alpha_model"](images, training=False).numpy(), atol=1e-3)
    with pytest.raises(ArtifactIntegrityError) as error:
        zoo.load(export, sha256=pinned)
    assert f"has sha256 {tampered}, but sha256= pins {pinned}" in str(error.value)
    with pytest.raises(ArtifactIntegrityError, match=f"pins {pinned}"):
        zoo.load(export / "encoder.keras", sha256=pinned)
