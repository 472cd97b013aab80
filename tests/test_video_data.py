"""Video data: the clip generator (masks match what is drawn, deterministic), folder and TFDS sources,
and the mask-propagation scoring."""

import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sslzoo import config as config_lib
from sslzoo.data import DataError, DatasetNotPreparedError
from sslzoo.video.generator import generate_clips, render_clip, visible_instances
from sslzoo.video.davis import kept_aspect_size, read_mask, video_j
from sslzoo.video.propagation import clip_j, copy_first_mask, jaccard, track_clip, track_video
from sslzoo.video.sources import load_video_data, square_windows


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
                                         "frame_step": 2}}).data
    data = load_video_data(cfg)
    # 24x40 -> 16x24 (aspect kept, long side to a multiple of 8): 2 square windows across it; every 2nd
    # frame of 6 -> one clip of 3 per window and video.
    assert data.train.frames.shape == (4, 3, 16, 16, 3)
    annotated = data.evaluation["annotated"]
    assert [video.name for video in annotated] == ["bear", "car"]
    for video in annotated:  # every frame (frame_step thins training only), masks at their own resolution
        assert video.frames.shape == (6, 16, 24, 3) and video.masks.shape == (6, 24, 40)
        assert set(np.unique(video.masks)) == {0, 1}  # void (255) became background
        assert video.masks[3, 6, 13:23].all() and not video.masks[3, 6, :13].any()
    assert "generated" in data.evaluation


def test_davis_2016_binary_and_davis_2017_palette_masks(tmp_path):
    binary = np.zeros([6, 10], np.uint8)
    binary[2:4, 3:7] = 255  # DAVIS-2016: 255 is the object
    Image.fromarray(binary, mode="L").save(tmp_path / "binary.png")
    np.testing.assert_array_equal(read_mask(str(tmp_path / "binary.png")), binary // 255)
    ids = np.zeros([6, 10], np.uint8)
    ids[1:3, 1:3], ids[4:6, 5:9], ids[0, :] = 1, 2, 255  # DAVIS-2017: palette indices, 255 void
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    palette.save(tmp_path / "palette.png")
    expected = np.where(ids == 255, 0, ids)
    np.testing.assert_array_equal(read_mask(str(tmp_path / "palette.png")), expected)


def test_frames_keep_their_aspect_and_windows_cover_the_long_side():
    assert kept_aspect_size(480, 854, 128) == (128, 224)  # DAVIS 480p at 128 px
    assert kept_aspect_size(854, 480, 128) == (224, 128)
    assert kept_aspect_size(32, 32, 16) == (16, 16)
    for height, width in ((128, 224), (16, 24), (32, 32), (224, 128), (10, 31)):
        side = min(height, width)
        windows = square_windows(height, width)
        covered = np.zeros([height, width], bool)
        for top, left in windows:
            assert top + side <= height and left + side <= width
            covered[top:top + side, left:left + side] = True
        assert covered.all() and len(windows) == -(-max(height, width) // side)


def test_video_j_is_the_mean_iou_at_the_masks_resolution():
    truth = np.zeros([3, 20, 30], np.uint8)
    truth[:, 5:15, 5:15] = 1
    predicted = truth.copy()
    predicted[1] = 0
    predicted[1, 5:15, 10:20] = 1  # shifted by 5 columns: 50 shared pixels of 150
    predicted[2, 5:15, 5:10] = 0  # half the object: 50 of 100
    assert video_j(predicted, truth) == pytest.approx((1 / 3 + 1 / 2) / 2)  # frame 0 is given, not scored


def test_track_video_with_perfect_features_recovers_full_resolution_masks():
    clips = generate_clips(2, 4, 32, seed=5)
    for frames, masks in zip(clips.frames, clips.masks):
        big = np.repeat(np.repeat(masks, 2, axis=1), 2, axis=2)  # masks at twice the frames' resolution
        features = lambda f, m=masks: np.eye(8, dtype=np.float32)[m]  # noqa: E731 - a pixel matches its object
        predicted = track_video(frames, big[0], features, temperature=0.01)
        assert predicted.shape == big.shape
        visible_in_first = np.isin(big, np.unique(big[0]))
        np.testing.assert_array_equal(predicted[visible_in_first], big[visible_in_first])


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
