"""Baseline token selectors behind the `Selector` protocol, and the name registry.

Every selector returns exactly `token_budget(N, ratio)` kept video tokens, times itself into
`Selection.compression_ms`, and (for merging methods) returns merged features for the kept tokens.
"""

from cacovid.selectors.base import BaseSelector
from cacovid.selectors.divprune import DivPruneSelector
from cacovid.selectors.dpc_knn import DPCKNNSelector
from cacovid.selectors.dycoke import DyCokeSelector
from cacovid.selectors.fastv import FastVSelector, fastv_flop_equivalent_ratio, fastv_ratio_for_budget
from cacovid.selectors.fastvid import FastVIDSelector
from cacovid.selectors.novelty import NoveltySelector
from cacovid.selectors.prunevid import PruneVidSelector
from cacovid.selectors.reference import OracleSelector, RandomSelector, UniformSelector
from cacovid.selectors.registry import SELECTORS, available_selectors, get_selector, register
from cacovid.selectors.relevance import RelevanceNoveltySelector, RelevanceSelector
from cacovid.selectors.vidcom2 import VidCom2Selector
from cacovid.selectors.visionzip import VisionZipSelector

__all__ = [
    "SELECTORS",
    "BaseSelector",
    "DPCKNNSelector",
    "DivPruneSelector",
    "DyCokeSelector",
    "FastVIDSelector",
    "FastVSelector",
    "NoveltySelector",
    "OracleSelector",
    "PruneVidSelector",
    "RandomSelector",
    "RelevanceNoveltySelector",
    "RelevanceSelector",
    "UniformSelector",
    "VidCom2Selector",
    "VisionZipSelector",
    "available_selectors",
    "fastv_flop_equivalent_ratio",
    "fastv_ratio_for_budget",
    "get_selector",
    "register",
]
