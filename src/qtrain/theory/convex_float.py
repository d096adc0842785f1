r"""Theorem 1's floor on float-format grids, where the step is relative to :math:`|w|`.

Same problems, step size :math:`\alpha_t = 1/(\mu(t+1))` and averaged iterate as
:mod:`qtrain.theory.convex`, with the weights kept in a float format (``Grid.float``) instead of on
a uniform grid:

.. math::
    \text{SR: } w^{t+1} = Q_s(\Pi(w^t - \alpha_t\nabla\tilde f(w^t))), \qquad
    \text{R: } w^{t+1} = Q_d(\Pi(\cdot)),

where :math:`Q` rounds coordinate :math:`i` to a multiple of the local step
:math:`\Delta(w_i) = 2^{\max(\lfloor\log_2|w_i|\rfloor,\,e_{min}) - m}`. Theorem 1's argument
(the SR noise has variance :math:`\le \Delta_i|\text{update}_i|` per coordinate) then gives a floor
:math:`\|\Delta\|_2 G/2` in place of :math:`\sqrt d\,\Delta G/2`. Near the solution
:math:`\Delta_i \approx \Delta(w^\star_i)`, so the float grid should behave like a uniform grid with
:math:`\Delta_{\text{eff}} = \|\Delta(w^\star)\|_2/\sqrt d` (the rms local step at :math:`w^\star`).
This module measures, per format: SR's and R's gap at :math:`T` on the float grid, SR's gap on the
uniform grid with :math:`\Delta_{\text{eff}}` (run alongside), and the bound of Theorem 1 with
:math:`\Delta = 2^{1-m}` (the largest local step in the box :math:`[-2, 2]^d`, so it holds on
every iterate) and with :math:`\Delta_{\text{eff}}`.

>>> from qtrain.theory import convex_float
>>> r = convex_float.run(quick=True, T=300, seeds=4, formats=["float8_e5m2"], problems=["quadratic"])
>>> row = r["rows"][0]
>>> row["format"], row["relative_step"]
('float8_e5m2', 0.25)
>>> row["sr_float_gap"] < row["bound_box"]
True
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..floatgrid import FORMATS, fmt_info
from ..grid import Grid
from ..rng import stream_key
from ..rounding import quantize
from . import finish, single_thread
from .convex import R_BOX, checkpoints, make_problem, theorem1_bound

__all__ = ["run", "simulate", "effective_delta"]


def effective_delta(w_star: np.ndarray, name: str) -> float:
    r""":math:`\|\Delta(w^\star)\|_2/\sqrt d`, the rms local step of format ``name`` at :math:`w^\star`."""
    f = fmt_info(name)
    a = np.abs(np.asarray(w_star, dtype=np.float64))
    e = np.where(a > 0, np.floor(np.log2(np.where(a > 0, a, 1.0))), f.emin)
    steps = 2.0 ** (np.maximum(e, f.emin) - f.m)
    return float(np.sqrt(np.mean(steps**2)))


def simulate(prob, formats: Sequence[str], T: int, seeds: int, seed: int = 0,
             progress: Optional[Callable[[str], None]] = None) -> dict:
    """``{(kind, format): {T_k: gaps over seeds}}`` for kind in ``sr_float``, ``r_float``,
    ``sr_uniform`` (uniform grid with the format's :math:`\\Delta_{eff}`); all rows as one batch."""
    if not (isinstance(T, int) and T >= 1 and isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"T={T!r}, seeds={seeds!r}: both must be positive integers")
    kinds = ("sr_float", "r_float", "sr_uniform")
    blocks = [(k, f) for f in formats for k in kinds]
    d = prob.A.shape[1]
    A = torch.tensor(prob.A, dtype=torch.float32)
    b = torch.tensor(prob.b, dtype=torch.float32)
    grids = {(k, f): Grid.uniform(effective_delta(prob.w_star, f)) if k == "sr_uniform" else Grid.float(f)
             for k, f in blocks}
    gen = torch.Generator().manual_seed(int(stream_key(seed, 0, 98) & (2**63 - 1)))
    W = torch.zeros(len(blocks) * seeds, d)
    acc = torch.zeros_like(W, dtype=torch.float64)
    marks, out = set(checkpoints(T)), {}
    for t in range(T):
        if progress is not None and (t + 1) % max(T // 10, 1) == 0:
            progress(f"{prob.name}: step {t + 1:,}/{T:,}")
        acc += W
        i = torch.randint(0, len(b), (W.shape[0],), generator=gen)
        a, bi = A[i], b[i]
        z = (a * W).sum(1)
        coef = (z - bi) if prob.name == "quadratic" else -bi * torch.sigmoid(-bi * z)
        Y = (W - (1.0 / (prob.mu * (t + 1))) * (coef[:, None] * a + prob.lam * W)).clamp(-R_BOX, R_BOX)
        parts = []
        for j, (k, f) in enumerate(blocks):
            rows = Y[j * seeds:(j + 1) * seeds]
            parts.append(quantize(rows, grids[(k, f)], "nearest" if k == "r_float" else "stochastic",
                                  generator=stream_key(seed, t, j)))
        W = torch.cat(parts).clamp(-R_BOX, R_BOX)  # the uniform grid's levels may sit just outside the box
        if t + 1 in marks:
            gaps = prob.F((acc / (t + 1)).numpy()) - prob.F_star
            for j, key in enumerate(blocks):
                out.setdefault(key, {})[t + 1] = gaps[j * seeds:(j + 1) * seeds]
    return out


def run(out_dir: Optional[str] = None, seed: int = 0, quick: bool = False, d: int = 10, T: Optional[int] = None,
        seeds: Optional[int] = None, formats: Optional[Sequence[str]] = None,
        problems: Sequence[str] = ("quadratic", "logistic"), progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run the float-grid version of Theorem 1; return (and with ``out_dir`` write) ``convex_float.json``
    (``progress(text)`` hears of every tenth of each problem's steps).

    ``rows``: one per (problem, format) with ``relative_step`` :math:`2^{-m}`, ``delta_eff``, the
    gaps at ``T`` (``sr_float_gap``, ``r_float_gap``, ``sr_uniform_gap``, with standard errors),
    ``bound_box`` and ``bound_eff`` (Theorem 1 with :math:`\\Delta = 2^{1-m}` / :math:`\\Delta_{eff}`),
    and ``float_over_uniform`` (SR's float-grid gap / its uniform-grid gap at :math:`\\Delta_{eff}`).
    """
    formats = list(FORMATS) if formats is None else [fmt_info(f).name for f in formats]
    T = int(T or (2_000 if quick else 20_000))
    seeds = int(seeds or (16 if quick else 64))
    t0, rows, curves = time.perf_counter(), [], []
    for p_i, name in enumerate(problems):
        prob = make_problem(name, d=d, seed=seed)
        with single_thread():
            sims = simulate(prob, formats, T, seeds, seed=stream_key(seed, p_i, 8) & (2**62 - 1), progress=progress)
        for (kind, f), by_T in sims.items():
            for Tk, g in by_T.items():
                curves.append({"problem": name, "kind": kind, "format": f, "T": Tk, "gap": float(g.mean())})

        def stat(kind, f):
            g = sims[(kind, f)][T]
            return float(g.mean()), float(g.std(ddof=1) / math.sqrt(len(g))) if len(g) > 1 else 0.0

        for f in formats:
            fm, de = FORMATS[f], effective_delta(prob.w_star, f)
            (srf, srf_se), (rf, rf_se), (sru, sru_se) = stat("sr_float", f), stat("r_float", f), stat("sr_uniform", f)
            rows.append({"problem": name, "format": f, "relative_step": fm.eps, "delta_eff": de,
                         "sr_float_gap": srf, "sr_float_stderr": srf_se, "r_float_gap": rf, "r_float_stderr": rf_se,
                         "sr_uniform_gap": sru, "sr_uniform_stderr": sru_se, "float_over_uniform": srf / sru,
                         "bound_box": theorem1_bound(T, prob.mu, prob.G, d, 2 * fm.eps),
                         "bound_eff": theorem1_bound(T, prob.mu, prob.G, d, de), "mu": prob.mu, "G": prob.G})
    record = {"name": "convex_float", "seed": seed, "quick": quick, "d": d, "T": T, "seeds": seeds,
              "formats": formats, "problems": list(problems), "step_size": "alpha_t = 1/(mu (t+1))",
              "rows": rows, "curves": curves, "all_under_bound": all(r["sr_float_gap"] <= r["bound_box"] for r in rows),
              "seconds": time.perf_counter() - t0}
    return finish("convex_float", record, out_dir)
