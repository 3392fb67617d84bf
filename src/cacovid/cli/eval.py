"""`cacovid eval` and `cacovid report`: evaluate token selectors on a video LLM, then report.

`eval` runs {methods} × {ratios} × {items} through `cacovid.evaluate.harness` into `--out DIR`
(items.jsonl, run.json, summary.json; resumable: run the same command again to finish an interrupted
run), optionally measures efficiency (efficiency.json) and writes the report. `report` turns any
results directory into report.md + PNGs.

Under `accelerate launch --num_processes N` (or `torchrun`) `eval` splits the items round-robin
across N processes; process 0 gathers the rows into the one results directory and alone measures
efficiency and writes the report (docs/scale-out.md).

The commands are plain functions (`eval_command`, `report_command`) so the main app can mount them
with `app.command("eval")(eval_command)`; `app` here is a stand-alone Typer app holding both.
Heavy imports (torch, transformers) happen inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

_WORLD_HELP = (
    "World KEY=VALUE[,KEY=VALUE…] (--data synthetic only); default preset=decoys, whose values other "
    "keys change (frames=32); preset=classic[,KEY=VALUE…] for the classic world"
)


def parse_ratios(text: str) -> list[float]:
    """`cacovid.types.parse_ratios` with its message as a --ratios usage error."""
    from cacovid.types import parse_ratios as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ratios") from None


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _dtype(name: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise typer.BadParameter(f"dtype must be one of {', '.join(table)}", param_hint="--dtype")
    return table[name]


def _attn_implementation(name: str | None) -> str | None:
    """--attn-implementation checked (known kernel, package installed) before any weights load."""
    from cacovid.models.options import check_attn_implementation

    try:
        return check_attn_implementation(name or None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--attn-implementation") from None


def _device_map(text: str | None):
    """--device-map: a strategy ("auto", …), a device, or a JSON object of module → device."""
    from cacovid.models.options import parse_device_map

    try:
        return parse_device_map(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device-map") from None


def _summary_table(summary: dict):
    """The summary as a compact rich table (fits 80 columns)."""
    from rich import box
    from rich.table import Table

    title = f"{summary.get('model')} on {summary.get('dataset')} ({summary.get('n_items')} items)"
    table = Table(
        title=title,
        caption="err = pipeline errors + unparsable answers (both count as wrong)",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
    )
    for col in ("method", "ratio", "FLOP-eq", "n", "acc%", "%full", "recall%", "kept", "ms", "err"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)

    def fmt(x, spec="{:.1f}", scale=1.0):
        return "–" if x is None else spec.format(scale * x)

    for r in summary["rows"]:
        table.add_row(
            r["method"],
            f"{100 * r['ratio']:g}%",
            fmt(r.get("flop_equivalent_ratio"), "{:.0f}%", 100),
            str(r["n"]),
            fmt(r["accuracy"], scale=100),
            fmt(r.get("pct_of_full")),
            fmt(r.get("evidence_recall"), scale=100),
            fmt(r.get("kept_tokens_mean"), "{:.0f}"),
            fmt(r.get("compression_ms"), "{:.1f}"),
            f"{r.get('n_errors', 0)}+{r.get('n_unparsable', 0)}",
        )
    return table


MAX_PRINTED_VALUES = 12  # a category axis with more values is left to report.md and summary.json


def _category_tables(summary: dict) -> list:
    """One compact rich table per category axis of a benchmark run (accuracy % per value), or a
    line pointing to report.md for an axis too wide to print (MVBench's 20 tasks)."""
    from rich import box
    from rich.table import Table

    from cacovid.evaluate.report import category_cells, shown_category_axes

    out: list = []
    for axis in shown_category_axes(summary):
        head, rows = category_cells(summary, axis)
        if len(head) - 3 > MAX_PRINTED_VALUES:
            out.append(f"accuracy per {axis}: {len(head) - 3} values, see report.md and summary.json")
            continue
        table = Table(title=f"accuracy % per {axis}", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
        for i, col in enumerate(head):
            table.add_column(col, justify="left" if i == 0 else "right")
        for cells in rows:
            table.add_row(*cells)
        out.append(table)
    return out


def eval_command(
    model: Annotated[
        str, typer.Option("--model", help='Video LLM: "toy" or a checkpoint directory / hub id.')
    ] = "toy",
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help='"synthetic", a Video-R1 style JSON file, or a benchmark as NAME:ROOT (videomme, '
            "videomme-short|medium|long, mlvu-dev, mlvu-test, longvideobench, mvbench, egoschema; "
            "docs/benchmarks.md).",
        ),
    ] = "synthetic",
    split: Annotated[str, typer.Option("--split", help="Synthetic split: train, val or test.")] = "test",
    world: Annotated[str, typer.Option("--world", help=_WORLD_HELP)] = "",
    methods: Annotated[
        str, typer.Option("--methods", help='Comma list of selector names, or "all".')
    ] = "all",
    ratios: Annotated[
        str, typer.Option("--ratios", help="Comma list of retention ratios in (0, 1].")
    ] = "0.25,0.1",
    n: Annotated[
        int | None,
        typer.Option("--n", min=1, help="Items: the first n (default 100 synthetic, a whole file)."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Saved CaCoVID policy (needed for cacovid).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Results directory (resumed if it exists).")] = Path(
        "eval-results"
    ),
    efficiency: Annotated[
        bool, typer.Option("--efficiency/--no-efficiency", help="Also write efficiency.json.")
    ] = True,
    efficiency_items: Annotated[
        int, typer.Option("--efficiency-items", min=1, help="Items timed for efficiency.")
    ] = 3,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Timed repeats per (method, ratio, item).")
    ] = 5,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Items per batched generate call.")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Greedy answer length.")] = 8,
    references: Annotated[
        bool, typer.Option("--references/--no-references", help="Add full, blind, oracle.")
    ] = True,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="Recompute rows that hit a pipeline error.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help='"auto", "cpu", "cuda", "cuda:1", …')] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = "float32",
    attn_implementation: Annotated[
        str | None,
        typer.Option(
            "--attn-implementation",
            help="Attention kernel: eager, sdpa, flash_attention_2 (needs flash-attn); default: "
            "transformers'.",
        ),
    ] = None,
    device_map: Annotated[
        str | None,
        typer.Option(
            "--device-map",
            help='from_pretrained device map: "auto", a device, or a JSON object; replaces --device '
            "for the model's weights.",
        ),
    ] = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Write report.md and PNGs at the end.")
    ] = True,
    fastv_layer: Annotated[
        int,
        typer.Option(
            "--fastv-layer", min=0, help="Decoder layer whose last-token attention ranks tokens for fastv."
        ),
    ] = 2,
) -> None:
    """Evaluate methods × ratios × items; write items.jsonl, summary.json (and efficiency.json)."""
    options = dict(locals())  # the command's options, passed on as they are
    from cacovid.distributed import joined, process_device

    with joined(_device(device)) as processes:
        _evaluate(**options, processes=processes, load_device=process_device(_device(device), processes))


def _evaluate(
    *,
    model: str,
    data: str,
    split: str,
    world: str,
    methods: str,
    ratios: str,
    n: int | None,
    policy: Path | None,
    out: Path,
    efficiency: bool,
    efficiency_items: int,
    repeats: int,
    batch_size: int,
    seed: int,
    max_new_tokens: int,
    references: bool,
    retry_errors: bool,
    device: str,
    dtype: str,
    attn_implementation: str | None,
    device_map: str | None,
    report: bool,
    fastv_layer: int,
    processes,
    load_device: str,
) -> None:
    """`eval_command` on one process of the run (process 0 prints, measures and reports)."""
    from rich.console import Console

    from cacovid.data.sources import source_from_args
    from cacovid.evaluate import EvalConfig, Harness, build_methods, measure_efficiency, parse_methods
    from cacovid.evaluate.harness import item_progress
    from cacovid.evaluate.report import build_report
    from cacovid.models import load_video_llm
    from cacovid.progress import Progress

    console = Console(quiet=not processes.is_main)
    if processes.distributed:
        console.print(f"{processes.world_size} processes; items split round-robin (docs/scale-out.md)")
    ratio_list = parse_ratios(ratios)
    try:
        names = parse_methods(methods, references=references, policy=policy is not None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--methods") from exc
    try:
        source = source_from_args(data, split=split, world=world or None, n=n)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--data/--world/--split") from exc
    torch_dtype = _dtype(dtype)
    attn = _attn_implementation(attn_implementation)
    placement = _device_map(device_map)
    try:
        adapter = load_video_llm(
            model, device=load_device, dtype=torch_dtype, attn_implementation=attn, device_map=placement
        )
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot load model {model!r}:[/red] {exc}")
        raise typer.Exit(1) from exc
    try:
        built = build_methods(
            names, adapter, policy=str(policy) if policy else None, seed=seed, fastv_layer=fastv_layer
        )
        config = EvalConfig(
            ratios=ratio_list,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            seed=seed,
            retry_errors=retry_errors,
        )
    except (ValueError, OSError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc

    # Process 0 reports for all (it alone sees every process's items): a bar at a terminal, plain
    # lines in a log.
    with Progress("eval", total=source.n, unit="items", enabled=processes.is_main) as progress:
        on_item = item_progress(progress)
        try:
            harness = Harness(
                adapter, source, built, out, config, model=model, on_item=on_item, processes=processes
            )
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        summary = harness.run_all()
    console.print(_summary_table(summary))
    for table in _category_tables(summary):
        console.print(table)
    console.print(f"{harness.n_computed} rows computed; results in {out}")
    if not processes.is_main:
        return  # efficiency is timed, and the report written, by process 0 alone

    if efficiency:
        items = []
        for item in source.items():
            items.append(item)
            if len(items) >= efficiency_items:
                break
        console.print(f"measuring efficiency on {len(items)} items × {repeats} repeats …")
        eff = measure_efficiency(
            adapter, items, built, ratio_list, repeats=repeats, seed=seed, model=model, out=out
        )
        for failed in eff["failed"]:
            console.print(
                f"[yellow]efficiency not measured for {failed['method']}@{failed['ratio']}:[/yellow] "
                f"{failed['error']}"
            )
    if report:
        files = build_report(out)
        console.print(f"report: {files.markdown}")


def report_command(
    results: Annotated[Path, typer.Argument(help="A results directory written by `cacovid eval`.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the report (default: RESULTS).")
    ] = None,
    items: Annotated[
        str, typer.Option("--items", help="Comma list of item ids for heat-maps (default: first few).")
    ] = "",
    n_items: Annotated[
        int, typer.Option("--n-items", min=0, help="Heat-map items when --items is not given.")
    ] = 2,
    note: Annotated[str, typer.Option("--note", help="A paragraph placed under the report's title.")] = "",
) -> None:
    """Write report.md, accuracy_vs_retention.png and token heat-maps for RESULTS."""
    from rich.console import Console

    from cacovid.evaluate.report import build_report

    console = Console()
    chosen = [s.strip() for s in items.split(",") if s.strip()] or None
    try:
        files = build_report(results, out, items=chosen, n_heatmap_items=n_items, note=note or None)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"report: {files.markdown}")
    if files.plot:
        console.print(f"plot: {files.plot}")
    for p in files.heatmaps:
        console.print(f"heat-map: {p}")


app.command("eval")(eval_command)
app.command("report")(report_command)
