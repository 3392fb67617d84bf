"""Methods as the evaluation runs them: selectors by name, plus the `full` and `blind` reference rows.

Why a layer over the selector registry: the harness and the efficiency meter need a few facts beside
the selector itself — which fixed ratio a reference row has, whether the method needs ground-truth
evidence (oracle) or the vision tower's attention at encode time (VisionZip, FastVID), and for the
in-LLM FastV-style method its FLOP-equivalent input ratio — and the CLI needs one function that turns
"random,fastv,cacovid" into runnable methods wired to the adapter.

`full` keeps every video token (ratio 1.0) and `blind` keeps none (ratio 0.0, the text-only answer):
they are not selectors (a selector must keep at least one token), so they are special rows here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cacovid.policy.selector import CaCoVIDSelector
from cacovid.policy.settings import SELECTION_FILE as SELECTION_FILE  # re-exported for the CLI
from cacovid.policy.settings import selection_options as selection_options  # re-exported
from cacovid.selectors.fastv import fastv_flop_equivalent_ratio
from cacovid.selectors.registry import available_selectors, get_selector
from cacovid.types import EncodedPrompt, Selection, Selector

if TYPE_CHECKING:
    from cacovid.models.base import VideoLLM

REFERENCES = ("full", "blind", "oracle")
# Baselines that read the vision tower's attention, stored at encode time (EncodedPrompt.extras).
VISION_ATTENTION_METHODS = frozenset({"visionzip", "fastvid"})
DEFAULT_FASTV_LAYER = 2


@dataclass
class Method:
    """One method of an evaluation.

    - `kind`: "select" (a Selector at each evaluated ratio), "full" (ratio 1.0) or "blind" (0.0).
    - `needs_evidence`: rows only for items with a known evidence mask (the oracle).
    - `needs_vision_attention`: encode items with `vision_attention=True`.
    - `flop_equivalent`: maps the kept fraction k/N to the input ratio with equal prefill FLOPs, for
      in-LLM methods (FastV-style) that spend full-length compute before pruning.
    - `fastv_layer`: the decoder layer FastV-style pruning happens after (for FLOP accounting).
    """

    name: str
    selector: Selector | None = None
    kind: str = "select"
    needs_evidence: bool = False
    needs_vision_attention: bool = False
    flop_equivalent: Callable[[float], float] | None = None
    fastv_layer: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("select", "full", "blind"):
            raise ValueError(f"method kind must be select, full or blind, got {self.kind!r}")
        if self.kind == "select" and self.selector is None:
            raise ValueError(f"method {self.name!r} needs a selector")

    def ratios(self, ratios: Sequence[float]) -> list[float]:
        """The ratios this method is evaluated at: the run's ratios, or its fixed reference ratio."""
        if self.kind == "full":
            return [1.0]
        if self.kind == "blind":
            return [0.0]
        return [float(r) for r in ratios]

    def select(
        self, prompt: EncodedPrompt, ratio: float, generator: torch.Generator | None = None
    ) -> Selection:
        """The method's keep mask for `prompt` at `ratio` (references need no selector)."""
        n = prompt.num_video_tokens
        if self.kind == "full":
            return Selection(keep=torch.ones(n, dtype=torch.bool))
        if self.kind == "blind":
            return Selection(keep=torch.zeros(n, dtype=torch.bool))
        assert self.selector is not None
        return self.selector.select(prompt, ratio, generator=generator)


def parse_methods(text: str | Sequence[str], *, references: bool = True, policy: bool = False) -> list[str]:
    """'random,uniform' or 'all' → method names, references (full, blind, oracle) first.

    `all` means every registered selector (CaCoVID only when a policy is given). Unknown names raise
    ValueError listing the known ones.
    """
    names = [s.strip() for s in text.split(",")] if isinstance(text, str) else [str(s).strip() for s in text]
    names = [n for n in names if n]
    known = set(available_selectors()) | {"full", "blind", "cacovid"}
    out: list[str] = list(REFERENCES) if references else []
    for name in names:
        if name == "all":
            expand = [m for m in available_selectors() if m != "cacovid" or policy]
            if policy and "cacovid" not in expand:
                expand.append("cacovid")
            for m in expand:
                if m not in out:
                    out.append(m)
            continue
        if name not in known:
            raise ValueError(f"unknown method {name!r}; known: all, {', '.join(sorted(known))}")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no methods to evaluate")
    return out


def _fastv_method(adapter: VideoLLM, layer: int) -> Method:
    cfg = adapter.text_config
    n_layers = int(cfg.num_hidden_layers)
    layer = max(0, min(int(layer), n_layers - 1))  # last_token_attention needs a real layer index
    hidden, ffn = int(cfg.hidden_size), int(cfg.intermediate_size)

    def attention(prompt: EncodedPrompt) -> torch.Tensor:
        return adapter.last_token_attention(prompt, layer)

    def flop_eq(kept_fraction: float, n_tokens: int | None = None) -> float:
        return fastv_flop_equivalent_ratio(
            kept_fraction, layer, n_layers, n_tokens=n_tokens, hidden_size=hidden, ffn_size=ffn
        )

    selector = get_selector("fastv", attention_fn=attention, layer=layer, num_layers=n_layers)
    return Method("fastv", selector, flop_equivalent=flop_eq, fastv_layer=layer)


def _cacovid_selector(adapter: VideoLLM, policy_path: str) -> Selector:
    """CaCoVID's selector from a saved policy, checked against the host model and run with the
    selection settings saved beside it (`selection.json`)."""
    return CaCoVIDSelector.from_pretrained(policy_path, host=adapter)


def build_methods(
    names: Sequence[str],
    adapter: VideoLLM,
    *,
    policy: str | None = None,
    seed: int = 0,
    fastv_layer: int = DEFAULT_FASTV_LAYER,
) -> list[Method]:
    """Runnable methods for `names` (see `parse_methods`), wired to `adapter` where needed."""
    out: list[Method] = []
    for name in names:
        if name == "full":
            out.append(Method("full", kind="full"))
        elif name == "blind":
            out.append(Method("blind", kind="blind"))
        elif name == "fastv":
            out.append(_fastv_method(adapter, fastv_layer))
        elif name == "cacovid":
            if not policy:
                raise ValueError("method 'cacovid' needs a trained policy: pass --policy PATH")
            out.append(Method("cacovid", _cacovid_selector(adapter, policy)))
        elif name == "random":
            out.append(Method("random", get_selector("random", seed=seed)))
        else:
            out.append(
                Method(
                    name,
                    get_selector(name),
                    needs_evidence=name == "oracle",
                    needs_vision_attention=name in VISION_ATTENTION_METHODS,
                )
            )
    return out
