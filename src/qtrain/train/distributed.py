"""Multi-process training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m qtrain train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`setup` joins the process group (NCCL on CUDA, gloo on CPU). The batch size is
global: each rank takes its share of every batch, DDP averages the gradients, and every
rank then takes the same optimizer step. SR stays identical across ranks with no extra
communication because its randomness is keyed by (seed, step, parameter) (``qtrain.rng``).

Every collective waits at most ``timeout`` seconds (``--dist-timeout``): a rank that stopped
or died makes the others raise :class:`DistError` (one line) instead of hanging. Only
rank 0 writes files and prints the summary; :func:`teardown` shuts the group down after a
final barrier.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class DistError(RuntimeError):
    """Another rank stopped answering (stopped, dead, or its connection broke)."""


def env_rank() -> int:
    """This process's rank as torchrun announces it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def setup(device_kind: str, timeout: float = 600.0) -> Dist:
    """Join the process group if launched by torchrun with more than one process; every
    collective then gives up after ``timeout`` seconds."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        with guard(Dist(rank, world, local), timeout):
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
    return Dist(rank, world, local)


@contextlib.contextmanager
def guard(d: Dist, timeout: float, hint: str = "then resume the run") -> Iterator[None]:
    """Turn a collective's failure (a peer that timed out or vanished) into one-line :class:`DistError`."""
    try:
        yield
    except RuntimeError as e:
        if not d.enabled or isinstance(e, DistError):
            raise
        text = str(e).strip()
        if not (isinstance(e, getattr(dist, "DistError", ())) or "gloo" in text.lower() or "nccl" in text.lower()
                or "timed out" in text.lower() or "timeout" in text.lower() or "connection" in text.lower()):
            raise
        first = text.splitlines()[0].rsplit("] ", 1)[-1][:160] if text else type(e).__name__
        raise DistError(f"rank {d.rank}: another process stopped answering within --dist-timeout {timeout:g} s "
                        f"({first}); check that every rank is alive, {hint}") from None


def all_sum(values: list, d: Dist, device) -> list:
    """Sum a list of numbers over ranks (a no-op for one process)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def any_flag(flags: list, d: Dist, device) -> list:
    """Element-wise logical OR of a list of booleans over ranks (so every rank decides alike)."""
    if not d.enabled:
        return [bool(f) for f in flags]
    t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def teardown(d: Dist) -> None:
    """Final barrier, then shut the process group down (every rank, on success only: after a
    peer failed, a collective shutdown would wait for it)."""
    if d.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, bit for bit (to check that replicas agree)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.full_tensor() if hasattr(t, "full_tensor") else t  # FSDP: the whole tensor (a collective)
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gather_digests(module: torch.nn.Module, d: Dist) -> list:
    """Every rank's :func:`state_digest`, in rank order (one entry for one process)."""
    mine = state_digest(module)
    if not d.enabled:
        return [mine]
    out = [None] * d.world_size
    dist.all_gather_object(out, mine)
    return out
