"""Data: QA items from Video-R1 JSON and from multiple-choice video benchmarks, video decoding, and
the embedded synthetic world.

`cacovid.data.synthetic` is imported on demand (it is larger and only some callers need it).
`cacovid.data.benchmarks` reads Video-MME, MLVU, LongVideoBench, MVBench and EgoSchema from their
public annotation files (docs/benchmarks.md).
"""

from cacovid.data.benchmarks import BENCHMARKS, load_benchmark
from cacovid.data.video import read_video, sample_indices, write_video
from cacovid.data.videor1 import load_videor1, save_videor1

__all__ = [
    "BENCHMARKS",
    "load_benchmark",
    "load_videor1",
    "read_video",
    "sample_indices",
    "save_videor1",
    "write_video",
]
