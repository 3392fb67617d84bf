"""The adapter contract: what every supported video LLM family offers the rest of the package.

An adapter wraps a real `transformers` model and its processor. It turns (frames, question) into an
`EncodedPrompt` once, then answers from any batch of keep-masks over that prompt's video tokens,
keeping every kept token's original position ids. Selectors and the policy never touch model internals;
what they need from inside the model comes through the narrow methods below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cacovid.types import EncodedPrompt, QAItem

# One row of a batched call: a prompt, its (N,) bool keep mask, and optional (K, D) replacement
# embeddings for the kept tokens (merging selectors).
Row = tuple[EncodedPrompt, torch.Tensor, "torch.Tensor | None"]


class VideoLLM(ABC):
    """A frozen video LLM behind one interface (LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL)."""

    family: str = ""

    def __init__(self, model: nn.Module, processor, name_or_path: str = "") -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.processor = processor
        self.name_or_path = name_or_path

    # ---- basic facts -------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    @abstractmethod
    def text_config(self): ...

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    # ---- encoding ----------------------------------------------------------------------------
    @abstractmethod
    def encode(
        self,
        frames: np.ndarray | Sequence,
        question: str,
        *,
        evidence: np.ndarray | None = None,
        vision_attention: bool = False,
    ) -> EncodedPrompt:
        """Frames (T, H, W, 3) uint8 + question text → EncodedPrompt, through the HF processor.

        `evidence` (T, h, w) bool at the token grid is flattened into `evidence_mask`.
        `vision_attention=True` also stores extras["vision_attention"] (N,): mean attention each
        grid token received inside the vision tower (for VisionZip-style selection).
        """

    def encode_item(self, item: QAItem, *, vision_attention: bool = False) -> EncodedPrompt: ...

    # ---- answering from keep masks -----------------------------------------------------------
    @abstractmethod
    def generate_rows(self, rows: Sequence[Row], *, max_new_tokens: int = 4) -> list[str]:
        """Greedy answers for a left-padded batch of (possibly differently) pruned prompts."""

    @abstractmethod
    def answer_logprobs_rows(self, rows: Sequence[Row], answers: Sequence[str]) -> torch.Tensor:
        """(len(rows), len(answers)) summed log-likelihood of each answer string (teacher forcing)."""

    # ---- what the policy and in-LLM selectors may borrow -------------------------------------
    @abstractmethod
    def first_decoder_layer(self) -> nn.Module:
        """A deep copy of the language model's first decoder layer (the policy's initialisation)."""

    @abstractmethod
    def rotary_embedding(self) -> nn.Module:
        """A deep copy of the language model's rotary embedding module."""

    @abstractmethod
    def last_token_attention(self, prompt: EncodedPrompt, layer: int) -> torch.Tensor:
        """(N,) attention of the last prompt token to each video token at decoder layer `layer`."""
