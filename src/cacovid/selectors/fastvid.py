"""FastVID-style segment-wise salient + density-peak tokens (Shen et al., "FastVID: Dynamic Density
Pruning for Fast Video Large Language Models", 2025).

The paper's two stages:
1. Dynamic temporal segmentation (DySeg): cosine similarity of adjacent frames' global features; cut
   the video where it drops below τ and at the c − 1 lowest similarities (so there are at least c
   segments when the video is long enough).
2. Density spatiotemporal pruning per segment: a share d of the segment's budget goes to *salient*
   tokens (by vision-encoder attention); the rest are *contextual*: density peaks (DPC-kNN) found
   among the tokens of anchor frames (every p-th frame of the segment), into which the segment's
   remaining tokens are merged.

Here, on projected tokens (T, P, D): frame global feature = mean token; segment budgets from
`ops.allocate` proportional to segment length (exact total). Salient score =
`prompt.extras["vision_attention"]` when present, else distinctiveness 1 − cos(token, segment mean)
(`Selection.info["salient_score"]` says which). Context peaks: DPC-kNN over the non-salient tokens
of the anchor frames (all non-salient tokens of the segment if the anchors have too few). Every other
non-salient token of the segment merges into its most cosine-similar peak; a merged token is the mean
of the peak and its members and takes the peak's position. Salient tokens are returned unchanged.
Simplified: plain mean merging instead of the paper's weighted density merging; segments are
processed one after another (a short Python loop over segments, vectorised inside).
Parameters: `threshold` τ (0.9), `min_segments` c (8), `salient_fraction` d (0.4),
`anchor_stride` p (4), `k_neighbors` (4).
"""

from __future__ import annotations

import torch

from cacovid.ops.budget import allocate
from cacovid.ops.density import dpc_knn_select
from cacovid.ops.merge import merge_assigned
from cacovid.selectors.base import (
    BaseSelector,
    SelectResult,
    check_fraction,
    check_positive_int,
    unit,
)
from cacovid.types import EncodedPrompt


def segment_bounds(frame_global: torch.Tensor, threshold: float, min_segments: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) frame segments from unit frame features (T, D) (DySeg)."""
    T = frame_global.shape[0]
    if T == 1:
        return [(0, 1)]
    sim = (frame_global[:-1] * frame_global[1:]).sum(-1)  # (T-1,) similarity of frame t and t+1
    cut = sim < threshold
    n_low = min(max(min_segments - 1, 0), T - 1)
    if n_low:
        low = torch.sort(sim, stable=True).indices[:n_low]
        cut[low] = True
    ends = (cut.nonzero().squeeze(1) + 1).tolist() + [T]
    starts = [0] + ends[:-1]
    return list(zip(starts, ends, strict=True))


class FastVIDSelector(BaseSelector):
    """Dynamic segments, then salient tokens plus merged density-peak context tokens per segment."""

    name = "fastvid"

    def __init__(
        self,
        threshold: float = 0.9,
        min_segments: int = 8,
        salient_fraction: float = 0.4,
        anchor_stride: int = 4,
        k_neighbors: int = 4,
    ) -> None:
        if not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
        self.threshold = float(threshold)
        self.min_segments = check_positive_int(min_segments, "min_segments")
        self.salient_fraction = check_fraction(salient_fraction, "salient_fraction")
        self.anchor_stride = check_positive_int(anchor_stride, "anchor_stride")
        self.k_neighbors = check_positive_int(k_neighbors, "k_neighbors")

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        x = prompt.video_features  # (N, D)
        T, P = prompt.num_frames, prompt.tokens_per_frame
        dev = x.device
        xn = unit(x)
        segs = segment_bounds(unit(x.float().reshape(T, P, -1).mean(1)), self.threshold, self.min_segments)
        lengths = torch.tensor([b - a for a, b in segs], dtype=torch.float64)
        seg_budgets = allocate(lengths / T, k, 0, (lengths.long() * P)).tolist()
        attn = prompt.extras.get("vision_attention")
        if attn is not None and attn.shape != (T * P,):
            raise ValueError(f"extras['vision_attention'] must be ({T * P},), got {tuple(attn.shape)}")
        keep = torch.zeros(T * P, dtype=torch.bool, device=dev)
        target = torch.full((T * P,), -1, dtype=torch.long, device=dev)
        for (a, b), k_s in zip(segs, seg_budgets, strict=True):
            if k_s == 0:
                continue
            lo, hi = a * P, b * P
            idx = torch.arange(lo, hi, device=dev)
            xs = xn[lo:hi]  # (L*P, D)
            # Salient score: vision attention when known, else distinctiveness from the segment mean.
            sal_score = attn[lo:hi].float().to(dev) if attn is not None else 1.0 - xs @ unit(xs.mean(0))
            n_sal = int(round(k_s * self.salient_fraction))
            n_ctx = k_s - n_sal
            order = torch.sort(sal_score, descending=True, stable=True).indices
            salient = torch.zeros(hi - lo, dtype=torch.bool, device=dev)
            salient[order[:n_sal]] = True
            keep[idx[salient]] = True
            target[idx[salient]] = idx[salient]
            if n_ctx == 0:
                continue
            rest = ~salient
            frame_of = torch.arange(hi - lo, device=dev) // P
            cand = rest & (frame_of % self.anchor_stride == 0)
            if int(cand.sum()) < n_ctx:
                cand = rest
            cand_idx = cand.nonzero().squeeze(1)
            peaks = cand_idx[dpc_knn_select(x[lo:hi][cand_idx], n_ctx, self.k_neighbors)]
            keep[idx[peaks]] = True
            members = rest.nonzero().squeeze(1)
            nearest = (xs[members] @ xs[peaks].T).argmax(1)  # (R,) index into peaks
            target[idx[members]] = idx[peaks[nearest]]
            target[idx[peaks]] = idx[peaks]
        embeds = merge_assigned(x, keep, target)
        info = {
            "segments": [list(s) for s in segs],
            "salient_score": "vision_attention" if attn is not None else "distinctiveness",
        }
        return keep, embeds, info
