"""Theorem 1 on float-format grids: the floor follows the relative step; CLI option."""
import doctest
import json

import numpy as np
import pytest

from qtrain.cli import main as cli
from qtrain.theory import convex_float


def test_floor_follows_the_local_step_and_stays_under_the_bound():
    r = convex_float.run(quick=True, T=600, seeds=8, formats=["float8_e5m2", "float16"], problems=["quadratic"])
    by = {row["format"]: row for row in r["rows"]}
    e5, f16 = by["float8_e5m2"], by["float16"]
    assert e5["relative_step"] == 0.25 and f16["relative_step"] == 2.0**-10
    assert r["all_under_bound"]
    # a 256x coarser relative step: SR's gap at T is larger, and R's (stalling) gap is larger than SR's
    assert e5["sr_float_gap"] > f16["sr_float_gap"] and e5["r_float_gap"] > e5["sr_float_gap"]
    # the float grid behaves like the uniform grid with the rms local step at w* (within 3x)
    assert 1 / 3 < e5["float_over_uniform"] < 3


def test_effective_delta():
    assert convex_float.effective_delta(np.array([1.5, 0.75]), "bfloat16") == pytest.approx(
        np.sqrt((2.0**-14 + 2.0**-16) / 2))


def test_cli_grid_option(tmp_path):
    rc = cli(["convex", "--out", str(tmp_path), "--grid", "float8_e4m3fn", "--quick", "--T", "100", "--seeds", "2"])
    assert rc == 0
    rec = json.loads((tmp_path / "convex_float.json").read_text())
    assert rec["formats"] == ["float8_e4m3fn"] and (tmp_path / "convex_float.png").is_file()
    assert cli(["convex", "--out", str(tmp_path), "--grid", "bfloat16", "--deltas", "0.25"]) == 2


def test_docstring_examples():
    r = doctest.testmod(convex_float, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert r.attempted > 0 and r.failed == 0
