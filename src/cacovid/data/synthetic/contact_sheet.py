"""Contact sheets: every frame of an item in one PNG, evidence token cells outlined.

This is how a person checks the world by eye: is the target visible, is it small, do the evidence
cells sit on it, do the salient distractors dominate the picture as intended.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cacovid.types import QAItem

__all__ = ["contact_sheet"]

_EVIDENCE = (0, 255, 0)
_EVIDENCE_INNER = (0, 0, 0)
_GRID = (255, 255, 255)
_PAPER = (24, 24, 24)
_INK = (235, 235, 235)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _title(item: QAItem) -> list[str]:
    letters = "ABCDEFGH"
    options = "   ".join(f"{letters[i]}. {o}" for i, o in enumerate(item.options))
    answer = item.solution
    if item.problem_type == "multiple choice" and answer in letters[: len(item.options)]:
        answer = f"{answer} ({item.options[letters.index(answer)]})"
    head = f"{item.id}   family: {item.family or '-'}"
    if item.evidence is not None:
        ev = np.asarray(item.evidence)
        head += f"   evidence: {int(ev.sum())} of {ev.size} tokens ({100 * ev.mean():.2f} %)"
    return [head, *textwrap.wrap(f"Q: {item.problem}", 110), options, f"answer: {answer}"]


def contact_sheet(
    item: QAItem, path: str | os.PathLike[str], *, scale: int = 2, columns: int | None = None
) -> Path:
    """Write a PNG grid of `item.frames` (T, H, W, 3) with evidence cells (T, g, g) outlined.

    Frames are enlarged `scale` times (nearest neighbour, so pixels stay sharp); faint lines mark
    the token grid, green boxes the evidence cells; the title holds question, options and answer.
    """
    if item.frames is None:
        raise ValueError(f"item {item.id!r} has no frames in memory (load them with read_video first)")
    frames = np.asarray(item.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    T, H, W, _ = frames.shape
    evidence = None if item.evidence is None else np.asarray(item.evidence, dtype=bool)
    if evidence is not None and (evidence.ndim != 3 or evidence.shape[0] != T):
        raise ValueError(f"evidence must be (T={T}, h, w), got {evidence.shape}")
    cols = min(T, columns or 8)
    rows = -(-T // cols)
    gap, label_h = 6, 16
    fw, fh = W * scale, H * scale
    font, title_font = _font(12), _font(15)
    lines = _title(item)
    title_h = 10 + 20 * len(lines)
    sheet = Image.new("RGB", (gap + cols * (fw + gap), title_h + rows * (fh + label_h + gap) + gap), _PAPER)
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(lines):
        draw.text((gap, 6 + 20 * i), line, fill=_INK, font=title_font)
    for t in range(T):
        x0 = gap + (t % cols) * (fw + gap)
        y0 = title_h + (t // cols) * (fh + label_h + gap) + label_h
        tile = Image.fromarray(frames[t]).resize((fw, fh), Image.Resampling.NEAREST)
        sheet.paste(tile, (x0, y0))
        n_ev = 0 if evidence is None else int(evidence[t].sum())
        draw.text(
            (x0, y0 - label_h + 1), f"t={t}" + (f"  evidence: {n_ev}" if n_ev else ""), fill=_INK, font=font
        )
        if evidence is None:
            continue
        gh, gw = evidence.shape[1:]
        ch, cw = fh / gh, fw / gw
        for k in range(1, gw):
            xs = x0 + round(k * cw)
            for y in range(y0, y0 + fh, 4):  # dotted token grid
                draw.point((xs, y), fill=_GRID)
        for k in range(1, gh):
            ys = y0 + round(k * ch)
            for x in range(x0, x0 + fw, 4):
                draw.point((x, ys), fill=_GRID)
        for i, j in zip(*np.nonzero(evidence[t]), strict=True):
            box = (
                x0 + round(j * cw),
                y0 + round(i * ch),
                x0 + round((j + 1) * cw) - 1,
                y0 + round((i + 1) * ch) - 1,
            )
            draw.rectangle(box, outline=_EVIDENCE, width=2)
            draw.rectangle((box[0] + 2, box[1] + 2, box[2] - 2, box[3] - 2), outline=_EVIDENCE_INNER, width=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
