"""Inference-time budgeted selection (docs/method.md §3): exact budgets for any ρ, T, P; the right tokens."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cacovid.policy.select import budgeted_select, frame_budgets, frame_shares
from cacovid.types import token_budget

pytestmark = pytest.mark.float_paths  # .ci/run reruns these on torch's default CPU kernels


def _scores(T: int, P: int, seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, P, generator=g) * scale, torch.randn(T, generator=g) * scale


@settings(max_examples=300, deadline=None)
@given(
    T=st.integers(1, 40),
    P=st.integers(1, 60),
    ratio=st.floats(1e-4, 1.0),
    alpha=st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]),
    cap_mult=st.sampled_from([None, 0.1, 0.5, 1.0, 1.5, 3.0, 100.0]),
    fill=st.sampled_from(["even", "score"]),
    scale=st.sampled_from([0.0, 1.0, 50.0]),
    seed=st.integers(0, 10_000),
)
def test_exact_budget_for_any_shape_and_ratio(T, P, ratio, alpha, cap_mult, fill, scale, seed):
    s, u = _scores(T, P, seed, scale)
    cap = None if cap_mult is None else cap_mult * ratio
    keep = budgeted_select(s, u, ratio, alpha=alpha, cap=cap, fill=fill)
    assert keep.dtype == torch.bool and keep.shape == (T * P,)
    assert int(keep.sum()) == token_budget(T * P, ratio)


@settings(max_examples=200, deadline=None)
@given(
    T=st.integers(1, 30),
    P=st.integers(1, 50),
    ratio=st.floats(1e-3, 1.0),
    alpha=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
)
def test_importance_budgets_sum_exactly_and_respect_bounds(T, P, ratio, alpha, seed):
    _, u = _scores(T, P, seed, 3.0)
    K = token_budget(T * P, ratio)
    k_alpha = math.floor(alpha * K + 1e-9)
    c = 1.5 * ratio
    k = frame_budgets(u, k_alpha, P, ratio, alpha, c)
    assert k.dtype == torch.long and k.shape == (T,)
    assert int(k.sum()) == k_alpha
    assert int(k.min()) >= 0 and int(k.max()) <= P
    if k_alpha >= T:  # feasible floor of one token per frame is kept
        assert int(k.min()) >= 1
    hi = math.floor(alpha * c * P + 1e-9)
    if hi * T >= k_alpha and hi >= 1:  # feasible per-frame cap is respected
        assert int(k.max()) <= max(hi, 1)


def test_frame_shares_are_clipped_around_uniform():
    u = torch.tensor([10.0, 0.0, -10.0, 0.0])
    p = frame_shares(u, ratio=0.1, cap=0.15)
    assert torch.isclose(p.sum(), torch.tensor(1.0, dtype=p.dtype))
    # clipped to [0.5, 1.5] x 1/4 before renormalising → ratios between shares stay within 3x
    assert float(p.max() / p.min()) <= 3.0 + 1e-9
    assert int(p.argmax()) == 0 and float(p[2]) == float(p.min())
    mild = frame_shares(torch.tensor([1.0, 0.9, 0.8, 0.7]), ratio=0.1, cap=0.15)  # inside the clip range
    assert bool((mild[:-1] > mild[1:]).all())
    want = torch.softmax(3.0 * torch.tensor([1.0, 0.9, 0.8, 0.7], dtype=torch.float64), 0)
    assert torch.allclose(mild, want)
    flat = frame_shares(torch.zeros(5), ratio=0.2, cap=0.3)
    assert torch.allclose(flat, torch.full((5,), 0.2, dtype=flat.dtype))


def test_importance_tokens_are_the_per_frame_best():
    T, P = 6, 20
    s, u = _scores(T, P, 0)
    keep = budgeted_select(s, u, 0.3, alpha=1.0, cap=1.0).reshape(T, P)
    for t in range(T):
        k = int(keep[t].sum())
        assert set(keep[t].nonzero().squeeze(1).tolist()) == set(torch.topk(s[t], k).indices.tolist())


def test_high_frame_scores_get_more_tokens():
    T, P = 8, 50
    s, _ = _scores(T, P, 1)
    u = torch.zeros(T)
    u[3] = 5.0
    u[6] = -5.0
    keep = budgeted_select(s, u, 0.2, alpha=1.0).reshape(T, P)
    per = keep.sum(1)
    assert int(per[3]) == int(per.max()) and int(per[6]) == int(per.min())
    assert int(per[3]) > int(per[6])
    # default cap c = 1.5ρ: at most ⌊α·c·P⌋ = ⌊1.5·0.2·50⌋ = 15 importance tokens per frame
    assert int(per.max()) <= 15


def test_even_fill_spreads_the_rest_over_the_video():
    T, P = 10, 30
    s = torch.zeros(T, P)
    s[0] = 10.0  # all importance mass in frame 0 …
    u = torch.zeros(T)
    u[0] = 10.0
    keep = budgeted_select(s, u, 0.2, alpha=0.5).reshape(T, P)
    assert int(keep.sum()) == 60
    assert bool((keep.sum(1) > 0).all())  # … but the even fill still reaches every frame


def test_score_fill_takes_the_next_best_tokens():
    from cacovid.ops.topk import topk_rows_mask

    T, P, ratio, alpha = 4, 10, 0.5, 0.5
    s, u = _scores(T, P, 2)
    keep = budgeted_select(s, u, ratio, alpha=alpha, fill="score")
    K = token_budget(T * P, ratio)
    k_alpha = math.floor(alpha * K)
    imp = topk_rows_mask(s, frame_budgets(u, k_alpha, P, ratio, alpha, 1.5 * ratio)).reshape(-1)
    assert bool((keep & imp).eq(imp).all())  # the importance part is kept
    rest = keep & ~imp
    assert int(rest.sum()) == K - k_alpha
    flat = s.reshape(-1)
    # every filled token scores at least as high as every token left out
    assert float(flat[rest].min()) >= float(flat[~keep].max())


def test_alpha_zero_is_even_selection():
    T, P = 5, 12
    s, u = _scores(T, P, 3)
    a = budgeted_select(s, u, 0.25, alpha=0.0)
    b = budgeted_select(-s, -u, 0.25, alpha=0.0)
    assert torch.equal(a, b)  # scores play no role


def test_alpha_zero_with_score_fill_is_the_global_top_k():
    T, P, ratio = 6, 11, 0.2
    s, u = _scores(T, P, 5)
    keep = budgeted_select(s, u, ratio, alpha=0.0, fill="score")
    top = torch.zeros(T * P, dtype=torch.bool)
    top[s.reshape(-1).topk(token_budget(T * P, ratio)).indices] = True
    assert torch.equal(keep, top)
    assert torch.equal(keep, budgeted_select(s, -u, ratio, alpha=0.0, fill="score"))  # u plays no role


def test_flat_scores_accepted_with_frame_count():
    T, P = 3, 7
    s, u = _scores(T, P, 4)
    assert torch.equal(budgeted_select(s, u, 0.4), budgeted_select(s.reshape(-1), u, 0.4))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(ratio=0.0), "ratio"),
        (dict(ratio=1.5), "ratio"),
        (dict(alpha=1.5), "alpha"),
        (dict(cap=0.0), "cap"),
        (dict(fill="random"), "fill"),
    ],
)
def test_bad_options_raise(kwargs, match):
    s, u = _scores(2, 5, 0)
    args = dict(ratio=0.5) | kwargs
    ratio = args.pop("ratio")
    with pytest.raises(ValueError, match=match):
        budgeted_select(s, u, ratio, **args)


def test_bad_shapes_and_values_raise():
    s, u = _scores(3, 5, 0)
    with pytest.raises(ValueError):
        budgeted_select(s, u[:2], 0.5)
    with pytest.raises(ValueError):
        budgeted_select(s.reshape(-1)[:13], u, 0.5)
    bad = s.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        budgeted_select(bad, u, 0.5)
