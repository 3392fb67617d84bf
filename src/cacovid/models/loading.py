"""Load any supported video LLM by name or path and wrap it in the right adapter.

The adapter is chosen from the checkpoint config's `model_type`, so a local directory, a hub id (when
online) and the shipped toy model all go through the same ordinary `from_pretrained` calls.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch

from cacovid.models.base import VideoLLM
from cacovid.models.llava_onevision import LlavaOneVisionVideoLLM
from cacovid.models.qwen2_vl import Qwen2_5_VLVideoLLM, Qwen2VLVideoLLM

TOY_ALIAS = "toy"

# model_type -> (adapter class, transformers model class name)
ADAPTERS: dict[str, tuple[type[VideoLLM], str]] = {
    "llava_onevision": (LlavaOneVisionVideoLLM, "LlavaOnevisionForConditionalGeneration"),
    "qwen2_vl": (Qwen2VLVideoLLM, "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": (Qwen2_5_VLVideoLLM, "Qwen2_5_VLForConditionalGeneration"),
}


def toy_weights_dir() -> Path:
    """Where the embedded toy model's weights live inside the installed package."""
    return Path(str(resources.files("cacovid") / "toy" / "weights"))


def resolve_name(name_or_path: str) -> str:
    """Map the "toy" alias to the packaged weights folder; other names pass through unchanged."""
    if name_or_path != TOY_ALIAS:
        return name_or_path
    path = toy_weights_dir()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the toy model's weights are not installed: expected a config.json in {path} "
            "(train and save the toy model there first, or pass a checkpoint path)"
        )
    return str(path)


def adapter_for(model_type: str) -> type[VideoLLM]:
    """The adapter class for a config `model_type`; ValueError listing the supported ones."""
    if model_type not in ADAPTERS:
        raise ValueError(
            f"unsupported video LLM model_type {model_type!r}; supported: {', '.join(sorted(ADAPTERS))}"
        )
    return ADAPTERS[model_type][0]


def load_video_llm(
    name_or_path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> VideoLLM:
    """Load a checkpoint (directory, hub id, or "toy") with its processor, frozen, in eval mode.

    The adapter is picked from `config.model_type` (llava_onevision, qwen2_vl, qwen2_5_vl).
    """
    import transformers
    from transformers import AutoConfig, AutoProcessor

    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"name_or_path must be a non-empty string or path, got {name_or_path!r}")
    path = resolve_name(name_or_path)
    config = AutoConfig.from_pretrained(path)
    adapter = adapter_for(config.model_type)
    model_cls = getattr(transformers, ADAPTERS[config.model_type][1])
    model = model_cls.from_pretrained(path, dtype=dtype)
    model.to(device)
    processor = AutoProcessor.from_pretrained(path)
    return adapter(model, processor, name_or_path=name_or_path)
