"""Peak memory and time of CaCoVID selection at LLaVA-OneVision-7B shape, and what attention it holds.

CaCoVID adds one thing before the language model: the policy (one copied decoder layer, run
bidirectionally with sdpa, and two small heads) followed by the budgeted selection. This script builds
that policy around one randomly initialised Qwen2-7B-sized decoder layer (text hidden 3584, 28 heads,
4 KV heads, intermediate 18944) and a random prompt of LLaVA-OneVision's layout (32 frames x 196 tokens
+ 62 text tokens = 6334 positions), then measures, per stage,

- `policy forward`: `policy(prompt)` under `torch.no_grad()`,
- `budgeted selection`: `budgeted_select` from fixed scores (no forward),
- `cacovid select`: `CaCoVIDSelector.select` (forward + selection, what `compression_ms` covers),

as median wall ms and peak memory: on CUDA `torch.cuda.max_memory_allocated` (peak and its increase
over the memory in use before the stage); on CPU the sampled process RSS (`cacovid.evaluate.efficiency.
peak_memory`, coarse: the allocator may keep freed memory). Beside it the sizes that tell whether an
attention map is materialised: the policy's weights, the prompt, the (B, 1, L, L) additive padding mask
the layer receives, and the (heads, L, L) probability map an eager layer would hold. A stage whose peak
increase stays below that map did not build one.

    .venv/bin/python bench/selection_memory.py                      # 7B shape, CPU, float32 (~minutes)
    .venv/bin/python bench/selection_memory.py --device cuda        # 7B shape, bfloat16 on the GPU
    .venv/bin/python bench/selection_memory.py --quick              # small shape, seconds
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import benchutil
import torch
from benchutil.shapes import PREFIX, QUICK, SUFFIX, big_policy, fake_prompt, text_config

# Below this size an eager map is lost in the memory reading's noise (RSS pages, allocator caches).
MIN_MAP_MB = 64.0
STAGES = ("policy forward", "budgeted selection", "cacovid select")


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def attention_sizes(config: dict[str, Any], length: int, dtype: torch.dtype) -> dict[str, float]:
    """MB of the (1, 1, L, L) additive mask the policy layer gets and of the (heads, L, L) map an eager
    attention layer would materialise (FastV's ranking layer holds one of these per eager layer)."""
    item = torch.empty((), dtype=dtype).element_size()
    heads = int(config["num_attention_heads"])
    return {
        "mask_mb": length * length * item / 2**20,
        "eager_map_mb": heads * length * length * item / 2**20,
    }


def measure(fn, device: torch.device, repeats: int, warmup: int) -> dict[str, float | None]:
    """Median and best wall ms of `fn` and the peak memory of one further call."""
    from cacovid.evaluate.efficiency import peak_memory

    times = benchutil.time_ms(fn, device, repeats=repeats, warmup=warmup)
    with peak_memory(device) as mem:
        fn()
    return {"ms": benchutil.median(times), "best_ms": min(times), **mem}


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    from cacovid.evaluate.efficiency import memory_kind
    from cacovid.policy import CaCoVIDSelector, budgeted_select

    del adapter  # the script builds its own random policy; no video LLM is loaded
    benchutil.setup_torch(args.threads)
    device = benchutil.resolve_device(args.device)
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = benchutil.DTYPES[dtype_name]
    config = text_config(args.quick)
    frames = QUICK["frames"] if args.quick else args.frames
    side = QUICK["side"] if args.quick else args.side
    torch.manual_seed(args.seed)
    policy = big_policy(device, dtype, config)
    prompt = fake_prompt(
        frames, side, int(config["hidden_size"]), prefix=PREFIX, suffix=SUFFIX, device=device, dtype=dtype
    )
    length = int(prompt.inputs_embeds.shape[0])
    selector = CaCoVIDSelector(policy)
    with torch.no_grad():
        out = policy(prompt)
    scores = out.token_scores.reshape(prompt.num_frames, prompt.tokens_per_frame)

    def forward() -> None:
        with torch.no_grad():
            policy(prompt)

    calls = {
        "policy forward": forward,
        "budgeted selection": lambda: budgeted_select(scores, out.frame_scores, args.ratio),
        "cacovid select": lambda: selector.select(prompt, args.ratio),
    }
    sizes = attention_sizes(config, length, dtype)
    rows = []
    for stage in STAGES:
        got = measure(calls[stage], device, args.repeats, args.warmup)
        rows.append({"stage": stage, **got})
    select_row = rows[-1]
    delta, map_mb = select_row["delta_mb"], sizes["eager_map_mb"]
    materialised = None if delta is None or map_mb < MIN_MAP_MB else bool(delta >= map_mb)
    return {
        "device": str(device),
        "dtype": dtype_name,
        "memory_kind": memory_kind(device),
        "quick": bool(args.quick),
        "shape": {
            "frames": frames,
            "tokens_per_frame": side * side,
            "video_tokens": prompt.num_video_tokens,
            "text_tokens": length - prompt.num_video_tokens,
            "length": length,
            "hidden": int(config["hidden_size"]),
            "heads": int(config["num_attention_heads"]),
            "kv_heads": int(config["num_key_value_heads"]),
            "intermediate": int(config["intermediate_size"]),
        },
        "ratio": args.ratio,
        "kept": int(selector.select(prompt, args.ratio).keep.sum()),
        "attn_implementation": policy.config.attn_implementation,
        "weights_mb": sum(_bytes(p) for p in policy.parameters()) / 2**20,
        "prompt_mb": _bytes(prompt.inputs_embeds) / 2**20,
        **sizes,
        "attention_map_materialised": materialised,
        "rows": rows,
        "environment": benchutil.environment(),
    }


def render(result: dict[str, Any]):
    from rich.table import Table

    s = result["shape"]
    title = (
        f"CaCoVID selection memory: {s['frames']} frames x {s['tokens_per_frame']} + {s['text_tokens']} text "
        f"= {s['length']} tokens, hidden {s['hidden']}, {result['device']} {result['dtype']}, "
        f"memory {result['memory_kind']}"
    )
    table = Table(title=title)
    for col in ("stage", "median ms", "best ms", "peak MB", "increase MB"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for r in result["rows"]:
        table.add_row(
            r["stage"],
            benchutil.fmt(r["ms"], "{:.1f}"),
            benchutil.fmt(r["best_ms"], "{:.1f}"),
            benchutil.fmt(r["peak_mb"], "{:.0f}"),
            benchutil.fmt(r["delta_mb"], "{:.0f}"),
        )
    sizes = Table(title="sizes (MB)")
    for col in ("policy weights", "prompt embeds", "padding mask (L x L)", "eager map (heads x L x L)"):
        sizes.add_column(col, justify="right")
    sizes.add_row(*(f"{result[k]:.0f}" for k in ("weights_mb", "prompt_mb", "mask_mb", "eager_map_mb")))
    select_row = result["rows"][-1]
    verdict = {
        True: "an attention map WAS materialised",
        False: "no attention map materialised",
        None: "too small to tell whether an attention map is materialised",
    }
    increase = benchutil.fmt(select_row["delta_mb"], "{:.0f}")
    headline = (
        f"CaCoVID select at {s['length']} tokens ({result['device']}, {result['dtype']}, "
        f"{result['attn_implementation']}): {benchutil.fmt(select_row['ms'], '{:.0f}')} ms, "
        f"+{increase} MB over {result['weights_mb']:.0f} MB of weights; "
        f"{verdict[result['attention_map_materialised']]} (an eager one: {result['eager_map_mb']:.0f} MB)"
    )
    return [table, sizes, headline]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--dtype", default=None, choices=sorted(benchutil.DTYPES), help="default: bfloat16 on CUDA, float32"
    )
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--side", type=int, default=14, help="tokens per frame side (14 → 196)")
    ap.add_argument("--ratio", type=float, default=0.1, help="retention ratio of the selection")
    ap.add_argument("--quick", action="store_true", help=f"small shape {QUICK} (smoke test)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    return ap


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Parse `argv`, measure, print the tables and then the headline (the last line), write --json."""
    args = build_parser().parse_args(argv)
    result = run(args, adapter)
    *tables, headline = render(result)
    for table in tables:
        benchutil.print_table(table)
    print(headline)
    result["headline"] = headline
    benchutil.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
