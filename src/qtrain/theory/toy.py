r"""Exploration vs exploitation: BC concentrates on a minimizer, SR does not (poster's toy figure).

The objective **[choice]** (the poster leaves it open) is one-dimensional,

.. math::
    f(x) = \frac{\beta}{2}x^2 + A\,\big(1 - \cos(\pi x)\big), \qquad \beta = \tfrac14,\ A = \tfrac12,

with its global minimizer :math:`x^\star = 0` on the grid and local minima near
:math:`\pm 1.9` and :math:`-3.8`, on the bounded grid ``Grid.uniform(0.25, bits=5)`` (32
levels in :math:`[-4, 3.75]`). Gradients are noisy **[poster]**, Gaussian **[choice]**:
:math:`\nabla\tilde f(x) = f'(x) + \sigma\xi`, :math:`\xi\sim\mathcal N(0,1)`, :math:`\sigma = 2`.
At a fixed learning rate :math:`\alpha` each method runs :math:`10^6` iterations from
:math:`x_0 = 0.5` **[choice]** (inside the global basin; from another basin BC would settle
in *that* minimizer, which is what the poster's "concentrates on a minimizer" says):

.. math::
    \text{SR: } x_{t+1} = Q_s\big(x_t - \alpha\nabla\tilde f(x_t)\big), \qquad
    \text{BC: } w_r^{t+1} = \operatorname{clip}\big(w_r^t - \alpha\nabla\tilde f(Q_d(w_r^t))\big)

(the poster's BC uses :math:`Q_d` **[poster]**; clipping **[BC2015]**). The histogram is over the
quantized weight the gradient is taken at, one count per iteration.

Example (a short run; the full one is ``qtrain toy --out DIR``):

>>> from qtrain.theory import toy
>>> r = toy.run(seed=0, lrs=[1.0, 0.001], iters=20_000)
>>> [(x["method"], x["lr"]) for x in r["results"]]
[('bc', 1.0), ('bc', 0.001), ('sr', 1.0), ('sr', 0.001)]
>>> round(sum(r["results"][0]["histogram"]), 6)
1.0
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional, Sequence

import numpy as np

from ..grid import Grid
from ..rng import resolve_key, stream_key
from . import finish
from ._chain import fast_available, run_chain

__all__ = ["objective", "gradient", "toy_grid", "simulate", "run", "DEFAULTS"]

BETA, AMP = 0.25, 0.5
DEFAULTS = dict(delta=0.25, bits=5, sigma=2.0, lrs=(1.0, 0.1, 0.01, 0.001), iters=1_000_000, x0=0.5)
QUICK = dict(lrs=(1.0, 0.1, 0.01, 0.001), iters=100_000)
METHODS = ("bc", "sr")


def objective(x):
    r""":math:`f(x) = \beta x^2/2 + A(1-\cos\pi x)` (numpy arrays or floats)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * BETA * x**2 + AMP * (1.0 - np.cos(np.pi * x))


def gradient(x):
    r""":math:`f'(x) = \beta x + A\pi\sin(\pi x)`."""
    x = np.asarray(x, dtype=np.float64)
    return BETA * x + AMP * np.pi * np.sin(np.pi * x)


def toy_grid(delta: float = DEFAULTS["delta"], bits: int = DEFAULTS["bits"]) -> Grid:
    """The toy's bounded grid (default 32 levels of 0.25 in [-4, 3.75])."""
    return Grid.uniform(delta, bits=bits)


def check_lrs(lrs) -> list:
    """Validate a learning-rate list (non-empty, every rate finite and > 0)."""
    if lrs is None or len(lrs) == 0:
        raise ValueError("lrs=[] is empty; pass at least one learning rate, e.g. --lrs 1 0.1 0.01 0.001")
    out = []
    for lr in lrs:
        v = float(lr)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"learning rate {lr!r} must be a finite number > 0; drop it or make it positive")
        out.append(v)
    return out


def simulate(method: str, lr: float, iters: int, seed: int = 0, run_index: int = 0, sigma: float = DEFAULTS["sigma"],
             grid: Optional[Grid] = None, x0: float = DEFAULTS["x0"], grad_fn=gradient) -> np.ndarray:
    """Visit counts per grid level of one ``method`` ("sr", "bc", or "bc_s" = BC with Q_s) chain.

    Deterministic given ``(seed, run_index)``: the rounding key is ``stream_key(seed, 0, run_index)``
    and the Gaussian noise is seeded by ``stream_key(seed, 1, run_index)``.
    """
    grid = grid or toy_grid()
    if not (isinstance(iters, int) and iters > 0):
        raise ValueError(f"iters={iters!r} must be a positive integer")
    if not (math.isfinite(float(sigma)) and sigma > 0):
        raise ValueError(f"sigma={sigma!r} must be > 0; the toy needs noisy gradients")
    levels = np.asarray(grid.levels())
    start = float(x0) if method != "sr" else float(levels[np.argmin(np.abs(levels - x0))])
    key = resolve_key(stream_key(seed, 0, run_index))
    noise_seed = stream_key(seed, 1, run_index) & (2**63 - 1)
    return run_chain(grid, grad_fn(levels), method, float(lr), float(sigma), iters, start, key, noise_seed)


def run(out_dir: Optional[str] = None, seed: int = 0, quick: bool = False, lrs: Optional[Sequence[float]] = None,
        iters: Optional[int] = None, sigma: float = DEFAULTS["sigma"], delta: float = DEFAULTS["delta"],
        bits: int = DEFAULTS["bits"], x0: float = DEFAULTS["x0"], progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run BC and SR at every learning rate; return (and with ``out_dir`` write) ``toy.json``;
    ``progress(text)`` hears of each finished (method, lr).

    Verdict keys: ``bc_mass_rises`` (BC's ``mass_at_min`` increases as the rate shrinks and ends
    above 0.9), ``sr_stays_spread`` (SR's ``mass_at_min`` stays below 0.6 at every rate).
    """
    preset = QUICK if quick else DEFAULTS
    lrs = check_lrs(preset["lrs"] if lrs is None else lrs)
    iters = int(preset["iters"] if iters is None else iters)
    grid = toy_grid(delta, bits)
    levels = np.asarray(grid.levels())
    i_min = int(np.argmin(objective(levels)))
    results, t0 = [], time.perf_counter()
    for mi, method in enumerate(METHODS):
        for li, lr in enumerate(lrs):
            counts = simulate(method, lr, iters, seed, 100 * mi + li, sigma, grid, x0)
            hist = counts / counts.sum()
            results.append({"method": method, "lr": lr, "iters": iters, "states": levels, "histogram": hist,
                            "mass_at_min": float(hist[i_min]), "mode": float(levels[int(np.argmax(hist))])})
            if progress is not None:
                progress(f"{method} lr {lr:g}: {len(results)}/{len(METHODS) * len(lrs)} chains done")
    seconds = time.perf_counter() - t0
    order = sorted(lrs, reverse=True)
    mass = {m: [next(r["mass_at_min"] for r in results if r["method"] == m and r["lr"] == lr) for lr in order]
            for m in METHODS}
    record = {
        "name": "toy", "seed": seed, "quick": quick, "sigma": sigma, "grid": grid.to_dict(), "x0": x0,
        "objective": f"f(x) = {BETA}/2 x^2 + {AMP} (1 - cos(pi x))", "global_minimizer": float(levels[i_min]),
        "lrs_descending": order, "results": results,
        "bc_mass_at_min_by_lr": mass["bc"], "sr_mass_at_min_by_lr": mass["sr"],
        "bc_mass_rises": bool(all(b >= a - 0.01 for a, b in zip(mass["bc"], mass["bc"][1:]))
                              and mass["bc"][-1] > 0.9),
        "sr_stays_spread": bool(max(mass["sr"]) < 0.6),
        "seconds": seconds, "engine": "compiled loop + qtrain rounding kernel" if fast_available() else "python",
        "curve": {"x": np.linspace(levels[0], levels[-1], 400), "f": objective(np.linspace(levels[0], levels[-1], 400))},
    }
    return finish("toy", record, out_dir)
