"""Video decoding and encoding with PyAV.

Decoding is the one place real videos enter the package, so the errors here are the ones users see:
a missing file, a file FFmpeg cannot read, and a video without frames each get their own message.
Encoding exists so that the synthetic world can be exported as ordinary mp4 files and the real-data
path exercised on it; by default it is lossless in YUV 4:4:4 so a round trip changes pixel values by at
most a couple of levels (colour-space rounding only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # PyAV is imported where videos are read or written, not with the package
    import av

__all__ = ["read_video", "sample_indices", "write_video"]


def sample_indices(total: int, wanted: int) -> np.ndarray:
    """Indices of `wanted` frames spread uniformly over `total` frames (segment centres).

    Frame i of the result is the middle frame of the i-th of `wanted` equal segments, so the samples
    cover the whole video and `total == wanted` gives every frame. If `wanted >= total` every frame is
    returned once (frames are never duplicated).
    """
    if total <= 0:
        raise ValueError(f"cannot sample from {total} frames")
    if wanted <= 0:
        raise ValueError(f"number of frames to sample must be positive, got {wanted}")
    if wanted >= total:
        return np.arange(total)
    return np.floor((np.arange(wanted) + 0.5) * total / wanted).astype(np.int64)


def _open_input(path: Path) -> av.container.InputContainer:
    import av

    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise ValueError(f"video file {str(path)!r} is unreadable: {exc}") from exc


def _count_packets(path: Path) -> int:
    """Number of video packets (one per frame for every common codec), without decoding."""
    with _open_input(path) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _decode_selected(path: Path, keep: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode the video once, converting only frames whose index is in `keep`; also count frames."""
    import av

    out: dict[int, np.ndarray] = {}
    count = 0
    with _open_input(path) as container:
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                if count in keep:
                    out[count] = frame.to_ndarray(format="rgb24")
                count += 1
        except av.error.FFmpegError as exc:
            raise ValueError(f"video file {str(path)!r} is unreadable (decoding failed): {exc}") from exc
    return out, count


def read_video(
    path: str | os.PathLike[str], num_frames: int | None = None, max_frames: int = 32
) -> np.ndarray:
    """Decode a video into RGB frames (T, H, W, 3) uint8.

    `num_frames` asks for exactly that many frames; when it is None, up to `max_frames` are taken.
    Videos with more frames than wanted are sampled uniformly (`sample_indices`); shorter videos are
    returned whole, so T can be smaller than asked for.

    Raises FileNotFoundError for a missing file, ValueError for a file FFmpeg cannot read (message
    contains "unreadable"), one without a video stream, or a video with zero frames.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video file not found: {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"video path {str(path)!r} is a directory, not a video file (unreadable)")
    wanted = max_frames if num_frames is None else num_frames
    if isinstance(wanted, bool) or not isinstance(wanted, (int, np.integer)) or wanted <= 0:
        raise ValueError(f"number of frames must be a positive integer, got {wanted!r}")
    with _open_input(path) as container:
        if not container.streams.video:
            raise ValueError(f"video file {str(path)!r} has no video stream (unreadable as video)")
        declared = int(container.streams.video[0].frames or 0)
    total = declared if declared > 0 else _count_packets(path)
    if total <= 0:
        raise ValueError(f"video file {str(path)!r} has zero frames")
    indices = sample_indices(total, int(wanted))
    decoded, actual = _decode_selected(path, set(indices.tolist()))
    if actual == 0:
        raise ValueError(f"video file {str(path)!r} has zero frames")
    if actual != total:
        # The container's frame count was wrong; sample again over the frames that really exist.
        indices = sample_indices(actual, int(wanted))
        if not set(indices.tolist()) <= decoded.keys():
            decoded, actual = _decode_selected(path, set(indices.tolist()))
    return np.stack([decoded[int(i)] for i in indices])


def _check_frames(frames: np.ndarray, pix_fmt: str) -> None:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    T, H, W, _ = frames.shape
    if T == 0 or H == 0 or W == 0:
        raise ValueError(f"frames must be non-empty, got shape {frames.shape}")
    if pix_fmt == "yuv420p" and (H % 2 or W % 2):
        raise ValueError(f"yuv420p needs even height and width, got {H}x{W}")


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: int = 4,
    *,
    crf: int | None = None,
    pix_fmt: str = "yuv444p",
) -> Path:
    """Write RGB frames (T, H, W, 3) uint8 as an H.264 mp4 and return the path.

    `crf=None` (default) encodes losslessly in YUV (x264 `qp=0`); an integer uses that constant rate
    factor instead (smaller files, larger error). `pix_fmt="yuv444p"` keeps full colour resolution,
    which matters for small coloured objects; "yuv420p" is the most widely playable format but
    halves colour resolution and needs even H and W.
    """
    import av

    if pix_fmt not in ("yuv444p", "yuv420p"):
        raise ValueError(f"pix_fmt must be 'yuv444p' or 'yuv420p', got {pix_fmt!r}")
    _check_frames(frames, pix_fmt)
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    if crf is not None and not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, H, W, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = W, H
        stream.pix_fmt = pix_fmt
        stream.options = {"qp": "0"} if crf is None else {"crf": str(int(crf))}
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
