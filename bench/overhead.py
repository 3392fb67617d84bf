"""The cost of selection against the language model's prefill, per method, on the toy and at 7B shape.

Token compression pays only if the prefill it saves exceeds what choosing the tokens costs. CaCoVID's
policy is one full-width decoder layer of the host over the whole prompt: at LLaVA-OneVision-7B shape
that is about 1/28 of the 28-layer prefill before any token is dropped. The paper's anchor is 11.2 ms
of compression against a 200.4 ms prefill (5.6 %), a 3.1x prefill speed-up at 25 % with the selection
counted, where dropping 75 % of the video tokens alone gives at most 4x. Four parts, one run:

- `toy`: every pre-LLM selector the harness evaluates (as `bench/quality.py`: all registered ones but
  the oracle and FastV), CaCoVID with the shipped policy of `--world`'s preset and its pooled variants,
  on a few synthetic test items of the shipped toy model (`cacovid.evaluate.efficiency`, the code of
  `cacovid eval --efficiency`): selection ms against the prefill ms at full length and at the kept
  ratio, and the prefill speed-up with and without the selection counted.
- `7b`: LLaVA-OneVision-7B's language model shape (`benchutil.shapes`) over 32 frames x 196 tokens +
  62 text tokens, random weights. One causal decoder layer (sdpa) is timed at full length and at the
  kept length; the prefill is 28 x that layer (the LM head on one position is left out). CaCoVID's
  selection (the policy around one such layer, bidirectional, its heads, the per-token terms of
  `--world`'s shipped policy, and the budgeted selection) and the pooled variants are timed in the
  same rounds, interleaved, so the ratios hold on a noisy machine. Beside every time, the analytic
  FLOPs (`cacovid.evaluate.efficiency`; the prefill causal, the policy's layer the full square).
- `quality`: for each of `--quality-worlds`, the shipped policy of its preset against its pooled
  variants on the same test items at one ratio, through the evaluation harness
  (`benchutil.pooled_policy.compare_quality`).
- `full-model` (default on CUDA only): the whole 28-layer 7B-shaped language model in `--dtype`
  (bfloat16 on CUDA): compression ms, prefill ms at 100 % and at the kept ratio, the prefill speed-up
  with the compression counted.

The pooled variants are a prototype (`benchutil/pooled_policy.py`): `cacovid-pool2` scores 2 x 2
spatial cell means and broadcasts each cell's score to its members; `cacovid-pool2+terms` also
recomputes the per-token terms, which need no decoder layer, on the full grid. They keep the trained
weights, so they are the cheaper policy measured whatever the full policy's share; the output says
whether the full one stays above 3 % of the prefill.

The last printed line is the headline: the policy-to-prefill ratio at 7B shape (measured and analytic)
and the implied 25 % prefill speed-up with the selection counted, beside the paper's anchor, and the
same two figures for the last pooled variant.

    nice .venv/bin/python bench/overhead.py --json overhead.json        # CPU, about 10 min
    .venv/bin/python bench/overhead.py --device cuda --parts 7b,full-model   # 7B shape on a GPU, bf16
    .venv/bin/python bench/overhead.py --quick                          # small shapes, seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import benchutil
import torch
from benchutil.pooled_policy import (
    PooledCaCoVIDSelector,
    compare_quality,
    pool_prompt,
    pooled_variants,
    quality_table,
)
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


def policy_flops(policy, config: dict[str, Any], prompt) -> float:
    """Analytic FLOPs of one policy forward on `prompt`: its bidirectional layer (the full square), its
    heads and its terms; norms and the frame mean are O(L·D) and left out, as in `layer_flops`."""
    from cacovid.evaluate.efficiency import layer_flops

    length = int(prompt.inputs_embeds.shape[0])
    heads = head_flops(policy, prompt.num_video_tokens, prompt.num_frames)
    return layer_flops(config, length) + heads + term_flops(policy, prompt)


def selector_flops(selector, config: dict[str, Any], prompt) -> float:
    """Analytic FLOPs of a CaCoVID selector (plain or pooled) on `prompt`."""
    if not isinstance(selector, PooledCaCoVIDSelector):
        return policy_flops(selector.policy, config, prompt)
    policy = selector.base.policy
    pooled, _ = pool_prompt(prompt, selector.k)
    terms = term_flops(policy, prompt) if selector.full_resolution_terms else 0.0
    return policy_flops(policy, config, pooled) + terms


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
    from cacovid.evaluate.methods import Method

    methods, base = shipped_selector(adapter, args.world, args.seed)
    methods += [Method(p.name, p) for p in pooled_variants(base, args.pool)]
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
def shipped_terms(world: str) -> dict[str, Any]:
    """The per-token terms of the world's shipped policy (question match, context, novelty prior), so
    the 7B-shape policy is timed with the parts the quality figures come from."""
    from cacovid.policy.config import PolicyConfig

    config = PolicyConfig.load(benchutil.policy_dir(benchutil.world_preset(world)) / "config.json")
    return {k: getattr(config, k) for k in ("question_match_dim", "context_width", "novelty_weight")}


def seven_b_selectors(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """The 7B-shape text config, a random prompt of LLaVA-OneVision's layout, the kept length at
    `--ratio`, and the selectors timed on it by name: CaCoVID (one random Qwen2-7B-sized layer, heads
    and the terms of the world's shipped policy) and its pooled variants."""
    from cacovid.policy import CaCoVIDSelector
    from cacovid.types import token_budget

    config = text_config(args.quick)
    frames, side = (QUICK["frames"], QUICK["side"]) if args.quick else (args.frames, args.side)
    prompt = fake_prompt(
        frames, side, int(config["hidden_size"]), prefix=PREFIX, suffix=SUFFIX, device=device, dtype=dtype
    )
    length, n_video = int(prompt.inputs_embeds.shape[0]), prompt.num_video_tokens
    kept_length = length - n_video + token_budget(n_video, args.ratio)
    terms = shipped_terms(args.world)
    torch.manual_seed(args.seed)
    base = CaCoVIDSelector(big_policy(device, dtype, config, **terms))
    selectors: dict[str, Any] = {"cacovid": base}
    for pooled in pooled_variants(base, args.pool, with_terms=any(terms.values())):
        selectors[pooled.name] = pooled
    return config, prompt, kept_length, terms, selectors


def seven_b_part(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    from cacovid.evaluate.efficiency import prefill_flops

    config, prompt, kept_length, terms, selectors = seven_b_selectors(args, device, dtype)
    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    length, n_video = int(prompt.inputs_embeds.shape[0]), prompt.num_video_tokens
    frames, side = prompt.num_frames, prompt.video_grid[1]
    pooled_prompt, _ = pool_prompt(prompt, args.pool)
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
        "policy_terms": terms,
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
    if args.pool < 2:
        raise SystemExit(f"--pool must be at least 2 (1 is the unpooled policy), got {args.pool}")
    result: dict[str, Any] = {
        "benchmark": "overhead",
        "quick": bool(args.quick),
        "parts": parts,
        "pool": args.pool,
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
                ratio=args.quality_ratio,
                items=args.quality_items,
                seed=args.seed,
                model=args.model,
                work=args.work,
            )
        result["seconds"][part] = time.perf_counter() - start
    result["headline"] = headline(result)
    return result


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
            f"pooled scoring ({result['pool']}x{result['pool']} cells) is the cheaper policy measured"
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
    ap.add_argument("--pool", type=int, default=2, help="side k of the k x k cells the pooled policy scores")
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
