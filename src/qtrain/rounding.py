r"""The poster's quantizers: deterministic rounding :math:`Q_d` and stochastic rounding :math:`Q_s`.

On a uniform grid of step :math:`\Delta`:

.. math::
    Q_d(w) = \operatorname{sign}(w)\,\Delta\,\Big\lfloor \frac{|w|}{\Delta} + \frac12 \Big\rfloor
    \qquad\text{(nearest level, ties away from zero)}

.. math::
    Q_s(w) = \Delta \cdot \begin{cases}
        \lfloor w/\Delta \rfloor + 1 & \text{if } u < p := w/\Delta - \lfloor w/\Delta \rfloor \\
        \lfloor w/\Delta \rfloor & \text{otherwise}
    \end{cases}, \qquad u \sim \mathcal U[0, 1),

so :math:`\mathbb E[Q_s(w)] = w` and :math:`\operatorname{Var}[Q_s(w)] = p(1-p)\Delta^2`.
Bounded grids clip the level index to their range (unbiased inside it). On a binary grid
:math:`\{-s, s\}`: :math:`Q_d(w) = s\,\operatorname{sign}(w)` (0 goes to :math:`+s`) and
:math:`Q_s` picks :math:`+s` with probability :math:`(\operatorname{clip}(w, -s, s) + s) / (2s)`
(BinaryConnect's hard-sigmoid rule).

Four implementations compute the same bits (tests check it):

* :func:`q_d_reference`, :func:`q_s_reference` -- plain Python scalars, the formula as printed
  (``double=True``: the float64 arithmetic of float64 tensors);
* a C kernel for contiguous float32 CPU tensors (``qtrain._kernel``), the first choice there;
* one ``torch.compile``'d function (``qtrain._compiled``; Inductor C++ on CPU, Triton on
  CUDA) everywhere else: GPUs, float64, no C compiler; and
* the eager torch path, the fallback when compilation is unavailable (or ``QTRAIN_NO_COMPILE=1``).

Arithmetic is float32 (float64 for float64 inputs): :math:`t = w/\Delta` is the rounded
quotient, and the randomness comes from :mod:`qtrain.rng` (keyed, counter-based).

>>> import torch
>>> from qtrain import Grid, quantize
>>> quantize(torch.tensor([0.3, -0.5, 1.26]), Grid.uniform(0.5))
tensor([ 0.5000, -0.5000,  1.5000])
>>> quantize(torch.tensor([0.3, -0.2]), Grid.binary(1.0), "nearest")
tensor([ 1., -1.])
>>> x = torch.full((100_000,), 0.3)
>>> round(quantize(x, Grid.uniform(1.0), "stochastic", generator=0).mean().item(), 2)
0.3
"""
from __future__ import annotations

import functools
import math
from typing import Union

import torch

from . import _compiled, _kernel
from .floatgrid import quantize_float
from .grid import Grid
from .rng import M64, offset_key, resolve_key, splitmix64, uniform

__all__ = ["quantize", "q_d_reference", "q_s_reference", "ROUNDINGS"]

ROUNDINGS = ("nearest", "stochastic")
_F32 = torch.float32


@functools.lru_cache(maxsize=4096)
def _f32(v: float) -> float:
    """``v`` rounded to float32 (kept as a Python float), so every path uses the same Δ."""
    return float(torch.tensor(v, dtype=_F32))


_f32_round = _f32


@functools.lru_cache(maxsize=1024)
def _k_range(grid: Grid):
    """The grid's index range as float32 values inside it (indices beyond 2^24 are not all
    representable in float32: round the bounds inward)."""
    lo, hi = _f32(grid.kmin), _f32(grid.kmax)
    if hi > grid.kmax:
        hi = float(torch.nextafter(torch.tensor(hi, dtype=_F32), torch.tensor(-math.inf, dtype=_F32)))
    if lo < grid.kmin:
        lo = float(torch.nextafter(torch.tensor(lo, dtype=_F32), torch.tensor(math.inf, dtype=_F32)))
    return lo, hi


# -- plain scalar reference ------------------------------------------------------------------
def _exact(v: float) -> float:
    return v


def q_d_reference(w: float, grid: Grid, double: bool = False) -> float:
    r""":math:`Q_d(w)` for one value. ``w`` and ``grid.delta`` are taken as float32, the quotient
    :math:`t = w/\Delta` is rounded to float32, the rest is exact (``double=True``: float64
    throughout, as for float64 tensors; the index range is the same)."""
    if math.isnan(w):
        raise ValueError("Q_d of NaN")
    _f32 = _exact if double else _f32_round
    w = _f32(w)
    if grid.kind == "binary":
        s = _f32(grid.scale)
        return s if w >= 0 else -s
    d = _f32(grid.delta)
    t = _f32(w / d)
    k = math.copysign(math.floor(abs(t) + 0.5), t)
    if grid.bounded:
        lo, hi = (grid.kmin, grid.kmax) if double else _k_range(grid)
        k = min(max(k, lo), hi)
    return _f32((k + 0.0) * d)


def q_s_reference(w: float, grid: Grid, u: float, double: bool = False) -> float:
    r""":math:`Q_s(w)` for one value, given the uniform draw ``u`` in [0, 1) (``double``: as above)."""
    if math.isnan(w):
        raise ValueError("Q_s of NaN")
    _f32 = _exact if double else _f32_round
    w = _f32(w)
    if grid.kind == "binary":
        s = _f32(grid.scale)
        p = _f32(_f32(min(max(w, -s), s) + s) / _f32(2 * s))
        return s if u < p else -s
    d = _f32(grid.delta)
    t = _f32(w / d)
    f = math.floor(t)
    p = _f32(t - f)
    if w == _f32(f * d):  # already on a level (x/Δ may round off the integer when Δ is not 2^k)
        k = f
    elif w == _f32((f + 1) * d):
        k = f + 1
    else:
        k = f + 1 if u < p else f
    if grid.bounded:
        lo, hi = (grid.kmin, grid.kmax) if double else _k_range(grid)
        k = min(max(k, lo), hi)
    return _f32((k + 0.0) * d)


# -- vectorised ------------------------------------------------------------------------------
def _eager(x: torch.Tensor, grid: Grid, stochastic: bool, key: int, start: int = 0) -> torch.Tensor:
    """The torch implementation; ``x`` is contiguous float32/float64 (elements ``start...`` of a tensor)."""
    dt = x.dtype
    if grid.kind == "binary":
        s = torch.tensor(grid.scale, dtype=dt, device=x.device)
        if not stochastic:
            return torch.where(x >= 0, s, -s)
        p = (torch.minimum(torch.maximum(x, -s), s) + s) / (2 * s)
        u = uniform(key, x.numel(), x.device, start=start, dtype=dt).view(x.shape)
        return torch.where(u < p, s, -s)
    d = torch.tensor(grid.delta, dtype=dt, device=x.device)
    t = x / d
    if stochastic:
        f = torch.floor(t)
        u = uniform(key, x.numel(), x.device, start=start, dtype=dt).view(x.shape)
        p = torch.where(x == f * d, 0.0, t - f)  # values already on a level stay there,
        p = torch.where(x == (f + 1) * d, 1.0, p)  # even when x/Δ rounds off the integer
        k = torch.where(u < p, f + 1, f)
    else:
        a = t.abs()
        f = torch.floor(a)
        k = torch.copysign(torch.where(a - f >= 0.5, f + 1, f), t)
    if grid.bounded:  # float64 holds every index exactly; float32 rounds the range inward
        k = k.clamp(*((grid.kmin, grid.kmax) if dt == torch.float64 else _k_range(grid)))
    return (k + 0.0) * d  # + 0: one zero, +0, on every path


def quantize(x: torch.Tensor, grid: Grid, rounding: str = "nearest",
             generator: Union[None, int, torch.Generator] = None) -> torch.Tensor:
    """Round every entry of ``x`` to ``grid``: :math:`Q_d` (``"nearest"``) or :math:`Q_s` (``"stochastic"``).

    Args:
        x: a floating tensor (any shape, device, layout; not modified).
        grid: a :class:`~qtrain.Grid`.
        rounding: ``"nearest"`` or ``"stochastic"``.
        generator: randomness for ``"stochastic"``: an ``int`` key (same key, same result),
            a ``torch.Generator`` (one draw), or ``None`` (torch's global generator).

    Returns:
        A new tensor of ``x``'s shape, dtype and device holding grid levels.

    Raises:
        ValueError: unknown ``rounding``, a non-float ``x``, NaN entries in ``x``, or finite
            entries whose level overflows (:math:`x/\\Delta` or :math:`k\\Delta` beyond the
            dtype's range): no finite input ever becomes inf or NaN.
    """
    stochastic = _check_args(x, grid, rounding)
    key = (splitmix64(generator & M64) if type(generator) is int else resolve_key(generator)) if stochastic else 0
    n = x.numel()
    if n == 0:
        return x.clone()
    if n < _SMALL and x.dtype is _F32 and x.is_cpu and x.is_contiguous() and grid.kind != "float":
        fns = _kernel.rec_fns()
        if fns is not None:  # small tensors: one packed record, one ctypes argument (~0.3 µs)
            e = _kernel_args(grid)
            out = torch.empty_like(x)
            if fns[0](_REC.pack(x.data_ptr(), out.data_ptr(), 0, n, e[1] + stochastic, e[3], key, e[2], e[6],
                                e[4], e[5], 0.0, 0.0, 0)):
                _raise_bad(x, out, grid)
            return out
    return quantize_into(x, None, grid, stochastic, key)


def _check_args(x, grid, rounding) -> bool:
    if rounding == "stochastic" or rounding == "nearest":
        pass
    else:
        raise ValueError(f"rounding={rounding!r} is not one of {ROUNDINGS}")
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a qtrain.Grid, got {type(grid).__name__}; build one with Grid.uniform/binary/ternary")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        what = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"quantize needs a floating-point tensor, got {what}")
    return rounding == "stochastic"


_REC = _kernel.REC
_SMALL = 2 * _kernel._MIN_PER_THREAD  # below this the kernel runs in one thread, one call
_bump_version = getattr(torch._C, "_increment_version", None) or torch.autograd.graph.increment_version
_KARGS: dict = {}  # id(grid) -> (grid, C kernel arguments); checked by identity, so ids never go stale


def _kernel_args(grid: Grid) -> tuple:
    e = _KARGS.get(id(grid))
    if e is None or e[0] is not grid:
        if len(_KARGS) > 4096:
            _KARGS.clear()
        kmin, kmax = _k_range(grid) if grid.bounded else (0.0, 0.0)
        e = _KARGS[id(grid)] = (grid, 2 if grid.kind == "binary" else 0, _f32(grid.delta), grid.bounded, kmin, kmax,
                                _f32(grid.scale or 1.0))
    return e


def quantize_into(x: torch.Tensor, out, grid: Grid, stochastic: bool, key: int, start: int = 0) -> torch.Tensor:
    """:math:`Q(x)` for a non-empty floating ``x`` and a resolved ``key``, written into ``out``
    (same shape and dtype; it may be ``x`` itself, to round in place) or, for ``out=None``, into
    a new tensor; returns it. Contiguous float32 CPU tensors take the C kernel (in place without
    a temporary); others the compiled (else eager) path, and ``out.copy_`` of its result. On bad
    input (``ValueError``) an ``out`` given may be partly written. ``start``: the index of ``x``'s
    first entry in the random stream (a shard of a larger tensor: its global flat offset), so
    :math:`Q_s` of the shard equals that slice of :math:`Q_s` of the whole (:func:`qtrain.rng.offset_key`)."""
    if start and stochastic:
        return _quantize_from(x, out, grid, key, start)
    if grid.kind == "float":  # low-precision float formats: qtrain.floatgrid
        q = quantize_float(x, grid.fmt, stochastic, key)
        q = q if q.dtype == x.dtype else q.to(x.dtype)
        return q if out is None else out.copy_(q)
    if x.dtype is _F32 and x.is_cpu and x.is_contiguous() and _kernel.get() is not None and \
            (out is None or (out.dtype is _F32 and out.is_cpu and out.is_contiguous())):
        e = _kernel_args(grid)
        if out is None:
            out = torch.empty_like(x)
        else:
            _bump_version((out,))  # written through its pointer: tell autograd
        bad = _kernel.run(x, out, e[1] + stochastic, e[2], e[3], e[4], e[5], e[6], key)
        if bad:
            _raise_bad(x if out is not x else None, out, grid)
        return out
    work_dtype = torch.float64 if x.dtype == torch.float64 else _F32
    xc = x.detach().to(work_dtype).contiguous()
    res = _compiled.quantize_flat(xc.view(-1), grid, stochastic, key)
    if res is not None:
        q, bad = res
    else:
        q = _eager(xc, grid, stochastic, key)
        bad = int(torch.isnan(xc).sum()) if grid.kind == "binary" else int((~torch.isfinite(q)).sum())
    if bad:
        _raise_bad(xc, q, grid)
    q = q.view(x.shape)
    if q.dtype != x.dtype:  # float16/bfloat16: the level must also fit the narrow dtype
        q = q.to(x.dtype)
        _check_finite_out(x, q, grid, x.dtype)
    return q if out is None else out.copy_(q)


def _quantize_from(x: torch.Tensor, out, grid: Grid, key: int, start: int) -> torch.Tensor:
    """:math:`Q_s` of ``x`` with the stream from index ``start`` on: one shifted key per span that
    crosses no multiple of :math:`2^{32}` (a single span unless the shard straddles one)."""
    n = x.numel()
    cut = ((start >> 32) + 1 << 32) - start  # entries before the next multiple of 2^32
    if n <= cut:
        return quantize_into(x, out, grid, True, offset_key(key, start))
    flat = x.detach().reshape(-1)
    q = torch.cat([quantize_into(flat[a:a + cut if a == 0 else a + (1 << 32)], None, grid, True,
                                 offset_key(key, start + a))
                   for a in [0] + list(range(cut, n, 1 << 32))]).view(x.shape)
    return q if out is None else out.copy_(q)


def quantize_slice(x: torch.Tensor, grid: Grid, stochastic: bool, key: int, start: int) -> torch.Tensor:
    """:math:`Q(x)` for a non-empty contiguous 1-D ``x`` that is elements ``[start, start + n)`` of a
    larger flat tensor: the same bits as :func:`quantize_into` over that tensor gives them (SR's draw
    of entry :math:`i` is keyed by :math:`i`), so a tensor rounded chunk by chunk equals one rounded
    whole. Returns a new tensor (float32 for float grids, else ``x``'s dtype)."""
    if grid.kind == "float":
        return quantize_float(x, grid.fmt, stochastic, key, start)
    return quantize_into(x, None, grid, stochastic, key, start)  # SR from start > 0: shifted keys; Q_d needs no start


def _raise_bad(x, out, grid: Grid) -> None:
    """The error path: say exactly what had no finite level (``x`` is None when it was overwritten)."""
    if x is None:
        raise ValueError(f"quantize: entries without a finite level on {grid!r} (NaN, inf on an unbounded grid, or "
                         "|x|/Δ overflowing); check the learning rate, the loss and the gradients, or pass bits=...")
    nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    if nan:
        raise ValueError(f"quantize: input has {nan} NaN entr{'y' if nan == 1 else 'ies'} of {x.numel()}; "
                         "check the learning rate, the loss and the gradients (NaN has no grid level)")
    if inf and not grid.bounded:
        raise ValueError(f"quantize: input has {inf} infinite entr{'y' if inf == 1 else 'ies'} and {grid!r} is "
                         "unbounded (no level for inf); check the learning rate and gradients, or pass bits=...")
    _check_finite_out(x, out, grid, x.dtype)


def _check_finite_out(x: torch.Tensor, out: torch.Tensor, grid: Grid, dtype: torch.dtype) -> None:
    """Raise when finite inputs produced non-finite levels (bounded grids' levels are finite in
    float32 by construction; unbounded grids or a narrow output dtype can overflow)."""
    if math.isfinite(float(out.sum(dtype=torch.float64 if out.dtype == torch.float64 else _F32))):
        return  # a finite sum means every entry is finite (inf and NaN propagate): one cheap pass
    over = ~torch.isfinite(out.reshape(-1)) & torch.isfinite(x.reshape(-1))
    n = int(over.sum())
    if not n:
        return
    big = float(x.reshape(-1)[over].abs().max())
    raise ValueError(f"quantize: {n} finite entr{'y' if n == 1 else 'ies'} of {x.numel()} (largest |x| {big:.4g}) "
                     f"{'has' if n == 1 else 'have'} no level representable in {dtype} on {grid!r}: x/Δ or kΔ "
                     "overflows; use a bounded grid (bits=...), a larger Δ, or a wider dtype")
