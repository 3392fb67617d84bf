"""`PolicyConfig`: everything needed to rebuild a saved policy and to check it fits a host model.

A policy is tied to its host: its decoder layer is a copy of the host's first layer and it reads the
host's input embeddings. The config therefore records the host's name, family and full text config, so
`from_pretrained` can rebuild the layer without the host and refuse a host it does not fit.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Text-config keys that decide whether saved weights fit a host's layer. A checkpoint of the same
# architecture under another name (a moved directory) is fine; any difference here is not.
STRUCTURAL_KEYS: tuple[str, ...] = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_parameters",
)

ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa", "flash_attention_2", "flash_attention_3")
# How the copied layer attends: "bidirectional" (docs/method.md §2) or "causal", as the published
# release's layer ran in practice (docs/method.md §8).
LAYER_ATTENTIONS: tuple[str, ...] = ("bidirectional", "causal")
# Which budgeted selection turns scores into a keep mask: "cacovid" (docs/method.md §3) or "release",
# the published release's arithmetic and fill (`policy/release.py`, docs/method.md §8).
SELECTION_RULES: tuple[str, ...] = ("cacovid", "release")
# How a fresh question-match term's key projection starts (`policy/question.py`).
QUESTION_MATCH_INITS: tuple[str, ...] = ("zero", "query")


def default_head_widths(hidden_size: int) -> tuple[int, ...]:
    """Hidden widths of the D → D/2 → D/4 → D/8 → D/16 → 2 head (each at least 2)."""
    if hidden_size <= 0:
        raise ValueError(f"hidden size must be positive, got {hidden_size}")
    return tuple(max(2, hidden_size // d) for d in (2, 4, 8, 16))


@dataclass
class PolicyConfig:
    """What a CaCoVID policy is and which host it belongs to.

    - `host_name`: name or path of the host video LLM (informational; not checked on load).
    - `host_family`: adapter family of the host ("llava_onevision", "qwen2_vl", …); must match on load.
    - `text_config`: the host language model's text config as a plain dict (`to_dict()`).
    - `head_widths`: hidden widths of the token and frame heads; empty means D/2, D/4, D/8, D/16.
    - `init_scale`: std of the heads' last linear layer, so initial scores are ≈ 0.
    - `seed`: seeds the heads' initialisation.
    - `attn_implementation`: attention kernel of the policy's own layer copy (always bidirectional).
    - `novelty_weight`: weight w of the temporal-novelty prior added to every token score,
      s = z_keep − z_drop + w·standardised novelty (`ops/novelty.py`); 0 (the default) is the policy
      of docs/method.md §2 exactly. Why: a single copied layer does not learn to compare a token with
      the whole video from an answer-accuracy reward in affordable training, while content seen in
      few frames is where sparse evidence lives; the heads learn the rest (docs/experiments.md, "The
      temporal-novelty prior").
    - `question_match_dim`: width d of the question-match term (`policy/question.py`) added to
      every token score; 0 (the default) leaves it out, the policy of docs/method.md §2. Why: one
      copied first layer learns only slowly to let a video token read the question after it
      (docs/experiments.md, "The decoys world"); a dedicated cross-attention from each video token
      to the question's tokens gives it that path directly.
    - `question_match_init`: how a fresh question-match term starts: "zero" (W_k = 0, so it adds
      nothing until trained) or "query" (W_k = W_q, so a video token that looks like a question word
      scores higher from the start: a structural prior that reads no labels, about the `relevance`
      heuristic's ranking; docs/experiments.md). Only a fresh policy's weights depend on it.
    - `context_width`: hidden width of the cross-frame context term (`policy/context.py`); 0 (the
      default) leaves it out. It needs the question-match term. Why: a token-wise match keeps
      whatever looks like the question's words, also content that sits in every frame; the context
      term lets the score depend on whether a match comes and goes and on the cells around it.
    - `layer_attention`: "bidirectional" (the default, docs/method.md §2) or "causal", which runs the
      copied layer the way the published release's layer ran under FlashAttention-2, so that a policy
      imported from the release (`cacovid import-official`) scores exactly as it did there.
    - `selection_rule`: "cacovid" (the default, docs/method.md §3) or "release": the release's
      frame-budget arithmetic and its evenly spaced fill of the rest of the budget
      (`policy/release.py`). Both options are docs/method.md §8's deviations, undone on request.
    - `pool_size`: side k of the spatial cells the copied layer reads (`policy/pooling.py`); 1 (the
      default) is the policy of docs/method.md §2 exactly. Why: the layer is one full-width decoder
      layer over the whole prompt, about 1/28 of a 28-layer prefill at 7B shape before any token is
      dropped; with k > 1 it reads the mean of each k x k cell of every frame instead of every token
      (its linear parts shrink k² times, its attention up to k⁴ times), the layer-based scores go back
      to each cell's members, and the per-token terms (question match, context, novelty prior) are
      still computed for every token. The weights do not depend on k, so it is not a structural key
      (`STRUCTURAL_KEYS` decide whether weights fit a host): a policy can be rerun, or trained, at
      another pool size.
    """

    host_name: str = ""
    host_family: str = ""
    text_config: dict[str, Any] = field(default_factory=dict)
    head_widths: tuple[int, ...] = ()
    init_scale: float = 1e-2
    seed: int = 0
    attn_implementation: str = "sdpa"
    novelty_weight: float = 0.0
    question_match_dim: int = 0
    question_match_init: str = "zero"
    context_width: int = 0
    layer_attention: str = "bidirectional"
    selection_rule: str = "cacovid"
    pool_size: int = 1

    def __post_init__(self) -> None:
        self.head_widths = tuple(int(w) for w in self.head_widths)
        if any(w <= 0 for w in self.head_widths):
            raise ValueError(f"head widths must be positive, got {self.head_widths}")
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {self.init_scale}")
        self.novelty_weight = float(self.novelty_weight)
        if not math.isfinite(self.novelty_weight) or self.novelty_weight < 0:
            raise ValueError(f"novelty_weight must be finite and >= 0, got {self.novelty_weight}")
        if (
            isinstance(self.question_match_dim, bool)
            or int(self.question_match_dim) != self.question_match_dim
        ):
            raise ValueError(f"question_match_dim must be an integer >= 0, got {self.question_match_dim!r}")
        self.question_match_dim = int(self.question_match_dim)
        if self.question_match_dim < 0:
            raise ValueError(f"question_match_dim must be an integer >= 0, got {self.question_match_dim}")
        if self.layer_attention not in LAYER_ATTENTIONS:
            raise ValueError(
                f"layer_attention must be one of {LAYER_ATTENTIONS}, got {self.layer_attention!r}"
            )
        if self.selection_rule not in SELECTION_RULES:
            raise ValueError(f"selection_rule must be one of {SELECTION_RULES}, got {self.selection_rule!r}")
        if isinstance(self.context_width, bool) or int(self.context_width) != self.context_width:
            raise ValueError(f"context_width must be an integer >= 0, got {self.context_width!r}")
        self.context_width = int(self.context_width)
        if self.context_width < 0:
            raise ValueError(f"context_width must be an integer >= 0, got {self.context_width}")
        if self.question_match_init not in QUESTION_MATCH_INITS:
            raise ValueError(
                f"question_match_init must be one of {QUESTION_MATCH_INITS}, got {self.question_match_init!r}"
            )
        if self.context_width and not self.question_match_dim:
            raise ValueError("context_width needs the question-match term (question_match_dim > 0)")
        whole = isinstance(self.pool_size, int) or (
            isinstance(self.pool_size, float) and self.pool_size.is_integer()
        )
        if isinstance(self.pool_size, bool) or not whole or self.pool_size < 1:
            raise ValueError(f"pool_size must be an integer >= 1 (1: no pooling), got {self.pool_size!r}")
        self.pool_size = int(self.pool_size)
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {self.attn_implementation!r}"
            )

    @property
    def hidden_size(self) -> int:
        if "hidden_size" not in self.text_config:
            raise ValueError("policy config has no host text config (hidden_size missing)")
        return int(self.text_config["hidden_size"])

    @property
    def model_type(self) -> str:
        return str(self.text_config.get("model_type", ""))

    def resolved_head_widths(self) -> tuple[int, ...]:
        return self.head_widths or default_head_widths(self.hidden_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["head_widths"] = list(self.head_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown policy config keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str))

    @classmethod
    def load(cls, path: str | Path) -> PolicyConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def structural_mismatches(saved: dict[str, Any], host: dict[str, Any]) -> list[str]:
    """Human-readable list of structural differences between two text configs (empty if they fit)."""
    out = []
    for key in STRUCTURAL_KEYS:
        a, b = _normalise(saved.get(key)), _normalise(host.get(key))
        if a != b:
            out.append(f"{key}: policy has {a!r}, host has {b!r}")
    return out


def _normalise(v: Any) -> Any:
    # JSON round trips turn tuples into lists; compare through JSON so both sides agree.
    return json.loads(json.dumps(v, sort_keys=True, default=str))
