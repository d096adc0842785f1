"""Theorems 1 and 4, Corollary 1 (qtrain.theory.convex)."""
import doctest
import importlib
import math

import numpy as np
import pytest
import torch

from qtrain import Grid, quantize
from qtrain.cli import main
from qtrain.plots.theory import draw
from qtrain.theory import convex


def test_bounds_evaluate_to_the_formula():
    T, mu, G, d, delta, D, L2 = 1000, 0.3, 2.5, 7, 2**-5, 4.0, 0.2
    first = (1 + math.log(T + 1)) * G**2 / (2 * mu * T)
    assert convex.theorem1_bound(T, mu, G, d, delta) == pytest.approx(first + math.sqrt(d) * delta * G / 2, rel=1e-14)
    assert convex.theorem4_bound(T, mu, G, d, delta, D, L2) == pytest.approx(first + D * L2 * math.sqrt(d * delta) / 2,
                                                                             rel=1e-14)
    assert convex.theorem4_bound(T, mu, G, d, delta, D, 0.0) == pytest.approx(first, rel=1e-14)


@pytest.mark.parametrize("name", ["quadratic", "logistic"])
def test_problem_constants(name):
    p = convex.make_problem(name, d=6, seed=1)
    rng = np.random.default_rng(0)
    W = rng.uniform(-2, 2, (400, 6))
    # w* is the minimizer: F at random box points is never lower, and F is mu-strongly convex around w*
    FW = p.F(W)
    assert FW.min() >= p.F_star
    assert np.all(FW - p.F_star >= 0.5 * p.mu * ((W - p.w_star) ** 2).sum(1) - 1e-12)
    # G bounds the second moment of the stochastic gradient over the box
    Z = W @ p.A.T
    coef = (Z - p.b) if name == "quadratic" else -p.b / (1 + np.exp(p.b * Z))
    sq = (coef[:, :, None] * p.A[None] + p.lam * W[:, None, :]) ** 2
    assert sq.sum(2).mean(1).max() <= p.G**2 * (1 + 1e-12)
    assert (p.L2 == 0) == (name == "quadratic")


def test_batched_rounding_is_quantize_on_each_grid():
    x = torch.rand(5000) * 4 - 2
    for k in (2, 5, 8):
        d = 2.0**-k
        for rounding in ("nearest", "stochastic"):
            a = quantize(x / d, Grid.uniform(1.0), rounding, generator=9) * d
            b = quantize(x, Grid.uniform(d), rounding, generator=9)
            assert torch.equal(a, b)


def test_quick_run_reproduces_the_claims(tmp_path):
    r = convex.run(tmp_path, seed=0, quick=True)
    assert (tmp_path / "convex.json").exists() and not (tmp_path / "convex.png").exists()  # run draws nothing
    assert draw(r, tmp_path) == tmp_path / "convex.png" and (tmp_path / "convex.png").exists()
    assert r["files"] == {"json": str(tmp_path / "convex.json"), "png": str(tmp_path / "convex.png")}
    keys = {"problem", "method", "delta", "T", "gap", "gap_stderr", "bound"}
    assert all(keys <= set(x) for x in r["results"])
    assert all((x["bound"] is None) == (x["method"] == "r") for x in r["results"])
    for prob in ("quadratic", "logistic"):
        assert r["sr_floor_slope"][prob] > 0.5                 # SR's floor grows with delta
    assert r["bc_quadratic_no_floor"]                          # Corollary 1: BC(Q_s) keeps falling
    assert max(r["bc_quadratic_gap_ratio"].values()) < 0.5
    big = str(max(r["deltas"]))
    assert r["r_stall_ratio"]["quadratic"][big] > 0.8           # R stalls at coarse grids
    assert r["all_under_bound"], r["over_bound"]
    final = {(x["method"], x["delta"]): x["gap"] for x in r["results"]
             if x["problem"] == "quadratic" and x["T"] == r["T"]}
    assert final[("bc", 0.25)] < final[("sr", 0.25)] / 10 and final[("bc", 0.25)] < final[("bc_d", 0.25)] / 10


def test_bad_arguments(capsys):
    with pytest.raises(ValueError, match="empty"):
        convex.run(deltas=[])
    with pytest.raises(ValueError, match="delta"):
        convex.run(deltas=[0.25, 0.0])
    with pytest.raises(ValueError, match="delta"):
        convex.theorem1_bound(10, 1.0, 1.0, 2, -0.5)
    with pytest.raises(ValueError, match="problem"):
        convex.make_problem("hinge")
    assert main(["convex", "--out", "/tmp/_unused", "--deltas", "-1"]) == 2
    assert "delta" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["qtrain.theory.convex", "qtrain.theory.toy", "qtrain.theory.markov"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_one_delta_draws_and_reports_no_slope(tmp_path):
    from qtrain.plots.theory import draw

    r = convex.run(str(tmp_path), deltas=[0.25], T=200, seeds=2, problems=("quadratic",))
    assert r["sr_floor_slope"] == {"quadratic": None}
    assert draw(r, tmp_path).exists()


def test_too_short_a_run_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"T=50 is too short.*T >= 100"):
        convex.run(T=50)
