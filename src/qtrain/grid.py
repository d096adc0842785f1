r"""Quantization grids: the sets of values a quantized weight may take.

Three kinds cover the paper (NOTES §1):

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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

__all__ = ["Grid"]
_F32_TINY, _F32_MAX = 2.0**-126, (2 - 2.0**-23) * 2.0**127


def _check_positive(name: str, value, fix: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number; {fix}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0; {fix}")
    if not _F32_TINY <= v <= _F32_MAX / 2:  # quantizers compute in float32 (2s for binary)
        raise ValueError(f"{name}={value!r} is outside float32's normal range [{_F32_TINY:.3g}, {_F32_MAX / 2:.3g}]; {fix}")
    return v


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

    # -- constructors -------------------------------------------------------------------
    @staticmethod
    def uniform(delta: float, bits: Optional[int] = None) -> "Grid":
        r"""Levels :math:`k\Delta`; ``bits=b`` limits :math:`k` to :math:`[-2^{b-1}, 2^{b-1}-1]`."""
        d = _check_positive("delta", delta, "use a grid step Δ > 0, e.g. Grid.uniform(2**-4)")
        if bits is None:
            return Grid("uniform", d)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
            raise ValueError(f"bits={bits!r} must be an integer in 1..32 (or None for an unbounded grid)")
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

    @property
    def low(self) -> float:
        """Smallest level (``-inf`` when unbounded)."""
        if self.kind == "float":
            return -self._fmax()
        return -math.inf if self.kmin is None else self.offset + self.kmin * self.delta

    @property
    def high(self) -> float:
        """Largest level (``+inf`` when unbounded)."""
        if self.kind == "float":
            return self._fmax()
        return math.inf if self.kmax is None else self.offset + self.kmax * self.delta

    def _fmax(self) -> float:
        from .floatgrid import fmt_info
        return fmt_info(self.fmt).max

    def levels(self) -> list:
        """All levels of a bounded grid, ascending."""
        if self.kind == "float":
            raise ValueError(f"{self!r} has a level per bit pattern; list them with grid.decode(codes) (qtrain.codes)")
        if not self.bounded:
            raise ValueError("an unbounded uniform grid has infinitely many levels; pass bits=...")
        n = self.kmax - self.kmin + 1
        if n > 1 << 16:
            raise ValueError(f"grid has {n} levels; levels() lists at most 65536")
        return [self.offset + k * self.delta for k in range(self.kmin, self.kmax + 1)]

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
