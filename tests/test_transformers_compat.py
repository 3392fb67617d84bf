"""The adapters speak the key/value-cache argument of the installed transformers (`cache` from 5.24,
`past_key_values` before), so nothing they run warns about the name that goes away in 5.40.

CI runs this file on the pinned stack and on the newest transformers pyproject.toml allows
(`./dev test-latest`), where the old name warns.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import transformers
from packaging.version import Version

from cacovid.models.compat import cache_argument


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_cache_argument_follows_the_installed_release(video_llm):
    renamed = Version(transformers.__version__).release >= (5, 24)
    assert cache_argument(video_llm.model) == ("cache" if renamed else "past_key_values")


def test_cache_argument_refuses_a_model_without_one():
    class NoCache(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="NoCache.forward takes none of cache, past_key_values"):
        cache_argument(NoCache())


def test_generation_and_scoring_do_not_warn_about_past_key_values(video_llm, tiny_frames, tiny_question):
    prompt = video_llm.encode(tiny_frames, tiny_question)
    keep = torch.zeros(prompt.num_video_tokens, dtype=torch.bool)
    keep[::3] = True
    # transformers logs the rename once per process (`warning_once`): forget earlier calls.
    once = getattr(logging.Logger.warning_once, "cache_clear", None)
    if once is not None:
        once()
    records = _Records()
    hf_logger = transformers.utils.logging.get_logger()
    hf_logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            video_llm.generate(prompt, keep, max_new_tokens=3)
            video_llm.answer_logprobs(prompt, keep, ["red square", "blue"])  # a second, cached forward
            video_llm.next_token_logits(prompt, keep)
    finally:
        hf_logger.removeHandler(records)
    about_cache = [
        str(w.message)
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning))
        and ("past_key_values" in str(w.message) or "cache_params" in str(w.message))
    ]
    about_cache += [m for m in records.messages if "past_key_values" in m]
    assert not about_cache, about_cache
