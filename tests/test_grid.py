import math

import pytest

from qtrain import Grid


def test_uniform_levels_and_range():
    g = Grid.uniform(0.25, bits=3)
    assert g.levels() == [k * 0.25 for k in range(-4, 4)]
    assert (g.low, g.high) == (-1.0, 0.75)
    u = Grid.uniform(0.5)
    assert not u.bounded and u.low == -math.inf and u.high == math.inf


def test_binary_and_ternary():
    assert Grid.binary(0.5).levels() == [-0.5, 0.5]
    assert Grid.binary(0.5).delta == 1.0
    assert Grid.ternary(2.0).levels() == [-2.0, 0.0, 2.0]


@pytest.mark.parametrize("g", [Grid.uniform(0.1), Grid.uniform(2**-4, bits=8), Grid.binary(0.3), Grid.ternary(1.0)])
def test_dict_round_trip(g):
    assert Grid.from_dict(g.to_dict()) == g


@pytest.mark.parametrize("delta", [0, -1.0, float("nan"), float("inf"), "x", None, 1e-50, 1e39])
def test_bad_delta(delta):
    with pytest.raises(ValueError, match="delta"):
        Grid.uniform(delta)


@pytest.mark.parametrize("bits", [0, 33, -2, 2.5, True, "8"])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        Grid.uniform(0.1, bits=bits)


@pytest.mark.parametrize("make", [Grid.binary, Grid.ternary])
@pytest.mark.parametrize("scale", [0, -0.5, float("nan")])
def test_bad_scale(make, scale):
    with pytest.raises(ValueError, match="scale"):
        make(scale)


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        Grid.from_dict({"kind": "quaternary"})


# -- exact bounds: Grid.low/high/levels() are what the quantizers produce ------------------------
def _random_grids(n=200):
    import random
    rnd = random.Random(0)
    out = []
    for _ in range(n):
        v = 10 ** rnd.uniform(-5, 1)
        out.append(rnd.choice([Grid.uniform(v, bits=rnd.choice([1, 2, 3, 8, 16, 32])), Grid.binary(v), Grid.ternary(v)]))
    return out + [Grid.uniform(0.00465627977848053, bits=8)]  # the example: 11.7% of random Δ disagreed


def test_bounds_are_what_quantize_produces_in_float32_and_float64():
    import torch

    from qtrain import quantize
    far = [-1e30, 1e30, -math.inf, math.inf]
    for g in _random_grids():
        for dtype, name in ((torch.float32, "float32"), (torch.float64, "float64")):
            lo, hi = g.bounds(name)
            for rounding in ("nearest", "stochastic"):
                y = quantize(torch.tensor(far, dtype=dtype), g, rounding, generator=0).tolist()
                assert y == [lo, hi, lo, hi], (g, name, rounding)
        assert (g.low, g.high) == g.bounds() == g.bounds(torch.float32) == g.bounds("bfloat16")
        if g.kmax - g.kmin < 300:
            for dtype, name in ((torch.float32, "float32"), (torch.float64, "float64")):
                lv = g.levels(name)
                assert quantize(torch.tensor(lv, dtype=dtype), g).tolist() == lv  # levels are fixed points
                x = torch.linspace(lo - 1, hi + 1, 2001, dtype=dtype)
                assert set(quantize(x, g, "stochastic", generator=1).tolist()) <= set(lv)


def test_float64_bounds_are_exact_on_wide_grids():
    g = Grid.uniform(1.0, bits=32)
    assert g.bounds("float64") == (-2147483648.0, 2147483647.0)
    assert g.bounds() == (-2147483648.0, 2147483520.0)  # float32 holds no integer between 2^31 - 128 and 2^31
    g = Grid.uniform(0.00465627977848053, bits=8)
    assert g.high == 0.5913475751876831 and g.bounds("float64")[1] == 127 * 0.00465627977848053


# -- validation: every constructor path, numbers only ---------------------------------------------
@pytest.mark.parametrize("make", [lambda: Grid.uniform(True), lambda: Grid.uniform("0.1"), lambda: Grid.binary(False),
                                  lambda: Grid.ternary(b"1"), lambda: Grid("uniform", -1.0), lambda: Grid("uniform", True),
                                  lambda: Grid("binary", 1.0, 0, 1, 0.4), lambda: Grid("uniform", 0.1, -2, 1),
                                  lambda: Grid("uniform", 0.1, -128, 127, None, 7), lambda: Grid("uniform", 0.1, bits=8),
                                  lambda: Grid("ternary", 0.5, -1.0, 1, 0.5), lambda: Grid("quaternary", 1.0)])
def test_bools_strings_and_bypassed_validation_are_refused(make):
    with pytest.raises(ValueError, match="bool|str|bytes|must be a finite number|inconsistent|integer|unknown grid kind"):
        make()


def test_numeric_types_are_normalised():
    import numpy as np
    import torch
    assert Grid.uniform(np.float32(0.5)) == Grid.uniform(0.5) == Grid("uniform", 0.5)
    assert type(Grid.binary(torch.tensor(0.25)).scale) is float and Grid.binary(np.float64(0.25)) == Grid.binary(0.25)
    assert Grid.uniform(0.5, bits=np.int64(4)) == Grid.uniform(0.5, bits=4)
    assert Grid("uniform", 0.1, -8, 7, None, 4) == Grid.uniform(0.1, bits=4)


def test_grids_whose_levels_overflow_float32_are_refused():
    with pytest.raises(ValueError, match=r"levels up to 1.28e\+40, beyond float32's largest"):
        Grid.uniform(1e38, bits=8)
    import numpy as np
    assert Grid.uniform(1e38, bits=1).levels() == [-float(np.float32(1e38)), 0.0]
    assert Grid.binary(1.7e38).high == float(np.float32(1.7e38))
