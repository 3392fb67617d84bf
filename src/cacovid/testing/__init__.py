"""Scaffolding for tests, benchmarks and experiments: tiny random-weight video LLMs built offline.

`cacovid.testing.tiny` builds real `transformers` LLaVA-OneVision, Qwen2-VL and Qwen2.5-VL models
(a few million parameters, word-level tokenizer, chat template) from configs and a seed, so code
that needs a video LLM runs without downloading weights. The embedded toy model
(`cacovid.toy.model`) is one of them, trained.
"""

from cacovid.testing.tiny import build_word_tokenizer, tiny_llava_onevision, tiny_qwen2_5_vl, tiny_qwen2_vl

__all__ = ["build_word_tokenizer", "tiny_llava_onevision", "tiny_qwen2_5_vl", "tiny_qwen2_vl"]
