"""Turn (prompt, keep mask, replacement embeds) rows into one left-padded language-model batch.

Why a module of its own: this is the hot path of RL training (G=32 masks per step, hundreds of
thousands of steps) and the place where correctness is subtle — kept tokens must keep their
*original* position ids, text and separator tokens are always kept, and rows of different lengths
are left-padded so the last real token of every row sits in the last column (what greedy decoding
and next-token scoring read). Everything here is vectorised over rows that share a prompt; there are
no Python loops over tokens.

Shapes: L = prompt length, N = video tokens, D = hidden size, B = rows, S = packed length,
P = position-id rows (1 for 1-D RoPE, 3 for M-RoPE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cacovid.types import EncodedPrompt


@dataclass
class PackedBatch:
    """A left-padded batch ready for the language model.

    - `inputs_embeds` (B, S, D)
    - `position_ids` (B, S) for 1-D RoPE or (3, B, S) for M-RoPE; pads carry position 0.
    - `attention_mask` (B, S) long, 0 on the left pads.
    - `lengths` (B,) long, real tokens per row.
    - `padded`: False when every row has the same length (attention_mask is all ones).
    """

    inputs_embeds: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor
    padded: bool

    @property
    def last_positions(self) -> torch.Tensor:
        """(B,) or (3, B): position ids of each row's last token (where continuations start from)."""
        return self.position_ids[..., -1]


def check_row(
    prompt: EncodedPrompt, keep: torch.Tensor, embeds: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate one row; returns keep as (N,) bool and embeds as (K, D) or None."""
    if not isinstance(prompt, EncodedPrompt):
        raise ValueError(f"a row must start with an EncodedPrompt, got {type(prompt).__name__}")
    if not isinstance(keep, torch.Tensor):
        raise ValueError(f"keep mask must be a torch.Tensor, got {type(keep).__name__}")
    if keep.dim() != 1:
        raise ValueError(f"a row's keep mask must be 1-D (N,), got shape {tuple(keep.shape)}")
    keep = prompt.check_keep(keep)[0]
    if prompt.meta.get("blind") and bool(keep.any()):
        raise ValueError(
            "a blind prompt (encoded without its video features) can only be answered with every "
            "video token dropped"
        )
    if embeds is not None:
        if not isinstance(embeds, torch.Tensor):
            raise ValueError(f"replacement embeds must be a torch.Tensor, got {type(embeds).__name__}")
        k = int(keep.sum())
        if embeds.shape != (k, prompt.hidden_size):
            raise ValueError(
                f"replacement embeds must be (K, D) = ({k}, {prompt.hidden_size}) for {k} kept tokens, "
                f"got {tuple(embeds.shape)}"
            )
        if not embeds.is_floating_point():
            raise ValueError(f"replacement embeds must be floating point, got {embeds.dtype}")
    return keep, embeds


def normalize_rows(rows: Sequence) -> list[tuple[EncodedPrompt, torch.Tensor, torch.Tensor | None]]:
    """Accept rows as (prompt, keep) or (prompt, keep, embeds) and validate each."""
    if len(rows) == 0:
        raise ValueError("no rows given")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) not in (2, 3):
            raise ValueError(f"row {i} must be (prompt, keep) or (prompt, keep, embeds), got {type(row)}")
        prompt, keep = row[0], row[1]
        embeds = row[2] if len(row) == 3 else None
        keep, embeds = check_row(prompt, keep, embeds)
        out.append((prompt, keep, embeds))
    dims = {p.position_ids.dim() for p, _, _ in out}
    hidden = {p.hidden_size for p, _, _ in out}
    if len(dims) > 1 or len(hidden) > 1:
        raise ValueError(
            "all rows of one batch must come from the same model (position-id rank, hidden size)"
        )
    return out


def pack_rows(
    rows: Sequence[tuple[EncodedPrompt, torch.Tensor, torch.Tensor | None]],
    pad_embedding: torch.Tensor,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> PackedBatch:
    """Gather every row's kept tokens (text always kept) into one left-padded batch.

    `rows` must already be validated (`normalize_rows`). `pad_embedding` (D,) fills the pads. Rows
    that share the same prompt object are gathered together in one indexing operation.
    """
    first = rows[0][0]
    device = device if device is not None else first.inputs_embeds.device
    dtype = dtype if dtype is not None else first.inputs_embeds.dtype
    B = len(rows)
    D = first.hidden_size
    multi = first.position_ids.dim() == 2

    # Group rows by prompt identity so that the common case (one prompt, G masks) is one gather.
    groups: dict[int, list[int]] = {}
    for b, (p, _, _) in enumerate(rows):
        groups.setdefault(id(p), []).append(b)

    fulls: list[tuple[list[int], torch.Tensor]] = []
    lengths = torch.empty(B, dtype=torch.long)
    for idx in groups.values():
        prompt = rows[idx[0]][0]
        L = prompt.inputs_embeds.shape[0]
        keep = torch.stack([rows[b][1] for b in idx]).to(prompt.video_positions.device)
        full = torch.ones(len(idx), L, dtype=torch.bool, device=keep.device)
        full[:, prompt.video_positions] = keep
        fulls.append((idx, full))
        lengths[idx] = full.sum(1).cpu()
    S = int(lengths.max())
    padded = bool((lengths != S).any())

    embeds = pad_embedding.to(device, dtype).expand(B, S, D).clone() if padded else None
    if embeds is None:
        embeds = torch.empty(B, S, D, device=device, dtype=dtype)
    pos_shape = (3, B, S) if multi else (B, S)
    positions = torch.zeros(pos_shape, dtype=torch.long, device=device)
    attn = torch.zeros(B, S, dtype=torch.long, device=device)

    for idx, full in fulls:
        prompt = rows[idx[0]][0]
        source = _row_sources(prompt, [rows[b] for b in idx], device, dtype)
        g_idx = torch.as_tensor(idx, device=device)
        r, src = full.nonzero(as_tuple=True)  # row-major: each row's kept positions in order
        r, src = r.to(device), src.to(device)
        offset = (S - lengths[idx]).to(device)
        col = full.long().cumsum(1).to(device)[r, src] - 1 + offset[r]
        b = g_idx[r]
        if source.dim() == 2:
            embeds[b, col] = source[src]
        else:
            embeds[b, col] = source[r, src]
        pos = prompt.position_ids.to(device)
        if multi:
            positions[:, b, col] = pos[:, src]
        else:
            positions[b, col] = pos[src]
        attn[b, col] = 1
    return PackedBatch(embeds, positions, attn, lengths.to(device), padded)


def _row_sources(
    prompt: EncodedPrompt,
    rows: Sequence[tuple[EncodedPrompt, torch.Tensor, torch.Tensor | None]],
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(L, D) shared embeddings, or (g, L, D) when some row replaces its kept video features."""
    base = prompt.inputs_embeds.to(device, dtype)
    if all(e is None for _, _, e in rows):
        return base
    out = base.unsqueeze(0).repeat(len(rows), 1, 1)
    vp = prompt.video_positions.to(device)
    for i, (_, keep, e) in enumerate(rows):
        if e is not None:
            # Kept tokens in increasing video-index order receive the replacement rows in order.
            out[i, vp[keep.to(device)]] = e.to(device, dtype)
    return out
