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

Large tensors stream: :func:`pack`, :func:`unpack` and :func:`pack_values` (encode + pack, what
:mod:`qtrain.export` uses) work on :data:`CHUNK` codes at a time (a multiple of 8, so every chunk
starts on a byte), writing into the packed output: peak memory is the packed bytes (twice for
the ``bytes`` that :func:`pack` returns) plus one chunk's temporaries, never an ``n x bits``
matrix. float64 tensors on uniform/binary/ternary grids hold float64 levels
(:math:`k\Delta` in float64, as :func:`qtrain.quantize` makes them); :func:`encode` checks them
in float64 and ``decode(..., dtype=torch.float64)`` gives them back.

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

__all__ = ["encode", "decode", "code_dtype", "code_bits", "pack", "unpack", "pack_values", "CHUNK"]

_F32 = torch.float32
_FLOAT_INT = {8: torch.int8, 16: torch.int16}
CHUNK = 1 << 16  # codes per chunk; a multiple of 8


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


def _levels(k: torch.Tensor, grid: Grid, dtype: torch.dtype = _F32) -> torch.Tensor:
    """Level of integer-valued index ``k`` with the arithmetic of :mod:`qtrain.rounding`: float32
    (``fl(k * fl(Δ))``), or float64 (``kΔ``) for ``dtype=torch.float64``."""
    wide = dtype == torch.float64
    if grid.kind == "binary":
        s = torch.tensor(grid.scale, dtype=torch.float64 if wide else _F32)
        return torch.where(k == 1, s, -s)
    if wide:
        return (k.to(torch.float64) * grid.delta) + 0.0
    d = torch.tensor(grid.delta, dtype=_F32)
    return (k.to(_F32) * d) + 0.0


def _raise_off_grid(x: torch.Tensor, bad: torch.Tensor, grid: Grid, start: int = 0, total: int = 0) -> None:
    n = int(bad.sum())
    if n:
        i = int(bad.reshape(-1).nonzero()[0])
        v = float(x.reshape(-1)[i])
        where = f"{n} of {x.numel()}" if not start and not total else \
            f"{n} of entries {start}..{start + x.numel() - 1} (of {total})"
        raise ValueError(f"encode: {where} values are not levels of {grid!r} (first: {v!r} at flat index {start + i}); "
                         f"round them first with qtrain.quantize(x, grid)")


def _encode(x: torch.Tensor, grid: Grid) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(codes as int64 or the float pattern dtype, mask of entries that are not levels)`` of CPU ``x``."""
    if grid.kind != "float" and x.dtype == torch.float64:  # float64 levels: checked in float64
        if grid.kind == "binary":
            k = (x > 0).to(torch.int64)
            return k, _levels(k, grid, x.dtype) != x
        k = torch.round(x / grid.delta)
        finite = torch.isfinite(k)
        k = torch.where(finite, k, torch.zeros_like(k))
        if grid.bounded:
            k = k.clamp(grid.kmin, grid.kmax)
        k = k.to(torch.int64)
        return k, ~finite | (_levels(k, grid, x.dtype) != x)
    xf = x.to(_F32)
    lossy = xf.to(x.dtype) != x
    if grid.kind == "float":
        f = fmt_info(grid.fmt)
        c = xf.to(f.dtype)
        back = c.to(_F32)
        return c.view(_FLOAT_INT[f.bits]), lossy | ~torch.isfinite(xf) | (back.view(torch.int32) != xf.view(torch.int32))
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
    return k, lossy | (_levels(k, grid) != xf)


def _check_float(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"encode needs a floating-point tensor of grid levels, got {getattr(x, 'dtype', type(x).__name__)}")
    return x.detach().cpu()


def encode(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Integer codes (shape of ``x``, dtype :func:`code_dtype`) of the on-grid values ``x``."""
    x = _check_float(x)
    k, bad = _encode(x, grid)
    _raise_off_grid(x, bad, grid)
    return k.to(code_dtype(grid))


def decode(codes: torch.Tensor, grid: Grid, dtype: torch.dtype = _F32) -> torch.Tensor:
    """Levels of integer ``codes`` (inverse of :func:`encode`), float32 or, with
    ``dtype=torch.float64``, the float64 levels of float64 tensors; refuses codes with no level."""
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
        return out.to(dtype)
    k = codes.to(torch.int64)
    lo, hi = (grid.kmin, grid.kmax) if grid.bounded else (None, None)
    if lo is not None and codes.numel() and (int(k.min()) < lo or int(k.max()) > hi):
        raise ValueError(f"decode: codes outside [{lo}, {hi}] have no level in {grid!r} "
                         f"(got {int(k.min())}..{int(k.max())})")
    return _levels(k, grid, torch.float64 if dtype == torch.float64 else _F32).to(dtype)


# -- bit packing, chunk by chunk ---------------------------------------------------------------
def _width(grid: Grid):
    """``(bits, offset)`` of a grid's packed codes; ``None`` for an unbounded uniform grid."""
    if grid.kind == "float":
        return fmt_info(grid.fmt).bits, 0
    if grid.kind == "binary":
        return 1, 0
    if grid.bounded:
        return code_bits(grid), grid.kmin
    return None


def _unsigned(c: torch.Tensor, grid: Grid, offset: int) -> torch.Tensor:
    """Codes as non-negative int64 ``c - offset`` (float patterns: their unsigned bits)."""
    c = c.reshape(-1).to(torch.int64)
    if grid.kind == "float":
        return c & ((1 << fmt_info(grid.fmt).bits) - 1)
    return c - offset if offset else c


def _span(chunks, grid: Grid) -> Tuple[int, int]:
    """``(bits, offset)`` of an unbounded grid: the fewest bits covering the codes seen in ``chunks``."""
    lo = hi = None
    for c in chunks:
        if c.numel():
            a, b = int(c.min()), int(c.max())
            lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
    if lo is None:
        return 1, 0
    return max(1, (hi - lo).bit_length()), lo


def _pack_chunk(out: torch.Tensor, v: torch.Tensor, b: int, start: int) -> None:
    """Write codes ``v`` (non-negative int64), codes ``start..`` of the tensor, into ``out`` with
    ``b`` bits each, little-endian bit order (``start`` is a multiple of 8: a byte boundary)."""
    bits = ((v.unsqueeze(1) >> torch.arange(b, dtype=torch.int64)) & 1).to(torch.uint8).reshape(-1)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    byte = (bits.reshape(-1, 8).to(torch.int32) << torch.arange(8, dtype=torch.int32)).sum(1).to(torch.uint8)
    first = start * b // 8
    out[first:first + byte.numel()] = byte


def pack_values(x: torch.Tensor, grid: Grid) -> Tuple[torch.Tensor, dict]:
    """:func:`pack` of :func:`encode` of ``x``, chunk by chunk: the packed bytes as a 1-D ``uint8``
    tensor and ``{"bits", "offset"}``. Refuses values that are not levels (one line)."""
    flat = _check_float(x).reshape(-1)
    n = flat.numel()

    def codes():
        for a in range(0, n, CHUNK):
            k, bad = _encode(flat[a:a + CHUNK], grid)
            _raise_off_grid(flat[a:a + CHUNK], bad, grid, a, n)
            yield a, k

    width = _width(grid)
    b, offset = width if width is not None else _span((k for _, k in codes()), grid)
    _check_width(b)
    out = torch.zeros((n * b + 7) // 8, dtype=torch.uint8)
    for a, k in codes():
        _pack_chunk(out, _unsigned(k, grid, offset), b, a)
    return out, {"bits": b, "offset": offset}


def _check_width(b: int) -> None:
    if b > 62:
        raise ValueError(f"pack: codes span {b} bits; at most 62 are supported")


def pack(codes: torch.Tensor, grid: Grid) -> Tuple[bytes, dict]:
    """``codes`` (from :func:`encode`) as bytes with ``bits`` bits each; returns (bytes, ``{"bits", "offset"}``)."""
    flat = codes.reshape(-1)
    n = flat.numel()
    width = _width(grid)
    b, offset = width if width is not None else _span((flat[a:a + CHUNK].to(torch.int64) for a in range(0, n, CHUNK)), grid)
    _check_width(b)
    out = torch.zeros((n * b + 7) // 8, dtype=torch.uint8)
    for a in range(0, n, CHUNK):
        _pack_chunk(out, _unsigned(flat[a:a + CHUNK], grid, offset), b, a)
    return out.numpy().tobytes(), {"bits": b, "offset": offset}


def unpack(data, n: int, meta: dict, grid: Grid) -> torch.Tensor:
    """The ``n`` codes (1-D, dtype :func:`code_dtype`) that :func:`pack` stored in ``data`` (bytes,
    or a 1-D ``uint8`` tensor), chunk by chunk."""
    b, offset = int(meta["bits"]), int(meta["offset"])
    need = (n * b + 7) // 8
    size = data.numel() if isinstance(data, torch.Tensor) else len(data)
    if size != need:
        raise ValueError(f"unpack: {n} codes of {b} bits need {need} bytes, got {size}; the file is truncated or corrupt")
    out = torch.empty(n, dtype=code_dtype(grid))
    if n == 0:
        return out
    raw = data.reshape(-1) if isinstance(data, torch.Tensor) else torch.frombuffer(bytearray(data), dtype=torch.uint8)
    fb = fmt_info(grid.fmt).bits if grid.kind == "float" else None
    for a in range(0, n, CHUNK):
        m = min(CHUNK, n - a)
        first = a * b // 8
        chunk = raw[first:first + (m * b + 7) // 8].to(torch.int64)
        bits = ((chunk.unsqueeze(1) >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)[: m * b].reshape(m, b)
        v = (bits << torch.arange(b, dtype=torch.int64)).sum(1) + offset
        if fb is not None:
            v = torch.where(v >= 1 << (fb - 1), v - (1 << fb), v)
        out[a:a + m] = v.to(out.dtype)
    return out
