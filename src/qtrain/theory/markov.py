r"""Theorem 5: stochastic rounding is a Markov chain that does not concentrate as :math:`\alpha \to 0`.

**[poster]** For a fixed step :math:`\alpha`, SR, :math:`x \leftarrow Q_s(x - \alpha\nabla\tilde f(x))`, is a
Markov chain on the grid with transition matrix :math:`T_\alpha`. Here the stochastic gradient is
:math:`g = \nabla f(x) + \sigma\xi`, :math:`\xi \sim \mathcal N(0, I)` **[choice]** (the toy's noise).

**Exact** :math:`T_\alpha` (this module). Per coordinate, in grid units :math:`z = (x_k - \alpha g_k)/\Delta
\sim \mathcal N(\mu, \tau^2)`, :math:`\mu = (x_k - \alpha\partial_k f(x))/\Delta`, :math:`\tau = \alpha\sigma/\Delta`.
:math:`Q_s` lands on level :math:`j` with probability :math:`\mathbb E[\Lambda(z - j)]`, :math:`\Lambda` the
hat function, so the (unclamped) level's CDF is

.. math::
    C(j) = P(\text{level} \le j) = \psi(j + 1 - \mu) - \psi(j - \mu), \qquad
    \psi(a) = \mathbb E[(a + \mu - z)^+] = a\,\Phi(a/\tau) + \tau\,\varphi(a/\tau),

integrated in closed form over the Gaussian density; jumps of several :math:`\Delta` are included, and
levels beyond a bounded grid pile up on its end levels (``quantize`` clamps). Coordinates round
independently, so on a product grid :math:`T_\alpha(x, y) = \prod_k P_k(x \to y_k)`.

**Theorem 5 objects**. :math:`U(x, x \pm \Delta e_k) = \mathbb E[(\mp g_k)^+]/\Delta`, zero otherwise
(and zero for a move off a bounded grid); :math:`\tilde T = I - \alpha_0\operatorname{diag}(U\mathbf 1) + \alpha_0 U`
with :math:`\alpha_0 = 1/\max_x (U\mathbf 1)(x)`; :math:`\tilde\pi` its stationary distribution. Since
:math:`T_\alpha = I + \alpha(U - \operatorname{diag}(U\mathbf 1)) + o(\alpha)`,
:math:`\lim_{\alpha\to 0}\pi_\alpha = \tilde\pi`, and :math:`\tilde\pi(x) > 0` everywhere.

"Squishing": :math:`P(\text{right}\mid\text{move}) = \frac{\mathbb E[\min(z^+, 1)]}{\mathbb E[\min(z^+,1)] + \mathbb E[\min(z^-,1)]}`
(:math:`z = -\alpha g/\Delta`) equals the :math:`\alpha`-free ratio :math:`\int_0^\infty p(z)z\,dz / \int p(z)|z|\,dz`
whenever :math:`|\alpha g| < \Delta`; Gaussian tails make it drift only at large :math:`\alpha`.

>>> import numpy as np
>>> from qtrain import Grid
>>> from qtrain.theory import markov
>>> g = Grid.uniform(0.5, bits=3)
>>> T = markov.transition_matrix(g, lambda x: x, sigma=1.0, alpha=0.1)
>>> bool(np.allclose(np.asarray(T.sum(axis=1)).ravel(), 1.0))
True
>>> pi = markov.stationary(T); p_t = markov.theorem5_limit(g, lambda x: x, sigma=1.0)
>>> bool(pi.min() > 0 and markov.tv(pi, p_t) < 0.1)
True
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional, Sequence

import numpy as np

from ..grid import Grid
from . import finish

__all__ = ["transition_matrix", "u_matrix", "theorem5_limit", "theorem5_t_tilde", "stationary", "tv",
           "p_right_given_move", "p_right_limit", "grid_states", "run"]

DEFAULT_ALPHAS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
QUICK_ALPHAS = (1.0, 0.1, 0.01, 0.001)


def _check_alpha(alpha) -> float:
    a = float(alpha)
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"alpha={alpha!r} must be a finite step size > 0; pass e.g. alpha=0.01")
    return a


def _check(grid: Grid, sigma, d: int) -> None:
    if not (isinstance(grid, Grid) and grid.kind in ("uniform", "ternary") and grid.bounded):
        raise ValueError(f"grid={grid!r} must be a bounded uniform grid; use Grid.uniform(delta, bits=b)")
    if not (math.isfinite(float(sigma)) and sigma > 0):
        raise ValueError(f"sigma={sigma!r} must be > 0; Theorem 5 needs gradient noise on both sides of 0")
    if not (isinstance(d, int) and d >= 1):
        raise ValueError(f"d={d!r} must be a positive integer (the number of coordinates)")


def grid_states(grid: Grid, d: int = 1) -> np.ndarray:
    """The product grid's states as an ``(K**d, d)`` array of level *indices* (C order)."""
    k = np.arange(grid.kmin, grid.kmax + 1)
    return np.stack(np.meshgrid(*([k] * d), indexing="ij"), -1).reshape(-1, d)


def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _Phi(x):
    from scipy.special import ndtr

    return ndtr(x)


def _pos_part_mean(m, s):
    """:math:`\\mathbb E[(N(m, s^2))^+] = m\\Phi(m/s) + s\\varphi(m/s)`."""
    return m * _Phi(m / s) + s * _phi(m / s)


def _mean_grad(grid: Grid, grad_fn: Callable, d: int):
    idx = grid_states(grid, d)
    x = idx * grid.delta
    g = np.asarray(grad_fn(x[:, 0] if d == 1 else x), dtype=np.float64).reshape(len(idx), d)
    return idx, g


def transition_matrix(grid: Grid, grad_fn: Callable, sigma: float, alpha: float, d: int = 1):
    r"""Exact SR transition matrix :math:`T_\alpha` (``scipy.sparse.csr_matrix``, rows = from-state).

    ``grad_fn`` maps level values (shape ``(n,)`` for ``d = 1``, ``(n, d)`` otherwise) to the mean
    gradient :math:`\nabla f`. Each coordinate's window covers :math:`\pm(9\tau + 2)` levels around the
    mean (tail mass beyond it, below :math:`10^{-18}`, is put on the window's end level).
    """
    import scipy.sparse as sp

    alpha = _check_alpha(alpha)
    _check(grid, sigma, d)
    idx, g = _mean_grad(grid, grad_fn, d)
    K, n = grid.kmax - grid.kmin + 1, len(idx)
    tau = alpha * sigma / grid.delta
    W = int(min(math.ceil(9 * tau) + 2, K + 1))
    mu = idx - alpha * g / grid.delta                        # (n, d), grid units
    c = np.floor(mu).astype(np.int64)
    j = c[:, :, None] + np.arange(-W, W + 1)                # (n, d, 2W+1) candidate levels
    a = j - mu[:, :, None]
    C = _pos_part_mean(a + 1, tau) - _pos_part_mean(a, tau)  # P(level <= j), unclamped
    C = np.where(j >= grid.kmax, 1.0, np.where(j < grid.kmin, 0.0, C))
    C[:, :, -1] = 1.0
    F = np.concatenate([np.zeros(C.shape[:2] + (1,)), C], axis=2)
    p = np.clip(np.diff(F, axis=2), 0.0, None)
    p /= p.sum(axis=2, keepdims=True)
    rows, cols, vals = np.arange(n), np.zeros(n, dtype=np.int64), np.ones(n)
    for k in range(d):                                        # outer product over coordinates
        keep = p[:, k, :] > 0
        jj = np.clip(j[:, k, :], grid.kmin, grid.kmax) - grid.kmin
        r_i, w_i = np.nonzero(keep[rows])
        rows, cols, vals = rows[r_i], cols[r_i] * K + jj[rows[r_i], w_i], vals[r_i] * p[rows[r_i], k, w_i]
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def u_matrix(grid: Grid, grad_fn: Callable, sigma: float, d: int = 1):
    r"""Theorem 5's :math:`U`: :math:`U(x, x\pm\Delta e_k) = \mathbb E[(\mp g_k)^+]/\Delta` (sparse)."""
    import scipy.sparse as sp

    _check(grid, sigma, d)
    idx, g = _mean_grad(grid, grad_fn, d)
    K, n = grid.kmax - grid.kmin + 1, len(idx)
    r, c, v = [], [], []
    strides = K ** np.arange(d - 1, -1, -1)
    for k in range(d):
        for sign, edge in ((+1, grid.kmax), (-1, grid.kmin)):
            ok = idx[:, k] != edge
            rate = _pos_part_mean(-sign * g[:, k], sigma) / grid.delta
            src = np.nonzero(ok)[0]
            r.append(src)
            c.append(src + sign * strides[k])
            v.append(rate[ok])
    return sp.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))), shape=(n, n))


def theorem5_t_tilde(grid: Grid, grad_fn: Callable, sigma: float, d: int = 1):
    r""":math:`\tilde T = I - \alpha_0\operatorname{diag}(U\mathbf 1) + \alpha_0 U` and :math:`\alpha_0 = 1/\max U\mathbf 1`."""
    import scipy.sparse as sp

    U = u_matrix(grid, grad_fn, sigma, d)
    out = np.asarray(U.sum(axis=1)).ravel()
    a0 = 1.0 / out.max()
    return (sp.identity(U.shape[0], format="csr") - a0 * sp.diags(out) + a0 * U).tocsr(), a0


def stationary(P, generator: bool = False) -> np.ndarray:
    r"""Stationary distribution of a row-stochastic sparse ``P`` (or, ``generator=True``, of a rate
    matrix with zero row sums): solves :math:`\pi(P - I) = 0`, :math:`\sum\pi = 1` by a sparse LU.

    The diagonal of :math:`P - I` is set to minus the off-diagonal row sums (keeps digits for small
    :math:`\alpha`). One state ``r`` is pinned to :math:`\pi_r = 1` and removed, which keeps the system
    sparse (a row of ones would fill in); ``r`` starts as the stickiest state and is re-chosen as
    the argmax of the first solution if that one had tiny mass.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    P = sp.csr_matrix(P)
    n = P.shape[0]
    if n == 1:
        return np.ones(1)
    off = P - sp.diags(P.diagonal())
    out = np.asarray(off.sum(axis=1)).ravel()
    A = (off - sp.diags(out)).T.tocsr()

    def solve(r):
        keep = np.r_[0:r, r + 1:n]
        rows = A[keep]
        x = splu(rows[:, keep].tocsc()).solve(-rows[:, [r]].toarray().ravel())
        pi = np.clip(np.insert(x, r, 1.0), 0.0, None)
        return pi / pi.sum()

    r = int(np.argmin(out))
    pi = solve(r)
    if pi[r] < 1e-3 * pi.max():
        pi = solve(int(np.argmax(pi)))
    return pi


def theorem5_limit(grid: Grid, grad_fn: Callable, sigma: float, d: int = 1) -> np.ndarray:
    r""":math:`\tilde\pi`, the stationary distribution of :math:`\tilde T` (independent of :math:`\alpha_0`)."""
    return stationary(u_matrix(grid, grad_fn, sigma, d))


def tv(p, q) -> float:
    """Total variation distance :math:`\\frac12\\sum|p - q|`."""
    return 0.5 * float(np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64)).sum())


def p_right_given_move(T, state: int) -> float:
    """:math:`\\sum_{y > x} T(x, y) / \\sum_{y \\ne x} T(x, y)` for the 1-D state index ``state``."""
    row = T.getrow(state).toarray().ravel()
    right, left = row[state + 1:].sum(), row[:state].sum()
    return float(right / (right + left))


def p_right_limit(grid: Grid, grad_fn: Callable, sigma: float, state: int) -> float:
    """The α-free ratio from :math:`U`: :math:`U(x, x+\\Delta)/(U(x, x+\\Delta) + U(x, x-\\Delta))`."""
    row = u_matrix(grid, grad_fn, sigma).getrow(state).toarray().ravel()
    return float(row[state + 1:].sum() / row.sum())


def run(out_dir: Optional[str] = None, seed: int = 0, quick: bool = False, alphas: Optional[Sequence[float]] = None,
        alpha_sim: float = 0.1, sim_steps: Optional[int] = None, product_d: int = 2,
        progress: Optional[Callable[[str], None]] = None) -> dict:
    """Theorem 5 on the toy (:mod:`qtrain.theory.toy`); return (and with ``out_dir`` write) ``markov.json``;
    ``progress(text)`` hears of each step size solved and of the simulation.

    Verdict keys: ``tv_falls`` (``tv_to_limit`` at the smallest α is below 0.02 and below the
    largest α's), ``pi_tilde_min > 0``, ``pi_tilde_at_minimizer`` (< 1: not concentrated),
    ``sim_agrees`` (``tv_exact_vs_simulated < 0.02``), ``p_right_spread_small_alpha`` (range of
    ``p_right_given_move`` over α <= 0.1).
    """
    from . import toy

    alphas = [_check_alpha(a) for a in (alphas or (QUICK_ALPHAS if quick else DEFAULT_ALPHAS))]
    alpha_sim = _check_alpha(alpha_sim)
    sim_steps = int(sim_steps or (200_000 if quick else 1_000_000))
    sigma, grid, t0 = toy.DEFAULTS["sigma"], toy.toy_grid(), time.perf_counter()
    levels = np.asarray(grid.levels())
    i_min = int(np.argmin(toy.objective(levels)))
    i_ref = i_min + 2                                    # x = 0.5: f' > 0, so P(right | move) != 1/2
    pi_t = theorem5_limit(grid, toy.gradient, sigma)
    tvs, prm = [], []
    for a in alphas:
        T = transition_matrix(grid, toy.gradient, sigma, a)
        tvs.append(tv(stationary(T), pi_t))
        prm.append(p_right_given_move(T, i_ref))
        if progress is not None:
            progress(f"alpha {a:g}: pi_alpha solved ({len(tvs)}/{len(alphas)})")
    pi_sim = stationary(transition_matrix(grid, toy.gradient, sigma, alpha_sim))
    if progress is not None:
        progress(f"simulating {sim_steps:,} SR steps at alpha {alpha_sim:g}")
    counts = toy.simulate("sr", alpha_sim, sim_steps, seed, 7, sigma, grid, float(levels[i_min]))
    hist = counts / counts.sum()
    small = [p for a, p in zip(alphas, prm) if a <= 0.1]
    pg = None
    if product_d >= 2:
        g2 = Grid.uniform(0.5, bits=3)                   # 8 levels per coordinate; coupled 2-D objective
        def grad2(x):
            return np.stack([toy.gradient(x[:, 0]) + 0.3 * x[:, 1], toy.gradient(x[:, 1]) + 0.3 * x[:, 0]], 1)
        pi2 = theorem5_limit(g2, grad2, sigma, product_d)
        a2 = [a for a in alphas if a <= 0.5]
        pg = {"d": product_d, "grid": g2.to_dict(), "states": len(pi2), "alphas": a2,
              "objective": "f(x) = sum_k f_toy(x_k) + 0.3 x_1 x_2",
              "tv_to_limit": [tv(stationary(transition_matrix(g2, grad2, sigma, a, product_d)), pi2) for a in a2],
              "pi_tilde_min": float(pi2.min()), "pi_tilde_max": float(pi2.max())}
    record = {
        "name": "markov", "seed": seed, "quick": quick, "sigma": sigma, "grid": grid.to_dict(),
        "states": levels, "minimizer": float(levels[i_min]), "alphas": alphas, "tv_to_limit": tvs,
        "pi_tilde": pi_t, "pi_tilde_min": float(pi_t.min()), "pi_tilde_max": float(pi_t.max()),
        "pi_tilde_at_minimizer": float(pi_t[i_min]), "pi_tilde_argmax": float(levels[int(np.argmax(pi_t))]),
        "alpha_sim": alpha_sim, "sim_steps": sim_steps, "pi_alpha_sim": pi_sim, "simulated_histogram": hist,
        "tv_exact_vs_simulated": tv(pi_sim, hist), "p_right_state": float(levels[i_ref]),
        "p_right_given_move": prm, "p_right_limit": p_right_limit(grid, toy.gradient, sigma, i_ref),
        "p_right_spread_small_alpha": float(max(small) - min(small)) if small else None,
        "tv_falls": bool(tvs[int(np.argmin(alphas))] < min(0.02, tvs[int(np.argmax(alphas))])),
        "sim_agrees": bool(tv(pi_sim, hist) < 0.02), "product_grid": pg, "seconds": time.perf_counter() - t0,
    }
    return finish("markov", record, out_dir)
