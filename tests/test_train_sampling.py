"""Online combination-space sampling (docs/method.md §4 step 2): exact counts, right distributions."""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cacovid.ops.density import dpc_knn_scores_batched
from cacovid.train.config import TrainConfig
from cacovid.train.sampling import (
    CONTENT,
    FRAME,
    TOKEN,
    cap_band_probs,
    frame_mode,
    frame_probabilities,
    frames_per_rollout,
    mode_counts,
    num_bands,
    per_frame_budget,
    sample_rollouts,
    token_mode,
)


def _inputs(T: int, P: int, D: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, P, generator=g) * 2, torch.randn(T, generator=g), torch.randn(T, P, D, generator=g)


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 12),
    P=st.integers(1, 40),
    ratio=st.floats(0.005, 1.0),
    G=st.integers(1, 20),
    seed=st.integers(0, 1000),
)
def test_every_rollout_keeps_the_same_exact_count(T, P, ratio, G, seed):
    s, u, x = _inputs(T, P, seed=seed)
    cfg = TrainConfig.paper(group_size=G)
    ro = sample_rollouts(s, u, x, ratio, cfg, torch.Generator().manual_seed(seed))
    k = per_frame_budget(ratio, P)
    assert ro.masks.shape == (G, T * P) and ro.masks.dtype == torch.bool
    assert ro.frames.shape == (G, T) and ro.frames.dtype == torch.bool
    assert bool((ro.masks.sum(1) == T * k).all())  # equal kept counts: one unpadded batch
    tok = ro.modes == TOKEN
    per_frame = ro.masks[tok].reshape(-1, T, P).sum(-1)
    assert bool((per_frame == k).all())  # token mode: exactly k in every frame
    n_tok, n_frame, n_content = mode_counts(cfg)
    assert (int(tok.sum()), int((ro.modes == FRAME).sum()), int((ro.modes == CONTENT).sum())) == (
        n_tok,
        n_frame,
        n_content,
    )
    fr = ro.modes == FRAME
    if bool(fr.any()):  # frame mode keeps tokens only inside its chosen frames
        masks = ro.masks[fr].reshape(-1, T, P)
        assert not bool((masks & ~ro.frames[fr].unsqueeze(-1)).any())
        assert bool((ro.frames[fr].sum(1) == frames_per_rollout(T, P, T * k, cfg.frame_fraction)).all())


def test_mode_split_follows_the_method():
    assert mode_counts(TrainConfig.paper(group_size=32)) == (23, 8, 1)
    assert mode_counts(TrainConfig.paper(group_size=32, content_rollout=False)) == (24, 8, 0)
    assert mode_counts(TrainConfig.paper(group_size=1)) == (1, 0, 0)
    assert mode_counts(TrainConfig.paper(group_size=2)) == (1, 1, 0)
    assert mode_counts(TrainConfig.paper(group_size=4, frame_share=0.0)) == (3, 0, 1)


def test_budgets_and_band_counts():
    assert per_frame_budget(0.02, 196) == 4
    assert per_frame_budget(0.001, 49) == 1  # never zero
    assert per_frame_budget(1.0, 49) == 49
    assert num_bands(0.02, 2, 196, 4) == 25  # ⌊1/(r·g)⌋
    assert num_bands(0.9, 2, 10, 9) == 1
    assert num_bands(0.01, 2, 196, 2) == 50
    assert num_bands(0.01, 2, 20, 2) == 10  # reduced so every band holds k tokens
    with pytest.raises(ValueError):
        per_frame_budget(0.0, 10)


def test_first_token_rollout_is_the_per_frame_top_k():
    s, u, x = _inputs(5, 30)
    ro = sample_rollouts(s, u, x, 0.1, TrainConfig.paper(group_size=8), torch.Generator().manual_seed(0))
    first = ro.masks[0].reshape(5, 30)
    assert int(ro.modes[0]) == TOKEN
    for t in range(5):
        assert set(first[t].nonzero().squeeze(1).tolist()) == set(torch.topk(s[t], 3).indices.tolist())


def test_first_frame_rollout_takes_the_top_frames_and_density_peaks():
    T, P = 16, 10
    s, u, x = _inputs(T, P)
    cfg = TrainConfig.paper(group_size=8)
    ro = sample_rollouts(s, u, x, 0.2, cfg, torch.Generator().manual_seed(0))
    j = int((ro.modes == FRAME).nonzero()[0])
    n_f = frames_per_rollout(T, P, T * 2, cfg.frame_fraction)
    assert set(ro.frames[j].nonzero().squeeze(1).tolist()) == set(torch.topk(u, n_f).indices.tolist())
    chosen = sorted(torch.topk(u, n_f).indices.tolist())
    scores = dpc_knn_scores_batched(x[chosen].reshape(1, -1, x.shape[-1]))[0]
    want = torch.zeros(n_f * P, dtype=torch.bool)
    want[torch.topk(scores, T * 2).indices] = True
    assert torch.equal(ro.masks[j].reshape(T, P)[chosen].reshape(-1), want)


def test_content_rollout_is_policy_free_per_frame_density():
    T, P = 4, 25
    s, u, x = _inputs(T, P)
    cfg = TrainConfig.paper(group_size=6)
    a = sample_rollouts(s, u, x, 0.2, cfg, torch.Generator().manual_seed(0))
    b = sample_rollouts(-s, -u, x, 0.2, cfg, torch.Generator().manual_seed(9))
    assert int(a.modes[-1]) == CONTENT
    assert torch.equal(a.masks[-1], b.masks[-1])
    scores = dpc_knn_scores_batched(x)
    for t in range(T):
        kept = a.masks[-1].reshape(T, P)[t].nonzero().squeeze(1).tolist()
        assert set(kept) == set(torch.topk(scores[t], 5).indices.tolist())


def test_same_generator_state_same_rollouts():
    s, u, x = _inputs(6, 20)
    cfg = TrainConfig.paper(group_size=12)
    a = sample_rollouts(s, u, x, 0.1, cfg, torch.Generator().manual_seed(5))
    b = sample_rollouts(s, u, x, 0.1, cfg, torch.Generator().manual_seed(5))
    c = sample_rollouts(s, u, x, 0.1, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a.masks, b.masks) and torch.equal(a.frames, b.frames)
    assert not torch.equal(a.masks, c.masks)


@settings(max_examples=80, deadline=None)
@given(B=st.integers(1, 60), conc=st.floats(0.0, 8.0), beta=st.floats(0.1, 10.0), seed=st.integers(0, 999))
def test_band_cap_by_water_filling(B, conc, beta, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.softmax(torch.randn(3, B, generator=g) * conc, dim=1)
    cap = min(max(beta / B, 0.1), 0.9)
    floor = 0.05 / B
    p = cap_band_probs(q, cap, floor)
    assert torch.allclose(p.sum(1), torch.ones(3, dtype=p.dtype))
    assert bool((p >= floor / (1 + B * floor) - 1e-12).all())
    assert bool((p <= max(cap, 1.0 / B) + floor + 1e-9).all())
    # order within a row is preserved (redistribution is proportional)
    order_q = torch.argsort(q, dim=1, stable=True)
    sorted_p = p.gather(1, order_q)
    assert bool((sorted_p[:, 1:] >= sorted_p[:, :-1] - 1e-9).all())


def test_band_choice_and_in_band_draws_follow_their_probabilities():
    """Empirical keep frequencies over many rollouts match the band/in-band model."""
    P, k, r = 16, 1, 1 / 16
    s = torch.linspace(3.0, -3.0, P).unsqueeze(0)  # token i has rank i
    cfg = TrainConfig.paper(group_size=2)
    n = 20001
    masks = token_mode(s, k, n, r, cfg, torch.Generator().manual_seed(0))[1:, 0]  # (n-1, P)
    freq = masks.float().mean(0)
    n_g = num_bands(r, cfg.band_group, P, k)
    assert n_g == 8
    probs = torch.softmax(s.double(), 1)[0]
    band = torch.arange(P) * n_g // P
    mass = torch.zeros(n_g, dtype=torch.float64).index_add_(0, band, probs)
    band_p = cap_band_probs(mass.unsqueeze(0), min(max(2.0 / n_g, 0.1), 0.9), cfg.band_floor / n_g)[0]
    inband = probs / mass[band]
    inband = inband.clamp(0.5 / 2, 2.0 / 2)
    inband = inband / torch.zeros(n_g, dtype=torch.float64).index_add_(0, band, inband)[band]
    want = band_p[band] * inband
    assert torch.allclose(freq.double(), want, atol=0.012)
    assert float(band_p.max()) <= 0.25 + 1e-9  # top band capped at clamp(β/n_g) = 0.25


def test_frame_probabilities_are_floored_and_capped():
    u = torch.tensor([20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    p = frame_probabilities(u, TrainConfig.paper(frame_floor=0.5, frame_cap=4.0))
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-9)
    assert float(p.min()) >= 0.5 / 8 - 1e-12  # every frame can be explored
    assert float(p.max()) <= 4.0 / 8 + 1e-12
    assert int(p.argmax()) == 0
    mild = frame_probabilities(torch.tensor([0.1, 0.0, -0.1]), TrainConfig.paper(frame_floor=0.0))
    assert torch.allclose(mild, torch.softmax(torch.tensor([0.1, 0.0, -0.1], dtype=torch.float64), 0))


def test_frame_mode_spends_the_budget_in_enough_frames():
    T, P = 8, 4
    _, u, x = _inputs(T, P)
    masks, frames = frame_mode(u, x, kept=12, n=5, config=TrainConfig.paper(), generator=torch.Generator())
    assert bool((frames.sum(1) == 3).all())  # ⌈8·0.125⌉ = 1 frame cannot hold 12 tokens: 3 needed
    assert bool((masks.reshape(5, -1).sum(1) == 12).all())


def test_rejects_bad_inputs():
    s, u, x = _inputs(3, 5)
    cfg = TrainConfig.paper(group_size=4)
    g = torch.Generator()
    with pytest.raises(ValueError):
        sample_rollouts(s.reshape(-1), u, x, 0.2, cfg, g)
    with pytest.raises(ValueError):
        sample_rollouts(s, u[:2], x, 0.2, cfg, g)
    with pytest.raises(ValueError):
        sample_rollouts(s, u, x[:, :4], 0.2, cfg, g)
    with pytest.raises(ValueError, match="Generator"):
        sample_rollouts(s, u, x, 0.2, cfg, None)
    with pytest.raises(ValueError):
        TrainConfig.paper(group_size=0)
    with pytest.raises(ValueError):
        TrainConfig.paper(in_band_clamp=(2.0, 0.5))


def test_full_size_sampling_is_fast():
    """32 frames × 196 tokens (LLaVA-OV-7B scale), G = 32: vectorised, well under a second."""
    T, P, D = 32, 196, 64
    s, u, x = _inputs(T, P, D)
    cfg = TrainConfig.paper(group_size=32)
    sample_rollouts(s, u, x, 0.02, cfg, torch.Generator().manual_seed(0))  # warm-up
    start = time.perf_counter()
    ro = sample_rollouts(s, u, x, 0.02, cfg, torch.Generator().manual_seed(1))
    elapsed = time.perf_counter() - start
    assert bool((ro.masks.sum(1) == T * 4).all())
    assert elapsed < 3.0, f"sampling took {elapsed:.2f}s"


def test_frame_share_one_puts_every_rollout_but_content_in_frame_mode():
    assert mode_counts(TrainConfig.paper(group_size=8, frame_share=1.0, adapt_ratio=False)) == (0, 7, 1)
    assert mode_counts(
        TrainConfig.paper(group_size=8, frame_share=1.0, adapt_ratio=False, content_rollout=False)
    ) == (0, 8, 0)
    assert mode_counts(TrainConfig.paper(group_size=1, frame_share=1.0, adapt_ratio=False)) == (0, 1, 0)
    s, u, x = _inputs(6, 20)
    cfg = TrainConfig.paper(group_size=8, frame_share=1.0, adapt_ratio=False)
    ro = sample_rollouts(s, u, x, 0.1, cfg, torch.Generator().manual_seed(0))
    assert ro.mode_names == ["frame"] * 7 + ["content"]
    assert bool((ro.masks.sum(1) == 6 * per_frame_budget(0.1, 20)).all())
    masks = ro.masks[:7].reshape(7, 6, 20)
    assert not bool((masks & ~ro.frames[:7].unsqueeze(-1)).any())  # only inside the chosen frames
    with pytest.raises(ValueError, match=r"frame_share must be in \[0, 1\]"):
        TrainConfig.paper(frame_share=1.5)


def test_naive_sampler_draws_the_budget_anywhere_from_the_token_softmax():
    T, P, G = 4, 25, 6
    s, u, x = _inputs(T, P)
    cfg = TrainConfig.paper(group_size=G, frame_share=0.0, content_rollout=False, sampler="naive")
    assert mode_counts(cfg) == (G, 0, 0)
    ro = sample_rollouts(s, u, x, 0.08, cfg, torch.Generator().manual_seed(1))
    k = per_frame_budget(0.08, P)
    assert ro.masks.shape == (G, T * P) and bool((ro.masks.sum(1) == T * k).all())
    assert ro.mode_names == ["token"] * G and bool(ro.frames.all())
    # Not per-frame: some rollout leaves a frame's count away from k (scores differ across frames).
    assert bool((ro.masks.reshape(G, T, P).sum(-1) != k).any())
    # Same generator state, same draws; a different one, different draws.
    again = sample_rollouts(s, u, x, 0.08, cfg, torch.Generator().manual_seed(1))
    other = sample_rollouts(s, u, x, 0.08, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(ro.masks, again.masks) and not torch.equal(ro.masks, other.masks)


def test_naive_sampler_follows_plackett_luce_inclusion():
    """One draw (kept = 1) is a categorical draw from softmax(s) over the whole video."""
    from cacovid.train.sampling import naive_mode

    s = torch.tensor([[2.0, 0.0, -1.0], [1.0, 0.5, -3.0]])
    draws = naive_mode(s, 1, 40000, torch.Generator().manual_seed(0))
    freq = draws.double().mean(0)
    want = torch.softmax(s.reshape(-1).double(), 0)
    assert torch.allclose(freq, want, atol=0.01)
    two = naive_mode(s, 2, 2000, torch.Generator().manual_seed(0))
    assert bool((two.sum(1) == 2).all())  # without replacement: two distinct tokens
    with pytest.raises(ValueError, match="kept"):
        naive_mode(s, 7, 1, torch.Generator())


def test_naive_sampler_refuses_modes_it_does_not_have():
    with pytest.raises(ValueError, match="naive"):
        TrainConfig.paper(sampler="naive")  # default frame_share and content rollout
    with pytest.raises(ValueError, match="naive"):
        TrainConfig.paper(sampler="naive", frame_share=0.0)  # content rollout still on
    with pytest.raises(ValueError, match="sampler must be one of"):
        TrainConfig.paper(sampler="global")


def test_default_sampler_draws_what_it_always_drew():
    """`sampler` "modes" is the default and adds no draw: same masks as without the option."""
    s, u, x = _inputs(5, 30)
    a = sample_rollouts(s, u, x, 0.1, TrainConfig.paper(group_size=9), torch.Generator().manual_seed(4))
    b = sample_rollouts(
        s, u, x, 0.1, TrainConfig.paper(group_size=9, sampler="modes"), torch.Generator().manual_seed(4)
    )
    assert torch.equal(a.masks, b.masks) and torch.equal(a.modes, b.modes)


def test_gumbel_sampler_log_probabilities_are_those_of_its_draws():
    """The exact Plackett–Luce log-probabilities sum to 1 over every ordered draw, and the sampler's
    empirical frequencies of ordered draws match them (N = 4 tokens, K = 2 per rollout)."""
    import itertools

    from cacovid.train.sampling import SAMPLERS, plackett_luce_log_prob

    s = torch.tensor([[1.5, 0.2], [-0.7, 0.9]])  # T = 2 frames of P = 2 tokens: N = 4
    u, x = torch.zeros(2), torch.randn(2, 2, 3)
    orders = torch.tensor(list(itertools.permutations(range(4), 2)))  # all 12 ordered draws
    p = plackett_luce_log_prob(s.reshape(-1), orders).exp()
    assert abs(float(p.sum()) - 1.0) < 1e-9
    cfg = TrainConfig.paper(group_size=30000, sampler="gumbel", frame_share=0.0, content_rollout=False)
    ro = sample_rollouts(s, u, x, 0.5, cfg, torch.Generator().manual_seed(0))  # k = 1 per frame: K = 2
    assert ro.order.shape == (30000, 2) and bool((ro.masks.sum(1) == 2).all())
    assert torch.equal(ro.masks, torch.zeros_like(ro.masks).scatter_(1, ro.order, True))
    freq = torch.stack([(ro.order == o).all(1).double().mean() for o in orders])
    assert torch.allclose(freq, p, atol=0.01), (freq, p)
    # Its gradient raises the drawn tokens' scores relative to the rest.
    scores = s.reshape(-1).clone().requires_grad_(True)
    plackett_luce_log_prob(scores, torch.tensor([[3, 1]])).sum().backward()
    assert float(scores.grad[3]) > 0 and float(scores.grad[1]) > 0 and float(scores.grad[0]) < 0
    assert SAMPLERS["gumbel"].log_prob is plackett_luce_log_prob and not SAMPLERS["gumbel"].modes


def test_plackett_luce_log_probability_holds_when_scores_spread():
    """Over every ordered draw the probabilities sum to 1 however far the scores spread (at a spread
    of 40, subtracting the drawn tokens' mass from the total once gave log-probabilities above 0),
    and at a host's size (784 tokens, 24 drawn) every log-probability is finite and at most 0."""
    import itertools

    from cacovid.train.sampling import global_draws, plackett_luce_log_prob

    gen = torch.Generator().manual_seed(3)
    orders = torch.tensor(list(itertools.permutations(range(6), 3)))
    for scale in (0.01, 1.0, 6.0, 40.0):
        z = torch.randn(6, generator=gen, dtype=torch.float64) * scale
        assert abs(float(plackett_luce_log_prob(z, orders).exp().sum()) - 1.0) < 1e-10, scale
        z = torch.randn(784, generator=gen, dtype=torch.float64) * scale
        drawn = torch.cat([global_draws(z, 24, 8, gen), z.topk(24).indices.unsqueeze(0)])
        logp = plackett_luce_log_prob(z, drawn)
        assert bool(torch.isfinite(logp).all()) and bool((logp <= 1e-9).all()), scale
