"""Float-format grids: Q_d is the cast, Q_s is unbiased and keyed; scalar reference = vectorised path."""
import copy
import doctest
import math

import pytest
import torch

import qtrain.floatgrid as fg
from qtrain import Grid, QuantizedOptimizer, quantize
from qtrain.floatgrid import FORMATS, q_d_float_reference, q_s_float_reference, quantize_float
from qtrain.rng import resolve_key, uniform
from qtrain.train import TrainConfig

NAMES = list(FORMATS)


def _sample(name, n=4000, seed=0):
    """Values across every binade of the format: normals, subnormals, below the smallest
    subnormal, exact ties, plus random float32 bit patterns; all with |x| <= max."""
    f = FORMATS[name]
    g = torch.Generator().manual_seed(seed)
    e = torch.randint(f.emin - f.m - 3, int(math.log2(f.max)), (n,), generator=g).float()
    x = torch.randn(n, generator=g).sign() * (1 + torch.rand(n, generator=g)) * 2.0 ** e
    ties = torch.tensor([1 + 2.0 ** -(f.m + 1), 1 + 3 * 2.0 ** -(f.m + 1), f.tiny / 2, 1.5 * f.tiny, -f.tiny / 2, f.max])
    raw = torch.randint(-2**31, 2**31 - 1, (n,), generator=g, dtype=torch.int32).view(torch.float32)
    x = torch.cat([x, ties, raw, torch.tensor([0.0, -0.0])])
    return x[torch.isfinite(x) & (x.abs() <= f.max)]


def _same_bits(a, b):
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("name", NAMES)
def test_q_d_is_the_cast_bit_for_bit_and_matches_reference(name):
    x = _sample(name)
    out = quantize_float(x, name, False)
    assert out.dtype == torch.float32 and _same_bits(out, x.to(FORMATS[name].dtype).float())
    ref = torch.tensor([q_d_float_reference(v, name) for v in x[:1500].tolist()])
    assert _same_bits(ref, out[:1500])
    assert _same_bits(quantize(x, Grid.float(name)), out)  # the public entry point dispatches here


@pytest.mark.parametrize("name", NAMES)
def test_q_s_fast_path_matches_scalar_reference(name):
    x = _sample(name, seed=1)
    key = resolve_key(123)
    out = quantize_float(x, name, True, key)
    u = uniform(key, x.numel()).tolist()
    ref = torch.tensor([q_s_float_reference(v, name, u[i]) for i, v in enumerate(x.tolist())])
    assert _same_bits(ref, out)
    f = FORMATS[name]
    assert _same_bits(out.to(f.dtype).float(), out)  # representable in the format
    step = torch.tensor([fg._step(abs(v), f) if v else 0.0 for v in x.tolist()], dtype=torch.float64)
    diff = (out.double() - x.double()).abs()
    assert bool(((diff < step) | (diff == 0)).all())  # a neighbour of x
    assert _same_bits(quantize(x, Grid.float(name), "stochastic", generator=123), out)


@pytest.mark.parametrize("name,x", [("bfloat16", 1 + 2.0**-9), ("bfloat16", -3e-39), ("float16", 1e-6),
                                     ("float16", 1000.3), ("float8_e4m3fn", 0.3), ("float8_e4m3fn", 0.0031),
                                     ("float8_e5m2", -7.7), ("float8_e5m2", 2.0**-15 * 1.3)])
def test_q_s_unbiased_with_the_two_point_variance(name, x):
    # n = 200000 draws; |z| > 5 has a false-alarm rate of ~6e-7 per check under the normal approximation
    n = 200_000
    t = torch.full((n,), x)
    out = quantize_float(t, name, True, resolve_key(7)).double()
    x32 = float(t[0])
    vals = sorted(set(out.tolist()))
    assert len(vals) == 2 and vals[0] <= x32 <= vals[1]
    p = (x32 - vals[0]) / (vals[1] - vals[0]) if x32 > 0 else (vals[1] - x32) / (vals[1] - vals[0])
    var = p * (1 - p) * (vals[1] - vals[0]) ** 2  # Var[Q_s(w)] = p(1-p)Δ(w)^2
    assert abs(out.mean().item() - x32) < 5 * math.sqrt(var / n)
    # sample variance of a two-point variable: relative sd ~ sqrt(2/n) at most for p near 1/2
    assert abs(out.var().item() / var - 1) < 5 * math.sqrt((1 - 6 * p * (1 - p)) / (n * p * (1 - p)) + 2 / n)


def test_q_s_is_keyed_reproducible_and_independent_of_layout():
    x = torch.randn(64, 33)
    g = Grid.float("bfloat16")
    a = quantize(x, g, "stochastic", generator=5)
    assert torch.equal(a, quantize(x.clone(), g, "stochastic", generator=5))
    assert not torch.equal(a, quantize(x, g, "stochastic", generator=6))
    assert torch.equal(quantize(x.t().contiguous().t(), g, "stochastic", generator=5), a)  # logical order, not memory


def test_special_values_are_refused_or_saturated_as_documented():
    big = torch.tensor([3.4e38])  # above bf16's max + half an ulp: the cast gives inf
    with pytest.raises(ValueError, match="no finite level in bfloat16"):
        quantize_float(big, "bfloat16", False)
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([1.0, float("nan")]), Grid.float("float16"), "stochastic", generator=0)
    with pytest.raises(ValueError, match="no finite level"):
        quantize_float(torch.tensor([float("inf")]), "float8_e4m3fn", False)
    with pytest.raises(ValueError, match="float16"):
        quantize_float(torch.tensor([65504.5]), "float16", True, 1)  # the upper neighbour would be inf
    assert quantize_float(torch.tensor([65519.0]), "float16", False).item() == 65504.0  # the cast rounds it down
    assert quantize_float(torch.tensor([1000.0, -500.0]), "float8_e4m3fn", True, 1).tolist() == [448.0, -448.0]
    assert quantize_float(torch.tensor([1000.0]), "float8_e4m3fn", False).item() == 448.0  # as torch's cast
    z = quantize_float(torch.tensor([-1e-30, -0.0]), "float8_e5m2", True, 3)
    assert z.tolist() == [0.0, 0.0] and bool(torch.signbit(z).all())  # sign kept, as the cast does
    with pytest.raises(ValueError, match="float format 'float4'"):
        Grid.float("float4")


def test_grid_float_surface():
    g = Grid.float("float8_e4m3fn")
    assert (g.kind, g.bits, g.delta, g.high, g.low) == ("float", 8, 0.125, 448.0, -448.0)
    assert Grid.from_dict(g.to_dict()) == g and repr(g) == "Grid.float('float8_e4m3fn')"
    with pytest.raises(ValueError, match="decode"):
        g.levels()


def test_docstring_examples():
    r = doctest.testmod(fg, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert r.attempted > 0 and r.failed == 0


def _toy(method, steps=120):
    """Fit w to a target 3e-3 above a bf16 level with ADAM at lr 1e-4: each step moves w by
    ~1e-4, far below half of bf16's spacing 2^-7 at 1.0, so Q_d sends every update back."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.ones(500))
    target = torch.full((500,), 1.0 + 3e-3)
    opt = QuantizedOptimizer(torch.optim.Adam([w], lr=1e-4), method, Grid.float("bfloat16"), seed=0, params=[w])
    for _ in range(steps):
        opt.zero_grad()
        ((w - target) ** 2).mean().backward()
        opt.step()
    return w.detach(), ((w.detach() - target) ** 2).mean().item()


def test_sr_adam_trains_on_bfloat16_where_r_adam_stalls():
    w_r, loss_r = _toy("r")
    w_sr, loss_sr = _toy("sr")
    assert torch.equal(w_r, torch.ones(500))  # R: every update rounded away
    assert _same_bits(w_sr, w_sr.to(torch.bfloat16).float())
    assert abs(w_sr.mean().item() - (1 + 3e-3)) < 1e-3 and (w_sr != 1).float().mean() > 0.2  # SR: the mean follows


def test_config_accepts_float_grids_and_trains_only_conv_weights_on_them(tmp_path):
    from qtrain.cli import main as cli
    from qtrain.train import load_checkpoint

    assert TrainConfig(grid="bfloat16").validate().make_grid(0.3) == Grid.float("bfloat16")
    rc = cli(["train", "--data", "digits", "--model", "smallcnn", "--epochs", "1", "--train-subset", "256",
              "--test-subset", "100", "--no-progress", "--method", "sr", "--grid", "float8_e4m3fn", "--out", str(tmp_path)])
    assert rc == 0
    sd = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    on_grid = {k: _same_bits(v, v.to(torch.float8_e4m3fn).float()) for k, v in sd.items() if v.is_floating_point()}
    assert all(on_grid[k] for k in ("features.0.weight", "features.4.weight", "features.8.weight"))
    assert not all(on_grid.values())  # BN and the classifier stay float32
    with pytest.raises(ValueError, match="grid='float32'"):
        TrainConfig(grid="float32").validate()


@pytest.mark.parametrize("name", NAMES)
def test_compiled_kernel_and_torch_bit_path_agree(name):
    if fg._lib() is None:
        pytest.skip("no C compiler: the torch path is the only path")
    x = _sample(name, n=30000, seed=2)
    out, bad = fg._sr32_c(fg._lib(), x.contiguous(), FORMATS[name], 77)
    assert bad == 0 and _same_bits(out, fg._sr32(x.contiguous(), FORMATS[name], 77))


def test_optimizer_state_round_trip_resumes_bit_identically():
    def make():
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(300))
        return w, QuantizedOptimizer(torch.optim.Adam([w], lr=1e-2), "sr", Grid.float("float8_e5m2"), seed=3, params=[w])

    def steps(w, opt, n):
        for _ in range(n):
            opt.zero_grad()
            (w - 0.5).square().sum().backward()
            opt.step()

    w1, o1 = make()
    steps(w1, o1, 3)
    w2, o2 = make()
    o2.load_state_dict(copy.deepcopy(o1.state_dict()))  # (torch may share state tensors otherwise)
    with torch.no_grad():
        w2.copy_(w1)
    steps(w1, o1, 2)
    steps(w2, o2, 2)
    assert torch.equal(w1, w2)
