"""Moved to `cacovid.testing.tiny` (test scaffolding, not an adapter).

Re-exported here only for `tests/test_evaluate.py`, which still imports this path; remove this
module once it imports `cacovid.testing.tiny`.
"""

from cacovid.testing.tiny import tiny_llava_onevision

__all__ = ["tiny_llava_onevision"]
