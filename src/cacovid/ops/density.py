"""Density-peak (DPC-kNN) diversity scores (docs/method.md §4.4).

A good diverse subset keeps the centres of the feature clusters: points that are dense (close to
their k nearest neighbours) *and* far from any denser point. With distances d_ij = ||x_i − x_j|| / √D,
density ρ_i = exp(−mean of d² to the k nearest neighbours), separation δ_i = distance to the nearest
point of higher density (the largest pairwise distance for the densest point), score = ρ·δ.

Determinism: density ties are broken by index — of two equally dense points the lower index counts
as denser — so exact duplicates get δ = 0 for all but the first copy, and the result never depends
on a random jitter. Selection ties on the score also go to the lower index (stable sort).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_points(x: Tensor, dims: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != dims:
        shape = "(M, D)" if dims == 2 else "(B, M, D)"
        raise ValueError(f"points must be a {dims}-D tensor {shape}")
    if x.shape[-1] == 0:
        raise ValueError("points need at least one feature dimension")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("points contain NaN or inf")


def dpc_knn_scores_batched(x: Tensor, k_neighbors: int = 4) -> Tensor:
    """(B, M) DPC-kNN scores ρ·δ for B independent point sets x (B, M, D), vectorised over B.

    k is capped at M − 1; a set of one point scores 0. Computed in float32 (or float64 if given).
    """
    _check_points(x, 3)
    if int(k_neighbors) < 1:
        raise ValueError(f"k_neighbors must be >= 1, got {k_neighbors}")
    B, M, D = x.shape
    if M == 0:
        return x.new_zeros((B, 0), dtype=torch.float32)
    xf = x if x.dtype == torch.float64 else x.float()
    dist = torch.cdist(xf, xf) / math.sqrt(D)  # (B, M, M)
    eye = torch.eye(M, dtype=torch.bool, device=x.device)
    dist = dist.masked_fill(eye, 0.0)
    k = min(int(k_neighbors), M - 1)
    if k == 0:
        return xf.new_zeros((B, M))
    knn = torch.topk(dist.masked_fill(eye, float("inf")), k, dim=-1, largest=False).values  # (B, M, k)
    rho = torch.exp(-(knn**2).mean(-1))  # (B, M)
    idx = torch.arange(M, device=x.device)
    rho_i, rho_j = rho.unsqueeze(2), rho.unsqueeze(1)
    # denser[b, i, j]: point j is denser than point i (ties: the lower index is denser).
    denser = (rho_j > rho_i) | ((rho_j == rho_i) & (idx.view(1, 1, M) < idx.view(1, M, 1)))
    dmax = dist.flatten(1).amax(1)  # (B,)
    delta = dist.masked_fill(~denser, float("inf")).amin(-1)  # (B, M)
    delta = torch.where(torch.isinf(delta), dmax.unsqueeze(1).expand_as(delta), delta)
    return rho * delta


def dpc_knn_scores(x: Tensor, k_neighbors: int = 4) -> Tensor:
    """(M,) DPC-kNN scores ρ·δ for points x (M, D); see the module docstring."""
    _check_points(x, 2)
    return dpc_knn_scores_batched(x.unsqueeze(0), k_neighbors).squeeze(0)


def _top(scores: Tensor, m: int) -> Tensor:
    m = int(m)
    if m < 0:
        raise ValueError(f"cannot select {m} points")
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[..., : min(m, scores.shape[-1])]


def dpc_knn_select(x: Tensor, m: int, k_neighbors: int = 4) -> Tensor:
    """(min(m, M),) long indices of the m highest-scoring points of x (M, D), best first."""
    return _top(dpc_knn_scores(x, k_neighbors), m)


def dpc_knn_select_batched(x: Tensor, m: int, k_neighbors: int = 4) -> Tensor:
    """(B, min(m, M)) long: per set of x (B, M, D), the m highest-scoring points, best first."""
    return _top(dpc_knn_scores_batched(x, k_neighbors), m)
