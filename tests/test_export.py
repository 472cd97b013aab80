"""Export contract: layout, card hashes, SavedModel/TFLite parity, atomicity, graph hygiene."""

import hashlib
import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.export import (
    DisallowedOpsError,
    ExportExistsError,
    ExportParityError,
    check_graph_ops,
    export_encoder,
    graph_ops,
)
from sslzoo.export import exporter as exporter_module
from sslzoo.export import load_saved_model
from sslzoo.export.onnx import convert_to_onnx
from sslzoo.export.tflite import convert_to_tflite, convert_variant

SIZE = 16
BATCH_SIZES = (1, 7, 32)
CARD = {"method": "simclr", "encoder": "tiny", "dataset": "synthetic", "metrics": {"knn_top1": 0.5}}


def tiny_encoder(seed=0, channels=8, extra_layer=None):
    """Normalization + Conv2D + BatchNormalization + ReLU + GAP, with non-trivial BN statistics."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.08, 0.07, 0.06])(images)
    if extra_layer is not None:
        x = extra_layer(x)
    x = keras.layers.Conv2D(channels, 3, padding="same")(x)
    batch_norm = keras.layers.BatchNormalization()
    x = batch_norm(x)
    x = keras.layers.ReLU()(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    encoder = keras.Model(images, features)
    rng = np.random.default_rng(seed)
    # Random moving statistics so that inference-mode BN is not the identity (training=False matters).
    batch_norm.moving_mean.assign(rng.normal(size=channels).astype("float32"))
    batch_norm.moving_variance.assign(rng.uniform(0.5, 2.0, size=channels).astype("float32"))
    return encoder


def random_images(n, seed=1):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3), dtype=np.float32)


def snapshot(folder):
    """{relative path: bytes} of every file, to prove a folder was left byte-identical."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_python_without_sslzoo(body: str, cwd, timeout: int = 180) -> subprocess.CompletedProcess:
    """Runs `body` in a fresh Python where TensorFlow imports and sslzoo provably does not.

    `python -S` skips site-packages' .pth files, so an editable install of sslzoo (pip install -e, as
    `make test` does) cannot put it back on the path; site-packages itself is added by hand for TF.
    """
    repo = str(Path(__file__).resolve().parents[1])
    site_dirs = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    preamble = f"""
import sys
sys.path = [p for p in sys.path if p not in ("", {repo!r}) and not p.startswith({repo!r})]
sys.path.extend({site_dirs!r})
try:
    import sslzoo
    print("SSLZOO_IMPORTABLE")
except ImportError:
    pass
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run([sys.executable, "-S", "-c", preamble + textwrap.dedent(body)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SSLZOO_IMPORTABLE" not in result.stdout  # the subprocess really had no sslzoo
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    encoder = tiny_encoder()
    out = tmp_path_factory.mktemp("exports") / "tiny"
    path = export_encoder(encoder, out, image_size=SIZE, card=CARD, sample_images=random_images(10, seed=3))
    return encoder, Path(path)


def test_layout_and_card(exported):
    encoder, out = exported
    assert (out / "1" / "saved_model.pb").is_file()
    assert (out / "1" / "variables" / "variables.index").is_file()
    for name in ("encoder.tflite", "encoder.keras", "model_card.json"):
        assert (out / name).is_file()
    card = json.loads((out / "model_card.json").read_text())
    # The caller's facts survive; the exporter's fields are as specified.
    assert card["method"] == "simclr" and card["metrics"] == {"knn_top1": 0.5}
    assert card["input"] == {"name": "images", "shape": [None, SIZE, SIZE, 3], "dtype": "float32",
                             "range": [0, 1], "color": "RGB"}
    assert card["output"] == {"features": [None, 8]}
    assert card["format_version"] == 1
    assert card["sslzoo_version"] == __import__("sslzoo").__version__
    assert card["created_utc"].endswith("Z")
    # Without a head: the float-image and the encoded-bytes embedding signatures, no classify.
    signatures = {s["name"]: s for s in card["signatures"]}
    assert sorted(signatures) == ["embed_images", "serving_default"]
    assert signatures["serving_default"]["inputs"] == {"images": {"dtype": "float32", "shape": [None, SIZE, SIZE, 3]}}
    assert signatures["serving_default"]["outputs"] == {"features": {"dtype": "float32", "shape": [None, 8]}}
    assert signatures["embed_images"]["inputs"] == {"image_bytes": {"dtype": "string", "shape": [None]}}
    assert signatures["embed_images"]["outputs"] == {"features": {"dtype": "float32", "shape": [None, 8]}}
    assert "head" not in card and not (out / "labels.txt").exists()
    assert max(card["parity"]["embed_images_max_abs_diff"].values()) <= 1e-5
    assert set(card["parity"]["saved_model_max_abs_diff"]) == {"1", "7", "32"}
    assert max(card["parity"]["saved_model_max_abs_diff"].values()) <= 1e-5
    assert card["parity"]["tflite_max_abs_diff"] <= 1e-4


def test_card_hashes_match_every_file(exported):
    _, out = exported
    card = json.loads((out / "model_card.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"model_card.json"}
    assert set(card["files"]) == on_disk
    for relative, digest in card["files"].items():
        assert hashlib.sha256((out / relative).read_bytes()).hexdigest() == digest, relative


def test_saved_model_signature_and_parity(exported):
    encoder, out = exported
    serving = tf.saved_model.load(str(out / "1")).signatures["serving_default"]
    _, inputs = serving.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].dtype == tf.float32 and inputs["images"].shape.as_list() == [None, SIZE, SIZE, 3]
    assert list(serving.structured_outputs) == ["features"]
    assert serving.structured_outputs["features"].shape.as_list() == [None, 8]
    images = random_images(32, seed=11)
    for n in BATCH_SIZES:
        expected = encoder(images[:n], training=False).numpy()
        got = serving(images=tf.constant(images[:n]))["features"].numpy()
        assert got.shape == (n, 8)
        assert np.max(np.abs(got - expected)) <= 1e-5, n


def test_tflite_signature_and_parity(exported):
    from ai_edge_litert.interpreter import Interpreter

    encoder, out = exported
    interpreter = Interpreter(model_path=str(out / "encoder.tflite"))
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["images"], "outputs": ["features"]}}
    runner = interpreter.get_signature_runner("serving_default")
    detail = runner.get_input_details()["images"]
    assert detail["dtype"] == np.float32
    assert list(detail["shape_signature"]) == [-1, SIZE, SIZE, 3]  # dynamic batch kept
    images = random_images(32, seed=12)
    for n in BATCH_SIZES:  # one runner, three batch sizes: it resizes itself
        expected = encoder(images[:n], training=False).numpy()
        got = runner(images=images[:n])["features"]
        assert got.shape == (n, 8)
        assert np.max(np.abs(got - expected)) <= 1e-4, n


def test_saved_model_runs_with_tensorflow_alone(exported, tmp_path):
    encoder, out = exported
    images = random_images(3, seed=13)
    np.save(tmp_path / "images.npy", images)
    run_python_without_sslzoo(f"""
        import numpy as np, tensorflow as tf
        served = tf.saved_model.load({str(out / "1")!r})
        features = served.signatures["serving_default"](images=tf.constant(np.load("images.npy")))["features"]
        np.save("features.npy", features.numpy())
    """, cwd=tmp_path)
    features = np.load(tmp_path / "features.npy")
    assert np.max(np.abs(features - encoder(images, training=False).numpy())) <= 1e-5


def test_refuses_to_overwrite_without_force(exported):
    _, out = exported
    before = snapshot(out)
    with pytest.raises(ExportExistsError) as error:
        export_encoder(tiny_encoder(seed=5), out, image_size=SIZE, card=CARD)
    assert str(out) in str(error.value) and "--force" in str(error.value)
    assert snapshot(out) == before
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp folder left


def test_force_replaces_atomically(tmp_path):
    out = tmp_path / "model"
    export_encoder(tiny_encoder(seed=1), out, image_size=SIZE, card={"method": "first"})
    replacement = tiny_encoder(seed=2)
    export_encoder(replacement, out, image_size=SIZE, card={"method": "second"}, force=True)
    assert json.loads((out / "model_card.json").read_text())["method"] == "second"
    served = tf.saved_model.load(str(out / "1")).signatures["serving_default"]
    images = random_images(4)
    got = served(images=tf.constant(images))["features"].numpy()
    assert np.max(np.abs(got - replacement(images, training=False).numpy())) <= 1e-5
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # old copy and temp folder both gone


def _fail(*args, **kwargs):
    raise RuntimeError("injected failure in TFLite conversion")


def test_failure_mid_export_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(exporter_module, "convert_to_tflite", _fail)
    with pytest.raises(RuntimeError, match="injected"):
        export_encoder(tiny_encoder(), tmp_path / "model", image_size=SIZE, card=CARD)
    assert list(tmp_path.iterdir()) == []


def test_failure_during_forced_export_keeps_existing(tmp_path, monkeypatch):
    out = tmp_path / "model"
    export_encoder(tiny_encoder(seed=1), out, image_size=SIZE, card=CARD)
    before = snapshot(out)
    monkeypatch.setattr(exporter_module, "convert_to_tflite", _fail)
    with pytest.raises(RuntimeError, match="injected"):
        export_encoder(tiny_encoder(seed=2), out, image_size=SIZE, card=CARD, force=True)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_parity_miss_raises_and_writes_nothing(tmp_path, monkeypatch):
    real = exporter_module.saved_model_features
    monkeypatch.setattr(exporter_module, "saved_model_features", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(ExportParityError, match="SavedModel"):
        export_encoder(tiny_encoder(), tmp_path / "model", image_size=SIZE, card=CARD)
    assert list(tmp_path.iterdir()) == []


def _features_scaled_by(factor):
    """The tiny encoder with its features multiplied by `factor` (a built-in Rescaling layer)."""
    encoder = tiny_encoder()
    return keras.Model(encoder.input, keras.layers.Rescaling(factor)(encoder.output))


def test_parity_is_judged_relative_to_the_features_magnitude(tmp_path, monkeypatch):
    # Features in the hundreds (a Barlow Twins encoder's) differ by one float32 ulp, ~1.5e-5, between two
    # correct graphs; the tolerance scales with the largest |feature| above 1, so such an export passes...
    encoder = _features_scaled_by(1000.0)
    scale = float(np.max(np.abs(encoder.predict(random_images(32), verbose=0))))
    assert scale > 100
    real = exporter_module.saved_model_features
    monkeypatch.setattr(exporter_module, "saved_model_features", lambda *a, **k: real(*a, **k) + 0.5e-5 * scale)
    export_encoder(encoder, tmp_path / "ok", image_size=SIZE, card=CARD)
    # ...while a miss of 2x the relative tolerance still fails and writes nothing.
    monkeypatch.setattr(exporter_module, "saved_model_features", lambda *a, **k: real(*a, **k) + 2e-5 * scale)
    with pytest.raises(ExportParityError, match="largest magnitude"):
        export_encoder(encoder, tmp_path / "miss", image_size=SIZE, card=CARD)
    assert not (tmp_path / "miss").exists()


class PrintingLayer(keras.layers.Layer):
    """An encoder layer with a planted tf.print: must never reach an export."""

    def call(self, inputs):
        tf.print("features leak", tf.reduce_mean(inputs))
        return inputs


def test_planted_print_in_module_is_refused(tmp_path):
    class Encoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, images):
            tf.print("leak", tf.shape(images))
            return {"features": tf.reduce_mean(images, axis=[1, 2])}

    module = Encoder()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.__call__})
    ops = graph_ops(tmp_path / "sm")
    assert "PrintV2" in ops
    with pytest.raises(DisallowedOpsError, match="PrintV2"):
        check_graph_ops(ops)
    # Every way sslzoo loads a SavedModel (converters included) checks the graph first.
    for load in (load_saved_model, convert_to_tflite, lambda d: convert_variant(d, "dynamic"),
                 lambda d: convert_to_onnx(d, tmp_path / "encoder.onnx")):
        with pytest.raises(DisallowedOpsError, match=r"PrintV2 \(print, in function __inference___call___"):
            load(tmp_path / "sm")
    assert not (tmp_path / "encoder.onnx").exists()


def test_planted_print_in_encoder_is_refused_by_export(tmp_path):
    encoder = tiny_encoder(extra_layer=PrintingLayer())
    with pytest.raises(DisallowedOpsError, match="PrintV2"):
        export_encoder(encoder, tmp_path / "model", image_size=SIZE, card=CARD)
    assert list(tmp_path.iterdir()) == []


def test_graph_check_scope_excludes_only_the_saver(exported):
    _, out = exported
    serving = graph_ops(out / "1")
    everything = graph_ops(out / "1", scope="all")
    check_graph_ops(serving)  # a clean export passes
    assert {"Conv2D", "Relu"} <= serving
    # The checkpoint save/restore functions are in the file but not reachable from any signature.
    assert {"SaveV2", "RestoreV2"} <= everything and not {"SaveV2", "RestoreV2"} & serving
    for op, category in [("ReadFile", "file_read"), ("WriteFile", "file_write"), ("Print", "print"),
                         ("RestoreV2", "checkpoint_io"), ("EagerPyFunc", "python_code"),
                         ("ReadFileV9", "file_io")]:
        with pytest.raises(DisallowedOpsError, match=category):
            check_graph_ops(serving | {op})


def test_rejects_lambda_encoder_and_reserved_card_keys(tmp_path):
    encoder = tiny_encoder(extra_layer=keras.layers.Lambda(lambda t: t * 1.0))
    with pytest.raises(ValueError, match="Lambda"):
        export_encoder(encoder, tmp_path / "a", image_size=SIZE, card=CARD)
    with pytest.raises(ValueError, match="files"):
        export_encoder(tiny_encoder(), tmp_path / "b", image_size=SIZE, card={"files": {}})
    assert list(tmp_path.iterdir()) == []


def test_onnx_export_matches_keras_in_onnxruntime(tmp_path):
    import onnxruntime

    encoder = tiny_encoder(seed=5)
    out = export_encoder(encoder, tmp_path / "onnx", image_size=SIZE, card=CARD, onnx=True)
    card = json.loads((out / "model_card.json").read_text())
    assert card["onnx"]["file"] == "encoder.onnx" and card["onnx"]["max_abs_diff"] <= 1e-4
    assert "encoder.onnx" in card["files"]
    session = onnxruntime.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    images = random_images(7, seed=21)
    (features,) = session.run(["features"], {"images": images})
    np.testing.assert_allclose(features, encoder(images, training=False).numpy(), atol=1e-4)
