"""The two central types of the package and the one budget rule every selector shares.

`EncodedPrompt` is a (video, question) after the frozen vision encoder and projector: it is computed
once per item and reused by the policy, by every rollout and by every baseline. `Selector` is the one
interface CaCoVID and every baseline implement, so comparisons run on identical inputs.
This module imports nothing else from the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


def token_budget(n_tokens: int, ratio: float) -> int:
    """K = floor(ratio * N), the exact number of video tokens a selector must keep.

    A ratio outside (0, 1] is a user error (a percentage passed as 25, a zero budget), so it is
    rejected here, at the one place every selector and adapter goes through. At least one token is kept.
    """
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not math.isfinite(ratio):
        raise ValueError(f"retention ratio must be a finite number in (0, 1], got {ratio!r}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"retention ratio must be in (0, 1], got {ratio!r}")
    if n_tokens <= 0:
        raise ValueError(f"cannot select from {n_tokens} video tokens")
    # The small epsilon keeps e.g. 0.1 * 490 = 48.999… from losing a token to float rounding.
    return max(1, min(n_tokens, math.floor(ratio * n_tokens + 1e-9)))


def parse_ratios(text: str) -> list[float]:
    """Retention ratios from a comma-separated list such as "0.25,0.1", each checked to lie in (0, 1].

    The one parser behind every ratio-list option (`--ratios`, `--val-ratios`, the benchmarks'
    lists): a ValueError names the entry at fault, so a percentage typed as 25 or a zero budget is
    caught before any model loads, not at the first `token_budget`.
    """
    entries = [e.strip() for e in str(text).split(",") if e.strip()]
    if not entries:
        raise ValueError(
            f"expected comma-separated retention ratios in (0, 1] such as 0.25,0.1, got {text!r}"
        )
    ratios = []
    for entry in entries:
        try:
            ratio = float(entry)
        except ValueError:
            raise ValueError(
                f"retention ratio {entry!r} is not a number (expected a list such as 0.25,0.1)"
            ) from None
        if not math.isfinite(ratio) or not 0.0 < ratio <= 1.0:
            percent = 1.0 < ratio <= 100.0 and ratio.is_integer()
            hint = f" (a percentage? {ratio:g} % is {ratio / 100:g})" if percent else ""
            raise ValueError(f"retention ratio must be in (0, 1], got {entry!r}{hint}")
        ratios.append(ratio)
    return ratios


@dataclass
class EncodedPrompt:
    """One (video, question) ready for the language model, before any compression.

    Shapes: L = sequence length, D = hidden size, N = T*H*W video tokens.

    - `inputs_embeds` (L, D): text embeddings with projected video features written in place.
    - `position_ids` (L,) for 1-D RoPE models, or (3, L) for M-RoPE (t, h, w) models.
    - `attention_mask` (L,) long, all ones for a single unpadded prompt.
    - `video_positions` (N,) long: where the video grid tokens sit in the sequence, in (t, h, w) order.
      Tokens that are part of the video block but not of the grid (LLaVA-OV's `image_newline`) are
      not listed: like text and separators they are always kept.
    - `video_grid` (T, H, W) of the grid after pooling / spatial merge.
    - `evidence_mask` (N,) bool, ground-truth answer-bearing tokens when the data set knows them.
    - `input_ids` (L,) the token ids the embeddings came from (video placeholders included).
    - `extras`: optional per-token signals an adapter computed at encode time for baselines that need
      to look inside the vision tower (e.g. "vision_attention": (N,) mean attention received).
    """

    inputs_embeds: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    video_positions: torch.Tensor
    video_grid: tuple[int, int, int]
    input_ids: torch.Tensor | None = None
    evidence_mask: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        L = self.inputs_embeds.shape[0]
        if self.inputs_embeds.dim() != 2:
            raise ValueError(f"inputs_embeds must be (L, D), got {tuple(self.inputs_embeds.shape)}")
        if self.position_ids.shape[-1] != L or self.position_ids.dim() not in (1, 2):
            raise ValueError(
                f"position_ids must be (L,) or (3, L) with L={L}, got {tuple(self.position_ids.shape)}"
            )
        if self.attention_mask.shape != (L,):
            raise ValueError(f"attention_mask must be ({L},), got {tuple(self.attention_mask.shape)}")
        T, H, W = (int(x) for x in self.video_grid)
        self.video_grid = (T, H, W)
        if T <= 0 or H <= 0 or W <= 0:
            raise ValueError(f"video grid must be positive, got {self.video_grid}")
        if self.video_positions.shape != (T * H * W,):
            raise ValueError(
                f"video_positions must list T*H*W={T * H * W} positions, "
                f"got {tuple(self.video_positions.shape)}"
            )
        if self.video_positions.numel() and (
            int(self.video_positions.min()) < 0 or int(self.video_positions.max()) >= L
        ):
            raise ValueError("video_positions point outside the sequence")
        if self.evidence_mask is not None and self.evidence_mask.shape != (T * H * W,):
            raise ValueError(f"evidence_mask must be ({T * H * W},), got {tuple(self.evidence_mask.shape)}")

    @property
    def num_frames(self) -> int:
        return self.video_grid[0]

    @property
    def tokens_per_frame(self) -> int:
        return self.video_grid[1] * self.video_grid[2]

    @property
    def num_video_tokens(self) -> int:
        return self.video_positions.numel()

    @property
    def hidden_size(self) -> int:
        return self.inputs_embeds.shape[-1]

    @property
    def video_features(self) -> torch.Tensor:
        """(N, D) projected video tokens, the features pre-LLM selectors compare."""
        return self.inputs_embeds[self.video_positions]

    def question_positions(self) -> torch.Tensor:
        """(Q,) sequence positions of the text after the video block (attention mask 1).

        Every supported chat template puts the question, its options and the answer instruction
        after the video, so these are the tokens a question-aware selector reads.
        """
        L = self.inputs_embeds.shape[0]
        after = torch.arange(L, device=self.inputs_embeds.device) > int(self.video_positions.max())
        after &= self.attention_mask.to(torch.bool)
        positions = after.nonzero().squeeze(1)
        if positions.numel() == 0:
            raise ValueError("the prompt has no text after the video: no question to compare tokens with")
        return positions

    def frame_features(self) -> torch.Tensor:
        """(T, P, D) video tokens grouped by frame."""
        return self.video_features.reshape(self.num_frames, self.tokens_per_frame, -1)

    def check_keep(self, keep: torch.Tensor) -> torch.Tensor:
        """Validate a keep mask (N,) or a batch (G, N); returns it as a (G, N) bool tensor."""
        if not isinstance(keep, torch.Tensor):
            raise ValueError(f"keep mask must be a torch.Tensor, got {type(keep).__name__}")
        if keep.dim() == 1:
            keep = keep.unsqueeze(0)
        if keep.dim() != 2 or keep.shape[1] != self.num_video_tokens:
            raise ValueError(
                f"keep mask must have shape (N,) or (G, N) with N={self.num_video_tokens} video tokens, "
                f"got {tuple(keep.shape)}"
            )
        if keep.dtype != torch.bool:
            raise ValueError(f"keep mask must be torch.bool, got {keep.dtype}")
        return keep


@dataclass
class Selection:
    """What a selector returns: exactly K kept video tokens.

    `keep` (N,) bool. Merging methods also give `embeds` (K, D): replacement features for the kept
    tokens in increasing index order; each merged token keeps the position id of the kept token it
    replaces, so positions stay well defined. `compression_ms` is the selector's own wall time.
    """

    keep: torch.Tensor
    embeds: torch.Tensor | None = None
    compression_ms: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_kept(self) -> int:
        return int(self.keep.sum())


@runtime_checkable
class Selector(Protocol):
    """A token selector: CaCoVID's policy and every baseline implement this.

    `select` must return exactly `token_budget(prompt.num_video_tokens, ratio)` kept tokens for any
    ratio in (0, 1], and must take all randomness from `generator`.
    """

    name: str

    def select(
        self, prompt: EncodedPrompt, ratio: float, *, generator: torch.Generator | None = None
    ) -> Selection: ...


# How a multiple-choice question asks to be answered (see QAItem.answer_format).
ANSWER_FORMATS: tuple[str, ...] = ("letter", "option")


@dataclass
class QAItem:
    """One question about one video, in the Video-R1 field layout.

    `options` are the bare option texts (["red", "blue", …]); `solution` is the correct letter for
    multiple choice ("B"), a number as text for numeric questions, or free text. Either `frames`
    (T, H, W, 3) uint8 or `video_path` supplies the video. `evidence` (T, h, w) bool marks the
    answer-bearing token cells when the data set knows them (the synthetic world does).
    `answer_format` says how the model is asked to answer a multiple-choice question: "letter"
    (the usual benchmark instruction) or "option" (the option's own text, e.g. "red"; the embedded
    toy model answers this way, see toy/train.py). Scoring accepts either answer in both cases.
    `counterfactual`: where the data set can ask it, the same video with a question about another
    object (its own `evidence`); the harness measures question sensitivity with it.
    """

    id: str
    problem: str
    options: list[str]
    solution: str
    problem_type: str = "multiple choice"
    family: str | None = None
    video_path: str | None = None
    frames: np.ndarray | None = None
    evidence: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    answer_format: str = "letter"
    counterfactual: QAItem | None = field(default=None, repr=False)

    def counterfactual_item(self) -> QAItem:
        """The counterfactual question about this item's video; a clear error where there is none."""
        if self.counterfactual is None:
            raise ValueError(
                f"item {self.id!r} has no counterfactual question (only worlds with decoys ask one, "
                f"e.g. --world preset=decoys)"
            )
        return self.counterfactual

    def shows_same_video(self, other: QAItem) -> bool:
        """Do the two items provably show the same video (equal frames, or the same file)? Where
        they do, an encoding of one can lend the other its video features
        (`VideoLLM.placeholder_features`)."""
        if self.frames is not None and other.frames is not None:
            return self.frames is other.frames or (
                self.frames.shape == other.frames.shape and bool(np.array_equal(self.frames, other.frames))
            )
        both_files = self.frames is None and other.frames is None and self.video_path is not None
        return both_files and self.video_path == other.video_path

    def __post_init__(self) -> None:
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(
                f"item {self.id!r}: answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}"
            )

    def prompt_text(self) -> str:
        """The question as the model reads it: problem, lettered options, answer instruction."""
        if self.problem_type == "multiple choice" and self.options:
            letters = "ABCDEFGH"
            opts = " ".join(f"{letters[i]} . {o}" for i, o in enumerate(self.options))
            return f"{self.problem} {opts} answer with the {self.answer_format} ."
        return self.problem

    @property
    def answer_text(self) -> str:
        """What a correct answer looks like in this item's answer format ("B" or "red")."""
        if self.problem_type == "multiple choice" and self.options and self.answer_format == "option":
            index = "ABCDEFGH".find(self.solution.strip().upper()[:1])
            if not 0 <= index < len(self.options):
                raise ValueError(f"item {self.id!r}: solution {self.solution!r} names no option")
            return self.options[index]
        return self.solution
