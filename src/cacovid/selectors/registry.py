"""Name → factory registry for selectors, so the CLI, evaluation and benchmarks build any method by
the name users type. Other parts add their selector with one line, e.g.
`register("cacovid", lambda **kw: PolicySelector.from_pretrained(**kw))`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cacovid.selectors.divprune import DivPruneSelector
from cacovid.selectors.dpc_knn import DPCKNNSelector
from cacovid.selectors.dycoke import DyCokeSelector
from cacovid.selectors.fastv import FastVSelector
from cacovid.selectors.fastvid import FastVIDSelector
from cacovid.selectors.novelty import NoveltySelector
from cacovid.selectors.prunevid import PruneVidSelector
from cacovid.selectors.reference import OracleSelector, RandomSelector, UniformSelector
from cacovid.selectors.relevance import RelevanceNoveltySelector, RelevanceSelector
from cacovid.selectors.vidcom2 import VidCom2Selector
from cacovid.selectors.visionzip import VisionZipSelector
from cacovid.types import Selector

SelectorFactory = Callable[..., Selector]

SELECTORS: dict[str, SelectorFactory] = {
    "random": RandomSelector,
    "uniform": UniformSelector,
    "oracle": OracleSelector,
    "dpc_knn": DPCKNNSelector,
    "divprune": DivPruneSelector,
    "visionzip": VisionZipSelector,
    "vidcom2": VidCom2Selector,
    "fastvid": FastVIDSelector,
    "prunevid": PruneVidSelector,
    "dycoke": DyCokeSelector,
    "novelty": NoveltySelector,
    "relevance": RelevanceSelector,
    "relevance_novelty": RelevanceNoveltySelector,
    "fastv": FastVSelector,
}


def register(name: str, factory: SelectorFactory, *, overwrite: bool = False) -> None:
    """Add a selector factory under `name` (a method name users type); ValueError if taken."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"selector name must be a non-empty string without surrounding spaces, got {name!r}")
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable")
    if name in SELECTORS and not overwrite:
        raise ValueError(f"selector {name!r} is already registered (pass overwrite=True to replace it)")
    SELECTORS[name] = factory


def available_selectors() -> list[str]:
    """Registered selector names, sorted."""
    return sorted(SELECTORS)


def get_selector(name: str, **kwargs: Any) -> Selector:
    """Build the selector registered as `name` with its keyword parameters."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; known selectors: {', '.join(available_selectors())}")
    return SELECTORS[name](**kwargs)
