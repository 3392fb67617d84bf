"""The shared helpers of the benchmark scripts in bench/ (one package, so no script imports another).

The scripts import it as a sibling (`import benchutil`): run them as `.venv/bin/python bench/<script>.py`,
which puts `bench/` on `sys.path`; the tests do the same. This module holds what every script uses
(model choice, synthetic items, shipped policies, clocks, tables, JSON); its submodules hold what a few
share:

- `benchutil.shapes`: LLaVA-OneVision-7B's shape without its weights (text config, random prompt,
  random policy, random decoder layer and language model);
- `benchutil.rl_runs`: short, identical training runs of the library's `Trainer` and their
  aggregation (the RL benchmarks).

Models (`--model`):
- `toy`: the shipped, trained toy model (`cacovid/toy/weights`); the default when it is installed;
- `tiny`: the toy architecture with random weights (`cacovid.toy.model.build_toy_model()`); the
  default when the toy weights are absent;
- `micro`: an even smaller random LLaVA-OneVision (text hidden 64, 2 layers), for smoke tests;
- anything else: a checkpoint directory or hub id for `cacovid.models.load_video_llm`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

MICRO_SIZES = dict(text_hidden=64, text_layers=2, heads=4, kv_heads=2, vision_hidden=64, vision_layers=2)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---- environment ---------------------------------------------------------------------------------
def setup_torch(threads: int) -> None:
    """Pin the thread count (the benchmarks share the machine; timings need a fixed setting)."""
    if threads > 0:
        torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but CUDA is not available here")
    return device


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so a clock read covers it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_floats(text: str) -> list[float]:
    values = [float(s) for s in text.split(",") if s.strip()]
    if not values:
        raise SystemExit(f"expected a comma-separated list of numbers, got {text!r}")
    return values


def parse_ratios(text: str, option: str = "--ratios") -> list[float]:
    """Retention ratios by the package's one parser (`cacovid.types.parse_ratios`); exits on a bad list."""
    from cacovid.types import parse_ratios as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise SystemExit(f"{option}: {exc}") from None


def parse_names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


# ---- models and items ----------------------------------------------------------------------------
def toy_installed() -> bool:
    from cacovid.models import toy_weights_dir

    return (toy_weights_dir() / "config.json").is_file()


def default_model() -> str:
    """ "toy" when the trained toy weights are installed, else "tiny" (same architecture, random)."""
    return "toy" if toy_installed() else "tiny"


def describe_model(name: str) -> str:
    return {
        "toy": "toy (shipped trained weights)",
        "tiny": "tiny random LLaVA-OneVision (toy architecture, untrained)",
        "micro": "micro random LLaVA-OneVision (hidden 64, 2 layers, untrained)",
    }.get(name, name)


def load_model(name: str, device: torch.device, dtype: torch.dtype = torch.float32):
    """The adapter for `--model` (see the module docstring)."""
    from cacovid.models import LlavaOneVisionVideoLLM, load_video_llm

    if name in ("tiny", "micro"):
        from cacovid.testing.tiny import tiny_llava_onevision
        from cacovid.toy.model import build_toy_model, toy_vocabulary

        if name == "tiny":
            model, processor = build_toy_model()
        else:
            model, processor = tiny_llava_onevision(toy_vocabulary(), seed=0, **MICRO_SIZES)
        model.to(device=device, dtype=dtype)
        return LlavaOneVisionVideoLLM(model, processor, name_or_path=name)
    return load_video_llm(name, device=device, dtype=dtype)


def synthetic_items(n: int, world: str | None = None, split: str = "test") -> list:
    """The first `n` items of a synthetic split (`world`: overrides such as "frames=4")."""
    from cacovid.data.sources import synthetic_source

    return list(synthetic_source(world or None, split, n).items())


def untrained_policy(adapter):
    """A fresh CaCoVID policy for `adapter` (its first layer copied, new heads), on its device."""
    from cacovid.policy import CaCoVIDPolicy

    return CaCoVIDPolicy.from_host(adapter).to(adapter.device).eval()


# ---- shipped policies ----------------------------------------------------------------------------
# Selectors left out of the pre-LLM comparisons: evidence-reading, in-LLM, and the method itself.
EXCLUDED = ("oracle", "fastv", "cacovid")


def world_preset(world: str) -> str:
    """The `preset=` of a world string; a world without one has no shipped policy to evaluate."""
    from cacovid.data.synthetic.config import PRESETS, parse_world_overrides

    preset = parse_world_overrides(world).get("preset")
    if preset not in PRESETS:
        raise SystemExit(f"world {world!r} names no preset ({', '.join(sorted(PRESETS))})")
    return preset


def policy_dir(preset: str) -> Path:
    """The folder of the policy shipped for `preset` (exits when it is not installed)."""
    from cacovid.cli.demo import shipped_policy_dir

    path = shipped_policy_dir(preset)
    if not (path / "config.json").is_file():
        raise SystemExit(f"no shipped policy for preset {preset!r} at {path}")
    return path


def baseline_names() -> list[str]:
    """Every registered pre-LLM selector CaCoVID is compared with (all but `EXCLUDED`)."""
    from cacovid.selectors.registry import available_selectors

    return [n for n in available_selectors() if n not in EXCLUDED]


# ---- clocks --------------------------------------------------------------------------------------
def time_ms(fn: Callable[[], Any], device: torch.device, *, repeats: int, warmup: int) -> list[float]:
    """Wall times (ms) of `repeats` calls of `fn` after `warmup` unmeasured ones, device-synchronised."""
    if repeats < 1 or warmup < 0:
        raise SystemExit(f"need --repeats >= 1 and --warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


# ---- output --------------------------------------------------------------------------------------
def fmt(x: float | None, spec: str = "{:.2f}") -> str:
    return "—" if x is None else spec.format(x)


def print_table(table: Any) -> None:
    """Print a rich table wide enough not to wrap (benchmark tables are read from logs). Markup and
    emoji codes are off: item ids such as "synthetic:train:0" must print as they are."""
    from rich.console import Console

    console = Console(width=max(120, _min_width(table)), markup=False, emoji=False, highlight=False)
    console.print(table)


def print_parts(parts: Sequence[Any]) -> None:
    """Print a script's output in order: strings as lines, anything else as a table."""
    for part in parts:
        if isinstance(part, str):
            print(part)
        else:
            print_table(part)


def _min_width(table: Any) -> int:
    return sum(max(len(str(c.header)), 8) + 3 for c in table.columns)


def write_json(path: str | Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")


def add_synthetic_args(ap: Any, *, split: str = "val", threads: int = 2) -> None:
    """The options every script that evaluates on synthetic items shares: model, split, world,
    threads, JSON output (one definition, so their names and help stay the same everywhere)."""
    ap.add_argument(
        "--model", default=None, help="toy | tiny | micro | checkpoint (default: toy if installed)"
    )
    ap.add_argument("--split", default=split, help="synthetic split the items come from")
    ap.add_argument("--world", default="", help="synthetic world overrides, e.g. frames=8")
    ap.add_argument("--threads", type=int, default=threads, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")


def run_script(
    build_parser: Callable[[], Any],
    run: Callable[[Any, Any], dict[str, Any]],
    render: Callable[[dict[str, Any]], Any],
    argv: Sequence[str] | None,
    adapter: Any = None,
) -> dict[str, Any]:
    """A script's `main`: parse `argv`, run, print its table(s), write `--json`, return the result."""
    args = build_parser().parse_args(argv)
    result = run(args, adapter)
    tables = render(result)
    for table in tables if isinstance(tables, list | tuple) else [tables]:
        print_table(table)
    write_json(args.json, result)
    return result


def environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
