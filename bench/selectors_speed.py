"""Compression (selection) time of every registered selector and of CaCoVID, in milliseconds.

Two prompt sizes:

- `model`: one synthetic item encoded by the chosen model (`--model`, default the shipped toy if
  installed, else the same architecture with random weights): 16 frames x 49 tokens = 784 video
  tokens by default (`--world frames=…` changes it), hidden size of that model. The prompt is
  encoded once with the vision tower's attention stored, so VisionZip / FastVID use it. FastV is
  wired to the model as in evaluation (its time includes the full-length forward up to layer 2).
  CaCoVID runs an untrained policy built from the host (`CaCoVIDPolicy.from_host`): selection time
  does not depend on the weights. Its time includes the policy forward pass; the extra row
  `cacovid:select-only` times the budgeted selection (docs/method.md §3) alone from fixed scores.
- `7b`: a fake LLaVA-OneVision-7B-sized prompt built from random tensors: 32 frames x 196 tokens =
  6,272 video tokens, hidden 3,584, with ~60 text tokens around the video. FastV's ranking comes from
  a stored random vector there (no 7B model), so its `7b` time is the ranking only (marked `*`).
  CaCoVID at this size needs one Qwen2-7B-sized decoder layer (~233 M parameters, built with random
  weights): `--big-policy auto` includes it on CUDA only (a CPU forward takes tens of seconds).
  `cacovid:select-only` (from random scores) is always measured.

Each cell is the median of `--repeats` calls after `--warmup` unmeasured ones, with CUDA
synchronised around every call (`--device cuda`). CPU timings are relative: compare rows of one run.

    .venv/bin/python bench/selectors_speed.py                       # model + 7b sizes, CPU
    .venv/bin/python bench/selectors_speed.py --device cuda --dtype bfloat16 --json out/sel.json
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import benchutil
import torch
from benchutil.shapes import QWEN2_7B_TEXT, big_policy, fake_prompt

SIZES = ("model", "7b")
SELECT_ONLY = "cacovid:select-only"


class ScoresOnly:
    """CaCoVID's budgeted selection (docs/method.md §3) from fixed scores: the selection step without the
    policy forward, to separate the two parts of CaCoVID's compression time."""

    name = SELECT_ONLY

    def __init__(self, token_scores: torch.Tensor, frame_scores: torch.Tensor) -> None:
        self.token_scores = token_scores
        self.frame_scores = frame_scores

    def select(self, prompt, ratio: float, *, generator: torch.Generator | None = None):
        from cacovid.policy import budgeted_select
        from cacovid.types import Selection

        s = self.token_scores.reshape(prompt.num_frames, prompt.tokens_per_frame)
        return Selection(keep=budgeted_select(s, self.frame_scores, ratio))


def registered_names(only: Sequence[str] | None) -> list[str]:
    """Every registered selector (plus cacovid), or the `--methods` subset in that order."""
    from cacovid.selectors.registry import available_selectors

    names = [n for n in available_selectors() if n != "cacovid"] + ["cacovid"]
    if not only:
        return names
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {', '.join(names)}")
    return [n for n in names if n in only]


def model_methods(adapter, prompt, names: Sequence[str], seed: int) -> dict[str, Any]:
    """name → selector for the `model` size, wired to the adapter as evaluation wires them."""
    from cacovid.evaluate.methods import build_methods
    from cacovid.policy import CaCoVIDSelector

    out: dict[str, Any] = {}
    for m in build_methods([n for n in names if n != "cacovid"], adapter, seed=seed):
        out[m.name] = m.selector
    if "cacovid" in names:
        policy = benchutil.untrained_policy(adapter)
        out["cacovid"] = CaCoVIDSelector(policy)
        with torch.no_grad():
            scores = policy(prompt)
        out[SELECT_ONLY] = ScoresOnly(scores.token_scores, scores.frame_scores)
    return {n: out[n] for n in [*names, SELECT_ONLY] if n in out}


def fake_methods(prompt, names: Sequence[str], seed: int, policy) -> dict[str, Any]:
    """name → selector for the `7b` size (FastV ranks by a stored random vector)."""
    from cacovid.policy import CaCoVIDSelector
    from cacovid.selectors.registry import get_selector

    out: dict[str, Any] = {}
    attention = prompt.extras["vision_attention"].flip(0).contiguous()
    for name in names:
        if name == "cacovid":
            if policy is not None:
                out[name] = CaCoVIDSelector(policy)
            gen = torch.Generator().manual_seed(seed)
            s = torch.randn(prompt.num_video_tokens, generator=gen).to(prompt.inputs_embeds.device)
            u = torch.randn(prompt.num_frames, generator=gen).to(prompt.inputs_embeds.device)
            out[SELECT_ONLY] = ScoresOnly(s, u)
        elif name == "fastv":
            out[name] = get_selector("fastv", attention_fn=lambda p, a=attention: a, layer=2, num_layers=28)
        elif name == "random":
            out[name] = get_selector("random", seed=seed)
        else:
            out[name] = get_selector(name)
    return out


def time_selector(selector, prompt, ratio: float, device: torch.device, repeats: int, warmup: int, seed: int):
    """Median wall ms of `selector.select(prompt, ratio)`, and the number of kept tokens."""
    last: list[Any] = []

    def call() -> None:
        gen = torch.Generator().manual_seed(seed)
        last[:] = [selector.select(prompt, ratio, generator=gen)]  # counted after the clock stops

    times = benchutil.time_ms(call, device, repeats=repeats, warmup=warmup)
    return benchutil.median(times), min(times), int(last[0].keep.sum())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default=None, help="toy | tiny | micro | checkpoint (default: toy if installed)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(benchutil.DTYPES))
    ap.add_argument("--ratios", default="0.25,0.1")
    ap.add_argument("--sizes", default="model,7b", help="comma list of: model, 7b")
    ap.add_argument("--methods", default="", help="comma list (default: every registered selector + cacovid)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--world", default="", help="synthetic world overrides for the model size, e.g. frames=8")
    ap.add_argument("--big-frames", type=int, default=32)
    ap.add_argument(
        "--big-side", type=int, default=14, help="tokens per frame side at the 7b size (14 → 196)"
    )
    ap.add_argument("--big-hidden", type=int, default=3584)
    ap.add_argument(
        "--big-policy",
        default="auto",
        choices=("auto", "on", "off"),
        help="CaCoVID at the 7b size (auto: CUDA)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return ap


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    benchutil.setup_torch(args.threads)
    device = benchutil.resolve_device(args.device)
    dtype = benchutil.DTYPES[args.dtype]
    ratios = benchutil.parse_ratios(args.ratios)
    sizes = benchutil.parse_names(args.sizes)
    if not sizes or any(s not in SIZES for s in sizes):
        raise SystemExit(f"--sizes must list some of {SIZES}, got {args.sizes!r}")
    names = registered_names(benchutil.parse_names(args.methods))
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    shapes: dict[str, dict[str, int]] = {}
    model_name = args.model or (adapter.name_or_path if adapter is not None else benchutil.default_model())

    def measure(size: str, selectors: dict[str, Any], prompt, note: dict[str, str]) -> None:
        shapes[size] = {
            "frames": prompt.num_frames,
            "tokens_per_frame": prompt.tokens_per_frame,
            "video_tokens": prompt.num_video_tokens,
            "seq_len": int(prompt.inputs_embeds.shape[0]),
            "hidden": prompt.hidden_size,
        }
        for name, selector in selectors.items():
            for ratio in ratios:
                try:
                    med, best, kept = time_selector(
                        selector, prompt, ratio, device, args.repeats, args.warmup, args.seed
                    )
                except Exception as exc:  # a broken baseline must not hide the others' numbers
                    failed.append({"size": size, "method": name, "ratio": ratio, "error": f"{exc}"[:300]})
                    continue
                rows.append(
                    {
                        "size": size,
                        "method": name,
                        "ratio": ratio,
                        "kept": kept,
                        "median_ms": med,
                        "min_ms": best,
                        "note": note.get(name, ""),
                    }
                )

    if "model" in sizes:
        if adapter is None:
            adapter = benchutil.load_model(model_name, device, dtype)
        item = benchutil.synthetic_items(1, args.world)[0]
        with torch.no_grad():
            prompt = adapter.encode_item(item, vision_attention=True)
        measure("model", model_methods(adapter, prompt, names, args.seed), prompt, {})
    if "7b" in sizes:
        prompt = fake_prompt(
            args.big_frames, args.big_side, args.big_hidden, device=device, dtype=dtype, seed=args.seed
        )
        use_policy = "cacovid" in names and (
            args.big_policy == "on" or (args.big_policy == "auto" and device.type == "cuda")
        )
        policy = None
        if use_policy:
            text = dict(QWEN2_7B_TEXT, hidden_size=args.big_hidden)
            if args.big_hidden != QWEN2_7B_TEXT["hidden_size"]:  # keep heads dividing the hidden size
                text.update(num_attention_heads=max(1, args.big_hidden // 128), num_key_value_heads=1)
                text["intermediate_size"] = 4 * args.big_hidden
            policy = big_policy(device, dtype, text)
        note = {"fastv": "ranking only (no 2-layer forward)"}
        measure("7b", fake_methods(prompt, names, args.seed, policy), prompt, note)
        if "cacovid" in names and policy is None:
            failed.append(
                {"size": "7b", "method": "cacovid", "ratio": None, "error": "skipped (--big-policy; CPU)"}
            )
    result = {
        "benchmark": "selectors_speed",
        "model": model_name if "model" in sizes else None,
        "model_description": benchutil.describe_model(model_name) if "model" in sizes else None,
        "device": str(device),
        "dtype": args.dtype,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "shapes": shapes,
        "environment": benchutil.environment(),
        "rows": rows,
        "failed": failed,
    }
    return result


def render(result: dict[str, Any]):
    """A rich table: one row per method, one column per (size, ratio), cells in ms."""
    from rich.table import Table

    cols = sorted({(r["size"], r["ratio"]) for r in result["rows"]}, key=lambda c: (SIZES.index(c[0]), -c[1]))
    shapes = result["shapes"]
    title = (
        f"selection time, median ms ({result['device']}, {result['dtype']}, "
        f"{result['environment']['torch_threads']} thread(s), {result['repeats']} repeats)"
    )
    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("method")
    for size, ratio in cols:
        s = shapes[size]
        head = f"{size} {s['frames']}x{s['tokens_per_frame']} D={s['hidden']}\nρ={ratio:g} K={_k(s, ratio)}"
        table.add_column(head, justify="right")
    methods: list[str] = []
    for r in result["rows"]:
        if r["method"] not in methods:
            methods.append(r["method"])
    cell = {(r["method"], r["size"], r["ratio"]): r for r in result["rows"]}
    for m in methods:
        vals = []
        for size, ratio in cols:
            r = cell.get((m, size, ratio))
            vals.append("—" if r is None else benchutil.fmt(r["median_ms"]) + ("*" if r["note"] else ""))
        table.add_row(m, *vals)
    notes = {r["note"] for r in result["rows"] if r["note"]}
    if notes:
        table.caption = "* " + "; ".join(sorted(notes))
    return table


def _k(shape: dict[str, int], ratio: float) -> int:
    return max(1, math.floor(ratio * shape["video_tokens"] + 1e-9))


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run the benchmark, print its table and return the result (rows as plain dicts)."""
    args = build_parser().parse_args(argv)
    result = run(args, adapter)
    benchutil.print_table(render(result))
    for f in result["failed"]:
        print(f"not measured: {f['size']} {f['method']} @ {f['ratio']}: {f['error']}")
    benchutil.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
