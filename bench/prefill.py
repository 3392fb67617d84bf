"""What compression saves end to end: selection, vision encoder, prefill, TTFT, FLOPs and memory.

A thin wrapper around `cacovid.evaluate.efficiency.measure_efficiency` (the same code `cacovid eval
--efficiency` runs) for methods full, random, uniform, divprune and cacovid at retention 0.25, 0.15,
0.1 and 0.05 on a few synthetic items. Per (method, ratio) it prints

- selection ms (`compression_ms`; CaCoVID: policy forward + budgeted selection),
- vision ms (the model's `get_video_features`: vision tower + projector + pooling) and encode ms,
- prefill ms (one language-model forward over the kept sequence to the first answer logits),
- TTFT ms (encode + selection + prefill, end to end),
- analytic prefill FLOPs, peak memory of the prefill and its increase over the memory before it,
- ratios to the uncompressed model (`full`): prefill and TTFT speed-ups, FLOPs fraction, and the
  selection time as a fraction of the full prefill.

CaCoVID uses `--policy DIR` (a saved policy) or else an untrained policy built from the host: its
timing does not depend on training. Times are medians over repeats (after warm-up) per item, then
over items. On CPU, memory is the sampled process RSS (coarse) and timings are relative.

    .venv/bin/python bench/prefill.py --items 3
    .venv/bin/python bench/prefill.py --model /ckpt/llava-onevision-7b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import benchutil
import torch

DEFAULT_METHODS = "full,random,uniform,divprune,cacovid"


def build_methods(adapter, names: Sequence[str], policy_dir: str | None, seed: int) -> list:
    """Runnable methods; `cacovid` from `policy_dir` or an untrained policy built from the host."""
    from cacovid.evaluate.methods import Method
    from cacovid.evaluate.methods import build_methods as eval_methods
    from cacovid.policy import CaCoVIDPolicy, CaCoVIDSelector

    others = eval_methods([n for n in names if n != "cacovid"], adapter, seed=seed)
    by_name = {m.name: m for m in others}
    if "cacovid" in names:
        if policy_dir:
            policy = CaCoVIDPolicy.from_pretrained(policy_dir, host=adapter).to(adapter.device).eval()
        else:
            policy = benchutil.untrained_policy(adapter)
        by_name["cacovid"] = Method("cacovid", CaCoVIDSelector(policy))
    return [by_name[n] for n in names]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default=None, help="toy | tiny | micro | checkpoint (default: toy if installed)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(benchutil.DTYPES))
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--ratios", default="0.25,0.15,0.1,0.05")
    ap.add_argument("--items", type=int, default=3, help="synthetic test items timed")
    ap.add_argument("--world", default="", help="synthetic world overrides, e.g. frames=32")
    ap.add_argument("--policy", default=None, help="saved CaCoVID policy (default: untrained, from the host)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write DIR/efficiency.json (measure_efficiency's file)")
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    return ap


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    from cacovid.evaluate.efficiency import measure_efficiency

    benchutil.setup_torch(args.threads)
    device = benchutil.resolve_device(args.device)
    dtype = benchutil.DTYPES[args.dtype]
    names = benchutil.parse_names(args.methods)
    if not names:
        raise SystemExit("--methods is empty")
    if args.items < 1:
        raise SystemExit("--items must be >= 1")
    model_name = args.model or (adapter.name_or_path if adapter is not None else benchutil.default_model())
    if adapter is None:
        adapter = benchutil.load_model(model_name, device, dtype)
    items = benchutil.synthetic_items(args.items, args.world)
    methods = build_methods(adapter, names, args.policy, args.seed)
    with torch.no_grad():
        result = measure_efficiency(
            adapter,
            items,
            methods,
            benchutil.parse_ratios(args.ratios),
            repeats=args.repeats,
            warmup=args.warmup,
            seed=args.seed,
            model=model_name,
            out=args.out,
        )
    result["benchmark"] = "prefill"
    result["model_description"] = benchutil.describe_model(model_name)
    result["policy"] = args.policy or "untrained (from host)"
    result["world"] = args.world or "default"
    return result


def render(result: dict[str, Any]):
    from rich.table import Table

    f = benchutil.fmt
    title = (
        f"prefill efficiency — {result['model']} on {result['device']} ({result['dtype']}, "
        f"{result['torch_threads']} thread(s)), {result['n_items']} item(s) × {result['repeats']} repeats; "
        f"memory: {result['memory_kind']}"
    )
    table = Table(title=title, min_width=len(title) + 4)
    heads = [
        "method",
        "ρ",
        "kept",
        "seq",
        "select ms",
        "vision ms",
        "encode ms",
        "prefill ms",
        "TTFT ms",
        "GFLOPs",
        "peak MB",
        "Δ MB",
        "prefill ×",
        "TTFT ×",
        "FLOPs %",
        "select/full prefill",
    ]
    for i, h in enumerate(heads):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in result["rows"]:
        flops_frac = r.get("flops_fraction")
        comp_frac = r.get("compression_fraction_of_full_prefill")
        table.add_row(
            r["method"],
            f"{r['ratio']:g}",
            f(r["kept_tokens"], "{:.0f}"),
            f(r["seq_len"], "{:.0f}"),
            f(r["compression_ms"]),
            f(r["vision_encoder_ms"]),
            f(r["encode_ms"]),
            f(r["prefill_ms"]),
            f(r["ttft_ms"]),
            f(r["prefill_flops"] / 1e9 if r["prefill_flops"] is not None else None, "{:.3f}"),
            f(r["peak_memory_mb"], "{:.0f}"),
            f(r["peak_memory_delta_mb"], "{:.1f}"),
            f(r.get("prefill_speedup"), "{:.2f}×"),
            f(r.get("ttft_speedup"), "{:.2f}×"),
            f(None if flops_frac is None else 100 * flops_frac, "{:.1f}"),
            f(None if comp_frac is None else 100 * comp_frac, "{:.1f}%"),
        )
    return table


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run the benchmark, print its table and return measure_efficiency's result."""
    args = build_parser().parse_args(argv)
    result = run(args, adapter)
    benchutil.print_table(render(result))
    for failed in result["failed"]:
        print(f"not measured: {failed['method']} @ {failed['ratio']}: {failed['error']}")
    benchutil.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
