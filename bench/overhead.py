"""The cost of selection against the language model's prefill, per method, on the toy and at 7B shape.

Token compression pays only if the prefill it saves exceeds what choosing the tokens costs. CaCoVID's
policy is one full-width decoder layer of the host over the whole prompt: at LLaVA-OneVision-7B shape
that is about 1/28 of the 28-layer prefill before any token is dropped. The paper's anchor is 11.2 ms
of compression against a 200.4 ms prefill (5.6 %), a 3.1x prefill speed-up at 25 % with the selection
counted, where dropping 75 % of the video tokens alone gives at most 4x. Four parts, one run:

- `toy`: every pre-LLM selector the harness evaluates (as `bench/quality.py`: all registered ones but
  the oracle and FastV), CaCoVID with the shipped policy of `--world`'s preset and pooled CaCoVID (below),
  on a few synthetic test items of the shipped toy model (`cacovid.evaluate.efficiency`, the code of
  `cacovid eval --efficiency`): selection ms against the prefill ms at full length and at the kept
  ratio, and the prefill speed-up with and without the selection counted.
- `7b`: LLaVA-OneVision-7B's language model shape (`benchutil.shapes`) over 32 frames x 196 tokens +
  62 text tokens, random weights. One causal decoder layer (sdpa) is timed at full length and at the
  kept length; the prefill is 28 x that layer (the LM head on one position is left out). CaCoVID's
  selection (the policy around one such layer, bidirectional, its heads, the per-token terms of
  `--world`'s shipped policy, and the budgeted selection) and pooled CaCoVID are timed in the
  same rounds, interleaved, so the ratios hold on a noisy machine. Beside every time, the analytic
  FLOPs (`cacovid.evaluate.efficiency`; the prefill causal, the policy's layer the full square).
- `quality`: for each of `--quality-worlds`, the shipped policy of its preset against pooled CaCoVID
  on the same test items at one ratio, through the evaluation harness (`compare_quality`), with the
  paired difference on the items both answered.
- `full-model` (default on CUDA only): the whole 28-layer 7B-shaped language model in `--dtype`
  (bfloat16 on CUDA): compression ms, prefill ms at 100 % and at the kept ratio, the prefill speed-up
  with the compression counted.

Pooled CaCoVID is the library's `PolicyConfig.pool_size` k (`--pool`, default 2; `cacovid.policy.pooling`):
the policy's layer reads the mean of each k x k spatial cell of every frame, each cell's score goes
to its members, and the per-token terms, which need no decoder layer, are computed on the full grid.
`cacovid-poolK` is the shipped policy's own weights rerun at pool size k, with its selection settings.
`--pooled-policy DIR` names a policy trained pooled instead (a `policy/` folder of `cacovid train
--pool-size K`), `cacovid-poolK-trained`: the toy and quality parts run it with its own selection
settings; at 7B shape, where no trained weights fit, its config's pool size and per-token terms shape
the random 7B policy. Either is the cheaper policy measured whatever the full policy's share; the
output says whether the full one stays above 3 % of the prefill.

The last printed line is the headline: the policy-to-prefill ratio at 7B shape (measured and analytic)
and the implied 25 % prefill speed-up with the selection counted, beside the paper's anchor, and the
same two figures for pooled CaCoVID.

    nice .venv/bin/python bench/overhead.py --json overhead.json        # CPU, about 10 min
    .venv/bin/python bench/overhead.py --device cuda --parts 7b,full-model   # 7B shape on a GPU, bf16
    .venv/bin/python bench/overhead.py --quick                          # small shapes, seconds
    .venv/bin/python bench/overhead.py --device cuda --parts 7b,full-model --pooled-policy runs/pool2/policy
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import benchutil
import torch
from benchutil.shapes import (
    PREFIX,
    QUICK,
    SUFFIX,
    big_policy,
    build_language_model,
    causal_layer,
    fake_prompt,
    layer_call,
    text_config,
)

PARTS = ("toy", "7b", "quality", "full-model")
# The paper's figures at LLaVA-OneVision-7B shape, 25 % retention.
ANCHOR = {"compression_ms": 11.2, "prefill_ms": 200.4, "speedup": 3.1, "limit": 4.0}
THRESHOLD = 0.03  # a policy above this share of the prefill calls for a cheaper one
QUALITY_WORLDS = "preset=decoys;preset=classic"  # each with its preset's shipped policy
DEFAULT_POOL = 2
# The PolicyConfig fields of a policy's per-token terms, which add to its cost beside its layer.
TERM_FIELDS = ("question_match_dim", "context_width", "novelty_weight")


# ---- timing --------------------------------------------------------------------------------------
def interleaved_ms(
    calls: dict[str, Callable[[], Any]], device: torch.device, *, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Wall ms of each call, measured in rounds (one call of each per round) after `warmup` rounds, so a
    slow spell of a shared machine falls on every call alike and their ratios hold."""
    if repeats < 1 or warmup < 0:
        raise SystemExit(f"need --repeats >= 1 and --warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            out[name] += benchutil.time_ms(fn, device, repeats=1, warmup=0)
    return out


def _div(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den == 0 else float(num / den)


# ---- analytic FLOPs ------------------------------------------------------------------------------
def head_flops(policy: torch.nn.Module, tokens: int, frames: int) -> float:
    """FLOPs of the policy's token head on `tokens` and frame head on `frames` (its linear layers)."""
    per = {}
    for name in ("token_head", "frame_head"):
        linears = [m for m in getattr(policy, name).modules() if isinstance(m, torch.nn.Linear)]
        per[name] = sum(2.0 * m.in_features * m.out_features for m in linears)
    return per["token_head"] * tokens + per["frame_head"] * frames


def term_flops(policy, prompt) -> float:
    """FLOPs of the policy's per-token terms on `prompt`: the question match (projections of the video
    and question tokens to d, and their products), the cross-frame context (neighbour and persistence
    cosines, its small MLP) and the novelty prior (every token against every token)."""
    cfg = policy.config
    n, frames, d = prompt.num_video_tokens, prompt.num_frames, prompt.hidden_size
    total = 0.0
    if cfg.question_match_dim:
        q, m = int(prompt.question_positions().numel()), cfg.question_match_dim
        total += 2.0 * d * m * (n + q) + 2.0 * n * q * m
    if cfg.context_width:
        total += 2.0 * 2 * n * d + 2.0 * frames * n * d + 2.0 * n * 7 * cfg.context_width
    if cfg.novelty_weight:
        total += 2.0 * n * n * d
    return total


def selector_flops(selector, config: dict[str, Any], prompt) -> float:
    """Analytic FLOPs of a CaCoVID selector's policy forward on `prompt`: its bidirectional layer (the
    full square) over the sequence it reads (the pooled one at pool size k > 1), its heads on that
    sequence's video tokens, its per-token terms on the full grid; norms, the pooling and the frame
    mean are O(L·D) and left out, as in `layer_flops`."""
    from cacovid.evaluate.efficiency import layer_flops
    from cacovid.policy.pooling import pool_prompt

    policy = selector.policy
    k = policy.config.pool_size
    scored = pool_prompt(prompt, k).prompt if k > 1 else prompt
    length = int(scored.inputs_embeds.shape[0])
    heads = head_flops(policy, scored.num_video_tokens, prompt.num_frames)
    return layer_flops(config, length) + heads + term_flops(policy, prompt)


# ---- pooled CaCoVID --------------------------------------------------------------------------------
def pooled_name(k: int, trained: bool) -> str:
    """The pooled method's name: `cacovid-poolK` (a policy rerun pooled) or `…-trained`."""
    return f"cacovid-pool{k}" + ("-trained" if trained else "")


def repooled(base, k: int):
    """`base` (a CaCoVIDSelector) with the same policy weights at pool size k and the same selection
    settings, so pooling is the only difference."""
    from cacovid.policy import CaCoVIDSelector

    return CaCoVIDSelector(base.policy.with_pool_size(k), alpha=base.alpha, cap=base.cap, fill=base.fill)


def pooled_policy_size(path: str) -> int:
    """The pool size of the saved policy at `path` (exits when it is no saved policy or not pooled)."""
    from cacovid.policy.config import PolicyConfig

    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise SystemExit(f"--pooled-policy: {path} is not a saved policy folder (no config.json)")
    k = PolicyConfig.load(config_file).pool_size
    if k < 2:
        raise SystemExit(f"--pooled-policy: {path} has pool size {k}; train one with --pool-size 2 or more")
    return k


def pooled_method(adapter, base, *, pool: int, pooled_policy: str | None):
    """The pooled CaCoVID method of the toy and quality parts: `pooled_policy` on `adapter` with its own
    selection settings, or else `base`'s policy rerun at pool size `pool`."""
    from cacovid.evaluate.methods import Method
    from cacovid.policy import CaCoVIDSelector

    if pooled_policy is None:
        return Method(pooled_name(pool, False), repooled(base, pool))
    try:
        selector = CaCoVIDSelector.from_pretrained(pooled_policy, adapter)
    except ValueError as e:
        raise SystemExit(f"--pooled-policy: {e}") from e
    return Method(pooled_name(pool, True), selector)


# ---- part (a): the toy ---------------------------------------------------------------------------
def shipped_selector(adapter, world: str, seed: int):
    """The harness's methods for the world's preset (full, CaCoVID with its shipped policy and
    selection settings, every pre-LLM baseline), the CaCoVID selector among them."""
    from cacovid.evaluate import build_methods

    names = ["full", "cacovid", *benchutil.baseline_names()]
    policy = benchutil.policy_dir(benchutil.world_preset(world))
    methods = build_methods(names, adapter, policy=str(policy), seed=seed)
    base = next(m.selector for m in methods if m.name == "cacovid")
    return methods, base


def toy_part(args: argparse.Namespace, adapter) -> dict[str, Any]:
    from cacovid.evaluate.efficiency import measure_efficiency

    methods, base = shipped_selector(adapter, args.world, args.seed)
    methods.append(pooled_method(adapter, base, pool=args.pool, pooled_policy=args.pooled_policy))
    items = benchutil.synthetic_items(args.toy_items, args.world, "test")
    with torch.no_grad():
        result = measure_efficiency(
            adapter,
            items,
            methods,
            [args.toy_ratio],
            repeats=args.toy_repeats,
            warmup=args.warmup,
            seed=args.seed,
            model=args.model,
        )
    full = next(r for r in result["rows"] if r["method"] == "full")
    rows = []
    for r in result["rows"]:
        with_selection = None if r["prefill_ms"] is None else r["prefill_ms"] + (r["compression_ms"] or 0.0)
        rows.append(
            {
                "method": r["method"],
                "ratio": r["ratio"],
                "kept": r["kept_tokens"],
                "select_ms": r["compression_ms"],
                "prefill_ms": r["prefill_ms"],
                "select_pct_of_full_prefill": _div(100 * (r["compression_ms"] or 0.0), full["prefill_ms"]),
                "prefill_speedup": _div(full["prefill_ms"], r["prefill_ms"]),
                "speedup_with_selection": _div(full["prefill_ms"], with_selection),
            }
        )
    return {
        "world": args.world,
        "items": len(items),
        "repeats": args.toy_repeats,
        "full_prefill_ms": full["prefill_ms"],
        "rows": rows,
        "failed": result["failed"],
    }


# ---- part (b): 7B shape --------------------------------------------------------------------------
def policy_terms(folder: str | Path) -> dict[str, Any]:
    """The per-token terms (question match, context, novelty prior) of the saved policy in `folder`."""
    from cacovid.policy.config import PolicyConfig

    config = PolicyConfig.load(Path(folder) / "config.json")
    return {k: getattr(config, k) for k in TERM_FIELDS}


def shipped_terms(world: str) -> dict[str, Any]:
    """The per-token terms of the world's shipped policy, so the 7B-shape policy is timed with the
    parts the quality figures come from."""
    return policy_terms(benchutil.policy_dir(benchutil.world_preset(world)))


def seven_b_selectors(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """The 7B-shape text config, a random prompt of LLaVA-OneVision's layout, the kept length at
    `--ratio`, the terms of each policy, and the selectors timed on it by name: CaCoVID (one random
    Qwen2-7B-sized layer, heads and the terms of the world's shipped policy) and pooled CaCoVID (the
    same policy at pool size `--pool`, or a random one shaped by `--pooled-policy`'s config)."""
    from cacovid.policy import CaCoVIDSelector
    from cacovid.policy.settings import selection_options
    from cacovid.types import token_budget

    config = text_config(args.quick)
    frames, side = (QUICK["frames"], QUICK["side"]) if args.quick else (args.frames, args.side)
    prompt = fake_prompt(
        frames, side, int(config["hidden_size"]), prefix=PREFIX, suffix=SUFFIX, device=device, dtype=dtype
    )
    length, n_video = int(prompt.inputs_embeds.shape[0]), prompt.num_video_tokens
    kept_length = length - n_video + token_budget(n_video, args.ratio)
    terms = {"cacovid": shipped_terms(args.world)}
    torch.manual_seed(args.seed)
    base = CaCoVIDSelector(big_policy(device, dtype, config, **terms["cacovid"]))
    name = pooled_name(args.pool, args.pooled_policy is not None)
    if args.pooled_policy is None:
        terms[name] = terms["cacovid"]
        pooled = repooled(base, args.pool)
    else:
        terms[name] = policy_terms(args.pooled_policy)
        policy = big_policy(device, dtype, config, **terms[name], pool_size=args.pool)
        pooled = CaCoVIDSelector(policy, **selection_options(args.pooled_policy))
    return config, prompt, kept_length, terms, {"cacovid": base, name: pooled}


def seven_b_part(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    from cacovid.evaluate.efficiency import prefill_flops
    from cacovid.policy.pooling import pool_prompt

    config, prompt, kept_length, terms, selectors = seven_b_selectors(args, device, dtype)
    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    length, n_video = int(prompt.inputs_embeds.shape[0]), prompt.num_video_tokens
    frames, side = prompt.num_frames, prompt.video_grid[1]
    pooled_prompt = pool_prompt(prompt, args.pool).prompt
    layer, rotary = causal_layer(config, device, dtype)
    calls = {
        "layer_full": layer_call(layer, rotary, prompt.inputs_embeds),
        "layer_kept": layer_call(layer, rotary, prompt.inputs_embeds[:kept_length]),
    }
    for name, selector in selectors.items():
        calls[name] = lambda selector=selector: selector.select(prompt, args.ratio)
    times = interleaved_ms(calls, device, repeats=args.repeats, warmup=args.warmup)
    ms = {name: benchutil.median(values) for name, values in times.items()}
    prefill_full, prefill_kept = layers * ms["layer_full"], layers * ms["layer_kept"]
    flops = {
        "prefill_full": prefill_flops(config, length, causal=True),
        "prefill_kept": prefill_flops(config, kept_length, causal=True),
        **{name: selector_flops(sel, config, prompt) for name, sel in selectors.items()},
    }
    rows = []
    for name in selectors:
        rows.append(
            {
                "method": name,
                "select_ms": ms[name],
                "gflops": flops[name] / 1e9,
                "pct_of_prefill_measured": _div(100 * ms[name], prefill_full),
                "pct_of_prefill_analytic": 100 * flops[name] / flops["prefill_full"],
                "speedup_with_selection_measured": _div(prefill_full, prefill_kept + ms[name]),
                "speedup_with_selection_analytic": _div(
                    flops["prefill_full"], flops["prefill_kept"] + flops[name]
                ),
            }
        )
    return {
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "shape": {
            "frames": frames,
            "tokens_per_frame": side * side,
            "video_tokens": n_video,
            "text_tokens": length - n_video,
            "length": length,
            "kept_length": kept_length,
            "pooled_length": int(pooled_prompt.inputs_embeds.shape[0]),
            "hidden": hidden,
            "layers": layers,
            "heads": int(config["num_attention_heads"]),
            "kv_heads": int(config["num_key_value_heads"]),
            "intermediate": int(config["intermediate_size"]),
        },
        "ratio": args.ratio,
        "repeats": args.repeats,
        "times_ms": times,
        "layer_full_ms": ms["layer_full"],
        "layer_kept_ms": ms["layer_kept"],
        "prefill_full_ms_estimate": prefill_full,
        "prefill_kept_ms_estimate": prefill_kept,
        "prefill_speedup_measured": _div(prefill_full, prefill_kept),
        "prefill_speedup_analytic": flops["prefill_full"] / flops["prefill_kept"],
        "prefill_full_gflops": flops["prefill_full"] / 1e9,
        "prefill_kept_gflops": flops["prefill_kept"] / 1e9,
        "policy_terms": terms["cacovid"],
        "pooled_policy_terms": terms[rows[-1]["method"]],
        "selectors": rows,
        "above_threshold": bool(rows[0]["pct_of_prefill_measured"] > 100 * THRESHOLD),
    }


# ---- the whole 7B-shaped model (GPU) -------------------------------------------------------------
def full_model_part(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    config, prompt, kept_length, _, selectors = seven_b_selectors(args, device, dtype)
    length = int(prompt.inputs_embeds.shape[0])
    model = build_language_model(config, device, dtype)

    def prefill(n: int) -> Callable[[], Any]:
        embeds = prompt.inputs_embeds[:n].unsqueeze(0)
        pos = torch.arange(n, device=device).unsqueeze(0)

        def run() -> None:
            with torch.no_grad():
                model(inputs_embeds=embeds, position_ids=pos, logits_to_keep=1, use_cache=False)

        return run

    calls = {"prefill_full": prefill(length), "prefill_kept": prefill(kept_length)}
    for name, selector in selectors.items():
        calls[name] = lambda selector=selector: selector.select(prompt, args.ratio)
    times = interleaved_ms(calls, device, repeats=args.repeats, warmup=max(1, args.warmup))
    ms = {name: benchutil.median(values) for name, values in times.items()}
    rows = []
    for name in selectors:
        rows.append(
            {
                "method": name,
                "compression_ms": ms[name],
                "pct_of_prefill": _div(100 * ms[name], ms["prefill_full"]),
                "speedup_with_compression": _div(ms["prefill_full"], ms["prefill_kept"] + ms[name]),
            }
        )
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "layers": int(config["num_hidden_layers"]),
        "length": length,
        "kept_length": kept_length,
        "ratio": args.ratio,
        "prefill_full_ms": ms["prefill_full"],
        "prefill_kept_ms": ms["prefill_kept"],
        "prefill_speedup": _div(ms["prefill_full"], ms["prefill_kept"]),
        "times_ms": times,
        "rows": rows,
    }


# ---- part (c): what pooling costs in quality -------------------------------------------------------
def mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and its standard error (sample std / √n; None below two values)."""
    if not values:
        return None, None
    m = float(statistics.fmean(values))
    se = float(statistics.stdev(values) / math.sqrt(len(values))) if len(values) > 1 else None
    return m, se


def quality_rows(rows: Sequence[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Per method: accuracy and evidence recall with n and standard errors, and the paired difference
    of each to `reference` on the items both answered (so item difficulty cancels)."""
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["item_id"]] = r
    ref = by_method.get(reference, {})
    out = []
    for method, items in by_method.items():
        ok = [r for r in items.values() if not r.get("error_kind") or r["error_kind"] == "unparsable"]
        acc, acc_se = mean_se([float(r["correct"]) for r in ok])
        recall, recall_se = mean_se([r["evidence_recall"] for r in ok if r["evidence_recall"] is not None])
        shared = [i for i in items if i in ref]
        diff, diff_se = mean_se([float(items[i]["correct"]) - float(ref[i]["correct"]) for i in shared])
        rdiff, rdiff_se = mean_se(
            [
                items[i]["evidence_recall"] - ref[i]["evidence_recall"]
                for i in shared
                if items[i]["evidence_recall"] is not None and ref[i]["evidence_recall"] is not None
            ]
        )
        paired = method != reference
        out.append(
            {
                "method": method,
                "ratio": next(iter(items.values()))["ratio"],
                "n": len(ok),
                "errors": len(items) - len(ok),
                "accuracy": acc,
                "accuracy_se": acc_se,
                "evidence_recall": recall,
                "evidence_recall_se": recall_se,
                "accuracy_diff": diff if paired else None,
                "accuracy_diff_se": diff_se if paired else None,
                "recall_diff": rdiff if paired else None,
                "recall_diff_se": rdiff_se if paired else None,
            }
        )
    return out


def quality_world(
    adapter,
    world: str,
    work: Path,
    *,
    pool: int,
    pooled_policy: str | None,
    ratio: float,
    items: int,
    seed: int,
    model: str | None,
) -> list[dict[str, Any]]:
    """The world's shipped policy and pooled CaCoVID (`pooled_method`) on the same test items at one
    ratio, through the evaluation harness (results kept in `work`, so a second call resumes)."""
    from cacovid.data.sources import synthetic_source
    from cacovid.evaluate import EvalConfig, build_methods, run_evaluation
    from cacovid.evaluate.records import read_rows

    policy = benchutil.policy_dir(benchutil.world_preset(world))
    methods = build_methods(["cacovid"], adapter, policy=str(policy), seed=seed)
    methods.append(pooled_method(adapter, methods[0].selector, pool=pool, pooled_policy=pooled_policy))
    config = EvalConfig(ratios=[ratio], batch_size=8, seed=seed, keep_masks=False)
    source = synthetic_source(world, "test", items)
    with torch.inference_mode():
        run_evaluation(adapter, source, methods, work, config, model=model)
    rows = quality_rows(read_rows(work), "cacovid")
    return [{"world": world, "policy": policy.name, **r} for r in rows]


def compare_quality(
    adapter,
    worlds: Sequence[str],
    *,
    pool: int,
    pooled_policy: str | None = None,
    ratio: float,
    items: int,
    seed: int = 0,
    model: str | None = None,
    work: str | Path | None = None,
) -> dict[str, Any]:
    """Every world's shipped policy against pooled CaCoVID (`quality_world`), in one result: the
    `quality` part's JSON. `work`: where the evaluation rows go (default: temporary)."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cacovid-overhead-") as tmp:
        root = Path(work) if work else Path(tmp)
        for world in worlds:
            folder = root / re.sub(r"[^A-Za-z0-9_.-]+", "_", world)
            rows += quality_world(
                adapter,
                world,
                folder,
                pool=pool,
                pooled_policy=pooled_policy,
                ratio=ratio,
                items=items,
                seed=seed,
                model=model,
            )
    return {"worlds": list(worlds), "ratio": ratio, "items": items, "rows": rows}


# ---- the run -------------------------------------------------------------------------------------
def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    benchutil.setup_torch(args.threads)
    device = benchutil.resolve_device(args.device)
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = benchutil.DTYPES[dtype_name]
    if args.quick:
        args.toy_items, args.quality_items, args.toy_repeats = 1, 4, 1
        args.repeats, args.warmup = 1, 0
    parts = benchutil.parse_names(args.parts) if args.parts else ["toy", "7b", "quality"]
    if args.full_model or (args.full_model is None and device.type == "cuda"):
        parts.append("full-model")
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise SystemExit(f"--parts: unknown {unknown or 'empty list'}; known: {', '.join(PARTS)}")
    resolve_pool(args)
    result: dict[str, Any] = {
        "benchmark": "overhead",
        "quick": bool(args.quick),
        "parts": parts,
        "pool": args.pool,
        "pooled_policy": args.pooled_policy,
        "anchor": {**ANCHOR, "ratio_pct": 100 * ANCHOR["compression_ms"] / ANCHOR["prefill_ms"]},
        "threshold_pct": 100 * THRESHOLD,
        "environment": benchutil.environment(),
        "seconds": {},
    }
    for world in [args.world, *args.quality_worlds.split(";")]:
        if world.strip():
            benchutil.world_preset(world)  # fail before any model loads
    if {"toy", "quality"} & set(parts) and adapter is None:
        adapter = benchutil.load_model(args.model, torch.device("cpu"))
    for part in parts:
        start = time.perf_counter()
        if part == "toy":
            result["toy"] = toy_part(args, adapter)
        elif part == "7b":
            result["7b"] = seven_b_part(args, device, dtype)
        elif part == "full-model":
            result["full_model"] = full_model_part(args, device, dtype)
        else:
            result["quality"] = compare_quality(
                adapter,
                [w.strip() for w in args.quality_worlds.split(";") if w.strip()],
                pool=args.pool,
                pooled_policy=args.pooled_policy,
                ratio=args.quality_ratio,
                items=args.quality_items,
                seed=args.seed,
                model=args.model,
                work=args.work,
            )
        result["seconds"][part] = time.perf_counter() - start
    result["headline"] = headline(result)
    return result


def resolve_pool(args: argparse.Namespace) -> None:
    """Set `args.pool`: `--pool`, else `--pooled-policy`'s own pool size, else 2 (exits on a clash)."""
    if args.pooled_policy is not None:
        k = pooled_policy_size(args.pooled_policy)
        if args.pool is not None and args.pool != k:
            raise SystemExit(f"--pool {args.pool}: --pooled-policy {args.pooled_policy} has pool size {k}")
        args.pool = k
    elif args.pool is None:
        args.pool = DEFAULT_POOL
    if args.pool < 2:
        raise SystemExit(f"--pool must be at least 2 (1 is the unpooled policy), got {args.pool}")


def headline(result: dict[str, Any]) -> str:
    """One line: the 7B-shape ratio and speed-up beside the paper's anchor (else the toy's figure)."""
    a = result["anchor"]
    anchor = f"paper {a['ratio_pct']:.1f} % and {a['speedup']:.1f}x (limit {a['limit']:.0f}x)"
    f = benchutil.fmt
    gpu_model = "full_model" in result and result["full_model"]["device"].startswith("cuda")
    if "7b" in result and not gpu_model:
        b = result["7b"]
        ours, pooled = b["selectors"][0], b["selectors"][-1]
        return (
            f"headline: CaCoVID policy at {b['shape']['length']} tokens costs "
            f"{f(ours['pct_of_prefill_measured'], '{:.1f}')} % of the 28-layer prefill measured "
            f"({ours['pct_of_prefill_analytic']:.1f} % analytic); prefill speed-up at "
            f"{100 * b['ratio']:g} % with selection {f(ours['speedup_with_selection_measured'], '{:.2f}')}x "
            f"measured ({f(ours['speedup_with_selection_analytic'], '{:.2f}')}x analytic) vs {anchor}; "
            f"{pooled['method']}: {f(pooled['pct_of_prefill_measured'], '{:.1f}')} %, "
            f"{f(pooled['speedup_with_selection_measured'], '{:.2f}')}x"
        )
    if "full_model" in result:
        g = result["full_model"]
        ours = g["rows"][0]
        return (
            f"headline: full {g['layers']}-layer model on {g['device_name']}: CaCoVID "
            f"{f(ours['compression_ms'], '{:.1f}')} ms vs prefill {f(g['prefill_full_ms'], '{:.1f}')} ms, "
            f"speed-up with compression {f(ours['speedup_with_compression'], '{:.2f}')}x vs {anchor}"
        )
    if "toy" in result:
        t = {r["method"]: r for r in result["toy"]["rows"]}["cacovid"]
        return (
            f"headline: toy CaCoVID selection {f(t['select_pct_of_full_prefill'], '{:.1f}')} % of the full "
            f"prefill, speed-up with selection {f(t['speedup_with_selection'], '{:.2f}')}x at "
            f"{100 * t['ratio']:g} %"
        )
    q = result["quality"]["rows"]
    return "headline: " + "; ".join(f"{r['method']} acc {f(r['accuracy'], '{:.3f}')} (n={r['n']})" for r in q)


# ---- output --------------------------------------------------------------------------------------
def _table(title: str, columns: Sequence[str], left: int = 1):
    """A table whose first `left` columns (names) are left-aligned and the rest (figures) right."""
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < left else "right")
    return table


def render(result: dict[str, Any]) -> list[Any]:
    """The tables of the parts that ran (the headline is printed after them)."""
    f = benchutil.fmt
    out: list[Any] = []
    env = result["environment"]
    if "toy" in result:
        t = result["toy"]
        table = _table(
            f"toy: selection vs prefill on {t['world']} ({t['items']} test items x {t['repeats']} repeats, "
            f"cpu float32, {env['torch_threads']} thread(s)); full prefill {f(t['full_prefill_ms'])} ms",
            [
                "method",
                "ρ",
                "kept",
                "select ms",
                "prefill ms",
                "select % of full prefill",
                "prefill x",
                "prefill x with selection",
            ],
        )
        for r in t["rows"]:
            table.add_row(
                r["method"],
                f"{r['ratio']:g}",
                f(r["kept"], "{:.0f}"),
                f(r["select_ms"]),
                f(r["prefill_ms"]),
                f(r["select_pct_of_full_prefill"], "{:.1f}"),
                f(r["prefill_speedup"], "{:.2f}"),
                f(r["speedup_with_selection"], "{:.2f}"),
            )
        failed = [f"not measured: {x['method']} @ {x['ratio']}: {x['error']}" for x in t["failed"]]
        table.caption = "\n".join(failed) or None
        out.append(table)
    if "7b" in result:
        b, s = result["7b"], result["7b"]["shape"]
        title = (
            f"7B shape: {s['frames']} frames x {s['tokens_per_frame']} + {s['text_tokens']} text = "
            f"{s['length']} tokens (kept at {100 * b['ratio']:g} %: {s['kept_length']}), "
            f"hidden {s['hidden']}, {s['layers']} layers; {b['device']} {b['dtype']}, "
            f"{env['torch_threads']} thread(s), "
            f"median of {b['repeats']} interleaved rounds"
        )
        table = _table(
            title,
            [
                "stage",
                "ms",
                "GFLOPs",
                "% prefill (ms)",
                "% prefill (FLOPs)",
                "x with selection (ms)",
                "(FLOPs)",
            ],
        )
        table.columns[0].no_wrap = True
        table.add_row(f"layer, causal, L = {s['length']}", f(b["layer_full_ms"], "{:.0f}"))
        table.add_row(f"layer, causal, L = {s['kept_length']}", f(b["layer_kept_ms"], "{:.0f}"))
        table.add_row(
            f"prefill ({s['layers']} x layer), full",
            f(b["prefill_full_ms_estimate"], "{:.0f}"),
            f"{b['prefill_full_gflops']:.4g}",
            "100.0",
            "100.0",
            "1.00",
            "1.00",
        )
        table.add_row(
            f"prefill ({s['layers']} x layer), kept",
            f(b["prefill_kept_ms_estimate"], "{:.0f}"),
            f"{b['prefill_kept_gflops']:.4g}",
            f(_div(100 * b["prefill_kept_ms_estimate"], b["prefill_full_ms_estimate"]), "{:.1f}"),
            f"{100 * b['prefill_kept_gflops'] / b['prefill_full_gflops']:.1f}",
            f(b["prefill_speedup_measured"], "{:.2f}"),
            f"{b['prefill_speedup_analytic']:.2f}",
        )
        for r in b["selectors"]:
            label = (
                "cacovid select"
                if r["method"] == "cacovid"
                else (f"{r['method']} select, L = {s['pooled_length']}")
            )
            table.add_row(
                label,
                f(r["select_ms"], "{:.0f}"),
                f"{r['gflops']:.4g}",
                f(r["pct_of_prefill_measured"], "{:.2f}"),
                f"{r['pct_of_prefill_analytic']:.2f}",
                f(r["speedup_with_selection_measured"], "{:.2f}"),
                f(r["speedup_with_selection_analytic"], "{:.2f}"),
            )
        a = result["anchor"]
        table.add_row(
            "paper, LLaVA-OV-7B",
            f"{a['compression_ms']} / {a['prefill_ms']}",
            "",
            "",
            f"{a['ratio_pct']:.2f}",
            f"{a['speedup']:.2f}",
            f"limit {a['limit']:.2f}",
        )
        verdict = "above" if b["above_threshold"] else "not above"
        table.caption = (
            f"the full-width policy is {verdict} {result['threshold_pct']:.0f} % of the prefill (measured); "
            f"pooled CaCoVID (the layer on {result['pool']}x{result['pool']} cell means) is the cheaper "
            "policy measured"
        )
        out.append(table)
    if "full_model" in result:
        g = result["full_model"]
        table = _table(
            f"full {g['layers']}-layer model on {g['device_name']} ({g['dtype']}): "
            f"prefill {g['length']} tokens "
            f"{f(g['prefill_full_ms'], '{:.1f}')} ms, {g['kept_length']} tokens "
            f"{f(g['prefill_kept_ms'], '{:.1f}')} ms ({f(g['prefill_speedup'], '{:.2f}')}x)",
            ["method", "compression ms", "% of prefill", "prefill x with compression"],
        )
        for r in g["rows"]:
            table.add_row(
                r["method"],
                f(r["compression_ms"], "{:.1f}"),
                f(r["pct_of_prefill"], "{:.2f}"),
                f(r["speedup_with_compression"], "{:.2f}"),
            )
        out.append(table)
    if "quality" in result:
        out.append(quality_table(result["quality"]))
    return out  # main prints the headline after the tables


def _pm(value: float | None, se: float | None, scale: float = 100.0, signed: bool = False) -> str:
    """`value ± se` in percent (points when `signed`), "—" for no value."""
    if value is None:
        return "—"
    text = f"{scale * value:+.1f}" if signed else f"{scale * value:.1f}"
    return text if se is None else f"{text} ± {scale * se:.1f}"


def quality_table(q: dict[str, Any]):
    """The table of `compare_quality`'s result."""
    table = _table(
        f"quality of pooled scoring: {q['items']} test items per world, ρ = {100 * q['ratio']:g} % "
        f"(± standard error; Δ: paired difference to cacovid on the same items)",
        ["world", "method", "n", "acc %", "recall %", "Δ acc points", "Δ recall points"],
        left=2,
    )
    for r in q["rows"]:
        table.add_row(
            r["world"],
            r["method"],
            str(r["n"]),
            _pm(r["accuracy"], r["accuracy_se"]),
            _pm(r["evidence_recall"], r["evidence_recall_se"]),
            _pm(r["accuracy_diff"], r["accuracy_diff_se"], signed=True),
            _pm(r["recall_diff"], r["recall_diff_se"], signed=True),
        )
    return table


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--parts", default=None, help=f"comma-separated subset of {','.join(PARTS[:3])} (default)"
    )
    ap.add_argument("--device", default="cpu", help="device of the 7B-shape parts (the toy runs on CPU)")
    ap.add_argument(
        "--dtype", default=None, choices=sorted(benchutil.DTYPES), help="default: bfloat16 on CUDA"
    )
    ap.add_argument(
        "--full-model",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the whole 28-layer model (default: on CUDA only)",
    )
    ap.add_argument("--model", default="toy", help="toy | tiny | micro | checkpoint (toy and quality parts)")
    ap.add_argument("--world", default="preset=decoys", help="synthetic world of the toy and quality parts")
    ap.add_argument("--toy-items", type=int, default=3, help="test items the toy part times")
    ap.add_argument("--toy-ratio", type=float, default=0.25, help="retention of the toy part")
    ap.add_argument("--toy-repeats", type=int, default=3, help="timed runs per toy item")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--side", type=int, default=14, help="tokens per frame side at 7B shape (14 → 196)")
    ap.add_argument("--ratio", type=float, default=0.25, help="retention of the 7B-shape parts")
    ap.add_argument(
        "--pool",
        type=int,
        default=None,
        help=f"side k of the k x k cells pooled CaCoVID's layer reads (default {DEFAULT_POOL}, or "
        "--pooled-policy's own)",
    )
    ap.add_argument(
        "--pooled-policy",
        default=None,
        help="a policy trained pooled (a policy folder of `cacovid train --pool-size K`) to run as pooled "
        "CaCoVID instead of the shipped policy rerun at --pool (at 7B shape: its pool size and terms)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds at 7B shape")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds (7B) / runs (toy) first")
    ap.add_argument(
        "--quality-worlds", default=QUALITY_WORLDS, help="';'-separated worlds of the quality part"
    )
    ap.add_argument("--quality-items", type=int, default=300, help="test items per world, quality part")
    ap.add_argument("--quality-ratio", type=float, default=0.1, help="retention of the quality part")
    ap.add_argument("--work", default=None, help="results folder of the quality part (resumable)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small 7B-like shape, 1 toy item, 4 quality items")
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    return ap


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run the parts, print their tables, write --json, then print the headline (the last line)."""
    result = benchutil.run_script(build_parser, run, render, argv, adapter)
    print(result["headline"])
    return result


if __name__ == "__main__":
    main()
