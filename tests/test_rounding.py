"""Q_d / Q_s: agreement of the three implementations, grid membership, and SR statistics.

Statistical tests use fixed keys and derandomised hypothesis examples, so they are
deterministic; the thresholds below state the false-alarm rate each would have under
fresh randomness (|z| > 5: about 5.7e-7 per check).
"""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from qtrain import Grid, quantize
from qtrain import _kernel
from qtrain.rng import resolve_key, uniform, uniform_reference
from qtrain.rounding import _eager, q_d_reference, q_s_reference

GRIDS = [Grid.uniform(2**-3), Grid.uniform(0.1), Grid.uniform(1 / 7), Grid.uniform(0.3, bits=2),
         Grid.uniform(1.0, bits=1), Grid.uniform(2**-10, bits=32), Grid.binary(1.0), Grid.binary(0.37), Grid.ternary(0.5)]
Z = 5.0  # two-sided false-alarm rate 5.7e-7 per check


def on_grid(y: torch.Tensor, g: Grid) -> bool:
    d = torch.tensor(g.delta, dtype=torch.float32).item()
    k = (y.double() - g.offset) / d
    ok = torch.all((k - k.round()).abs() < 1e-4).item()
    if g.bounded:
        ok = ok and k.min().item() >= g.kmin - 1e-4 and k.max().item() <= g.kmax + 1e-4
    return ok


@pytest.mark.parametrize("g", GRIDS, ids=repr)
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_outputs_on_grid_shape_dtype_device(g, rounding, device):
    x = torch.randn(1000, 3, device=device) * 2
    x0 = x.clone()
    y = quantize(x, g, rounding, generator=1)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.equal(x, x0), "input modified"
    assert on_grid(y.cpu(), g)


@pytest.mark.parametrize("g", GRIDS, ids=repr)
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_kernel_equals_eager(g, rounding):
    if _kernel.get() is None:
        pytest.skip("no C compiler: only the eager path exists")
    x = torch.randn(300_001) * 3
    key = resolve_key(11)
    x = torch.cat([x, torch.tensor([0.0, -0.0, -1e-3, 1e-3, float("inf"), -float("inf"), 1e30, -1e30, 1e-40])])
    if not g.bounded:
        x = x[x.isfinite()]
    fast = quantize(x, g, rounding, generator=11)
    slow = _eager(x, g, rounding == "stochastic", key)
    assert torch.equal(fast.view(torch.int32), slow.view(torch.int32))  # bit for bit, sign of zero included


@pytest.mark.parametrize("delta", [2.0**-20, 2.0**-3, 1.0, 4.0, 2.0**20, 0.1])
@pytest.mark.parametrize("bits", [None, 8])
def test_kernel_equals_eager_on_levels_and_edges(delta, bits):
    """The kernel skips SR's on-a-level tests when Δ = 2^-j (j >= 0) makes x/Δ exact; the bits
    must still match the eager path: levels, huge quotients (|x/Δ| >= 2^24), subnormals, ±0, inf."""
    if _kernel.get() is None:
        pytest.skip("no C compiler: only the eager path exists")
    g = Grid.uniform(delta, bits=bits)
    d = torch.tensor(delta, dtype=torch.float32).item()
    ks = torch.tensor([0, 1, -1, 7, -300, 2**23 - 1, 2**23, 2**24, 2**24 + 2, -(2**25), 2**30], dtype=torch.float64)
    edges = torch.tensor([0.0, -0.0, 1e-40, -1e-45, 1.17e-38, 3e38, -3e38, float("inf"), -float("inf")], dtype=torch.float64)
    x = torch.cat([ks * d, (ks + 0.5) * d, (ks + 0.25) * d, edges]).float()
    x = torch.cat([x, torch.nextafter(x, torch.full_like(x, float("inf"))), torch.randn(5000) * d * 40])
    if not g.bounded:
        x = x[x.isfinite() & (x.abs() / d < 1e30)]
    for key in (3, 12345):
        fast = quantize(x, g, "stochastic", generator=key)
        slow = _eager(x, g, True, resolve_key(key))
        assert torch.equal(fast.view(torch.int32), slow.view(torch.int32)), (delta, bits, key)


def _tie_values(g: Grid):
    d = torch.tensor(g.delta, dtype=torch.float32).item()
    return [(k + 0.5) * d for k in range(-6, 6)] + [k * d for k in range(-6, 6)] + [0.0, -0.0]


@pytest.mark.parametrize("g", GRIDS, ids=repr)
def test_nearest_matches_scalar_reference(g):
    gen = torch.Generator().manual_seed(0)
    xs = (torch.randn(2000, generator=gen) * 3).tolist() + _tie_values(g)
    y = quantize(torch.tensor(xs), g, "nearest").tolist()
    assert y == [q_d_reference(v, g) for v in xs]


def test_nearest_ties_away_from_zero():
    g = Grid.uniform(1.0)
    y = quantize(torch.tensor([0.5, -0.5, 1.5, -1.5, 2.5, 0.49999997]), g)
    assert y.tolist() == [1.0, -1.0, 2.0, -2.0, 3.0, 0.0]
    assert quantize(torch.tensor([0.0, -1e-30, 1e-30]), Grid.binary(2.0)).tolist() == [2.0, -2.0, 2.0]


@pytest.mark.parametrize("g", GRIDS, ids=repr)
def test_stochastic_matches_scalar_reference(g):
    xs = (torch.randn(500, generator=torch.Generator().manual_seed(1)) * 2).tolist() + _tie_values(g)
    key = resolve_key(3)
    y = quantize(torch.tensor(xs), g, "stochastic", generator=3).tolist()
    assert y == [q_s_reference(v, g, uniform_reference(key, i)) for i, v in enumerate(xs)]


def test_uniform_source_matches_reference_and_is_in_range():
    key = resolve_key(123456789)
    u = uniform(key, 1000, start=2**32 - 500)  # crosses the 32-bit boundary of the counter
    assert u.tolist() == [uniform_reference(key, 2**32 - 500 + i) for i in range(1000)]
    v = uniform(key, 100_000)
    assert 0 <= v.min() and v.max() < 1
    # mean of U[0,1): sd = sqrt(1/12/n); |z| < 5
    assert abs(v.double().mean().item() - 0.5) < Z * math.sqrt(1 / 12 / 100_000)


@given(st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=50),
       st.sampled_from(GRIDS), st.sampled_from(["nearest", "stochastic"]))
def test_idempotent_and_on_grid(xs, g, rounding):
    y = quantize(torch.tensor(xs), g, rounding, generator=5)
    assert on_grid(y, g)
    assert torch.equal(quantize(y, g, rounding, generator=6), y)


@given(st.floats(-4, 4, allow_nan=False), st.sampled_from([Grid.uniform(0.25), Grid.uniform(1.0), Grid.uniform(0.1, bits=8)]))
def test_sr_unbiased_and_variance(w, g):
    n = 200_000
    y = quantize(torch.full((n,), w, dtype=torch.float64), g, "stochastic", generator=hash(w) & 0xFFFF).double()
    d = g.delta
    f = math.floor(w / d)
    p = w / d - f
    assert set(torch.unique(y).tolist()) <= {f * d, (f + 1) * d}
    sd = math.sqrt(p * (1 - p)) * d
    assert abs(y.mean().item() - w) <= Z * sd / math.sqrt(n) + 1e-9
    # a two-point variable's sample variance is n/(n-1) * p^(1-p^) * d^2; with |p^ - p| <= e := Z sd_p,
    # |p^(1-p^) - p(1-p)| <= |1-2p| e + e^2
    e = Z * math.sqrt(p * (1 - p) / n)
    tol = d**2 * (abs(1 - 2 * p) * e + e**2 + p * (1 - p) / (n - 1))
    assert abs(y.var().item() - sd**2) <= tol + 1e-12


def test_statistical_check_catches_a_biased_rounding():
    """The mean check above has power: a rounding biased by 1% of Δ fails it."""
    n, w, d = 200_000, 0.3, 1.0
    u = uniform(resolve_key(9), n, dtype=torch.float64)
    biased = torch.where(u < 0.3 + 0.01, 1.0, 0.0)
    sd = math.sqrt(0.3 * 0.7) * d
    assert abs(biased.mean().item() - w) > Z * sd / math.sqrt(n)


def test_binary_stochastic_probability():
    n, s = 200_000, 0.5
    for w in (-0.7, -0.25, 0.0, 0.1, 0.45, 2.0):
        y = quantize(torch.full((n,), w), Grid.binary(s), "stochastic", generator=7)
        p = (min(max(w, -s), s) + s) / (2 * s)
        frac = (y > 0).double().mean().item()
        assert abs(frac - p) <= Z * math.sqrt(p * (1 - p) / n) + 1e-9


def test_values_on_a_level_never_move_even_when_delta_is_not_a_power_of_two():
    g = Grid.uniform(1 / 7)
    levels = quantize(torch.arange(-50, 50, dtype=torch.float32) / 7, g)
    x = levels.repeat(20_000)  # 2e6 draws; a 2^-21 leak would show about once
    assert torch.equal(quantize(x, g, "stochastic", generator=1), x)


def test_zero_is_always_positive_zero():
    for g in (Grid.uniform(1.0, bits=1), Grid.uniform(0.5), Grid.ternary(1.0)):
        for r in ("nearest", "stochastic"):
            y = quantize(torch.tensor([-0.0, -0.2, 0.2, -0.0]), g, r, generator=0)
            zeros = y[y == 0]
            assert zeros.numel() and not torch.signbit(zeros).any(), (g, r)


def test_wide_grids_stay_inside_their_range():
    g = Grid.uniform(1.0, bits=32)
    y = quantize(torch.tensor([3e9, -3e9]), g)
    assert y[0].item() <= g.high and y[1].item() >= g.low


def test_clipping_outside_bounded_range():
    g = Grid.uniform(0.5, bits=2)  # levels -1, -0.5, 0, 0.5
    y = quantize(torch.tensor([-3.0, 3.0, 0.74]), g, "stochastic", generator=0)
    assert y[0] == -1.0 and y[1] == 0.5 and y[2] == 0.5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_and_double(dtype):
    x = torch.randn(1000).to(dtype)
    for r in ("nearest", "stochastic"):
        y = quantize(x, Grid.uniform(0.25), r, generator=2)
        assert y.dtype == dtype and on_grid(y.float(), Grid.uniform(0.25))
    assert torch.equal(quantize(x, Grid.uniform(0.25)), quantize(x.double(), Grid.uniform(0.25)).to(dtype))


def test_empty_and_noncontiguous():
    g = Grid.uniform(0.5)
    assert quantize(torch.empty(0, 3), g, "stochastic").shape == (0, 3)
    x = torch.randn(64, 32)
    view = x.t()[::2]
    assert not view.is_contiguous()
    y = quantize(view, g, "stochastic", generator=4)
    assert torch.equal(y, quantize(view.contiguous(), g, "stochastic", generator=4))


def test_same_key_same_bits_and_generator_semantics():
    x = torch.randn(10_000)
    g = Grid.uniform(0.1)
    assert torch.equal(quantize(x, g, "stochastic", generator=42), quantize(x, g, "stochastic", generator=42))
    assert not torch.equal(quantize(x, g, "stochastic", generator=42), quantize(x, g, "stochastic", generator=43))
    a = quantize(x, g, "stochastic", generator=torch.Generator().manual_seed(5))
    b = quantize(x, g, "stochastic", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.manual_seed(8)
    c = quantize(x, g, "stochastic")
    torch.manual_seed(8)
    assert torch.equal(c, quantize(x, g, "stochastic"))


def test_bad_inputs():
    g = Grid.uniform(0.5)
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([0.1, float("nan")]), g)
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([0.1, float("nan")]), g, "stochastic")
    with pytest.raises(ValueError, match="unbounded"):
        quantize(torch.tensor([1.0, float("inf")]), g)
    assert quantize(torch.tensor([float("inf")]), Grid.uniform(0.5, bits=4)).item() == 3.5
    with pytest.raises(ValueError, match="rounding='up'"):
        quantize(torch.zeros(2), g, "up")
    with pytest.raises(ValueError, match="floating-point"):
        quantize(torch.zeros(2, dtype=torch.int32), g)
    with pytest.raises(TypeError, match="Grid"):
        quantize(torch.zeros(2), 0.5)
    with pytest.raises(TypeError, match="generator"):
        quantize(torch.zeros(2), g, "stochastic", generator="seed")


# -- finite in, never inf or NaN out ------------------------------------------------------------
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("x, g, dtype", [
    ([3e38, 1.0], Grid.uniform(0.25), torch.float32),  # x/Δ overflows float32 (the C kernel path)
    ([1e308, -1.0], Grid.uniform(2**-100), torch.float64),  # x/Δ overflows float64 (the eager path)
    ([65504.0, 3.0], Grid.uniform(1e4), torch.float16),  # level 7e4 does not fit float16
])
def test_finite_input_whose_level_overflows_is_refused(x, g, dtype, rounding, monkeypatch):
    for path in ("default", "eager"):
        if path == "eager":
            monkeypatch.setattr(_kernel, "get", lambda: None)
        with pytest.raises(ValueError, match=r"quantize: 1 finite entry of 2 \(largest \|x\| .*\) has no level representable"):
            quantize(torch.tensor(x, dtype=dtype), g, rounding, generator=0)


def test_bounded_grids_clamp_huge_inputs_to_finite_levels():
    g = Grid.uniform(0.25, bits=8)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        y = quantize(torch.tensor([3e38, -3e38, 1.0], dtype=dtype), g, "stochastic", generator=0)
        assert y.tolist() == [g.high, g.low, 1.0]


def test_numpy_integer_keys():
    np = pytest.importorskip("numpy")
    x = torch.randn(1000)
    g = Grid.uniform(0.1)
    assert torch.equal(quantize(x, g, "stochastic", generator=np.int64(3)), quantize(x, g, "stochastic", generator=3))
    assert resolve_key(np.uint32(7)) == resolve_key(7)
    for bad in (True, np.bool_(False), 1.0):
        with pytest.raises(TypeError, match="generator"):
            quantize(x, g, "stochastic", generator=bad)
