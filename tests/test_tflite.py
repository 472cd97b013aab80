"""TFLite variants (float32 / float16 / dynamic / int8): conversion, LiteRT running, measured quality."""

import warnings

import keras
import numpy as np
import pytest

from sslzoo.export.litert_model import TFLiteModel, dequantize, quantize
from sslzoo.export.saved_model import save_saved_model
from sslzoo.export.tflite import VARIANTS, check_representative_images, convert_variant
from sslzoo.export.tflite_quality import (
    AccuracyDropError,
    EvalData,
    TargetWarning,
    TFLiteParityError,
    check_targets,
    measure_variant,
)

SIZE = 16
NUM_CALIBRATION = 48


def _images(count, seed):
    """Smooth random colour images in [0, 1] (blocky noise upsampled): closer to photos than white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 4, 4, 3)).astype(np.float32)
    images = np.repeat(np.repeat(coarse, SIZE // 4, axis=1), SIZE // 4, axis=2)
    return np.clip(images + 0.1 * rng.standard_normal(images.shape).astype(np.float32), 0.0, 1.0)


def _encoder():
    keras.utils.set_random_seed(0)
    images = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Normalization(mean=[0.5, 0.5, 0.5], variance=[0.08, 0.08, 0.08])(images)
    for filters, strides in ((16, 1), (32, 2), (32, 1)):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU(name="feature_map" if filters == 32 and strides == 1 else None)(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(images, features, name="tiny_encoder")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("tflite_variants")
    encoder = _encoder()
    save_saved_model(encoder, root / "1", SIZE)
    calibration = _images(NUM_CALIBRATION, seed=1)
    models = {variant: convert_variant(root / "1", variant,
                                       calibration if variant == "int8" else None, min_representative=16)
              for variant in VARIANTS}
    models["int8_io"] = convert_variant(root / "1", "int8", calibration, int8_io=True, min_representative=16)
    test_images = _images(24, seed=2)
    reference = keras.ops.convert_to_numpy(encoder(test_images, training=False))
    return {"root": root, "encoder": encoder, "models": models, "images": test_images, "reference": reference}


def test_every_variant_runs_with_signature(exported):
    for name, blob in exported["models"].items():
        model = TFLiteModel(blob, num_threads=1)
        assert model.signatures == {"serving_default": {"inputs": ["images"], "outputs": ["features"]}}, name
        features = model.predict(exported["images"], batch_size=7)  # 7 does not divide 24: resizes the runner
        assert features.shape == exported["reference"].shape and features.dtype == np.float32, name
        assert np.all(np.isfinite(features)), name


def test_sizes_ordered(exported):
    sizes = {name: len(blob) for name, blob in exported["models"].items()}
    assert sizes["int8"] < sizes["float32"] and sizes["dynamic"] < sizes["float32"], sizes
    assert 0.4 <= sizes["float16"] / sizes["float32"] <= 0.75, sizes  # ~half plus the fixed flatbuffer overhead


def test_float32_parity_and_quality(exported):
    results = measure_variant(exported["models"]["float32"], exported["reference"], exported["images"],
                              runs=3, warmup=1)
    assert results["max_abs_diff"] <= 1e-4
    assert results["mean_cosine"] > 0.99999
    assert set(results["latency_ms"]) == {"1", "2"} and all(v > 0 for v in results["latency_ms"].values())
    report = check_targets(results, None, "float32")
    assert report["passed"]


def test_int8_cosine_and_int8_io_round_trip(exported):
    keras_fn = lambda x: keras.ops.convert_to_numpy(exported["encoder"](x, training=False))  # noqa: E731
    for name in ("int8", "int8_io"):
        results = measure_variant(exported["models"][name], keras_fn, exported["images"], runs=2, warmup=1)
        assert results["mean_cosine"] >= 0.98, (name, results)
    io_model = TFLiteModel(exported["models"]["int8_io"])
    assert io_model.quantized_io and io_model.input_dtype == np.int8 and io_model.output_dtype == np.int8
    scale, zero_point = io_model.input_quantization
    assert abs(scale - 1 / 255) < 1e-4 and zero_point == -128  # calibrated on [0, 1] images
    float_io = TFLiteModel(exported["models"]["int8"]).predict(exported["images"])
    int8_io = io_model.predict(exported["images"])
    assert int8_io.dtype == np.float32
    # Same quantized graph; only the io (de)quantization differs: within a couple of output steps.
    assert np.max(np.abs(int8_io - float_io)) <= 3 * io_model.output_quantization[0] + 1e-6


def test_quantize_helpers_round_trip():
    values = np.array([0.0, 0.6, 1.0, 2.0], np.float32)
    q = quantize(values, 1 / 255, -128, np.int8)
    assert q.tolist() == [-128, 25, 127, 127]  # 0.6 * 255 = 153 -> 153 - 128; 2.0 clipped at the top
    np.testing.assert_allclose(dequantize(q, 1 / 255, -128)[:3], values[:3], atol=1 / 255)


def test_unknown_variant_and_bad_arguments(exported):
    with pytest.raises(ValueError, match="float32, float16, dynamic, int8"):
        convert_variant(exported["root"] / "1", "int4")
    with pytest.raises(ValueError, match="int8_io"):
        convert_variant(exported["root"] / "1", "float16", int8_io=True)
    with pytest.raises(ValueError, match="representative_images"):
        convert_variant(exported["root"] / "1", "int8")
    with pytest.raises(ValueError, match="200..500"):
        check_representative_images(_images(50, 0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_representative_images(_images(200, 0) * 255.0)
    assert check_representative_images((_images(200, 0) * 255).astype(np.uint8)).dtype == np.float32
    with pytest.raises(ValueError, match="float32 images"):
        TFLiteModel(exported["models"]["float32"]).predict((exported["images"] * 255).astype(np.uint8))


def test_eval_data_top1(exported):
    rng = np.random.default_rng(3)
    train = (_images(40, seed=4) * 255).astype(np.uint8)
    val = (_images(20, seed=5) * 255).astype(np.uint8)
    train_labels, val_labels = rng.integers(0, 3, 40), rng.integers(0, 3, 20)
    encoder = exported["encoder"]
    keras_train = keras.ops.convert_to_numpy(encoder(train.astype(np.float32) / 255, training=False))
    keras_val = keras.ops.convert_to_numpy(encoder(val.astype(np.float32) / 255, training=False))
    from sslzoo.evaluation import knn_top1, linear_probe

    keras_knn = knn_top1(keras_train, train_labels, keras_val, val_labels, 3, k=5)
    keras_linear, head = linear_probe(keras_train, train_labels, keras_val, val_labels, 3, epochs=2)
    data = EvalData(train, train_labels, val, val_labels, 3, keras_knn, keras_linear, linear_head=head, knn_k=5)
    results = measure_variant(exported["models"]["float32"], exported["reference"], exported["images"],
                              eval_data=data, runs=1, warmup=1)
    assert results["linear_method"] == "keras_head"
    assert results["knn_top1"] == pytest.approx(keras_knn) and results["linear_top1"] == pytest.approx(keras_linear)
    assert results["knn_drop"] == pytest.approx(0.0)


def test_check_targets_accuracy_drop_logic():
    base = {"size_bytes": 1000, "latency_ms": {"1": 1.0, "2": 0.6}}
    good = {"size_bytes": 260, "mean_cosine": 0.995, "knn_top1": 58.5, "latency_ms": {"1": 0.3, "2": 0.2}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all when every target is met
        report = check_targets(good, 59.0, "int8", float32_results=base)
    assert report["passed"] and {c["name"] for c in report["checks"]} >= {"mean_cosine", "size_ratio", "knn_top1_drop"}

    with pytest.warns(TargetWarning, match="knn_top1_drop"):  # 1.5 points: warned, not raised
        report = check_targets(dict(good, knn_top1=57.5), 59.0, "int8", float32_results=base)
    assert not report["passed"]

    drop = dict(good, knn_top1=56.0, linear_top1=62.9)
    with pytest.raises(AccuracyDropError, match="knn_top1 drops 3.00"):
        check_targets(drop, {"knn_top1": 59.0, "linear_top1": 63.3}, "int8", float32_results=base)
    with pytest.warns(TargetWarning):
        report = check_targets(drop, {"knn_top1": 59.0, "linear_top1": 63.3}, "int8", allow_accuracy_drop=True)
    assert not report["passed"]

    with pytest.warns(TargetWarning, match="size_ratio|mean_cosine"):  # size and cosine misses are warnings
        report = check_targets(dict(good, size_bytes=500, mean_cosine=0.9), 59.0, "int8", float32_results=base)
    assert not report["passed"]
    with pytest.warns(TargetWarning, match="latency_ratio"):  # slow int8: reported, still passes
        report = check_targets(dict(good, latency_ms={"1": 0.9, "2": 0.5}), 59.0, "int8", float32_results=base)
    assert report["passed"]

    with pytest.raises(TFLiteParityError):
        check_targets({"max_abs_diff": 2e-4}, None, "float32")
    with pytest.raises(TFLiteParityError):
        check_targets({"max_abs_diff": float("nan")}, None, "float32")
    with pytest.raises(ValueError, match="allowed"):
        check_targets(good, None, "int4")
    with pytest.raises(KeyError):
        check_targets({}, 59.0, "dynamic")


def test_tflite_model_from_path(exported, tmp_path):
    path = tmp_path / "encoder_int8.tflite"
    path.write_bytes(exported["models"]["int8_io"])
    model = TFLiteModel(path, num_threads=2)
    assert model.path == path and model.image_size == SIZE and "int8" in repr(model)
    np.testing.assert_array_equal(model.predict(exported["images"]),
                                  TFLiteModel(exported["models"]["int8_io"]).predict(exported["images"]))
    with pytest.raises(ValueError, match="serving_default"):
        TFLiteModel(path, signature="classify")
    with pytest.raises(FileNotFoundError):
        TFLiteModel(tmp_path / "missing.tflite")
