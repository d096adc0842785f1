r"""Sharded checkpoints of a :class:`~qtrain.QuantizedOptimizer` with ``torch.distributed.checkpoint``.

Under FSDP2 every rank holds a shard of each parameter, of Adam's moments and of BC's latent
weights :math:`w_r`; a checkpoint is written by all ranks at once (``dcp.save``) and read back on
the same or another number of ranks (``dcp.load`` reshards). :func:`state_dict` gives the
optimizer's part in a form DCP can save and load in place:

* ``"base"``: ``get_optimizer_state_dict(model, opt.base)`` (keyed by parameter names; Adam's
  moments as DTensors);
* ``"qtrain"``: method, seed, step, grids (plain values) and ``latents``, one DTensor per
  quantized parameter, sharded like it (BC; empty otherwise).

A resumed run continues bit-identically: SR's draws depend on (seed, step, parameter, global
index) only, never on the number of ranks (:mod:`qtrain._sharded`).

Saving (every rank), then resuming into a model and optimizer built the same way (any number
of ranks; load the model first)::

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    from qtrain import sharded

    dcp.save({"model": get_model_state_dict(model), "optim": sharded.state_dict(model, opt)}, checkpoint_id="ckpt")

    state = {"model": get_model_state_dict(model), "optim": sharded.state_dict(model, opt)}
    dcp.load(state, checkpoint_id="ckpt")
    set_model_state_dict(model, state["model"])
    sharded.load_state_dict(model, opt, state["optim"])
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ._sharded import is_dtensor, local
from .optim import QuantizedOptimizer

__all__ = ["state_dict", "load_state_dict"]


def _as_global(latent: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """BC's local latent as a DTensor laid out like its parameter ``p`` (``latent`` itself when
    ``p`` is a plain tensor)."""
    if not is_dtensor(p):
        return latent
    from torch.distributed.tensor import DTensor
    return DTensor.from_local(latent, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())


def _init_state(base: torch.optim.Optimizer) -> None:
    """Give a base optimizer that has not stepped its state tensors, equal to having none: one step
    at lr 0 with zero gradients creates them (what ``get_optimizer_state_dict`` would do, leaving
    Adam at step 1), then every state tensor is zeroed (step 0, zero moments), from which the next
    step computes what the first step of a fresh Adam, SGD (no dampening) or RMSprop computes.
    DCP needs these tensors both to save and, on a new optimizer, as the template it loads into."""
    if base.state:
        return
    params = [p for g in base.param_groups for p in g["params"] if p.requires_grad]
    grads, lrs = [p.grad for p in params], [g.get("lr") for g in base.param_groups]
    try:
        with torch.no_grad():
            for p in params:
                p.grad = torch.zeros_like(p)
        for g, lr in zip(base.param_groups, lrs):
            if lr is not None:
                g["lr"] = torch.zeros_like(lr) if isinstance(lr, torch.Tensor) else 0.0
        base.step()
    finally:
        for g, lr in zip(base.param_groups, lrs):
            if lr is not None:
                g["lr"] = lr
        for p, grad in zip(params, grads):
            p.grad = grad
    with torch.no_grad():
        for st in base.state.values():
            for v in st.values():
                if isinstance(v, torch.Tensor):
                    v.zero_()


def state_dict(model: nn.Module, opt: QuantizedOptimizer) -> Dict:
    """The optimizer's state for ``dcp.save`` (and, from a freshly built optimizer, the template
    that ``dcp.load`` fills in place before :func:`load_state_dict`)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    if not isinstance(opt, QuantizedOptimizer):
        raise TypeError(f"opt must be a qtrain.QuantizedOptimizer, got {type(opt).__name__}")
    _init_state(opt.base)
    with torch.no_grad():
        latents = {name: _as_global(latent, p) for name, p, latent in zip(opt.names, opt.qparams, opt.latents)}
    return {"base": get_optimizer_state_dict(model, opt.base),
            "qtrain": {"version": 2, "method": opt.method, "seed": opt.seed, "step": opt.step_count,
                       "bc_rounding": opt.bc_rounding, "names": list(opt.names),
                       "shapes": [list(p.shape) for p in opt.qparams], "grids": [g.to_dict() for g in opt.grids],
                       "latents": latents}}


def load_state_dict(model: nn.Module, opt: QuantizedOptimizer, state: Dict) -> None:
    """Restore ``state`` (a :func:`state_dict` that ``dcp.load`` filled): the base optimizer's state,
    then, through :meth:`QuantizedOptimizer.load_state_dict` (its checks and one-line refusals),
    the grids, seed, step and this rank's shards of BC's latent weights. Load the model's state
    first."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    if not isinstance(state, dict) or "base" not in state or "qtrain" not in state:
        raise ValueError("sharded optimizer state must hold 'base' and 'qtrain' (made by qtrain.sharded.state_dict)")
    q = dict(state["qtrain"])
    saved = q.get("latents") or {}
    names = list(q.get("names") or [])
    if opt.method == "bc" and sorted(saved) != sorted(names):
        raise ValueError(f"sharded checkpoint holds BC latents for {sorted(saved)[:4]}, its names are {names[:4]}: corrupt")
    q["latents"] = [local(saved[n]) for n in names] if opt.method == "bc" else []
    _init_state(opt.base)
    set_optimizer_state_dict(model, opt.base, state["base"])
    opt.load_state_dict({**opt.base.state_dict(), "qtrain": q})
