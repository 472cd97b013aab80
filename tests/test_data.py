"""Tests for sslzoo.data: robust folder decoding, folder errors, the split, the pipeline, the shared CIFAR folder."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sslzoo.config import DataConfig
from sslzoo.data import DataError, load_splits, make_pipeline
from sslzoo.data.decode import decode_files, decode_image
from sslzoo.data.splits import stratified_split

CIFAR_TRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10" / "train"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RED = (200, 40, 90)
JPEG_TOLERANCE = 4


# --- fixtures: image files of every awkward kind --------------------------------------------------------


def _write_png16(path, pixels):
    """Writes uint16 [H, W, 3] as a 16-bit RGB PNG (PIL cannot write 16-bit RGB)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                           + chunk(b"IEND", b""))


def _noise(size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, [size, size, 3], dtype=np.uint8)


def make_good_images(directory):
    """Writes decodable files of every awkward kind; returns {file name: expected RGB colour or None}."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), RED).save(d / "rgb.jpg", quality=95)
    Image.new("RGB", (48, 48), RED).save(d / "big.jpg", quality=95)  # resized
    Image.new("RGB", (64, 40), RED).save(d / "wide.png")  # resized, not square
    Image.new("L", (32, 32), 77).save(d / "gray.jpg", quality=95)
    Image.new("RGBA", (32, 32), RED + (10,)).save(d / "rgba.png")
    Image.new("RGB", (32, 32), RED).convert("P", palette=Image.ADAPTIVE).save(d / "palette.png")
    Image.new("CMYK", (32, 32), (10, 200, 100, 20)).save(d / "cmyk.jpg", quality=95)
    _write_png16(d / "rgb16.png", np.tile(np.array([1000, 40000, 65280], np.uint16), [32, 32, 1]))
    Image.fromarray(np.full((32, 32), 1000, np.uint16)).save(d / "gray16.png")
    Image.new("RGB", (32, 32), RED).save(d / "anim.gif", save_all=True,
                                         append_images=[Image.new("RGB", (32, 32), (0, 0, 255))])
    Image.new("RGB", (32, 32), RED).save(d / "image.bmp")
    Image.new("RGB", (32, 32), RED).save(d / "png_named.jpg", format="PNG")
    cmyk_reference = tuple(Image.open(d / "cmyk.jpg").convert("RGB").getpixel((0, 0)))
    # 16 bit scales by 255/65535 with rounding: truncating to the high byte would give (3, 156, 255).
    return {"rgb.jpg": RED, "big.jpg": RED, "wide.png": RED, "gray.jpg": (77, 77, 77), "rgba.png": RED,
            "palette.png": RED, "cmyk.jpg": cmyk_reference, "rgb16.png": (4, 156, 254), "gray16.png": (4, 4, 4),
            "anim.gif": RED, "image.bmp": RED, "png_named.jpg": RED}


def make_bad_images(directory):
    """Writes undecodable files; returns their names."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "zero.jpg").write_bytes(b"")
    Image.fromarray(_noise(32)).save(d / "full.jpg", quality=90)
    encoded = (d / "full.jpg").read_bytes()
    (d / "full.jpg").unlink()
    (d / "truncated.jpg").write_bytes(encoded[: len(encoded) // 2])
    (d / "random.png").write_bytes(np.random.default_rng(1).bytes(700))
    return ["zero.jpg", "truncated.jpg", "random.png"]


def make_class_folder(root, classes=("a", "b", "c"), per_class=10, size=16):
    """root/<class>/<i>.png with class c's images a solid grey of 20 + 100 * c."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (20 + 100 * c,) * 3).save(root / name / f"{i:03d}.png")
    return root


def folder_config(path, **overrides):
    return DataConfig(source="folder", path=str(path), image_size=32, **overrides)


# --- decoding -----------------------------------------------------------------------------------------


def test_every_decodable_kind_comes_out_rgb_uint8_with_its_colour(tmp_path):
    expected = make_good_images(tmp_path)
    names = sorted(expected)
    images, ok = decode_files([str(tmp_path / n) for n in names], image_size=32)
    assert ok.tolist() == list(range(len(names)))
    assert images.dtype == np.uint8 and images.shape == (len(names), 32, 32, 3)
    for name, image in zip(names, images):
        colour = np.asarray(expected[name], np.int32)
        exact = name.endswith((".png", ".bmp", ".gif")) or name == "png_named.jpg"
        tolerance = 0 if exact else JPEG_TOLERANCE
        assert np.abs(image.astype(np.int32) - colour).max() <= tolerance, (name, image[0, 0], colour)
    gray = images[names.index("gray.jpg")]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])


def test_decoding_eagerly_equals_decoding_inside_tf_data(tmp_path):
    expected = make_good_images(tmp_path)
    paths = [str(tmp_path / n) for n in sorted(expected)]
    images, _ = decode_files(paths, image_size=24)
    for path, image in zip(paths, images):
        eager = decode_image(tf.io.read_file(path), 24).numpy()
        assert np.array_equal(eager, image), path


def test_undecodable_files_are_skipped_and_named(tmp_path):
    expected = make_good_images(tmp_path)
    bad = make_bad_images(tmp_path)
    names = sorted(expected) + bad
    images, ok = decode_files([str(tmp_path / n) for n in names], image_size=32)
    assert len(images) == len(ok) == len(expected)
    assert sorted(set(range(len(names))) - set(ok.tolist())) == [names.index(b) for b in bad]


def test_bad_fraction_over_the_limit_raises_a_helpful_error(tmp_path):
    make_good_images(tmp_path / "red")
    make_good_images(tmp_path / "other")
    bad = make_bad_images(tmp_path / "red")
    with pytest.raises(DataError) as info:
        load_splits(folder_config(tmp_path, max_bad_fraction=0.05))
    message = str(info.value)
    assert "3 of 27" in message and "11.11%" in message
    assert any(name in message for name in bad)
    assert "--set data.max_bad_fraction=0.12" in message and "remove" in message


def test_folder_within_the_bad_limit_loads_and_reports_the_bad_files(tmp_path, caplog):
    make_good_images(tmp_path / "red")
    make_good_images(tmp_path / "other")
    bad = make_bad_images(tmp_path / "red")
    splits = load_splits(folder_config(tmp_path, max_bad_fraction=0.2))
    assert splits.class_names == ["other", "red"]
    assert len(splits.train) + len(splits.val) == 24
    for part in (splits.train, splits.val):
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == (32, 32, 3)
        assert part.labels.dtype == np.int32
    stats = splits.stats
    assert stats["source"] == "folder" and stats["files"] == 27 and stats["bad_images"] == 3
    assert stats["bad_fraction"] == pytest.approx(3 / 27)
    assert sorted(Path(p).name for p in stats["bad_examples"]) == sorted(bad)
    assert "3 of 27 images" in caplog.text


def test_missing_folder_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist.*<class name>"):
        load_splits(folder_config(tmp_path / "nowhere"))


def test_empty_folder_raises(tmp_path):
    with pytest.raises(DataError, match="empty.*<root>/<class name>/<image files>"):
        load_splits(folder_config(tmp_path))


def test_folder_without_class_subfolders_raises(tmp_path):
    Image.new("RGB", (8, 8), RED).save(tmp_path / "loose.png")
    with pytest.raises(DataError, match="1 images directly but no class subfolders"):
        load_splits(folder_config(tmp_path))


def test_class_subfolders_without_images_raise(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no image files"):
        load_splits(folder_config(tmp_path))


def test_folder_labels_follow_sorted_class_names_and_max_examples_decodes_only_the_subset(tmp_path):
    make_class_folder(tmp_path, classes=("zebra", "ant", "moth"))
    splits = load_splits(folder_config(tmp_path, max_examples=12, val_fraction=0.25))
    assert splits.class_names == ["ant", "moth", "zebra"]
    assert splits.stats["files"] == 12
    assert np.bincount(splits.train.labels).tolist() == [3, 3, 3]
    assert np.bincount(splits.val.labels).tolist() == [1, 1, 1]
    # Class folder "zebra" (label 2) was written with grey 20, "ant" with 120, "moth" with 220.
    for part in (splits.train, splits.val):
        grey = part.images[:, 0, 0, 0]
        assert np.array_equal(grey, np.array([120, 220, 20])[part.labels])


# --- the split ----------------------------------------------------------------------------------------


LABELS = np.repeat([0, 1, 2], [50, 30, 20])


def test_split_is_deterministic_disjoint_and_stratified():
    train, val = stratified_split(LABELS, val_fraction=0.1, seed=3)
    again_train, again_val = stratified_split(LABELS, val_fraction=0.1, seed=3)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not set(train) & set(val)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(LABELS)))
    assert np.bincount(LABELS[val]).tolist() == [5, 3, 2]


def test_split_differs_for_another_seed():
    _, val_a = stratified_split(LABELS, val_fraction=0.1, seed=0)
    _, val_b = stratified_split(LABELS, val_fraction=0.1, seed=1)
    assert not np.array_equal(val_a, val_b)
    assert np.bincount(LABELS[val_b]).tolist() == [5, 3, 2]


def test_max_examples_takes_a_stratified_subset_before_splitting():
    train, val = stratified_split(LABELS, val_fraction=0.1, seed=0, max_examples=40)
    assert len(train) + len(val) == 40 and not set(train) & set(val)
    assert np.bincount(LABELS[np.concatenate([train, val])]).tolist() == [20, 12, 8]
    assert np.bincount(LABELS[val]).tolist() == [2, 1, 1]
    assert np.array_equal(train, stratified_split(LABELS, val_fraction=0.1, seed=0, max_examples=40)[0])


def test_a_split_without_val_examples_raises(tmp_path):
    make_class_folder(tmp_path, per_class=3)
    with pytest.raises(DataError, match="0 val examples"):
        load_splits(folder_config(tmp_path, val_fraction=0.1))


# --- the pipeline -------------------------------------------------------------------------------------


N = 50


def _indexed_images(n=N, size=4):
    """Image i is filled with the value i, and its label is i: batches reveal the order."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], [n, size, size, 3]).copy()
    return images, np.arange(n, dtype=np.int32)


def _batches(dataset):
    return [(b["images"].numpy(), b["labels"].numpy()) for b in dataset]


def test_pipeline_yields_float01_batches_matching_their_labels():
    images, labels = _indexed_images()
    dataset = make_pipeline(images, labels, batch_size=8, seed=1, num_epochs=2)
    assert dataset.cardinality().numpy() == 2 * (N // 8)
    batches = _batches(dataset)
    assert len(batches) == 12
    for batch_images, batch_labels in batches:
        assert batch_images.dtype == np.float32 and batch_images.shape == (8, 4, 4, 3)
        assert batch_labels.dtype == np.int32
        assert 0.0 <= batch_images.min() and batch_images.max() <= 1.0
        np.testing.assert_allclose(batch_images[:, 0, 0, 0], batch_labels / 255.0, rtol=1e-6)


def test_an_epoch_started_directly_reproduces_that_epoch_of_a_full_run():
    images, labels = _indexed_images()
    full = _batches(make_pipeline(images, labels, batch_size=8, seed=7, first_epoch=0, num_epochs=3))
    resumed = _batches(make_pipeline(images, labels, batch_size=8, seed=7, first_epoch=2, num_epochs=1))
    per_epoch = N // 8
    assert len(resumed) == per_epoch
    for (a_images, a_labels), (b_images, b_labels) in zip(full[2 * per_epoch:], resumed):
        assert np.array_equal(a_labels, b_labels) and np.array_equal(a_images, b_images)


def test_steps_per_epoch_takes_a_fresh_prefix_of_every_epoch():
    images, labels = _indexed_images()
    full = _batches(make_pipeline(images, labels, batch_size=8, seed=3, num_epochs=2))
    short = _batches(make_pipeline(images, labels, batch_size=8, seed=3, num_epochs=2, steps_per_epoch=2))
    per_epoch = N // 8
    assert len(short) == 4
    # Epoch e of the short run is the first two batches of epoch e of the full run.
    for e in range(2):
        for i in range(2):
            assert np.array_equal(short[2 * e + i][1], full[e * per_epoch + i][1])


def test_epochs_are_different_permutations():
    images, labels = _indexed_images()
    batches = _batches(make_pipeline(images, labels, batch_size=10, seed=0, num_epochs=3, drop_remainder=False))
    orders = [np.concatenate([b[1] for b in batches[e * 5:(e + 1) * 5]]) for e in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(N))
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    other_seed = _batches(make_pipeline(images, labels, batch_size=10, seed=1, drop_remainder=False))
    assert not np.array_equal(np.concatenate([b[1] for b in other_seed]), orders[0])


def test_shuffle_false_keeps_the_stored_order_and_keeps_the_remainder():
    images, labels = _indexed_images()
    batches = _batches(make_pipeline(images, labels, batch_size=16, shuffle=False, drop_remainder=False))
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    assert np.concatenate([b[1] for b in batches]).tolist() == list(range(N))


def test_augment_gets_a_distinct_reproducible_seed_per_batch():
    images, labels = _indexed_images()

    def augment(batch_images, batch_labels, seed):
        assert seed.dtype == tf.int32 and seed.shape == (2,)
        noise = tf.random.stateless_uniform([], seed=seed)
        return {"views": batch_images + noise, "seed": seed, "labels": batch_labels}

    def seeds(first_epoch, num_epochs, seed=0):
        dataset = make_pipeline(images, labels, batch_size=8, seed=seed, first_epoch=first_epoch,
                                num_epochs=num_epochs, augment=augment)
        return [tuple(b["seed"].numpy()) for b in dataset]

    full = seeds(0, 3)
    assert len(set(full)) == len(full) == 18
    assert seeds(2, 1) == full[12:]
    assert not set(seeds(0, 3, seed=5)) & set(full)


def test_pipeline_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        make_pipeline(np.zeros([4, 4, 4, 3], np.float32), np.zeros([4]), batch_size=2)


# --- the shared CIFAR-10 folder -------------------------------------------------------------------------


def test_shared_cifar10_folder_loads_a_small_subset():
    assert CIFAR_TRAIN.is_dir(), (
        f"the shared CIFAR-10 image folder is missing at {CIFAR_TRAIN.resolve()}: it should hold "
        f"<class>/*.jpg for the 10 CIFAR-10 classes (50,000 training images)")
    splits = load_splits(folder_config(CIFAR_TRAIN, max_examples=200))
    assert splits.class_names == CIFAR_CLASSES
    assert splits.train.images.shape == (180, 32, 32, 3) and splits.val.images.shape == (20, 32, 32, 3)
    assert splits.train.images.dtype == np.uint8
    assert np.bincount(splits.val.labels, minlength=10).tolist() == [2] * 10
    assert splits.stats["files"] == 200 and splits.stats["bad_images"] == 0
    assert splits.train.images.std() > 20  # real photos, not blank decodes
