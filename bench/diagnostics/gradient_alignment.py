"""How much of CaCoVID's policy gradient points where the evidence is, per training setting.

The synthetic world knows which tokens carry the answer, so it knows the direction a teacher would
move the token head: the gradient that widens the margin between the mean score of the evidence
tokens and the mean score of the *hard negatives*, the non-evidence tokens the policy currently
ranks in its top `--hard-share` (10 %). Those are the tokens that push evidence out of a 10 % budget.
Background is easy and already ranked low, and a margin over all tokens would mostly measure that.
The margin is a pure ranking direction: a shift of every score by the same amount leaves it
unchanged.

For K items that survive the blind filter, each setting (training retention r, reward, advantage ε,
band cap β, band group g) draws one iteration of G rollouts exactly as `PolicyUpdater.train_prompt`
does. The frozen model scores them, and the script takes the policy-loss gradient on the token head
and norm. Reported: the cosine between the items' summed RL descent direction and their summed
margin ascent direction.
- Near 0 (or below): the setting spends its rollouts on something other than ranking the evidence
  above what competes with it.
- Near 1: it teaches what a supervised teacher would.

Measured with the policy you pass, since what is informative changes as a policy trains.

    .venv/bin/python bench/diagnostics/gradient_alignment.py --policy src/cacovid/policy/shipped/toy \
        --items 80
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

try:
    import benchutil
except ModuleNotFoundError:  # run as a script: the shared helper package is in bench/, one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import benchutil


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default=None, help="toy | tiny | micro | checkpoint (default: toy if installed)"
    )
    ap.add_argument("--policy", default=None, help="saved policy folder (default: an untrained one)")
    ap.add_argument("--items", type=int, default=40, help="synthetic items K after the blind filter")
    ap.add_argument("--split", default="train")
    ap.add_argument("--start", type=int, default=70000, help="index of the first synthetic item")
    ap.add_argument("--world", default="", help="synthetic world overrides, e.g. frames=8")
    ap.add_argument("--ratios", default="0.12,0.06,0.03", help="training retentions r to compare")
    ap.add_argument("--rewards", default="dense,accuracy", help="rollout rewards to compare")
    ap.add_argument("--eps", default="0.0001,0.05", help="advantage ε values to compare")
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--band-betas", default="2", help="band caps β to compare (docs/method.md default 2)")
    ap.add_argument("--band-groups", default="2", help="band group sizes g to compare (default 2)")
    ap.add_argument(
        "--hard-share", type=float, default=0.1, help="hard negatives: non-evidence in this top share"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    return ap


def _head_params(policy) -> list[torch.nn.Parameter]:
    return [*policy.token_head.parameters(), *policy.norm.parameters()]


def _flat_grad(params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params])


def _evidence_gradient(policy, prompts, hard_share: float) -> torch.Tensor:
    """Summed gradient of −(mean evidence score − mean score of the hard negatives).

    Hard negatives: the non-evidence tokens among the current top `hard_share` of scores, the ones
    that push evidence out of a budget of that size (background is easy and already ranked low; a
    margin over all non-evidence tokens would mostly measure that).
    """
    params = _head_params(policy)
    total = torch.zeros(sum(p.numel() for p in params))
    for prompt in prompts:
        policy.zero_grad(set_to_none=True)
        ev = prompt.evidence_mask.clone().to(policy.device)  # an inference tensor cannot index in autograd
        s = policy(prompt).token_scores
        k = max(1, int(hard_share * s.numel()))
        hard = torch.zeros_like(ev)
        hard[s.detach().topk(k).indices] = True
        hard &= ~ev
        if not bool(ev.any()) or not bool(hard.any()):
            continue  # nothing to rank above / below
        (s[hard].mean() - s[ev].mean()).backward()
        total += _flat_grad(params).cpu()
    return total


def _rl_gradient(
    policy,
    adapter,
    prompts,
    items,
    ratio: float,
    reward_fn,
    eps: float,
    args,
    beta: float = 2.0,
    group: int = 2,
) -> torch.Tensor:
    from cacovid.train.config import TrainConfig
    from cacovid.train.objective import Memory, group_advantages, policy_loss
    from cacovid.train.sampling import content_scores, sample_rollouts

    cfg = TrainConfig.paper(group_size=args.group_size, band_beta=beta, band_group=group)
    gen = torch.Generator().manual_seed(args.seed)
    params = _head_params(policy)
    total = torch.zeros(sum(p.numel() for p in params))
    for prompt, item in zip(prompts, items, strict=True):
        T, P = prompt.num_frames, prompt.tokens_per_frame
        with torch.no_grad():
            old = policy(prompt)
        feats = prompt.frame_features().detach().float().cpu()
        ro = sample_rollouts(
            old.token_scores.reshape(T, P).cpu(),
            old.frame_scores.cpu(),
            feats,
            ratio,
            cfg,
            gen,
            content=content_scores(feats, cfg.dpc_neighbors),
        )
        rewards = reward_fn(adapter, [(prompt, m, None) for m in ro.masks], item).float().cpu()
        adv = group_advantages(rewards, ro.modes, eps=eps)
        memory = Memory.empty(prompt.num_video_tokens, T, device=old.token_logits.device)
        memory = memory.append(ro.masks, ro.frames, ro.modes, adv)
        policy.zero_grad(set_to_none=True)
        new = policy(prompt)
        policy_loss(
            new.token_logits, new.frame_logits, old.token_logits, old.frame_logits, memory
        ).loss.backward()
        total += _flat_grad(params).cpu()
    return total


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.rewards import rollout_reward
    from cacovid.train.validation import blind_filter

    benchutil.setup_torch(args.threads)
    if adapter is None:
        adapter = benchutil.load_model(args.model or benchutil.default_model(), torch.device("cpu"))
    policy = (
        CaCoVIDPolicy.from_pretrained(args.policy, host=adapter).to(adapter.device)
        if args.policy
        else benchutil.untrained_policy(adapter)
    )
    from cacovid.data.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig().with_overrides(args.world or None))
    candidates = list(world.items(args.split, 2 * args.items, start=args.start))
    items = [candidates[i] for i in blind_filter(adapter, candidates)][: args.items]
    if not items:
        raise SystemExit("the blind filter left no items: nothing to measure")
    with torch.inference_mode():
        prompts = [adapter.encode_item(it) for it in items]
    evidence = _evidence_gradient(policy, prompts, args.hard_share)
    rows = []
    settings = itertools.product(
        benchutil.parse_ratios(args.ratios),
        benchutil.parse_names(args.rewards),
        benchutil.parse_floats(args.eps),
        benchutil.parse_floats(args.band_betas),
        [int(g) for g in benchutil.parse_floats(args.band_groups)],
    )
    for ratio, reward, eps, beta, group in settings:
        grad = _rl_gradient(
            policy, adapter, prompts, items, ratio, rollout_reward(reward), eps, args, beta, group
        )
        cos = float(F.cosine_similarity(grad, evidence, dim=0)) if grad.norm() > 0 else 0.0
        rows.append(
            {
                "ratio": ratio,
                "reward": reward,
                "eps": eps,
                "beta": beta,
                "group": group,
                "cosine": cos,
            }
        )
    return {
        "policy": args.policy or "untrained",
        "items": len(items),
        "rows": rows,
        "env": benchutil.environment(),
    }


def render(result: dict[str, Any]):
    from rich.table import Table

    table = Table(
        title=f"RL gradient vs evidence gradient ({result['items']} items, policy {result['policy']})"
    )
    for col in ("r", "reward", "ε", "β", "g", "cosine"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(
            f"{r['ratio']:g}",
            r["reward"],
            f"{r['eps']:g}",
            f"{r['beta']:g}",
            str(r["group"]),
            f"{r['cosine']:+.3f}",
        )
    return table


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run the benchmark, print the table and return the result."""
    return benchutil.run_script(build_parser, run, render, argv, adapter)


if __name__ == "__main__":
    main()
