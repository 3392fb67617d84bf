"""Tests for the shared token-selection primitives in cacovid.ops."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cacovid.ops import (
    allocate,
    dpc_knn_scores,
    dpc_knn_scores_batched,
    dpc_knn_select,
    dpc_knn_select_batched,
    even_fill,
    even_fill_rows,
    even_frame_budgets,
    merge_assigned,
    standardise,
    temporal_novelty,
    topk_rows_mask,
    uniform_indices,
)
from cacovid.ops.merge import nearest_targets

pytestmark = pytest.mark.float_paths  # .ci/run reruns these on torch's default CPU kernels

torch.set_num_threads(1)


# ---- fill ------------------------------------------------------------------------------------
def test_uniform_indices_hand_values():
    assert uniform_indices(10, 3).tolist() == [1, 5, 8]
    assert uniform_indices(20, 5).tolist() == [2, 6, 10, 14, 18]
    assert uniform_indices(7, 7).tolist() == list(range(7))
    assert uniform_indices(5, 1).tolist() == [2]
    assert uniform_indices(4, 0).numel() == 0


def test_uniform_indices_exact_and_distinct_for_all_small_sizes():
    for n in range(1, 70):
        for k in range(1, n + 1):
            idx = uniform_indices(n, k)
            assert idx.numel() == k
            assert idx.dtype == torch.long
            assert bool((idx[1:] > idx[:-1]).all())
            assert int(idx[0]) >= 0 and int(idx[-1]) < n


@pytest.mark.parametrize("n,k", [(3, 4), (-1, 0), (5, -1)])
def test_uniform_indices_rejects_bad_sizes(n, k):
    with pytest.raises(ValueError):
        uniform_indices(n, k)


def test_even_fill_picks_only_available_evenly():
    avail = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0], dtype=torch.bool)
    out = even_fill(avail, 2)
    # Available positions [0, 2, 3, 5, 6]; bin centres of 2 bins over 5 → ranks 1, 3 → positions 2, 5.
    assert out.nonzero().squeeze(1).tolist() == [2, 5]
    assert even_fill(avail, 0).sum() == 0
    assert even_fill(avail, 5).equal(avail)
    with pytest.raises(ValueError):
        even_fill(avail, 6)
    with pytest.raises(ValueError):
        even_fill(avail.long(), 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 30), st.data())
def test_even_fill_rows_matches_even_fill(B, M, data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    avail = torch.rand(B, M, generator=g) < data.draw(st.floats(0.1, 1.0))
    counts = torch.tensor([data.draw(st.integers(0, int(r.sum()))) for r in avail])
    out = even_fill_rows(avail, counts)
    for b in range(B):
        assert out[b].equal(even_fill(avail[b], int(counts[b])))


def test_even_fill_rows_rejects_overfull_rows():
    with pytest.raises(ValueError):
        even_fill_rows(torch.tensor([[True, False]]), torch.tensor([2]))


# ---- topk ------------------------------------------------------------------------------------
def test_topk_rows_mask_counts_and_ties():
    s = torch.tensor([[1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    out = topk_rows_mask(s, torch.tensor([2, 3]))
    assert out[0].tolist() == [False, True, False, True]
    assert out[1].tolist() == [True, True, True, False]  # ties go to the lower index
    low = topk_rows_mask(s, 1, largest=False)
    assert low[0].tolist() == [True, False, False, False]


def test_topk_rows_mask_agrees_with_sort():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 17, generator=g)
    counts = torch.tensor([0, 1, 7, 16, 17])
    out = topk_rows_mask(s, counts)
    for b in range(5):
        k = int(counts[b])
        expect = torch.zeros(17, dtype=torch.bool)
        expect[torch.topk(s[b], k).indices] = True
        assert out[b].equal(expect)


def test_topk_rows_mask_validates():
    with pytest.raises(ValueError):
        topk_rows_mask(torch.tensor([[float("nan"), 1.0]]), 1)
    with pytest.raises(ValueError):
        topk_rows_mask(torch.zeros(2, 3), torch.tensor([4, 0]))
    with pytest.raises(ValueError):
        topk_rows_mask(torch.zeros(3), 1)


# ---- budget ----------------------------------------------------------------------------------
def test_allocate_hand_cases():
    # round → [5, 3, 2], clip to high 4 → [4, 3, 2] (sum 9), add one to the smallest → [4, 3, 3].
    assert allocate(torch.tensor([0.5, 0.3, 0.2]), 10, 1, 4).tolist() == [4, 3, 3]
    # round(10/3) = 3 each (sum 9): the extra token goes to the lowest-index smallest frame.
    assert allocate(torch.full((3,), 1 / 3), 10, 0, 10).tolist() == [4, 3, 3]
    # round(1.5) = 2 each (sum 4): remove one from the lowest-index largest frame.
    assert allocate(torch.tensor([0.5, 0.5]), 3, 0, 3).tolist() == [1, 2]
    # low bound lifts a zero-share frame.
    assert allocate(torch.tensor([1.0, 0.0]), 4, 1, 4).tolist() == [3, 1]
    # per-frame tensor bounds
    out = allocate(torch.tensor([0.8, 0.1, 0.1]), 6, torch.tensor([0, 0, 2]), torch.tensor([3, 6, 6]))
    assert out.tolist() == [3, 1, 2]


def test_allocate_infeasible_and_malformed():
    with pytest.raises(ValueError):
        allocate(torch.tensor([0.5, 0.5]), 1, 1, 3)  # lows sum to 2 > 1
    with pytest.raises(ValueError):
        allocate(torch.tensor([0.5, 0.5]), 7, 0, 3)  # highs sum to 6 < 7
    with pytest.raises(ValueError):
        allocate(torch.tensor([0.5, -0.5]), 2, 0, 3)
    with pytest.raises(ValueError):
        allocate(torch.tensor([0.5, float("nan")]), 2, 0, 3)
    with pytest.raises(ValueError):
        allocate(torch.tensor([0.5, 0.5]), 2, 3, 1)
    with pytest.raises(ValueError):
        allocate(torch.tensor([0.5, 0.5]), 2, 0, torch.tensor([1, 2, 3]))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 12), st.data())
def test_allocate_exact_sum_within_bounds(T, data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    shares = torch.rand(T, generator=g) ** 3
    shares = shares / shares.sum() if shares.sum() > 0 else torch.full((T,), 1 / T)
    lo = torch.randint(0, 4, (T,), generator=g)
    hi = lo + torch.randint(0, 6, (T,), generator=g)
    total = data.draw(st.integers(int(lo.sum()), int(hi.sum())))
    out = allocate(shares, total, lo, hi)
    assert int(out.sum()) == total
    assert bool((out >= lo).all()) and bool((out <= hi).all())


def test_even_frame_budgets_spreads_remainder():
    assert even_frame_budgets(4, 5, 6).tolist() == [1, 2, 1, 2]
    assert even_frame_budgets(3, 4, 12).tolist() == [4, 4, 4]
    assert even_frame_budgets(5, 3, 0).tolist() == [0] * 5
    with pytest.raises(ValueError):
        even_frame_budgets(2, 3, 7)


# ---- density ---------------------------------------------------------------------------------
def _two_clusters() -> torch.Tensor:
    a = torch.tensor([[0.0, 0.0], [0.2, 0.0], [0.0, 0.2], [0.2, 0.2], [0.1, 0.1]])
    b = torch.tensor([[3.0, 3.0], [3.2, 3.0], [3.1, 3.1]])
    return torch.cat([a, b])


def test_dpc_knn_keeps_one_peak_per_cluster():
    x = _two_clusters()
    idx = dpc_knn_select(x, 2, k_neighbors=2)
    chosen = set(idx.tolist())
    assert len(chosen & {0, 1, 2, 3, 4}) == 1 and len(chosen & {5, 6, 7}) == 1
    # The centre of the square cluster is its density peak.
    assert 4 in chosen


def test_dpc_knn_hand_scores_on_three_points():
    # Points on a line at 0, 1, 3 (D = 1, so distances are plain): k = 1 neighbour.
    x = torch.tensor([[0.0], [1.0], [3.0]])
    s = dpc_knn_scores(x, k_neighbors=1)
    rho = torch.tensor([math.exp(-1), math.exp(-1), math.exp(-4)])
    # Points 0 and 1 tie on density: index 0 counts as denser, so δ0 = max distance 3, δ1 = 1.
    delta = torch.tensor([3.0, 1.0, 2.0])
    assert torch.allclose(s, rho * delta)


def test_dpc_knn_duplicates_and_small_sets():
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [5.0, 0.0]])
    s = dpc_knn_scores(x, k_neighbors=4)  # k capped at M - 1 = 2
    assert s[1] == 0  # second copy of a duplicate has a denser point at distance 0
    assert dpc_knn_scores(torch.ones(1, 3)).tolist() == [0.0]
    assert dpc_knn_select(x, 10).numel() == 3
    assert sorted(dpc_knn_select(x, 3).tolist()) == [0, 1, 2]
    assert dpc_knn_select(x, 0).numel() == 0
    with pytest.raises(ValueError):
        dpc_knn_select(x, -1)
    with pytest.raises(ValueError):
        dpc_knn_scores(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError):
        dpc_knn_scores(x, k_neighbors=0)


def test_dpc_knn_deterministic_on_symmetric_ties():
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    a = dpc_knn_select(square, 2, k_neighbors=2)
    b = dpc_knn_select(square, 2, k_neighbors=2)
    assert a.equal(b)
    # All four are equally dense; point 0 is the densest by index and the only one with δ = max.
    assert int(a[0]) == 0


def test_dpc_knn_batched_matches_single():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, 5, generator=g)
    batched = dpc_knn_scores_batched(x, 3)
    for b in range(4):
        assert torch.allclose(batched[b], dpc_knn_scores(x[b], 3), atol=1e-6)
    sel = dpc_knn_select_batched(x, 4, 3)
    assert sel.shape == (4, 4)
    # Scores equal up to rounding rank alike when neighbours in the ranking are far apart.
    ranked = dpc_knn_scores(x[2], 3).sort(descending=True).values
    assert float((ranked[:-1] - ranked[1:]).min()) > 1e-4
    assert sel[2].equal(dpc_knn_select(x[2], 4, 3))


# ---- merge -----------------------------------------------------------------------------------
def test_merge_assigned_means_and_validation():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 4.0], [0.0, 2.0]])
    keep = torch.tensor([True, False, True, False])
    target = torch.tensor([0, 0, 2, -1])
    out = merge_assigned(x, keep, target)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0], [4.0, 4.0]]))
    w = torch.tensor([3.0, 1.0, 1.0, 1.0])
    assert torch.allclose(merge_assigned(x, keep, target, w)[0], torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError):
        merge_assigned(x, keep, torch.tensor([0, 1, 2, -1]))  # target 1 is not kept
    with pytest.raises(ValueError):
        merge_assigned(x, keep, torch.tensor([2, 0, 2, -1]))  # kept token 0 must target itself


def test_nearest_targets_within_rows():
    sim = torch.tensor([[[1.0, 0.2, 0.9], [0.2, 1.0, 0.3], [0.9, 0.3, 1.0]]])
    out = nearest_targets(sim, torch.tensor([[True, True, False]]))
    assert out.tolist() == [[0, 1, 0]]
    assert nearest_targets(sim, torch.zeros(1, 3, dtype=torch.bool)).tolist() == [[-1, -1, -1]]


# ---- temporal novelty ----------------------------------------------------------------------------
def test_temporal_novelty_hand_values():
    """One-hot features: a object in every frame (at moving positions) is not novel; others by hand."""
    e = torch.eye(4)
    # frame 0: [persistent e0, e1]; frame 1: [e2, persistent e0] (moved); frame 2: [e0, e2]
    x = torch.stack([torch.stack([e[0], e[1]]), torch.stack([e[2], e[0]]), torch.stack([e[0], e[2]])])
    got = temporal_novelty(x)
    # e0 has an exact copy in both other frames: 0. e1 has no match anywhere: 1.
    # e2 in frame 1 matches frame 2 (1) but not frame 0 (0): 1 − 0.5 = 0.5; the same in frame 2.
    want = torch.tensor([[0.0, 1.0], [0.5, 0.0], [0.0, 0.5]])
    assert torch.allclose(got, want, atol=1e-6)


def test_temporal_novelty_is_position_free_and_scale_free():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 6, 8, generator=g)
    base = temporal_novelty(x)
    perm = torch.stack([torch.randperm(6, generator=g) for _ in range(5)])
    shuffled = torch.stack([x[t, perm[t]] for t in range(5)])
    assert torch.allclose(
        temporal_novelty(shuffled), torch.stack([base[t, perm[t]] for t in range(5)]), atol=1e-6
    )
    assert torch.allclose(temporal_novelty(3.0 * x), base, atol=1e-6)
    assert ((base >= -1e-6) & (base <= 2 + 1e-6)).all()


def test_temporal_novelty_edge_cases_and_validation():
    assert torch.equal(temporal_novelty(torch.randn(1, 4, 3)), torch.zeros(1, 4))
    assert torch.isfinite(temporal_novelty(torch.zeros(3, 2, 4))).all()  # zero vectors: no NaN
    for bad in (torch.randn(4, 3), torch.zeros(0, 2, 3), torch.full((2, 2, 2), float("nan"))):
        with pytest.raises(ValueError):
            temporal_novelty(bad)


def test_standardise():
    v = torch.tensor([1.0, 2.0, 3.0, 10.0])
    z = standardise(v)
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std()) - 1) < 1e-4
    assert torch.equal(standardise(torch.full((5,), 3.0)), torch.zeros(5))
    assert torch.equal(standardise(torch.tensor([4.0])), torch.zeros(1))
