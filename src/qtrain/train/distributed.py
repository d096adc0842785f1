"""Multi-process training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m qtrain train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`setup` joins the process group (NCCL on CUDA, gloo on CPU). The batch size is
global: each rank takes its share of every batch, DDP averages the gradients, and every
rank then takes the same optimizer step. SR stays identical across ranks with no extra
communication because its randomness is keyed by (seed, step, parameter) (``qtrain.rng``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

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


def setup(device_kind: str) -> Dist:
    """Join the process group if launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return Dist(rank, world, local)


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


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, bit for bit (to check that replicas agree)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
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
