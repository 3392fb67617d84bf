"""Data: QA items from Video-R1 JSON, video decoding, and the embedded synthetic world.

`cacovid.data.synthetic` is imported on demand (it is larger and only some callers need it).
"""

from cacovid.data.video import read_video, sample_indices, write_video
from cacovid.data.videor1 import load_videor1, save_videor1

__all__ = ["load_videor1", "read_video", "sample_indices", "save_videor1", "write_video"]
