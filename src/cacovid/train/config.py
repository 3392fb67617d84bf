"""`TrainConfig`: every knob of CaCoVID training, declared once (docs/method.md §4, §5).

Each field carries its help text (`metadata["help"]`); `cacovid train`'s options, recipe files and
`--print-config` are all derived from these fields (`cli/train.py`), so a new knob is one line here
and one rule in `__post_init__`, which is the only validation: the command line, a recipe and Python
get the same error for the same value.

Example:
    >>> from cacovid.train.config import TrainConfig
    >>> TrainConfig(group_size=8, lr=3e-4).iterations
    5
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cacovid.train.objective import ADVANTAGES
from cacovid.train.rewards import reward_names
from cacovid.train.sampling import SAMPLERS


def knob(default: Any, help: str, flags: str | None = None) -> Any:
    """A config field with its help text (and, optionally, the command line's flag spelling)."""
    meta = {"help": help}
    if flags is not None:
        meta["flags"] = flags
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Training hyper-parameters.

    The defaults are the answer-only recipe that learns on the decoys world (recipes/toy/cacovid-decoys/
    rl.yaml, docs/experiments.md): global Gumbel-top-K rollouts with their exact log-probability, the
    log-odds reward charged for what answers another question about the video, leave-one-out
    baselines, r steered by the answer's lift above chance, one iteration per item and 8 items per
    step. `TrainConfig.paper()` gives the paper's recipe of docs/method.md §4 instead (three-mode
    sampler, accuracy reward, group-normalised advantages, I = 5).
    """

    # ---- rollouts ------------------------------------------------------------------------------
    group_size: int = knob(24, "rollouts G per iteration of an item")
    sampler: str = knob("gumbel", "rollout sampler, a name of `cacovid.train.sampling.SAMPLERS`")
    iterations: int = knob(1, "iterations I per item: each draws G rollouts and takes one optimiser step")
    items_per_step: int = knob(8, "items whose gradients are summed into one optimiser step (all processes)")
    # ---- training retention r (docs/method.md §4.3) ------------------------------------------------
    ratio: float = knob(0.15, "initial training retention r")
    ratio_min: float = knob(0.03, "lower bound of r")
    ratio_max: float = knob(0.3, "upper bound of r")
    adapt_ratio: bool = knob(True, "adapt r to the rollouts' success", flags="--adapt-ratio/--fixed-ratio")
    adapt_high: float = knob(0.67, "lower r when the success signal is at or above this")
    adapt_low: float = knob(0.13, "raise r when the success signal is at or below this")
    adapt_factor: float = knob(1.05, "r is divided or multiplied by this factor per step")
    adapt_smoothing: float = knob(0.9, "exponential smoothing of the success signal (0: this step's only)")
    adapt_vs_chance: bool = knob(
        True, "measure success as the lift above chance, (p − chance)/(1 − chance), not p itself"
    )
    # ---- the three-mode sampler (sampler "modes", docs/method.md §4 step 2) ------------------------
    frame_share: float = knob(0.0, "share of the G rollouts drawn in frame mode")
    content_rollout: bool = knob(False, "draw one policy-free content-mode rollout per iteration")
    content_baseline: bool = knob(True, "the content rollout's reward joins the advantage baselines")
    band_group: int = knob(2, "band group size g: n_g = max(⌊1/(r·g)⌋, 1) rank bands per frame")
    band_beta: float = knob(2.0, "band cap β: a band's probability is capped at clamp(β/n_g, 0.1, 0.9)")
    band_floor: float = knob(0.05, "every band keeps at least band_floor/n_g probability")
    in_band_clamp: tuple[float, float] = knob(
        (0.5, 2.0), "in-band token probabilities clamped to [low, high] × uniform (comma-separated)"
    )
    frame_fraction: float = knob(0.125, "frame mode draws ⌈T·f⌉ frames per rollout")
    frame_floor: float = knob(0.5, "frame-mode probabilities at least floor × uniform")
    frame_cap: float = knob(4.0, "frame-mode probabilities at most cap × uniform")
    dpc_neighbors: int = knob(4, "k of the density-peak kNN density (frame and content modes)")
    # ---- reward and advantages -------------------------------------------------------------------
    reward: str = knob(
        "logodds_contrast", "rollout reward, a name of `cacovid.train.rewards.REWARDS` or pkg.mod:fn"
    )
    max_new_tokens: int = knob(4, "tokens generated per answer (rewards that read generated text)")
    advantage: str = knob(
        "leave_one_out", "advantage estimator, a name of `cacovid.train.objective.ADVANTAGES`"
    )
    advantage_eps: float = knob(
        1e-4, "ε in A = (R − mean)/(std + ε) (advantage 'group'); ~0.05 quiets near-flat dense groups"
    )
    # ---- objective -------------------------------------------------------------------------------
    clip_low: float = knob(0.2, "surrogate clip: ratios below 1 − clip_low are clipped")
    clip_high: float = knob(0.28, "surrogate clip: ratios above 1 + clip_high are clipped")
    # Dual-clip floor c·A on negative-advantage terms (None: the surrogate of docs/method.md §4 step 5
    # exactly). Without it one item's loss reached 1e10 and then NaN at lr 8e-4.
    dual_clip: float | None = knob(3.0, "dual-clip floor c·A on negative advantages ('none': off)")
    kl_coef: float = knob(0.0, "weight of KL(π ‖ Bernoulli(0.5)) on the keep decisions (Bernoulli samplers)")
    # ---- optimisation ----------------------------------------------------------------------------
    lr: float = knob(5e-4, "head learning rate (copied layer: layer_lr_scale × lr)")
    layer_lr_scale: float = knob(0.0, "copied-layer learning rate as a multiple of lr (0 freezes it)")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    warmup_fraction: float = knob(0.07, "linear warm-up over this fraction of the optimiser steps")
    min_lr_scale: float = knob(1.0, "the cosine schedule decays to min_lr_scale × lr (1: constant)")
    grad_clip: float = knob(1.0, "gradient-norm clip (0: none)")
    # ---- data and bookkeeping --------------------------------------------------------------------
    seed: int = knob(0, "seed of the rollout generator (and of a fresh policy's heads)")
    epochs: int = knob(1, "passes over the training items")
    blind_filter: bool = knob(True, "drop the items the frozen model answers correctly without the video")
    checkpoint_every: int = knob(400, "write a checkpoint every this many items")
    val_every: int = knob(800, "validate every this many items")
    val_ratios: tuple[float, ...] = knob((0.1, 0.05), "validation ratios (comma-separated; empty: none)")
    val_batch_size: int = knob(16, "rows per batched host call in validation and the blind test")

    def __post_init__(self) -> None:
        self.val_ratios = tuple(float(r) for r in self.val_ratios)
        self.in_band_clamp = tuple(float(v) for v in self.in_band_clamp)
        self._check_rollouts()
        self._check_sampler()
        self._check_optimisation()
        if any(not 0 < r <= 1 for r in self.val_ratios):
            raise ValueError(f"val_ratios must be in (0, 1], got {self.val_ratios}")

    def _check_rollouts(self) -> None:
        for name in ("group_size", "iterations", "items_per_step", "epochs", "checkpoint_every", "val_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.ratio_min <= self.ratio <= self.ratio_max <= 1:
            raise ValueError(
                f"need 0 < ratio_min <= ratio <= ratio_max <= 1, got "
                f"{self.ratio_min}, {self.ratio}, {self.ratio_max}"
            )
        if not 0 <= self.adapt_low < self.adapt_high <= 1:
            raise ValueError("need 0 <= adapt_low < adapt_high <= 1")
        if not self.adapt_factor > 1:
            raise ValueError(f"adapt_factor must be > 1, got {self.adapt_factor}")
        if not 0 <= self.adapt_smoothing < 1:
            raise ValueError(f"adapt_smoothing must be in [0, 1), got {self.adapt_smoothing}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.reward not in reward_names() and ":" not in self.reward:
            raise ValueError(f"unknown reward {self.reward!r}; choose from {reward_names()} or pkg.mod:fn")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {sorted(ADVANTAGES)}, got {self.advantage!r}")
        if not self.advantage_eps > 0:
            raise ValueError(f"advantage_eps must be > 0, got {self.advantage_eps}")

    def _check_sampler(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
        if not 0.0 <= self.frame_share <= 1.0:
            raise ValueError(f"frame_share must be in [0, 1], got {self.frame_share}")
        if not SAMPLERS[self.sampler].modes and (self.frame_share != 0.0 or self.content_rollout):
            raise ValueError(
                f"sampler {self.sampler!r} draws every rollout from the token scores: it needs "
                f"frame_share 0 and content_rollout off, got frame_share {self.frame_share}, "
                f"content_rollout {self.content_rollout}"
            )
        if self.frame_share >= 1.0 and self.adapt_ratio:
            raise ValueError(
                "frame_share 1 leaves no token-mode rollout, whose mean reward adapts the training "
                "retention: set adapt_ratio False (a fixed ratio)"
            )
        if self.band_group < 1 or self.band_beta <= 0:
            raise ValueError("band_group must be >= 1 and band_beta > 0")
        if not 0.0 <= self.band_floor < 1.0:
            raise ValueError(f"band_floor must be in [0, 1), got {self.band_floor}")
        if len(self.in_band_clamp) != 2 or not 0.0 < self.in_band_clamp[0] <= 1.0 <= self.in_band_clamp[1]:
            raise ValueError(f"in_band_clamp must satisfy 0 < low <= 1 <= high, got {self.in_band_clamp}")
        if not 0.0 < self.frame_fraction <= 1.0:
            raise ValueError(f"frame_fraction must be in (0, 1], got {self.frame_fraction}")
        if not 0.0 <= self.frame_floor <= 1.0 <= self.frame_cap:
            raise ValueError("frame_floor must be in [0, 1] and frame_cap >= 1")
        if self.dpc_neighbors < 1:
            raise ValueError("dpc_neighbors must be >= 1")

    def _check_optimisation(self) -> None:
        if self.lr <= 0 or self.layer_lr_scale < 0:
            raise ValueError("lr must be > 0 and layer_lr_scale >= 0")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.min_lr_scale <= 1:
            raise ValueError("warmup_fraction must be in [0, 1) and min_lr_scale in [0, 1]")
        if self.clip_low < 0 or self.clip_high < 0 or not self.clip_low < 1:
            raise ValueError("clip_low must be in [0, 1) and clip_high >= 0")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"dual_clip must be > 1 (or None), got {self.dual_clip}")
        if self.grad_clip < 0 or self.weight_decay < 0 or self.kl_coef < 0:
            raise ValueError("grad_clip, weight_decay and kl_coef must be >= 0")

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """The paper's recipe (docs/method.md §4, §4.3), with `overrides`."""
        return cls(**{**PAPER, **overrides})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["val_ratios"] = list(self.val_ratios)
        d["in_band_clamp"] = list(self.in_band_clamp)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown train config keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))


# The settings of docs/method.md §4 where they differ from the defaults above: the paper's
# three-mode sampler and its per-token surrogate, with the accuracy reward and group-normalised
# advantages, r halved or doubled on the token-mode reward.
PAPER: dict[str, Any] = {
    "group_size": 32,
    "sampler": "modes",
    "iterations": 5,
    "items_per_step": 1,
    "ratio": 0.02,
    "ratio_min": 0.01,
    "ratio_max": 0.12,
    "adapt_high": 0.875,
    "adapt_low": 0.125,
    "adapt_factor": 2.0,
    "adapt_smoothing": 0.0,
    "adapt_vs_chance": False,
    "frame_share": 0.25,
    "content_rollout": True,
    "reward": "accuracy",
    "advantage": "group",
    "lr": 1e-4,
    "layer_lr_scale": 0.1,
    "warmup_fraction": 0.05,
    "min_lr_scale": 0.0,
    "checkpoint_every": 50,
    "val_every": 50,
    "val_ratios": (0.25, 0.1),
}
