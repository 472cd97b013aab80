"""Your own images: an unlabelled folder (any tree, bad files in it), a list file, streaming from files,
and a separate labelled folder for evaluation."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest

from sslzoo import config as config_lib
from sslzoo.data import load_splits, split_pipeline
from sslzoo.training.trainer import train_run
from tests.harness import CIFAR, ROOT

CLASSES = ("airplane", "cat", "ship")


def _cifar_files(per_class: int, offset: int = 0):
    if not CIFAR.is_dir():
        pytest.fail(f"CIFAR-10 images not found at {CIFAR}: these tests copy a few hundred of them")
    for name in CLASSES:
        files = sorted((CIFAR / name).glob("*.jpg"))[offset:offset + per_class]
        yield name, files


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (valid CRCs): decoding it would need ~W*H bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """A flat-ish unlabelled tree (nested folders, bad files of every kind) and a labelled eval folder."""
    root = tmp_path_factory.mktemp("own")
    flat = root / "photos"
    for name, files in _cifar_files(100):
        for i, path in enumerate(files):
            folder = flat / f"day{i % 3}"  # nesting that means nothing about classes
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / f"{name}_{i:03d}.jpg")
    good = next(flat.rglob("*.jpg")).read_bytes()
    (flat / "corrupt.jpg").write_bytes(good[: len(good) // 3])
    (flat / "empty.jpg").write_bytes(b"")
    (flat / "bomb.png").write_bytes(bomb_png(10_000, 10_000))
    # Just under TensorFlow's own limit: decoding it took 12 GB of memory before the header check.
    (flat / "day1" / "huge.png").write_bytes(bomb_png(23_000, 23_000))
    (flat / "notes.txt").write_text("not an image")
    (flat / ".thumbs").mkdir()
    (flat / ".thumbs" / "hidden.jpg").write_bytes(good)
    os.symlink(flat, flat / "day0" / "loop")
    labelled = root / "labelled"
    for name, files in _cifar_files(40, offset=1000):
        (labelled / name).mkdir(parents=True)
        for path in files:
            shutil.copy(path, labelled / name / path.name)
    return flat, labelled


def _data(flat, **values):
    return config_lib.from_dict({"data": {"source": "folder", "path": str(flat), "labels": "none",
                                          "max_bad_fraction": 0.05, **values}}).data


def test_every_bad_file_is_counted_and_named_and_nothing_crashes(own_data):
    flat, _ = own_data
    start = time.perf_counter()
    splits = load_splits(_data(flat))
    stats = splits.stats
    bad = {Path(p).name for p in stats["bad_examples"]}
    assert bad == {"corrupt.jpg", "empty.jpg", "bomb.png", "huge.png", "loop"}, stats["bad_examples"]
    reasons = "\n".join(stats["bad_reasons"])
    assert "max_pixels" in reasons and "zero-byte" in reasons and "could not be decoded" in reasons
    assert stats["passed_over"]["hidden"] == 1 and stats["passed_over"]["not_image"] == 1
    assert len(splits.train) + len(splits.val) == 300 and splits.class_names == []
    assert np.all(splits.train.labels == -1)
    # The 10,000 x 10,000 and 23,000 x 23,000 PNGs were refused from their headers: decoding them would have
    # taken 300 MB and 1.6 GB and seconds.
    assert time.perf_counter() - start < 60


def test_too_many_bad_files_stop_the_run_naming_them(own_data):
    flat, _ = own_data
    with pytest.raises(Exception, match="max_bad_fraction"):
        load_splits(_data(flat, max_bad_fraction=0.005))


@pytest.mark.parametrize("augmenting", [False, True])
def test_streamed_and_in_memory_batches_are_identical(own_data, augmenting):
    flat, _ = own_data
    memory = load_splits(_data(flat, cache="memory"))
    streamed = load_splits(_data(flat, cache="none"))
    assert not memory.train.streamed and streamed.train.streamed
    assert memory.train.paths == streamed.train.paths
    np.testing.assert_array_equal(memory.val.images, streamed.val.images)
    augment = None
    if augmenting:
        from sslzoo.backbones import build_encoder
        from sslzoo.methods import build_method

        augment = build_method("simclr", {}, build_encoder("convnet_small", 32, width=0.25)).augment
    kwargs = dict(batch_size=32, seed=7, first_epoch=2, num_epochs=2, augment=augment)
    pipelines = [split_pipeline(memory.train, **kwargs), split_pipeline(streamed.train, **kwargs)]
    # Without tf.data's autotuning thread, whose sleep an abandoned iterator waits out (pipeline.py).
    assert all(p.options().autotune.enabled is False for p in pipelines)
    a, b = (list(p.as_numpy_iterator()) for p in pipelines)
    assert len(a) == len(b) == 2 * (len(memory.train) // 32)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_auto_cache_streams_only_above_the_memory_limit(own_data):
    flat, _ = own_data
    assert not load_splits(_data(flat, cache="auto")).train.streamed
    assert load_splits(_data(flat, cache="auto", memory_limit_mb=0)).train.streamed


def test_a_list_file_names_the_images_relative_to_itself(own_data, tmp_path):
    flat, _ = own_data
    chosen = sorted(flat.glob("day1/*.jpg"))[:40]
    listing = tmp_path / "files.txt"
    listing.write_text("# my picks\n" + "\n".join(os.path.relpath(p, tmp_path) for p in chosen) + "\n\n")
    splits = load_splits(config_lib.from_dict({"data": {"source": "list", "path": str(listing)}}).data)
    assert sorted(map(os.path.realpath, splits.train.paths + splits.val.paths)) == sorted(str(p) for p in chosen)


SMALL = ["encoder.options.width=0.25", "method.options.head_width=16", "trainer.batch_size=32",
         "eval.linear_epochs=2", "eval.knn_k=20", "data.max_bad_fraction=0.05"]


def _config(flat, *overrides):
    return config_lib.load(ROOT / "zoo_configs/rotnet_convnet_small_synthetic.yaml",
                           [*SMALL, "data.source=folder", f"data.path={flat}", "data.labels=none", *overrides])


def test_unlabelled_training_evaluated_on_a_separate_labelled_folder(own_data, tmp_path):
    flat, labelled = own_data
    metrics = train_run(_config(flat, "trainer.epochs=1", f"eval.data_path={labelled}"), tmp_path / "run", verbose=0)
    assert {"knn_top1", "linear_top1", "random_init"} <= set(metrics)
    probe = metrics["data"]["probe"]
    assert probe["class_names"] == sorted(CLASSES) and probe["num_train"] + probe["num_val"] == 120
    assert probe["num_val"] == 24  # eval.val_fraction 0.2, stratified: 8 of each class's 40
    assert metrics["data"]["bad_images"] == 5 and metrics["data"]["class_names"] == []
    assert (tmp_path / "run" / "linear_head.keras").is_file()


def test_without_labels_the_probes_are_skipped_and_the_rest_is_still_drawn(own_data, tmp_path):
    flat, _ = own_data
    run = tmp_path / "run"
    metrics = train_run(_config(flat, "trainer.epochs=1", "data.cache=none"), run, verbose=0)
    assert metrics["evaluation"] == "skipped: no labelled data"
    assert "knn_top1" not in metrics and metrics["pretext_val"]["rotation_top1"] >= 0
    assert (run / "retrieval.png").is_file() and (run / "embedding_map.png").is_file()
    assert "skipped: no labelled data" in (run / "report.md").read_text()
    assert json.loads((run / "metrics.json").read_text())["data"]["streamed"] is True


def _weights(run):
    return keras.saving.load_model(run / "encoder.keras").get_weights()


def test_streamed_resume_matches_an_uninterrupted_run(own_data, tmp_path):
    """Epoch 2 resumed from epoch 1's checkpoint ends where the run that never stopped ends."""
    flat, _ = own_data
    config = _config(flat, "trainer.epochs=2", "data.cache=none", "eval.random_init=false")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_run(config, straight, verbose=0)
    train_run(config, resumed, verbose=0)
    # Roll the second run back to the end of epoch 1, as a kill during epoch 2 would have left it.
    checkpoints = resumed / "checkpoints"
    for path in checkpoints.glob("ckpt-2.*"):
        path.unlink()
    index = checkpoints / "checkpoint"
    index.write_text(index.read_text().replace("ckpt-2", "ckpt-1"))
    for name in ("metrics.json", "encoder.keras"):
        (resumed / name).unlink()
    metrics = train_run(config, resumed, verbose=0)
    assert metrics["resumed_from_epoch"] == 1
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_prepared_shards_train_streamed_and_each_epoch_is_reproducible(own_data, tmp_path):
    from sslzoo.prepare import main as prepare

    _, labelled = own_data
    shards = tmp_path / "shards"
    assert prepare([str(labelled), "--output", str(shards), "--shard-size-mb", "0.1"]) == 0
    data = config_lib.from_dict({"data": {"source": "tfrecord", "path": str(shards), "cache": "none"}}).data
    splits = load_splits(data)
    assert splits.train.streamed and splits.class_names == sorted(CLASSES)
    assert len(splits.train) + len(splits.val) == 120
    both = list(split_pipeline(splits.train, batch_size=16, seed=5, first_epoch=0, num_epochs=2).as_numpy_iterator())
    again = list(split_pipeline(splits.train, batch_size=16, seed=5, first_epoch=1, num_epochs=1).as_numpy_iterator())
    assert len(both) == 2 * len(again)
    for x, y in zip(both[len(again):], again):  # epoch 1 alone, as a resumed run builds it
        np.testing.assert_array_equal(x["images"], y["images"])
    assert not np.array_equal(both[0]["labels"], both[len(again)]["labels"])  # epochs differ in order
    metrics = train_run(config_lib.load(ROOT / "zoo_configs/rotnet_convnet_small_synthetic.yaml", [
        *SMALL, "trainer.batch_size=16", "data.source=tfrecord", f"data.path={shards}", "data.cache=none",
        "trainer.epochs=1"]), tmp_path / "run", verbose=0)
    assert metrics["data"]["streamed"] and "knn_top1" in metrics


def test_workers_read_only_the_shards_dealt_to_them_and_make_equal_batches(own_data, tmp_path):
    # Sharding by file under multi_worker: each worker's batches come only from the shards epoch_shards
    # deals it that epoch, every worker makes the same number of batches (the smallest share decides),
    # and the workers' augmentation seeds differ.
    import tensorflow as tf

    from sslzoo.data.tfrecord import epoch_shards, read_manifest
    from sslzoo.prepare import main as prepare

    _, labelled = own_data
    shards = tmp_path / "shards"
    assert prepare([str(labelled), "--output", str(shards), "--shard-size-mb", "0.01"]) == 0
    manifest = read_manifest(shards)
    assert len(manifest["shards"]) >= 6
    splits = load_splits(config_lib.from_dict({"data": {"source": "tfrecord", "path": str(shards),
                                                        "cache": "none"}}).data)
    train = splits.train
    # Every record's shard, read shard by shard (not through the reader under test).
    shard_of = {}
    for shard in manifest["shards"]:
        for raw in tf.data.TFRecordDataset(str(shards / shard["name"])):
            path = tf.io.parse_single_example(raw, {"image/path": tf.io.FixedLenFeature([], tf.string)})
            shard_of[path["image/path"].numpy().decode()] = shard["name"]
    shard_of_pixels = {image.tobytes(): shard_of[path]
                       for path, image in zip(train.paths, train.take(np.arange(len(train))))}
    batch, seed, epochs = 8, 3, 3
    shares = [[sum(shard_of[p] in epoch_shards(manifest, seed, e, w, 2) for p in train.paths)
               for w in range(2)] for e in range(epochs)]
    steps = train.reader.worker_steps(train, batch, seed, epochs, 2)
    assert steps == min(n // batch for share in shares for n in share) >= 1
    seeds = []
    for worker in range(2):
        elements = list(train.reader.worker_pipeline(
            train, shard_index=worker, num_shards=2, batch_size=batch, seed=seed, num_epochs=epochs,
            steps_per_epoch=steps, augment=lambda images, labels, s: {"images": images, "seed": s},
        ).as_numpy_iterator())
        assert len(elements) == epochs * steps
        for index, element in enumerate(elements):
            mine = set(epoch_shards(manifest, seed, index // steps, worker, 2))
            for image in element["images"]:
                assert shard_of_pixels[np.round(image * 255).astype(np.uint8).tobytes()] in mine
        seeds.append({tuple(element["seed"]) for element in elements})
    assert len(seeds[0]) == epochs * steps and not seeds[0] & seeds[1]
