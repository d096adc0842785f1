r"""``qtrain train --fsdp``: the model sharded over the ranks with FSDP2, and its sharded checkpoints.

:func:`shard_model` applies ``fully_shard`` to every top-level block that holds parameters, then
to the root (one all-gather per block in the forward pass). Each rank then holds a shard of every
parameter, of Adam's moments and of BC's latent weights: about :math:`1/N` of the optimizer's
memory on :math:`N` ranks (``benchmarks/bench_fsdp_memory.py``).

Checkpoints: the sharded tensors (model, optimizer, weight-change tracker) are written by all
ranks with ``torch.distributed.checkpoint`` into ``RUN/sharded-<k>/``, then rank 0 writes
``checkpoint.pt`` (epoch, history, scheduler, ...) naming that folder, atomically; the folder
of the previous checkpoint is removed only after that. A run killed while saving therefore
resumes from the previous checkpoint. ``--resume`` reads the named folder on any number of
ranks (DCP reshards).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .. import sharded
from . import distributed

SHARDED = re.compile(r"sharded-(\d+)")


def ensure_group() -> bool:
    """FSDP needs a process group: one process (no torchrun) gets a group of one; returns
    whether this call made it (then :func:`end_group` removes it)."""
    if dist.is_initialized():
        return False
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return True


def end_group(made: bool) -> None:
    if made and dist.is_initialized():
        dist.destroy_process_group()


def shard_model(model: nn.Module) -> nn.Module:
    """``fully_shard`` each top-level block with parameters, then the root; returns ``model``."""
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    return model


def sync_buffers(model: nn.Module, d: distributed.Dist) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics), as DDP does before each forward:
    FSDP shards parameters only, so without this each rank's statistics follow its own batches."""
    if d.enabled:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def _tensors(model, opt, tracker) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    return {"model": get_model_state_dict(model), "optim": sharded.state_dict(model, opt),
            "tracker": tracker.state_dict()}


def save(out_dir: Path, model, opt, tracker, d: distributed.Dist) -> str:
    """Write the sharded tensors into a new ``sharded-<k>`` folder (all ranks); returns its name."""
    import torch.distributed.checkpoint as dcp

    taken = [int(m.group(1)) for p in Path(out_dir).iterdir() if (m := SHARDED.fullmatch(p.name))] \
        if Path(out_dir).is_dir() else []
    k = [max(taken, default=-1) + 1]
    if dist.is_initialized() and d.enabled:  # every rank writes into the same folder
        dist.broadcast_object_list(k, src=0)
    name = f"sharded-{k[0]}"
    dcp.save(_tensors(model, opt, tracker), checkpoint_id=str(Path(out_dir) / name))
    return name


def prune(out_dir: Path, keep: str) -> None:
    """Remove the sharded folders other than ``keep`` (rank 0, after ``checkpoint.pt`` names ``keep``)."""
    for p in Path(out_dir).iterdir():
        if SHARDED.fullmatch(p.name) and p.name != keep:
            shutil.rmtree(p, ignore_errors=True)


def load(out_dir: Path, name, model, opt, tracker) -> None:
    """Read the sharded folder ``name`` of a checkpoint into the run's objects (one-line errors)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    if not isinstance(name, str) or not SHARDED.fullmatch(name) or not (Path(out_dir) / name).is_dir():
        raise ValueError(f"checkpoint in {out_dir} names sharded tensors {name!r}, which are missing; it was not "
                         "saved with --fsdp, or the folder was removed: resume with the run's own launcher and flags")
    state = _tensors(model, opt, tracker)
    try:
        dcp.load(state, checkpoint_id=str(Path(out_dir) / name))
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ValueError(f"sharded checkpoint {Path(out_dir) / name} does not fit this run ({first}); "
                         "delete the run to start over, or restore a good copy") from None
    set_model_state_dict(model, state["model"])
    sharded.load_state_dict(model, opt, state["optim"])
    with torch.no_grad():
        tracker.load_state_dict(state["tracker"])
