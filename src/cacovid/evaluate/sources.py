"""Moved to `cacovid.data.sources` (item sources are data, and training reads them too).

Re-exported here only for the callers that still import this path: `evaluate/harness.py`
(`ItemSource`), `cli/demo.py` (`synthetic_source`) and `cli/eval.py` (`source_from_args`).
Remove this module once they import `cacovid.data.sources`.
"""

from cacovid.data.sources import ItemSource, source_from_args, synthetic_source

__all__ = ["ItemSource", "source_from_args", "synthetic_source"]
