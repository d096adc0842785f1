r"""FSDP2 / DTensor parameters in :class:`qtrain.QuantizedOptimizer`: each rank rounds its own shard.

``torch.distributed.fsdp.fully_shard`` turns every parameter into a ``DTensor`` of which each
rank holds a block of rows (``Shard(0)``; uneven when dim 0 is not divisible by the world size,
and possibly empty). The rounding kernels take plain tensors only, so the optimizer works on
each parameter's *local shard* (``p.to_local()``, a view of the shard's storage) and its local
gradient, and places the shard in the whole tensor's random stream: when the shard is the
block of the row-major whole that starts at flat index :math:`o` (its *global offset*), its
entry :math:`j` is rounded with :math:`u_{o + j}` of the key :math:`(\text{seed}, t, i)`
(:func:`qtrain.rng.offset_key`). SR of the shards is therefore the whole tensor's SR, bit for
bit, on any number of ranks; an unsharded tensor has :math:`o = 0` (today's streams).

What needs the whole tensor:

* a grid from a callable (``lambda p: Grid.binary(p.abs().mean().item())``) is evaluated once, at
  construction, on the full parameter (gathered one at a time: FSDP's forward gathers as much),
  so per-layer scales are the unsharded run's to the bit;
* the finite check of the gradients is global: a non-finite gradient on any rank refuses the
  step on every rank (one all-reduce of a flag), so ranks never diverge.

BC's latent weights are local shards (a rank holds only its shard's :math:`w_r`). Checkpoints:
:mod:`qtrain.sharded` (``torch.distributed.checkpoint``). A loaded optimizer takes the model's
sharded weights as they are (``dcp.load`` writes shards without bumping their version counter,
so the unsharded path's "restore the weights this optimizer rounded" is off for DTensors): load
the model's state from the same checkpoint, after building the optimizer.

Refused at construction, in one line naming the parameter: tensor subclasses other than
``DTensor`` (the kernels read raw memory), sparse or meta tensors, DTensors whose shard is not a
block of consecutive row-major entries (``Partial``, or sharded on a later dimension) and
float16/bfloat16 DTensors (keep FSDP's sharded parameters float32 and compute in low precision
with ``MixedPrecisionPolicy``).
"""
from __future__ import annotations

from typing import Iterable, List, Sequence

import torch

try:  # torch >= 2.4
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - older torch: no DTensor parameters can exist
    DTensor = None

__all__ = ["ShardLayout", "is_dtensor", "local", "local_grads", "grid_input", "all_ranks_finite"]


def is_dtensor(t) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor this rank holds of ``t`` (a view of a DTensor's shard), ``t`` otherwise."""
    return t.to_local() if is_dtensor(t) else t


def local_grads(grads: Iterable) -> List:
    """The gradients as plain tensors: a DTensor gradient's local shard."""
    return [g.to_local() if is_dtensor(g) else g for g in grads]


def _global_offset(name: str, p) -> int:
    """The flat row-major index, in the whole tensor, of the first entry of this rank's shard;
    refuses a shard that is not a block of consecutive entries."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    full = list(p.shape)
    for pl in p.placements:  # decided from the placements, the same on every rank
        if pl.is_partial():
            raise ValueError(f"parameter {name!r} is a DTensor with a Partial placement (unreduced values); "
                             "quantize parameters that are Shard or Replicate (FSDP2's fully_shard gives Shard(0))")
        if pl.is_shard() and (type(pl).__name__ != "Shard" or any(full[d] != 1 for d in range(pl.dim))):
            raise ValueError(f"parameter {name!r} is sharded as {p.placements} over shape {tuple(full)}: its shard is "
                             "not a block of consecutive entries, which SR's global indices need; shard it on dim 0 "
                             "(FSDP2's default) instead")
    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    if tuple(shape) != tuple(p.to_local().shape):
        raise ValueError(f"parameter {name!r}: its local shard has shape {tuple(p.to_local().shape)}, its placements "
                         f"{p.placements} give {tuple(shape)}; quantize FSDP2 (Shard(0)) or replicated parameters")
    start, stride = 0, 1
    for d in reversed(range(len(full))):
        start += offset[d] * stride
        stride *= full[d]
    return start


def _check_plain(name: str, t: torch.Tensor, what: str) -> None:
    if type(t) is not torch.Tensor:
        raise ValueError(f"parameter {name!r}: its {what} is a {type(t).__name__}, a tensor subclass the rounding "
                         "kernels cannot read; quantize plain tensors or DTensors (FSDP2's fully_shard), or leave "
                         "it out of params")
    if t.layout is not torch.strided or t.is_meta:
        where = "on the meta device" if t.is_meta else f"{t.layout}"
        raise ValueError(f"parameter {name!r} is {where}; quantize dense tensors with storage (materialise the "
                         "model, e.g. model.to_empty(device=...) and initialise it, before building the optimizer)")


class ShardLayout:
    """Per quantized parameter: whether it is a DTensor and its shard's global offset."""

    def __init__(self, names: Sequence[str], params: Sequence[torch.Tensor], rounds: bool = True):
        self.starts: List[int] = []
        self.dtensor: List[bool] = []
        for name, p in zip(names, params):
            if is_dtensor(p):
                if p.dtype in (torch.float16, torch.bfloat16):
                    raise ValueError(f"parameter {name!r} is a {p.dtype} DTensor; keep FSDP's sharded parameters "
                                     "float32 and compute in low precision with "
                                     "fully_shard(..., mp_policy=MixedPrecisionPolicy(param_dtype=...))")
                if rounds:
                    _check_plain(name, p.to_local(), "local shard")
                self.starts.append(_global_offset(name, p) if rounds else 0)
                self.dtensor.append(True)
            else:
                if rounds:  # method "float" hands no parameter to the kernels
                    _check_plain(name, p.data, "data")
                self.starts.append(0)
                self.dtensor.append(False)
        self.sharded = any(self.dtensor)
        self.offset = frozenset(i for i, s in enumerate(self.starts) if s)  # rounded one by one (not packed)

    def locals(self, params: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        """The tensors the rounding writes: each DTensor's local shard (a fresh view of the shard's
        storage, so lending BC's latents always copies into it), the others themselves."""
        if not self.sharded:
            return params
        return [p.to_local() if d else p for p, d in zip(params, self.dtensor)]

    def global_fractions(self, diag: dict, shards: Sequence[torch.Tensor], names: Sequence[str]) -> dict:
        """Turn the per-shard fractions of :meth:`qtrain.QuantizedOptimizer.diagnostics` into the
        whole tensors' (counts summed over the ranks: one all-reduce)."""
        import torch.distributed as dist

        if not dist.is_initialized():
            return diag
        rows = []
        for name, t, d in zip(names, shards, self.dtensor):
            changed, stalled = diag[name]
            n = t.numel()
            rows.append([float(changed) * n if n else 0.0, float(stalled) * n if n and stalled is not None else 0.0,
                         float(n)] if d else [0.0, 0.0, 0.0])
        sums = torch.tensor(rows, dtype=torch.float64)
        dist.all_reduce(sums)
        out = dict(diag)
        for (name, d), (c, s, n) in zip(zip(names, self.dtensor), sums.tolist()):
            if d:
                out[name] = (torch.tensor(c / max(n, 1.0)), None if diag[name][1] is None else torch.tensor(s / max(n, 1.0)))
        return out

    def check_whole(self, names: Sequence[str], dynamic: dict, state_dtype) -> None:
        """Refuse, in one line, what needs a whole tensor on one rank: a dynamic grid (its scale is a
        statistic of the full tensor) or low-precision optimizer state on a sharded parameter."""
        for i, (name, d) in enumerate(zip(names, self.dtensor)):
            if d and i in dynamic:
                raise ValueError(f"parameter {name!r} is sharded (DTensor) and its grid is dynamic; a dynamic "
                                 "grid needs the whole tensor: use a fixed Grid or train it unsharded")
            if d and state_dtype is not None:
                raise ValueError(f"parameter {name!r} is sharded (DTensor); state_dtype={state_dtype} works on "
                                 "unsharded parameters only: drop state_dtype or train unsharded")

    def global_max(self, values: Sequence[float]) -> List[float]:
        """Per tensor, the largest of the ranks' ``values`` for sharded tensors (one all-reduce of
        the list), so a step record covers the whole parameter, not one shard."""
        import torch.distributed as dist

        if not self.sharded or not dist.is_initialized():
            return list(values)
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [float(m) if d else float(v) for m, v, d in zip(t.tolist(), values, self.dtensor)]


def grid_input(grid, p: torch.Tensor) -> torch.Tensor:
    """What a callable grid sees: the full parameter (gathered) for a DTensor, else ``p``."""
    if is_dtensor(p) and callable(grid) and not isinstance(grid, dict):
        with torch.no_grad():
            return p.full_tensor()
    return p


def all_ranks_finite(ok: bool, params: Iterable[torch.Tensor]) -> bool:
    """``ok`` AND-ed over every rank of the device meshes of the DTensor ``params`` (one all-reduce
    of a flag per mesh dimension): all ranks then refuse, or take, the step alike."""
    import torch.distributed as dist

    meshes = {}
    for p in params:
        if is_dtensor(p):
            meshes.setdefault(id(p.device_mesh), p.device_mesh)
    if not meshes or not dist.is_initialized():
        return ok
    for mesh in meshes.values():
        flag = torch.tensor([0 if ok else 1], dtype=torch.int32, device=mesh.device_type)
        for dim in range(mesh.ndim):
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=mesh.get_group(dim))
        ok = not bool(flag.item())
    return ok
