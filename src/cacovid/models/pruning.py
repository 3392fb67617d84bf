"""Pruned inputs for a pipeline of one's own: processor outputs + a selector → what `model.generate` takes.

Why a module of its own: users who already run a transformers video LLM want CaCoVID (or any
baseline) as one step before their own `generate`, with their own prompt and generation arguments.
The adapters already know how to turn processor outputs into an `EncodedPrompt` (the model's own
video features and position ids: plain 1-D for LLaVA-OneVision, 3-D M-RoPE for Qwen2-VL / 2.5-VL)
and how to gather kept tokens at their original positions (`packing.py`); this module only joins
those two steps around the selector, so the user path and the library's own answering path are the
same code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from cacovid.models.base import VideoLLM
from cacovid.models.loading import as_video_llm
from cacovid.types import EncodedPrompt, Selection, Selector

_MODEL_ARGUMENTS = ("inputs_embeds", "position_ids", "attention_mask")
# Selectors (by name) that use the vision tower's attention when the prompt carries it.
VISION_ATTENTION_SELECTORS = frozenset({"visionzip", "fastvid"})


@dataclass(frozen=True)
class PrunedInputs(Mapping):
    """The model arguments of one pruned prompt, plus what produced them.

    It is a mapping of exactly the three arguments the model needs, so `model.generate(**pruned,
    max_new_tokens=…)` works; generation arguments stay the caller's.

    - `inputs_embeds` (1, S, D) in the model's dtype: text and special tokens, and the kept video
      tokens (or a merging selector's replacement embeddings) in their original order.
    - `position_ids` in the model's layout: (1, S) for LLaVA-OneVision, (3, 1, S) M-RoPE ids for
      Qwen2-VL / Qwen2.5-VL; every kept token keeps its original position.
    - `attention_mask` (1, S) long, all ones. Always pass it: without it transformers reads the gaps
      that pruning leaves in the position ids as packed sequences.
    - `selection`: the selector's result (`keep` (N,) bool over the video tokens, timing, info).
    - `prompt`: the `EncodedPrompt` the selection was made on (e.g. for heat-maps).
    """

    inputs_embeds: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    selection: Selection
    prompt: EncodedPrompt

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in _MODEL_ARGUMENTS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_MODEL_ARGUMENTS)

    def __len__(self) -> int:
        return len(_MODEL_ARGUMENTS)

    @property
    def num_kept(self) -> int:
        """Video tokens kept."""
        return int(self.selection.keep.sum())


def prune_inputs(
    model: VideoLLM | nn.Module,
    inputs: Mapping[str, torch.Tensor],
    selector: Selector,
    ratio: float,
    *,
    processor=None,
    generator: torch.Generator | None = None,
) -> PrunedInputs:
    """Prune one prompt's video tokens to ⌊ratio·N⌋ and return the model's arguments for `generate`.

    - `model`: a cacovid adapter (`load_video_llm`) or a plain transformers
      `LlavaOnevisionForConditionalGeneration` / `Qwen2VLForConditionalGeneration` /
      `Qwen2_5_VLForConditionalGeneration` (used as it is: not frozen, not switched to eval mode).
    - `inputs`: the processor's outputs (`return_tensors="pt"`) for one prompt holding one video.
    - `selector`: any `Selector` (`CaCoVIDSelector.from_pretrained(...)`, `get_selector("divprune")`).
    - `processor`: optional with a plain model; its tokenizer's pad id then fills what packing pads.
    - `generator`: seeds selectors that draw at random.

    The vision tower runs once, here; the returned tensors live on the model's device.
    """
    adapter = as_video_llm(model, processor)
    if not hasattr(selector, "select"):
        raise ValueError(f"selector must implement Selector.select, got {type(selector).__name__}")
    # Selectors that read the vision tower's attention (VisionZip-, FastVID-style) find it in the
    # prompt's extras; reading it costs an eager pass of the tower's last layer, so only for them.
    wants_attention = getattr(selector, "name", "") in VISION_ATTENTION_SELECTORS and bool(
        getattr(selector, "use_vision_attention", True)
    )
    prompt = adapter.encode_inputs(inputs, vision_attention=wants_attention)
    selection = selector.select(prompt, ratio, generator=generator)
    batch = adapter.pack([(prompt, selection.keep, selection.embeds)])
    return PrunedInputs(
        inputs_embeds=batch.inputs_embeds,
        position_ids=adapter.lm_position_ids(batch.position_ids),
        attention_mask=batch.attention_mask,
        selection=selection,
        prompt=prompt,
    )
