"""`cacovid demo`: the main job on the embedded default, end to end.

Loads the embedded toy video LLM, gets a CaCoVID policy (the one shipped with the package for the
chosen world preset, or a fresh one trained in this run with `--retrain`: on a world with decoys by
the shipped policy's answer-only RL recipe on 600 items, after which the shipped policy is evaluated
on the same items and the two are set side by side), evaluates it against
random and uniform selection, its own temporal-novelty prior alone (`selectors/novelty.py`) and the
question-aware `relevance` heuristic at several retention ratios on the synthetic test split, and
writes a report folder: summary.json and items.jsonl (the result-file contract), report.md with the
table, a plot of accuracy vs retention, token heat-maps, and the policy itself beside them. Where the
world asks counterfactual questions (`preset=decoys`), the table also shows question sensitivity.

The evaluation runs on every core by default: `--workers` processes (one per core) meet over gloo
(`cacovid.distributed`) and split the items round-robin, exactly as `accelerate launch cacovid eval`
does; process 0 gathers the rows, so the figures are those of one process, bit for bit, whatever the
number of workers. `--workers 1` holds cores back; `--threads` sets torch's threads per worker.
Progress shows as a bar at a terminal and as plain lines when the output goes to a file.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from cacovid.data.synthetic.config import DEFAULT_WORLD

# The world `cacovid demo` runs on without --world: every command's default world, the one where only
# the question tells which of the objects that come and go matters (data/synthetic/config.py).
DEMO_WORLD = DEFAULT_WORLD
# Policies shipped for the toy model, by world preset (folders under policy/shipped/).
SHIPPED_POLICIES = {"classic": "toy", "decoys": "toy-decoys"}
# Training items of `--retrain`, by kind of world: the decoys policy's recipe (answer-only RL, one pass
# over fresh items) needs more items than the classic policy's to get anywhere.
RETRAIN_ITEMS = {"decoys": 600, "classic": 150}


def shipped_policy_dir(preset: str) -> Path:
    """The policy trained for the toy model on world `preset`, shipped inside the package (the
    classic world's for a preset without one of its own)."""
    from importlib import resources

    return Path(str(resources.files("cacovid.policy"))) / "shipped" / SHIPPED_POLICIES.get(preset, "toy")


def shipped_novelty_weight() -> float:
    """The novelty-prior weight of the policy shipped for the classic world, whose RL recipe
    `--retrain` repeats on worlds without decoys (0 when none is shipped)."""
    from cacovid.policy import PolicyConfig

    path = shipped_policy_dir("classic") / "config.json"
    return PolicyConfig.load(path).novelty_weight if path.is_file() else 0.0


def _rl_policy(adapter, out: Path, n_items: int, world: str, seed: int, progress: bool) -> Path:
    """The recipe of the policy shipped for the decoys world (recipes/toy/cacovid-decoys/rl.yaml, which
    is `cacovid train`'s defaults) on fewer items: a fresh policy with the question-match prior,
    trained by RL from the answers alone, validated and saved with the global top-K."""
    from cacovid.cli.train import RunOptions, selection_from_text
    from cacovid.data.sources import source_from_args
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.config import TrainConfig
    from cacovid.train.trainer import Trainer

    train_items = source_from_args("synthetic", split="train", world=world or None, n=n_items).sequence
    val_items = source_from_args("synthetic", split="val", world=world or None, n=32).sequence
    run = RunOptions()
    config = TrainConfig(seed=seed, checkpoint_every=max(50, n_items // 4), val_every=max(1, n_items))
    policy = CaCoVIDPolicy.from_host(
        adapter,
        seed=seed,
        question_match_dim=run.question_match_dim,
        question_match_init=run.question_match_init,
        context_width=run.context_width,
    )
    selection = selection_from_text(run.val_selection)
    out_dir = out / "policy-training"
    Trainer(
        adapter, policy, config, train_items, val_items, out_dir, progress=progress, val_selection=selection
    ).fit()
    return out_dir / "policy"


def _train_policy(adapter, out: Path, n_items: int, world: str, seed: int, progress: bool) -> Path:
    from cacovid.data.sources import source_from_args
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.config import TrainConfig
    from cacovid.train.trainer import Trainer

    train_items = source_from_args("synthetic", split="train", world=world or None, n=n_items).sequence
    val_items = source_from_args("synthetic", split="val", world=world or None, n=32).sequence
    # The recipe of the shipped policy (README), for a short CPU run: dense reward (probability of the
    # right option, one teacher-forced pass), a fixed training retention of 6 %, KL to Bernoulli(½)
    # so the keep-probabilities do not saturate, and a higher head learning rate than the paper's 1e-4.
    config = TrainConfig.paper(
        seed=seed,
        checkpoint_every=25,
        val_every=max(25, n_items // 2),
        reward="dense",
        lr=5e-4,
        ratio=0.06,
        adapt_ratio=False,
        kl_coef=0.1,
    )
    # The shipped policy's temporal-novelty prior too, so a retrained policy is the same kind of policy.
    policy = CaCoVIDPolicy.from_host(adapter, seed=seed, novelty_weight=shipped_novelty_weight())
    run = out / "policy-training"
    Trainer(adapter, policy, config, train_items, val_items, run, progress=progress).fit()
    return run / "policy"


def default_workers() -> int:
    """One evaluation worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class EvalJob:
    """The demo's evaluation as its options spell it (picklable): every process, process 0 and the
    workers alike, builds its run from this, so all build the same methods, ratios and items.
    `methods` is the baselines' comma list (cacovid always comes first); `policy` the policy folder."""

    model: str
    policy: str
    methods: str
    ratios: str
    split: str
    world: str
    n: int
    seed: int
    out: str
    threads: int

    def method_names(self) -> list[str]:
        """The methods evaluated: the references, cacovid and the baselines (ValueError if unknown)."""
        from cacovid.evaluate.methods import parse_methods

        return parse_methods(["cacovid", *self.methods.split(",")], policy=True)

    def ratio_list(self) -> list[float]:
        """The retention ratios (ValueError if malformed)."""
        from cacovid.types import parse_ratios

        return parse_ratios(self.ratios)

    def source(self) -> Any:
        """The items evaluated (ValueError for a bad world or split)."""
        from cacovid.data.sources import source_from_args

        return source_from_args("synthetic", split=self.split, world=self.world or None, n=self.n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _launch_environment(rank: int, world_size: int, port: int) -> Iterator[None]:
    """The variables `accelerate launch` would set for this process, restored on the way out (the
    process that runs the demo goes on as one process afterwards)."""
    values = {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _evaluate(job: EvalJob, processes: Any, adapter: Any, on_item: Any = None) -> dict:
    """The harness run of one process: every process builds the same methods and items."""
    from cacovid.evaluate import EvalConfig, build_methods, run_evaluation

    built = build_methods(job.method_names(), adapter, policy=job.policy, seed=job.seed)
    config = EvalConfig(ratios=job.ratio_list(), seed=job.seed)
    return run_evaluation(
        adapter, job.source(), built, job.out, config, model=job.model, on_item=on_item, processes=processes
    )


def _worker(rank: int, world_size: int, job: EvalJob, go: Any, cancel: Any, port: Any, parent: int) -> None:
    """An evaluation worker process (rank >= 1). It starts with the demo and loads the model while
    process 0 does the same (and gets the policy ready), then waits for the go; it gives up when the
    demo cancels or its process is gone."""
    import torch

    from cacovid.distributed import joined
    from cacovid.models import load_video_llm

    torch.set_num_threads(max(1, job.threads))
    adapter = load_video_llm(job.model)
    while not go.wait(1.0):
        if cancel.is_set() or os.getppid() != parent:
            return
    with _launch_environment(rank, world_size, port.value), joined("cpu") as processes:
        _evaluate(job, processes, adapter)


def _watch(children: list, finished: threading.Event) -> None:
    """Stop the demo when a worker dies before the evaluation is over: process 0 would otherwise
    wait for it at the next meeting point (up to gloo's 30-minute timeout)."""
    from multiprocessing.connection import wait

    pending = {child.sentinel: child for child in children}
    while pending and not finished.is_set():
        for sentinel in wait(list(pending), timeout=1.0):
            child = pending.pop(sentinel)
            if child.exitcode != 0 and not finished.is_set():
                print(f"evaluation worker {child.name} failed (exit code {child.exitcode})", file=sys.stderr)
                for other in children:
                    if other.is_alive():
                        other.terminate()
                os._exit(1)


class EvalWorkers:
    """The demo's evaluation on `count` processes; this one is process 0 (it reports progress and
    writes the results). The others start at once, so that their start-up (imports, loading the
    model) overlaps this process's, and join the run when `run` is called; leaving the context
    without a run sends them home. One process (`count` 1) starts nothing."""

    def __init__(self, job: EvalJob, count: int) -> None:
        self.job, self.count = job, count
        self.children: list = []
        if count <= 1:
            return
        spawn = multiprocessing.get_context("spawn")  # a fork would copy torch's thread pools mid-use
        self._go, self._cancel = spawn.Event(), spawn.Event()
        self._port = spawn.Value("i", 0)
        self.children = [
            spawn.Process(
                target=_worker,
                args=(rank, count, job, self._go, self._cancel, self._port, os.getpid()),
                name=str(rank),
                daemon=True,
            )
            for rank in range(1, count)
        ]
        for child in self.children:
            child.start()

    def __enter__(self) -> EvalWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, adapter: Any, on_item: Any = None) -> dict:
        """Evaluate the job on every process; returns the summary (as process 0 wrote it)."""
        from cacovid.distributed import SINGLE, joined

        if not self.children:
            return _evaluate(self.job, SINGLE, adapter, on_item)
        port = _free_port()
        self._port.value = port
        self._go.set()
        finished = threading.Event()
        threading.Thread(target=_watch, args=(self.children, finished), daemon=True).start()
        try:
            with _launch_environment(0, self.count, port), joined("cpu") as processes:
                summary = _evaluate(self.job, processes, adapter, on_item)
        finally:
            finished.set()
        self.close()
        failed = [c.name for c in self.children if c.exitcode != 0]
        if failed:
            raise RuntimeError(f"evaluation workers {failed} failed")
        return summary

    def close(self) -> None:
        """Wait for the workers after a run (ending any that hang on); without a run (the demo
        failed before its evaluation) end them at once: they hold nothing but a loaded model."""
        if not self.children:
            return
        ran = self._go.is_set()
        self._cancel.set()
        for child in self.children:
            if ran:
                child.join(timeout=60)
            if child.is_alive():
                child.terminate()
            child.join()


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), help="Report folder (resumed if it exists)."),
    model: str = typer.Option("toy", help='Video LLM: "toy" (embedded) or a checkpoint folder.'),
    retrain: bool = typer.Option(
        False, "--retrain/--shipped", help="Train a fresh policy here (default when none is shipped)."
    ),
    train_items: int = typer.Option(
        None, min=1, help="Training items when retraining (default: 600 on a world with decoys, else 150)."
    ),
    n: int = typer.Option(200, min=1, help="Test items to evaluate."),
    ratios: str = typer.Option("0.25,0.2,0.15,0.1,0.05", help="Retention ratios."),
    methods: str = typer.Option(
        "random,uniform,novelty,relevance",
        help="Baselines to compare against (or 'all'); 'novelty' is the shipped policy's prior alone, "
        "'relevance' a training-free question-aware heuristic.",
    ),
    world: str = typer.Option(
        DEMO_WORLD,
        help="World KEY=VALUE[,KEY=VALUE…]; keys without a preset change the default preset=decoys; "
        "preset=classic for the classic world; a preset with a shipped policy uses it.",
    ),
    split: str = typer.Option("test", help="Split to evaluate on."),
    seed: int = typer.Option(0),
    workers: int = typer.Option(
        None,
        min=1,
        help="Evaluation processes, items split between them (default: one per core; 1 holds cores back).",
    ),
    threads: int = typer.Option(1, help="torch CPU threads per worker (1 is fastest for the tiny model)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train or load a CaCoVID policy for the toy model, compare it with baselines, write a report."""
    import torch
    from rich.console import Console

    console = Console()
    torch.set_num_threads(max(1, threads))
    t0 = time.time()
    job = EvalJob(model, str(out / "policy"), methods, ratios, split, world, n, seed, str(out), threads)
    # The workers start first: their start-up overlaps this process's imports and model loading.
    with EvalWorkers(job, min(workers or default_workers(), n)) as pool:
        try:
            job.ratio_list(), job.method_names()
            source = job.source()
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        adapter, policy_dir = _prepare_policy(console, job, source, retrain, train_items, progress)
        t_train = time.time() - t0
        summary = _evaluate_all(console, job, pool, adapter, progress)
    _report_and_print(console, job, summary, time.time() - t0, t_train)
    if retrain:
        _compare_with_shipped(console, job, source, adapter, summary)


def _prepare_policy(
    console: Any, job: EvalJob, source: Any, retrain: bool, train_items: int, progress: bool
) -> tuple[Any, Path]:
    """Load the model and put the policy in OUT/policy: kept from an earlier run, the shipped one for
    the world's preset, or trained here (with `--retrain`, another model or a world without one)."""
    from cacovid.data.synthetic import WorldConfig
    from cacovid.evaluate.methods import SELECTION_FILE
    from cacovid.models import load_video_llm
    from cacovid.policy import CaCoVIDPolicy

    world_config = WorldConfig.from_dict(source.world)  # the resolved world, preset=decoys by default
    preset = world_config.preset_name
    # A world with decoys gets the decoys policy's recipe (distillation), any other the classic one (RL).
    has_decoys = world_config.num_decoys > 0
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    adapter = load_video_llm(job.model)
    policy_dir = Path(job.policy)
    if (policy_dir / "config.json").is_file():
        return adapter, policy_dir
    shipped = shipped_policy_dir(preset or "classic")
    if retrain or job.model != "toy" or preset is None or not (shipped / "config.json").is_file():
        n_items = train_items or RETRAIN_ITEMS["decoys" if has_decoys else "classic"]
        how = "from the answers alone, the decoys recipe" if has_decoys else "the classic recipe"
        console.print(f"training a CaCoVID policy on {n_items} items ({how}) …")
        train = _rl_policy if has_decoys else _train_policy
        trained = train(adapter, out, n_items, job.world, job.seed, progress)
    else:
        trained = shipped
        console.print(f"using the shipped policy ({trained})")
    CaCoVIDPolicy.from_pretrained(trained, host=adapter).save_pretrained(policy_dir)
    if (Path(trained) / SELECTION_FILE).is_file():  # the inference settings tuned for this policy
        shutil.copyfile(Path(trained) / SELECTION_FILE, policy_dir / SELECTION_FILE)
    return adapter, policy_dir


def _compare_with_shipped(console: Any, job: EvalJob, source: Any, adapter: Any, summary: dict) -> None:
    """Say plainly how far a retrained policy got: the shipped policy of the world's preset on the same
    items and ratios (OUT/shipped-policy/), beside the retrained one."""
    from cacovid.data.synthetic import WorldConfig
    from cacovid.evaluate import EvalConfig, build_methods, run_evaluation

    kind = "decoys" if WorldConfig.from_dict(source.world).num_decoys > 0 else "classic"
    shipped = shipped_policy_dir(kind)  # the shipped policy of this kind of world
    if job.model != "toy" or not (shipped / "config.json").is_file():
        return
    console.print(f"evaluating the shipped policy ({shipped.name}) on the same items for comparison …")
    methods = build_methods(["cacovid"], adapter, policy=str(shipped), seed=job.seed)
    config = EvalConfig(ratios=job.ratio_list(), seed=job.seed, keep_masks=False)
    rows = run_evaluation(adapter, source, methods, Path(job.out) / "shipped-policy", config)["rows"]
    ours = {r["ratio"]: r for r in summary["rows"] if r["method"] == "cacovid"}
    for row in rows:
        mine = ours.get(row["ratio"])
        if mine is not None:
            gap = 100 * (mine["accuracy"] - row["accuracy"])
            console.print(
                f"at {100 * row['ratio']:g} %: the retrained policy {100 * mine['accuracy']:.1f} %, "
                f"the shipped one {100 * row['accuracy']:.1f} % ({gap:+.1f} points, {row['n']} items)"
            )


def _evaluate_all(console: Any, job: EvalJob, pool: EvalWorkers, adapter: Any, progress: bool) -> dict:
    """The evaluation on every worker, with progress: a bar at a terminal, plain lines in a log;
    returns the summary."""
    from cacovid.evaluate.harness import item_progress
    from cacovid.progress import Progress

    on = f" on {pool.count} workers" if pool.count > 1 else ""
    names = ", ".join(job.method_names())
    console.print(f"evaluating {names} at {job.ratios} on {job.n} {job.split} items{on} …")
    with Progress("eval", total=job.n, unit="items", enabled=progress) as bar:
        return pool.run(adapter, on_item=item_progress(bar))


def _report_and_print(console: Any, job: EvalJob, summary: dict, t_total: float, t_train: float) -> None:
    """Write the report folder and print the summary table."""
    from rich.table import Table

    from cacovid.evaluate import build_report

    out, model, split = Path(job.out), job.model, job.split
    build_report(out, note=f"`cacovid demo` on model {model!r}, synthetic {split} split, {job.n} items.")
    table = Table(title=f"CaCoVID vs baselines — {model}, synthetic:{split}, n={summary.get('n_items')}")
    sensitive = any(row.get("question_sensitivity") is not None for row in summary["rows"])
    columns = ["method", "ratio", "accuracy", "% of full", "evidence recall"]
    columns += ["question sensitivity (base rate)"] if sensitive else []
    for col in [*columns, "compression ms"]:
        table.add_column(col, justify="right" if col != "method" else "left")
    for row in summary["rows"]:
        rec, qs = row.get("evidence_recall"), row.get("question_sensitivity")
        cells = [
            row["method"],
            f"{row['ratio']:.2f}",
            f"{row['accuracy']:.3f}",
            "-" if row.get("pct_of_full") is None else f"{row['pct_of_full']:.1f}",
            "-" if rec is None else f"{rec:.3f}",
        ]
        if sensitive:
            cells.append("-" if qs is None else f"{qs:.3f} ({row['question_base_rate']:.3f})")
        table.add_row(*cells, f"{row.get('compression_ms') or 0.0:.2f}")
    console.print(table)
    console.print(
        f"policy {t_train:.0f} s, total {t_total:.0f} s; report: {out / 'report.md'}; policy: {job.policy}"
    )
