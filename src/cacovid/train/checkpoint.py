"""Training checkpoints that resume *exactly*: same weights as a run that never stopped.

A checkpoint directory holds the policy (`policy/`, the same safetensors + config.json format as a
released policy), the run's `train_config.json`, and `trainer.pt`: optimiser, scheduler and RNG states,
the adaptive retention r, the data position and the byte length of the metrics log at that moment (so
a resumed run can cut off lines written after the checkpoint by the run that crashed), and the number
of processes that wrote it (`world_size`; with several, every process's rollout generator), since a
run resumes only with the number of processes it ran with (docs/scale-out.md). Process 0 alone
writes it.
It is written to a temporary directory and swapped in, so a crash while saving leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from cacovid.policy.config import PolicyConfig
from cacovid.policy.network import CONFIG_NAME, WEIGHTS_NAME, CaCoVIDPolicy

CHECKPOINT_DIR = "checkpoint"
STATE_NAME = "trainer.pt"


def save_checkpoint(out_dir: Path, policy: CaCoVIDPolicy, state: dict[str, Any], config_json: str) -> Path:
    """Write `out_dir/checkpoint` atomically (tmp dir + rename). Returns its path."""
    out_dir = Path(out_dir)
    final = out_dir / CHECKPOINT_DIR
    tmp = out_dir / (CHECKPOINT_DIR + ".tmp")
    old = out_dir / (CHECKPOINT_DIR + ".old")
    for d in (tmp, old):
        if d.exists():
            shutil.rmtree(d)
    tmp.mkdir(parents=True)
    policy.save_pretrained(tmp / "policy")
    (tmp / "train_config.json").write_text(config_json)
    torch.save(state, tmp / STATE_NAME)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def find_checkpoint(out_dir: Path) -> Path | None:
    """The last complete checkpoint in `out_dir` (also one left as `.old` by a crash mid-swap)."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        d = Path(out_dir) / name
        if (d / STATE_NAME).is_file() and (d / "policy" / WEIGHTS_NAME).is_file():
            return d
    return None


def load_checkpoint(path: Path, policy: CaCoVIDPolicy) -> tuple[dict[str, Any], str]:
    """Load policy weights in place; return (trainer state, saved train config JSON)."""
    path = Path(path)
    saved = PolicyConfig.load(path / "policy" / CONFIG_NAME)
    if saved.novelty_weight != policy.config.novelty_weight:
        # Same weights under another prior would be another policy: resume only the one that was saved.
        raise ValueError(
            f"checkpoint policy in {path} has novelty_weight {saved.novelty_weight:g}, the given policy "
            f"{policy.config.novelty_weight:g} (pass --novelty-weight {saved.novelty_weight:g} to resume)"
        )
    if saved.pool_size != policy.config.pool_size:
        # The same weights scoring k x k cells is another policy too (docs/method.md §2).
        raise ValueError(
            f"checkpoint policy in {path} has pool_size {saved.pool_size}, the given policy "
            f"{policy.config.pool_size} (pass --pool-size {saved.pool_size} to resume)"
        )
    state_dict = load_file(str(path / "policy" / WEIGHTS_NAME))
    missing, unexpected = policy.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint policy in {path} does not fit the given policy: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    state = torch.load(path / STATE_NAME, weights_only=True)
    return state, (path / "train_config.json").read_text()


# Options that training no longer has, with the one value that computes what training does now: a
# checkpoint that recorded them at that value resumes, any other value is a run this code cannot continue.
RETIRED_FIELDS: dict[str, Any] = {
    "token_scope": "frame",
    "frame_fill": "density",
    "frame_token_credit": False,
    "token_objective": "surrogate",
}
# Options added after checkpoints were first written, with the value that computes what training did
# before them: a checkpoint that lacks one was trained with that value.
ADDED_FIELDS: dict[str, Any] = {
    "sampler": "modes",
    "items_per_step": 1,
    "adapt_factor": 2.0,
    "adapt_smoothing": 0.0,
    "adapt_vs_chance": False,
    "advantage": "group",
    "band_floor": 0.05,
    "in_band_clamp": [0.5, 2.0],
    "frame_floor": 0.5,
    "frame_cap": 4.0,
    "dpc_neighbors": 4,
}


def migrate_config(saved: dict[str, Any], where: Path | str) -> dict[str, Any]:
    """A checkpoint's saved training config in today's terms: retired options dropped (refused unless
    they hold the value that computes what training does now), added options filled with the value
    that reproduces what the checkpoint was trained with."""
    retired = sorted(k for k, v in RETIRED_FIELDS.items() if k in saved and saved[k] != v)
    if retired:
        raise ValueError(
            f"cannot resume {where}: it was trained with options this version no longer has: "
            + ", ".join(f"{k}={saved[k]!r}" for k in retired)
        )
    kept = {k: v for k, v in saved.items() if k not in RETIRED_FIELDS}
    return {**ADDED_FIELDS, **kept}
