r"""One kernel call per optimizer step for the small float32 CPU tensors of a quantized model.

Per tensor, :class:`qtrain.QuantizedOptimizer` would call :func:`qtrain.rounding.quantize_into`
(argument checks, a key, a ctypes call of a dozen converted arguments: 15-45 µs of fixed cost
under load, against Adam's ~50 µs a tensor). This module keeps one packed record per eligible
tensor (pointers, length, mode, grid constants, BC's clip bounds) in a buffer rebuilt only
when a tensor's storage, dtype, layout or grid changes, and rounds them all with one call of
``qtrain_quantize_recs`` (``csrc/quantize.c``). The step's keys are derived inside the kernel
from the shared head :math:`h = \mathrm{sm}(\mathrm{sm}(\text{seed}) \oplus t)` as
:math:`\mathrm{sm}(\mathrm{sm}(h \oplus i))` (:math:`\mathrm{sm}` = SplitMix64), exactly
:func:`qtrain.rng.step_keys`, so the bits equal the per-tensor path's (tests check it).

Eligible: float32, CPU, contiguous, ``0 < numel < 2^17`` (larger tensors are split across
threads by the per-tensor path), a uniform or binary grid, and for BC a float32 contiguous
latent tensor and non-zero clip bounds (so ``clip`` never has to choose between :math:`\pm 0`).

>>> import torch
>>> from qtrain import Grid
>>> from qtrain.rounding import quantize
>>> p = torch.randn(100); g = Grid.uniform(2**-4)
>>> batch = PackedRounding()
>>> want = quantize(p, g, "nearest")
>>> done = batch.run([p], [g], None, stochastic=False, head=0)
>>> done == {0} and torch.equal(p, want)
True
"""
from __future__ import annotations

import ctypes
import operator
import struct
from typing import List, Optional, Sequence

import torch

from . import _kernel
from .grid import Grid
from ._optim_support import grad_values
from .rounding import _SMALL, _bump_version, _kernel_args, _raise_bad

__all__ = ["PackedRounding", "grads_finite"]

_F32 = torch.float32
_BAD = struct.Struct("=q")


_T = torch.Tensor
_KIND = operator.attrgetter("dtype", "layout", "is_cpu")


def _sigs(ts: Sequence[torch.Tensor]) -> tuple:
    """What the records of ``ts`` depend on (storage, dtype, layout, device, contiguity, size), per
    tensor, read with C-level ``map`` calls (a few µs for 60 tensors)."""
    return (tuple(map(_T.data_ptr, ts)), tuple(map(_KIND, ts)), tuple(map(_T.is_contiguous, ts)),
            tuple(map(_T.numel, ts)))


class PackedRounding:
    """The cached records of one optimizer; :meth:`run` rounds the eligible tensors in place."""

    def __init__(self):
        self.key = None  # what the records were built from
        self.index: List[int] = []
        self.buf = None
        self.outs: tuple = ()
        self.grids: tuple = ()

    def _build(self, params, grids, latents, skip, stochastic: bool, sources) -> None:
        recs = []
        for i, (p, g) in enumerate(zip(params, grids)):
            if i in skip or g.kind == "float" or not (p.dtype is _F32 and p.is_cpu and p.is_contiguous()
                                                       and 0 < p.numel() < _SMALL):
                continue
            e = _kernel_args(g)
            flags, latent, lo, hi = int(g.bounded) | (4 if stochastic else 0), 0, 0.0, 0.0
            if latents is not None:
                lat = latents[i]
                lo, hi = g.bounds(lat.dtype)
                if not (lat.dtype is _F32 and lat.is_cpu and lat.is_contiguous() and lat.numel() == p.numel()
                        and lo != 0 and hi != 0):
                    continue
                flags, latent = flags | 2, lat.data_ptr()
            recs.append((i, (sources[i].data_ptr(), p.data_ptr(), latent, p.numel(), e[1] + stochastic, flags,
                             i if stochastic else 0, e[2], e[6], e[4], e[5], lo, hi, 0)))
        self.index = [i for i, _ in recs]
        self.buf = ctypes.create_string_buffer(max(1, len(recs)) * _kernel.REC.size)
        for j, (_, r) in enumerate(recs):
            _kernel.REC.pack_into(self.buf, j * _kernel.REC.size, *r)
        self.outs = tuple(params[i] for i in self.index) + tuple(latents[i] for i in self.index if latents)
        self.grids = tuple(grids)  # alive while the key holds their ids, so an id is never reused meanwhile

    def run(self, params: Sequence[torch.Tensor], grids: Sequence[Grid], latents: Optional[Sequence[torch.Tensor]],
            stochastic: bool, head: int, skip=frozenset(), sources: Optional[Sequence[torch.Tensor]] = None) -> set:
        r"""Round the eligible ``params`` in place (BC, ``latents`` given: clip each into its latent
        first, :math:`w_r \leftarrow \mathrm{clip}(w)`, :math:`w \leftarrow Q(w_r)`); ``skip``: indices
        to leave alone; ``sources``: the tensors read instead of ``params`` (BC: the latent itself,
        clipped in place, where the base step moved it). Returns the set of indices done (empty
        without the kernel). Raises ``ValueError`` like :func:`~qtrain.rounding.quantize_into`
        when an entry has no level."""
        fns = _kernel.rec_fns()
        if fns is None:
            return set()
        sources = params if sources is None else sources
        key = (_sigs(params), tuple(map(_T.data_ptr, latents)) if latents else None,
               None if sources is params else tuple(map(_T.data_ptr, sources)),
               tuple(map(id, grids)), stochastic, tuple(skip))
        if key != self.key:
            self._build(params, grids, latents, skip, stochastic, sources)
            self.key = key
        if not self.index:
            return set()
        _bump_version(self.outs)  # written through their pointers: tell autograd
        if fns[1](ctypes.addressof(self.buf), len(self.index), head):
            for j, i in enumerate(self.index):
                if _BAD.unpack_from(self.buf, j * _kernel.REC.size + _kernel.BAD_OFFSET)[0]:
                    _raise_bad(latents[i] if latents else None, params[i], grids[i])
        return set(self.index)


def grads_finite(grads) -> bool:
    """True when no gradient of ``grads`` (dense or sparse; ``None`` skipped) holds NaN or inf.
    Dense float32 CPU contiguous ones (large ones only when torch runs one thread) are read by one
    kernel call, an integer test of the exponent bits; the others by one batched
    ``torch._foreach_norm`` (NaN/inf propagate into the norms; a finite gradient whose norm
    overflows is re-checked entry by entry, so it never counts as non-finite)."""
    gs = [g for g in grads if g is not None]
    if not gs:
        return True
    f = _kernel.nonfinite_fn()
    one_thread = torch.get_num_threads() == 1
    if f is not None and set(map(type, gs)) == {_T} and set(map(_KIND, gs)) == {(_F32, torch.strided, True)} \
            and all(map(_T.is_contiguous, gs)) \
            and (one_thread or max(map(_T.numel, gs)) < _SMALL):
        fast, rest = gs, []  # the usual case, checked with C-level map calls
    else:
        fast, rest = [], []
        for g in gs:
            if f is not None and type(g) is _T and g.dtype is _F32 and g.layout is torch.strided and g.is_cpu \
                    and g.is_contiguous() \
                    and (one_thread or g.numel() < _SMALL):
                fast.append(g)
            else:
                rest.append(grad_values(g))
    if fast:
        pairs = [0] * (2 * len(fast))
        pairs[0::2], pairs[1::2] = map(_T.data_ptr, fast), map(_T.numel, fast)
        if f(struct.pack(f"={len(pairs)}q", *pairs), ctypes.c_int64(len(fast))):
            return False
    if not rest:
        return True
    norms = torch._foreach_norm(rest)
    if len({n.dtype for n in norms}) > 1:
        norms = [n.float() for n in norms]
    return bool(torch.stack(norms).isfinite().all()) or all(bool(v.isfinite().all()) for v in rest)
