"""Token-selection heat-maps over frames: which cells of which frames each method kept.

Why: a table says *how often* a method answers right; a heat-map shows *why* — whether it keeps the
answer-bearing cells or spends its budget on salient distractors. One PNG per (item, ratio): a row
per method, a column per frame; each frame is dimmed, the cells the method kept are shown at full
brightness, and the ground-truth evidence cells are outlined.

Keep masks come from items.jsonl (every row stores its mask compactly, see `records.py`), so no
selector is re-run; frames are regenerated from the run description (`data.sources.find_item`). When the
frames cannot be had (a video file that moved), cells are drawn on a grey background instead.
Models that merge frames in time (Qwen2-VL: 2 frames per token step) show the first frame of each
step; the evidence outline marks cells that hold evidence in any frame of the step.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cacovid.data.sources import find_item
from cacovid.evaluate.records import decode_mask, ratio_key
from cacovid.models.frames import read_frames
from cacovid.types import QAItem

DIM = 0.28  # brightness of cells that were not kept
EVIDENCE_RGB = np.array([255, 40, 40], dtype=np.uint8)
GAP = 3  # pixels between frames


def item_frames(item: QAItem, max_frames: int = 32) -> np.ndarray | None:
    """(F, H, W, 3) uint8 frames of an item, or None when its video cannot be read."""
    if item.frames is not None:
        return np.asarray(item.frames)
    if not item.video_path:
        return None
    try:
        return read_frames(item.video_path, max_frames)
    except (OSError, ValueError):
        return None


def frame_for_token_step(n_frames: int, n_steps: int, t: int) -> int:
    """Which input frame to show for temporal token step t (T steps over F frames, e.g. Qwen's
    temporal merge of 2 frames per step shows the first of the pair)."""
    return min(n_frames - 1, (t * n_frames) // max(1, n_steps))


def _cell_image(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool cell mask → (H, W) bool pixel mask (nearest cells, any frame size)."""
    h, w = mask.shape
    H, W = size
    rows = np.minimum((np.arange(H) * h) // H, h - 1)
    cols = np.minimum((np.arange(W) * w) // W, w - 1)
    return mask[rows][:, cols]


def _outline(img: np.ndarray, cells: np.ndarray, color: np.ndarray) -> None:
    """Draw a 1-2 px border around every True cell of the (h, w) grid, in place."""
    H, W = img.shape[:2]
    h, w = cells.shape
    t = max(1, min(H // h, W // w) // 8)
    for i, j in zip(*np.nonzero(cells), strict=True):
        y0, y1 = (i * H) // h, ((i + 1) * H) // h
        x0, x1 = (j * W) // w, ((j + 1) * W) // w
        img[y0 : y0 + t, x0:x1] = color
        img[y1 - t : y1, x0:x1] = color
        img[y0:y1, x0 : x0 + t] = color
        img[y0:y1, x1 - t : x1] = color


def render_tile(
    frame: np.ndarray | None, kept: np.ndarray, evidence: np.ndarray | None, size: int = 112
) -> np.ndarray:
    """One frame's tile: (H, W, 3) uint8, kept cells bright, others dimmed, evidence outlined."""
    if frame is None:
        frame = np.full((size, size, 3), 150, dtype=np.uint8)
    img = frame.astype(np.float32)
    pix = _cell_image(kept, img.shape[:2])
    out = np.where(pix[..., None], img, img * DIM).astype(np.uint8)
    if evidence is not None and evidence.any():
        _outline(out, evidence, EVIDENCE_RGB)
    return out


def method_strip(
    frames: np.ndarray | None, keep: np.ndarray, evidence: np.ndarray | None, grid: Sequence[int]
) -> np.ndarray:
    """All frames of one method side by side: (H, T·(W+GAP)−GAP, 3) uint8."""
    T, h, w = (int(x) for x in grid)
    keep = keep.reshape(T, h, w)
    ev = evidence.reshape(T, h, w) if evidence is not None else None
    tiles = []
    for t in range(T):
        frame = frames[frame_for_token_step(len(frames), T, t)] if frames is not None else None
        tiles.append(render_tile(frame, keep[t], None if ev is None else ev[t]))
    H = tiles[0].shape[0]
    gap = np.full((H, GAP, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, tile in enumerate(tiles):
        if i:
            parts.append(gap)
        parts.append(tile)
    return np.concatenate(parts, axis=1)


def _label(row: dict[str, Any]) -> str:
    text = f"{row['method']}"
    if row.get("evidence_recall") is not None:
        text += f"\nrecall {100 * row['evidence_recall']:.0f}%"
    verdict = "✓" if row.get("correct") else "✗"
    answer = row.get("parsed_answer") or "?"
    return text + f"\nanswer {answer} {verdict}"


def heatmap_png(
    rows: Sequence[dict[str, Any]],
    frames: np.ndarray | None,
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Draw the rows (one item, one ratio, one method each, with stored masks) into `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("keep") and r.get("grid")]
    if not rows:
        raise ValueError("no rows with stored keep masks to draw")
    strips = []
    for r in rows:
        n = int(r["n_video_tokens"])
        keep = decode_mask(r["keep"], n)
        ev = decode_mask(r["evidence"], n) if r.get("evidence") else None
        strips.append(method_strip(frames, keep, ev, r["grid"]))
    H, W = strips[0].shape[:2]
    T = int(rows[0]["grid"][0])
    width_in = min(26.0, max(6.5, 1.6 + 0.9 * T))
    strip_h = width_in * 0.82 * H / W
    n_title = title.count("\n") + 1 + len(title) // max(40, int(width_in * 11))
    fig, axes = plt.subplots(
        len(strips),
        1,
        figsize=(width_in, 0.6 + 0.18 * n_title + len(strips) * (strip_h + 0.08)),
        squeeze=False,
    )
    for i, (ax, strip, r) in enumerate(zip(axes[:, 0], strips, rows, strict=True)):
        ax.imshow(strip, interpolation="nearest")
        last = i == len(strips) - 1
        ax.set_xticks([(t * (W + GAP)) / T + (W + GAP) / (2 * T) for t in range(T)] if last else [])
        if last:
            ax.set_xticklabels([str(t) for t in range(T)], fontsize=7)
        ax.set_yticks([])
        ax.tick_params(length=0)
        ax.set_ylabel(_label(r), rotation=0, ha="right", va="center", fontsize=8)
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[-1, 0].set_xlabel("frame (token step)", fontsize=8)
    wrap = max(40, int(width_in * 11))
    fig.suptitle("\n".join(textwrap.fill(part, wrap) for part in title.split("\n")), fontsize=9)
    fig.text(
        0.5,
        0.005,
        "bright = kept tokens, dimmed = dropped, red outline = ground-truth evidence",
        ha="center",
        va="bottom",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    # A 256-colour palette halves the file (frames are flat synthetic colours; no visible loss).
    image = Image.open(buffer).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def choose_items(rows: Sequence[dict[str, Any]], n: int) -> list[str]:
    """The first n items (in row order) that have evidence and a stored mask for some method."""
    out: list[str] = []
    if n <= 0:
        return out
    for r in rows:
        if r.get("evidence") and r.get("keep") and r["item_id"] not in out:
            out.append(r["item_id"])
            if len(out) >= n:
                break
    if not out:  # no evidence anywhere: fall back to any item with masks
        for r in rows:
            if r.get("keep") and r["item_id"] not in out:
                out.append(r["item_id"])
                if len(out) >= n:
                    break
    return out


def item_heatmaps(
    rows: Sequence[dict[str, Any]],
    run: dict[str, Any],
    item_ids: Sequence[str],
    out_dir: Path,
    *,
    skip_methods: Sequence[str] = ("full", "blind"),
) -> list[Path]:
    """One heat-map PNG per (item, ratio) for the chosen items; returns the paths written."""
    paths: list[Path] = []
    for item_id in item_ids:
        mine = [r for r in rows if r["item_id"] == item_id and r["method"] not in skip_methods]
        if not mine:
            continue
        item = find_item(run, item_id, mine[0].get("item_index"))
        frames = item_frames(item) if item is not None else None
        question = item.prompt_text() if item is not None else ""
        for ratio in sorted({ratio_key(r["ratio"]) for r in mine}, reverse=True):
            at = [r for r in mine if ratio_key(r["ratio"]) == ratio]
            if not any(r.get("keep") for r in at):
                continue
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in item_id)
            path = out_dir / f"heatmap_{safe}_r{int(round(ratio * 1000)):04d}.png"
            title = (
                f"{item_id} ({at[0].get('family') or ''}), retention {100 * ratio:g}%, "
                f"answer {at[0].get('solution')}\n{question}"
            )
            paths.append(heatmap_png(at, frames, path, title=title))
    return paths
