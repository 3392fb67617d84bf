"""PruneVid-style spatio-temporal token merging, pre-LLM stage only (Huang et al., "PruneVid: Visual
Token Pruning for Efficient Video Large Language Models", 2024).

The paper's first stage (before the language model):
1. Temporal segmentation: cluster frames by their global features with DPC-kNN and split the video
   into contiguous segments of similar frames.
2. Static/dynamic split: inside a segment, a spatial location whose tokens stay similar across the
   segment's frames (similarity above τ) is *static*; its tokens are merged over time into one.
3. Spatial merging: the resulting tokens are clustered with DPC-kNN (centres = top ρ·δ, every token
   joins its nearest centre) and each cluster is averaged into one token.
(The paper's second stage, question-guided KV pruning inside the LLM, is not implemented.)

Here, on projected tokens (T, P, D):
- frame clusters = round(T · `temporal_ratio`) DPC-kNN centres over frame means, each frame joins
  its nearest centre, runs of equal labels become segments;
- staticness of location p in a segment of L ≥ 2 frames = mean pairwise cosine similarity of its L
  tokens; static groups are merged most-static first, but only while at least K units remain, so the
  result can always hit the budget exactly; a static group's unit sits at the segment's first frame;
- the K output tokens are shared among segments in proportion to their unit counts (`ops.allocate`),
  and each segment's units are clustered into exactly k_s clusters by DPC-kNN (Euclidean on unit
  means, as DPC defines). Every cluster becomes one token: the mean of all original tokens in it,
  placed at the position of its centre unit's token.
Simplified: spatial clustering runs once per segment over static and dynamic units together (the
paper clusters them separately) and the cluster count follows the requested ratio rather than a
fixed cluster ratio. Parameters: `temporal_ratio` (0.25), `static_threshold` τ (0.8), `k_neighbors` (4).
"""

from __future__ import annotations

import torch

from cacovid.ops.budget import allocate
from cacovid.ops.density import dpc_knn_select
from cacovid.ops.merge import merge_assigned
from cacovid.selectors.base import BaseSelector, SelectResult, check_fraction, check_positive_int, unit
from cacovid.types import EncodedPrompt


def frame_segments(frame_feats: torch.Tensor, n_clusters: int, k_neighbors: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) segments from DPC-kNN clustering of frame features (T, D)."""
    T = frame_feats.shape[0]
    n_clusters = max(1, min(n_clusters, T))
    if n_clusters == 1:
        return [(0, T)]
    centres = dpc_knn_select(frame_feats, n_clusters, k_neighbors)
    labels = torch.cdist(frame_feats, frame_feats[centres]).argmin(1)
    labels[centres] = torch.arange(n_clusters, device=labels.device)
    change = (labels[1:] != labels[:-1]).nonzero().squeeze(1) + 1
    ends = change.tolist() + [T]
    return list(zip([0] + ends[:-1], ends, strict=True))


class PruneVidSelector(BaseSelector):
    """Temporal segments, static-token merging over time, then DPC-kNN spatial merging to K tokens."""

    name = "prunevid"

    def __init__(
        self, temporal_ratio: float = 0.25, static_threshold: float = 0.8, k_neighbors: int = 4
    ) -> None:
        self.temporal_ratio = check_fraction(temporal_ratio, "temporal_ratio", open_low=True)
        if not -1.0 <= float(static_threshold) <= 1.0:
            raise ValueError(f"static_threshold is a cosine similarity in [-1, 1], got {static_threshold!r}")
        self.static_threshold = float(static_threshold)
        self.k_neighbors = check_positive_int(k_neighbors, "k_neighbors")

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        x = prompt.video_features  # (N, D)
        T, P = prompt.num_frames, prompt.tokens_per_frame
        N, dev = T * P, x.device
        xf = x.float()
        xn = unit(x).reshape(T, P, -1)
        segs = frame_segments(xf.reshape(T, P, -1).mean(1), round(T * self.temporal_ratio), self.k_neighbors)

        # Static groups: (staticness, segment start, length, location), merged most static first.
        cands: list[tuple[float, int, int, int]] = []
        for a, b in segs:
            L = b - a
            if L < 2:
                continue
            s = xn[a:b].sum(0)  # (P, D)
            stat = ((s * s).sum(-1) - L) / (L * (L - 1))  # mean pairwise cosine, (P,)
            for p in (stat >= self.static_threshold).nonzero().squeeze(1).tolist():
                cands.append((float(stat[p]), a, L, p))
        cands.sort(key=lambda c: (-c[0], c[1], c[3]))
        unit_of = torch.arange(N, device=dev)  # token -> index of the token representing its unit
        spare, n_static = N - k, 0
        for _, a, L, p in cands:
            if spare < L - 1:
                continue
            members = torch.arange(a, a + L, device=dev) * P + p
            unit_of[members] = a * P + p
            spare -= L - 1
            n_static += 1
        is_unit = unit_of == torch.arange(N, device=dev)
        counts = torch.zeros(N, device=dev).index_add_(0, unit_of, torch.ones(N, device=dev))
        unit_feat = torch.zeros_like(xf).index_add_(0, unit_of, xf) / counts.clamp_min(1).unsqueeze(1)

        # Share K among segments by unit count, then cluster each segment's units into k_s tokens.
        seg_units = [is_unit[a * P : b * P].nonzero().squeeze(1) + a * P for a, b in segs]
        sizes = torch.tensor([len(u) for u in seg_units], dtype=torch.float64)
        budgets = allocate(sizes / sizes.sum(), k, 0, sizes.long()).tolist()
        final = torch.full((N,), -1, dtype=torch.long, device=dev)  # unit -> kept token it joins
        keep = torch.zeros(N, dtype=torch.bool, device=dev)
        for units, k_s in zip(seg_units, budgets, strict=True):
            if k_s == 0:
                continue
            feats = unit_feat[units]
            if k_s >= len(units):
                centres = torch.arange(len(units), device=dev)
                assign = centres
            else:
                centres = dpc_knn_select(feats, k_s, self.k_neighbors)
                assign = torch.cdist(feats, feats[centres]).argmin(1)
                assign[centres] = torch.arange(k_s, device=dev)
                assign = centres[assign]
            keep[units[centres]] = True
            final[units] = units[assign]
        target = final[unit_of]
        embeds = merge_assigned(x, keep, target)
        info = {"segments": [list(s) for s in segs], "static_groups": n_static}
        return keep, embeds, info
