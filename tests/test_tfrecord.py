"""TFRecord shards (`sslzoo.data.tfrecord`) and `python -m sslzoo.prepare`: bytes kept as they are, hashes
checked, workers sharded by file, epochs reproducible, existing output never overwritten by accident."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sslzoo.data.decode import decode_image
from sslzoo.data.tfrecord import (MANIFEST, epoch_dataset, read_manifest, shard_dataset, verify_shards,
                                  write_shards)
from sslzoo.errors import DataError
from sslzoo.prepare import main

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog"]
# ~3.5 KiB noise images, so 10 KiB shards hold two or three images each.
SHARD_MB = 10 / 1024


def _make_folder(root: Path) -> dict:
    """2 classes x 5 noise images (JPEG and PNG, 40x30); returns relative path -> label."""
    rng = np.random.default_rng(0)
    files = {}
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, [30, 40, 3], dtype=np.uint8)
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(pixels).save(root / name / f"img{i}.{ext}", quality=90)
            files[f"{name}/img{i}.{ext}"] = label
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.jpg").write_bytes(b"hidden")
    return files


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("tfrecord")
    source = base / "photos"
    files = _make_folder(source)
    shards = base / "shards"
    assert main([str(source), "--output", str(shards), "--shard-size-mb", str(SHARD_MB)]) == 0
    return source, shards, files


def _raw_records(shards: Path):
    """(path, label, bytes) of every record, shard by shard in manifest order."""
    features = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                "image/label": tf.io.FixedLenFeature([], tf.int64),
                "image/path": tf.io.FixedLenFeature([], tf.string)}
    records = []
    for shard in read_manifest(shards)["shards"]:
        for raw in tf.data.TFRecordDataset(str(shards / shard["name"])):
            example = tf.io.parse_single_example(raw, features)
            records.append((example["image/path"].numpy().decode(), int(example["image/label"]),
                            example["image/encoded"].numpy()))
    return records


def _pairs(dataset):
    return [(bytes(data), int(label)) for data, label in dataset.as_numpy_iterator()]


def test_manifest_counts_match_the_folder(prepared):
    source, shards, files = prepared
    manifest = read_manifest(shards)
    assert manifest["count"] == len(files) == 10
    assert manifest["class_names"] == CLASSES
    assert manifest["class_counts"] == {"cat": 5, "dog": 5}
    assert manifest["skipped"] == []
    assert manifest["source_root"] == str(source)
    assert len(manifest["shards"]) >= 3
    n = len(manifest["shards"])
    assert [s["name"] for s in manifest["shards"]] == [f"shard-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
    assert sum(s["records"] for s in manifest["shards"]) == 10
    assert all(s["bytes"] == (shards / s["name"]).stat().st_size for s in manifest["shards"])
    assert sorted(p.name for p in shards.iterdir()) == sorted([MANIFEST] + [s["name"] for s in manifest["shards"]])
    assert not [p for p in shards.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    verify_shards(shards)


def test_records_hold_the_source_files_bytes_and_labels(prepared):
    source, shards, files = prepared
    records = _raw_records(shards)
    assert sorted(path for path, _, _ in records) == sorted(files)
    for path, label, data in records:
        assert data == (source / path).read_bytes(), path
        assert label == files[path]
        assert read_manifest(shards)["class_names"][label] == path.split("/")[0]


def test_shard_dataset_reads_every_record_in_a_fixed_order(prepared):
    _, shards, _ = prepared
    records = _pairs(shard_dataset(shards))
    assert sorted(records) == sorted((data, label) for _, label, data in _raw_records(shards))
    assert _pairs(shard_dataset(shards)) == records


def test_encoded_bytes_decode_to_the_files_pixels(prepared):
    source, shards, _ = prepared
    for path, _, data in _raw_records(shards):
        from_record = decode_image(tf.constant(data), 32).numpy()
        from_file = decode_image(tf.io.read_file(str(source / path)), 32).numpy()
        np.testing.assert_array_equal(from_record, from_file)


def test_two_workers_cover_every_record_exactly_once(prepared):
    _, shards, _ = prepared
    everything = sorted(_pairs(shard_dataset(shards)))
    workers = [_pairs(shard_dataset(shards, shard_index=i, num_shards=2)) for i in range(2)]
    assert all(workers)
    assert sorted(workers[0] + workers[1]) == everything
    epoch = [_pairs(epoch_dataset(shards, 0, 1, shard_index=i, num_shards=2)) for i in range(2)]
    assert sorted(epoch[0] + epoch[1]) == everything
    n = len(read_manifest(shards)["shards"])
    with pytest.raises(DataError, match="too few"):
        shard_dataset(shards, shard_index=0, num_shards=n + 1)


def test_epoch_order_is_reproducible_and_changes_between_epochs(prepared):
    _, shards, _ = prepared
    everything = sorted(_pairs(shard_dataset(shards)))
    first = _pairs(epoch_dataset(shards, seed=3, epoch=0))
    assert _pairs(epoch_dataset(shards, seed=3, epoch=0)) == first
    assert sorted(first) == everything
    others = [_pairs(epoch_dataset(shards, seed=3, epoch=e)) for e in (1, 2)]
    assert any(order != first for order in others)


def test_verify_names_a_changed_missing_or_miscounted_shard(prepared, tmp_path):
    _, shards, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    name = read_manifest(copy)["shards"][1]["name"]
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(DataError, match=name):
        verify_shards(copy)

    shutil.copy(shards / name, copy / name)
    verify_shards(copy)
    last = read_manifest(copy)["shards"][-1]["name"]
    (copy / last).unlink()
    with pytest.raises(DataError, match=f"{last}.*missing"):
        verify_shards(copy)

    shutil.copy(shards / last, copy / last)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["shards"][0]["records"] += 1
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=manifest["shards"][0]["name"]):
        verify_shards(copy)


def test_cli_refuses_an_existing_output_without_force(prepared, capsys):
    source, shards, _ = prepared
    before = (shards / MANIFEST).read_text()
    capsys.readouterr()
    assert main([str(source), "--output", str(shards)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "--force" in captured.err
    assert (shards / MANIFEST).read_text() == before


def test_cli_force_replaces_only_prepared_shards(prepared, tmp_path, capsys):
    source, shards, files = prepared
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    assert main([str(source), "--output", str(copy), "--force"]) == 0
    assert [s["records"] for s in read_manifest(copy)["shards"]] == [len(files)]  # 100 MiB: one shard
    assert sorted(p.name for p in copy.iterdir()) == sorted([MANIFEST, "shard-00000-of-00001.tfrecord"])

    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.txt").write_text("keep me")
    assert main([str(source), "--output", str(other), "--force"]) == 2
    assert (other / "thesis.txt").read_text() == "keep me"
    assert main([str(source), "--output", str(source / "shards"), "--force"]) == 2
    assert not (source / "shards").exists()
    assert "overlaps" in capsys.readouterr().err


def test_cli_writes_nothing_when_the_folder_is_missing(tmp_path, capsys):
    output = tmp_path / "out" / "shards"
    assert main([str(tmp_path / "no_such_folder"), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_cli_as_a_module_exits_2_on_an_existing_output(prepared):
    source, shards, _ = prepared
    result = subprocess.run([sys.executable, "-m", "sslzoo.prepare", str(source), "--output", str(shards)],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2
    # TensorFlow's C++ start-up logging may precede it on stderr; the message itself is one line.
    assert [line for line in result.stderr.splitlines() if line.startswith("prepare:")][0].count("--force") == 1


def test_unlabelled_tree_keeps_relative_paths(tmp_path):
    source = tmp_path / "tree"
    _make_folder(source / "a" / "b")
    (source / "top.png").write_bytes((source / "a" / "b" / "cat" / "img1.png").read_bytes())
    assert main([str(source), "--output", str(tmp_path / "shards"), "--labels", "none"]) == 0
    manifest = read_manifest(tmp_path / "shards")
    assert manifest["count"] == 11 and manifest["class_names"] == [] and manifest["unlabelled"] == 11
    records = _raw_records(tmp_path / "shards")
    assert [path for path, _, _ in records] == sorted(path for path, _, _ in records)
    assert "top.png" in {path for path, _, _ in records}
    assert {label for _, label, _ in records} == {-1}


def test_unreadable_and_empty_files_are_skipped_and_listed(prepared, tmp_path):
    source, _, files = prepared
    src = tmp_path / "src"
    shutil.copytree(source, src)
    (src / "cat" / "empty.jpg").write_bytes(b"")
    good = [str(src / path) for path in sorted(files)][:3]
    paths = [good[0], str(src / "cat" / "gone.jpg"), str(src / "cat" / "empty.jpg"), *good[1:]]
    manifest = write_shards(paths, [0, 0, 0, 1, 1], CLASSES, tmp_path / "out", root=src)
    assert manifest["count"] == 3
    assert {s["path"] for s in manifest["skipped"]} == {"cat/gone.jpg", "cat/empty.jpg"}
    assert all(s["reason"] for s in manifest["skipped"])
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["skipped"] == manifest["skipped"]
    verify_shards(tmp_path / "out")


def test_non_local_output_writes_shards_then_the_manifest(prepared):
    """ram:// stands in for gs:// or s3://: the path without atomic_directory, through tf.io.gfile."""
    source, _, files = prepared
    paths = [str(source / path) for path in sorted(files)]
    labels = [files[path] for path in sorted(files)]
    output = "ram://sslzoo-test/shards"
    # One record per shard and more shards than the reader opens at once: the order is the manifest's.
    manifest = write_shards(paths, labels, CLASSES, output, shard_size_mb=1e-6, root=source)
    assert len(manifest["shards"]) == len(paths)
    verify_shards(output)
    assert _pairs(shard_dataset(output)) == [(Path(p).read_bytes(), label) for p, label in zip(paths, labels)]
    with pytest.raises(DataError, match="--force"):
        write_shards(paths, labels, CLASSES, output, root=source)
    write_shards(paths, labels, CLASSES, output, root=source, force=True)
    # The forced rewrite has one shard; the first run's extra shards are gone.
    assert sorted(tf.io.gfile.listdir(output)) == [MANIFEST, "shard-00000-of-00001.tfrecord"]
    verify_shards(output)
