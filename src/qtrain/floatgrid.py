r"""Low-precision float formats as quantization grids: :math:`Q_d` and :math:`Q_s` onto
bfloat16, float16, float8_e4m3fn and float8_e5m2.

A format with :math:`m` stored mantissa bits and smallest normal exponent :math:`e_{min}`
holds, for :math:`|w|` in the binade :math:`[2^e, 2^{e+1})`, the multiples of the local step

.. math::
    \Delta(w) = 2^{\max(e,\,e_{min}) - m}
    \qquad\text{(relative step } \Delta(w)/|w| \le 2^{-m}\text{; subnormals below } 2^{e_{min}}).

With :math:`t = |w|/\Delta(w)`, :math:`f = \lfloor t\rfloor`, :math:`p = t - f`:

* :math:`Q_d(w)` is round-to-nearest, ties to even -- exactly ``w.to(dtype)``;
* :math:`Q_s(w) = \operatorname{sign}(w)\,\Delta(w)\,(f + [u < p])`, :math:`u\sim\mathcal U[0,1)`,
  so :math:`\mathbb E[Q_s(w)] = w` and :math:`\operatorname{Var}[Q_s(w)] = p(1-p)\Delta(w)^2`
  (the poster's stochastic rounding with a step that scales with :math:`|w|`).

:math:`u` comes from :mod:`qtrain.rng` (keyed, counter-based), the same source as the
uniform grids: results depend only on the key, so SR is reproducible by (seed, step,
parameter) and identical across data-parallel replicas. Its 24-bit resolution makes
:math:`P(\text{up}) = \lceil 2^{24}p\rceil/2^{24}`; for normal values :math:`p` has at most
:math:`23 - m` bits, so SR is exactly unbiased there.

Special values (one rule for every format):

=====================  ===========================================  =========================
input                  :math:`Q_d`                                  :math:`Q_s`
=====================  ===========================================  =========================
NaN, :math:`\pm\infty`  refused (``ValueError``)                     refused
:math:`|w| >` max       as ``w.to(dtype)`` if finite (e4m3fn         e4m3fn: :math:`\pm`max
                       saturates to :math:`\pm448`), else refused   (saturates); else refused
:math:`\pm 0`, tiny     sign kept (``-1e-30`` gives ``-0.0``)         sign kept
=====================  ===========================================  =========================

Outputs are float32 tensors (every value of these formats is exactly a float32). The
inputs are taken as float32 first (float64 inputs: :math:`Q_d` casts directly, as ``to`` does).

Three implementations compute the same bits (tests check it): :func:`q_d_float_reference` /
:func:`q_s_float_reference` (Python floats, the formula above); the torch path of
:func:`quantize_float` (any device: :math:`Q_d` is the cast; :math:`Q_s` works on the float32
bit pattern: for normal values its :math:`23 - m` low bits are the fraction :math:`p`, and
"up" adds one unit there, carrying into the exponent when needed); and a compiled C kernel
(``csrc/floatgrid.c``, contiguous float32 CPU tensors, both :math:`Q_d` and :math:`Q_s`),
used when a C compiler is available (``QTRAIN_NO_KERNEL=1`` turns it off).

>>> import torch
>>> from qtrain.floatgrid import quantize_float
>>> x = torch.tensor([1.0 + 2**-9, -3.0e-3])
>>> torch.equal(quantize_float(x, "bfloat16", False), x.to(torch.bfloat16).float())
True
>>> y = quantize_float(torch.full((100_000,), 1.0 + 2**-9), "bfloat16", True, key=1)
>>> sorted(set(y.tolist())) == [1.0, 1.0 + 2**-7]
True
>>> abs(y.mean().item() - (1.0 + 2**-9)) < 1e-4
True
"""
from __future__ import annotations

import ctypes
import functools
import math
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import _kernel
from .rng import uniform

__all__ = ["FORMATS", "FloatFormat", "fmt_info", "quantize_float", "q_d_float_reference", "q_s_float_reference"]


@dataclass(frozen=True)
class FloatFormat:
    """A binary float format: ``m`` mantissa bits, smallest normal exponent ``emin``,
    largest finite value ``max``, total ``bits``, whether it has infinities."""

    name: str
    dtype: torch.dtype
    m: int
    emin: int
    max: float
    bits: int
    has_inf: bool

    @property
    def eps(self) -> float:
        """Relative step :math:`2^{-m}` (the spacing just above 1)."""
        return 2.0 ** -self.m

    @property
    def tiny(self) -> float:
        """Smallest positive (subnormal) value :math:`2^{e_{min} - m}`."""
        return 2.0 ** (self.emin - self.m)


FORMATS = {
    "bfloat16": FloatFormat("bfloat16", torch.bfloat16, 7, -126, (2 - 2.0**-7) * 2.0**127, 16, True),
    "float16": FloatFormat("float16", torch.float16, 10, -14, 65504.0, 16, True),
    "float8_e4m3fn": FloatFormat("float8_e4m3fn", torch.float8_e4m3fn, 3, -6, 448.0, 8, False),
    "float8_e5m2": FloatFormat("float8_e5m2", torch.float8_e5m2, 2, -14, 57344.0, 8, True),
}


def fmt_info(name: str) -> FloatFormat:
    """The :class:`FloatFormat` called ``name``; one-line ``ValueError`` for unknown names."""
    if name not in FORMATS:
        raise ValueError(f"float format {name!r} is not one of {', '.join(FORMATS)}; e.g. Grid.float('bfloat16')")
    return FORMATS[name]


def _f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def _step(a: float, fmt: FloatFormat) -> float:
    """:math:`\\Delta(a)` for ``a > 0``."""
    e = math.frexp(a)[1] - 1  # a in [2^e, 2^(e+1))
    return 2.0 ** (max(e, fmt.emin) - fmt.m)


def _check_scalar(w: float, what: str) -> None:
    if math.isnan(w) or math.isinf(w):
        raise ValueError(f"{what} of {w!r}: NaN and inf have no level in a float grid")


# -- plain scalar reference ------------------------------------------------------------------
def q_d_float_reference(w: float, name: str) -> float:
    """:math:`Q_d(w)`: ``w`` as float32, then round-to-nearest-even into format ``name``."""
    fmt = fmt_info(name)
    _check_scalar(w, "Q_d")
    w = _f32(w)
    a = abs(w)
    if a == 0:
        return w
    q = _step(a, fmt)
    t = a / q  # exact: q is a power of two
    f = math.floor(t)
    r = t - f
    k = f + 1 if (r > 0.5 or (r == 0.5 and f % 2 == 1)) else f
    v = k * q
    if v > fmt.max:
        if fmt.has_inf:
            raise ValueError(f"Q_d of {w!r}: rounds to inf in {name} (max {fmt.max:g}); scale the weights down")
        v = fmt.max  # e4m3fn has no inf: torch's cast saturates
    return math.copysign(v, w)


def q_s_float_reference(w: float, name: str, u: float) -> float:
    """:math:`Q_s(w)` given the uniform draw ``u`` in [0, 1): ``w`` as float32, then up with probability ``p``."""
    fmt = fmt_info(name)
    _check_scalar(w, "Q_s")
    w = _f32(w)
    a = abs(w)
    if a == 0:
        return w
    if a > fmt.max:
        if fmt.has_inf:
            raise ValueError(f"Q_s of {w!r}: beyond {name}'s largest finite value {fmt.max:g}; scale the weights down")
        return math.copysign(fmt.max, w)
    q = _step(a, fmt)
    t = a / q
    f = math.floor(t)
    k = f + 1 if u < t - f else f
    return math.copysign(k * q, w)


# -- vectorised ------------------------------------------------------------------------------
_ABS = 0x7FFFFFFF
_SIGN = -0x80000000


def _bits(v: float) -> int:
    return struct.unpack("<i", struct.pack("<f", v))[0]


def _refuse(x: torch.Tensor, what: str, name: str, limit_bad: torch.Tensor) -> None:
    nan = int(torch.isnan(x).sum())
    if nan:
        raise ValueError(f"{what}: input has {nan} NaN entr{'y' if nan == 1 else 'ies'} of {x.numel()}; "
                         "check the learning rate, the loss and the gradients (NaN has no level)")
    n = int(limit_bad.sum())
    if n:
        big = float(x[limit_bad].abs().max())
        raise ValueError(f"{what}: {n} entr{'y' if n == 1 else 'ies'} (largest |w| = {big:g}) have no finite level in "
                         f"{name} (max {FORMATS[name].max:g}); check the learning rate and gradients or scale the weights")


def _sr32(x: torch.Tensor, fmt: FloatFormat, key: int, start: int = 0) -> torch.Tensor:
    """:math:`Q_s` of a contiguous float32 tensor (finite, ``|x| <= max`` or e4m3fn)."""
    bits = x.view(torch.int32)
    a = bits & _ABS
    sign = bits & _SIGN
    u = uniform(key, x.numel(), x.device, start=start).view(x.shape)
    d = 23 - fmt.m
    low = a & ((1 << d) - 1)
    up = u < low.to(torch.float32) * 2.0 ** -d  # p = low / 2^d, exact in float32
    out = (a - low) + (up.to(torch.int32) << d)  # carries into the exponent when needed
    if fmt.emin > -126:  # below 2^emin the step is the fixed 2^(emin - m) (subnormals)
        sub = a < _bits(2.0 ** fmt.emin)
        t = x.abs() * 2.0 ** (fmt.m - fmt.emin)  # exact: power-of-two scaling of a float32
        f = torch.floor(t)
        vs = (f + (u < t - f).to(torch.float32)) * 2.0 ** (fmt.emin - fmt.m)
        out = torch.where(sub, vs.view(torch.int32), out)
    if not fmt.has_inf:  # e4m3fn: saturate like its cast
        out = out.clamp_max(_bits(fmt.max))
    return (out | sign).view(torch.float32)


# -- compiled C path (csrc/floatgrid.c): the same bits, contiguous float32 CPU tensors ------------
@functools.lru_cache(maxsize=None)
def _lib() -> Optional[ctypes.CDLL]:
    src = Path(__file__).with_name("csrc") / "floatgrid.c"
    lib = _kernel.compile_library("floatgrid", src.read_text(), _kernel._FLAGS) if src.exists() else None
    if lib is None or not hasattr(lib, "qtrain_float_sr_f32"):
        return None
    f = lib.qtrain_float_sr_f32
    f.restype = ctypes.c_int64
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_uint32,
                  ctypes.c_float, ctypes.c_float, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int]
    return lib


@functools.lru_cache(maxsize=1)
def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="qtrain-floatgrid")


def _sr32_c(lib, x: torch.Tensor, fmt: FloatFormat, key: int, stochastic: bool = True, start: int = 0):
    """``(out, number of inputs without a level)`` from the C kernel (threads split the array):
    :math:`Q_s` or, with ``stochastic=False``, :math:`Q_d` (the cast's bits)."""
    out = torch.empty_like(x)
    n = x.numel()
    sub_lim = _bits(2.0 ** fmt.emin) if fmt.emin > -126 else 0
    sat = _bits(fmt.max) if not fmt.has_inf else 0x7FFFFFFF
    bad_lim = _bits(fmt.max) if fmt.has_inf else 0x7F7FFFFF  # above: inf/NaN (and > max with inf)
    args = (fmt.m, sub_lim, 2.0 ** (fmt.m - fmt.emin) if sub_lim else 1.0, 2.0 ** (fmt.emin - fmt.m) if sub_lim else 1.0,
            sat, bad_lim, key & 0xFFFFFFFF, (key >> 32) & 0xFFFFFFFF, int(stochastic))
    xp, op = x.data_ptr(), out.data_ptr()
    threads = max(1, min(torch.get_num_threads(), n >> 16))
    if threads == 1:
        return out, int(lib.qtrain_float_sr_f32(xp, op, n, start, *args))
    cuts = [n * j // threads for j in range(threads + 1)]
    jobs = [_pool(threads).submit(lib.qtrain_float_sr_f32, xp + 4 * a, op + 4 * a, b - a, start + a, *args)
            for a, b in zip(cuts[:-1], cuts[1:])]
    return out, sum(int(j.result()) for j in jobs)


def quantize_float(x: torch.Tensor, name: str, stochastic: bool, key: int = 0, start: int = 0) -> torch.Tensor:
    """:math:`Q_d` (``stochastic=False``) or :math:`Q_s` onto format ``name``; float32 result.

    ``key`` is a resolved 64-bit key of :mod:`qtrain.rng` (see :func:`qtrain.rng.resolve_key`);
    ``start``: ``x`` (flattened) is elements ``[start, start + n)`` of a larger tensor, whose draws it takes.
    Refuses NaN/inf and values without a finite level (see the module's table) in one line.
    """
    fmt = fmt_info(name)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"quantize_float needs a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.numel() == 0:
        return x.detach().to(torch.float32).clone()
    x = x.detach()
    what = f"{'Q_s' if stochastic else 'Q_d'} onto {name}"
    if not stochastic and x.dtype == torch.float32 and x.device.type == "cpu" and _lib() is not None:
        out, bad = _sr32_c(_lib(), x.contiguous(), fmt, 0, False)
        if not bad:
            return out.view(x.shape)
    if not stochastic:
        out = x.to(fmt.dtype).to(torch.float32)
        if not bool(torch.isfinite(out).all()) or not bool(torch.isfinite(x).all()):
            _refuse(x, what, name, ~torch.isfinite(out) | ~torch.isfinite(x))
        return out
    xc = x.to(torch.float32).contiguous()
    lib = _lib() if xc.device.type == "cpu" else None
    if lib is not None:
        out, bad = _sr32_c(lib, xc, fmt, key, start=start)
        if not bad:
            return out
    finite = torch.isfinite(xc)
    if not bool(finite.all()) or (fmt.has_inf and bool((xc.abs() > fmt.max).any())):
        _refuse(xc, what, name, ~finite | ((xc.abs() > fmt.max) if fmt.has_inf else torch.zeros_like(finite)))
    return _sr32(xc, fmt, key, start)
