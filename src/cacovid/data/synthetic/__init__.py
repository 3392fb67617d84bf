"""The embedded synthetic sparse-evidence video-QA world.

Short videos (16 frames of 112x112 px by default) of a low-contrast textured background with moving
distractor objects (some large, bright and outlined: salient but irrelevant) and one or two small
*target* objects visible in only a few frames. Each item asks a four-option question whose answer
depends only on the target(s): `color`, `shape`, `motion`, `order`, `count`. The answer-bearing
token cells (about 1 % of the 784 video tokens by default) are known exactly, as are dense
per-token colour/shape labels, so token selectors can be scored against ground-truth evidence.

Everything is generated on the fly from a seed: `SyntheticWorld(WorldConfig()).item("test", 3)`.
"""

from cacovid.data.synthetic.config import (
    EVIDENCE_MIN_FRACTION,
    FAMILIES,
    WorldConfig,
    parse_world_overrides,
)
from cacovid.data.synthetic.contact_sheet import contact_sheet
from cacovid.data.synthetic.export import export_videor1
from cacovid.data.synthetic.palette import COLOR_NAMES, COLORS, SHAPE_NAMES
from cacovid.data.synthetic.questions import TEMPLATES, VOCABULARY
from cacovid.data.synthetic.scene import DIRECTIONS
from cacovid.data.synthetic.stats import FamilyStats, evidence_fraction_by_family, world_stats
from cacovid.data.synthetic.world import SPLITS, SyntheticWorld, WorldSample

__all__ = [
    "COLORS",
    "COLOR_NAMES",
    "DIRECTIONS",
    "EVIDENCE_MIN_FRACTION",
    "FAMILIES",
    "SHAPE_NAMES",
    "SPLITS",
    "TEMPLATES",
    "VOCABULARY",
    "FamilyStats",
    "SyntheticWorld",
    "WorldConfig",
    "WorldSample",
    "contact_sheet",
    "evidence_fraction_by_family",
    "export_videor1",
    "parse_world_overrides",
    "world_stats",
]
