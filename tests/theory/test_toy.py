"""The toy: exploration vs exploitation (qtrain.theory.toy) and its chain engine."""
import json

import numpy as np
import pytest

from qtrain.cli import main
from qtrain.plots.theory import draw
from qtrain.rng import resolve_key
from qtrain.theory import _chain, toy


@pytest.mark.skipif(not _chain.fast_available(), reason="no C compiler: only the Python loop exists")
@pytest.mark.parametrize("method", ["sr", "bc", "bc_s"])
@pytest.mark.parametrize("lr", [1.0, 0.05])
def test_compiled_loop_equals_reference_loop(method, lr):
    g = toy.toy_grid()
    grad = toy.gradient(np.asarray(g.levels()))
    args = (g, grad, method, lr, 2.0, 3000, 0.5, resolve_key(11), 5)
    fast = _chain.run_chain(*args)
    ref = _chain.run_chain_reference(*args)
    np.testing.assert_array_equal(fast, ref)
    assert fast.sum() == 3000


def test_run_shows_the_claims_and_is_deterministic(tmp_path):
    r = toy.run(tmp_path, seed=3, quick=True)
    bc, sr = r["bc_mass_at_min_by_lr"], r["sr_mass_at_min_by_lr"]
    assert r["lrs_descending"] == [1.0, 0.1, 0.01, 0.001]
    assert all(b > a for a, b in zip(bc, bc[1:])) and bc[-1] > 0.9, bc
    assert max(sr) < 0.6 and bc[-1] - sr[-1] > 0.4, sr
    assert r["bc_mass_rises"] and r["sr_stays_spread"]
    for rec in r["results"]:
        assert len(rec["histogram"]) == len(rec["states"]) == 32
        assert sum(rec["histogram"]) == pytest.approx(1.0)
    on_disk = json.loads((tmp_path / "toy.json").read_text())
    assert on_disk["results"][0]["histogram"] == r["results"][0]["histogram"]
    assert not (tmp_path / "toy.png").exists()  # run computes; the caller draws
    draw(r, tmp_path)
    assert (tmp_path / "toy.png").stat().st_size > 0
    again = toy.run(None, seed=3, lrs=[0.1], iters=50_000)
    once = toy.run(None, seed=3, lrs=[0.1], iters=50_000)
    assert again["results"] == once["results"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        toy.run(lrs=[])
    with pytest.raises(ValueError, match="learning rate"):
        toy.run(lrs=[0.1, -1.0])
    with pytest.raises(ValueError, match="iters"):
        toy.simulate("sr", 0.1, 0)
    with pytest.raises(ValueError, match="method"):
        toy.simulate("adam", 0.1, 10)
    with pytest.raises(ValueError, match="delta"):
        toy.toy_grid(delta=0.0)


def test_cli(tmp_path, capsys):
    assert main(["toy", "--out", str(tmp_path), "--quick", "--iters", "20000", "--seed", "1"]) == 0
    assert (tmp_path / "toy.json").exists() and (tmp_path / "toy.png").stat().st_size > 0
    assert f"wrote {tmp_path / 'toy.json'} and {tmp_path / 'toy.png'} in " in capsys.readouterr().out
    assert main(["toy", "--out", str(tmp_path), "--lrs", "0"]) == 2
    assert "learning rate" in capsys.readouterr().err
