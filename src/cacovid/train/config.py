"""`TrainConfig`: every knob of CaCoVID training (docs/method.md §4, §5), with the paper's defaults."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cacovid.train.sampling import SamplingConfig


@dataclass
class TrainConfig:
    """Training hyper-parameters.

    Rollouts: `group_size` G per iteration, training retention `ratio` r adapted within
    [`ratio_min`, `ratio_max`] (halved when the mean token-mode reward ≥ `adapt_high`, doubled when ≤
    `adapt_low`), `iterations` I per item, band group `band_group` g and cap `band_beta` β, frame
    fraction `frame_fraction` f, `frame_share` of rollouts in frame mode (see `SamplingConfig`), one
    content rollout (`content_rollout`) optionally used as advantage baseline (`content_baseline`).
    `sampler` "modes" is that three-mode sampler; "naive" draws every rollout from softmax(s) over
    the whole video (an ablation, `bench/convergence.py`; needs `frame_share` 0 and
    `content_rollout` off). `frame_share` 1 (frame mode only) needs a fixed ratio: the adaptation
    reads the token-mode reward, which such a run does not have.
    Optimisation: AdamW at `lr` for the heads and `lr * layer_lr_scale` for the copied layer, cosine
    schedule over all optimiser steps with linear warm-up over `warmup_fraction` of them, decaying to
    `min_lr_scale`·lr; gradient clipping `grad_clip`; surrogate clip 1−`clip_low` … 1+`clip_high`;
    optional `kl_coef` to Bernoulli(0.5).
    Bookkeeping: `seed`, `epochs`, checkpoint every `checkpoint_every` items, validation every
    `val_every` items at `val_ratios`, `reward` name ("accuracy", "mc", "numeric", "rouge", "dense"),
    `max_new_tokens` for generated answers, `blind_filter` of training items, `val_batch_size`.
    """

    group_size: int = 32
    ratio: float = 0.02
    ratio_min: float = 0.01
    ratio_max: float = 0.12
    adapt_ratio: bool = True
    adapt_high: float = 0.875
    adapt_low: float = 0.125
    iterations: int = 5
    band_group: int = 2
    band_beta: float = 2.0
    frame_fraction: float = 0.125
    frame_share: float = 0.25
    content_rollout: bool = True
    content_baseline: bool = True
    sampler: str = "modes"
    lr: float = 1e-4
    layer_lr_scale: float = 0.1
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    min_lr_scale: float = 0.0
    grad_clip: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    # Dual-clip floor c·A on negative-advantage terms (None: the surrogate of docs/method.md §4 step 5
    # exactly). A deliberate addition (§8): without it one item's loss reached 1e10 and then NaN at
    # lr 8e-4.
    dual_clip: float | None = 3.0
    # ε in A = (R − mean)/(std + ε). The 1e-4 of docs/method.md §4 step 4 suits 0/1 rewards (a group
    # that is all right or all wrong has std 0 and A = 0). With the dense reward a group whose
    # probabilities differ by 0.001 gets advantages of ±1 all the same, pure noise at full strength;
    # an ε near the reward's meaningful spread (e.g. 0.05) keeps such items quiet.
    advantage_eps: float = 1e-4
    kl_coef: float = 0.0
    seed: int = 0
    epochs: int = 1
    checkpoint_every: int = 50
    val_every: int = 50
    val_ratios: tuple[float, ...] = (0.25, 0.1)
    reward: str = "accuracy"
    max_new_tokens: int = 4
    blind_filter: bool = True
    val_batch_size: int = 16

    def __post_init__(self) -> None:
        self.val_ratios = tuple(float(r) for r in self.val_ratios)
        if not 0 < self.ratio_min <= self.ratio <= self.ratio_max <= 1:
            raise ValueError(
                f"need 0 < ratio_min <= ratio <= ratio_max <= 1, got "
                f"{self.ratio_min}, {self.ratio}, {self.ratio_max}"
            )
        if not 0 <= self.adapt_low < self.adapt_high <= 1:
            raise ValueError("need 0 <= adapt_low < adapt_high <= 1")
        for name in ("group_size", "iterations", "epochs", "checkpoint_every", "val_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.layer_lr_scale < 0:
            raise ValueError("lr must be > 0 and layer_lr_scale >= 0")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.min_lr_scale <= 1:
            raise ValueError("warmup_fraction must be in [0, 1) and min_lr_scale in [0, 1]")
        if self.clip_low < 0 or self.clip_high < 0 or not self.clip_low < 1:
            raise ValueError("clip_low must be in [0, 1) and clip_high >= 0")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"dual_clip must be > 1 (or None), got {self.dual_clip}")
        if not self.advantage_eps > 0:
            raise ValueError(f"advantage_eps must be > 0, got {self.advantage_eps}")
        if any(not 0 < r <= 1 for r in self.val_ratios):
            raise ValueError(f"val_ratios must be in (0, 1], got {self.val_ratios}")
        self.sampling()  # validates the sampling knobs early
        if self.frame_share >= 1.0 and self.adapt_ratio:
            raise ValueError(
                "frame_share 1 leaves no token-mode rollout, whose mean reward adapts the training "
                "retention: set adapt_ratio False (a fixed ratio)"
            )

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            group_size=self.group_size,
            frame_share=self.frame_share,
            content_rollout=self.content_rollout,
            band_group=self.band_group,
            band_beta=self.band_beta,
            frame_fraction=self.frame_fraction,
            sampler=self.sampler,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["val_ratios"] = list(self.val_ratios)
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
