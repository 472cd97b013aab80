"""The per-run report: PCA and retrieval maths, history loading, the builder and its CLI."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sslzoo.evaluation import report
from sslzoo.data import DataSplits, ImageSet
from sslzoo.pictures import save_image_grid

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_pca_of_points_on_a_line_puts_all_variance_on_the_first_axis_with_a_fixed_sign():
    direction = np.array([3.0, -4.0, 0.0, 12.0]) / 13.0
    steps = np.linspace(-2.0, 5.0, 9)
    points = 1.5 + steps[:, None] * direction[None, :]
    coordinates, ratio = report.pca_2d(points)
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(coordinates[:, 1], 0.0, atol=1e-9)
    # The largest loading (the 12/13 component) is made positive, so the first coordinate grows with the
    # step along +direction, centred on the mean step; the same call twice gives the same map.
    np.testing.assert_allclose(coordinates[:, 0], steps - steps.mean(), atol=1e-9)
    flipped, _ = report.pca_2d(points[::-1])
    np.testing.assert_allclose(flipped[:, 0], (steps - steps.mean())[::-1], atol=1e-9)
    np.testing.assert_array_equal(report.pca_2d(points)[0], coordinates)


def test_pca_second_axis_is_the_next_largest_spread():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3)) * np.array([5.0, 0.1, 2.0])
    coordinates, ratio = report.pca_2d(points)
    assert ratio[0] > ratio[1] > 0 and ratio.sum() < 1
    assert np.std(coordinates[:, 0]) == pytest.approx(5.0, rel=0.1)
    assert np.std(coordinates[:, 1]) == pytest.approx(2.0, rel=0.1)


def test_nearest_neighbours_rank_by_cosine_and_find_the_query_itself_first():
    gallery = np.array([
        [1.0, 0.0],     # 0: angle 0
        [10.0, 10.0],   # 1: angle 45, long: cosine ignores length
        [0.0, 1.0],     # 2: angle 90
        [-1.0, 0.1],    # 3: ~angle 174
        [2.0, 0.5],     # 4: ~angle 14
    ])
    query = np.array([[1.0, 0.2]])  # ~angle 11: nearest 4, then 0, then 1, 2, 3
    np.testing.assert_array_equal(report.nearest_neighbours(query, gallery, 5), [[4, 0, 1, 2, 3]])
    # A Euclidean ranking would differ: gallery[1] is far away but at a small angle.
    assert np.argmax(np.linalg.norm(gallery - query, axis=1)) == 1
    # Every gallery row, as a query, finds itself first.
    found = report.nearest_neighbours(gallery, gallery, 2)
    np.testing.assert_array_equal(found[:, 0], np.arange(len(gallery)))
    assert report.nearest_neighbours(query, gallery, 50).shape == (1, 5)


def test_subsets_and_queries_are_fixed_and_spread():
    index = report.spread_subset(10, 4)
    np.testing.assert_array_equal(index, [0, 2, 5, 7])
    np.testing.assert_array_equal(report.spread_subset(3, 4), [0, 1, 2])
    labels = np.array([2, 2, 0, 1, 0, 1, 2])
    np.testing.assert_array_equal(report.pick_queries(labels, 3), [0, 2, 3])  # one per class
    np.testing.assert_array_equal(report.pick_queries(labels, 5), [0, 2, 3, 4, 5])  # round robin
    np.testing.assert_array_equal(report.pick_queries(labels, 20), np.arange(7))


def test_history_keeps_the_last_row_of_a_repeated_epoch_and_reads_na_as_nan(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,top1,val_loss\n0,2.0,0.1,NA\n1,1.5,0.2,NA\n1,1.4,0.25,NA\n2,1.0,0.3,NA\n")
    history = report.read_history(path)
    np.testing.assert_array_equal(history["epoch"], [0, 1, 2])
    np.testing.assert_array_equal(history["loss"], [2.0, 1.4, 1.0])
    assert np.isnan(history["val_loss"]).all()
    families = report.curve_families(["epoch", "loss", "val_loss", "probe_top1", "learning_rate", "l2"])
    assert families == {"loss": ["loss", "val_loss"], "accuracy": ["probe_top1"],
                        "learning rate": ["learning_rate"], "other": ["l2"]}


def _tiny_run(run_dir: Path):
    """A run folder as the trainer leaves it (before report.md), with a tiny encoder and fake data."""
    from sslzoo.backbones import build_encoder

    rng = np.random.default_rng(0)
    class_names = ["red", "green", "blue"]

    def images(count):
        labels = np.arange(count) % 3
        pictures = rng.integers(0, 60, size=(count, 16, 16, 3))
        pictures[np.arange(count), :, :, labels] += 190  # each class has its own dominant channel
        return ImageSet(pictures.astype(np.uint8), labels.astype(np.int32))

    splits = DataSplits(train=images(60), val=images(30), class_names=class_names)
    encoder = build_encoder("convnet_small", 16, width=0.25, blocks=1)
    run_dir.mkdir()
    (run_dir / "history.csv").write_text(
        "epoch,loss,rotation_top1,val_loss\n0,1.3,0.4,NA\n1,1.1,0.55,NA\n")
    save_image_grid(run_dir / "rotnet.png", [("input", splits.val.images[:4])])
    metrics = {
        "method": "rotnet", "encoder": "convnet_small", "dataset": "synthetic",
        "knn_top1": 71.25, "linear_top1": 83.5, "finetune_top1": 88.75,
        "random_init": {"knn_top1": 33.33, "linear_top1": 41.07},
        "pretext_val": {"loss": 0.9123, "rotation_top1": 0.6071},
        "pictures": ["rotnet.png"], "epochs": 2, "steps_per_epoch": 3, "batch_size": 16,
        "train_seconds": 4.2, "images_per_second": 22.9,
        "data": {"num_train": 60, "num_val": 30, "class_names": class_names},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return metrics, encoder, splits


def test_builder_writes_report_whose_links_are_valid_pngs_and_table_has_the_metrics(tmp_path):
    run = tmp_path / "run"
    metrics, encoder, splits = _tiny_run(run)
    assert report.build_report(run, metrics, encoder, splits) == "report.md"
    text = (run / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(["curves.png", "embedding_map.png", "retrieval.png", "rotnet.png"])
    for link in links:
        assert not Path(link).is_absolute()
        assert (run / link).read_bytes()[:8] == PNG_SIGNATURE, link
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert re.search(r"\| 71\.25 \| 33\.33 \| 37\.92 \|", rows["kNN"])
    assert re.search(r"\| 83\.50 \| 41\.07 \| 42\.43 \|", rows["linear probe"])
    assert re.search(r"\| 88\.75 \| – \| – \|", rows["fine-tune"])
    assert "rotation_top1 0.6071" in text and "22.9 images/s" in text
    assert "30 fixed validation images" in text and "60 training images" in text
    assert not list(run.glob(".*")), "a temporary file was left behind"


def test_builder_without_encoder_or_history_still_writes_a_report(tmp_path):
    run = tmp_path / "run"
    metrics, _, _ = _tiny_run(run)
    (run / "history.csv").unlink()
    report.build_report(run, {**metrics, "pictures": []}, features_note="no data here")
    text = (run / "report.md").read_text()
    assert "history.csv is missing" in text and "no data here" in text
    assert not re.findall(r"!\[", text)


def test_plot_curves_handles_a_one_epoch_history(tmp_path):
    history = {"epoch": np.array([0.0]), "loss": np.array([1.0]), "learning_rate": np.array([0.1])}
    assert report.plot_curves(history, tmp_path / "curves.png") == "curves.png"
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_SIGNATURE
    assert report.plot_curves({"epoch": np.array([0.0]), "val_loss": np.array([np.nan])},
                              tmp_path / "none.png") is None


def test_cli_on_a_folder_without_metrics_fails_clearly(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "sslzoo.evaluation.report", str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no metrics.json" in result.stderr and str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr


def test_rebuild_from_a_finished_run_folder(tmp_path):
    """What `python -m sslzoo.evaluation.report RUN_DIR` does: config.yaml + encoder.keras + the run's data."""
    from sslzoo import config as config_lib

    run = tmp_path / "run"
    metrics, encoder, _ = _tiny_run(run)
    config = config_lib.load(ROOT / "zoo_configs/rotnet_convnet_small_synthetic.yaml",
                             ["data.synthetic_examples=60", "data.image_size=16"])
    config_lib.dump(config, run / "config.yaml")
    encoder.save(run / "encoder.keras")
    assert report.main([str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "10 fixed validation images" in text and "50 training images" in text  # one per class held out
    for name in ("embedding_map.png", "retrieval.png", "curves.png"):
        assert (run / name).read_bytes()[:8] == PNG_SIGNATURE, name
    (run / "encoder.keras").unlink()
    report.rebuild(run)
    assert "encoder.keras or config.yaml is missing" in (run / "report.md").read_text()


def test_retrieval_canvas_frames_queries_black_and_neighbours_by_class():
    queries = np.full((2, 4, 4, 3), 100, np.uint8)
    neighbours = np.full((2, 3, 4, 4, 3), 200, np.uint8)
    same = np.array([[True, False, True], [False, False, True]])
    canvas = report.retrieval_canvas(queries, neighbours, same, border=1, gap=2)
    cell, pitch = 6, 8
    assert canvas.shape == (2 * cell + 2, 4 * cell + 3 * 2, 3)
    for r in range(2):
        top = r * pitch
        assert tuple(canvas[top, 0]) == report.FRAME_COLOURS["query"]
        assert tuple(canvas[top + 1, 1]) == (100, 100, 100)  # the image inside the frame
        for c in range(3):
            expected = report.FRAME_COLOURS["same" if same[r, c] else "other"]
            assert tuple(canvas[top, (c + 1) * pitch]) == expected
            assert tuple(canvas[top + 2, (c + 1) * pitch + 2]) == (200, 200, 200)
    assert tuple(canvas[cell, 0]) == (255, 255, 255)  # the gap between rows
