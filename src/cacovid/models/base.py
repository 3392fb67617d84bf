"""The adapter contract: what every supported video LLM family offers the rest of the package.

An adapter wraps a real `transformers` model and its processor. It turns (frames, question) into an
`EncodedPrompt` once, then answers from any batch of keep-masks over that prompt's video tokens,
keeping every kept token's original position ids. Selectors and the policy never touch model internals;
what they need from inside the model comes through the narrow methods below.

The answering machinery (packing rows, greedy decoding, teacher-forced scoring, next-token logits,
attention read-outs) is shared by all families and lives here; a family adapter supplies `encode`,
`text_config` and `language_model` (plus `lm_position_ids` if its model wants another layout).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cacovid.models.attention import capture_output, eager_attention, stop_after
from cacovid.models.compat import cache_argument
from cacovid.models.frames import read_frames
from cacovid.models.packing import PackedBatch, normalize_rows, pack_rows
from cacovid.types import EncodedPrompt, QAItem, token_budget

# One row of a batched call: a prompt, its (N,) bool keep mask, and optional (K, D) replacement
# embeddings for the kept tokens in increasing index order (merging selectors). A 2-tuple
# (prompt, keep) is accepted too.
Row = tuple[EncodedPrompt, torch.Tensor, "torch.Tensor | None"]


class VideoLLM(ABC):
    """A frozen video LLM behind one interface (LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL).

    `max_frames` bounds how many frames `encode_item` decodes from a video file; `max_batch_tokens`
    bounds (rows x tokens) per language-model forward when scoring answers (larger batches are
    chunked, results are identical). Encoded prompts and every returned tensor live on the
    adapter's device; keep masks may live anywhere.
    """

    family: str = ""
    max_frames: int = 32
    max_batch_tokens: int = 1 << 18

    def __init__(self, model: nn.Module, processor, name_or_path: str = "", *, freeze: bool = True) -> None:
        # freeze=False wraps a caller's model as it is (no eval(), no requires_grad changes): what
        # `cacovid.prune_inputs` does with a plain transformers model it is handed.
        self.model = model.eval() if freeze else model
        if freeze:
            for p in self.model.parameters():
                p.requires_grad_(False)
        self.processor = processor
        self.name_or_path = name_or_path
        self._answer_cache: dict[str, torch.Tensor] = {}
        # The key/value cache's argument name ("cache" from transformers 5.24, "past_key_values"
        # before), read once from the model's forward signature.
        self._cache_arg = cache_argument(model)

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

    @property
    @abstractmethod
    def video_token_id(self) -> int:
        """The placeholder id the processor expands into the video's tokens."""

    @abstractmethod
    def language_model(self) -> nn.Module:
        """The decoder stack (has `.layers`, `.rotary_emb`, `.embed_tokens`, a `config`)."""

    def input_embeddings(self) -> nn.Module:
        """The token embedding table shared by prompt building, padding and teacher forcing."""
        return self.model.get_input_embeddings()

    def lm_position_ids(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Position ids in the layout the model's forward expects ((B, S) or (3, B, S))."""
        return position_ids

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end generation: the generation config's, else the tokenizer's eos."""
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = getattr(getattr(self.processor, "tokenizer", None), "eos_token_id", None)
        return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]

    @property
    def pad_token_id(self) -> int:
        pad = getattr(getattr(self.processor, "tokenizer", None), "pad_token_id", None)
        if pad is None:
            pad = getattr(self.model.generation_config, "pad_token_id", None)
        if pad is None:
            ids = self.eos_token_ids
            pad = ids[0] if ids else 0
        return int(pad)

    # ---- encoding ----------------------------------------------------------------------------
    @abstractmethod
    def encode(
        self,
        frames: np.ndarray | Sequence,
        question: str,
        *,
        evidence: np.ndarray | None = None,
        vision_attention: bool = False,
        features: torch.Tensor | None = None,
        blind: bool = False,
    ) -> EncodedPrompt:
        """Frames (T, H, W, 3) uint8 + question text → EncodedPrompt, through the HF processor.

        `evidence` (T, h, w) bool at the token grid is flattened into `evidence_mask`.
        `vision_attention=True` also stores extras["vision_attention"] (N,): mean attention each
        grid token received inside the vision tower (for VisionZip-style selection).
        The vision tower is the dearest part of encoding a small host, and two cases do not need it:
        `features` (`placeholder_features` of an earlier prompt over the same frames) asks another
        question about a video already encoded; `blind=True` encodes a prompt that will keep none
        of its video tokens (the blind test), with zeros in the grid placeholders and the separators
        the family computes without pixels. A blind prompt refuses any keep mask that keeps a video
        token.
        """

    def encode_item(
        self,
        item: QAItem,
        *,
        vision_attention: bool = False,
        features: torch.Tensor | None = None,
        blind: bool = False,
    ) -> EncodedPrompt:
        """Encode a QA item: its frames (or up to `max_frames` frames of its video file), its prompt
        text and its evidence grid. The item id is recorded in `meta["item_id"]`. `features` and
        `blind` skip the vision tower (`encode`)."""
        if item.frames is not None:
            frames = item.frames
        elif item.video_path:
            frames = read_frames(item.video_path, self.max_frames)
        else:
            raise ValueError(f"item {item.id!r} has neither frames nor a video_path")
        if len(frames) == 0:
            raise ValueError(f"item {item.id!r}: the video has zero frames")
        prompt = self.encode(
            frames,
            item.prompt_text(),
            evidence=item.evidence,
            vision_attention=vision_attention,
            features=features,
            blind=blind,
        )
        prompt.meta.setdefault("item_id", item.id)
        return prompt

    def placeholder_features(self, prompt: EncodedPrompt) -> torch.Tensor:
        """(n, D) what the vision tower wrote into `prompt`'s n video placeholders (the grid tokens,
        and the separator LLaVA-OneVision computes with them), for `encode(..., features=...)`."""
        if prompt.meta.get("blind"):
            raise ValueError("a blind prompt holds no video features to reuse")
        if prompt.input_ids is None:
            raise ValueError("the prompt has no input_ids: its video placeholders cannot be found")
        return prompt.inputs_embeds[prompt.input_ids == self.video_token_id]

    def _given_features(
        self, features: torch.Tensor | None, blind: bool, n_placeholders: int, vision_attention: bool
    ) -> torch.Tensor | None:
        """The placeholders' features when the vision tower is skipped (`encode`), else None."""
        if features is None and not blind:
            return None
        if vision_attention:
            raise ValueError(
                "vision_attention reads the vision tower: it cannot be combined with features or blind"
            )
        if features is not None and blind:
            raise ValueError("give either features or blind=True, not both")
        D = self.input_embeddings().weight.shape[1]
        if blind:
            return self._blind_features(n_placeholders)
        if not isinstance(features, torch.Tensor) or features.shape != (n_placeholders, D):
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(
                f"features must be ({n_placeholders}, {D}) for this prompt's video placeholders, got {got}: "
                "were they taken from a prompt over the same video (placeholder_features)?"
            )
        return features.to(self.device)

    def _blind_features(self, n_placeholders: int) -> torch.Tensor:
        """(n, D) placeholder features of a blind prompt: zeros (families with pixel-free separators
        among the placeholders put them in)."""
        weight = self.input_embeddings().weight
        return torch.zeros(n_placeholders, weight.shape[1], dtype=weight.dtype, device=weight.device)

    def chat_text(self, question: str) -> str:
        """The prompt text: one user turn holding the video then the question, plus the
        assistant generation prompt, rendered by the processor's own chat template."""
        if not isinstance(question, str):
            raise ValueError(f"question must be a string, got {type(question).__name__}")
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # ---- packing -----------------------------------------------------------------------------
    def pad_embedding(self) -> torch.Tensor:
        """(D,) embedding of the pad token (what left pads carry; attention ignores them)."""
        return self.input_embeddings().weight[self.pad_token_id]

    def pack(self, rows: Sequence[Row]) -> PackedBatch:
        """Validate rows and gather their kept tokens into one left-padded batch (see packing.py)."""
        return pack_rows(normalize_rows(rows), self.pad_embedding(), device=self.device, dtype=self.dtype)

    def _forward(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
    ) -> torch.Tensor:
        # Always pass the 2-D attention mask, even when it is all ones: with no mask, transformers
        # 5.x reads non-consecutive position ids (pruned tokens!) as packed sequences and blocks
        # attention across every gap.
        out = self.model(
            inputs_embeds=embeds,
            position_ids=self.lm_position_ids(positions),
            attention_mask=attention_mask,
            use_cache=False,
            logits_to_keep=logits_to_keep,
        )
        return out.logits

    # ---- answering from keep masks -----------------------------------------------------------
    @torch.no_grad()
    def generate_rows(self, rows: Sequence[Row], *, max_new_tokens: int = 4) -> list[str]:
        """Greedy answers for a left-padded batch of (possibly differently) pruned prompts.

        Returns one stripped string per row (special tokens removed).
        """
        ids = self.generate_ids_rows(rows, max_new_tokens=max_new_tokens)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in texts]

    @torch.no_grad()
    def generate_ids_rows(self, rows: Sequence[Row], *, max_new_tokens: int = 4) -> torch.Tensor:
        """(B, <= max_new_tokens) greedily generated token ids (pad after a row's eos).

        One `generate` call per chunk of rows (see `max_batch_tokens`); rows never interact.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        batch = self.pack(rows)
        eos = self.eos_token_ids
        outs = []
        for sub in self._row_chunks(batch, max_new_tokens):
            outs.append(
                self.model.generate(
                    inputs_embeds=sub.inputs_embeds,
                    position_ids=self.lm_position_ids(sub.position_ids),
                    attention_mask=sub.attention_mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    eos_token_id=eos or None,
                    pad_token_id=self.pad_token_id,
                )
            )
        if len(outs) == 1:
            return outs[0]
        width = max(o.shape[1] for o in outs)
        return torch.cat(
            [nn.functional.pad(o, (0, width - o.shape[1]), value=self.pad_token_id) for o in outs]
        )

    @torch.no_grad()
    def next_token_logits_rows(self, rows: Sequence[Row]) -> torch.Tensor:
        """(B, V) float32 logits of the first answer token for each row: one forward per chunk of
        rows (usually one), no decoding. The cheapest scorer for single-token (letter) answers.
        """
        batch = self.pack(rows)
        parts = [
            self._forward(sub.inputs_embeds, sub.position_ids, sub.attention_mask, logits_to_keep=1)[:, -1]
            for sub in self._row_chunks(batch, 0)
        ]
        return torch.cat(parts).float()

    def _row_chunks(self, batch: PackedBatch, extra_tokens: int) -> list[PackedBatch]:
        """Split a packed batch into row chunks of at most ~`max_batch_tokens` tokens each, where a
        row costs S + `extra_tokens` tokens."""
        B, S = batch.inputs_embeds.shape[:2]
        chunk = max(1, self.max_batch_tokens // (S + extra_tokens))
        if chunk >= B:
            return [batch]
        return [
            PackedBatch(
                batch.inputs_embeds[r],
                batch.position_ids[..., r, :],
                batch.attention_mask[r],
                batch.lengths[r],
                batch.padded,
            )
            for r in (slice(s, min(B, s + chunk)) for s in range(0, B, chunk))
        ]

    def answer_token_ids(self, answer: str) -> torch.Tensor:
        """(n,) token ids of an answer string as the model would produce it after the prompt."""
        if not isinstance(answer, str):
            raise ValueError(f"answers must be strings, got {type(answer).__name__}")
        cached = self._answer_cache.get(answer)
        if cached is None:
            ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
            if len(ids) == 0:
                raise ValueError(f"answer {answer!r} tokenizes to nothing")
            cached = torch.tensor(ids, dtype=torch.long)
            if len(self._answer_cache) < 4096:  # option letters and short answers repeat endlessly
                self._answer_cache[answer] = cached
        return cached

    def _answer_table(self, answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, n) right-padded answer token ids and their (A, n) bool mask, on the model device."""
        if isinstance(answers, str) or len(answers) == 0:
            raise ValueError("answers must be a non-empty sequence of strings")
        token_lists = [self.answer_token_ids(a) for a in answers]
        n = max(len(t) for t in token_lists)
        ids = torch.full((len(answers), n), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(answers), n, dtype=torch.bool)
        for j, t in enumerate(token_lists):
            ids[j, : len(t)] = t
            mask[j, : len(t)] = True
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def answer_logprobs_rows(self, rows: Sequence[Row], answers: Sequence[str]) -> torch.Tensor:
        """(len(rows), len(answers)) summed log-likelihood of each answer string (teacher forcing).

        Each answer is scored after each row's kept prompt, at positions continuing from the last
        prompt position (+1 per token). The prompt is run once per row (its key/value cache is then
        shared by all answers): the first answer token is scored from the prompt's last logits, and
        only the remaining answer tokens need a second, short forward. Rows are chunked so that one
        forward holds at most about `max_batch_tokens` tokens.
        """
        ids, mask = self._answer_table(answers)
        batch = self.pack(rows)
        A, n = ids.shape
        return torch.cat([self._score_chunk(sub, ids, mask) for sub in self._row_chunks(batch, A * n)])

    def _score_chunk(self, batch: PackedBatch, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(b, A) answer log-likelihoods for one chunk of packed rows (see answer_logprobs_rows)."""
        b = batch.inputs_embeds.shape[0]
        A, n = ids.shape
        out = self.model(
            inputs_embeds=batch.inputs_embeds,
            position_ids=self.lm_position_ids(batch.position_ids),
            attention_mask=batch.attention_mask,
            use_cache=n > 1,
            logits_to_keep=1,
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)[:, ids[:, 0]]  # (b, A)
        if n == 1:
            return first
        # Teacher-force answer tokens 0..n-2 on the shared prompt cache to score tokens 1..n-1.
        cache = getattr(out, self._cache_arg)
        cache.batch_repeat_interleave(A)
        rest = ids[:, : n - 1].repeat(b, 1)  # (b*A, n-1), row-major over (row, answer)
        rest_mask = mask[:, : n - 1].repeat(b, 1)
        last = batch.last_positions.repeat_interleave(A, dim=-1)  # (b*A,) or (3, b*A)
        steps = torch.arange(1, n, device=ids.device)
        positions = last.unsqueeze(-1) + steps
        attn = torch.cat([batch.attention_mask.repeat_interleave(A, dim=0), rest_mask.long()], dim=1)
        embeds = self.input_embeddings()(rest).to(self.dtype)
        logits = self.model(
            inputs_embeds=embeds,
            position_ids=self.lm_position_ids(positions),
            attention_mask=attn,
            use_cache=True,
            **{self._cache_arg: cache},
        ).logits.float()
        target = ids[:, 1:].repeat(b, 1)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        logp = (logp * mask[:, 1:].repeat(b, 1)).sum(-1).view(b, A)
        return first + logp

    # ---- conveniences over one prompt --------------------------------------------------------
    def _rows(
        self, prompt: EncodedPrompt, keep: torch.Tensor | None, embeds: torch.Tensor | None = None
    ) -> list[Row]:
        if keep is None:
            keep = torch.ones(prompt.num_video_tokens, dtype=torch.bool)
        keep = prompt.check_keep(keep)
        if embeds is not None:
            if not isinstance(embeds, torch.Tensor):
                raise ValueError("replacement embeds must be a torch.Tensor")
            if embeds.dim() == 2:
                embeds = embeds.unsqueeze(0)
            if embeds.dim() != 3 or embeds.shape[0] != keep.shape[0]:
                raise ValueError(
                    f"replacement embeds must be (K, D) or (G, K, D) for {keep.shape[0]} masks, "
                    f"got {tuple(embeds.shape)}"
                )
            return [(prompt, k, e) for k, e in zip(keep, embeds, strict=True)]
        return [(prompt, k, None) for k in keep]

    def generate(
        self,
        prompt: EncodedPrompt,
        keep: torch.Tensor | None = None,
        embeds: torch.Tensor | None = None,
        max_new_tokens: int = 4,
    ) -> list[str]:
        """Greedy answers for keep (N,) or (G, N) bool over one prompt (None = keep all)."""
        return self.generate_rows(self._rows(prompt, keep, embeds), max_new_tokens=max_new_tokens)

    def answer_logprobs(
        self, prompt: EncodedPrompt, keep: torch.Tensor | None, answers: Sequence[str]
    ) -> torch.Tensor:
        """(G, A) answer log-likelihoods for keep (N,) or (G, N) over one prompt."""
        return self.answer_logprobs_rows(self._rows(prompt, keep), answers)

    def next_token_logits(self, prompt: EncodedPrompt, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(G, V) first-answer-token logits for keep (N,) or (G, N) over one prompt."""
        return self.next_token_logits_rows(self._rows(prompt, keep))

    @staticmethod
    def keep_first(prompt: EncodedPrompt, ratio: float) -> torch.Tensor:
        """(N,) bool keeping the first ⌊ratio·N⌋ video tokens: a deterministic reference mask."""
        k = token_budget(prompt.num_video_tokens, ratio)
        keep = torch.zeros(prompt.num_video_tokens, dtype=torch.bool)
        keep[:k] = True
        return keep

    # ---- what the policy and in-LLM selectors may borrow -------------------------------------
    def first_decoder_layer(self) -> nn.Module:
        """A deep copy of the language model's first decoder layer (the policy's initialisation)."""
        return copy.deepcopy(self.language_model().layers[0])

    def rotary_embedding(self) -> nn.Module:
        """A deep copy of the language model's rotary embedding module."""
        return copy.deepcopy(self.language_model().rotary_emb)

    @torch.no_grad()
    def last_token_attention(self, prompt: EncodedPrompt, layer: int) -> torch.Tensor:
        """(N,) attention of the last prompt token to each video token at decoder layer `layer`.

        Runs the language model's first `layer` + 1 decoder layers on the full prompt with eager
        attention (for this call only; the forward stops after that layer) and averages the layer's
        attention probabilities over heads.
        """
        lm = self.language_model()
        n_layers = len(lm.layers)
        if not isinstance(layer, int) or not -n_layers <= layer < n_layers:
            raise ValueError(f"layer must be an int in [-{n_layers}, {n_layers}), got {layer!r}")
        embeds = prompt.inputs_embeds.to(self.device, self.dtype).unsqueeze(0)
        positions = prompt.position_ids.to(self.device).unsqueeze(-2)  # (1, L) or (3, 1, L)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
        with (
            eager_attention(lm),
            capture_output(lm.layers[layer].self_attn, index=1) as got,
            stop_after(lm.layers[layer]),
        ):
            lm(
                inputs_embeds=embeds,
                position_ids=self.lm_position_ids(positions),
                attention_mask=mask,
                use_cache=False,
            )
        weights = got[-1]  # (1, heads, L, L)
        return weights[0, :, -1].float().mean(0)[prompt.video_positions.to(weights.device)]
