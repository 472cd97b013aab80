"""`python -m sslzoo.embed`: a folder through a shipped encoder (same preprocessing as the export), bad files
skipped, resume after an interruption, the projector files, and the neighbour search."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslzoo.embed import embed_main, neighbors_main, projector, search
from sslzoo.embed.job import EmbedOutputError, embed_folder
from sslzoo.embed.outputs import EMBEDDINGS, PATHS, SUMMARY, partial_dir, read_paths

MODEL = "simclr_convnet_small_cifar10"  # shipped in exported/, 32 px input, 128-d features
CHUNK = 4  # small chunks, so 20 files make several and resume is exercised
BATCH = 3  # a batch size that does not divide the chunk
# embed.json keys that are about the run rather than its result.
RUN_KEYS = ("created_utc", "embed_seconds", "images_per_second", "resumed_chunks")


def _picture(seed: int, size, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    base = rng.random(3)[None, None] * 255
    pixels = base * np.stack([np.sin(x * (seed + 2)), np.cos(y * (seed + 3)), x * y], -1) ** 2
    pixels = np.clip(pixels + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """22 files: two classes of assorted sizes and formats, a nested folder inside a class, an exact copy,
    a truncated JPEG (its header is fine, its data is not), a zero-byte file, and a note that is no image."""
    root = tmp_path_factory.mktemp("embed") / "images"
    sizes = [(32, 32), (48, 40), (20, 60), (100, 75), (64, 64), (33, 31), (80, 120), (40, 40)]
    for i in range(8):
        (root / "cat").mkdir(parents=True, exist_ok=True)
        _picture(i, sizes[i], "L" if i == 2 else "RGB").save(root / "cat" / f"c{i}.jpg", quality=95)
    for i in range(8):
        (root / "dog").mkdir(parents=True, exist_ok=True)
        _picture(100 + i, sizes[-1 - i], "RGBA" if i == 3 else "RGB").save(root / "dog" / f"d{i}.png")
    (root / "dog" / "puppies").mkdir()
    _picture(200, (50, 70)).save(root / "dog" / "puppies" / "p0.bmp")
    _picture(201, (36, 36)).save(root / "dog" / "puppies" / "p1.webp")
    shutil.copy(root / "cat" / "c4.jpg", root / "dog" / "puppies" / "copy_of_c4.jpg")
    good = (root / "cat" / "c3.jpg").read_bytes()
    (root / "cat" / "broken.jpg").write_bytes(good[: len(good) // 3])
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def embedded(images, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("out") / "emb"
    embed_folder(MODEL, images, output, batch_size=BATCH, chunk_size=CHUNK, progress=False)
    return output


def _expected_paths(images: Path):
    return sorted(p.relative_to(images).as_posix() for p in images.rglob("*")
                  if p.suffix in (".jpg", ".png", ".bmp", ".webp") and p.name not in ("broken.jpg", "empty.jpg"))


def test_embeddings_are_the_encoder_on_the_export_preprocessing(images, embedded):
    """Every row is the shipped encoder on its image decoded, resized (shorter side) and centre-cropped
    as the export serves: equal to the SavedModel's embed_images signature on the file's bytes."""
    import sslzoo
    from sslzoo.data.decode import read_and_decode

    embeddings = np.load(embedded / EMBEDDINGS)
    paths = read_paths(embedded)
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(paths), 128)
    pixels = np.stack([read_and_decode(str(images / p), 32).numpy() for p in paths])
    encoder = sslzoo.load(MODEL)
    expected = encoder.predict(pixels.astype(np.float32) / 255.0, verbose=0)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5, rtol=1e-5)
    served = sslzoo.load(MODEL, format="saved_model").signatures["embed_images"]
    from_bytes = served(image_bytes=[(images / p).read_bytes() for p in paths])["features"].numpy()
    np.testing.assert_allclose(embeddings, from_bytes, atol=1e-5, rtol=1e-5)


def test_paths_metadata_and_summary_line_up(images, embedded):
    paths = read_paths(embedded)
    assert paths == _expected_paths(images)  # sorted folder by folder, relative to IMAGES, nested included
    rows = (embedded / projector.METADATA).read_text().splitlines()
    assert rows[0] == "path\tclass"
    assert rows[1:] == [f"{p}\t{p.split('/')[0]}" for p in paths]  # dog/puppies/p0.bmp is a dog
    summary = json.loads((embedded / SUMMARY).read_text())
    assert summary["count"] == len(paths) == 19 and summary["dim"] == 128 and summary["dtype"] == "float32"
    assert summary["model"]["name"] == MODEL and len(summary["model"]["sha256"]) == 64
    assert summary["model"]["sha256_of"] == "model_card.json"
    assert summary["preprocessing"]["image_size"] == 32 and summary["class_names"] == ["cat", "dog"]
    assert summary["passed_over"] == {"not_image": 1}
    assert not partial_dir(embedded).exists()  # the working folder is gone once the output is published


def test_images_loose_in_the_folder_get_no_class_column(images, tmp_path, capsys):
    loose = tmp_path / "loose"
    (loose / "deeper").mkdir(parents=True)
    shutil.copy(images / "cat" / "c0.jpg", loose / "a.jpg")
    shutil.copy(images / "dog" / "d1.png", loose / "deeper" / "b.png")
    output = loose / "out"  # inside IMAGES: its own files are not embedded on a rerun
    assert embed_main([MODEL, str(loose), "--output", str(output), "--labels", "auto"]) == 0
    assert "embedded 2 images" in capsys.readouterr().out
    assert (output / projector.METADATA).read_text().splitlines() == ["a.jpg", "deeper/b.png"]  # no header
    assert json.loads((output / SUMMARY).read_text())["labels"] == "none"
    assert embed_main([MODEL, str(loose), "--output", str(output), "--overwrite"]) == 0
    assert read_paths(output) == ["a.jpg", "deeper/b.png"]
    assert embed_main([MODEL, str(loose), "--output", str(tmp_path / "o2"), "--labels", "subfolders"]) == 2
    assert "--labels" in capsys.readouterr().err


def test_module_entry_point(embedded, capsys):
    from sslzoo.embed.__main__ import main

    assert main(["neighbors", str(embedded), "--query", "0", "-k", "1"]) == 0
    assert main(["bogus"]) == 2 and "unknown command" in capsys.readouterr().err


def test_bad_files_are_listed_with_their_error_and_skipped(embedded):
    summary = json.loads((embedded / SUMMARY).read_text())
    bad = {entry["path"]: entry["error"] for entry in summary["bad"]}
    assert set(bad) == {"cat/broken.jpg", "cat/empty.jpg"}
    assert "zero-byte" in bad["cat/empty.jpg"] and "decode" in bad["cat/broken.jpg"]
    assert not set(bad) & set(read_paths(embedded))


def test_projector_files(embedded):
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorboard.plugins.projector import ProjectorConfig

    from sslzoo.data.decode import read_and_decode

    embeddings = np.load(embedded / EMBEDDINGS)
    checkpoint = tf.train.latest_checkpoint(str(embedded))  # the projector finds it this way, after the rename
    assert checkpoint is not None
    np.testing.assert_array_equal(tf.train.load_checkpoint(checkpoint).get_tensor(projector.TENSOR_NAME), embeddings)
    config = text_format.Parse((embedded / projector.PROJECTOR_CONFIG).read_text(), ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_name == projector.TENSOR_NAME and embedding.metadata_path == projector.METADATA
    assert list(embedding.tensor_shape) == list(embeddings.shape)
    assert embedding.sprite.image_path == projector.SPRITE and list(embedding.sprite.single_image_dim) == [32, 32]
    sprite = np.asarray(Image.open(embedded / projector.SPRITE))
    columns = int(np.ceil(np.sqrt(len(embeddings))))  # 19 points: 5 per row, 4 rows
    assert sprite.shape == (32 * 4, 32 * columns, 3)
    paths = read_paths(embedded)
    images = json.loads((embedded / SUMMARY).read_text())["images"]
    for i in (0, 7, 18):  # thumbnail i is image i, as the encoder saw it
        row, column = divmod(i, columns)
        np.testing.assert_array_equal(sprite[row * 32:(row + 1) * 32, column * 32:(column + 1) * 32],
                                      read_and_decode(str(Path(images) / paths[i]), 32).numpy())
    # Without tensorboard installed the same text is written by hand.
    sprite_info = {"image_path": projector.SPRITE, "single_image_dim": [32, 32]}
    assert projector._config_text_by_hand(19, 128, sprite_info) == projector.config_text(19, 128, sprite_info)
    assert projector._config_text_by_hand(19, 128, None) == projector.config_text(19, 128, None)


def test_sprite_size_stays_within_the_projector_limit():
    assert projector.thumbnail_size(19, 32) == 32 and projector.thumbnail_size(19, 224) == 64
    for n in (1, 4096, 50_000, 100_000, projector.SPRITE_MAX_IMAGES):
        side = projector.thumbnail_size(n, 224)
        columns, rows = projector.sprite_layout(n, side)
        assert side >= projector.MIN_THUMBNAIL and columns * side <= 8192 and rows * side <= 8192, n
    assert projector.thumbnail_size(projector.SPRITE_MAX_IMAGES + 1, 224) == 0  # no sprite above the cap


def test_resume_after_an_interruption_ends_with_the_same_files(images, embedded, tmp_path):
    output = tmp_path / "emb"

    def interrupt(chunk):
        if chunk == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_folder(MODEL, images, output, batch_size=BATCH, chunk_size=CHUNK, progress=False, on_chunk=interrupt)
    assert not output.exists()  # nothing half-written where the output goes
    assert sorted(p.name for p in partial_dir(output).glob("chunk-*.npz")) == ["chunk-00000.npz", "chunk-00001.npz"]
    computed = []
    summary = embed_folder(MODEL, images, output, batch_size=BATCH, chunk_size=CHUNK, progress=False,
                           on_chunk=computed.append)
    assert computed == [2, 3, 4, 5] and summary["resumed_chunks"] == 2  # 21 images in 6 chunks of 4
    assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in embedded.iterdir())
    for name in (EMBEDDINGS, PATHS, projector.METADATA, projector.SPRITE, projector.PROJECTOR_CONFIG, "checkpoint"):
        assert (output / name).read_bytes() == (embedded / name).read_bytes(), name
    first, again = (json.loads((folder / SUMMARY).read_text()) for folder in (embedded, output))
    for key in RUN_KEYS:
        first.pop(key), again.pop(key)
    assert first == again


def test_a_finished_output_is_not_overwritten_without_the_flag(images, embedded, tmp_path, capsys):
    before = (embedded / EMBEDDINGS).read_bytes()
    with pytest.raises(EmbedOutputError, match="--overwrite"):
        embed_folder(MODEL, images, embedded, progress=False)
    assert embed_main([MODEL, str(images), "--output", str(embedded)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("embed: ") and "--overwrite" in error and len(error.strip().splitlines()) == 1
    assert (embedded / EMBEDDINGS).read_bytes() == before
    # A folder that is not an embed output is refused even with the flag.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EmbedOutputError, match="non-empty"):
        embed_folder(MODEL, images, tmp_path / "mine", overwrite=True, progress=False)


def test_float16_and_overwrite(images, embedded, tmp_path):
    output = tmp_path / "emb"
    shutil.copytree(embedded, output)
    summary = embed_folder(MODEL, images, output, float16=True, overwrite=True, chunk_size=64, progress=False)
    half = np.load(output / EMBEDDINGS)
    assert half.dtype == np.float16 and summary["dtype"] == "float16"
    np.testing.assert_allclose(half.astype(np.float32), np.load(embedded / EMBEDDINGS), rtol=2e-3, atol=2e-3)
    assert read_paths(output) == read_paths(embedded)
    import tensorflow as tf

    stored = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(output))).get_tensor(projector.TENSOR_NAME)
    np.testing.assert_array_equal(stored, half)


def test_neighbors_of_a_row_start_with_itself(embedded, capsys):
    assert neighbors_main([str(embedded), "--query", "5", "-k", "3", "--backend", "numpy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rank, score, index, path = lines[2].split()
    assert (rank, index, path) == ("1", "5", read_paths(embedded)[5]) and abs(float(score) - 1) < 1e-4
    assert len(lines) == 2 + 3


def test_neighbors_of_an_image_file_embeds_it_with_the_recorded_model(images, embedded, capsys):
    paths = read_paths(embedded)
    assert neighbors_main([str(embedded), "--query", str(images / paths[9]), "-k", "2"]) == 0
    rank, score, index, _ = capsys.readouterr().out.splitlines()[2].split()
    assert int(index) == 9 and abs(float(score) - 1) < 1e-5
    assert neighbors_main([str(embedded), "--query", str(images / "cat" / "broken.jpg")]) == 2
    assert "broken.jpg" in capsys.readouterr().err


def test_duplicates_finds_the_copied_image(embedded, capsys):
    paths = read_paths(embedded)
    pair = sorted([paths.index("cat/c4.jpg"), paths.index("dog/puppies/copy_of_c4.jpg")])
    pairs, scores, total = search.duplicates(np.load(embedded / EMBEDDINGS), 0.99999, backend="numpy")
    assert [list(p) for p in pairs] == [pair] and total == 1 and scores[0] > 0.99999
    assert neighbors_main([str(embedded), "--duplicates", "0.99999"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1 pairs") and out[2].split()[1:3] == [str(pair[0]), str(pair[1])]


def test_numpy_search_matches_brute_force():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1000, 16)).astype(np.float32)
    vectors[10] = vectors[20] * 3  # same direction: cosine 1
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    scores, indices = search.top_k(vectors, queries, k=25, backend="numpy", block_rows=64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    reference = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    expected = np.argsort(-reference, axis=1, kind="stable")[:, :25]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(reference, expected, 1), atol=1e-5)
    pairs, pair_scores, total = search.duplicates(vectors, 0.6, limit=None, backend="numpy", block_rows=64)
    full = unit @ unit.T
    i, j = np.nonzero(np.triu(full >= 0.6, k=1))
    assert total == len(i) and {tuple(p) for p in pairs} == set(zip(i.tolist(), j.tolist()))
    assert (10, 20) in {tuple(p) for p in pairs}
    assert list(pair_scores) == sorted(pair_scores, reverse=True)
    top, _, total_again = search.duplicates(vectors, 0.6, limit=5, backend="numpy", block_rows=64)
    assert total_again == total and [tuple(p) for p in top] == [tuple(p) for p in pairs[:5]]


def test_without_faiss_above_the_crossover_numpy_says_faiss_would_be_faster(monkeypatch, caplog):
    monkeypatch.setattr(search, "_faiss", lambda: None)
    monkeypatch.setattr(search, "FAISS_MIN_ROWS", 100)
    with caplog.at_level(logging.WARNING, logger=search.__name__):
        assert search.choose_backend(50, queries=1000) == "numpy" and not caplog.records  # below the crossover
        assert search.choose_backend(10**6, queries=1) == "numpy" and not caplog.records  # one query: NumPy
        vectors = np.random.default_rng(0).normal(size=(101, 8)).astype(np.float32)
        scores, indices = search.top_k(vectors, vectors[:search.FAISS_MIN_QUERIES], k=1)
    assert (indices[:, 0] == np.arange(search.FAISS_MIN_QUERIES)).all()
    assert len(caplog.records) == 1 and "pip install faiss-cpu" in caplog.records[0].getMessage()
    with pytest.raises(ImportError, match="faiss-cpu"):
        search.choose_backend(10, "faiss")


def test_faiss_matches_numpy():
    import faiss  # noqa: F401  (the faiss extra is in requirements.txt: a missing one fails, never skips)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2000, 32)).astype(np.float32)
    queries = rng.normal(size=(5, 32)).astype(np.float32)
    expected = search.top_k(vectors, queries, k=10, backend="numpy")
    got = search.top_k(vectors, queries, k=10, backend="faiss")
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    pairs, _, total = search.duplicates(vectors, 0.5, limit=None, backend="faiss", block_rows=300)
    numpy_pairs, _, numpy_total = search.duplicates(vectors, 0.5, limit=None, backend="numpy", block_rows=300)
    assert total == numpy_total and {tuple(p) for p in pairs} == {tuple(p) for p in numpy_pairs}
