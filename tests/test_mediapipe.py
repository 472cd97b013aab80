"""MediaPipe-ready TFLite: an export's encoder runs in MediaPipe's ImageEmbedder and its classifier in
ImageClassifier, matching Keras (sslzoo.export.mediapipe_metadata; docs/mobile.md)."""

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pytest

# sslzoo[mediapipe] is in requirements.txt: without it this file fails to import, it is never skipped.
import mediapipe as mp  # noqa: E402
from mediapipe.tasks.python.core.base_options import BaseOptions  # noqa: E402
from mediapipe.tasks.python.vision import image_classifier, image_embedder  # noqa: E402

from sslzoo.export import export_encoder  # noqa: E402
from sslzoo.export import mediapipe_metadata  # noqa: E402
from sslzoo.export.tflite import convert_to_tflite  # noqa: E402

SIZE = 16
CLASS_NAMES = ["cat", "dog", "bird", "fish"]
CARD = {"method": "simclr", "encoder": "tiny", "dataset": "synthetic"}
ROOT = Path(__file__).resolve().parents[1]
# A 16x16 encoder is no int8 showcase: its size / latency target warnings are expected here.
pytestmark = pytest.mark.filterwarnings("ignore::sslzoo.export.tflite_quality.TargetWarning")


def tiny_encoder():
    keras.utils.set_random_seed(0)
    images = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.08, 0.07, 0.06])(images)
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(images, keras.layers.GlobalAveragePooling2D(name="features")(x))


def tiny_head():
    features = keras.Input((8,))
    dense = keras.layers.Dense(len(CLASS_NAMES), activation="softmax")
    head = keras.Model(features, dense(features))
    rng = np.random.default_rng(1)  # large weights: well separated top-1 classes
    dense.kernel.assign(rng.normal(scale=4.0, size=(8, len(CLASS_NAMES))).astype("float32"))
    return head


def uint8_images(count, seed):
    """Smooth colour images (blocks plus noise) as uint8, the pixels MediaPipe receives."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 4, 4, 3))
    images = np.repeat(np.repeat(coarse, SIZE // 4, axis=1), SIZE // 4, axis=2) + 0.1 * rng.standard_normal((count, SIZE, SIZE, 3))
    return np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)


def mp_image(pixels):
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))


def embed(model_path, images):
    options = image_embedder.ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                                  l2_normalize=False, quantize=False)
    with image_embedder.ImageEmbedder.create_from_options(options) as embedder:
        return np.stack([np.asarray(embedder.embed(mp_image(image)).embeddings[0].embedding) for image in images])


def cosine(a, b):
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    encoder, head = tiny_encoder(), tiny_head()
    out = tmp_path_factory.mktemp("mediapipe") / "tiny"
    export_encoder(encoder, out, image_size=SIZE, card=CARD, head=head, class_names=CLASS_NAMES, warmup=False,
                   sample_images=uint8_images(8, seed=2), tflite_variants=("float32", "dynamic", "int8"),
                   representative_images=uint8_images(200, seed=3), int8_io=True)
    return encoder, head, out


def test_card_lists_the_mediapipe_files_and_only_they_carry_metadata(exported):
    _, _, out = exported
    card = json.loads((out / "model_card.json").read_text())
    entry = card["tflite"]["mediapipe"]
    # int8_io (int8 in and out) is not something MediaPipe's embedder reads; the float-io files are.
    assert entry["image_embedder"] == ["encoder.tflite", "encoder_dynamic.tflite"]
    assert entry["image_classifier"] == "classifier.tflite"
    assert card["tflite"]["classifier"]["max_abs_diff"] <= 1e-4
    assert entry["normalization"] == {"mean": [0.0], "std": [255.0], "color_space": "RGB"}
    for name, expected in (("encoder.tflite", True), ("encoder_dynamic.tflite", True), ("encoder_int8.tflite", False),
                           ("classifier.tflite", True)):
        assert mediapipe_metadata.has_metadata((out / name).read_bytes()) == expected, name
    # The card's size is the shipped file's (metadata written before measuring).
    assert card["tflite"]["float32"]["size_bytes"] == (out / "encoder.tflite").stat().st_size


def test_metadata_leaves_the_graph_alone(exported):
    _, _, out = exported
    plain = convert_to_tflite(out / "1")
    with_metadata = (out / "encoder.tflite").read_bytes()
    assert not mediapipe_metadata.has_metadata(plain)
    assert mediapipe_metadata.same_graph(plain, with_metadata)


def test_image_embedder_matches_keras(exported):
    encoder, _, out = exported
    pixels = uint8_images(6, seed=4)
    reference = keras.ops.convert_to_numpy(encoder(pixels.astype(np.float32) / 255.0, training=False))
    for name, threshold in (("encoder.tflite", 0.999), ("encoder_dynamic.tflite", 0.99)):
        got = embed(out / name, pixels)
        assert got.shape == reference.shape, name
        assert cosine(got, reference).min() >= threshold, (name, cosine(got, reference))
    np.testing.assert_allclose(embed(out / "encoder.tflite", pixels), reference, atol=1e-4)


def test_image_classifier_matches_keras_head_with_labels_txt_names(exported):
    encoder, head, out = exported
    labels = (out / "labels.txt").read_text().splitlines()
    assert labels == CLASS_NAMES
    pixels = uint8_images(8, seed=5)
    probabilities = keras.ops.convert_to_numpy(head(encoder(pixels.astype(np.float32) / 255.0, training=False)))
    options = image_classifier.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(out / "classifier.tflite")), max_results=1)
    with image_classifier.ImageClassifier.create_from_options(options) as classifier:
        for pixel, expected in zip(pixels, probabilities):
            top = classifier.classify(mp_image(pixel)).classifications[0].categories[0]
            assert top.index == int(np.argmax(expected))
            assert top.category_name == labels[top.index]
            assert abs(top.score - float(np.max(expected))) <= 1e-4


def test_one_classifier_file_probabilities_only_with_the_labels_packed(exported):
    """classifier.tflite is the one classifier file: signature classify, images -> probabilities only
    (LiteRT gives names by argmax + labels.txt, which is also packed in the file); the SavedModel keeps
    class_ids and class_names for TF Serving."""
    import io
    import zipfile

    from sslzoo.export.saved_model import load_saved_model
    from sslzoo.export.tflite import interpreter, signature_io

    encoder, head, out = exported
    assert sorted(p.name for p in out.glob("classifier*")) == ["classifier.tflite"]
    blob = (out / "classifier.tflite").read_bytes()
    assert signature_io(blob) == {"classify": {"inputs": ["images"], "outputs": ["probabilities"]}}
    with zipfile.ZipFile(io.BytesIO(blob)) as packed:  # metadata-packed files are appended as a zip
        assert packed.read("labels.txt").decode().splitlines() == CLASS_NAMES
    pixels = uint8_images(5, seed=8)
    images = pixels.astype(np.float32) / 255.0
    reference = keras.ops.convert_to_numpy(head(encoder(images, training=False)))
    probabilities = interpreter(blob).get_signature_runner("classify")(images=images)["probabilities"]
    np.testing.assert_allclose(probabilities, reference, atol=1e-4)
    labels = (out / "labels.txt").read_text().splitlines()
    served = load_saved_model(out / "1").signatures["classify"](images=images)
    assert sorted(served) == ["class_ids", "class_names", "probabilities"]
    assert [labels[i] for i in np.argmax(probabilities, axis=-1)] == [n.decode() for n in served["class_names"].numpy()]


def test_mediapipe_refuses_a_model_without_metadata(exported, tmp_path):
    """What the metadata is for: without it MediaPipe cannot tell how to feed a float32 input."""
    _, _, out = exported
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(convert_to_tflite(out / "1"))
    with pytest.raises(Exception, match="NormalizationOptions"):
        embed(bare, uint8_images(1, seed=6))


def test_without_mediapipe_the_export_skips_metadata_with_one_log_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(mediapipe_metadata, "available", lambda: False)
    with caplog.at_level(logging.INFO, logger="sslzoo.export.exporter"):
        out = export_encoder(tiny_encoder(), tmp_path / "plain", image_size=SIZE, card=CARD, warmup=False,
                             head=tiny_head(), class_names=CLASS_NAMES)
    skipped = [r.getMessage() for r in caplog.records if "MediaPipe" in r.getMessage()]
    assert skipped == [mediapipe_metadata.SKIPPED_MESSAGE] and 'pip install "sslzoo[mediapipe]"' in skipped[0]
    card = json.loads((out / "model_card.json").read_text())
    assert "mediapipe" not in card["tflite"]
    assert sorted(p.name for p in out.glob("classifier*")) == ["classifier.tflite"]
    assert card["tflite"]["classifier"]["outputs"] == ["probabilities"]
    for name in ("encoder.tflite", "classifier.tflite"):
        assert not mediapipe_metadata.has_metadata((out / name).read_bytes()), name


SHIPPED = sorted(p.name for p in (ROOT / "exported").iterdir() if (p / "model_card.json").is_file())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_exports_are_mediapipe_ready(name):
    export = ROOT / "exported" / name
    card = json.loads((export / "model_card.json").read_text())
    entry = card["tflite"]["mediapipe"]
    encoders = sorted(p.name for p in export.glob("encoder*.tflite"))
    assert entry["image_embedder"] == encoders
    assert entry["image_classifier"] == "classifier.tflite" and not (export / "classifier_mediapipe.tflite").exists()
    assert card["tflite"]["classifier"]["outputs"] == ["probabilities"]
    assert card["tflite"]["classifier"]["max_abs_diff"] <= 1e-4
    from sslzoo.export.tflite import signature_io

    assert signature_io(export / "classifier.tflite") == {"classify": {"inputs": ["images"], "outputs": ["probabilities"]}}
    for file in encoders + [entry["image_classifier"]]:
        assert mediapipe_metadata.has_metadata((export / file).read_bytes()), file


def test_one_shipped_export_runs_in_mediapipe():
    import sslzoo

    name = "simclr_convnet_small_cifar10"
    export = ROOT / "exported" / name
    size = json.loads((export / "model_card.json").read_text())["input"]["shape"][1]
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    images = pixels.astype(np.float32) / 255.0
    reference = sslzoo.load(name).predict(images, verbose=0)
    assert cosine(embed(export / "encoder.tflite", pixels), reference).min() >= 0.999
    probabilities = sslzoo.load(name, head=True).predict(images, verbose=0)
    labels = (export / "labels.txt").read_text().splitlines()
    options = image_classifier.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(export / "classifier.tflite")), max_results=1)
    with image_classifier.ImageClassifier.create_from_options(options) as classifier:
        for pixel, expected in zip(pixels, probabilities):
            top = classifier.classify(mp_image(pixel)).classifications[0].categories[0]
            assert (top.index, top.category_name) == (int(np.argmax(expected)), labels[int(np.argmax(expected))])
