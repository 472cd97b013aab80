"""Video data: the clip generator (masks match what is drawn, deterministic), folder and TFDS sources,
and the mask-propagation scoring."""

import time

import numpy as np
import pytest
import tensorflow as tf

from sslzoo import config as config_lib
from sslzoo.data import DataError, DatasetNotPreparedError
from sslzoo.video.generator import generate_clips, render_clip, visible_instances
from sslzoo.video.propagation import clip_j, copy_first_mask, jaccard, track_clip
from sslzoo.video.sources import load_video_data


def flat_pool(count=8, size=16):
    """Images of one distinct colour each: a rendered pixel's colour names the image it was cut from."""
    colours = np.linspace(0.05, 0.95, count, dtype=np.float32)
    return np.stack([np.full([size, size, 3], [c, 1.0 - c, (3 * c) % 1.0], np.float32) for c in colours])


def test_masks_match_the_rendered_objects():
    pool = flat_pool()
    rng = np.random.default_rng(0)
    checked_occlusions = 0
    for _ in range(20):
        frames, masks, _ = render_clip(rng, pool, size=32, steps=6, num_objects=3, speed=0.08, noise=0.0)
        ids = np.unique(masks)
        assert ids[0] == 0 and ids.max() <= 3
        colour_of = {}
        for k in ids:
            colours = np.unique(frames[masks == k].reshape(-1, 3), axis=0)
            assert len(colours) == 1, f"instance {k} covers pixels of {len(colours)} different images"
            colour_of[k] = tuple(colours[0])
        assert len(set(colour_of.values())) == len(colour_of), "two instances show the same image"
        checked_occlusions += int(len(ids) < 4 or (masks[0] != masks[-1]).any())
    assert checked_occlusions == 20


def test_front_object_wins_where_objects_overlap():
    coverage = np.zeros([3, 1, 2, 2], bool)
    coverage[0, 0] = [[True, True], [False, False]]
    coverage[2, 0] = [[False, True], [False, True]]
    np.testing.assert_array_equal(visible_instances(coverage)[0], [[1, 3], [0, 3]])


def test_generator_is_deterministic_and_objects_move():
    first = generate_clips(6, 5, 32, seed=3)
    second = generate_clips(6, 5, 32, seed=3)
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.masks, second.masks)
    assert not np.array_equal(first.frames, generate_clips(6, 5, 32, seed=4).frames)
    assert first.frames.shape == (6, 5, 32, 32, 3) and first.masks.shape == (6, 5, 32, 32)
    assert all((m[0] != m[-1]).any() for m in first.masks)  # every clip has motion
    assert (first.num_objects >= 1).all()


def test_jaccard_and_the_copy_baseline():
    truth = np.zeros([3, 4, 4], np.uint8)
    truth[:, :2, :2] = 1
    truth[1, :, :] = 0
    truth[1, 2:, 2:] = 1  # the object jumps in frame 1
    scores = jaccard(copy_first_mask(truth), truth, 1)
    np.testing.assert_allclose(scores, [[1.0, 0.0, 1.0]])
    assert clip_j(copy_first_mask(truth), truth) == pytest.approx(0.5)  # frames 1 and 2
    # An object absent in both prediction and truth counts as found (DAVIS).
    assert jaccard(np.zeros([1, 2, 2], np.uint8), np.zeros([1, 2, 2], np.uint8), 1)[0, 0] == 1.0


def test_propagation_with_perfect_features_tracks_exactly():
    clips = generate_clips(3, 4, 32, seed=1)

    def oracle(masks):  # full-resolution one-hot masks as features: a pixel matches its own object only
        return lambda frames: np.eye(8, dtype=np.float32)[masks]

    for frames, masks in zip(clips.frames, clips.masks):
        predicted = track_clip(frames, masks, oracle(masks), temperature=0.01)
        visible_in_first = np.isin(masks, np.unique(masks[0]))
        np.testing.assert_array_equal(predicted[visible_in_first], masks[visible_in_first])


def test_video_folder_source_reads_frames_and_davis_masks(tmp_path):
    frames_root, masks_root = tmp_path / "JPEGImages", tmp_path / "Annotations"
    for video in ("bear", "car"):
        (frames_root / video).mkdir(parents=True)
        (masks_root / video).mkdir(parents=True)
        for t in range(6):
            image = np.full([24, 40, 3], 40 * t, np.uint8)
            tf.io.write_file(str(frames_root / video / f"{t:05d}.jpg"), tf.io.encode_jpeg(image))
            mask = np.zeros([24, 40, 1], np.uint8)
            mask[4:12, 10 + t:20 + t] = 1
            mask[0, :] = 255  # DAVIS' void label
            tf.io.write_file(str(masks_root / video / f"{t:05d}.png"), tf.io.encode_png(mask))
    cfg = config_lib.from_dict({"data": {"source": "video_folder", "path": str(frames_root), "image_size": 16,
                                         "annotations_path": str(masks_root), "clip_length": 3, "eval_clips": 2,
                                         "eval_clip_length": 0}}).data
    data = load_video_data(cfg)
    assert data.train.frames.shape == (4, 3, 16, 16, 3)  # two non-overlapping clips of 3 per video
    annotated = data.evaluation["annotated"]
    assert annotated.frames.shape == (2, 6, 16, 16, 3) and annotated.masks.shape == (2, 6, 16, 16)
    assert set(np.unique(annotated.masks)) == {0, 1}  # void (255) became background
    assert "generated" in data.evaluation


def test_missing_video_folder_and_unprepared_tfds_fail_fast(tmp_path):
    cfg = config_lib.from_dict({"data": {"source": "video_folder", "path": str(tmp_path / "none")}}).data
    with pytest.raises(DataError, match="does not exist"):
        load_video_data(cfg)
    cfg = config_lib.from_dict({"data": {"source": "video_tfds", "name": "davis", "data_dir": str(tmp_path),
                                         "eval_clips": 1}}).data
    start = time.perf_counter()
    with pytest.raises(DatasetNotPreparedError, match="not prepared"):
        load_video_data(cfg)
    assert time.perf_counter() - start < 60  # no download retries


def test_video_config_fields_are_validated():
    with pytest.raises(config_lib.ConfigError, match="clip_length"):
        config_lib.from_dict({"data": {"source": "video_synthetic", "clip_length": 1}})
    with pytest.raises(config_lib.ConfigError, match="data.path"):
        config_lib.from_dict({"data": {"source": "video_folder"}})
    assert config_lib.from_dict({}).data.clip_length == 4  # image configs are unchanged
