"""Tests for the baseline selectors and the registry: hand-checkable cases, exact counts, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cacovid.selectors import (
    SELECTORS,
    DivPruneSelector,
    DPCKNNSelector,
    DyCokeSelector,
    FastVIDSelector,
    FastVSelector,
    NoveltySelector,
    OracleSelector,
    PruneVidSelector,
    RandomSelector,
    RelevanceNoveltySelector,
    RelevanceSelector,
    UniformSelector,
    VidCom2Selector,
    VisionZipSelector,
    available_selectors,
    fastv_flop_equivalent_ratio,
    fastv_ratio_for_budget,
    get_selector,
    register,
)
from cacovid.types import EncodedPrompt, Selector, token_budget

pytestmark = pytest.mark.float_paths  # .ci/run reruns these on torch's default CPU kernels

torch.set_num_threads(1)

BASELINES = [
    "random",
    "uniform",
    "oracle",
    "dpc_knn",
    "divprune",
    "visionzip",
    "vidcom2",
    "fastvid",
    "prunevid",
    "dycoke",
    "novelty",
    "relevance",
    "relevance_novelty",
    "fastv",
]
MERGING = {"visionzip", "fastvid", "prunevid"}


def make_prompt(
    feats: torch.Tensor,
    *,
    evidence: torch.Tensor | None = None,
    extras: dict | None = None,
    n_before: int = 3,
    n_after: int = 2,
) -> EncodedPrompt:
    """A prompt whose video tokens are `feats` (T, H, W, D), with a few text tokens around them."""
    T, H, W, D = feats.shape
    N = T * H * W
    L = n_before + N + n_after
    embeds = torch.zeros(L, D)
    embeds[:n_before] = 0.5
    embeds[n_before + N :] = -0.5
    embeds[n_before : n_before + N] = feats.reshape(N, D)
    return EncodedPrompt(
        inputs_embeds=embeds,
        position_ids=torch.arange(L),
        attention_mask=torch.ones(L, dtype=torch.long),
        video_positions=torch.arange(n_before, n_before + N),
        video_grid=(T, H, W),
        evidence_mask=evidence,
        extras=extras or {},
    )


def random_prompt(T: int, H: int, W: int, D: int, seed: int = 0) -> EncodedPrompt:
    g = torch.Generator().manual_seed(seed)
    N = T * H * W
    return make_prompt(
        torch.randn(T, H, W, D, generator=g),
        evidence=torch.rand(N, generator=g) < 0.2,
    )


def build(name: str, **kwargs) -> Selector:
    if name == "fastv" and "attention_fn" not in kwargs:
        kwargs["attention_fn"] = lambda p: p.video_features.float().sum(-1)
    return get_selector(name, **kwargs)


# ---- properties shared by every baseline ---------------------------------------------------
@pytest.mark.parametrize("name", BASELINES)
@settings(max_examples=20, deadline=None)
@given(
    T=st.integers(1, 9),
    H=st.integers(1, 8),
    W=st.integers(1, 8),
    D=st.integers(1, 6),
    ratio=st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
    seed=st.integers(0, 1000),
)
def test_exact_count_any_shape_any_ratio(name, T, H, W, D, ratio, seed):
    prompt = random_prompt(T, H, W, D, seed)
    sel = build(name).select(prompt, ratio, generator=torch.Generator().manual_seed(seed))
    k = token_budget(T * H * W, ratio)
    assert sel.keep.dtype == torch.bool and sel.keep.shape == (T * H * W,)
    assert sel.num_kept == k
    assert sel.compression_ms >= 0.0
    if name in MERGING:
        assert sel.embeds is not None and sel.embeds.shape == (k, D)
        assert bool(torch.isfinite(sel.embeds).all())
    else:
        assert sel.embeds is None


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan"), float("inf"), 25])
def test_bad_ratio_raises(name, ratio):
    with pytest.raises(ValueError):
        build(name).select(random_prompt(2, 2, 2, 3), ratio)


@pytest.mark.parametrize("name", BASELINES)
def test_deterministic_and_protocol(name):
    prompt = random_prompt(4, 3, 3, 5, seed=7)
    s = build(name)
    assert isinstance(s, Selector) and s.name == name
    a = s.select(prompt, 0.3, generator=torch.Generator().manual_seed(1))
    b = s.select(prompt, 0.3, generator=torch.Generator().manual_seed(1))
    assert a.keep.equal(b.keep)
    if a.embeds is not None:
        assert torch.equal(a.embeds, b.embeds)


@pytest.mark.parametrize("name", sorted(MERGING))
def test_full_ratio_merging_returns_original_features(name):
    prompt = random_prompt(3, 2, 3, 4, seed=2)
    sel = build(name).select(prompt, 1.0)
    assert bool(sel.keep.all())
    assert torch.allclose(sel.embeds, prompt.video_features)


# ---- reference selectors -------------------------------------------------------------------
def test_random_differs_by_seed_and_repeats_with_same_seed():
    prompt = random_prompt(4, 4, 4, 2)
    s = RandomSelector()
    a = s.select(prompt, 0.25, generator=torch.Generator().manual_seed(0)).keep
    b = s.select(prompt, 0.25, generator=torch.Generator().manual_seed(0)).keep
    c = s.select(prompt, 0.25, generator=torch.Generator().manual_seed(1)).keep
    assert a.equal(b) and not a.equal(c)
    assert s.select(prompt, 0.25).keep.equal(RandomSelector(seed=0).select(prompt, 0.25).keep)


def test_uniform_spacing_is_exact():
    prompt = random_prompt(5, 2, 2, 2)  # N = 20
    keep = UniformSelector().select(prompt, 0.25).keep
    assert keep.nonzero().squeeze(1).tolist() == [2, 6, 10, 14, 18]


def test_oracle_keeps_evidence_first_then_fills():
    prompt = random_prompt(2, 2, 5, 2)  # N = 20
    ev = torch.zeros(20, dtype=torch.bool)
    ev[[3, 11]] = True
    prompt.evidence_mask = ev
    keep = OracleSelector().select(prompt, 0.25).keep  # K = 5
    assert bool(keep[ev].all()) and int(keep.sum()) == 5
    # The 3 fill tokens are evenly spread over the 18 non-evidence positions (ranks 3, 9, 15).
    rest = (~ev).nonzero().squeeze(1)
    assert set(keep.nonzero().squeeze(1).tolist()) == {3, 11, *rest[[3, 9, 15]].tolist()}


def test_oracle_evidence_larger_than_budget_and_missing():
    prompt = random_prompt(1, 2, 5, 2)  # N = 10
    ev = torch.zeros(10, dtype=torch.bool)
    ev[[1, 2, 4, 6, 8, 9]] = True
    prompt.evidence_mask = ev
    keep = OracleSelector().select(prompt, 0.2).keep  # K = 2 of 6 evidence tokens
    assert keep.nonzero().squeeze(1).tolist() == [2, 8]  # ranks 1 and 4 of the evidence
    prompt.evidence_mask = None
    with pytest.raises(ValueError, match="evidence"):
        OracleSelector().select(prompt, 0.5)


# ---- feature-based baselines ---------------------------------------------------------------
def test_dpc_knn_keeps_peak_of_each_cluster_per_frame():
    # One frame of 8 tokens: a tight cluster of 5 around its centre token 2, and 3 around token 6.
    pts = torch.tensor(
        [[0.1, 0], [0, 0.1], [0, 0], [-0.1, 0], [0, -0.1], [4, 4.1], [4, 4], [4.1, 4]], dtype=torch.float32
    )
    feats = torch.stack([pts, pts.flip(0)]).reshape(2, 2, 4, 2)
    keep = DPCKNNSelector(k_neighbors=2).select(make_prompt(feats), 0.25).keep.reshape(2, 8)
    assert keep[0].nonzero().squeeze(1).tolist() == [2, 6]
    assert keep[1].nonzero().squeeze(1).tolist() == [1, 5]  # same points, reversed order


def test_divprune_euclidean_picks_farthest_points():
    pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 0.0], [0.0, 10.0], [0.1, 0.1]])
    prompt = make_prompt(pts.reshape(1, 2, 3, 2))
    sel = DivPruneSelector(metric="euclidean").select(prompt, 0.5)
    # Most isolated: 3 and 4 tie (NN distance 9.9) → 3; farthest from it: 4; then the cluster point
    # farthest from both: (0, 0) at distance 10.
    assert sel.info["first"] == 3
    assert sel.keep.nonzero().squeeze(1).tolist() == [0, 3, 4]


def test_divprune_cosine_picks_distinct_directions():
    angles = torch.tensor([0.0, 2.0, 4.0, 6.0, 120.0, 240.0]) * math.pi / 180
    pts = torch.stack([angles.cos(), angles.sin()], 1) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0, 7.0])[:, None]
    keep = DivPruneSelector().select(make_prompt(pts.reshape(1, 1, 6, 2)), 0.5).keep
    assert bool(keep[4]) and bool(keep[5])
    assert int(keep[:4].sum()) == 1


def test_visionzip_dominant_by_attention_and_context_merge():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 2, 3, 4, generator=g)
    attn = torch.tensor([0.1, 0.9, 0.2, 0.3, 0.0, 0.4])
    prompt = make_prompt(feats, extras={"vision_attention": attn})
    sel = VisionZipSelector(dominant=1, contextual=1).select(prompt, 2 / 6)
    # Dominant: token 1 (highest attention). Context target: the middle (rank 2) of the 5 others → 3.
    assert sel.keep.nonzero().squeeze(1).tolist() == [1, 3]
    x = prompt.video_features
    assert torch.allclose(sel.embeds[0], x[1])
    assert torch.allclose(sel.embeds[1], x[[0, 2, 3, 4, 5]].mean(0), atol=1e-6)
    assert sel.info["dominant_score"] == "vision_attention"
    no_attn = VisionZipSelector().select(make_prompt(feats), 0.5)
    assert no_attn.info["dominant_score"] == "feature_norm"


def test_visionzip_rejects_misshaped_attention():
    prompt = make_prompt(torch.randn(1, 2, 2, 3), extras={"vision_attention": torch.ones(3)})
    with pytest.raises(ValueError):
        VisionZipSelector().select(prompt, 0.5)


def test_vidcom2_keeps_most_distinctive_token():
    base = torch.tensor([1.0, 0.0, 0.0])
    feats = base.repeat(2, 1, 4, 1) + 0.01 * torch.arange(24.0).reshape(2, 1, 4, 3).sin()
    feats[0, 0, 2] = torch.tensor([0.0, 1.0, 0.0])  # the one distinctive token
    sel = VidCom2Selector().select(make_prompt(feats), 1 / 8)
    assert sel.keep.nonzero().squeeze(1).tolist() == [2]
    assert sel.info["frame_budgets"] == [1, 0]  # the unique frame receives the budget


def test_fastvid_segments_at_scene_change_and_keeps_salient_features():
    g = torch.Generator().manual_seed(0)
    a, b = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, 0.0])
    scene = torch.stack([a] * 3 + [b] * 3).reshape(6, 1, 1, 4)
    feats = scene + 0.05 * torch.randn(6, 2, 2, 4, generator=g)
    prompt = make_prompt(feats)
    sel = FastVIDSelector(min_segments=1, threshold=0.9).select(prompt, 0.5)
    assert sel.info["segments"] == [[0, 3], [3, 6]]
    assert sel.num_kept == 12
    kept_first_half = int(sel.keep[:12].sum())
    assert kept_first_half == 6  # segment budgets follow segment lengths


def test_prunevid_merges_static_locations_over_time():
    basis = torch.eye(4)
    feats = basis.reshape(1, 2, 2, 4).repeat(4, 1, 1, 1)  # 4 identical frames, 4 distinct locations
    sel = PruneVidSelector(temporal_ratio=0.25).select(make_prompt(feats), 0.25)
    assert sel.info["static_groups"] == 4
    assert sel.keep.nonzero().squeeze(1).tolist() == [0, 1, 2, 3]  # first frame of the segment
    assert torch.allclose(sel.embeds, basis)


def test_prunevid_keeps_budget_when_static_merging_would_undershoot():
    feats = torch.eye(4).reshape(1, 2, 2, 4).repeat(4, 1, 1, 1)
    sel = PruneVidSelector().select(make_prompt(feats), 0.75)  # K = 12 > 4 static units
    assert sel.num_kept == 12
    # Each static merge removes 3 tokens: one merge leaves 13 >= 12 units, a second would leave 10.
    assert sel.info["static_groups"] == 1


def test_dycoke_drops_the_repeated_static_token():
    g = torch.Generator().manual_seed(0)
    f0 = torch.randn(1, 2, 2, 4, generator=g)
    f1 = torch.randn(1, 2, 2, 4, generator=g)
    f1[0, 1, 0] = f0[0, 1, 0]  # location 2 repeats the pivot frame's token
    sel = DyCokeSelector(window=2).select(make_prompt(torch.cat([f0, f1])), 7 / 8)
    assert sel.keep.tolist() == [True] * 6 + [False, True]
    assert sel.info["pivot_tokens"] == 4


def test_novelty_keeps_the_object_other_frames_lack_even_when_others_move():
    e = torch.eye(4)
    # A persistent object (e0) moves every frame; e1 and e2 are background; e3 shows once, in frame 1.
    f0 = torch.stack([e[0], e[1], e[2], e[1]]).reshape(1, 2, 2, 4)
    f1 = torch.stack([e[1], e[0], e[3], e[2]]).reshape(1, 2, 2, 4)
    f2 = torch.stack([e[2], e[1], e[1], e[0]]).reshape(1, 2, 2, 4)
    sel = NoveltySelector().select(make_prompt(torch.cat([f0, f1, f2])), 1 / 12)
    assert sel.keep.nonzero().squeeze(1).tolist() == [6]
    # DyCoke's same-location comparison cannot tell: with frame 0 as pivot it keeps a frame-1 token
    # that only moved (e0 at location 1), not the one-off e3.
    assert not DyCokeSelector(window=3).select(make_prompt(torch.cat([f0, f1, f2])), 5 / 12).keep[6]


def _question_prompt(question: list[torch.Tensor]) -> EncodedPrompt:
    """Video tokens e0 e1 | e0 e2 (two frames of two), then the question's token embeddings."""
    e = torch.eye(4)
    video = torch.stack([e[0], e[1], e[0], e[2]])
    embeds = torch.cat([torch.full((1, 4), 0.5), video, torch.stack(question)])
    L = embeds.shape[0]
    return EncodedPrompt(
        inputs_embeds=embeds,
        position_ids=torch.arange(L),
        attention_mask=torch.ones(L, dtype=torch.long),
        video_positions=torch.arange(1, 5),
        video_grid=(2, 1, 2),
    )


def test_relevance_keeps_what_the_question_names_and_follows_the_question():
    e = torch.eye(4)
    generic = torch.ones(4)  # a template word, as similar to every video token: centred away
    keep = RelevanceSelector().select(_question_prompt([generic, e[2]]), 0.25).keep
    assert keep.nonzero().squeeze(1).tolist() == [3]
    keep = RelevanceSelector().select(_question_prompt([generic, e[1]]), 0.25).keep
    assert keep.nonzero().squeeze(1).tolist() == [1]


def test_relevance_novelty_blends_the_two_scores():
    e = torch.eye(4)
    # The question names e0, which both frames show (no novelty); e1 and e2 are each seen once.
    prompt = _question_prompt([torch.ones(4), e[0]])
    assert RelevanceNoveltySelector(novelty_weight=0.0).select(prompt, 0.25).keep[0]
    novel = RelevanceNoveltySelector(novelty_weight=100.0).select(prompt, 0.25).keep
    assert novel.tolist() == NoveltySelector().select(prompt, 0.25).keep.tolist()
    with pytest.raises(ValueError, match="novelty_weight"):
        RelevanceNoveltySelector(novelty_weight=-1.0)


def test_relevance_needs_a_question_after_the_video():
    prompt = make_prompt(torch.randn(2, 2, 2, 3), n_after=0)
    with pytest.raises(ValueError, match="no text after the video"):
        RelevanceSelector().select(prompt, 0.5)


def test_dycoke_budget_below_pivots_spreads_over_pivots():
    keep = DyCokeSelector(window=2).select(random_prompt(4, 1, 2, 3), 0.25).keep  # K = 2 of 8
    # Pivot tokens are frames 0 and 2 → positions [0, 1, 4, 5]; an even spread keeps ranks 1, 3.
    assert keep.nonzero().squeeze(1).tolist() == [1, 5]


# ---- FastV ---------------------------------------------------------------------------------
def test_fastv_keeps_top_attention_and_validates_callback():
    prompt = random_prompt(1, 2, 3, 2)
    attn = torch.tensor([0.1, 0.5, 0.05, 0.3, 0.3, 0.0])
    sel = FastVSelector(attention_fn=lambda p: attn, num_layers=28).select(prompt, 0.5)
    assert sel.keep.nonzero().squeeze(1).tolist() == [1, 3, 4]
    assert sel.info["flop_equivalent_ratio"] == pytest.approx((2 + 26 * 0.5) / 28)
    with pytest.raises(ValueError):
        FastVSelector()
    with pytest.raises(ValueError):
        FastVSelector(attention_fn=lambda p: torch.ones(5)).select(prompt, 0.5)
    with pytest.raises(ValueError):
        get_selector("fastv")


def test_fastv_flop_equivalent_ratio():
    assert fastv_flop_equivalent_ratio(0.25, 2, 28) == pytest.approx((2 + 26 * 0.25) / 28)
    assert fastv_flop_equivalent_ratio(0.3, 0, 10) == pytest.approx(0.3)
    assert fastv_flop_equivalent_ratio(0.3, 10, 10) == pytest.approx(1.0)
    r = fastv_ratio_for_budget(0.25, 2, 28)
    assert fastv_flop_equivalent_ratio(r, 2, 28) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        fastv_ratio_for_budget(0.05, 2, 28)  # cheaper than FastV's two full layers
    # Paper's per-layer FLOP formula: K = 0 returns the ratio itself, ratio 1 returns 1, and the
    # quadratic attention term makes the equivalent ratio larger than the linear model's.
    kw = {"n_tokens": 6272, "hidden_size": 3584, "ffn_size": 18944}
    assert fastv_flop_equivalent_ratio(0.25, 0, 28, **kw) == pytest.approx(0.25)
    assert fastv_flop_equivalent_ratio(1.0, 2, 28, **kw) == pytest.approx(1.0)
    assert fastv_flop_equivalent_ratio(0.25, 2, 28, **kw) > fastv_flop_equivalent_ratio(0.25, 2, 28)
    with pytest.raises(ValueError):
        fastv_flop_equivalent_ratio(0.25, 30, 28)


# ---- registry ------------------------------------------------------------------------------
def test_registry_lists_builds_and_rejects_unknown():
    assert set(BASELINES) <= set(available_selectors())
    assert isinstance(get_selector("dpc_knn", k_neighbors=3), DPCKNNSelector)
    with pytest.raises(ValueError, match="known selectors: .*uniform"):
        get_selector("no-such-method")


def test_register_adds_one_line_and_refuses_duplicates():
    register("uniform_copy_for_test", UniformSelector)
    try:
        assert "uniform_copy_for_test" in available_selectors()
        assert isinstance(get_selector("uniform_copy_for_test"), UniformSelector)
        with pytest.raises(ValueError, match="already registered"):
            register("uniform_copy_for_test", UniformSelector)
        register("uniform_copy_for_test", RandomSelector, overwrite=True)
        assert isinstance(get_selector("uniform_copy_for_test"), RandomSelector)
    finally:
        SELECTORS.pop("uniform_copy_for_test", None)
    with pytest.raises(ValueError):
        register("", UniformSelector)


@pytest.mark.parametrize(
    "factory,kwargs",
    [
        (DPCKNNSelector, {"k_neighbors": 0}),
        (DivPruneSelector, {"metric": "manhattan"}),
        (VisionZipSelector, {"dominant": 0}),
        (VidCom2Selector, {"temperature": 0.0}),
        (FastVIDSelector, {"salient_fraction": 1.5}),
        (PruneVidSelector, {"temporal_ratio": 0.0}),
        (DyCokeSelector, {"window": 0}),
    ],
)
def test_bad_parameters_raise(factory, kwargs):
    with pytest.raises(ValueError):
        factory(**kwargs)


def _farthest_point_lead(x: torch.Tensor, k: int) -> float:
    """The smallest lead, over DivPrune's k greedy cosine choices on x (N, D), of the chosen token over
    the runner-up: how far rounding would have to move a distance to change the selection."""
    u = torch.nn.functional.normalize(x.float(), dim=-1)
    dist = (1 - u @ u.T).clamp_min(0)
    nearest = (dist + torch.diag(torch.full((len(u),), float("inf")))).amin(1)
    leads, j = [], int(nearest.argmax())
    top2 = nearest.topk(2).values
    leads.append(float(top2[0] - top2[1]))
    mind = dist[j].clone()
    mind[j] = float("-inf")
    for _ in range(k - 1):
        top2 = mind.topk(2).values
        leads.append(float(top2[0] - top2[1]))
        j = int(mind.argmax())
        mind = torch.minimum(mind, dist[j])
        mind[j] = float("-inf")
    return min(leads)


def test_divprune_streaming_path_matches_matrix_path():
    prompt = random_prompt(3, 4, 4, 5, seed=15)  # N = 48
    # The paths compute the same distances with differently shaped products, equal up to float32
    # rounding (~1e-7); the selections must agree where every greedy choice leads by far more.
    assert _farthest_point_lead(prompt.video_features, token_budget(48, 0.3)) > 1e-4
    a = DivPruneSelector(max_matrix_tokens=1000).select(prompt, 0.3)
    b = DivPruneSelector(max_matrix_tokens=8).select(prompt, 0.3)
    assert a.keep.equal(b.keep) and a.info["first"] == b.info["first"]
