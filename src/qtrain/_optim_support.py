r"""Small pieces of :class:`qtrain.QuantizedOptimizer` that do not need its state: integer
arguments, closure-only optimizers, sparse gradients, float16/bfloat16 parameters, and BC's
latent weights lent to the base step (:func:`lend_latents`, :func:`return_latents`).

float16/bfloat16 quantized parameters train in float32: for the base step each such parameter
holds a float32 copy of its data (and gradient), so :math:`w + s_t` is not rounded to the low
precision before :math:`Q_d`/:math:`Q_s` sees it (rounding first would bias SR: at
:math:`w = 0.5`, :math:`\Delta = 1/16`, bfloat16 cannot hold :math:`w + 10^{-3}`); only the
grid level, which the dtype must hold exactly, is stored back into the original storage.

>>> import torch
>>> w = torch.nn.Parameter(torch.full((2,), 0.5, dtype=torch.bfloat16))
>>> swapped = float32_work([w]); w.dtype
torch.float32
>>> end_float32_work([w], swapped); w.dtype
torch.bfloat16
"""
from __future__ import annotations

import inspect
import operator
from typing import Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .dynamic import DynamicGrid
from .grid import Grid

__all__ = ["LOW_PRECISION", "as_int", "needs_closure", "grad_values", "float32_work", "end_float32_work", "lend_latents", "return_latents",
           "check_representable", "store_exact", "half_level_gap", "StepRecord"]

LOW_PRECISION = (torch.float16, torch.bfloat16)
_FIX = "use a power-of-two Δ with fewer bits, or keep the parameter float32 and train under autocast"


def as_int(value, what: str) -> int:
    """``value`` as a Python int: any integer type (``int``, ``numpy.int64``, ...), never a bool."""
    if type(value).__name__ in ("bool", "bool_"):
        raise ValueError(f"{what}={value!r} is a bool; pass an integer such as {what}=0")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what}={value!r} must be an integer (int or numpy integer), e.g. {what}=0") from None


def needs_closure(base: torch.optim.Optimizer) -> bool:
    """True when ``base.step`` has a required ``closure`` argument (``torch.optim.LBFGS``)."""
    try:
        closure = inspect.signature(type(base).step).parameters.get("closure")
    except (TypeError, ValueError):
        return False
    return closure is not None and closure.default is inspect.Parameter.empty


def grad_values(grad: torch.Tensor) -> torch.Tensor:
    """The entries of a gradient: itself when dense, the values of a sparse one (an uncoalesced COO
    gradient is coalesced first: duplicate finite entries can sum to inf, as the base step sums them)."""
    if grad.layout == torch.strided:
        return grad
    if grad.layout == torch.sparse_coo:
        return (grad if grad.is_coalesced() else grad.coalesce())._values()
    return grad.values()


def float32_work(params: Sequence[torch.Tensor]) -> dict:
    """Give each float16/bfloat16 tensor of ``params`` a float32 copy of its data and gradient;
    returns ``{index: (data, grad)}`` for :func:`end_float32_work`."""
    swapped = {}
    for i, p in enumerate(params):
        if p.dtype in LOW_PRECISION:
            data, grad = p.data, p.grad
            p.grad = None
            p.data = data.float()
            if grad is not None:
                p.grad = grad.float()
            swapped[i] = (data, grad)
    return swapped


def end_float32_work(params: Sequence[torch.Tensor], swapped: dict) -> None:
    """Put back the original low-precision storage and gradients of the swapped tensors."""
    for i, (data, grad) in swapped.items():
        p = params[i]
        p.grad = None
        p.data = data
        p.grad = grad


def _owns_storage(t: torch.Tensor) -> bool:
    """True when ``t`` alone uses its storage, all of it: no bucket, flat parameter or other tensor
    (ZeRO's ``parameters_as_bucket_view``, FSDP, a kept ``.data``) reads or writes the same memory.
    Unknown (torch without the use count) counts as shared: the latent is then copied."""
    storage = t.untyped_storage()
    if t.storage_offset() != 0 or storage.nbytes() != t.numel() * t.element_size():
        return False
    try:  # references: t's own and the storage object just asked for
        return torch._C._storage_Use_Count(storage._cdata) <= 2
    except (AttributeError, RuntimeError, TypeError):
        return False


def lend_latents(params: Sequence[torch.Tensor], latents: Sequence[torch.Tensor], fits: dict,
                 names: Sequence[str]) -> dict:
    r"""BC: let each parameter hold its latent tensor for the base step (``p.data = latent``), so
    the base optimizer moves :math:`w_r` itself and nothing is copied; returns
    ``{index: own data}`` for :func:`return_latents`. A parameter whose latent differs in shape,
    strides or tensor type, or whose storage is shared with another tensor (a bucket that the base
    optimizer communicates), gets the latent copied into it instead (one batched copy).
    ``fits`` caches that test per parameter, keyed by its address, shape and dtype. A parameter
    cast, moved or resized since the latents were made is refused in one line. If anything
    raises, every parameter already lent is given its own storage back first."""
    own, copy_to, copy_from = {}, [], []
    try:
        for i, (p, latent) in enumerate(zip(params, latents)):
            key = (p.data_ptr(), p.shape, p.dtype)
            fit = fits.get(i)
            if fit is None or fit[0] != key:
                alone = _owns_storage(p)  # before p.data makes an alias of its own
                data = p.data
                if data.dtype is not latent.dtype or data.device != latent.device or data.numel() != latent.numel():
                    raise ValueError(
                        f"parameter {names[i]!r} is now {data.dtype} on {data.device} with {data.numel()} entries, "
                        f"but its BC latent weights are {latent.dtype} on {latent.device} with {latent.numel()}: the "
                        "model was cast, moved or resized after QuantizedOptimizer was built; build the optimizer "
                        "after model.to(...)/.double(), or load the old one's state_dict into a new one")
                fit = fits[i] = (key, alone and data.shape == latent.shape and data.stride() == latent.stride()
                                 and type(data) is torch.Tensor and type(latent) is torch.Tensor)
            if fit[1]:
                own[i] = p.data
                p.data = latent
            else:
                copy_to.append(p)
                copy_from.append(latent)
        if copy_to:
            torch._foreach_copy_(copy_to, copy_from)
    except BaseException:
        return_latents(params, latents, own, copy_back=False)
        raise
    return own


def return_latents(params: Sequence[torch.Tensor], latents: Sequence[torch.Tensor], own: dict,
                   copy_back: bool = True) -> None:
    """Undo :func:`lend_latents`: each parameter holds its own storage again, whatever raises. A
    base optimizer that rebound ``p.data`` to a new tensor (instead of updating it in place) has
    its result copied into the latent first, so no update is lost."""
    error = None
    for i, data in own.items():
        p, latent = params[i], latents[i]
        try:
            if copy_back and p.data_ptr() != latent.data_ptr():
                latent.copy_(p.data)
        except BaseException as e:  # still give every parameter its storage back; raise after
            error = error or e
        p.data = data
    if error is not None:
        raise error


def check_representable(names: List[str], params: Sequence[torch.Tensor], grids: List[Grid]) -> None:
    """Refuse float16/bfloat16 parameters whose (bounded) grid has a level the dtype cannot hold
    exactly; unbounded grids need Δ representable (each stored level is checked by :func:`store_exact`)."""
    for name, p, g in zip(names, params, grids):
        if p.dtype not in LOW_PRECISION:
            continue
        bad = g.bounded and g.kmax - g.kmin + 1 > 1 << 16
        if not bad:
            lv = torch.tensor(g.levels() if g.bounded else [g.delta], dtype=torch.float32)
            bad = not torch.equal(lv.to(p.dtype).float(), lv)
        if bad:
            raise ValueError(f"parameter {name!r} is {p.dtype} but {g!r} has levels {p.dtype} cannot hold exactly; {_FIX}")


def store_exact(q: torch.Tensor, dtype: torch.dtype, name: str, grid: Grid) -> torch.Tensor:
    """``q`` (grid levels) in ``dtype``; raises when ``dtype`` cannot hold a level exactly."""
    if q.dtype == dtype:
        return q
    stored = q.to(dtype)
    bad = int((stored.to(q.dtype) != q).sum())
    if bad:
        raise ValueError(f"{bad} quantized entr{'y' if bad == 1 else 'ies'} of {name} on {grid!r} cannot be "
                         f"stored exactly in {dtype}; {_FIX}")
    return stored


# -- the constructor's arguments -------------------------------------------------------------
def named_params(params: Iterable) -> List[Tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs of ``params`` (tensors or pairs; unnamed ones become ``param<i>``),
    each tensor once; non-float tensors are refused."""
    out, seen = [], set()
    for i, item in enumerate(params):
        name, p = item if isinstance(item, tuple) else (f"param{i}", item)
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params must hold tensors or (name, tensor) pairs, got {type(p).__name__}")
        if not p.is_floating_point():
            raise ValueError(f"parameter {name!r} has dtype {p.dtype}; only floating-point tensors can be quantized")
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def tensors_to_quantize(base: torch.optim.Optimizer, params: Optional[Iterable],
                        method: str) -> List[Tuple[str, torch.Tensor]]:
    """``QuantizedOptimizer``'s ``params`` as ``(name, tensor)`` pairs: the given ones, or by default the
    ``ndim >= 2`` tensors of ``base`` (Linear/Conv weights, named ``param<i>`` by position). Each must be
    in ``base``'s param groups; a bc/r/sr optimizer with nothing to quantize is refused."""
    owned = [p for g in base.param_groups for p in g["params"]]
    if params is None:  # biases and normalisation parameters stay float
        named = named_params([(f"param{i}", p) for i, p in enumerate(owned) if p.ndim >= 2])
        if method != "float" and not named:
            raise ValueError(f"method={method!r} has nothing to quantize: no parameter of the base optimizer has "
                             "ndim >= 2 (Linear/Conv weights); name the tensors, e.g. params=[w]")
        return named
    named = named_params(params)
    if method != "float" and not named:  # e.g. named_conv_weights(model) of a model without convs
        raise ValueError(f"method={method!r} has nothing to quantize: params is empty (a model without conv "
                         "layers?); pass the tensors to quantize, e.g. params=[w], or use method='float'")
    ids = {id(p) for p in owned}
    for name, p in named:
        if id(p) not in ids:
            raise ValueError(f"parameter {name!r} (shape {tuple(p.shape)}) is not in the base optimizer's param groups; "
                             "build the base optimizer over it too")
    return named


def check_grid_names(grid: Mapping, names: Sequence[str]) -> None:
    """A grid dict must name exactly the quantized parameters."""
    missing = [n for n in names if n not in grid]
    extra = [k for k in grid if k not in set(names)]
    if missing or extra:
        what = f"no entry for {missing}" if missing else f"entries for names not in params: {extra}"
        raise ValueError(f"grid dict has {what}; give one Grid per name in params (names: {list(names[:8])}"
                         f"{' ...' if len(names) > 8 else ''})")


def grid_for(grid: Union[Grid, Callable, Mapping], name: str, p: torch.Tensor) -> Grid:
    """The grid of parameter ``name``: the one Grid, ``grid(p)``, or ``grid[name]``."""
    if isinstance(grid, Mapping):
        g = grid[name]
        g = g(p) if isinstance(g, DynamicGrid) else g  # a rule: this step's grid (qtrain.dynamic)
    else:
        g = grid(p) if callable(grid) and not isinstance(grid, Grid) else grid
    if not isinstance(g, Grid):
        raise TypeError(f"grid for {name!r} is {type(g).__name__}; expected a qtrain.Grid "
                        "(or a callable returning one, or a dict of them)")
    return g


# -- the step record: could a weight have changed level? --------------------------------------
def half_level_gap(grid: Grid):
    r"""How far a weight on ``grid`` must move to change level under :math:`Q_d`: :math:`\Delta/2`
    (binary :math:`\pm s`: :math:`s`; ternary :math:`\{0, \pm s\}`: :math:`s/2`; uniform: :math:`\Delta/2`).
    ``None`` for float-format grids, whose gap depends on the value."""
    return None if grid.kind == "float" else grid.delta / 2.0


class StepRecord:
    r"""The largest absolute base step :math:`\max_j |s_t|_j` of each quantized tensor over the steps
    since the last :meth:`reset` (the move the base optimizer proposes, before rounding).

    With :math:`Q_d` (R) a weight on a level :math:`w_b` keeps its level while :math:`|s_t| <
    \Delta/2` (:func:`half_level_gap`), so a record below the half gap in every tensor at every
    step means R could not change any weight. The move is measured as realized in float32
    (:math:`|(w + s_t) - w|`), one copy of the tensors kept between :meth:`before` and :meth:`after`.

    >>> import torch
    >>> w = torch.ones(3); rec = StepRecord(1)
    >>> rec.before([w]); _ = w.add_(torch.tensor([0.1, -0.25, 0.0])); rec.after([w])
    >>> rec.values()
    [0.25]
    """

    def __init__(self, n: int):
        self.n = n
        self._max: List[torch.Tensor] = []
        self._buf: List[torch.Tensor] = []

    def before(self, tensors: Sequence[torch.Tensor]) -> None:
        if len(self._buf) != len(tensors) or any(b.shape != t.shape or b.dtype != t.dtype or b.device != t.device
                                                 for b, t in zip(self._buf, tensors)):
            self._buf = [torch.empty_like(t, memory_format=torch.contiguous_format) for t in tensors]
        torch._foreach_copy_(self._buf, [t.detach() for t in tensors])

    def after(self, tensors: Sequence[torch.Tensor]) -> None:
        torch._foreach_sub_(self._buf, [t.detach() for t in tensors])
        norms = torch._foreach_norm(self._buf, float("inf"))
        if len(self._max) != len(norms) or any(m.device != x.device or m.dtype != x.dtype
                                                for m, x in zip(self._max, norms)):
            old = self._max if len(self._max) == len(norms) else [torch.zeros(()) for _ in norms]
            self._max = [m.to(x.device, x.dtype) for m, x in zip(old, norms)]
        torch._foreach_maximum_(self._max, norms)

    def values(self) -> List[float]:
        """Per tensor, the largest step since the last reset (0.0 before any step)."""
        return [float(m) for m in self._max] if self._max else [0.0] * self.n

    def reset(self) -> None:
        for m in self._max:
            m.zero_()

    def load(self, values: Sequence[float]) -> None:
        if len(values) != self.n:
            raise ValueError(f"step record holds {len(values)} tensors, this optimizer {self.n}")
        self._max = [torch.tensor(float(v)) for v in values]


def named_conv_weights(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """``(name, weight)`` of every convolution layer (``Conv1d/2d/3d`` and transposed), in order."""
    out, seen = [], set()
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            out.append((f"{mname}.weight" if mname else "weight", m.weight))
    return out


def delegated(name: str) -> property:
    """An attribute read from and written to ``self.base`` (the wrapped optimizer owns it)."""
    return property(lambda self: getattr(self.base, name), lambda self, value: setattr(self.base, name, value),
                    doc=f"``base.{name}``")
