r"""Theorems 1 and 4 and Corollary 1: R, SR and BC on strongly convex problems.

Setting **[poster]**: :math:`F = \frac1n\sum_i f_i` is :math:`\mu`-strongly convex, :math:`\alpha_t = 1/(\mu(t+1))`,
plain stochastic gradients :math:`\nabla f_{i_t}` (one sample, :math:`i_t` uniform), averaged iterate
:math:`\bar w^T = \frac1T\sum_{t=0}^{T-1} w^t` (for BC: of the real-valued :math:`w_r`).

.. math::
    \text{R: } w^{t+1} = Q_d(w^t - \alpha_t\nabla\tilde f(w^t)) \quad
    \text{SR: } w^{t+1} = Q_s(w^t - \alpha_t\nabla\tilde f(w^t)) \quad
    \text{BC: } w_r^{t+1} = \Pi(w_r^t - \alpha_t\nabla\tilde f(Q(w_r^t)))

Problems **[choice]**: synthetic data, :math:`a_i \sim \mathcal N(0, I/d)`, :math:`n = 200`,
:math:`\lambda = 0.1`, domain the box :math:`[-2, 2]^d` that the grids cover (``Grid.uniform(Δ, bits)``
with :math:`k\Delta \in [-2, 2-\Delta]`; :math:`\Pi` is the clip to it, and clip-then-round equals the
bounded grid's round-then-clamp), start :math:`w^0 = 0`.

* ``quadratic``: :math:`f_i(w) = \tfrac12(a_i^\top w - b_i)^2 + \tfrac\lambda2\|w\|^2`; :math:`L_2 = 0`.
* ``logistic``: :math:`f_i(w) = \log(1 + e^{-y_i a_i^\top w}) + \tfrac\lambda2\|w\|^2`;
  :math:`L_2 = \max|\sigma''|\max_i\|a_i\|^3 = \max_i\|a_i\|^3/(6\sqrt3)`.

Constants: :math:`\mu` = smallest Hessian eigenvalue over the box (quadratic: exact; logistic: the lower
bound :math:`\lambda + \sigma'(\max_i\|a_i\|_1 R)\,\lambda_{\min}(A^\top A/n)`); :math:`G^2 = \sup_{w\in\text{box}}
\mathbb E_i\|\nabla f_i(w)\|^2` (quadratic: exact, a convex function's max over the box's vertices, for
:math:`d \le 12`; otherwise and for logistic an upper bound); :math:`D = 2R\sqrt d` the box's diameter.

Rounding is qtrain's :func:`~qtrain.rounding.quantize`; all Δ, seeds and methods run as one batch by
rounding :math:`w/\Delta` on the unit grid (bit-identical to rounding :math:`w` on the Δ grid when Δ is a
power of two, as here, since the division is then exact).

>>> from qtrain.theory import convex
>>> round(convex.theorem1_bound(T=100, mu=1.0, G=2.0, d=4, delta=0.25), 4)
0.6123
>>> r = convex.run(seed=0, quick=True, T=200, seeds=4, deltas=[0.25])
>>> sorted({x["method"] for x in r["results"]})
['bc', 'bc_d', 'r', 'sr']
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..grid import Grid
from ..rng import stream_key
from ..rounding import quantize
from . import finish, single_thread

__all__ = ["Problem", "make_problem", "theorem1_bound", "theorem4_bound", "simulate", "run", "METHODS"]

METHODS = ("r", "sr", "bc", "bc_d")        # bc: w_b = Q_s(w_r) (Theorem 4's setting); bc_d: w_b = Q_d(w_r)
DEFAULT_DELTAS = tuple(2.0 ** -k for k in range(2, 9))
R_BOX = 2.0
_S3 = 1.0 / (6.0 * math.sqrt(3.0))         # max |sigma''|


# -- Theorem 1 (SR) and Theorem 4 (BC) --------------------------------------------------------------
def _check_common(T, mu, G, d, delta):
    for name, v in (("T", T), ("mu", mu), ("G", G), ("d", d), ("delta", delta)):
        if not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{name}={v!r} must be a finite number > 0; pass a positive value")


def theorem1_bound(T, mu, G, d, delta) -> float:
    r"""Theorem 1 (SR) **[poster]**: :math:`\frac{(1+\log(T+1))G^2}{2\mu T} + \frac{\sqrt d\,\Delta G}{2}`."""
    _check_common(T, mu, G, d, delta)
    return (1 + math.log(T + 1)) * G * G / (2 * mu * T) + math.sqrt(d) * delta * G / 2


def theorem4_bound(T, mu, G, d, delta, D, L2) -> float:
    r"""Theorem 4 (BC) as the poster prints it **[poster]**:
    :math:`\frac{(1+\log(T+1))G^2}{2\mu T} + \frac{D L_2\sqrt{d\Delta}}{2}` (on :math:`\bar w_r^T`)."""
    _check_common(T, mu, G, d, delta)
    if not (D > 0 and L2 >= 0):
        raise ValueError(f"D={D!r}, L2={L2!r}: need D > 0 and L2 >= 0")
    return (1 + math.log(T + 1)) * G * G / (2 * mu * T) + D * L2 * math.sqrt(d * delta) / 2


# -- problems --------------------------------------------------------------------------------------------
@dataclass
class Problem:
    name: str
    A: np.ndarray
    b: np.ndarray          # targets (quadratic) or labels +-1 (logistic)
    lam: float
    w_star: np.ndarray
    F_star: float
    mu: float
    G: float
    D: float
    L2: float
    G_exact: bool

    def F(self, W: np.ndarray) -> np.ndarray:
        """:math:`F` at each row of ``W`` (float64)."""
        Z = W @ self.A.T
        if self.name == "quadratic":
            loss = 0.5 * ((Z - self.b) ** 2).mean(axis=1)
        else:
            loss = np.logaddexp(0.0, -self.b * Z).mean(axis=1)
        return loss + 0.5 * self.lam * (W * W).sum(axis=1)


def make_problem(name: str, d: int = 10, n: int = 200, lam: float = 0.1, seed: int = 0) -> Problem:
    """Synthetic ``"quadratic"`` or ``"logistic"`` problem with its constants (see the module doc)."""
    if name not in ("quadratic", "logistic"):
        raise ValueError(f"problem={name!r} is not 'quadratic' or 'logistic'")
    if not (isinstance(d, int) and d >= 1):
        raise ValueError(f"d={d!r} must be a positive integer dimension")
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d)) / math.sqrt(d)
    w_true = rng.uniform(-1.0, 1.0, d)
    H0 = A.T @ A / n
    if name == "quadratic":
        b = A @ w_true + 0.1 * rng.standard_normal(n)
        w = np.linalg.solve(H0 + lam * np.eye(d), A.T @ b / n)
        mu, L2 = float(np.linalg.eigvalsh(H0).min()) + lam, 0.0
        Mi = np.einsum("ni,nj->nij", A, A) + lam * np.eye(d)
        ci = A * b[:, None]
        Q = np.einsum("nij,njk->ik", Mi, Mi) / n
        c = np.einsum("nij,nj->i", Mi, ci) / n
        e = float((ci * ci).sum(axis=1).mean())
        if d <= 12:
            V = R_BOX * (2 * ((np.arange(2 ** d)[:, None] >> np.arange(d)) & 1) - 1.0)
            G2, exact = float((np.einsum("vi,ij,vj->v", V, Q, V) - 2 * V @ c + e).max()), True
        else:
            G2 = float(np.linalg.eigvalsh(Q).max()) * d * R_BOX**2 + 2 * R_BOX * float(np.abs(c).sum()) + e
            exact = False
    else:
        b = np.where(A @ w_true + 0.3 * rng.standard_normal(n) >= 0, 1.0, -1.0)
        w = np.zeros(d)
        for _ in range(50):                                   # Newton's method
            s = 1.0 / (1.0 + np.exp(b * (A @ w)))
            grad = -(A * (b * s)[:, None]).mean(axis=0) + lam * w
            H = (A * (s * (1 - s))[:, None]).T @ A / n + lam * np.eye(d)
            w = w - np.linalg.solve(H, grad)
        m = float(np.abs(A).sum(axis=1).max()) * R_BOX
        sp = 1.0 / (2.0 + math.exp(m) + math.exp(-m))        # sigma'(m), the smallest over the box
        mu = lam + sp * float(np.linalg.eigvalsh(H0).min())
        norms = np.linalg.norm(A, axis=1)
        G2, exact = float(((norms + lam * R_BOX * math.sqrt(d)) ** 2).mean()), False
        L2 = _S3 * float((norms**3).max())
    if np.abs(w).max() > R_BOX - max(DEFAULT_DELTAS) - 0.25:
        raise ValueError(f"problem seed={seed}: w* leaves the box [-2, 1.75]^d; use another seed")
    prob = Problem(name, A, b, lam, w, 0.0, mu, math.sqrt(G2), 2 * R_BOX * math.sqrt(d), L2, exact)
    prob.F_star = float(prob.F(w[None])[0])
    return prob


# -- the simulation --------------------------------------------------------------------------------------
def _check_deltas(deltas) -> list:
    if deltas is None or len(deltas) == 0:
        raise ValueError("deltas=[] is empty; pass grid steps such as 0.25 0.0625")
    out = []
    for x in deltas:
        v = float(x)
        if not (math.isfinite(v) and 0 < v <= 1):
            raise ValueError(f"delta={x!r} must be a grid step in (0, 1]; use e.g. 2**-4")
        out.append(v)
    return out


def checkpoints(T: int) -> list:
    """Where the averaged iterate is evaluated: 1-2-5 steps up to ``T`` (``T`` included)."""
    pts = {int(m * 10**k) for k in range(0, 9) for m in (1, 2, 5) if 10 <= m * 10**k <= T}
    return sorted(pts | {T})


def simulate(prob: Problem, deltas: Sequence[float], T: int, seeds: int, seed: int = 0,
             progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run every method x Δ x seed for ``T`` steps as one batch; return
    ``{(method, delta): {T_k: gaps over seeds (np.ndarray)}}``. ``progress(text)`` hears of every
    tenth of the steps."""
    deltas = _check_deltas(deltas)
    if not (isinstance(T, int) and T >= 1 and isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"T={T!r}, seeds={seeds!r}: both must be positive integers")
    nD, M, d = len(deltas), len(METHODS), prob.A.shape[1]
    blk = nD * seeds                                          # rows per method; row = (delta, seed)
    dl = torch.tensor(np.repeat(deltas, seeds), dtype=torch.float32)[:, None]
    hi = R_BOX - dl                                           # box [-2, 2 - delta]
    A = torch.tensor(prob.A, dtype=torch.float32)
    b = torch.tensor(prob.b, dtype=torch.float32)
    unit = Grid.uniform(1.0)
    gen = torch.Generator().manual_seed(int(stream_key(seed, 0, 99) & (2**63 - 1)))
    W = torch.zeros(M * blk, d)
    acc = torch.zeros(M * blk, d, dtype=torch.float64)
    marks, out = set(checkpoints(T)), {}
    sl = {m: slice(i * blk, (i + 1) * blk) for i, m in enumerate(METHODS)}
    DL = dl.repeat(M, 1)

    def q(x, rounding, key):                                  # Q on each row's own grid (x already in box)
        return quantize(x / dl, unit, rounding, generator=key) * dl

    for t in range(T):
        acc += W
        E = torch.cat([W[sl["r"]], W[sl["sr"]], q(W[sl["bc"]], "stochastic", stream_key(seed, t, 1)),
                       q(W[sl["bc_d"]], "nearest", 0)])
        i = torch.randint(0, len(b), (M * blk,), generator=gen)
        a, bi = A[i], b[i]
        z = (a * E).sum(1)
        coef = (z - bi) if prob.name == "quadratic" else -bi * torch.sigmoid(-bi * z)
        g = coef[:, None] * a + prob.lam * E
        Y = torch.minimum(torch.maximum(W - (1.0 / (prob.mu * (t + 1))) * g, -R_BOX + 0 * DL), R_BOX - DL)
        W = torch.cat([q(Y[sl["r"]], "nearest", 0), q(Y[sl["sr"]], "stochastic", stream_key(seed, t, 0)),
                       Y[sl["bc"]], Y[sl["bc_d"]]])
        if progress is not None and (t + 1) % max(T // 10, 1) == 0:
            progress(f"{prob.name}: step {t + 1:,}/{T:,}")
        if t + 1 in marks:
            gaps = prob.F((acc / (t + 1)).numpy()) - prob.F_star
            for m in METHODS:
                gm = gaps[sl[m]].reshape(nD, seeds)
                for k, dv in enumerate(deltas):
                    out.setdefault((m, dv), {})[t + 1] = gm[k]
    return out


def _slope(x, y) -> float:
    x, y = np.log(np.asarray(x)), np.log(np.maximum(np.asarray(y), 1e-300))
    return float(np.polyfit(x, y, 1)[0])


def run(out_dir: Optional[str] = None, seed: int = 0, quick: bool = False, d: int = 10,
        deltas: Optional[Sequence[float]] = None, T: Optional[int] = None, seeds: Optional[int] = None,
        problems: Sequence[str] = ("quadratic", "logistic"), progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run Theorems 1/4 and Corollary 1; return (and with ``out_dir`` write) ``convex.json``;
    ``progress(text)`` (e.g. ``print``) hears how far the simulation is.

    Verdict keys: ``sr_floor_slope`` ({problem: log-log slope of SR's gap at T vs Δ}) and
    ``sr_floor_grows`` (slope > 0.5); ``bc_quadratic_gap_ratio`` ({Δ: BC's gap at T / gap at ~T/10};
    Corollary 1 wants it well below 1) and ``bc_quadratic_no_floor`` (every ratio < 0.5);
    ``r_stall_ratio`` / ``r_stalls`` (the same ratio for R, every one > 0.5); ``all_under_bound``
    and ``over_bound`` (the SR / BC records whose mean gap exceeds their bound). The 0.5 thresholds
    are **[choice]**.
    """
    deltas = _check_deltas(DEFAULT_DELTAS if deltas is None else deltas)
    T = int(T or (2_000 if quick else 20_000))
    if T < 100:
        raise ValueError(f"T={T} is too short: the verdicts compare the gap at T with the gap at T/10 "
                         "(evaluated from step 10 on); pass T >= 100")
    seeds = int(seeds or (16 if quick else 64))
    t0, results, info = time.perf_counter(), [], []
    for p_i, name in enumerate(problems):
        prob = make_problem(name, d=d, seed=seed)
        info.append({"problem": name, "d": d, "n": len(prob.b), "lambda": prob.lam, "mu": prob.mu, "G": prob.G,
                     "G_exact": prob.G_exact, "D": prob.D, "L2": prob.L2, "F_star": prob.F_star})
        with single_thread():
            sims = simulate(prob, deltas, T, seeds, seed=stream_key(seed, p_i, 7) & (2**62 - 1), progress=progress)
        for (m, dv), by_T in sims.items():
            for Tk, gaps in by_T.items():
                if m == "sr":
                    bound = theorem1_bound(Tk, prob.mu, prob.G, d, dv)
                elif m in ("bc", "bc_d"):
                    bound = theorem4_bound(Tk, prob.mu, prob.G, d, dv, prob.D, prob.L2)
                else:
                    bound = None
                results.append({"problem": name, "method": m, "delta": dv, "T": Tk, "gap": float(gaps.mean()),
                                "gap_stderr": float(gaps.std(ddof=1) / math.sqrt(len(gaps))) if len(gaps) > 1 else 0.0,
                                "bound": bound, "bound_applies": m in ("sr", "bc")})
    Tmax, Tprev = T, max(t for t in checkpoints(T) if t <= max(T // 10, 1))

    def gap(p, m, dv, Tk):
        return next(r["gap"] for r in results if (r["problem"], r["method"], r["delta"], r["T"]) == (p, m, dv, Tk))

    slope, bc_ratio, r_ratio, bcd_floor = {}, {}, {}, {}
    for name in problems:
        slope[name] = _slope(deltas, [gap(name, "sr", dv, Tmax) for dv in deltas]) if len(deltas) > 1 else None
        bc_ratio[name] = {str(dv): gap(name, "bc", dv, Tmax) / gap(name, "bc", dv, Tprev) for dv in deltas}
        r_ratio[name] = {str(dv): gap(name, "r", dv, Tmax) / gap(name, "r", dv, Tprev) for dv in deltas}
        bcd_floor[name] = {str(dv): gap(name, "bc_d", dv, Tmax) for dv in deltas}
    over = [r for r in results if r["bound_applies"] and r["gap"] > r["bound"]]
    record = {
        "name": "convex", "seed": seed, "quick": quick, "d": d, "deltas": deltas, "T": T, "seeds": seeds,
        "methods": list(METHODS), "problems": info, "step_size": "alpha_t = 1/(mu (t+1))", "results": results,
        "sr_floor_slope": slope, "bc_quadratic_gap_ratio": bc_ratio.get("quadratic"), "bc_gap_ratio": bc_ratio,
        "r_stall_ratio": r_ratio, "bc_d_final_gap": bcd_floor, "ratio_T": [Tprev, Tmax],
        "sr_floor_grows": {k: v is not None and v > 0.5 for k, v in slope.items()},
        "bc_quadratic_no_floor": ("quadratic" in bc_ratio and max(bc_ratio["quadratic"].values()) < 0.5),
        "r_stalls": {k: min(v.values()) > 0.5 for k, v in r_ratio.items()},
        "all_under_bound": not over, "over_bound": over, "plot_delta": deltas[len(deltas) // 2],
        "seconds": time.perf_counter() - t0,
    }
    return finish("convex", record, out_dir)
