"""Multi-process runs (docs/scale-out.md) on two CPU processes over gloo.

Two launches: `accelerate launch` of the real `cacovid eval` command on the toy model, and
`torch.multiprocessing.spawn` of workers that train and evaluate a tiny LLaVA-OneVision through the
library (several phases per launch, so each test pays for starting processes once). The one-process
references run in the test process itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cacovid import distributed
from cacovid.distributed import SINGLE, Processes, shard
from cacovid.train.update import rollout_seed

ROOT = Path(__file__).resolve().parents[1]
WORLD = "frames=4,target_frames=1:2"
TINY = dict(text_hidden=32, text_layers=1, heads=4, kv_heads=2, vision_hidden=32, vision_layers=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_adapter():
    """The same tiny LLaVA-OneVision in every process (built from a seed)."""
    from cacovid.data.synthetic import VOCABULARY
    from cacovid.models import LlavaOneVisionVideoLLM
    from cacovid.testing.tiny import tiny_llava_onevision

    model, processor = tiny_llava_onevision(list(VOCABULARY), seed=3, **TINY)
    return LlavaOneVisionVideoLLM(model, processor, name_or_path="tiny-llava")


def _spawn(worker, tmp_path: Path, *args) -> None:
    """Run `worker(rank, tmp_path, *args)` on two gloo processes; re-raise a worker's failure."""
    port = _free_port()
    mp.spawn(worker, args=(port, str(tmp_path), *args), nprocs=2, join=True)
    for rank in range(2):
        failed = tmp_path / f"failed-{rank}.txt"
        if failed.exists():
            pytest.fail(f"process {rank} failed:\n{failed.read_text()}")


def _join(rank: int, port: int) -> Processes:
    """Join a two-process group the way `cacovid` does under a launcher: from the environment."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    processes = distributed.init_from_environment("cpu")
    assert (processes.rank, processes.world_size, processes.backend) == (rank, 2, "gloo")
    return processes


# ---- the pieces ------------------------------------------------------------------------------
def test_shard_is_round_robin_disjoint_and_complete():
    for n in (0, 1, 5, 8):
        for world in (1, 2, 3):
            parts = [list(shard(n, Processes(r, world))) for r in range(world)]
            assert sorted(i for p in parts for i in p) == list(range(n))
            assert all(p == list(range(r, n, world)) for r, p in enumerate(parts))


def test_one_process_is_the_default_and_every_collective_is_a_no_op(monkeypatch):
    for name in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_from_environment("cpu") is SINGLE and distributed.current() is SINGLE
    t = torch.ones(3)
    assert SINGLE.all_reduce_sum_(t) is t and torch.equal(t, torch.ones(3))
    assert SINGLE.all_gather({"a": 1}) == [{"a": 1}] and SINGLE.broadcast(5) == 5
    SINGLE.barrier()
    assert distributed.process_device("cuda", SINGLE) == "cuda"
    assert distributed.process_device("cuda", Processes(1, 2, 1)).startswith("cuda:")
    assert distributed.process_device("cpu", Processes(1, 2, 1)) == "cpu"
    assert rollout_seed(7, 0) == 7 and rollout_seed(7, 1) != rollout_seed(7, 2) != 7


def test_a_launch_without_a_rendezvous_is_refused_clearly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        distributed.init_from_environment("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.init_from_environment("cpu")


def _shutdown_worker(rank: int, port: int, tmp: str) -> None:
    try:
        import time

        _join(rank, port)
        if rank == 1:
            time.sleep(0.5)  # the late process: its peer must not leave before it arrives
            (Path(tmp) / "late-arrived").write_text("")
        distributed.shutdown()
        if rank == 0:
            (Path(tmp) / "early-left.json").write_text(json.dumps((Path(tmp) / "late-arrived").exists()))
    except BaseException:
        (Path(tmp) / f"failed-{rank}.txt").write_text(traceback.format_exc())


def test_shutdown_waits_for_every_process_before_closing_the_group(tmp_path):
    """No process tears the gloo group down while a peer is still working in it."""
    _spawn(_shutdown_worker, tmp_path)
    assert json.loads((tmp_path / "early-left.json").read_text()) is True


# ---- evaluation --------------------------------------------------------------------------------
def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "compression_ms"}  # a time, not a result


def test_eval_under_accelerate_launch_writes_the_one_process_rows(tmp_path):
    """`accelerate launch --num_processes 2 -m cacovid eval` = `cacovid eval`: same rows, same order."""
    from typer.testing import CliRunner

    from cacovid.cli.eval import app

    args = [
        "eval", "--model", "toy", "--world", WORLD, "--n", "5", "--methods", "random,uniform",
        "--ratios", "0.25,0.1", "--device", "cpu", "--no-efficiency", "--no-report",
    ]  # fmt: skip
    one = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "cacovid",
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    two = subprocess.run(
        [*launch, *args, "--out", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 processes" in two.stdout and two.stdout.count("rows computed") == 1  # process 0 speaks
    rows = {d: (tmp_path / d / "items.jsonl").read_text().splitlines() for d in ("one", "two")}
    assert len(rows["one"]) == 5 * (2 + 3 * 2)  # full, blind; oracle, random, uniform at 2 ratios
    assert [_strip(json.loads(r)) for r in rows["two"]] == [_strip(json.loads(r)) for r in rows["one"]]
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two")]
    assert [_strip(r) for r in summaries[0]["rows"]] == [_strip(r) for r in summaries[1]["rows"]]


def _eval_worker(rank: int, port: int, tmp: str) -> None:
    try:
        from cacovid.evaluate import EvalConfig, build_methods, run_evaluation, synthetic_source

        _join(rank, port)
        adapter = _tiny_adapter()
        methods = build_methods(["full", "random", "uniform", "divprune"], adapter, seed=0)
        config = EvalConfig(ratios=(0.25, 0.1), max_new_tokens=4)
        seen: list[str] = []
        # Resume a directory one process started (items 0 and 1, two methods), adding items 2..4.
        summary = run_evaluation(
            adapter,
            synthetic_source(WORLD, "test", 5),
            methods,
            Path(tmp) / "run",
            config,
            on_item=lambda e: seen.append(f"{e.position}:{'skip' if e.skipped else len(e.rows)}"),
        )
        (Path(tmp) / f"seen-{rank}.json").write_text(json.dumps({"seen": seen, "n": summary["n_items"]}))
        distributed.shutdown()
    except BaseException:
        (Path(tmp) / f"failed-{rank}.txt").write_text(traceback.format_exc())


def test_two_process_eval_resumes_without_duplicates_or_gaps(tmp_path):
    from cacovid.evaluate import EvalConfig, build_methods, read_rows, run_evaluation, synthetic_source

    adapter = _tiny_adapter()
    config = EvalConfig(ratios=(0.25, 0.1), max_new_tokens=4)
    names = ["full", "random", "uniform", "divprune"]
    # One process: the whole run, and the start of the run two processes will resume.
    run_evaluation(
        adapter, synthetic_source(WORLD, "test", 5), build_methods(names, adapter), tmp_path / "one", config
    )
    run_evaluation(
        adapter,
        synthetic_source(WORLD, "test", 2),
        build_methods(names[:2], adapter),
        tmp_path / "run",
        config,
    )
    started = len(read_rows(tmp_path / "run"))
    _spawn(_eval_worker, tmp_path)
    one, two = read_rows(tmp_path / "one"), read_rows(tmp_path / "run")
    keys = [(r["item_id"], r["method"], r["ratio"]) for r in two]
    assert len(keys) == len(set(keys)) == len(one)  # no duplicate, no gap
    by_key = {(r["item_id"], r["method"], r["ratio"]): _strip(r) for r in one}
    assert all(_strip(r) == by_key[k] for r, k in zip(two, keys, strict=True))  # same answers, selections
    assert started == 2 * 3  # full + random at 2 ratios, per item
    # Process 0 heard of every item once, in order, the resumed ones as the rows they still needed.
    seen = json.loads((tmp_path / "seen-0.json").read_text())
    assert seen["seen"] == ["0:4", "1:4", "2:7", "3:7", "4:7"] and seen["n"] == 5
    assert json.loads((tmp_path / "seen-1.json").read_text())["seen"] == []
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_items"] == 5 and {r["n"] for r in summary["rows"]} == {5}


# ---- training ------------------------------------------------------------------------------------
def _train_config(**kw):
    from cacovid.train.config import TrainConfig

    base = dict(
        group_size=4, iterations=2, reward="dense", blind_filter=True, lr=1e-2, warmup_fraction=0.0,
        checkpoint_every=2, val_every=4, val_ratios=(0.5,), seed=3,
    )  # fmt: skip
    return TrainConfig.paper(**(base | kw))


def _items():
    from cacovid.data.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(frames=4, target_frames=(1, 2)))
    return list(world.items("train", 5)), list(world.items("val", 3))


def _trainer(adapter, out, *, processes=None, failing: str | None = None, n_items: int = 5, **kw):
    """A Trainer of the tiny model on 5 items; the reward of item `failing` raises every time."""
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.rewards import rollout_reward
    from cacovid.train.trainer import Trainer

    items, vals = _items()
    items = items[:n_items]
    dense = rollout_reward("dense", 4)

    def reward(adapter_, rows, item):
        if item.id == failing:
            raise RuntimeError(f"no reward for {item.id}")
        return dense(adapter_, rows, item)

    policy = CaCoVIDPolicy.from_host(adapter, seed=1)
    return Trainer(
        adapter, policy, _train_config(**kw), items, vals, out, reward_fn=reward, progress=False,
        processes=processes,
    )  # fmt: skip


def _train_worker(rank: int, port: int, tmp: str, failing: str) -> None:
    try:
        processes = _join(rank, port)
        adapter = _tiny_adapter()
        tmp_path = Path(tmp)
        report: dict = {}
        # Straight through; then the same run interrupted after 3 items and resumed.
        straight = _trainer(adapter, tmp_path / "straight", processes=processes, failing=failing)
        report["straight"] = straight.fit()
        torch.save(straight.policy.state_dict(), tmp_path / f"straight-{rank}.pt")
        _trainer(adapter, tmp_path / "resumed", processes=processes, failing=failing).fit(max_items=3)
        resumed = _trainer(adapter, tmp_path / "resumed", processes=processes, failing=failing)
        report["resumed"] = resumed.fit()
        torch.save(resumed.policy.state_dict(), tmp_path / f"resumed-{rank}.pt")
        # One item: process 1 has none and contributes nothing, so the step is process 0's alone.
        alone = _trainer(adapter, tmp_path / "alone", processes=processes, n_items=1)
        alone.fit()
        torch.save(alone.policy.state_dict(), tmp_path / f"alone-{rank}.pt")
        # A checkpoint of one process is not continued by two.
        try:
            _trainer(adapter, tmp_path / "single", processes=processes).fit()
        except ValueError as exc:
            report["refused"] = str(exc)
        (tmp_path / f"report-{rank}.json").write_text(json.dumps(report, default=str))
        distributed.shutdown()
    except BaseException:
        (Path(tmp) / f"failed-{rank}.txt").write_text(traceback.format_exc())


def _events(path: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == kind]


def test_two_process_training_averages_checkpoints_once_and_resumes(tmp_path):
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.checkpoint import STATE_NAME

    adapter = _tiny_adapter()
    items, _ = _items()
    failing = items[3].id
    _trainer(adapter, tmp_path / "single").fit(max_items=2)  # a one-process checkpoint
    alone = _trainer(adapter, tmp_path / "alone-1", n_items=1)
    alone.fit()
    _spawn(_train_worker, tmp_path, failing)

    reports = [json.loads((tmp_path / f"report-{r}.json").read_text()) for r in range(2)]
    start = CaCoVIDPolicy.from_host(adapter, seed=1).state_dict()
    for run in ("straight", "resumed"):
        w0, w1 = (torch.load(tmp_path / f"{run}-{r}.pt") for r in range(2))
        assert all(torch.equal(w0[k], w1[k]) for k in w0), f"{run}: the processes' weights differ"
        assert max(float((w0[k] - start[k]).abs().max()) for k in w0) > 1e-4, f"{run}: no progress"
    for rank in range(2):  # a round with one item: the same step as one process takes
        two = torch.load(tmp_path / f"alone-{rank}.pt")
        assert all(torch.equal(two[k], v) for k, v in alone.policy.state_dict().items())
    straight = torch.load(tmp_path / "straight-0.pt")
    resumed = torch.load(tmp_path / "resumed-0.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)  # exact resume
    # Kept items in rounds of two: 3 rounds × 2 iterations; identical summaries on both processes.
    summary = reports[0]["straight"]
    assert summary["finished"] and summary["items_done"] == summary["train_items"]
    assert summary["steps"] == 2 * -(-summary["train_items"] // 2)
    for report in reports:
        for row in report["straight"]["validation"]:
            row.pop("compression_ms")  # a time, not a result
    assert reports[1]["straight"] == reports[0]["straight"]

    for run in ("straight", "resumed"):
        log = tmp_path / run / "log.jsonl"
        done = [r["item_id"] for r in _events(log, "item") + _events(log, "item_error")]
        assert sorted(done) == sorted(set(done)) and len(done) == summary["train_items"]  # each once
        assert [r["items_done"] for r in _events(log, "item") + _events(log, "item_error")] != []
        (error,) = _events(log, "item_error")  # the failing item, whichever process had it
        assert error["item_id"] == failing and "no reward" in error["error"]
        assert [v["items_done"] for v in _events(log, "val")] == [4, summary["train_items"]]
        assert len(_events(log, "filter")) == 1 and len(_events(log, "done")) == 1
        state = torch.load(tmp_path / run / "checkpoint" / STATE_NAME, weights_only=True)
        assert state["world_size"] == 2 and len(state["generators"]) == 2
        assert not (tmp_path / run / "checkpoint.tmp").exists()
    assert len(_events(tmp_path / "resumed" / "log.jsonl", "resume")) == 1
    # Resuming with another number of processes is refused, naming both counts.
    assert "1 process(es), this run has 2" in reports[0]["refused"] == reports[1]["refused"]
    with pytest.raises(ValueError, match=r"2 process\(es\), this run has 1"):
        _trainer(adapter, tmp_path / "straight").fit()
