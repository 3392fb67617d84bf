"""Online combination-space sampling (docs/method.md §4 step 2): G keep-masks per iteration, three modes.

Every rollout keeps exactly the same number of tokens, T·k with k = round(r·P) (at least 1), so the
frozen model can answer all G rollouts in one batched call without padding.

- **token mode**: per frame, the ranking by softmax(s) is cut into n_g rank bands; a rollout draws one
  band per frame (band probabilities capped so no band dominates), then k tokens inside it. Rewards
  then compare high-band against low-band choices, which teaches a *ranking*. Rollout 1 of the mode is
  the deterministic per-frame top-k.
- **frame mode**: ⌈T·f⌉ frames drawn from softmax(u) (floored and capped); the whole budget is spent
  inside them by density-peak diversity. Rollout 1 of the mode takes the top frames.
- **content mode**: one policy-free rollout, per-frame density-peak diversity (a reference point).

Samplers are entries of the `SAMPLERS` table (`TrainConfig.sampler`): "modes" is the three-mode
sampler above; "naive" is the plain alternative the method is measured against (`bench/convergence.py`):
every rollout draws its T·k tokens anywhere in the video, without replacement, from softmax(s) over all
N tokens, and counts as token mode for the per-token Bernoulli surrogate (`train/objective.py`);
"gumbel" draws the same way but keeps each rollout's draw order, whose exact Plackett–Luce
log-probability the objective uses instead of the surrogate (docs/method.md §6).

All randomness comes from the caller's `torch.Generator`; everything is vectorised over rollouts,
frames and tokens (the only loop is the water-filling, at most n_g small steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from cacovid.ops.density import dpc_knn_scores_batched
from cacovid.ops.topk import topk_rows_mask

if TYPE_CHECKING:
    from cacovid.train.config import TrainConfig

TOKEN, FRAME, CONTENT = 0, 1, 2
MODE_NAMES = ("token", "frame", "content")


def mode_counts(config: TrainConfig) -> tuple[int, int, int]:
    """(token, frame, content) rollout counts of an iteration.

    Token mode always gets at least one rollout unless `frame_share` is 1, which gives frame mode
    every rollout but the content one. A sampler without modes puts every rollout in token mode.
    """
    G = config.group_size
    if not SAMPLERS[config.sampler].modes:
        return G, 0, 0
    n_content = 1 if config.content_rollout and G >= 3 else 0
    if config.frame_share >= 1.0:
        return 0, G - n_content, n_content
    n_frame = round(config.frame_share * G) if G - n_content >= 2 else 0
    if config.frame_share > 0 and G - n_content >= 2:
        n_frame = max(1, n_frame)
    n_frame = min(n_frame, G - n_content - 1)
    return G - n_content - n_frame, n_frame, n_content


@dataclass
class Rollouts:
    """G keep-masks for one prompt.

    - `masks` (G, N) bool, N = T·P in (t, h, w) order, each with exactly `kept` True.
    - `frames` (G, T) bool: the frame decisions (frame mode: chosen frames; other modes: all True).
    - `modes` (G,) long: TOKEN / FRAME / CONTENT.
    - `ratio` r and `per_frame` k = round(r·P) they were drawn with.
    - `order` (G, K) long, or None: the kept tokens in the order they were drawn, for samplers whose
      objective needs the exact log-probability of each draw (`Sampler.log_prob`).
    """

    masks: Tensor
    frames: Tensor
    modes: Tensor
    ratio: float
    per_frame: int
    order: Tensor | None = None

    @property
    def kept(self) -> int:
        return int(self.masks[0].sum()) if self.masks.shape[0] else 0

    @property
    def mode_names(self) -> list[str]:
        return [MODE_NAMES[int(m)] for m in self.modes]


def per_frame_budget(ratio: float, tokens_per_frame: int) -> int:
    """k = round(r·P), at least 1 and at most P: valid for any r > 0 and any P."""
    if not ratio > 0 or not math.isfinite(ratio):
        raise ValueError(f"training retention must be positive, got {ratio}")
    return int(min(tokens_per_frame, max(1, round(ratio * tokens_per_frame))))


def num_bands(ratio: float, band_group: int, tokens_per_frame: int, per_frame: int) -> int:
    """n_g = max(⌊1/(r·g)⌋, 1), reduced so every band holds at least k tokens."""
    n_g = max(math.floor(1.0 / (ratio * band_group) + 1e-9), 1)
    return max(1, min(n_g, tokens_per_frame // per_frame))


def cap_band_probs(q: Tensor, cap: float, floor: float) -> Tensor:
    """(T, B) band probabilities: each row capped at `cap` by water-filling, floored, renormalised.

    Mass above the cap is handed to the uncapped bands in proportion to their own mass, repeatedly,
    until no band exceeds the cap (a cap below 1/B is raised to 1/B, the only feasible value).
    Then every band gets at least `floor` and rows are renormalised.
    """
    T, B = q.shape
    cap = max(float(cap), 1.0 / B)
    p = q.double().clamp_min(1e-12)
    p = p / p.sum(1, keepdim=True)
    capped = torch.zeros_like(p, dtype=torch.bool)
    for _ in range(B):
        over = (p > cap + 1e-12) & ~capped
        if not bool(over.any()):
            break
        capped |= over
        free_mass = 1.0 - cap * capped.sum(1, keepdim=True)
        base = torch.where(capped, torch.zeros_like(p), p)
        scale = free_mass / base.sum(1, keepdim=True).clamp_min(1e-300)
        p = torch.where(capped, torch.full_like(p, cap), base * scale)
    p = p.clamp_min(float(floor))
    return p / p.sum(1, keepdim=True)


def _gumbel(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
    return -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))


def token_mode(
    token_scores: Tensor,
    per_frame: int,
    n: int,
    ratio: float,
    config: TrainConfig,
    generator: torch.Generator,
) -> Tensor:
    """(n, T, P) bool: n token-mode rollouts with exactly k = `per_frame` tokens in every frame.

    Rollout 0 is the per-frame top-k by s. The others draw a band per frame, then k tokens without
    replacement inside it (Gumbel top-k, equivalent to sequential draws) with in-band probabilities
    clamped around uniform.
    """
    T, P = token_scores.shape
    k, dev = per_frame, token_scores.device
    out = torch.zeros(n, T, P, dtype=torch.bool, device=dev)
    if n == 0:
        return out
    out[0] = topk_rows_mask(token_scores, k)
    if n == 1:
        return out
    probs = torch.softmax(token_scores.double(), dim=-1)  # (T, P)
    order = torch.sort(probs, dim=-1, descending=True, stable=True).indices  # rank → token
    p_sorted = probs.gather(1, order)
    n_g = num_bands(ratio, config.band_group, P, k)
    band = torch.div(torch.arange(P, device=dev) * n_g, P, rounding_mode="floor")  # (P,) rank → band
    sizes = torch.bincount(band, minlength=n_g).double()  # (n_g,) each >= k
    mass = torch.zeros(T, n_g, dtype=torch.float64, device=dev).index_add_(1, band, p_sorted)
    cap = min(max(config.band_beta / n_g, 0.1), 0.9)
    band_p = cap_band_probs(mass, cap, config.band_floor / n_g)  # (T, n_g)
    chosen = torch.multinomial(band_p.float(), n - 1, replacement=True, generator=generator)  # (T, n-1)
    # In-band token probabilities, clamped to [low, high] × uniform and renormalised within each band.
    uni = 1.0 / sizes[band]  # (P,)
    inband = p_sorted / mass[:, band].clamp_min(1e-300)
    low, high = config.in_band_clamp
    inband = torch.minimum(torch.maximum(inband, low * uni), high * uni)
    band_sum = torch.zeros(T, n_g, dtype=torch.float64, device=dev).index_add_(1, band, inband)
    logw = torch.log(inband / band_sum[:, band])  # (T, P) over ranks
    keys = logw.unsqueeze(0) + _gumbel((n - 1, T, P), generator, dev)
    in_chosen = band.view(1, 1, P) == chosen.t().unsqueeze(-1)  # (n-1, T, P)
    keys = keys.masked_fill(~in_chosen, -math.inf)
    ranks = keys.topk(k, dim=-1).indices  # (n-1, T, k)
    tokens = order.unsqueeze(0).expand(n - 1, T, P).gather(-1, ranks)
    out[1:].scatter_(-1, tokens, True)
    return out


def naive_mode(token_scores: Tensor, kept: int, n: int, generator: torch.Generator) -> Tensor:
    """(n, N) bool: n rollouts of `kept` tokens each, drawn without replacement from softmax(s).

    The scores are flattened over the whole video (N = T·P), so a rollout may take many tokens from
    one frame and none from another. There is no deterministic rollout: every draw is random.
    """
    order = global_draws(token_scores, kept, n, generator)
    out = torch.zeros(n, token_scores.numel(), dtype=torch.bool, device=token_scores.device)
    return out.scatter_(1, order, True)


def global_draws(token_scores: Tensor, kept: int, n: int, generator: torch.Generator) -> Tensor:
    """(n, kept) token indices in draw order: Gumbel top-k with the caller's generator, whose keys
    log softmax(s)_i + Gumbel_i, top `kept`, are distributed as `kept` sequential draws without
    replacement from softmax(s) over all N tokens (Plackett–Luce)."""
    flat = token_scores.reshape(-1)
    N = flat.numel()
    if not 1 <= kept <= N:
        raise ValueError(f"kept must be in [1, {N}], got {kept}")
    if n == 0:
        return torch.zeros(0, kept, dtype=torch.long, device=flat.device)
    keys = torch.log_softmax(flat.double(), dim=0).unsqueeze(0) + _gumbel((n, N), generator, flat.device)
    return keys.topk(kept, dim=1).indices  # sorted by key: the order of sequential draws


def frame_probabilities(frame_scores: Tensor, config: TrainConfig) -> Tensor:
    """(T,) softmax(u) kept within [floor, cap] × uniform, summing to 1.

    A uniform share ε = `frame_floor` is mixed in (so every frame has at least ε/T) after capping
    the softmax by water-filling at (cap − ε) / (T(1 − ε)), which bounds the mixture by cap/T.
    """
    T = frame_scores.numel()
    eps, cap = config.frame_floor, config.frame_cap
    p = torch.softmax(frame_scores.double(), dim=0)
    if eps >= 1.0:
        return torch.full_like(p, 1.0 / T)
    inner = cap_band_probs(p.unsqueeze(0), (cap - eps) / (T * (1.0 - eps)), 0.0)[0]
    return eps / T + (1.0 - eps) * inner


def frames_per_rollout(num_frames: int, tokens_per_frame: int, kept: int, frame_fraction: float) -> int:
    """⌈T·f⌉ frames, raised if needed so they can hold the whole budget."""
    need = -(-kept // tokens_per_frame)
    return min(num_frames, max(math.ceil(num_frames * frame_fraction - 1e-9), need, 1))


def frame_mode(
    frame_scores: Tensor,
    features: Tensor,
    kept: int,
    n: int,
    config: TrainConfig,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """n frame-mode rollouts: ((n, T, P) bool token masks, (n, T) bool chosen frames).

    Rollout 0 takes the top frames by u; the others draw frames without replacement from the floored
    and capped softmax(u). Inside the chosen frames the `kept` tokens are those with the highest
    density-peak scores, computed jointly over the chosen frames' features (T, P, D).
    """
    T, P, D = features.shape
    dev = features.device
    masks = torch.zeros(n, T, P, dtype=torch.bool, device=dev)
    frames = torch.zeros(n, T, dtype=torch.bool, device=dev)
    if n == 0:
        return masks, frames
    n_f = frames_per_rollout(T, P, kept, config.frame_fraction)
    frames[0] = topk_rows_mask(frame_scores.unsqueeze(0), n_f)[0]
    if n > 1:
        logp = torch.log(frame_probabilities(frame_scores, config))
        keys = logp.unsqueeze(0) + _gumbel((n - 1, T), generator, dev)
        frames[1:] = topk_rows_mask(keys, n_f)
    idx = torch.sort(frames.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :n_f]
    idx = torch.sort(idx, dim=1).values  # (n, n_f) chosen frames in time order
    feats = features[idx].reshape(n, n_f * P, D)
    scores = dpc_knn_scores_batched(feats, config.dpc_neighbors)  # (n, n_f·P)
    local = topk_rows_mask(scores, kept).reshape(n, n_f, P)
    masks.scatter_(1, idx.unsqueeze(-1).expand(n, n_f, P), local)
    return masks, frames


def content_scores(features: Tensor, dpc_neighbors: int = 4) -> Tensor:
    """(T, P) per-frame density-peak scores: policy-free, so computed once per item."""
    return dpc_knn_scores_batched(features, dpc_neighbors)


def sample_rollouts(
    token_scores: Tensor,
    frame_scores: Tensor,
    features: Tensor,
    ratio: float,
    config: TrainConfig,
    generator: torch.Generator,
    *,
    content: Tensor | None = None,
) -> Rollouts:
    """G rollouts for one prompt from the policy's (old) scores, by `config.sampler`.

    `token_scores` (T, P), `frame_scores` (T,), `features` (T, P, D) the projected video tokens
    (density-peak selection), `ratio` the training retention r. `content` (T, P) optional cached
    `content_scores(features)`. Every rollout keeps exactly T·k tokens, k = round(r·P).
    """
    if token_scores.dim() != 2:
        raise ValueError(f"token_scores must be (T, P), got {tuple(token_scores.shape)}")
    T, P = token_scores.shape
    if frame_scores.shape != (T,):
        raise ValueError(f"frame_scores must be ({T},), got {tuple(frame_scores.shape)}")
    if features.dim() != 3 or features.shape[:2] != (T, P):
        raise ValueError(f"features must be ({T}, {P}, D), got {tuple(features.shape)}")
    if not isinstance(generator, torch.Generator):
        raise ValueError("sample_rollouts needs a torch.Generator for its randomness")
    scores = token_scores.detach().float(), frame_scores.detach().float(), features.detach()
    k = per_frame_budget(ratio, P)
    return SAMPLERS[config.sampler].draw(*scores, k, float(ratio), config, generator, content)


def draw_modes(
    token_scores: Tensor,
    frame_scores: Tensor,
    features: Tensor,
    per_frame: int,
    ratio: float,
    config: TrainConfig,
    generator: torch.Generator,
    content: Tensor | None,
) -> Rollouts:
    """The paper's three modes (docs/method.md §4 step 2): token-mode rollouts, then frame mode, then
    the content-mode rollout."""
    T, P = token_scores.shape
    k, kept = per_frame, T * per_frame
    n_tok, n_frame, n_content = mode_counts(config)
    tok = token_mode(token_scores, k, n_tok, ratio, config, generator)
    fr_masks, fr_frames = frame_mode(frame_scores, features, kept, n_frame, config, generator)
    parts = [tok, fr_masks]
    frames = [torch.ones(n_tok, T, dtype=torch.bool), fr_frames.cpu()]
    modes = [TOKEN] * n_tok + [FRAME] * n_frame
    if n_content:
        cs = content if content is not None else content_scores(features, config.dpc_neighbors)
        if cs.shape != (T, P):
            raise ValueError(f"content scores must be ({T}, {P}), got {tuple(cs.shape)}")
        parts.append(topk_rows_mask(cs, k).unsqueeze(0))
        frames.append(torch.ones(1, T, dtype=torch.bool))
        modes.append(CONTENT)
    dev = token_scores.device
    return Rollouts(
        masks=torch.cat([p.to(dev) for p in parts]).reshape(-1, T * P),
        frames=torch.cat([f.to(dev) for f in frames]),
        modes=torch.tensor(modes, dtype=torch.long, device=dev),
        ratio=ratio,
        per_frame=k,
    )


def draw_naive(
    token_scores: Tensor,
    frame_scores: Tensor,
    features: Tensor,
    per_frame: int,
    ratio: float,
    config: TrainConfig,
    generator: torch.Generator,
    content: Tensor | None,
) -> Rollouts:
    """Every rollout draws its T·k tokens anywhere in the video from softmax(s) (`naive_mode`);
    all count as token mode for the per-token Bernoulli surrogate."""
    T = token_scores.shape[0]
    G, dev = config.group_size, token_scores.device
    return Rollouts(
        masks=naive_mode(token_scores, T * per_frame, G, generator),
        frames=torch.ones(G, T, dtype=torch.bool, device=dev),
        modes=torch.full((G,), TOKEN, dtype=torch.long, device=dev),
        ratio=ratio,
        per_frame=per_frame,
    )


def draw_gumbel(
    token_scores: Tensor,
    frame_scores: Tensor,
    features: Tensor,
    per_frame: int,
    ratio: float,
    config: TrainConfig,
    generator: torch.Generator,
    content: Tensor | None,
) -> Rollouts:
    """Global Gumbel-top-K: every rollout draws its K = T·k tokens anywhere in the video, without
    replacement, from softmax(s), as the global top-K used at test time ranks them; the draw order is
    kept, so `plackett_luce_log_prob` gives each rollout's exact probability."""
    T, N, G, dev = token_scores.shape[0], token_scores.numel(), config.group_size, token_scores.device
    order = global_draws(token_scores, T * per_frame, G, generator)
    return Rollouts(
        masks=torch.zeros(G, N, dtype=torch.bool, device=dev).scatter_(1, order, True),
        frames=torch.ones(G, T, dtype=torch.bool, device=dev),
        modes=torch.full((G,), TOKEN, dtype=torch.long, device=dev),
        ratio=ratio,
        per_frame=per_frame,
        order=order,
    )


def plackett_luce_log_prob(token_scores: Tensor, order: Tensor) -> Tensor:
    """(G,) log-probability of drawing `order` (G, K) token by token without replacement from
    softmax(s) over the N tokens: Σ_t [s_{o_t} − log Σ_{i not yet drawn} exp s_i] (with gradients).

    The tokens not yet drawn at step t are those never drawn plus o_t … o_K, so each normaliser is
    a log-sum of two log-sums, never a difference of sums: subtracting the drawn tokens' mass from
    the total cancels catastrophically once the scores spread (at a spread of 40 it gave positive
    log-probabilities)."""
    z = token_scores.reshape(-1).double()
    picked = z[order]  # (G, K)
    drawn = torch.zeros(order.shape[0], z.numel(), dtype=torch.bool, device=z.device).scatter_(1, order, True)
    log_never = torch.logsumexp(z.unsqueeze(0).masked_fill(drawn, float("-inf")), dim=1, keepdim=True)
    log_from_t = torch.logcumsumexp(picked.flip(1), dim=1).flip(1)  # log Σ_{u ≥ t} exp s_{o_u}
    return (picked - torch.logaddexp(log_from_t, log_never)).sum(dim=1)


DrawRollouts = Callable[
    [Tensor, Tensor, Tensor, int, float, "TrainConfig", torch.Generator, "Tensor | None"], Rollouts
]
LogProb = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Sampler:
    """One entry of `SAMPLERS`.

    - `draw(token_scores (T, P), frame_scores (T,), features (T, P, D), k, r, config, generator,
      content)` → `Rollouts` of exactly T·k tokens each.
    - `log_prob(token_scores (N,), order (G, K)) → (G,)`: the exact log-probability of each drawn
      rollout under the scores (with gradients), from `Rollouts.order`. None: the objective treats
      the rollouts as independent per-token keep/drop decisions (docs/method.md §4 step 5).
    - `modes`: the sampler splits its rollouts into token, frame and content mode (`frame_share`,
      `content_rollout`); without modes both must be off.
    """

    draw: DrawRollouts
    log_prob: LogProb | None = None
    modes: bool = False


# Rollout samplers by name (`TrainConfig.sampler`). Adding one: a draw function above, an entry here,
# a test in tests/test_train_sampling.py.
SAMPLERS: dict[str, Sampler] = {
    "modes": Sampler(draw_modes, modes=True),
    "naive": Sampler(draw_naive),
    "gumbel": Sampler(draw_gumbel, log_prob=plackett_luce_log_prob),
}
