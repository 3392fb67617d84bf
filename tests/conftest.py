"""Shared, session-scoped fixtures: tiny random-weight video LLMs of every supported family.

Models are small (text hidden 64, 2 layers; vision hidden 64, 2 layers) but use the real HF classes
and processors, with the default 112 px frames -> 7x7 = 49 tokens per (temporal) frame. They are
frozen; fixtures hand out adapters that tests must not modify.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from cacovid.models.llava_onevision import LlavaOneVisionVideoLLM
from cacovid.models.qwen2_vl import Qwen2_5_VLVideoLLM, Qwen2VLVideoLLM
from cacovid.testing.tiny import tiny_llava_onevision, tiny_qwen2_5_vl, tiny_qwen2_vl

torch.set_num_threads(1)  # the machine is shared: small models gain little from threads

TINY_WORDS = ["red", "green", "blue", "square", "circle", "moves", "left", "right", "color", "shape"]
TINY_SIZES = dict(text_hidden=64, text_layers=2, heads=4, kv_heads=2, vision_hidden=64, vision_layers=2)
FAMILIES = ("llava_onevision", "qwen2_vl", "qwen2_5_vl")

# What the code promises when the same arithmetic runs along another kernel path (a different sequence
# length, batch or padding, or another CPU vector unit, e.g. AVX-512 against ATEN_CPU_CAPABILITY=default):
# mathematically equal float32 results that agree to rounding, not bit for bit. Activations of these
# tiny models are of order one, so rounding stays near 1e-7 absolute; 1e-6 (plus 1e-5 relative) leaves
# room for longer accumulations while staying below every effect the tests tell apart (at least ~1e-5).
ROUNDING = {"rtol": 1e-5, "atol": 1e-6}


def pytest_configure(config: pytest.Config) -> None:
    """Registers `float_paths` here rather than in pyproject.toml, whose hash `./dev` reads as the
    signal to rebuild .venv: a marker is no reason to reinstall the stack."""
    config.addinivalue_line(
        "markers",
        "float_paths: compares floats computed along different kernel paths (shapes, batching, CPU "
        "vector unit); .ci/run reruns these with ATEN_CPU_CAPABILITY=default",
    )


def assert_equal_up_to_rounding(actual: torch.Tensor, expected: torch.Tensor, msg: str | None = None) -> None:
    """Fail unless two float tensors agree within `ROUNDING`: the check for results that are equal in
    exact arithmetic but come from differently blocked kernels. Bit-identity is only promised for the
    same inputs and shapes on the same machine (resume, save/load, one vs two processes)."""
    torch.testing.assert_close(actual, expected, **ROUNDING, msg=msg)


def differ_beyond_rounding(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when two float tensors differ by more than `ROUNDING`: the counterpart of
    `assert_equal_up_to_rounding`, so a test can show that the effect it rules out would be visible."""
    return not torch.allclose(a, b, **ROUNDING)


def greedy_margin(scores: torch.Tensor) -> float:
    """The smallest lead of the top logit over the runner-up in (..., vocab) `scores`.

    Greedy tokens from two paths whose logits agree to within `tol` are promised to be equal only
    where every choice leads by more than `tol`; tests assert this margin before they compare ids."""
    top2 = scores.float().topk(2, dim=-1).values
    return float((top2[..., 0] - top2[..., 1]).min())


_BUILDERS = {
    "llava_onevision": (tiny_llava_onevision, LlavaOneVisionVideoLLM),
    "qwen2_vl": (tiny_qwen2_vl, Qwen2VLVideoLLM),
    "qwen2_5_vl": (tiny_qwen2_5_vl, Qwen2_5_VLVideoLLM),
}
_CACHE: dict[str, object] = {}


def tiny_video_llm(family: str):
    """A cached tiny adapter of `family` (built once per test session)."""
    if family not in _CACHE:
        build, adapter = _BUILDERS[family]
        model, processor = build(TINY_WORDS, seed=0, **TINY_SIZES)
        _CACHE[family] = adapter(model, processor, name_or_path=f"tiny-{family}")
    return _CACHE[family]


@pytest.fixture(scope="session")
def tiny_words() -> list[str]:
    return list(TINY_WORDS)


@pytest.fixture(scope="session")
def llava_llm() -> LlavaOneVisionVideoLLM:
    return tiny_video_llm("llava_onevision")


@pytest.fixture(scope="session")
def qwen2_vl_llm() -> Qwen2VLVideoLLM:
    return tiny_video_llm("qwen2_vl")


@pytest.fixture(scope="session")
def qwen2_5_vl_llm() -> Qwen2_5_VLVideoLLM:
    return tiny_video_llm("qwen2_5_vl")


@pytest.fixture(scope="session", params=FAMILIES)
def video_llm(request):
    """Each tiny family in turn (parametrised)."""
    return tiny_video_llm(request.param)


@pytest.fixture(scope="session")
def tiny_frames() -> np.ndarray:
    """(4, 112, 112, 3) uint8 random frames: 4 * 49 = 196 LLaVA-OV tokens, 2 * 49 = 98 Qwen tokens."""
    return np.random.default_rng(0).integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def tiny_question() -> str:
    return "what color is the square ? A . red B . blue answer with the letter ."
