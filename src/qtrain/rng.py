r"""The seeded, counter-based random source behind stochastic rounding.

Every stochastic rounding call is driven by one 64-bit *key*. Element :math:`i` of the
(logically row-major) tensor gets the uniform number

.. math::
    u_i = 2^{-24}\,\big\lfloor \mathrm{mix}(\mathrm{mix}(i_{lo} + k_0) \oplus (k_1 + i_{hi})) / 2^8 \big\rfloor
    \in [0, 1),

where :math:`(k_0, k_1)` are the key's 32-bit halves and ``mix`` is a 32-bit integer
finaliser (xor-shift-multiply; constants from C. Wellons' "lowbias32"). Nothing is stored
and nothing advances: the same key and index give the same :math:`u` on any device, in any
process, whatever the tensor's memory layout or how the work is split across threads.
That is what makes training resumable bit-for-bit and keeps data-parallel replicas
identical without communication: the optimizer derives the key from
``(seed, step, parameter index)`` with :func:`stream_key`.

Not a cryptographic generator. :math:`u` has 24-bit resolution, so
:math:`P(u < p) = \lceil 2^{24} p \rceil / 2^{24}`: unbiased to within :math:`2^{-24}`.

>>> import torch
>>> from qtrain.rng import uniform, uniform_reference
>>> u = uniform(key=7, n=4)
>>> float(u[2]) == uniform_reference(7, 2)
True
"""
from __future__ import annotations

from typing import Optional, Union

import torch

__all__ = ["splitmix64", "stream_key", "step_keys", "resolve_key", "offset_key", "uniform", "uniform_reference",
           "mix32_reference"]

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
C1, C2 = 0x7FEB352D, 0x846CA68B


def splitmix64(x: int) -> int:
    """SplitMix64 finaliser on Python ints (used to derive keys, not per element)."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def stream_key(seed: int, step: int, index: int) -> int:
    """The key of parameter ``index`` at optimizer step ``step`` of a run seeded ``seed``."""
    return splitmix64(splitmix64(splitmix64(int(seed) & M64) ^ (int(step) & M64)) ^ (int(index) & M64))


def step_keys(seed: int, step: int, n: int) -> list:
    """``[resolve_key(stream_key(seed, step, i)) for i in range(n)]``, the per-parameter keys
    the optimizer hands to the rounding, with the shared ``(seed, step)`` part hashed once."""
    head = splitmix64(splitmix64(int(seed) & M64) ^ (int(step) & M64))
    return [splitmix64(splitmix64(head ^ i)) for i in range(n)]


def resolve_key(generator: Union[None, int, torch.Generator]) -> int:
    """Turn the ``generator`` argument of :func:`qtrain.quantize` into a 64-bit key.

    ``int`` (any integer type, e.g. ``numpy.int64``): used as the key (hashed). ``torch.Generator``: one draw from it (so it advances,
    like any torch sampling call). ``None``: one draw from torch's global generator, so
    ``torch.manual_seed`` controls it.
    """
    if type(generator).__name__ in ("bool", "bool_"):
        raise TypeError("generator must be None, an int key or a torch.Generator, not a bool")
    if hasattr(generator, "__index__") and not isinstance(generator, torch.Tensor):  # int, numpy.int64, ...
        return splitmix64(generator.__index__() & M64)
    if generator is None or isinstance(generator, torch.Generator):
        draw = torch.randint(0, 2**62, (1,), generator=generator, device="cpu")
        return splitmix64(int(draw))
    raise TypeError(f"generator={generator!r}: expected None, an int key or a torch.Generator")


def offset_key(key: int, start: int) -> int:
    r"""The key whose stream starts at element ``start`` of ``key``'s stream: element :math:`j` of
    the result is :math:`u_{start + j}` of ``key``, for every :math:`j < 2^{32} - (start \bmod 2^{32})`
    (a span that does not cross a multiple of :math:`2^{32}`). With :math:`i = start + j`,
    :math:`i_{lo} + k_0 = j + (k_0 + start_{lo})` and :math:`k_1 + i_{hi} = (k_1 + start_{hi})`
    modulo :math:`2^{32}`, so the shifted halves :math:`(k_0 + start_{lo}, k_1 + start_{hi})` are the
    key. A shard of a larger tensor (FSDP) rounds with the global indices of its entries this way,
    on every path (C kernel, compiled, eager); ``start=0`` returns ``key`` itself.

    >>> torch.equal(uniform(offset_key(7, 5), 3), uniform(7, 8)[5:])
    True
    """
    if not start:
        return key
    k0 = ((key & M32) + (start & M32)) & M32
    k1 = (((key >> 32) & M32) + ((start >> 32) & M32)) & M32
    return (k1 << 32) | k0


# -- plain scalar reference ------------------------------------------------------------------
def mix32_reference(x: int) -> int:
    x &= M32
    x ^= x >> 16
    x = (x * C1) & M32
    x ^= x >> 15
    x = (x * C2) & M32
    return x ^ (x >> 16)


def uniform_reference(key: int, i: int) -> float:
    """:math:`u_i` for an already-resolved 64-bit ``key``, one Python int at a time."""
    k0, k1 = key & M32, (key >> 32) & M32
    h = mix32_reference(mix32_reference(((i & M32) + k0) & M32) ^ ((k1 + (i >> 32)) & M32))
    return (h >> 8) * 2.0**-24


# -- vectorised torch version (any device) ---------------------------------------------------
def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    # (h * c) mod 2^32 without int64 overflow: split c into 16-bit halves.
    lo, hi = c & 0xFFFF, c >> 16
    return ((h * lo) + (((h * hi) & 0xFFFF) << 16)) & M32


def _mix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, C1)
    h = h ^ (h >> 15)
    h = _mul32(h, C2)
    return h ^ (h >> 16)


def uniform(key: int, n: int, device: Optional[torch.device] = None, start: int = 0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:math:`u_{start}, \\dots, u_{start+n-1}` for a resolved ``key`` as a 1-D tensor."""
    k0, k1 = key & M32, (key >> 32) & M32
    i = torch.arange(start, start + n, dtype=torch.int64, device=device)
    h = _mix32(((i & M32) + k0) & M32)
    h = _mix32(h ^ ((k1 + (i >> 32)) & M32))
    return (h >> 8).to(dtype) * 2.0**-24
