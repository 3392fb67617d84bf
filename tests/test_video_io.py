"""PyAV video reading/writing: round trip fidelity, frame sampling, and the user-facing errors."""

from __future__ import annotations

import av
import numpy as np
import pytest

from cacovid.data.video import read_video, sample_indices, write_video


def _textured_frames(T: int = 6, H: int = 48, W: int = 64, seed: int = 0) -> np.ndarray:
    """Low-contrast noise plus a few saturated moving blocks, like the synthetic world's frames."""
    rng = np.random.default_rng(seed)
    frames = np.repeat(rng.normal(110, 12, size=(T, H, W, 1)), 3, axis=-1)
    for t in range(T):
        frames[t, 5 + t : 15 + t, 8:20] = (225, 30, 30)
        frames[t, 30:40, 20 + 3 * t : 28 + 3 * t] = (30, 215, 225)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _constant_frames(T: int, H: int = 16, W: int = 16) -> np.ndarray:
    """Frame t is uniformly grey with value 10 + 20 t, so decoded frames reveal their index."""
    return np.stack([np.full((H, W, 3), 10 + 20 * t, dtype=np.uint8) for t in range(T)])


def _frame_ids(frames: np.ndarray) -> list[int]:
    return [round((float(f.mean()) - 10) / 20) for f in frames]


def test_lossless_round_trip_is_close(tmp_path):
    frames = _textured_frames()
    path = write_video(tmp_path / "v.mp4", frames, fps=4)
    back = read_video(path, num_frames=len(frames))
    assert back.shape == frames.shape and back.dtype == np.uint8
    err = np.abs(back.astype(int) - frames.astype(int))
    # Lossless YUV 4:4:4: only colour-space rounding remains (measured: mean 0.4, max 2).
    assert err.mean() < 1.0
    assert err.max() <= 4


def test_lossy_crf_round_trip_within_looser_bound(tmp_path):
    frames = _textured_frames()
    back = read_video(write_video(tmp_path / "v.mp4", frames, crf=18), num_frames=len(frames))
    err = np.abs(back.astype(int) - frames.astype(int))
    assert 0 < err.mean() < 4.0


def test_yuv420_round_trip(tmp_path):
    frames = _textured_frames()
    back = read_video(write_video(tmp_path / "v.mp4", frames, pix_fmt="yuv420p"), num_frames=len(frames))
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 6.0


def test_odd_sizes_work_in_yuv444(tmp_path):
    frames = _textured_frames(T=2, H=17, W=15)
    back = read_video(write_video(tmp_path / "odd.mp4", frames), num_frames=2)
    assert back.shape == (2, 17, 15, 3)


def test_uniform_sampling_picks_segment_centres(tmp_path):
    path = write_video(tmp_path / "c.mp4", _constant_frames(10))
    assert _frame_ids(read_video(path, num_frames=4)) == [1, 3, 6, 8]
    assert _frame_ids(read_video(path, num_frames=10)) == list(range(10))
    # More frames wanted than exist: every frame once, never duplicated.
    assert _frame_ids(read_video(path, num_frames=25)) == list(range(10))


def test_max_frames_caps_when_num_frames_is_none(tmp_path):
    path = write_video(tmp_path / "c.mp4", _constant_frames(12))
    assert read_video(path, max_frames=5).shape[0] == 5
    assert read_video(path).shape[0] == 12  # default cap 32 > 12


def test_default_cap_is_32(tmp_path):
    path = write_video(tmp_path / "long.mp4", np.zeros((40, 8, 8, 3), dtype=np.uint8))
    assert read_video(path).shape == (32, 8, 8, 3)


def test_sample_indices():
    assert sample_indices(10, 10).tolist() == list(range(10))
    assert sample_indices(3, 8).tolist() == [0, 1, 2]
    idx = sample_indices(1000, 32)
    assert len(idx) == 32 and np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < 1000
    with pytest.raises(ValueError):
        sample_indices(0, 4)
    with pytest.raises(ValueError):
        sample_indices(4, 0)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_video(tmp_path / "nope.mp4")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 20)
    with pytest.raises(ValueError, match="unreadable"):
        read_video(bad)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        read_video(tmp_path)


def test_video_with_zero_frames(tmp_path):
    empty = tmp_path / "empty.avi"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.start_encoding()
    with pytest.raises(ValueError, match="zero frames|no video stream"):
        read_video(empty)


def test_bad_frame_counts_requested(tmp_path):
    path = write_video(tmp_path / "c.mp4", _constant_frames(3))
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            read_video(path, num_frames=bad)


@pytest.mark.parametrize(
    ("frames", "kwargs", "message"),
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), {}, "uint8"),
        (np.zeros((8, 8, 3), dtype=np.uint8), {}, r"\(T, H, W, 3\)"),
        (np.zeros((2, 8, 8, 4), dtype=np.uint8), {}, r"\(T, H, W, 3\)"),
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), {}, "non-empty"),
        (np.zeros((2, 9, 8, 3), dtype=np.uint8), {"pix_fmt": "yuv420p"}, "even"),
        (np.zeros((2, 8, 8, 3), dtype=np.uint8), {"fps": 0}, "fps"),
        (np.zeros((2, 8, 8, 3), dtype=np.uint8), {"crf": 99}, "crf"),
        (np.zeros((2, 8, 8, 3), dtype=np.uint8), {"pix_fmt": "rgb24"}, "pix_fmt"),
        ([[0]], {}, "numpy array"),
    ],
)
def test_write_video_validates(tmp_path, frames, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "x.mp4", frames, **kwargs)
    assert not (tmp_path / "x.mp4").exists()


def test_containers_without_a_frame_count_are_counted(tmp_path):
    # Matroska stores no frame count, so the reader counts packets before sampling.
    path = write_video(tmp_path / "c.mkv", _constant_frames(10))
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    assert _frame_ids(read_video(path, num_frames=4)) == [1, 3, 6, 8]
