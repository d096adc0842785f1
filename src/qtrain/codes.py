r"""Integer codes of grid values, and bit packing: a quantized tensor stored as what it is.

Every level of a grid has an integer code:

=========  =====================================================  ==========================
grid       level :math:`\leftrightarrow` code                      code dtype
=========  =====================================================  ==========================
binary     :math:`-s \leftrightarrow 0`, :math:`+s \leftrightarrow 1`   ``uint8``
ternary    :math:`k s \leftrightarrow k \in \{-1, 0, 1\}`           ``int8``
uniform    :math:`k\Delta \leftrightarrow k` (the level index)      ``int8`` / ``int16`` / ``int32``
                                                                   for ``bits`` :math:`\le` 8 / 16 / 32;
                                                                   ``int64`` when unbounded
float      the format's bit pattern (sign, exponent, mantissa)      ``int8`` (float8), ``int16``
=========  =====================================================  ==========================

:func:`encode` refuses values that are not levels (one line naming the first one); levels
are the float32 values :func:`qtrain.quantize` produces (:math:`\mathrm{fl}(k\Delta)`), and
:func:`decode` gives them back bit for bit (uniform grids have one zero, :math:`+0`; float
grids keep :math:`-0`).

:func:`pack` stores codes with :math:`b` bits each (1 for binary, 2 for ternary, ``bits`` for
a bounded uniform grid, 8 or 16 for float formats; an unbounded grid uses the fewest bits
that cover the tensor's codes) as :math:`\lceil nb/8 \rceil` bytes, little-endian bit order;
:func:`unpack` inverts it.

>>> import torch
>>> from qtrain import Grid
>>> from qtrain.codes import encode, decode, pack, unpack
>>> g = Grid.ternary(0.5)
>>> c = encode(torch.tensor([-0.5, 0.0, 0.5, 0.5]), g)
>>> c.tolist(), c.dtype
([-1, 0, 1, 1], torch.int8)
>>> data, meta = pack(c, g)
>>> len(data), meta
(1, {'bits': 2, 'offset': -1})
>>> decode(unpack(data, 4, meta, g), g).tolist()
[-0.5, 0.0, 0.5, 0.5]
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

import torch

from .floatgrid import fmt_info

if TYPE_CHECKING:  # grid.py imports this module lazily (Grid.encode/decode)
    from .grid import Grid

__all__ = ["encode", "decode", "code_dtype", "code_bits", "pack", "unpack"]

_F32 = torch.float32
_FLOAT_INT = {8: torch.int8, 16: torch.int16}


def code_dtype(grid: Grid) -> torch.dtype:
    """The integer dtype :func:`encode` returns for ``grid``."""
    if grid.kind == "binary":
        return torch.uint8
    if grid.kind == "ternary":
        return torch.int8
    if grid.kind == "float":
        return _FLOAT_INT[fmt_info(grid.fmt).bits]
    if grid.bits is None:
        return torch.int64
    return torch.int8 if grid.bits <= 8 else torch.int16 if grid.bits <= 16 else torch.int32


def code_bits(grid: Grid):
    """Bits per packed code (``None`` for an unbounded uniform grid: chosen per tensor)."""
    return {"binary": 1, "ternary": 2}.get(grid.kind, grid.bits)


def _levels(k: torch.Tensor, grid: Grid) -> torch.Tensor:
    """float32 level of integer-valued index ``k`` (the arithmetic of :mod:`qtrain.rounding`)."""
    if grid.kind == "binary":
        s = torch.tensor(grid.scale, dtype=_F32)
        return torch.where(k == 1, s, -s)
    d = torch.tensor(grid.delta, dtype=_F32)
    return (k.to(_F32) * d) + 0.0


def _off_grid(x: torch.Tensor, bad: torch.Tensor, grid: Grid) -> None:
    n = int(bad.sum())
    if n:
        i = int(bad.reshape(-1).nonzero()[0])
        v = float(x.reshape(-1)[i])
        raise ValueError(f"encode: {n} of {x.numel()} values are not levels of {grid!r} (first: {v!r} at flat index {i}); "
                         f"round them first with qtrain.quantize(x, grid)")


def encode(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Integer codes (shape of ``x``, dtype :func:`code_dtype`) of the on-grid values ``x``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"encode needs a floating-point tensor of grid levels, got {getattr(x, 'dtype', type(x).__name__)}")
    x = x.detach().cpu()
    xf = x.to(_F32)
    lossy = xf.to(x.dtype) != x
    if grid.kind == "float":
        f = fmt_info(grid.fmt)
        c = xf.to(f.dtype)
        back = c.to(_F32)
        _off_grid(x, lossy | ~torch.isfinite(xf) | (back.view(torch.int32) != xf.view(torch.int32)), grid)
        return c.view(_FLOAT_INT[f.bits])
    if grid.kind == "binary":
        k = (xf > 0).to(torch.int64)
    else:
        k = torch.round(xf.to(torch.float64) / float(torch.tensor(grid.delta, dtype=_F32)))
        finite = torch.isfinite(k)
        k = torch.where(finite, k, torch.zeros_like(k))
        if grid.bounded:
            k = k.clamp(grid.kmin, grid.kmax)
        k = k.to(torch.int64)
        lossy = lossy | ~finite
    _off_grid(x, lossy | (_levels(k, grid) != xf), grid)
    return k.to(code_dtype(grid))


def decode(codes: torch.Tensor, grid: Grid) -> torch.Tensor:
    """float32 levels of integer ``codes`` (inverse of :func:`encode`); refuses codes with no level."""
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"decode needs an integer tensor of codes, got {getattr(codes, 'dtype', type(codes).__name__)}")
    codes = codes.cpu()
    if grid.kind == "float":
        f = fmt_info(grid.fmt)
        want = _FLOAT_INT[f.bits]
        lo, hi = -(1 << (f.bits - 1)), (1 << f.bits) - 1  # signed or unsigned bit patterns
        c64 = codes.to(torch.int64)
        if codes.numel() and (int(c64.min()) < lo or int(c64.max()) > hi):
            raise ValueError(f"decode: codes outside [{lo}, {hi}] are not {f.bits}-bit patterns of {grid!r}")
        c = (c64 & ((1 << f.bits) - 1))
        c = torch.where(c >= 1 << (f.bits - 1), c - (1 << f.bits), c).to(want)
        out = c.view(f.dtype).to(_F32)
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"decode: {int((~torch.isfinite(out)).sum())} codes are NaN/inf patterns of {f.name}, not levels of {grid!r}")
        return out
    k = codes.to(torch.int64)
    lo, hi = (grid.kmin, grid.kmax) if grid.bounded else (None, None)
    if lo is not None and codes.numel() and (int(k.min()) < lo or int(k.max()) > hi):
        raise ValueError(f"decode: codes outside [{lo}, {hi}] have no level in {grid!r} "
                         f"(got {int(k.min())}..{int(k.max())})")
    return _levels(k, grid)


# -- bit packing -----------------------------------------------------------------------------
def _unsigned(codes: torch.Tensor, grid: Grid) -> Tuple[torch.Tensor, int, int]:
    """(codes - offset as int64 >= 0, bits, offset)."""
    c = codes.reshape(-1).to(torch.int64)
    if grid.kind == "float":
        b = fmt_info(grid.fmt).bits
        return c & ((1 << b) - 1), b, 0
    if grid.kind == "binary":
        return c, 1, 0
    if grid.bounded:
        return c - grid.kmin, code_bits(grid), grid.kmin
    lo = int(c.min()) if c.numel() else 0
    span = (int(c.max()) - lo) if c.numel() else 0
    return c - lo, max(1, span.bit_length()), lo


def pack(codes: torch.Tensor, grid: Grid) -> Tuple[bytes, dict]:
    """``codes`` (from :func:`encode`) as bytes with ``bits`` bits each; returns (bytes, ``{"bits", "offset"}``)."""
    v, b, offset = _unsigned(codes, grid)
    if b > 62:
        raise ValueError(f"pack: codes span {b} bits; at most 62 are supported")
    bits = ((v.unsqueeze(1) >> torch.arange(b, dtype=torch.int64)) & 1).to(torch.uint8).reshape(-1)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    byte = (bits.reshape(-1, 8).to(torch.int32) << torch.arange(8, dtype=torch.int32)).sum(1).to(torch.uint8)
    return byte.numpy().tobytes(), {"bits": b, "offset": offset}


def unpack(data: bytes, n: int, meta: dict, grid: Grid) -> torch.Tensor:
    """The ``n`` codes (1-D, dtype :func:`code_dtype`) that :func:`pack` stored in ``data``."""
    b, offset = int(meta["bits"]), int(meta["offset"])
    need = (n * b + 7) // 8
    if len(data) != need:
        raise ValueError(f"unpack: {n} codes of {b} bits need {need} bytes, got {len(data)}; the file is truncated or corrupt")
    if n == 0:
        return torch.zeros(0, dtype=code_dtype(grid))
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)
    bits = ((raw.unsqueeze(1) >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)[: n * b].reshape(n, b)
    v = (bits << torch.arange(b, dtype=torch.int64)).sum(1) + offset
    if grid.kind == "float":
        fb = fmt_info(grid.fmt).bits
        v = torch.where(v >= 1 << (fb - 1), v - (1 << fb), v)
    return v.to(code_dtype(grid))
