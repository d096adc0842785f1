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


def gather_sums(sums: dict, d: Dist, device) -> dict:
    """An epoch's running sums (``loss_sum``, ``correct``, ``count``) over all ranks, for a
    mid-epoch checkpoint: the totals, plus each rank's own (``ranks``, a float64 tensor of rows
    ``[loss_sum, correct, count]``, exact for the float32 loss sum) so that a resumed epoch
    continues every rank's sum where it was and ends bit-identical. Alone: ``sums`` as they are."""
    if not d.enabled:
        return sums
    mine = torch.tensor([float(sums["loss_sum"]), float(sums["correct"]), float(sums["count"])],
                        dtype=torch.float64, device=device)
    out = [torch.zeros_like(mine) for _ in range(d.world_size)]
    dist.all_gather(out, mine)
    ranks = torch.stack(out).cpu()
    return {"loss_sum": ranks[:, 0].sum(), "correct": int(ranks[:, 1].sum()), "count": int(ranks[:, 2].sum()),
            "ranks": ranks}


def local_sums(partial: dict, d: Dist) -> dict:
    """This rank's share of the running sums a mid-epoch checkpoint holds (see :func:`gather_sums`);
    a checkpoint saved by one process continues on rank 0 (the others start from zero)."""
    if not partial or "loss_sum" not in partial:
        return partial
    ranks = partial.get("ranks")
    if ranks is None:
        if d.main:
            return partial
        return dict(partial, loss_sum=torch.zeros(()), correct=0, count=0)
    if tuple(ranks.shape) != (d.world_size, 3):
        raise ValueError(f"this checkpoint was saved mid-epoch by {ranks.shape[0]} processes; resume it with "
                         f"torchrun --nproc_per_node {ranks.shape[0]} (or let it reach the end of the epoch)")
    loss, correct, count = ranks[d.rank].tolist()
    out = {k: v for k, v in partial.items() if k != "ranks"}
    return dict(out, loss_sum=torch.tensor(loss, dtype=torch.float32), correct=int(correct), count=int(count))


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
