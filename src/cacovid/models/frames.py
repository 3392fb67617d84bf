"""Frame arrays and evidence masks at the adapter boundary.

Why: every adapter accepts the same inputs — frames (T, H, W, 3) uint8 or a video file, and a
ground-truth evidence grid (T, h, w) bool — and must reject malformed ones with a clear message
before they reach a processor that would fail obscurely (or, worse, silently broadcast).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cacovid.data.video import read_video


def as_frames(frames: np.ndarray | torch.Tensor | Sequence) -> np.ndarray:
    """Validate and convert frames to a (T, H, W, 3) uint8 array (T >= 1)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    elif not isinstance(frames, np.ndarray):
        if len(frames) == 0:
            raise ValueError("the video has zero frames")
        frames = np.stack([np.asarray(f) for f in frames])
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got shape {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise ValueError("the video has zero frames")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames must have positive height and width, got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        if np.issubdtype(frames.dtype, np.floating) or np.issubdtype(frames.dtype, np.integer):
            if frames.min() < 0 or frames.max() > 255:
                raise ValueError("frames must be uint8 RGB values in [0, 255]")
            frames = frames.astype(np.uint8)
        else:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return np.ascontiguousarray(frames)


def evidence_mask(
    evidence: np.ndarray | torch.Tensor | None,
    num_frames: int,
    grid: tuple[int, int, int],
    temporal_merge: int = 1,
) -> torch.Tensor | None:
    """Map per-frame evidence (num_frames, h, w) to the token grid's (T*H*W,) bool mask.

    `temporal_merge` frames share one temporal token (Qwen's temporal patch 2): a merged token is
    evidence if any of its frames' cells is. The last group may be short (the processor repeats the
    last frame to fill it). The spatial grid must match the token grid exactly.
    """
    if evidence is None:
        return None
    ev = torch.as_tensor(np.asarray(evidence) if not isinstance(evidence, torch.Tensor) else evidence)
    T, H, W = grid
    if ev.dim() != 3 or tuple(ev.shape) != (num_frames, H, W):
        raise ValueError(
            f"evidence must be (frames, H, W) = ({num_frames}, {H}, {W}) at the token grid, "
            f"got {tuple(ev.shape)}"
        )
    ev = ev.bool()
    pad = T * temporal_merge - num_frames
    if pad < 0 or pad >= temporal_merge:
        raise ValueError(f"{num_frames} frames do not map onto {T} temporal tokens of {temporal_merge}")
    if pad:
        ev = torch.cat([ev, ev[-1:].expand(pad, H, W)])
    return ev.view(T, temporal_merge, H, W).any(dim=1).reshape(-1)


def read_frames(path: str, max_frames: int) -> np.ndarray:
    """Decode up to `max_frames` uniformly spaced RGB frames from a video file: (T, H, W, 3) uint8.

    Decoding has one home, `cacovid.data.video.read_video` (PyAV loads only when a file is read);
    its errors (missing, unreadable, empty file) pass through.
    """
    return as_frames(read_video(path, max_frames=max_frames))
