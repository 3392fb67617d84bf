"""Load any supported video LLM by name or path and wrap it in the right adapter.

The adapter is chosen from the checkpoint config's `model_type`, so a local directory, a hub id (when
online) and the shipped toy model all go through the same ordinary `from_pretrained` calls.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from cacovid.models.base import VideoLLM
from cacovid.models.llava_onevision import LlavaOneVisionVideoLLM
from cacovid.models.options import check_attn_implementation, check_device_map
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


def as_video_llm(model: VideoLLM | nn.Module, processor=None) -> VideoLLM:
    """An adapter for `model`: an adapter is returned as it is; a plain transformers video LLM
    (LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL) is wrapped as it is, neither frozen nor put in eval mode.

    `processor` (optional for a plain model) supplies the tokenizer's pad and eos ids; without it they
    come from the model's generation config.
    """
    if isinstance(model, VideoLLM):
        return model
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model, nn.Module) or model_type is None:
        raise ValueError(
            f"expected a cacovid VideoLLM adapter or a transformers video LLM, got {type(model).__name__}"
        )
    adapter = adapter_for(model_type)
    expected = ADAPTERS[model_type][1]
    if not hasattr(model, "model") or type(model).__name__ != expected:
        raise ValueError(
            f"a {model_type!r} checkpoint must be loaded as {expected} (the class with the language-model "
            f"head that generates), got {type(model).__name__}"
        )
    return adapter(model, processor, name_or_path=str(getattr(config, "_name_or_path", "")), freeze=False)


# "name" or "owner/name": what the hub accepts as a repository id.
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


def check_model_location(name_or_path: str) -> None:
    """Refuse a name that is neither an existing path nor a hub id, before transformers does so with a
    traceback about repository ids.

    A hub id is "name" or "owner/name" (letters, digits, '-', '_', '.'); anything else (an absolute
    path, "./x", "a/b/c", "~/m") names a local folder, which must exist and hold a config.json.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model {name_or_path!r} is a file: pass a checkpoint folder (with config.json)")
        if not (path / "config.json").is_file():
            raise ValueError(
                f"model folder {name_or_path!r} holds no config.json: not a transformers checkpoint"
            )
        return
    if not _HUB_ID.fullmatch(name_or_path):
        raise FileNotFoundError(
            f"model {name_or_path!r}: no such folder, and not a hub id (owner/name); pass an existing "
            "checkpoint folder, a hub id, or 'toy'"
        )


def load_video_llm(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    attn_implementation: str | None = None,
    device_map: str | dict | None = None,
) -> VideoLLM:
    """Load a checkpoint (directory, hub id, or "toy") with its processor, frozen, in eval mode.

    The adapter is picked from `config.model_type` (llava_onevision, qwen2_vl, qwen2_5_vl).
    `attn_implementation` ("eager", "sdpa", "flash_attention_2", "flash_attention_3"; None:
    transformers' default) and `device_map` ("auto", a device, or a dict of module → device; needs
    accelerate) go to `from_pretrained`. With a device map the weights are placed by it and `device` is
    not applied, so a model larger than one accelerator can be spread over several. Both options are
    checked before any weights load (a kernel whose package is missing is a ValueError).
    """
    import transformers
    from transformers import AutoConfig, AutoProcessor

    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"name_or_path must be a non-empty string or path, got {name_or_path!r}")
    check_attn_implementation(attn_implementation)
    check_device_map(device_map)
    path = resolve_name(name_or_path)
    check_model_location(path)
    config = AutoConfig.from_pretrained(path)
    adapter = adapter_for(config.model_type)
    model_cls = getattr(transformers, ADAPTERS[config.model_type][1])
    kwargs: dict = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = model_cls.from_pretrained(path, **kwargs)
    if device_map is None:
        model.to(device)
    processor = AutoProcessor.from_pretrained(path)
    return adapter(model, processor, name_or_path=name_or_path)
