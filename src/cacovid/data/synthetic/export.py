"""Export world items as ordinary files: mp4 videos, .npy evidence masks and a Video-R1 JSON.

This is the bridge to the real-data path: everything that reads Video-R1 data (loaders, the blind
filter, evaluation on real models) can be exercised on the synthetic world, whose answers and
evidence are known.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from cacovid.data.synthetic.world import SyntheticWorld
from cacovid.data.video import write_video
from cacovid.data.videor1 import save_videor1

__all__ = ["export_videor1"]


def export_videor1(
    world: SyntheticWorld,
    split: str,
    n: int,
    out_dir: str | os.PathLike[str],
    *,
    start: int = 0,
    fps: int = 4,
) -> Path:
    """Write items start..start+n-1 of `split` under `out_dir` and return the JSON path.

    Layout: `videos/<split>_<index>.mp4` (lossless H.264, see `write_video`), `evidence/*.npy`
    ((T, g, g) bool) and `synthetic_<split>.json`. Loading the JSON with `load_videor1` gives the
    same questions, options, answers and evidence; frames match within the codec's rounding.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exported = []
    for offset, item in enumerate(world.items(split, n, start=start)):
        video = write_video(out_dir / "videos" / f"{split}_{start + offset:06d}.mp4", item.frames, fps=fps)
        exported.append(dataclasses.replace(item, video_path=str(video.resolve()), frames=None, meta={}))
    return save_videor1(exported, out_dir / f"synthetic_{split}.json")
