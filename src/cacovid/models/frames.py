"""Frame arrays, processor outputs and evidence masks at the adapter boundary.

Why: every adapter accepts the same inputs — frames (T, H, W, 3) uint8 or a video file, a processor's
outputs for one prompt, and a ground-truth evidence grid (T, h, w) bool — and must reject malformed
ones with a clear message before they reach a model that would fail obscurely (or, worse, silently
broadcast).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def one_video_inputs(inputs: Mapping, pixels_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (L,), video pixels) from a processor's outputs for one prompt holding one video.

    Images beside the video are refused: their placeholders would stay unfilled, since only the
    video's features are written into the prompt.
    """
    if not isinstance(inputs, Mapping):
        raise ValueError(f"expected the processor's outputs (a mapping), got {type(inputs).__name__}")
    for key in ("input_ids", pixels_key):
        if inputs.get(key) is None:
            raise ValueError(
                f"the processor's outputs have no {key!r}: call the processor with text and videos=[frames]"
            )
    if inputs.get("pixel_values") is not None:
        raise ValueError("image inputs (pixel_values) are not supported: pass one prompt with one video only")
    ids = inputs["input_ids"]
    if not isinstance(ids, torch.Tensor):
        raise ValueError("input_ids must be a torch.Tensor: call the processor with return_tensors='pt'")
    if ids.dim() == 2:
        if ids.shape[0] != 1:
            raise ValueError(f"expected one prompt (batch size 1), got a batch of {ids.shape[0]}")
        ids = ids[0]
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError(f"input_ids must be (1, L) or (L,), got shape {tuple(inputs['input_ids'].shape)}")
    return ids, inputs[pixels_key]


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
