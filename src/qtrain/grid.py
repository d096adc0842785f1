r"""Quantization grids: the sets of values a quantized weight may take.

Three kinds cover the paper:

* **uniform** -- levels :math:`k\Delta` for integer :math:`k`; with ``bits=b`` the index is
  limited to :math:`k \in [-2^{b-1},\, 2^{b-1}-1]` (two's-complement range);
* **binary** -- :math:`\{-s, +s\}` (BinaryConnect's weights);
* **ternary** -- :math:`\{-s, 0, +s\}` (a uniform grid with :math:`\Delta = s`, :math:`k \in \{-1,0,1\}`).
* **float** -- the finite values of a low-precision float format (bfloat16, float16,
  float8_e4m3fn, float8_e5m2): a step relative to :math:`|w|` (see :mod:`qtrain.floatgrid`).

A grid is a small immutable value; it knows its step :math:`\Delta` (the spacing of the
levels, ``2s`` for binary), its range, and how to describe itself for checkpoints.

>>> from qtrain import Grid
>>> Grid.uniform(0.25, bits=2).levels()
[-0.5, -0.25, 0.0, 0.25]
>>> Grid.binary(0.5).levels()
[-0.5, 0.5]

Bounds and levels are exactly what :func:`qtrain.quantize` returns: float32 values
:math:`k \cdot \mathrm{fl}_{32}(\Delta)` for float32 (and float16/bfloat16) tensors, :math:`k\Delta`
in float64 for float64 tensors.

>>> Grid.uniform(0.1, bits=2).bounds()
(-0.20000000298023224, 0.10000000149011612)
>>> Grid.uniform(0.1, bits=2).bounds("float64")
(-0.2, 0.1)
"""
from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["Grid"]
_F32_TINY, _F32_MAX = 2.0**-126, (2 - 2.0**-23) * 2.0**127
_KINDS = ("uniform", "binary", "ternary", "float")


def _f32(v: float) -> float:
    """``v`` rounded to float32 (round to nearest even), as a Python float; OverflowError past float32."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def _f32_index(k: int) -> float:
    """The level index ``k`` as the quantizers hold it: float32, rounded toward zero when
    ``|k| > 2^24`` is not representable (so the index never leaves the grid's range)."""
    kf = _f32(k)
    if abs(kf) > abs(k):  # one float32 step toward zero: decrement the magnitude bits
        kf = struct.unpack("<f", struct.pack("<I", struct.unpack("<I", struct.pack("<f", kf))[0] - 1))[0]
    return kf


def _is_float64(dtype) -> bool:
    """``dtype`` (``torch.float64``, ``"float64"``, ``torch.float32``, ...) computes in float64?"""
    name = str(dtype).replace("torch.", "")
    if name in ("float64", "double"):
        return True
    if name in ("float32", "float", "float16", "half", "bfloat16"):
        return False
    raise ValueError(f"dtype={dtype!r} is not a floating dtype; use 'float32' or 'float64' (or the torch dtypes)")


def _check_positive(name: str, value, fix: str, limit: float = _F32_MAX / 2) -> float:
    if isinstance(value, (str, bytes)) or type(value).__name__ in ("bool", "bool_"):
        raise ValueError(f"{name}={value!r} is a {type(value).__name__}, not a number; {fix}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number; {fix}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0; {fix}")
    if not _F32_TINY <= v <= limit:  # quantizers compute in float32 (2s for binary)
        raise ValueError(f"{name}={value!r} is outside float32's normal range [{_F32_TINY:.3g}, {limit:.3g}]; {fix}")
    return v


def _check_int(name: str, value) -> int:
    if type(value).__name__ in ("bool", "bool_") or not hasattr(value, "__index__"):
        raise ValueError(f"{name}={value!r} must be an integer; build grids with Grid.uniform/binary/ternary")
    return value.__index__()


@dataclass(frozen=True)
class Grid:
    """A quantization grid. Build it with :meth:`uniform`, :meth:`binary` or :meth:`ternary`.

    Attributes:
        kind: ``"uniform"``, ``"binary"`` or ``"ternary"``.
        delta: the spacing :math:`\\Delta` between neighbouring levels.
        kmin, kmax: the index range (``None`` = unbounded) of uniform/ternary grids.
        scale: :math:`s` for binary/ternary grids (``None`` for uniform).
        bits: the bit width a uniform grid was built with (``None`` = unbounded).
    """

    kind: str
    delta: float
    kmin: Optional[int] = None
    kmax: Optional[int] = None
    scale: Optional[float] = None
    bits: Optional[int] = None
    fmt: Optional[str] = None  # float grids: the format's name

    def __post_init__(self):
        """Validate every field, however the grid was built (``Grid(...)`` included), and refuse
        grids whose levels overflow float32 (the quantizers compute in float32)."""
        fix = "build grids with Grid.uniform/binary/ternary"
        if self.kind not in _KINDS:
            raise ValueError(f"unknown grid kind {self.kind!r}; expected one of {_KINDS}")
        limit = _F32_MAX if self.kind == "binary" else _F32_MAX / 2  # binary: Δ = 2s
        fields = {"delta": _check_positive("delta", self.delta, fix, limit)}
        if self.scale is not None:
            fields["scale"] = _check_positive("scale", self.scale, fix)
        for name in ("kmin", "kmax", "bits"):
            if getattr(self, name) is not None:
                fields[name] = _check_int(name, getattr(self, name))
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        b, s, d = self.bits, self.scale, self.delta
        if self.kind == "float":  # what Grid.float(fmt) builds
            from .floatgrid import fmt_info
            f = fmt_info(self.fmt)
            if (d, self.kmin, self.kmax, s, b) != (f.eps, None, None, None, f.bits):
                raise ValueError(f"inconsistent float grid fields for {self.fmt!r}; build it with Grid.float({self.fmt!r})")
            return
        if self.fmt is not None:
            raise ValueError(f"fmt={self.fmt!r} applies to float grids only; {fix}")
        if self.kind == "uniform":  # what Grid.uniform(d, bits) builds
            expect = (None, None, None, None) if b is None else (-(2 ** (b - 1)), 2 ** (b - 1) - 1, None, b)
            ok = b is None or 1 <= b <= 32
        else:  # what Grid.binary(s) / Grid.ternary(s) build
            expect = (0, 1, s, None) if self.kind == "binary" else (-1, 1, s, None)
            ok = s is not None and d == (2.0 * s if self.kind == "binary" else s)
        if not ok or (self.kmin, self.kmax, s, b) != expect:
            raise ValueError(f"inconsistent {self.kind} grid fields (delta={d!r}, kmin={self.kmin!r}, kmax={self.kmax!r}, "
                             f"scale={s!r}, bits={b!r}); {fix}")
        if self.bounded:
            try:
                self.bounds("float32")
            except OverflowError:
                far = max(abs(self.kmin), abs(self.kmax)) * d
                raise ValueError(f"{self!r} has levels up to {far:.3g}, beyond float32's largest {_F32_MAX:.3g}; "
                                 "use a smaller step or fewer bits") from None

    # -- constructors -------------------------------------------------------------------
    @staticmethod
    def uniform(delta: float, bits: Optional[int] = None) -> "Grid":
        r"""Levels :math:`k\Delta`; ``bits=b`` limits :math:`k` to :math:`[-2^{b-1}, 2^{b-1}-1]`."""
        d = _check_positive("delta", delta, "use a grid step Δ > 0, e.g. Grid.uniform(2**-4)")
        if bits is None:
            return Grid("uniform", d)
        if type(bits).__name__ in ("bool", "bool_") or not hasattr(bits, "__index__") or not 1 <= bits.__index__() <= 32:
            raise ValueError(f"bits={bits!r} must be an integer in 1..32 (or None for an unbounded grid)")
        bits = bits.__index__()
        return Grid("uniform", d, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, None, bits)

    @staticmethod
    def binary(scale: float = 1.0) -> "Grid":
        """The two levels :math:`\\{-s, +s\\}`."""
        s = _check_positive("scale", scale, "use a binary scale s > 0, e.g. Grid.binary(1.0)")
        return Grid("binary", 2.0 * s, 0, 1, s)

    @staticmethod
    def ternary(scale: float = 1.0) -> "Grid":
        """The three levels :math:`\\{-s, 0, +s\\}`."""
        s = _check_positive("scale", scale, "use a ternary scale s > 0, e.g. Grid.ternary(1.0)")
        return Grid("ternary", s, -1, 1, s)

    @staticmethod
    def float(fmt: str) -> "Grid":
        """The finite values of float format ``fmt``: ``"bfloat16"``, ``"float16"``,
        ``"float8_e4m3fn"`` or ``"float8_e5m2"``; ``delta`` is the relative step :math:`2^{-m}`."""
        from .floatgrid import fmt_info
        f = fmt_info(fmt)
        return Grid("float", f.eps, None, None, None, f.bits, f.name)

    # -- codes (see qtrain.codes) ---------------------------------------------------------
    def encode(self, x):
        """Integer codes of the on-grid tensor ``x`` (refuses off-grid values); see :mod:`qtrain.codes`."""
        from .codes import encode
        return encode(x, self)

    def decode(self, codes):
        """The float32 levels of integer ``codes`` (inverse of :meth:`encode`)."""
        from .codes import decode
        return decode(codes, self)

    # -- properties ---------------------------------------------------------------------
    @property
    def offset(self) -> float:
        """Value of index 0: levels are ``offset + k * delta`` (``-s`` for binary, else 0)."""
        return -self.scale if self.kind == "binary" else 0.0

    @property
    def bounded(self) -> bool:
        return self.kmin is not None

    def bounds(self, dtype="float32") -> Tuple[float, float]:
        r"""``(low, high)``: the smallest and largest level exactly as :func:`qtrain.quantize`
        returns them for tensors of ``dtype`` (``±inf`` when unbounded). float64 tensors get
        :math:`k\Delta` in float64; every other dtype computes in float32, :math:`k \cdot
        \mathrm{fl}_{32}(\Delta)` rounded to float32."""
        return _bounds(self, _is_float64(dtype))

    @property
    def low(self) -> float:
        """Smallest level as the quantizers produce it for float32 tensors (``-inf`` when unbounded);
        see :meth:`bounds` for float64."""
        return self.bounds()[0]

    @property
    def high(self) -> float:
        """Largest level as the quantizers produce it for float32 tensors (``+inf`` when unbounded)."""
        return self.bounds()[1]

    def levels(self, dtype="float32") -> list:
        """All levels of a bounded grid, ascending, exactly as the quantizers produce them for
        tensors of ``dtype`` (see :meth:`bounds`)."""
        if self.kind == "float":
            raise ValueError(f"{self!r} has a level per bit pattern; list them with grid.decode(codes) (qtrain.codes)")
        if not self.bounded:
            raise ValueError("an unbounded uniform grid has infinitely many levels; pass bits=...")
        n = self.kmax - self.kmin + 1
        if n > 1 << 16:
            raise ValueError(f"grid has {n} levels; levels() lists at most 65536")
        wide = _is_float64(dtype)
        return [self._level(k, wide) for k in range(self.kmin, self.kmax + 1)]

    def _level(self, k: int, wide: bool) -> float:
        """Level ``k`` as the quantizer computes it: ``±s`` for binary, else ``(k + 0) * Δ`` in
        float64 (``wide``) or in float32 (index and Δ in float32; the product is exact in a
        Python float and rounded once, as float32 multiplication does)."""
        if self.kind == "binary":
            s = self.scale if wide else _f32(self.scale)
            return s if k else -s
        if wide:
            return k * self.delta + 0.0
        return _f32(_f32_index(k) * _f32(self.delta)) + 0.0

    def to_dict(self) -> dict:
        """A JSON-able description (stored in checkpoints; see :meth:`from_dict`)."""
        if self.kind == "float":
            return {"kind": "float", "format": self.fmt}
        return {"kind": self.kind, "delta": self.delta, "kmin": self.kmin, "kmax": self.kmax,
                "scale": self.scale, "bits": self.bits}

    @staticmethod
    def from_dict(d: dict) -> "Grid":
        kind = d.get("kind")
        if kind == "uniform":
            return Grid.uniform(d["delta"], d.get("bits"))
        if kind == "binary":
            return Grid.binary(d["scale"])
        if kind == "ternary":
            return Grid.ternary(d["scale"])
        if kind == "float":
            return Grid.float(d["format"])
        raise ValueError(f"unknown grid kind {kind!r}; expected 'uniform', 'binary', 'ternary' or 'float'")

    def __repr__(self) -> str:
        if self.kind == "float":
            return f"Grid.float({self.fmt!r})"
        if self.kind == "uniform":
            return f"Grid.uniform({self.delta!r}" + (f", bits={self.bits})" if self.bits else ")")
        return f"Grid.{self.kind}({self.scale!r})"


@functools.lru_cache(maxsize=1024)
def _bounds(grid: Grid, wide: bool) -> Tuple[float, float]:
    """:meth:`Grid.bounds`, cached (BC clamps its latent weights to them every step)."""
    if grid.kind == "float":  # the format's largest finite value
        from .floatgrid import fmt_info
        m = fmt_info(grid.fmt).max
        return -m, m
    if not grid.bounded:
        return -math.inf, math.inf
    return grid._level(grid.kmin, wide), grid._level(grid.kmax, wide)
