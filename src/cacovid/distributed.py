"""Processes of one multi-process run (`accelerate launch`, `torchrun`, MPI), behind one small object.

Why a module of its own: training and evaluation both split their items across processes and meet
at the same few collective operations (average the gradients, gather rows, wait for process 0). With
those in one module below both, the rest of the package never touches `torch.distributed` directly,
and a run of one process goes through the same code with every operation a no-op.

- `init_from_environment(device)` joins the process group that the launcher described in the
  environment (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, as `accelerate
  launch` and `torchrun` set them; MPI's variables as accelerate reads them), with NCCL for a CUDA
  device and gloo otherwise. One process (no launcher) is `SINGLE`.
- `current()` is the group in force: the one initialised (by cacovid or by the caller, e.g.
  accelerate's `PartialState()`), else `SINGLE`.
- `shard(n, group)` is how items are split: round-robin by index, process r gets r, r + W, r + 2W, …

Object collectives (rows, logs, generator states) run on a gloo group of their own even when the
tensors go through NCCL, so they never need a CUDA device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "SINGLE",
    "Processes",
    "current",
    "init_from_environment",
    "joined",
    "process_device",
    "shard",
    "shutdown",
]

# Environment variables that carry the launch, in accelerate's order of preference.
_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK")
_WORLD_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMI_SIZE")
_LOCAL_VARS = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip():
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
    return default


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: `rank` of `world_size`, `local_rank` on its node.

    Every collective is a no-op (or returns its own argument) when `world_size` is 1, so callers
    write one code path.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    _objects: Any = field(default=None, repr=False, compare=False)  # the gloo group for objects

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes shared files (logs, checkpoints, results)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process reaches this call (e.g. until process 0 has written a file)."""
        if self.distributed:
            dist.barrier(group=self._objects)

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over all processes, in place; every process gets the same result.

        gloo reduces CPU tensors: a CUDA tensor under gloo makes the trip through host memory.
        """
        if not self.distributed:
            return tensor
        if self.backend == "gloo" and tensor.device.type != "cpu":
            host = tensor.cpu()
            dist.all_reduce(host, op=dist.ReduceOp.SUM)
            tensor.copy_(host)
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Process 0's `tensor` on every process, in place (e.g. to start from the same weights)."""
        if not self.distributed:
            return tensor
        if self.backend == "gloo" and tensor.device.type != "cpu":
            host = tensor.cpu()
            dist.broadcast(host, src=0)
            tensor.copy_(host)
        else:
            dist.broadcast(tensor, src=0)
        return tensor

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's `obj` (picklable), in rank order, on every process."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._objects)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Process 0's `obj` on every process."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self._objects)
        return box[0]


SINGLE = Processes()


def shard(n: int, processes: Processes) -> range:
    """Indices 0..n-1 that `processes.rank` handles: round-robin, r, r + W, r + 2W, …

    Deterministic and disjoint; together the processes cover every index exactly once.
    """
    return range(processes.rank, int(n), processes.world_size)


def _from_initialised() -> Processes:
    """The group already initialised in this process (torch.distributed must be initialised)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if world == 1:
        return SINGLE
    backend = str(dist.get_backend())
    objects = dist.new_group(backend="gloo") if backend != "gloo" else None
    return Processes(rank, world, _env_int(_LOCAL_VARS, rank), backend, objects)


_CURRENT: Processes | None = None
_OWNED = False  # whether init_from_environment initialised the group (and shutdown may close it)


def current() -> Processes:
    """The processes of this run: those of an initialised torch.distributed group, else `SINGLE`."""
    global _CURRENT
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    if _CURRENT is None:
        _CURRENT = _from_initialised()
    return _CURRENT


def init_from_environment(device: str = "cpu") -> Processes:
    """Join the launcher's process group (NCCL when `device` is CUDA, gloo otherwise).

    Without a launcher (`WORLD_SIZE` unset or 1) nothing is initialised and `SINGLE` is returned.
    A group the caller initialised already is reused as it is.
    """
    global _CURRENT, _OWNED
    if dist.is_available() and dist.is_initialized():
        return current()
    world = _env_int(_WORLD_VARS, 1)
    if world <= 1:
        return SINGLE
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    rank, local = _env_int(_RANK_VARS, 0), _env_int(_LOCAL_VARS, 0)
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set: start the run with "
            "`accelerate launch` or `torchrun`, which set them"
        )
    cuda = str(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but CUDA is not available")
        torch.cuda.set_device(local % torch.cuda.device_count())
    backend = "nccl" if cuda else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "rank": rank, "world_size": world}
    if cuda:
        kwargs["device_id"] = torch.device("cuda", local % torch.cuda.device_count())
    dist.init_process_group(**kwargs)
    _OWNED = True
    objects = dist.new_group(backend="gloo") if backend != "gloo" else None
    _CURRENT = Processes(rank, world, local, backend, objects)
    return _CURRENT


def shutdown(synchronise: bool = True) -> None:
    """Leave the process group `init_from_environment` joined (a no-op for one process, or for a
    group the caller initialised: that one is the caller's to close).

    With `synchronise`, the processes first meet at a barrier, so none tears down its gloo
    connections while another still uses them (an early leaver can abort its peer). After a failure
    pass False: the other processes may never reach the barrier.
    """
    global _CURRENT, _OWNED
    if _OWNED and dist.is_available() and dist.is_initialized():
        if synchronise and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
    _CURRENT, _OWNED = None, False


@contextmanager
def joined(device: str = "cpu") -> Iterator[Processes]:
    """`init_from_environment`, then `shutdown` on the way out: synchronised after success, without
    the barrier after a failure (the other processes may never reach it)."""
    processes = init_from_environment(device)
    try:
        yield processes
    except BaseException:
        shutdown(synchronise=False)
        raise
    shutdown()


def process_device(device: str, processes: Processes) -> str:
    """The device this process should load onto: plain "cuda" becomes "cuda:LOCAL_RANK" when the
    run has several processes (one GPU each); anything else is kept as given."""
    if processes.distributed and device == "cuda":
        return f"cuda:{processes.local_rank % max(torch.cuda.device_count(), 1)}"
    return device
