"""cacovid: contribution-aware token compression for video LLMs (CaCoVID) and fair baselines.

The central types load with the package. The public entry points for a pipeline of one's own
(docs/python-api.md) are exported lazily (PEP 562): they live in higher layers (models, selectors,
policy), and this module, loaded by every import, must not load them — nor torch's heavy friends —
before they are asked for. `from cacovid import prune_inputs` imports `cacovid.models.pruning`
then; `tests/test_layers.py` checks every entry of `_LAZY` names a real module and name.
"""

from __future__ import annotations

import importlib
from typing import Any

from cacovid.types import EncodedPrompt, QAItem, Selection, Selector, token_budget

__version__ = "0.1.0"

# Public name -> module that defines it, imported on first access.
_LAZY: dict[str, str] = {
    "load_model": "cacovid.models.loading",
    "load_video_llm": "cacovid.models.loading",
    "prune_inputs": "cacovid.models.pruning",
    "PrunedInputs": "cacovid.models.pruning",
    "get_selector": "cacovid.selectors.registry",
    "available_selectors": "cacovid.selectors.registry",
    "CaCoVIDPolicy": "cacovid.policy.network",
    "CaCoVIDSelector": "cacovid.policy.selector",
}
# Public names whose definition carries another name in its module.
_ALIASES: dict[str, str] = {"load_model": "load_video_llm"}

__all__ = [
    "EncodedPrompt",
    "QAItem",
    "Selection",
    "Selector",
    "token_budget",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cacovid' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), _ALIASES.get(name, name))
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
