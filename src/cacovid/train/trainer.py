"""The CaCoVID training loop (docs/method.md §4, §5): data, rewards from the frozen model, logs, resume.

Training goes in rounds of `items_per_step` items: each item is encoded once with the frozen adapter,
and `PolicyUpdater.train_round` runs I iterations of (G rollouts per item from its old scores → **one
batched adapter call** per item for their rewards → one optimiser step on the round's summed
gradients). Around that the trainer:
- drops items the frozen model answers correctly blind (no video tokens) before training;
- logs one JSON line per item (rewards per mode, top-k reward, r, loss, lr) and per validation
  (every key: docs/result-files.md);
- validates with `CaCoVIDSelector` (given selection options) at several ratios every `val_every`
  items and at the end;
- checkpoints every `checkpoint_every` items and resumes exactly (weights identical to an
  uninterrupted run): policy, optimiser, scheduler, RNG, data position, r and the log length.

Several processes (`accelerate launch`, docs/scale-out.md): a round holds at least one item per
process (W processes), its j-th item trained by process j mod W; `PolicyUpdater` averages the
gradients before each of the round's I optimiser steps, so every process holds the same weights.
The schedule, validation and checkpoint cadences count items over all processes. Each round's
results are gathered so every process keeps the same bookkeeping; process 0 alone writes the log,
checkpoints and the final policy while the others wait. The blind test and validation split their
items across the processes and pool the answers. A checkpoint records W and its processes' rollout
generators: it resumes with the same number of processes only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cacovid.distributed import Processes, current, shard
from cacovid.policy.network import CaCoVIDPolicy
from cacovid.policy.selector import CaCoVIDSelector
from cacovid.progress import Progress
from cacovid.train.checkpoint import (
    CHECKPOINT_DIR,
    find_checkpoint,
    load_checkpoint,
    migrate_config,
    save_checkpoint,
)
from cacovid.train.config import TrainConfig
from cacovid.train.rewards import RolloutReward, reward_spec
from cacovid.train.tuning import write_selection
from cacovid.train.update import ITEM_ERRORS, ItemJob, PolicyUpdater
from cacovid.train.validation import (
    blind_answers_correct,
    blind_filter,
    merge_outcomes,
    validate_selector,
    validation_outcomes,
    validation_rows,
)
from cacovid.types import EncodedPrompt, QAItem

if TYPE_CHECKING:
    from cacovid.models.base import VideoLLM

__all__ = ["TrainConfig", "Trainer"]

LOG_NAME = "log.jsonl"
POLICY_DIR = "policy"
# Fields that may change between a run and its resumption without changing what is computed.
_RESUMABLE_CHANGES = {"checkpoint_every", "val_every", "val_ratios", "val_batch_size"}
# Items that may fail one after another before the run stops (see `Trainer.fit`).
MAX_CONSECUTIVE_FAILURES = 10


class Trainer:
    """Train a `CaCoVIDPolicy` against a frozen video LLM.

    Example, on the embedded toy model and world, with a reward that pays for keeping tokens of the
    first frame (`reward_fn(adapter, rows, item)` → one reward per row; the host goes unused):

        >>> import tempfile, torch, cacovid
        >>> from cacovid.data.synthetic import SyntheticWorld, WorldConfig
        >>> from cacovid.policy import CaCoVIDPolicy
        >>> adapter = cacovid.load_model("toy")
        >>> items = [SyntheticWorld(WorldConfig.preset("decoys")).item("train", i) for i in range(2)]
        >>> def first_frame(adapter, rows, item):
        ...     return torch.stack([keep[: keep.numel() // 16].float().mean() for _, keep, _ in rows])
        >>> policy = CaCoVIDPolicy.from_host(adapter, seed=0)
        >>> config = TrainConfig(group_size=4, iterations=1, blind_filter=False, val_ratios=())
        >>> trainer = Trainer(adapter, policy, config, items, out_dir=tempfile.mkdtemp(),
        ...                   reward_fn=first_frame, progress=False)
        >>> trainer.fit()["items_done"]
        2

    `train_items` / `val_items` are sequences of QAItem (indexable; a lazy sequence works).
    `reward_fn` overrides the configured reward (signature of `cacovid.train.rewards.RolloutReward`).
    Outputs in `out_dir`: `log.jsonl`, `checkpoint/`, and the final policy in `policy/` (with a
    `selection.json` of `val_selection` when one is given).
    `processes`: the run's processes (default: `cacovid.distributed.current()`, one process unless
    torch.distributed is initialised); every process builds the same Trainer on the same items.
    """

    def __init__(
        self,
        adapter: VideoLLM,
        policy: CaCoVIDPolicy,
        config: TrainConfig,
        train_items: Sequence[QAItem],
        val_items: Sequence[QAItem] = (),
        out_dir: str | Path = "runs/cacovid",
        *,
        reward_fn: RolloutReward | None = None,
        resume: bool = True,
        progress: bool = True,
        val_selection: dict[str, Any] | None = None,
        processes: Processes | None = None,
    ) -> None:
        if not isinstance(policy, CaCoVIDPolicy):
            raise ValueError(f"policy must be a CaCoVIDPolicy, got {type(policy).__name__}")
        if len(train_items) == 0:
            raise ValueError("no training items")
        self.adapter = adapter
        self.policy = policy
        self.config = config
        self.train_items = train_items
        self.val_items = val_items
        self.out_dir = Path(out_dir)
        spec = reward_spec(config.reward)
        self.reward_fn = reward_fn or (
            lambda adapter, rows, item: spec.fn(adapter, rows, item, max_new_tokens=config.max_new_tokens)
        )
        self.reward_success = _identity if reward_fn is not None else spec.success
        self.resume = resume
        self.processes = processes or current()
        self.show_progress = progress and self.processes.is_main
        # Validation runs the selection the policy will be used with (e.g. the `selection.json` of
        # the policy training started from), so the logged accuracy is the one that matters.
        self.val_selection = dict(val_selection or {})
        unknown = set(self.val_selection) - {"alpha", "cap", "fill"}
        if unknown:
            raise ValueError(
                f"unknown validation selection options {sorted(unknown)} (known: alpha, cap, fill)"
            )
        CaCoVIDSelector(policy, **self.val_selection)  # invalid values fail here, not after training
        self.kept: list[int] = []
        self.updater: PolicyUpdater | None = None
        self.epoch = 0
        self.position = 0
        self.items_done = 0
        self._val: tuple[list[QAItem], list[EncodedPrompt]] | None = None
        self._running: dict[str, float] = {}
        self._own_errors: dict[int, BaseException] = {}

    # ---- public ------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_NAME

    def fit(self, max_items: int | None = None, *, stop_at: int | None = None) -> dict[str, Any]:
        """Train to the end, or for at most `max_items` more items, or until `stop_at` items are done.

        The schedule stays sized for the whole run either way. Stopping at `stop_at` writes a
        checkpoint there (its policy is `checkpoint/policy`); a later call with a larger `stop_at`, or
        none, continues from it. Both limits count items over all processes. Returns a summary dict.
        """
        if stop_at is not None and stop_at < 1:
            raise ValueError(f"stop_at must be >= 1, got {stop_at}")
        procs = self.processes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ckpt = find_checkpoint(self.out_dir) if self.resume else None
        ckpt = procs.broadcast(ckpt)  # every process continues from the checkpoint process 0 sees
        if ckpt is not None:
            self._restore(ckpt)
        else:
            self._start()
        if procs.distributed:  # the same starting weights everywhere, whatever each process loaded
            for tensor in self.policy.state_dict().values():
                procs.broadcast_(tensor)
        total = len(self.kept) * self.config.epochs
        budget = math.inf if max_items is None else int(max_items)
        if stop_at is not None:
            budget = min(budget, max(0, int(stop_at) - self.items_done))
        done_now = failures = 0
        last_val: list[dict[str, Any]] = []
        val_at = ckpt_at = None
        with self._progress(total) as bar:
            while self.epoch < self.config.epochs and done_now < budget:
                if self.position >= len(self.kept):
                    self.epoch, self.position = self.epoch + 1, 0
                    continue
                # One round: the next items, the j-th to process j mod W, one optimiser step per iteration.
                size = int(min(self._round_size(), len(self.kept) - self.position, budget - done_now))
                mine = self.kept[self.position + procs.rank : self.position + size : procs.world_size]
                outcomes = _round_order(procs.all_gather(self._train_own(mine)), size)
                before = self.items_done
                for outcome in outcomes:
                    if outcome["event"] == "item_error":
                        # One bad item (unreadable video, a non-finite update) is recorded and
                        # skipped; the policy keeps the updates of the items before it. A run of
                        # failures is a broken setup, not bad items: stop and say so.
                        failures += 1
                        if failures >= MAX_CONSECUTIVE_FAILURES:
                            raise RuntimeError(
                                f"{failures} training items failed in a row; the last: {outcome['message']}"
                            ) from self._own_errors.get(outcome["index"])
                        stats = {"error": outcome["error"]}
                    else:
                        failures, stats = 0, outcome["stats"]
                        self._update_running(stats)
                    self.position += 1
                    self.items_done += 1
                    done_now += 1
                    self._log(
                        {
                            "event": outcome["event"],
                            "item_id": outcome["item_id"],
                            "index": outcome["index"],
                            "epoch": self.epoch,
                            "items_done": self.items_done,
                            **stats,
                        }
                    )
                    bar.update(self._running)
                if _crossed(before, self.items_done, self.config.val_every):
                    last_val, val_at = self.validate(), self.items_done
                if _crossed(before, self.items_done, self.config.checkpoint_every):
                    self.checkpoint()
                    ckpt_at = self.items_done
        finished = self.epoch >= self.config.epochs or (
            self.epoch == self.config.epochs - 1 and self.position >= len(self.kept)
        )
        stopped = stop_at is not None and self.items_done >= stop_at
        if not finished and stopped and done_now and ckpt_at != self.items_done:
            self.checkpoint()  # the run stops at `stop_at`: keep exactly this point
        if finished:
            if val_at != self.items_done or not last_val:
                last_val = self.validate()
            self.checkpoint()
            if procs.is_main:
                self.policy.save_pretrained(self.out_dir / POLICY_DIR)
                if self.val_selection:  # the saved policy runs the way it was validated
                    write_selection(
                        self.out_dir / POLICY_DIR,
                        self.val_selection,
                        "the selection this policy was validated with during training (inherited, not "
                        "re-tuned: `cacovid tune-selection` chooses again)",
                    )
            self._log({"event": "done", "items_done": self.items_done, "steps": self.updater.step})
            procs.barrier()
        return {
            "finished": finished,
            "items_done": self.items_done,
            "steps": self.updater.step,
            "ratio": self.updater.ratio,
            "train_items": len(self.kept),
            "validation": last_val,
            **self._running,
        }

    def validate(self) -> list[dict[str, Any]]:
        """Validation accuracy of the current policy at every `val_ratios` (logged). Empty if no items.

        With several processes every process must call it: each answers its share of the items.
        """
        if len(self.val_items) == 0 or not self.config.val_ratios:
            return []
        procs = self.processes
        if self._val is None:  # encode once (lazy item sequences would re-render on every access)
            if procs.distributed:  # each process validates its share of the items
                items = [self.val_items[i] for i in shard(len(self.val_items), procs)]
            else:
                items = list(self.val_items)
            self._val = (items, [self.adapter.encode_item(it) for it in items])
        items, prompts = self._val
        selector = CaCoVIDSelector(self.policy, **self.val_selection)
        options = dict(batch_size=self.config.val_batch_size, max_new_tokens=self.config.max_new_tokens)
        if procs.distributed:
            ratios = self.config.val_ratios
            outcomes = validation_outcomes(self.adapter, selector, prompts, items, ratios, **options)
            rows = validation_rows(merge_outcomes(procs.all_gather(outcomes)))
        else:
            rows = validate_selector(
                self.adapter, selector, prompts, items, self.config.val_ratios, **options
            )
        for row in rows:
            self._log({"event": "val", "items_done": self.items_done, **row, "selection": self.val_selection})
        return rows

    def checkpoint(self) -> Path:
        """Write `out_dir/checkpoint` (process 0; every process must call it, the others wait)."""
        procs = self.processes
        state = {
            "updater": self.updater.state_dict(),
            "kept": list(self.kept),
            "n_items": len(self.train_items),
            "epoch": self.epoch,
            "position": self.position,
            "items_done": self.items_done,
            "running": dict(self._running),
            "log_bytes": self.log_path.stat().st_size if self.log_path.exists() else 0,
            "world_size": procs.world_size,
        }
        if procs.distributed:  # each process draws its own rollouts: keep every generator
            state["generators"] = procs.all_gather(self.updater.generator.get_state())
        path = self.out_dir / CHECKPOINT_DIR
        if procs.is_main:
            path = save_checkpoint(self.out_dir, self.policy, state, json.dumps(self.config.to_dict()))
        procs.barrier()
        return path

    # ---- internals ---------------------------------------------------------------------------
    def _start(self) -> None:
        procs = self.processes
        if procs.is_main and self.log_path.exists():
            self.log_path.unlink()  # a fresh run starts a fresh log
        c = self.config
        blind = Progress("blind test", len(self.train_items), unit="items", enabled=self.show_progress)
        with blind:
            if c.blind_filter and procs.distributed:  # each process tests its share of the items
                mine = list(shard(len(self.train_items), procs))
                correct = blind_answers_correct(
                    self.adapter,
                    [self.train_items[i] for i in mine],
                    batch_size=c.val_batch_size,
                    max_new_tokens=c.max_new_tokens,
                    progress=lambda n: blind.advance(n * procs.world_size),
                )
                pooled = procs.all_gather(list(zip(mine, correct, strict=True)))
                self.kept = sorted(i for part in pooled for i, ok in part if not ok)
            elif c.blind_filter:
                self.kept = blind_filter(
                    self.adapter,
                    self.train_items,
                    batch_size=c.val_batch_size,
                    max_new_tokens=c.max_new_tokens,
                    progress=blind.advance,
                )
            else:
                self.kept = list(range(len(self.train_items)))
        self._log(
            {
                "event": "filter",
                "n": len(self.train_items),
                "kept": len(self.kept),
                "dropped": len(self.train_items) - len(self.kept),
                "blind_filter": c.blind_filter,
            }
        )
        if not self.kept:
            raise ValueError("the blind test dropped every training item: nothing to train on")
        if procs.is_main:
            self.config.save(self.out_dir / "train_config.json")
        self.updater = self._updater()
        self.epoch = self.position = self.items_done = 0

    def _restore(self, path: Path) -> None:
        state, saved_json = load_checkpoint(path, self.policy)
        world = int(state.get("world_size", 1))  # checkpoints before multi-process runs: one process
        if world != self.processes.world_size:
            raise ValueError(
                f"cannot resume {path}: it was written by a run of {world} process(es), this run has "
                f"{self.processes.world_size}; resume it with {world} (accelerate launch "
                f"--num_processes {world}), or start another run (--no-resume or another --out)"
            )
        saved = migrate_config(json.loads(saved_json), path)
        now = self.config.to_dict()
        diff = sorted(
            k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in _RESUMABLE_CHANGES
        )
        if diff:
            raise ValueError(f"cannot resume {path}: training config differs in {diff}")
        if int(state["n_items"]) != len(self.train_items):
            raise ValueError(
                f"cannot resume {path}: it was made with {state['n_items']} training items, "
                f"not {len(self.train_items)}"
            )
        self.kept = [int(i) for i in state["kept"]]
        self.updater = self._updater()
        self.updater.load_state_dict(state["updater"])
        if "generators" in state:  # each process continues its own rollout stream
            self.updater.generator.set_state(state["generators"][self.processes.rank])
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.items_done = int(state["items_done"])
        self._running = {k: float(v) for k, v in state["running"].items()}
        if self.processes.is_main and self.log_path.exists():
            with open(self.log_path, "r+b") as f:  # drop what the interrupted run logged after its checkpoint
                f.truncate(int(state["log_bytes"]))
        self._log({"event": "resume", "items_done": self.items_done, "checkpoint": str(path)})

    def _round_size(self) -> int:
        """Items per round: `items_per_step`, rounded up to a whole number of items per process."""
        W = self.processes.world_size
        return W * math.ceil(self.config.items_per_step / W)

    def _updater(self) -> PolicyUpdater:
        """The run's updater: its schedule spans every optimiser step, I per round of items."""
        c = self.config
        rounds = math.ceil(len(self.kept) / self._round_size())
        return PolicyUpdater(self.policy, c, rounds * c.iterations * c.epochs, processes=self.processes)

    def _train_own(self, indices: list[int]) -> list[dict[str, Any]]:
        """Train this process's items of the round (indices into the training items; none: it joins
        the round's steps). Returns what the log needs per item (picklable, for gathering)."""
        self._own_errors = {}
        jobs, outcomes = [], {}
        for index in indices:
            item = self.train_items[index]
            try:
                prompt = self.adapter.encode_item(item)
            except ITEM_ERRORS as exc:
                outcomes[index] = self._failed(index, item, exc)
                continue
            jobs.append((index, item, self._job(item, prompt)))
        results = self.updater.train_round([job for _, _, job in jobs])
        for (index, item, _), result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                outcomes[index] = self._failed(index, item, result)
            else:
                outcomes[index] = {"event": "item", "item_id": item.id, "index": index, "stats": result}
        return [outcomes[i] for i in indices]

    def _job(self, item: QAItem, prompt: EncodedPrompt) -> ItemJob:
        """An item's job for the updater: its rollouts scored by one batched reward call."""

        def score(masks: torch.Tensor) -> torch.Tensor:
            return self.reward_fn(self.adapter, [(prompt, m, None) for m in masks], item)

        options = len(item.options) if item.problem_type == "multiple choice" and item.options else 0
        return ItemJob(prompt, score, self.reward_success, 1.0 / options if options else 0.0)

    def _failed(self, index: int, item: QAItem, exc: BaseException) -> dict[str, Any]:
        self._own_errors[index] = exc
        return {
            "event": "item_error",
            "item_id": item.id,
            "index": index,
            "error": f"{type(exc).__name__}: {exc}",
            "message": str(exc),
        }

    def _update_running(self, stats: dict[str, Any]) -> None:
        for key in ("reward_token", "reward_top", "evidence_recall_top"):
            if key in stats:
                prev = self._running.get(key)
                self._running[key] = stats[key] if prev is None else 0.9 * prev + 0.1 * stats[key]
        self._running["ratio"] = stats["ratio_next"]

    def _log(self, record: dict[str, Any]) -> None:
        if not self.processes.is_main:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def _progress(self, total: int) -> _TrainProgress:
        return _TrainProgress(
            Progress("train", total, completed=self.items_done, unit="items", enabled=self.show_progress)
        )


def _identity(rewards: torch.Tensor) -> torch.Tensor:
    return rewards


def _round_order(per_process: list[list[dict[str, Any]]], size: int) -> list[dict[str, Any]]:
    """A round's outcomes in item order from each process's list (item j was process j mod W's)."""
    W = len(per_process)
    return [per_process[j % W][j // W] for j in range(size)]


def _crossed(before: int, after: int, every: int) -> bool:
    """Did the item count pass a multiple of `every` going from `before` to `after`? (A round of
    several items may step over the multiple itself.)"""
    return after // every > before // every


class _TrainProgress:
    """The trainer's progress (a bar at a terminal, plain lines in a log) with the running reward,
    top-rollout reward and r."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __enter__(self) -> _TrainProgress:
        self.progress.__enter__()
        return self

    def update(self, running: dict[str, float]) -> None:
        info = (
            f"reward {running.get('reward_token', float('nan')):.3f}  "
            f"top {running.get('reward_top', float('nan')):.3f}  r {running.get('ratio', float('nan')):.3f}"
        )
        self.progress.advance(info=info)

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)
