"""What differs between the transformers 5.x releases the package supports, decided once per model class.

transformers 5.24 renamed the key/value cache argument of every model's `forward` (and the field of its
outputs) from `past_key_values` to `cache`; the old name still works there but warns that it goes away
in 5.40. 5.23 and earlier know only `past_key_values`, and their `forward(**kwargs)` would swallow a
`cache=` argument without a word, so the name must come from the signature, not from a guess.
"""

from __future__ import annotations

import functools
import inspect

from torch import nn

CACHE_ARGUMENTS: tuple[str, ...] = ("cache", "past_key_values")


@functools.cache
def _cache_argument_of(model_class: type) -> str:
    params = inspect.signature(model_class.forward).parameters
    for name in CACHE_ARGUMENTS:
        if name in params:
            return name
    raise ValueError(
        f"{model_class.__name__}.forward takes none of {', '.join(CACHE_ARGUMENTS)}: "
        "cannot pass it a key/value cache"
    )


def cache_argument(model: nn.Module) -> str:
    """The name under which `model.forward` takes (and its outputs return) the key/value cache:
    "cache" (transformers ≥ 5.24) or "past_key_values" (earlier). Cached per model class."""
    return _cache_argument_of(type(model))
