"""The optimizer's checkpoint: what :meth:`qtrain.QuantizedOptimizer.state_dict` saves
(:func:`saved_state`) and how :meth:`~qtrain.QuantizedOptimizer.load_state_dict` restores it
(:func:`load_state`), checking everything before it changes anything.

:func:`check_loadable` validates the whole saved state -- the ``"qtrain"`` entry (method, BC
rounding, one grid, shape and, for BC, one latent tensor per quantized parameter: a tensor of
exactly that shape, floating point, finite; seed and step integers) and the base optimizer's
state (per-parameter buffers of the parameter's shape, finite) -- and returns the parsed grids,
seed and step. A refusal is one ``ValueError`` and leaves the optimizer exactly as it was.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import List, Tuple

import torch

from ._optim_support import as_int, check_representable, end_float32_work, float32_work
from .dynamic import DynamicGrid
from .grid import Grid
from .lowprec_state import cast_state, check_saved_state_dtype

# per-parameter buffers of torch's optimizers that have the parameter's shape
_SHAPED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "acc_delta", "sum", "ax",
           "exp_inf", "mu_product_buffer")
_FIX = "build the optimizer over the same model and params, or restore a good checkpoint"


def _finite(t: torch.Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def check_loadable(opt, q, sd: dict) -> Tuple[List[Grid], int, int]:
    """``(grids, seed, step)`` of a saved state that ``opt`` can load; raises before any change."""
    if not isinstance(q, Mapping):
        raise ValueError(f"optimizer state's 'qtrain' entry is a {type(q).__name__}, not a mapping; {_FIX}")
    if q.get("method") != opt.method:
        raise ValueError(f"checkpoint was saved with method={q.get('method')!r} but this optimizer has {opt.method!r}")
    if opt.method == "bc" and q.get("bc_rounding") != opt.bc_rounding:
        raise ValueError(f"checkpoint was saved with bc_rounding={q.get('bc_rounding')!r} but this optimizer has "
                         f"{opt.bc_rounding!r}")
    grids, latents, shapes = q.get("grids"), q.get("latents"), q.get("shapes")
    if not isinstance(grids, list) or not isinstance(latents, list) or not isinstance(shapes, (list, type(None))):
        raise ValueError(f"optimizer state's grids/latents/shapes are not lists; {_FIX}")
    if len(grids) != len(opt.qparams):
        raise ValueError(f"checkpoint quantizes {len(grids)} tensors, this optimizer {len(opt.qparams)}; {_FIX}")
    shapes = shapes or [list(getattr(lat, "shape", ())) for lat in latents] or [list(p.shape) for p in opt.qparams]
    if len(shapes) != len(opt.qparams):
        raise ValueError(f"checkpoint records {len(shapes)} shapes for {len(opt.qparams)} quantized tensors; {_FIX}")
    for name, shape, p in zip(opt.names, shapes, opt.qparams):
        if not isinstance(shape, (list, tuple)) or tuple(shape) != tuple(p.shape):
            shown = tuple(shape) if isinstance(shape, (list, tuple)) else shape
            raise ValueError(f"checkpoint's tensor for {name} has shape {str(shown)[:40]}, this optimizer's "
                             f"{tuple(p.shape)}; {_FIX}")
    if len(latents) != len(opt.latents):
        raise ValueError(f"checkpoint holds {len(latents)} latent tensors, this optimizer {len(opt.latents)}")
    for name, saved, mine in zip(opt.names, latents, opt.latents):
        if not isinstance(saved, torch.Tensor) or not saved.is_floating_point() or saved.shape != mine.shape:
            what = (f"{saved.dtype} of shape {tuple(saved.shape)}" if isinstance(saved, torch.Tensor)
                    else type(saved).__name__)
            raise ValueError(f"checkpoint's latent weights of {name} are {what}, expected floating point of shape "
                             f"{tuple(mine.shape)}; {_FIX}")
        if not _finite(saved):
            raise ValueError(f"checkpoint's latent weights of {name} hold NaN or inf; restore a good checkpoint")
    try:
        parsed = [Grid.from_dict(g) for g in grids]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"checkpoint holds a grid that is not one ({' '.join(str(e).split())[:80]}); {_FIX}") from None
    seed, step = as_int(q.get("seed"), "seed"), as_int(q.get("step"), "step")
    if not 0 <= seed < 2**64 or not 0 <= step < 2**63:
        raise ValueError(f"checkpoint's seed {seed} or step {step} is out of range (0..2**64-1, 0..2**63-1); {_FIX}")
    _check_base(opt, sd)
    return parsed, seed, step


def _check_base(opt, sd: dict) -> None:
    """The base optimizer's saved state: buffers of the parameter's shape, finite values."""
    state, groups = sd.get("state"), sd.get("param_groups")
    if not isinstance(state, Mapping) or not isinstance(groups, list) or not all(
            isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups):
        raise ValueError(f"optimizer state lacks the base optimizer's 'state' and 'param_groups'; {_FIX}")
    saved_ids = list(itertools.chain.from_iterable(g["params"] for g in groups))
    mine = list(itertools.chain.from_iterable(g["params"] for g in opt.base.param_groups))
    params = dict(zip(saved_ids, mine)) if len(saved_ids) == len(mine) else {}
    for key, entry in state.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"optimizer state of parameter {key!r} is a {type(entry).__name__}; {_FIX}")
        p = params.get(key)
        for name, v in entry.items():
            if not isinstance(v, torch.Tensor):
                continue
            if not _finite(v):
                raise ValueError(f"optimizer state {name!r} of parameter {key!r} holds NaN or inf; restore a good checkpoint")
            if p is not None and name in _SHAPED and v.shape != p.shape:
                raise ValueError(f"optimizer state {name!r} of parameter {key!r} has shape {tuple(v.shape)}, the "
                                 f"parameter {tuple(p.shape)}; {_FIX}")


def saved_state(opt) -> dict:
    """``opt.base.state_dict()`` plus the ``"qtrain"`` entry (see the module docstring)."""
    sd = opt.base.state_dict()
    sd["qtrain"] = {"version": 2, "method": opt.method, "seed": opt.seed, "step": opt.step_count,
                    "bc_rounding": opt.bc_rounding, "names": list(opt.names),
                    "shapes": [list(p.shape) for p in opt.qparams],
                    "grids": [g.to_dict() for g in opt.grids], "latents": list(opt.latents),
                    "state_dtype": None if opt.state_dtype is None else str(opt.state_dtype),
                    "dynamic": [opt.dynamic[i].to_dict() if i in opt.dynamic else None
                                for i in range(len(opt.qparams))]}
    if opt._steps is not None:
        sd["qtrain"]["step_record"] = opt._steps.values()
    return sd


def load_state(opt, state_dict: dict) -> None:
    """Restore :func:`saved_state` into ``opt`` (all checks first; a refusal changes nothing)."""
    sd = dict(state_dict)
    q = sd.pop("qtrain", None)
    if q is None:
        raise ValueError("optimizer state has no 'qtrain' entry: it was not saved by a QuantizedOptimizer")
    grids, seed, step = check_loadable(opt, q, sd)  # everything, before anything changes
    check_saved_state_dtype(q, opt.state_dtype)
    dynamic = {i: DynamicGrid.from_dict(d) for i, d in enumerate(q.get("dynamic") or []) if d}
    mine = opt.grids
    opt.grids = grids
    try:
        if opt.method != "float":
            check_representable(opt.names, opt.qparams, opt.grids)
        swapped = float32_work(opt.qparams)  # base state of float16/bfloat16 params stays float32
        try:
            opt.base.load_state_dict(sd)
        finally:
            end_float32_work(opt.qparams, swapped)
        if opt.state_dtype is not None:
            cast_state(opt.base, opt.state_dtype, sd)
    except BaseException:
        opt.grids = mine
        raise
    opt.seed, opt.step_count = seed, step
    opt.dynamic = dynamic
    if opt._steps is not None and q.get("step_record") is not None:
        opt._steps.load(q["step_record"])
    with torch.no_grad():
        for latent, saved in zip(opt.latents, q["latents"]):
            latent.copy_(saved)
        opt._requantize_after_load()
