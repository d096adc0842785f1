r"""One ``torch.compile``'d pure function for :math:`Q_d`, :math:`Q_s` and the keyed random numbers.

This is the fast path wherever the C kernel (``qtrain._kernel``) does not apply: CUDA
tensors, float64 tensors, and machines without a C compiler (or with ``QTRAIN_NO_KERNEL=1``).
Inductor fuses the whole computation -- the counter-based hash of :mod:`qtrain.rng`, the
rounding and the count of inputs without a level -- into one pass over memory (C++ on CPU,
Triton on CUDA) instead of about 40 full-tensor eager ops. It computes exactly the formulas
of :mod:`qtrain.rounding` (tests check it bit for bit against the scalar reference):

.. math::
    u_i = 2^{-24}\lfloor \mathrm{mix}(\mathrm{mix}(i_{lo}+k_0) \oplus (k_1+i_{hi}))/2^8 \rfloor,\qquad
    t = w/\Delta,

    Q_d(w) = \Delta\,\operatorname{clip}\!\big(\operatorname{sign}(t)\lfloor |t| + \tfrac12 \rfloor\big),\qquad
    Q_s(w) = \Delta\,\operatorname{clip}\!\big(\lfloor t\rfloor + [u < t - \lfloor t\rfloor]\big)

(binary grids: :math:`\pm s` with :math:`P(+s) = (\operatorname{clip}(w,-s,s)+s)/(2s)`).

No recompilation per call: the grid (``Δ``, index range, scale, binary or not), the rounding
and the 64-bit key travel as small tensors, and shapes are dynamic (the tensor is flattened).
So there is one compiled graph per (dtype, device); the first call compiles it (seconds; cached
on disk by Inductor), later calls only check guards. Set ``QTRAIN_NO_COMPILE=1`` to use the
eager torch path instead; if compilation is unavailable or fails, qtrain warns once and falls
back to the eager path (same bits).

>>> import torch
>>> from qtrain import Grid
>>> from qtrain._compiled import quantize_flat
>>> out, bad = quantize_flat(torch.tensor([0.3, -0.5, 1.26], dtype=torch.float64), Grid.uniform(0.5), False, 0)
>>> out.tolist(), bad
([0.5, -0.5, 1.5], 0)
"""
from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from typing import Callable, Optional, Tuple

import torch

from .grid import Grid
from .rng import M32, _mix32

__all__ = ["quantize_math", "get", "quantize_flat", "params", "enabled"]


def quantize_math(x: torch.Tensor, prm: torch.Tensor, keys: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""The pure function that gets compiled: ``x`` 1-D float32/float64; ``prm`` (same dtype) =
    ``[Δ, k_min, k_max, s, binary, stochastic]`` (``±inf`` bounds for unbounded grids);
    ``keys`` (int64) = ``[k0, k1]``, the key's 32-bit halves. Returns the rounded values and
    the count of entries without a finite level (NaN in; ``±inf`` in on an unbounded grid; a
    finite ``x`` whose :math:`x/\Delta` or :math:`k\Delta` overflows)."""
    d, kmin, kmax, s = prm[0], prm[1], prm[2], prm[3]
    binary, stochastic = prm[4] != 0, prm[5] != 0
    i = torch.arange(x.shape[0], device=x.device, dtype=torch.int64)
    h = _mix32(((i & M32) + keys[0]) & M32)
    h = _mix32(h ^ ((keys[1] + (i >> 32)) & M32))
    u = (h >> 8).to(x.dtype) * 2.0**-24
    # binary grid {-s, s}
    pb = (torch.minimum(torch.maximum(x, -s), s) + s) / (2 * s)
    out_b = torch.where(torch.where(stochastic, u < pb, x >= 0), s, -s)
    # uniform / ternary grid
    t = x / d
    f = torch.floor(t)
    p = torch.where(x == f * d, 0.0, t - f)  # values already on a level stay there,
    p = torch.where(x == (f + 1) * d, 1.0, p)  # even when x/Δ rounds off the integer
    k_s = torch.where(u < p, f + 1, f)
    a = t.abs()
    fa = torch.floor(a)
    k_d = torch.copysign(torch.where(a - fa >= 0.5, fa + 1, fa), t)
    k = torch.minimum(torch.maximum(torch.where(stochastic, k_s, k_d), kmin), kmax)
    out = torch.where(binary, out_b, (k + 0.0) * d)  # + 0: one zero, +0, on every path
    bad = torch.where(binary, torch.isnan(x), ~torch.isfinite(out)).sum()  # entries without a finite level
    return out, bad


def enabled() -> bool:
    """False when ``QTRAIN_NO_COMPILE`` is set (to anything but ``""``/``"0"``)."""
    return os.environ.get("QTRAIN_NO_COMPILE", "") in ("", "0")


@functools.lru_cache(maxsize=None)
def get() -> Optional[Callable]:
    """The compiled :func:`quantize_math` (compiled lazily on its first call), or ``None`` when
    ``QTRAIN_NO_COMPILE`` is set or this torch has no usable ``torch.compile``."""
    if not enabled() or not hasattr(torch, "compile"):
        return None
    try:
        return torch.compile(quantize_math, dynamic=True, fullgraph=True, options=_eager_numerics())
    except Exception as e:  # e.g. a Python version torch.compile does not support
        warnings.warn(f"qtrain: torch.compile unavailable ({e}); using the slower eager rounding path")
        return None


def _eager_numerics() -> dict:
    r"""Inductor options that make generated GPU code divide like eager torch and the C kernel.

    Triton lowers a float32 ``x / y`` to an approximate division (``div.full.f32``, up to 2 ulp), so
    without these, :math:`t = w/\Delta` (and the binary :math:`P(+s)`) can land one ulp off, and a
    value next to a level boundary rounds to the other level (7 in 10^6 values for
    :math:`\Delta = 1/7` on an H200, torch 2.11; ``benchmarks/gpu_check.py``). ``division_rounding``
    asks for IEEE round-to-nearest division (``div_rn``), ``disable_ftz`` keeps subnormals. Options
    this torch does not know are left out; without ``division_rounding`` GPU tensors then take the
    eager path (:func:`_gpu_divides_exactly`), so no device ever rounds differently from the CPU."""
    try:
        from torch._inductor import config
    except Exception:  # pragma: no cover - a torch without Inductor
        return {}
    numerics = getattr(config, "eager_numerics", None)
    return {f"eager_numerics.{name}": True for name in ("division_rounding", "disable_ftz")
            if isinstance(getattr(numerics, name, None), bool)}


@functools.lru_cache(maxsize=None)
def _gpu_divides_exactly(device_type: str) -> bool:
    """Whether this torch's Inductor can be told to divide exactly in GPU code (see
    :func:`_eager_numerics`). If not, GPU tensors take the eager path (same bits as the CPU,
    slower), with a warning once per device type (the answer is cached: no work per call),
    rather than a compiled path that may differ in the last bit."""
    if "eager_numerics.division_rounding" in _eager_numerics():
        return True
    warnings.warn(f"qtrain: this torch's Inductor has no eager_numerics.division_rounding, so compiled "
                  f"{device_type} code would divide approximately (w/Δ one ulp off, a value at a level "
                  "boundary rounding the other way); using the slower eager path (same results as the "
                  "CPU). A newer torch restores the fast path")
    return False


_broken: set = set()  # (device type, dtype) pairs whose compilation failed: eager from then on
_lock = threading.Lock()


@functools.lru_cache(maxsize=4096)
def _grid_values(grid: Grid, stochastic: bool, double: bool) -> tuple:
    from .rounding import _k_range  # rounding imports this module: import late
    lo, hi = (-math.inf, math.inf) if not grid.bounded or grid.kind == "binary" else \
        (float(grid.kmin), float(grid.kmax)) if double else _k_range(grid)  # float64 holds every index
    return (grid.delta, lo, hi, grid.scale or 1.0, float(grid.kind == "binary"), float(stochastic))


@functools.lru_cache(maxsize=256)
def params(grid: Grid, stochastic: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``prm`` for :func:`quantize_math` (cached: no host-to-device copy per call). In float32
    the values round to float32, like every other path (``Δ``, ``s`` as float32)."""
    return torch.tensor(_grid_values(grid, stochastic, dtype == torch.float64), dtype=dtype, device=device)


def quantize_flat(x: torch.Tensor, grid: Grid, stochastic: bool, key: int) -> Optional[Tuple[torch.Tensor, int]]:
    """Round contiguous 1-D float32/float64 ``x`` with the compiled function: ``(out, bad)``,
    or ``None`` when the compiled path is unavailable (the caller then uses the eager path)."""
    fn = get()
    if fn is None or x.numel() < 2 or (x.device.type, x.dtype) in _broken:  # sizes 0/1 would recompile
        return None
    if x.device.type != "cpu" and not _gpu_divides_exactly(x.device.type):
        return None
    prm = params(grid, stochastic, x.dtype, x.device)
    keys = torch.tensor([key & M32, (key >> 32) & M32], dtype=torch.int64).to(x.device, non_blocking=True)
    try:
        with torch.no_grad():  # one graph whatever the caller's grad mode (it is a guard)
            out, bad = fn(x.view(-1), prm, keys)
    except Exception as e:  # no C++ compiler / Triton, an unsupported platform, ...
        with _lock:
            if (x.device.type, x.dtype) not in _broken:
                _broken.add((x.device.type, x.dtype))
                warnings.warn(f"qtrain: compiling the rounding for {x.device.type}/{x.dtype} failed "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                              "using the slower eager path (same results). Set QTRAIN_NO_COMPILE=1 to skip the attempt")
        return None
    return out, int(bad)
