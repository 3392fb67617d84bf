"""cacovid: contribution-aware token compression for video LLMs (CaCoVID) and fair baselines."""

from cacovid.types import EncodedPrompt, QAItem, Selection, Selector, token_budget

__version__ = "0.1.0"
__all__ = ["EncodedPrompt", "QAItem", "Selection", "Selector", "token_budget", "__version__"]
