"""Import the policy of the paper's released LLaVA-OneVision checkpoint as a saved `CaCoVIDPolicy`.

The release ships one transformers checkpoint folder holding the whole video LLM plus its policy,
whose parameters sit under `compression_policy.`:

- `layers.0.*`: one Qwen2 decoder layer (the host's layer class; q/k/v projections with bias);
- `layernorm.weight`: the RMSNorm before the heads;
- `token_compress.{0,2,4,6,8}` and `frame_compress.{0,2,4,6,8}`: Linear layers D → D/2 → D/4 → D/8 →
  D/16 → 2 with SiLU between, the token and frame heads (column 0 "drop", column 1 "keep");
- `mode_selection.*`: a third head (→ 3) that picks a sampling mode in training; the release's
  token-mode inference never reads it, so it is not imported;
- `rotary_emb.inv_freq` (when saved): recomputed from the text config.

These map one to one onto `CaCoVIDPolicy`'s `layer`, `norm`, `token_head` and `frame_head` (same
Sequential indices). The host's text config comes from the checkpoint's own `config.json`, so the
imported policy refuses any host its layer does not fit. By default the policy is saved to run the
way the release ran (`layer_attention="causal"`, `selection_rule="release"`; docs/method.md §8).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from cacovid.policy.config import PolicyConfig, structural_mismatches
from cacovid.policy.layer_attention import apply_layer_attention
from cacovid.policy.network import CaCoVIDPolicy

PREFIX = "compression_policy."
HOST_FAMILY = "llava_onevision"
INDEX_NAME = "model.safetensors.index.json"
# Release sub-module -> CaCoVIDPolicy sub-module.
_RENAMES: tuple[tuple[str, str], ...] = (
    ("layers.0.", "layer."),
    ("layernorm.", "norm."),
    ("token_compress.", "token_head."),
    ("frame_compress.", "frame_head."),
)
# Release parameters inference does not use (see the module docstring).
_NOT_IMPORTED = re.compile(r"(mode_selection\..*|rotary_emb\.inv_freq)")


def _weight_files(checkpoint_dir: Path) -> list[Path]:
    """The safetensors files that may hold policy parameters (the index's shards, else every file)."""
    index = checkpoint_dir / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: not a safetensors index ({e})") from e
        names = sorted({f for k, f in weight_map.items() if PREFIX in k})
        return [checkpoint_dir / n for n in names]
    return sorted(checkpoint_dir.glob("*.safetensors"))


def read_official_tensors(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """{name after `compression_policy.`: tensor} from a release checkpoint folder; only the policy's
    tensors are read (the host's billions of parameters stay on disk)."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise ValueError(f"{checkpoint_dir} is not a folder: pass the release's checkpoint folder")
    files = _weight_files(checkpoint_dir)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise ValueError(
            f"{checkpoint_dir}: the index names shards that are not there: {[m.name for m in missing]}"
        )
    out: dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                if PREFIX in key:
                    out[key[key.index(PREFIX) + len(PREFIX) :]] = f.get_tensor(key)
    if not out:
        shown = ", ".join(p.name for p in files) or "no *.safetensors files"
        raise ValueError(
            f"{checkpoint_dir} holds no {PREFIX}* parameters ({shown}): not a CaCoVID release checkpoint"
        )
    return out


def official_text_config(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The host language model's text config (as `to_dict()`) from the release's `config.json`;
    ValueError when the checkpoint is not a LLaVA-OneVision one."""
    from transformers import AutoConfig

    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{checkpoint_dir} has no config.json: cannot tell which host the policy is for")
    model_type = json.loads(path.read_text()).get("model_type")
    if model_type != HOST_FAMILY:
        raise ValueError(
            f"{path}: the checkpoint is a {model_type!r} model; the release's policy is for a "
            f"{HOST_FAMILY!r} host and only that layout is imported"
        )
    return AutoConfig.from_pretrained(str(checkpoint_dir)).text_config.to_dict()


def check_host_config(text_config: dict[str, Any], host: str | Path) -> None:
    """Refuse a host (checkpoint folder or hub id, its config only) whose language model the release's
    policy does not fit: another family, or another layer structure."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(host))
    if config.model_type != HOST_FAMILY:
        raise ValueError(
            f"host {str(host)!r} is a {config.model_type!r} model; the policy is for {HOST_FAMILY!r}"
        )
    diffs = structural_mismatches(text_config, config.text_config.to_dict())
    if diffs:
        raise ValueError(f"the policy does not fit host {str(host)!r}: " + "; ".join(diffs))


def _our_name(name: str) -> str:
    for old, new in _RENAMES:
        if name.startswith(old):
            return new + name[len(old) :]
    if name.startswith("layers."):
        raise ValueError(
            f"{PREFIX}{name}: the release's policy has one decoder layer (layers.0), found another"
        )
    raise ValueError(f"unexpected parameter {PREFIX}{name}")


def import_official(
    checkpoint_dir: str | Path,
    *,
    host: str | Path | None = None,
    layer_attention: str = "causal",
    selection_rule: str = "release",
) -> tuple[CaCoVIDPolicy, dict[str, Any]]:
    """(policy, report) from a release checkpoint folder; the caller saves it (`save_pretrained`).

    `host`, when given, is checked against the checkpoint's text config (see `check_host_config`).
    The report names the checkpoint, the imported and skipped parameters and the host config.
    """
    checkpoint_dir = Path(checkpoint_dir)
    tensors = read_official_tensors(checkpoint_dir)
    text_config = official_text_config(checkpoint_dir)
    if host is not None:
        check_host_config(text_config, host)
    D = int(text_config["hidden_size"])
    config = PolicyConfig(
        host_name=str(host) if host is not None else str(checkpoint_dir),
        host_family=HOST_FAMILY,
        text_config=text_config,
        head_widths=tuple(max(1, D // d) for d in (2, 4, 8, 16)),
        attn_implementation="sdpa",
        layer_attention=layer_attention,
        selection_rule=selection_rule,
    )
    policy = CaCoVIDPolicy(config)
    expected = policy.state_dict()
    state: dict[str, torch.Tensor] = {}
    skipped = []
    for name, tensor in sorted(tensors.items()):
        if _NOT_IMPORTED.fullmatch(name):
            skipped.append(PREFIX + name)
            continue
        ours = _our_name(name)
        if ours not in expected:
            raise ValueError(f"unexpected parameter {PREFIX}{name} (no {ours} in the policy)")
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise ValueError(
                f"{PREFIX}{name} has shape {tuple(tensor.shape)}, expected {tuple(expected[ours].shape)} "
                f"for a host of hidden size {D} (heads {D} → {' → '.join(map(str, config.head_widths))} → 2)"
            )
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{PREFIX}{name} is not a finite floating-point tensor")
        state[ours] = tensor.to(expected[ours].dtype)
    absent = sorted(set(expected) - set(state))
    if absent:
        renamed = {new: old for old, new in _RENAMES}
        shown = []
        for k in absent:
            prefix = next((p for p in renamed if k.startswith(p)), "")
            shown.append(PREFIX + renamed.get(prefix, "") + k[len(prefix) :])
        raise ValueError(f"{checkpoint_dir}: the release's policy lacks {shown}")
    policy.load_state_dict(state, strict=True)
    apply_layer_attention(policy)
    report = {
        "checkpoint": str(checkpoint_dir),
        "imported": len(state),
        "parameters": sum(t.numel() for t in state.values()),
        "not_imported": skipped,
        "hidden_size": D,
        "head_widths": list(config.head_widths),
        "layer_attention": layer_attention,
        "selection_rule": selection_rule,
    }
    return policy, report
