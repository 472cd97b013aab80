"""TF Serving deployment: signatures (embed_images, classify, classify_bytes), warmup, request builders."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sslzoo.data.decode import decode_image
from sslzoo.export import DisallowedOpsError, check_graph_ops, export_encoder, graph_ops
from sslzoo.export import serving_requests as sr
from test_export import SIZE, PrintingLayer, random_images, run_python_without_sslzoo, tiny_encoder

CARD = {"method": "rotnet", "encoder": "tiny", "dataset": "synthetic"}
# A space and non-ASCII characters: names must survive the graph constant, labels.txt and the card.
CLASS_NAMES = ["airplane", "crème brûlée", "sea turtle"]
FEATURE_DIM = 8
BATCH_SIZES = (1, 7, 32)


def tiny_head(seed=0, extra_layer=None, num_classes=len(CLASS_NAMES)):
    """features -> probabilities with standardisation inside, like a run's linear_head.keras."""
    keras.utils.set_random_seed(seed)
    features = keras.Input((FEATURE_DIM,), name="features")
    x = keras.layers.Normalization(mean=[0.2] * FEATURE_DIM, variance=[0.5] * FEATURE_DIM)(features)
    if extra_layer is not None:
        x = extra_layer(x)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(features, probabilities)


def keras_probabilities(encoder, head, images):
    return head(encoder(images, training=False), training=False).numpy()


def eager_reference(encoder, contents):
    """What embed_images must equal: decode_image in eager mode, /255, then the Keras encoder."""
    decoded = np.stack([decode_image(tf.constant(c), SIZE).numpy() for c in contents])
    return encoder(decoded.astype(np.float32) / 255.0, training=False).numpy()


def encoded_images():
    """PNG and JPEG (and BMP, GIF, grayscale PNG) of different sizes, none of them SIZE x SIZE except one."""
    rng = np.random.default_rng(7)
    files = {}
    for name, (h, w), fmt, mode in [("png_16", (SIZE, SIZE), "PNG", "RGB"), ("png_40x24", (40, 24), "PNG", "RGB"),
                                    ("jpeg_33x50", (33, 50), "JPEG", "RGB"), ("jpeg_9x9", (9, 9), "JPEG", "RGB"),
                                    ("png_gray_20", (20, 20), "PNG", "L"), ("bmp_17x31", (17, 31), "BMP", "RGB"),
                                    ("gif_24", (24, 24), "GIF", "RGB")]:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
        files[name] = buffer.getvalue()
    return files


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    encoder, head = tiny_encoder(), tiny_head()
    out = tmp_path_factory.mktemp("serving") / "tiny"
    export_encoder(encoder, out, image_size=SIZE, card=CARD, sample_images=random_images(10, seed=3),
                   head=head, class_names=CLASS_NAMES)
    loaded = tf.saved_model.load(str(out / "1"))
    return encoder, head, out, loaded


def test_signature_specs_and_card(exported):
    _, _, out, loaded = exported
    assert sorted(loaded.signatures) == ["classify", "classify_bytes", "embed_images", "serving_default"]
    expected_inputs = {"serving_default": ("images", tf.float32, [None, SIZE, SIZE, 3]),
                       "classify": ("images", tf.float32, [None, SIZE, SIZE, 3]),
                       "embed_images": ("image_bytes", tf.string, [None]),
                       "classify_bytes": ("image_bytes", tf.string, [None])}
    for name, (input_name, dtype, shape) in expected_inputs.items():
        _, inputs = loaded.signatures[name].structured_input_signature
        assert list(inputs) == [input_name] and inputs[input_name].dtype == dtype
        assert inputs[input_name].shape.as_list() == shape
    for name in ("classify", "classify_bytes"):
        outputs = loaded.signatures[name].structured_outputs
        assert sorted(outputs) == ["class_ids", "class_names", "probabilities"]
        assert outputs["probabilities"].dtype == tf.float32
        assert outputs["probabilities"].shape.as_list() == [None, len(CLASS_NAMES)]
        assert outputs["class_ids"].dtype == tf.int64 and outputs["class_ids"].shape.as_list() == [None]
        assert outputs["class_names"].dtype == tf.string and outputs["class_names"].shape.as_list() == [None]
    card = json.loads((out / "model_card.json").read_text())
    assert card["head"] == {"kind": "linear_probe", "class_names": CLASS_NAMES, "num_classes": 3}
    assert sorted(s["name"] for s in card["signatures"]) == sorted(loaded.signatures)
    for key in ("saved_model", "embed_images", "classify", "classify_bytes"):
        assert max(card["parity"][f"{key}_max_abs_diff"].values()) <= 1e-5, key
    assert card["serving"]["warmup_requests"] is True


def _saved_model_cli(directory):
    cli = shutil.which("saved_model_cli")
    command = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command + ["show", "--dir", str(directory), "--all"], capture_output=True, text=True,
                            env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_saved_model_cli_lists_every_signature(exported):
    _, _, out, _ = exported
    text = _saved_model_cli(out / "1")
    # "signature_def['name']:" blocks, each listing inputs[...] / outputs[...] with dtype and shape.
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)(?=signature_def\[|\Z)", text, re.S))
    assert {"serving_default", "embed_images", "classify", "classify_bytes"} <= set(blocks)

    def tensors(block, kind):
        return {name: (dtype, shape) for name, dtype, shape in
                re.findall(kind + r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)", block)}

    image_shape = f"-1, {SIZE}, {SIZE}, 3"
    assert tensors(blocks["serving_default"], "inputs") == {"images": ("DT_FLOAT", image_shape)}
    assert tensors(blocks["serving_default"], "outputs") == {"features": ("DT_FLOAT", f"-1, {FEATURE_DIM}")}
    assert tensors(blocks["embed_images"], "inputs") == {"image_bytes": ("DT_STRING", "-1")}
    assert tensors(blocks["embed_images"], "outputs") == {"features": ("DT_FLOAT", f"-1, {FEATURE_DIM}")}
    classify_outputs = {"probabilities": ("DT_FLOAT", "-1, 3"), "class_ids": ("DT_INT64", "-1"),
                        "class_names": ("DT_STRING", "-1")}
    assert tensors(blocks["classify"], "inputs") == {"images": ("DT_FLOAT", image_shape)}
    assert tensors(blocks["classify"], "outputs") == classify_outputs
    assert tensors(blocks["classify_bytes"], "inputs") == {"image_bytes": ("DT_STRING", "-1")}
    assert tensors(blocks["classify_bytes"], "outputs") == classify_outputs


def test_every_signature_runs_with_tensorflow_alone(exported, tmp_path):
    encoder, head, out, _ = exported
    images = random_images(3, seed=21)
    files = encoded_images()
    contents = [files["png_40x24"], files["jpeg_33x50"], files["png_16"]]
    np.save(tmp_path / "images.npy", images)
    for i, c in enumerate(contents):
        (tmp_path / f"image{i}.bin").write_bytes(c)
    run_python_without_sslzoo(f"""
        import numpy as np, tensorflow as tf
        served = tf.saved_model.load({str(out / "1")!r})
        images = tf.constant(np.load("images.npy"))
        blobs = tf.constant([open(f"image{{i}}.bin", "rb").read() for i in range(3)])
        results = {{}}
        for name, outputs in [("serving_default", served.signatures["serving_default"](images=images)),
                              ("embed_images", served.signatures["embed_images"](image_bytes=blobs)),
                              ("classify", served.signatures["classify"](images=images)),
                              ("classify_bytes", served.signatures["classify_bytes"](image_bytes=blobs))]:
            for key, value in outputs.items():
                value = value.numpy()
                if value.dtype == object:
                    value = np.array([v.decode("utf-8") for v in value])
                results[name + "." + key] = value
        np.savez("results.npz", **results)
    """, cwd=tmp_path)
    got = dict(np.load(tmp_path / "results.npz"))
    features = encoder(images, training=False).numpy()
    probabilities = head(features, training=False).numpy()
    bytes_features = eager_reference(encoder, contents)
    bytes_probabilities = head(bytes_features, training=False).numpy()
    assert np.max(np.abs(got["serving_default.features"] - features)) <= 1e-5
    assert np.max(np.abs(got["embed_images.features"] - bytes_features)) <= 1e-5
    for prefix, expected in (("classify", probabilities), ("classify_bytes", bytes_probabilities)):
        assert np.max(np.abs(got[f"{prefix}.probabilities"] - expected)) <= 1e-5
        ids = got[f"{prefix}.class_ids"]
        assert ids.dtype == np.int64 and np.array_equal(ids, expected.argmax(-1))
        assert list(got[f"{prefix}.class_names"]) == [CLASS_NAMES[i] for i in ids]


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_classify_parity(exported, n):
    encoder, head, _, loaded = exported
    images = random_images(32, seed=30)[:n]
    outputs = loaded.signatures["classify"](images=tf.constant(images))
    expected = keras_probabilities(encoder, head, images)
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (n, 3)
    assert np.max(np.abs(probabilities - expected)) <= 1e-5
    ids = outputs["class_ids"].numpy()
    assert np.array_equal(ids, probabilities.argmax(-1))
    assert [s.decode() for s in outputs["class_names"].numpy()] == [CLASS_NAMES[i] for i in ids]


def test_class_names_round_trip(exported):
    _, _, out, loaded = exported
    assert (out / "labels.txt").read_text(encoding="utf-8").splitlines() == CLASS_NAMES
    assert json.loads((out / "model_card.json").read_text())["head"]["class_names"] == CLASS_NAMES
    outputs = loaded.signatures["classify"](images=tf.constant(random_images(64, seed=31)))
    names = [name.decode("utf-8") for name in outputs["class_names"].numpy()]
    assert names == [CLASS_NAMES[i] for i in outputs["class_ids"].numpy()]


def test_class_name_table_holds_every_name(exported):
    _, _, out, _ = exported
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((out / "1" / "saved_model.pb").read_bytes())
    tables = [list(node.attr["value"].tensor.string_val)
              for f in proto.meta_graphs[0].graph_def.library.function for node in f.node_def
              if node.op == "Const" and "class_name_table" in node.name]
    assert tables and all([s.decode("utf-8") for s in t] == CLASS_NAMES for t in tables)


def test_embed_images_png_jpeg_bmp_gif_any_size(exported):
    encoder, head, _, loaded = exported
    files = encoded_images()
    contents = list(files.values())
    got = loaded.signatures["embed_images"](image_bytes=tf.constant(contents))["features"].numpy()
    expected = eager_reference(encoder, contents)
    assert got.shape == (len(contents), FEATURE_DIM)
    assert np.max(np.abs(got - expected)) <= 1e-5
    for name, c in files.items():  # one at a time too (batch of 1)
        one = loaded.signatures["embed_images"](image_bytes=tf.constant([c]))["features"].numpy()
        assert np.max(np.abs(one - eager_reference(encoder, [c]))) <= 1e-5, name
    probabilities = loaded.signatures["classify_bytes"](image_bytes=tf.constant(contents))["probabilities"].numpy()
    assert np.max(np.abs(probabilities - head(expected, training=False).numpy())) <= 1e-5
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["embed_images"](image_bytes=tf.constant([b"not an image"]))


def test_graph_ops_of_full_model_pass_the_check(exported):
    _, _, out, _ = exported
    ops = graph_ops(out / "1")
    check_graph_ops(ops)
    assert {"DecodePng", "DecodeImage", "ArgMax", "GatherV2", "Softmax"} <= ops
    assert not {"ReadFile", "PrintV2", "WriteFile"} & ops


def test_planted_print_in_head_is_refused(tmp_path):
    head = tiny_head(extra_layer=PrintingLayer())
    with pytest.raises(DisallowedOpsError, match="PrintV2"):
        export_encoder(tiny_encoder(), tmp_path / "model", image_size=SIZE, card=CARD, head=head,
                       class_names=CLASS_NAMES)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"head": "HEAD"}, ValueError, "class_names"),
    ({"head": "HEAD", "class_names": ["a", "b"]}, ValueError, "2 names but the head outputs 3"),
    ({"class_names": ["a", "b", "c"]}, ValueError, "without a head"),
    ({"head": "HEAD", "class_names": ["a", "a", "b"]}, ValueError, "duplicates"),
    ({"head": "HEAD", "class_names": "abc"}, TypeError, "list of strings"),
    ({"head": "WRONG_DIM", "class_names": ["a", "b", "c"]}, ValueError, "head input shape"),
])
def test_head_arguments_are_checked_before_any_work(tmp_path, kwargs, error, match):
    kwargs = dict(kwargs)
    if kwargs.get("head") == "HEAD":
        kwargs["head"] = tiny_head()
    elif kwargs.get("head") == "WRONG_DIM":
        features = keras.Input((5,))
        kwargs["head"] = keras.Model(features, keras.layers.Dense(3, activation="softmax")(features))
    with pytest.raises(error, match=match):
        export_encoder(tiny_encoder(), tmp_path / "model", image_size=SIZE, card=CARD, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_warmup_file_parses_as_prediction_logs(exported):
    _, _, out, loaded = exported
    logs = sr.read_warmup_requests(out / "1")
    requests = [log.predict_log.request for log in logs]
    assert sorted(r.model_spec.signature_name for r in requests) == sorted(loaded.signatures)
    for request in requests:  # each warmup request is a valid call of its signature
        outputs = loaded.signatures[request.model_spec.signature_name](**sr.request_inputs(request))
        assert all(int(v.shape[0]) == 1 for v in outputs.values())


def _spec_of(loaded, signature):
    _, inputs = loaded.signatures[signature].structured_input_signature
    return inputs


def test_rest_bodies_feed_the_signatures(exported):
    encoder, head, _, loaded = exported
    images = random_images(2, seed=40)
    contents = [encoded_images()["jpeg_33x50"], encoded_images()["png_40x24"]]
    cases = [(sr.rest_predict_body(images), "features", encoder(images, training=False).numpy()),
             (sr.rest_classify_body(images), "probabilities", keras_probabilities(encoder, head, images)),
             (sr.rest_b64_body(contents), "features", eager_reference(encoder, contents)),
             (sr.rest_b64_body(contents, signature="classify_bytes"), "probabilities",
              head(eager_reference(encoder, contents), training=False).numpy())]
    for body, key, expected in cases:
        body = json.loads(json.dumps(body))  # what goes over the wire
        signature, batch = sr.parse_rest_body(body)
        spec = _spec_of(loaded, signature)
        assert set(batch) == set(spec)  # the body's instance keys are the signature's input names
        feed = {name: tf.constant(value, dtype=spec[name].dtype) for name, value in batch.items()}
        got = loaded.signatures[signature](**feed)[key].numpy()
        assert np.max(np.abs(got - expected)) <= 1e-5, signature
    b64 = sr.rest_b64_body([b"\x89PNG..."])
    assert b64 == {"signature_name": "embed_images", "instances": [{"image_bytes": {"b64": "iVBORy4uLg=="}}]}
    with pytest.raises(TypeError):
        sr.rest_b64_body(b"one bytes object")


def test_grpc_requests_match_signature_specs(exported):
    encoder, _, _, loaded = exported
    images = random_images(2, seed=41)
    contents = [encoded_images()["png_16"], encoded_images()["gif_24"]]
    requests = [sr.grpc_images_request("tiny", images), sr.grpc_images_request("tiny", images, "classify"),
                sr.grpc_bytes_request("tiny", contents), sr.grpc_bytes_request("tiny", contents, "classify_bytes",
                                                                                version=1)]
    for request in requests:
        assert request.model_spec.name == "tiny"
        spec = _spec_of(loaded, request.model_spec.signature_name)
        assert set(request.inputs) == set(spec)
        for name, proto in request.inputs.items():
            assert proto.dtype == spec[name].dtype.as_datatype_enum
        loaded.signatures[request.model_spec.signature_name](**sr.request_inputs(request))
    assert requests[-1].model_spec.version.value == 1
    got = loaded.signatures["serving_default"](**sr.request_inputs(requests[0]))["features"].numpy()
    assert np.max(np.abs(got - encoder(images, training=False).numpy())) <= 1e-5


def test_without_serving_api_export_skips_warmup(tmp_path, monkeypatch):
    monkeypatch.setattr(sr, "serving_api_available", lambda: False)
    out = export_encoder(tiny_encoder(), tmp_path / "model", image_size=SIZE, card=CARD)
    assert not (out / "1" / "assets.extra").exists() and not (out / "labels.txt").exists()
    card = json.loads((out / "model_card.json").read_text())
    assert card["serving"]["warmup_requests"] is False and "head" not in card
    assert sorted(s["name"] for s in card["signatures"]) == ["embed_images", "serving_default"]
