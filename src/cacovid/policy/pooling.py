"""Pooled scoring (`PolicyConfig.pool_size` k): the policy's layer reads k x k spatial cell means.

Why: the policy is one full-width decoder layer over the whole prompt, so at LLaVA-OneVision-7B shape
it costs about 1/28 of the 28-layer prefill before any token is dropped. Averaging each k x k spatial
cell of every frame into one token before the layer shortens the video part of its sequence k² times
(the layer's linear parts shrink k² times, its attention up to k⁴ times).

A cell's token sits where its first (top-left) member sat and keeps that member's position id (all
three rows of an M-RoPE position), so sequence order and rotary positions are the original ones, as
after any token pruning; text and every token outside the video grid stay as they are. Frames whose
side is not a multiple of k get smaller cells at the bottom and right edges (7 x 7 with k = 2: 4 x 4
cells of 4, 2 and 1 tokens).

The policy broadcasts what the layer gives back to the full grid (`PooledPrompt.members`: every token
gets its cell's value) and computes the terms that need no layer on the full grid
(`policy/network.py`), so it still returns one score per original video token.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from cacovid.types import EncodedPrompt


class PooledPrompt(NamedTuple):
    """A prompt with every k x k cell of every frame averaged into one token, and how to go back.

    - `prompt`: the pooled prompt, video grid (T, ⌈H/k⌉, ⌈W/k⌉).
    - `members` (N,) long: the pooled video token (index into `prompt.video_positions`) each of the
      N original video tokens belongs to, so `values[members]` broadcasts per-cell values back.
    - `cell_sizes` (⌈H/k⌉·⌈W/k⌉,) long: how many tokens each cell of a frame holds (every frame alike).
    """

    prompt: EncodedPrompt
    members: torch.Tensor
    cell_sizes: torch.Tensor


def _check_pool_size(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"pool size must be an integer >= 1, got {k!r}")
    return int(k)


def cell_index(height: int, width: int, k: int) -> tuple[torch.Tensor, int, int]:
    """(H·W,) index of each token's k x k cell in one frame (row-major tokens and cells), and the cell
    grid's rows and columns (⌈H/k⌉, ⌈W/k⌉)."""
    k = _check_pool_size(k)
    if height < 1 or width < 1:
        raise ValueError(f"need a positive frame grid, got {height}x{width}")
    rows, cols = math.ceil(height / k), math.ceil(width / k)
    h = torch.arange(height).repeat_interleave(width) // k
    w = torch.arange(width).repeat(height) // k
    return h * cols + w, rows, cols


def first_members(height: int, width: int, k: int) -> torch.Tensor:
    """(⌈H/k⌉·⌈W/k⌉,) index within a frame of each cell's first (top-left) token, in cell order."""
    _, rows, cols = cell_index(height, width, k)
    top = torch.arange(rows).repeat_interleave(cols) * k
    left = torch.arange(cols).repeat(rows) * k
    return top * width + left


def pool_prompt(prompt: EncodedPrompt, k: int) -> PooledPrompt:
    """`prompt` with each k x k spatial cell of each frame replaced by the mean of its tokens, placed at
    its first member's sequence place with that member's position id (see the module docstring).

    The mean is taken in at least float32 and cast back to the embeddings' dtype; the text, padding
    and tokens outside the grid are copied. `k = 1` gives back the same sequence.
    """
    k = _check_pool_size(k)
    T, H, W = prompt.video_grid
    cells, rows, cols = cell_index(H, W, k)
    dev = prompt.inputs_embeds.device
    per_frame, tokens = rows * cols, H * W
    members = (torch.arange(T).repeat_interleave(tokens) * per_frame + cells.repeat(T)).to(dev)
    first = (torch.arange(T).repeat_interleave(per_frame) * tokens + first_members(H, W, k).repeat(T)).to(dev)
    video_positions = prompt.video_positions.to(dev)
    video = prompt.inputs_embeds[video_positions]  # (N, D)
    acc = torch.promote_types(video.dtype, torch.float32)
    sums = torch.zeros(T * per_frame, video.shape[1], dtype=acc, device=dev)
    sums.index_add_(0, members, video.to(acc))
    sizes = torch.bincount(cells, minlength=per_frame)
    pooled = (sums / sizes.repeat(T).to(dev, acc).unsqueeze(1)).to(video.dtype)
    L = prompt.inputs_embeds.shape[0]
    keep = torch.ones(L, dtype=torch.bool, device=dev)
    keep[video_positions] = False
    keep[video_positions[first]] = True
    embeds = prompt.inputs_embeds.clone()
    embeds[video_positions[first]] = pooled
    new_index = torch.cumsum(keep.long(), 0) - 1  # old sequence place → new one (where kept)
    pooled_prompt = EncodedPrompt(
        inputs_embeds=embeds[keep],
        position_ids=prompt.position_ids.to(dev)[..., keep],
        attention_mask=prompt.attention_mask.to(dev)[keep],
        video_positions=new_index[video_positions[first]],
        video_grid=(T, rows, cols),
        input_ids=None if prompt.input_ids is None else prompt.input_ids.to(dev)[keep],
    )
    return PooledPrompt(pooled_prompt, members, sizes)


def frame_means(values: torch.Tensor, pooled: PooledPrompt) -> torch.Tensor:
    """(T, D) per-frame mean over the full grid of per-cell `values` (N', D) broadcast to their members:
    each cell weighted by its size, without building the (N, D) broadcast."""
    T, rows, cols = pooled.prompt.video_grid
    weights = pooled.cell_sizes.to(values)
    weights = weights / weights.sum()
    return (values.reshape(T, rows * cols, -1) * weights.unsqueeze(1)).sum(dim=1)
