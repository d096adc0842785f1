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


@pytest.mark.parametrize("bits", [0, 33, -2, 2.5, True])
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
