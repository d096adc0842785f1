r"""Fast 1-D SR / BC chains for the toy problem and the Markov check (:mod:`qtrain.theory.toy`).

One chain step (grid :math:`\Delta`, table ``grad[k]`` of :math:`f'` at level ``k``, step
:math:`\alpha`, noise :math:`\sigma\xi_t`, :math:`\xi_t \sim \mathcal N(0,1)`):

.. math::
    \text{SR:}\quad x_{t+1} = Q_s\big(x_t - \alpha(f'(x_t) + \sigma\xi_t)\big) \qquad
    \text{BC:}\quad w_b^t = Q(w_r^t),\; w_r^{t+1} = \Pi\big(w_r^t - \alpha(f'(w_b^t) + \sigma\xi_t)\big)

with :math:`\Pi` the clip to the grid's range **[BC2015]** and :math:`Q = Q_d` (or :math:`Q_s`).

**Why it is fast.** The chain is sequential, so it cannot be vectorised over time. The loop
runs in a few lines of C (built once with the system compiler, like :mod:`qtrain._kernel`),
and every rounding inside it is a call, through a function pointer, to *qtrain's own*
compiled rounding kernel ``qtrain_quantize_f32`` (the one :func:`qtrain.quantize` uses) on one
element: rounding is never re-derived. Step ``t`` of a run keyed ``key`` uses element ``t``
of :mod:`qtrain.rng`'s stream, i.e. exactly the bits ``quantize(y, grid, "stochastic",
generator=key)`` gives to element ``t`` of a length-``T`` tensor. Gaussian noise is drawn
in bulk by torch. Without a compiler (or with ``QTRAIN_NO_KERNEL=1``) a plain Python loop over
:func:`qtrain.rounding.q_d_reference` / :func:`~qtrain.rounding.q_s_reference` computes the
same bits, minutes slower; the tests check the two agree step for step.
"""
from __future__ import annotations

import ctypes
import functools
import numpy as np
import torch

from .. import _kernel
from ..grid import Grid
from ..rng import uniform_reference
from ..rounding import q_d_reference, q_s_reference

__all__ = ["run_chain", "run_chain_reference", "fast_available"]

_C_SRC = r"""
#include <stdint.h>
#include <math.h>
typedef int64_t (*qfn)(const float*, float*, int64_t, int64_t, int, float, int, float, float, float,
                       uint32_t, uint32_t);
/* method 0: SR; 1: BC with Q_d forward; 2: BC with Q_s forward. state[0] = x (SR) or w_r (BC).
   Counts the level index of the weight the gradient is taken at, before each update. */
void qtrain_toy_chain(void *qptr, int method, float *state, const float *noise, int64_t n, int64_t t0,
                      const float *grad, float delta, float kmin, float kmax, float lr, float sigma,
                      uint32_t k0, uint32_t k1, int64_t *hist) {
    qfn q = (qfn)qptr;
    float w = state[0], lo = kmin * delta, hi = kmax * delta, wb, y;
    for (int64_t i = 0; i < n; i++) {
        int64_t t = t0 + i;
        if (method == 0) wb = w;
        else q(&w, &wb, 1, t, method == 2 ? 1 : 0, delta, 1, kmin, kmax, 1.0f, k0, k1);
        int64_t k = (int64_t)floorf(wb / delta + 0.5f) - (int64_t)kmin;  /* nearest level index */
        hist[k] += 1;
        float g = grad[k] + sigma * noise[i];
        y = w - lr * g;
        if (method == 0) q(&y, &w, 1, t, 1, delta, 1, kmin, kmax, 1.0f, k0, k1);
        else w = y < lo ? lo : (y > hi ? hi : y);
    }
    state[0] = w;
}
"""
_FLAGS = ["-O2", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]
METHOD_CODES = {"sr": 0, "bc": 1, "bc_s": 2}
_CHUNK = 1 << 18


def _build():
    if _kernel.get() is None:
        return None
    lib = _kernel.compile_library("toychain", _C_SRC, _FLAGS)
    if lib is not None:
        lib.qtrain_toy_chain.restype = None
    return lib


_get = functools.lru_cache(maxsize=None)(_build)


def fast_available() -> bool:
    """True when the compiled loop (and qtrain's rounding kernel it calls) is available."""
    return _get() is not None


def _check(grid: Grid, method: str, lr: float, sigma: float, grad: np.ndarray) -> None:
    if method not in METHOD_CODES:
        raise ValueError(f"method={method!r} is not one of {tuple(METHOD_CODES)}")
    if not (isinstance(grid, Grid) and grid.kind in ("uniform", "ternary") and grid.bounded):
        raise ValueError(f"grid={grid!r} must be a bounded uniform grid; use Grid.uniform(delta, bits=b)")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r} must be a finite number > 0; pass a positive learning rate")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma={sigma!r} must be >= 0; pass the gradient-noise standard deviation")
    if grad.shape != (grid.kmax - grid.kmin + 1,):
        raise ValueError(f"grad table has shape {grad.shape}; it needs one entry per grid level "
                         f"({grid.kmax - grid.kmin + 1})")


def run_chain(grid: Grid, grad: np.ndarray, method: str, lr: float, sigma: float, steps: int,
              x0: float, key: int, noise_seed: int, force_reference: bool = False) -> np.ndarray:
    """Run one chain for ``steps`` iterations; return visit counts per grid level (int64).

    ``grad[k - kmin]`` is :math:`f'` at level ``k``; ``x0`` the start (a level for SR, any value in
    range for BC); ``key`` the resolved 64-bit rounding key; ``noise_seed`` seeds torch's normal draws.
    """
    grad = np.ascontiguousarray(grad, dtype=np.float32)
    _check(grid, method, float(lr), float(sigma), grad)
    if steps <= 0:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    lib = None if force_reference else _get()
    if lib is None:
        return run_chain_reference(grid, grad, method, lr, sigma, steps, x0, key, noise_seed)
    K = grad.shape[0]
    hist = np.zeros(K, dtype=np.int64)
    state = np.array([x0], dtype=np.float32)
    qptr = ctypes.cast(_kernel.get().qtrain_quantize_f32, ctypes.c_void_p)
    gen = torch.Generator().manual_seed(int(noise_seed))
    f32, i64 = ctypes.c_float, ctypes.c_int64
    for t0 in range(0, steps, _CHUNK):
        n = min(_CHUNK, steps - t0)
        noise = torch.randn(n, generator=gen, dtype=torch.float32).numpy()
        lib.qtrain_toy_chain(qptr, ctypes.c_int(METHOD_CODES[method]), state.ctypes.data_as(ctypes.c_void_p),
                             noise.ctypes.data_as(ctypes.c_void_p), i64(n), i64(t0),
                             grad.ctypes.data_as(ctypes.c_void_p), f32(grid.delta), f32(grid.kmin),
                             f32(grid.kmax), f32(lr), f32(sigma), ctypes.c_uint32(key & 0xFFFFFFFF),
                             ctypes.c_uint32((key >> 32) & 0xFFFFFFFF), hist.ctypes.data_as(ctypes.c_void_p))
    return hist


def run_chain_reference(grid: Grid, grad: np.ndarray, method: str, lr: float, sigma: float, steps: int,
                        x0: float, key: int, noise_seed: int) -> np.ndarray:
    """The same chain as :func:`run_chain`, one Python step at a time with the scalar reference
    quantizers (slow: for tests and machines without a C compiler)."""
    grad = np.ascontiguousarray(grad, dtype=np.float32)
    _check(grid, method, float(lr), float(sigma), grad)
    f = np.float32
    hist = np.zeros(grad.shape[0], dtype=np.int64)
    w, lr32, s32, d32 = f(x0), f(lr), f(sigma), f(grid.delta)
    lo, hi = f(grid.kmin * grid.delta), f(grid.kmax * grid.delta)
    gen = torch.Generator().manual_seed(int(noise_seed))
    for t0 in range(0, steps, _CHUNK):
        n = min(_CHUNK, steps - t0)
        noise = torch.randn(n, generator=gen, dtype=torch.float32).numpy()
        for i in range(n):
            t = t0 + i
            if method == "sr":
                wb = w
            elif method == "bc":
                wb = f(q_d_reference(float(w), grid))
            else:
                wb = f(q_s_reference(float(w), grid, uniform_reference(key, t)))
            k = int(np.floor(wb / d32 + f(0.5))) - grid.kmin
            hist[k] += 1
            y = f(w - f(lr32 * f(grad[k] + f(s32 * noise[i]))))
            if method == "sr":
                w = f(q_s_reference(float(y), grid, uniform_reference(key, t)))
            else:
                w = min(max(y, lo), hi)
    return hist

