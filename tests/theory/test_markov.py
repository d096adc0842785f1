"""Theorem 5 machinery: exact T_alpha, U, pi-tilde (qtrain.theory.markov)."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from qtrain import Grid, quantize
from qtrain.plots.theory import draw
from qtrain.theory import markov, toy

SIGMA = 2.0


def _grad2(x):
    return np.stack([toy.gradient(x[:, 0]) + 0.3 * x[:, 1], toy.gradient(x[:, 1]) + 0.3 * x[:, 0]], 1)


@pytest.mark.parametrize("alpha", [1.0, 0.1, 0.003])
@pytest.mark.parametrize("d", [1, 2])
def test_rows_are_distributions(alpha, d):
    g = toy.toy_grid() if d == 1 else Grid.uniform(0.5, bits=3)
    T = markov.transition_matrix(g, toy.gradient if d == 1 else _grad2, SIGMA, alpha, d)
    assert T.shape == ((32, 32) if d == 1 else (64, 64))
    assert T.data.min() >= 0
    np.testing.assert_allclose(np.asarray(T.sum(axis=1)).ravel(), 1.0, atol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 0.2, 0.05])
def test_transition_matches_monte_carlo_of_one_sr_step(alpha):
    """One SR step from several states, N = 400k draws through qtrain.quantize, vs the exact row.
    Each entry must lie within 5 binomial standard errors (+1e-5): false-alarm rate < 1e-5 per
    entry, and the seed is fixed, so the test cannot flake."""
    g = toy.toy_grid()
    T = markov.transition_matrix(g, toy.gradient, SIGMA, alpha).toarray()
    levels = np.asarray(g.levels())
    gen = torch.Generator().manual_seed(123)
    n = 400_000
    for s in (0, 9, 16, 18, 31):
        x = levels[s]
        y = x - alpha * (toy.gradient(x) + SIGMA * torch.randn(n, generator=gen, dtype=torch.float64))
        q = quantize(y.float(), g, "stochastic", generator=1000 + s).double().numpy()
        emp = np.bincount(np.rint(q / g.delta).astype(int) - g.kmin, minlength=32) / n
        p = T[s]
        assert np.all(np.abs(emp - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-5), (s, np.abs(emp - p).max())


def test_u_matrix_matches_numerical_integrals():
    g, grad = toy.toy_grid(), toy.gradient
    U = markov.u_matrix(g, grad, SIGMA).toarray()
    levels = np.asarray(g.levels())
    for s in (3, 16, 20):
        m = grad(levels[s])
        dens = stats.norm(m, SIGMA).pdf
        right = integrate.quad(lambda z: -z * dens(z), -np.inf, 0)[0] / g.delta   # E[(-g)^+]/Delta
        left = integrate.quad(lambda z: z * dens(z), 0, np.inf)[0] / g.delta      # E[g^+]/Delta
        assert U[s, s + 1] == pytest.approx(right, rel=1e-7)
        assert U[s, s - 1] == pytest.approx(left, rel=1e-7)
        assert np.count_nonzero(U[s]) == 2
    assert U[31, :].nonzero()[0].tolist() == [30] and U[0, :].nonzero()[0].tolist() == [1]


def test_pi_tilde_hand_solvable_three_state_chain():
    """Ternary grid {-1, 0, 1}, constant mean gradient c: a birth-death chain with the same up/down
    rates everywhere, so pi-tilde is proportional to (1, rho, rho^2), rho = E[(-g)^+] / E[g^+]."""
    c, sigma = 0.7, 1.5
    grad = lambda x: np.full_like(x, c)  # noqa: E731
    up = sigma * stats.norm.pdf(c / sigma) - c * stats.norm.cdf(-c / sigma)
    down = c + up                                                            # E[g^+] = E[g] + E[(-g)^+]
    rho = up / down
    want = np.array([1, rho, rho**2]) / (1 + rho + rho**2)
    g = Grid.ternary(1.0)
    np.testing.assert_allclose(markov.theorem5_limit(g, grad, sigma), want, rtol=1e-10)
    Tt, a0 = markov.theorem5_t_tilde(g, grad, sigma)
    assert a0 == pytest.approx(1 / (up + down))
    assert Tt.toarray().min() >= -1e-15
    np.testing.assert_allclose(markov.stationary(Tt), want, rtol=1e-10)


def test_limit_and_squishing():
    g = toy.toy_grid()
    pt = markov.theorem5_limit(g, toy.gradient, SIGMA)
    tvs = [markov.tv(markov.stationary(markov.transition_matrix(g, toy.gradient, SIGMA, a)), pt)
           for a in (0.5, 0.1, 0.01)]
    assert tvs[0] > tvs[1] > tvs[2] and tvs[2] < 1e-6
    assert pt.min() > 0 and pt.max() < 0.9
    lim = markov.p_right_limit(g, toy.gradient, SIGMA, 18)
    for a in (0.01, 0.001):
        assert markov.p_right_given_move(markov.transition_matrix(g, toy.gradient, SIGMA, a), 18) == pytest.approx(lim, abs=1e-8)
    g2 = Grid.uniform(0.5, bits=3)
    p2 = markov.theorem5_limit(g2, _grad2, SIGMA, 2)
    tv2 = [markov.tv(markov.stationary(markov.transition_matrix(g2, _grad2, SIGMA, a, 2)), p2) for a in (0.1, 0.01, 0.001)]
    assert tv2[0] > tv2[1] > tv2[2] and tv2[2] < 1e-3


def test_run_verdicts_and_files(tmp_path):
    r = markov.run(tmp_path, seed=0, quick=True, sim_steps=1_000_000)
    assert (tmp_path / "markov.json").exists() and not (tmp_path / "markov.png").exists()
    draw(r, tmp_path)
    assert (tmp_path / "markov.png").exists() and r["files"]["png"] == str(tmp_path / "markov.png")
    assert r["tv_falls"] and r["pi_tilde_min"] > 0 and r["pi_tilde_max"] < 0.9
    assert r["tv_exact_vs_simulated"] < 0.02 and r["sim_agrees"]
    assert len(r["tv_to_limit"]) == len(r["alphas"]) == len(r["p_right_given_move"])


@pytest.mark.parametrize("alpha", [0, -0.1, float("nan")])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        markov.transition_matrix(toy.toy_grid(), toy.gradient, SIGMA, alpha)


def test_bad_sigma_and_grid():
    with pytest.raises(ValueError, match="sigma"):
        markov.u_matrix(toy.toy_grid(), toy.gradient, 0.0)
    with pytest.raises(ValueError, match="bounded"):
        markov.transition_matrix(Grid.uniform(0.25), toy.gradient, SIGMA, 0.1)
