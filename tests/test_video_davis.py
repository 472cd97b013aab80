"""Real-video tracking end to end on a DAVIS-layout folder the test writes: training on the frames (no masks),
the DAVIS protocol with its baselines, export, and `sslzoo track` reproducing the run's J from the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslzoo.video.davis import read_mask, video_j
from sslzoo.video.generator import generate_clips

ROOT = Path(__file__).resolve().parents[1]
VIDEOS, FRAMES = ("bear", "car-shadow", "dog"), 8


def write_davis_layout(root: Path) -> None:
    """48x80 JPEG frames: a generated clip beside another one (unannotated distractors); 0/255 PNG masks
    (DAVIS-2016) of the left clip's most visible object."""
    clips = generate_clips(2 * len(VIDEOS), FRAMES, 48, seed=11)
    for index, name in enumerate(VIDEOS):
        left, right = 2 * index, 2 * index + 1
        ids, counts = np.unique(clips.masks[left, 0], return_counts=True)
        target = ids[1:][np.argmax(counts[1:])]
        (root / "JPEGImages" / name).mkdir(parents=True)
        (root / "Annotations" / name).mkdir(parents=True)
        for t in range(FRAMES):
            frame = np.concatenate([clips.frames[left, t], clips.frames[right, t, :, :32]], axis=1)
            Image.fromarray(frame).save(root / "JPEGImages" / name / f"{t:05d}.jpg", quality=95)
            mask = np.zeros([48, 80], np.uint8)
            mask[:, :48] = np.where(clips.masks[left, t] == target, 255, 0)
            Image.fromarray(mask, mode="L").save(root / "Annotations" / name / f"{t:05d}.png")


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def davis_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    write_davis_layout(root / "DAVIS")
    result = run("train.py", "--config", "zoo_configs/video_colorization_convnet_small_davis.yaml", "--quiet",
                 "--set", f"data.path={root}/DAVIS/JPEGImages", f"data.annotations_path={root}/DAVIS/Annotations",
                 "data.image_size=32", "data.track_size=32", "data.frame_step=1", "data.eval_clips=3",
                 "data.eval_clip_length=6", "encoder.options.blocks=2", "trainer.epochs=1", "trainer.batch_size=4",
                 "eval.linear_epochs=1", "--output", str(root / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root, json.loads((root / "run" / "metrics.json").read_text())


def test_training_and_the_davis_protocol_on_a_davis_layout_folder(davis_run):
    root, metrics = davis_run
    annotated = metrics["tracking"]["annotated"]
    assert metrics["data"]["annotated_videos"] == list(VIDEOS)
    # 48x80 frames at a 32 px short side -> 32x56 (long side to a multiple of 8); features at 1/2.
    assert annotated["frame_size"] == [32, 56] and annotated["stride"] == 2 and annotated["frames"] == 3 * FRAMES
    for tracker in ("learned", "random_init", "learned_1_reference", "copy_first_mask", "raw_pixels_rgb",
                    "raw_pixels_grey"):
        per_video = annotated[tracker]["per_video"]
        assert sorted(per_video) == sorted(VIDEOS) and all(0.0 <= j <= 100.0 for j in per_video.values())
        assert annotated[tracker]["j_mean"] == pytest.approx(np.mean(list(per_video.values())), abs=0.01)
    assert metrics["j_mean_annotated"] == annotated["learned"]["j_mean"]
    # Copying the first mask, hand-computed from the mask files: J over frames 1..T-1 at 48x80.
    for name in VIDEOS:
        truth = np.stack([read_mask(str(root / "DAVIS" / "Annotations" / name / f"{t:05d}.png"))
                          for t in range(FRAMES)])
        unions = [(truth[0] | truth[t]).sum() for t in range(1, FRAMES)]
        ious = [(truth[0] & truth[t]).sum() / union if union else 1.0 for t, union in zip(range(1, FRAMES), unions)]
        assert annotated["copy_first_mask"]["per_video"][name] == pytest.approx(100 * np.mean(ious), abs=0.01)
    table = (root / "run" / "tracking.md").read_text()
    assert all(f"| {name} |" in table for name in VIDEOS) and "| **mean** |" in table
    for name in VIDEOS:
        with Image.open(root / "run" / f"tracking_{name}.png") as strip:
            assert strip.format == "PNG"


def test_sslzoo_track_on_the_export_reproduces_the_runs_tracking(davis_run):
    root, metrics = davis_run
    export = root / "export"
    result = run("export.py", "--run", str(root / "run"), "--output", str(export), "--no-evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    name = VIDEOS[0]
    masks_dir = root / "masks"
    args = ("-m", "sslzoo", "track", "--model", str(export), "--frames", str(root / "DAVIS" / "JPEGImages" / name),
            "--mask", str(root / "DAVIS" / "Annotations" / name / "00000.png"), "--output", str(masks_dir))
    result = run(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(masks_dir.glob("*.png"))
    assert [p.name for p in written] == [f"{t:05d}.png" for t in range(FRAMES)]
    predicted = np.stack([read_mask(str(p)) for p in written])
    truth = np.stack([read_mask(str(root / "DAVIS" / "Annotations" / name / f"{t:05d}.png")) for t in range(FRAMES)])
    assert predicted.shape == truth.shape and set(np.unique(predicted)) <= {0, 1}
    np.testing.assert_array_equal(predicted[0], truth[0])
    # The export's embedding with the card's tracker settings gives the run's own J for this video.
    assert 100 * video_j(predicted, truth) == pytest.approx(
        metrics["tracking"]["annotated"]["learned"]["per_video"][name], abs=0.01)
    # An existing output folder is never overwritten without --force.
    before = sorted((p.name, p.stat().st_mtime_ns) for p in masks_dir.iterdir())
    result = run(*args)
    assert result.returncode == 2 and "--force" in result.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in masks_dir.iterdir()) == before
