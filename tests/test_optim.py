"""QuantizedOptimizer semantics. Statistical checks: fixed seeds, |z| > 5 (false alarm 5.7e-7)."""
import io
import math

import pytest
import torch
from torch import nn

from qtrain import Grid, QuantizedOptimizer, conv_weights, named_conv_weights, quantize

Z = 5.0


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 2, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def make(method, model, seed=0, base="adam", **kw):
    opt = (torch.optim.Adam(model.parameters(), lr=0.01) if base == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    return QuantizedOptimizer(opt, method, kw.pop("grid", Grid.binary(0.1)),
                              params=named_conv_weights(model), seed=seed, **kw)


def train(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])


def test_conv_weights_selects_convs_only():
    m = tiny_net()
    assert [n for n, _ in named_conv_weights(m)] == ["0.weight", "3.weight"]
    assert conv_weights(m)[1] is m[3].weight


@pytest.mark.parametrize("method", ["bc", "r", "sr"])
def test_quantized_params_on_grid_after_construction_and_steps(method):
    m = tiny_net()
    opt = make(method, m)
    for step in range(3):
        for p in conv_weights(m):
            assert torch.equal(p.abs(), torch.full_like(p, 0.1)), (method, step)
        train(m, opt, batches(1, step))
    assert not torch.equal(m[6].weight.abs(), torch.full_like(m[6].weight, 0.1))  # linear stays float


@pytest.mark.parametrize("base", ["adam", "sgd", "adamw"])
def test_float_is_bit_for_bit_the_base_optimizer(base):
    mk = {"adam": lambda p: torch.optim.Adam(p, lr=0.01), "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
          "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)}[base]
    a, b = tiny_net(), tiny_net()
    train(a, mk(a.parameters()), batches(10))
    train(b, QuantizedOptimizer(mk(b.parameters()), "float", Grid.binary(1.0)), batches(10))
    assert torch.equal(flat(a), flat(b))


def test_r_small_updates_never_move():
    w = nn.Parameter(quantize(torch.randn(10_000), Grid.uniform(0.5)))
    w0 = w.detach().clone()
    opt = QuantizedOptimizer(torch.optim.SGD([w], lr=0.1), "r", Grid.uniform(0.5), diagnostics=True, params=[w])
    for _ in range(20):
        w.grad = torch.empty_like(w).uniform_(-2.4, 2.4)  # lr*|g| <= 0.24 < Δ/2
        opt.step()
        assert torch.equal(w.detach(), w0)
    d = opt.diagnostics()["param0"]
    assert d["changed"] == 0.0 and d["stalled"] > 0.99


def test_sr_mean_move_equals_sgd_step():
    n, lr, g, delta = 200_000, 0.1, 0.7, 0.25
    w = nn.Parameter(torch.zeros(n))
    opt = QuantizedOptimizer(torch.optim.SGD([w], lr=lr), "sr", Grid.uniform(delta), seed=3, diagnostics=True, params=[w])
    w.grad = torch.full_like(w, g)
    opt.step()
    p = lr * g / delta  # moves one level down with probability p
    assert set(w.detach().unique().tolist()) <= {0.0, -delta}
    sd = delta * math.sqrt(p * (1 - p) / n)
    assert abs(w.detach().double().mean().item() - (-lr * g)) < Z * sd
    assert abs(opt.diagnostics()["param0"]["changed"] - p) < Z * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("bc_rounding", ["stochastic", "nearest"])
def test_bc_on_a_quadratic_reaches_the_minimizer(bc_rounding):
    """F(w) = |w - w*|^2/2 with w* off the grid; SGD with lr_t = 1/(t+1) (Theorem 4's rates, mu = 1)."""
    delta, steps = 0.5, 4000
    w_star = torch.tensor([0.3, -0.85, 0.1, 1.2]) * delta * 2
    w = nn.Parameter(torch.zeros(4))
    base = torch.optim.SGD([w], lr=1.0)
    opt = QuantizedOptimizer(base, "bc", Grid.uniform(delta), seed=1, bc_rounding=bc_rounding, params=[w])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (t + 1))
    avg_wb = torch.zeros(4)
    for t in range(steps):
        w.grad = w.detach() - w_star  # gradient at the quantized weights
        opt.step()
        sched.step()
        avg_wb += (w.detach() - avg_wb) / (t + 1)
    if bc_rounding == "stochastic":  # Corollary 1: the latent weights converge to w*
        assert torch.allclose(opt.latents[0], w_star, atol=0.05 * delta)
    # with either rounding the forward weights average to w* (the latent hovers at a boundary for Q_d)
    assert torch.allclose(avg_wb, w_star, atol=0.05 * delta)


@pytest.mark.parametrize("method", ["bc", "r", "sr"])
def test_resume_is_bit_identical(method):
    data = batches(12)
    ref = tiny_net()
    train(ref, make(method, ref, bc_rounding="stochastic" if method == "bc" else "nearest"), data)

    m = tiny_net()
    opt = make(method, m, bc_rounding="stochastic" if method == "bc" else "nearest")
    sched = torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)
    train(m, opt, data[:5])
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    m2 = tiny_net(seed=99)  # different init: everything must come from the checkpoint
    opt2 = make(method, m2, bc_rounding="stochastic" if method == "bc" else "nearest")
    m2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    train(m2, opt2, data[5:])
    assert torch.equal(flat(ref), flat(m2))
    del sched


def test_replicas_with_the_same_seed_stay_identical():
    a, b, c = tiny_net(), tiny_net(), tiny_net()
    train(a, make("sr", a, seed=5), batches(6))
    train(b, make("sr", b, seed=5), batches(6))
    train(c, make("sr", c, seed=6), batches(6))
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))


def test_lr_scheduler_and_closure():
    m = tiny_net()
    opt = make("sr", m)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    x, y = batches(1)[0]

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and loss.item() > 0
    sched.step()
    assert math.isclose(opt.param_groups[0]["lr"], 0.001) and opt.base.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_per_layer_grid_callable_and_diagnostics():
    m = tiny_net()
    scales = {id(p): p.detach().abs().mean().item() for p in conv_weights(m)}
    opt = QuantizedOptimizer(torch.optim.Adam(m.parameters(), lr=0.01), "bc",
                             lambda p: Grid.binary(scales[id(p)]), params=named_conv_weights(m), diagnostics=True)
    assert opt.grids[0].scale != opt.grids[1].scale
    train(m, opt, batches(2))
    d = opt.diagnostics()
    assert set(d) == {"0.weight", "3.weight"} and all(0 <= v["changed"] <= 1 and v["stalled"] is None for v in d.values())
    assert "bc" in repr(opt)


def test_nan_gradient_refused_and_nothing_changes():
    m = tiny_net()
    opt = make("sr", m)
    x, y = batches(1)[0]
    nn.functional.cross_entropy(m(x), y).backward()
    before = flat(m).clone()
    m[3].weight.grad[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"3\.weight.*nothing was updated"):
        opt.step()
    assert torch.equal(before, flat(m)) and opt.step_count == 0 and len(opt.state) == 0


def test_bad_arguments():
    m = tiny_net()
    adam = torch.optim.Adam(m.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="method='xr'"):
        QuantizedOptimizer(adam, "xr", Grid.binary())
    with pytest.raises(TypeError, match="Grid"):
        QuantizedOptimizer(adam, "sr", 0.5)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        QuantizedOptimizer(m, "sr", Grid.binary())
    with pytest.raises(ValueError, match="not in the base optimizer"):
        QuantizedOptimizer(torch.optim.Adam(m[6].parameters()), "sr", Grid.binary(), params=conv_weights(m))
    with pytest.raises(ValueError, match="bc_rounding"):
        QuantizedOptimizer(adam, "bc", Grid.binary(), bc_rounding="floor")


def test_load_state_dict_mismatches():
    m = tiny_net()
    sd = make("sr", m).state_dict()
    with pytest.raises(ValueError, match="method='sr'"):
        make("bc", tiny_net()).load_state_dict(sd)
    with pytest.raises(ValueError, match="no 'qtrain' entry"):
        make("sr", tiny_net()).load_state_dict(torch.optim.Adam(m.parameters()).state_dict())
    with pytest.raises(ValueError, match="bc_rounding='nearest'"):
        make("bc", tiny_net(), bc_rounding="stochastic").load_state_dict(make("bc", tiny_net()).state_dict())
    other = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 1))  # two conv weights, other shapes
    with pytest.raises(ValueError, match=r"1\.weight has shape \(4, 4, 3, 3\), this optimizer's \(4, 4, 1, 1\)"):
        make("sr", other).load_state_dict(sd)
    with pytest.raises(ValueError, match="checkpoint quantizes 2 tensors, this optimizer 1"):
        QuantizedOptimizer(torch.optim.Adam(m.parameters()), "sr", Grid.binary(0.1), params=[m[0].weight]).load_state_dict(sd)


def test_failed_step_leaves_weights_on_the_grid():
    m = tiny_net()
    opt = make("bc", m, check_finite=False, diagnostics=True)  # keeps the weights before each step
    before = [p.detach().clone() for p in conv_weights(m)]
    latents = [t.clone() for t in opt.latents]
    x, y = batches(1)[0]
    nn.functional.cross_entropy(m(x), y).backward()
    m[3].weight.grad[0, 0, 0, 0] = float("nan")  # NaN reaches the latent weights, quantize refuses
    with pytest.raises(ValueError, match="NaN"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, conv_weights(m)))
    assert all(torch.equal(a, b) for a, b in zip(latents, opt.latents)) and opt.step_count == 0


@pytest.mark.parametrize("method", ["bc", "sr", "r"])
def test_lean_step_copies_nothing_and_matches_the_tracked_step(method):
    # same seed, same data: the lean step (no copies) and the diagnostics step give the same bits
    runs = []
    for track in (False, True):
        m = tiny_net()
        opt = make(method, m, diagnostics=track)
        train(m, opt, batches(3))
        runs.append([p.detach().clone() for p in conv_weights(m)] + [t.clone() for t in opt.latents])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    with pytest.raises(ValueError, match=r"diagnostics=True"):
        make(method, tiny_net()).diagnostics()
    m = tiny_net()
    opt = make(method, m, check_finite=False)
    x, y = batches(1)[0]
    nn.functional.cross_entropy(m(x), y).backward()
    m[3].weight.grad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):  # refused; without diagnostics nothing is restored
        opt.step()
    assert opt.step_count == 0


def test_float_refuses_nan_gradients_too():
    m = tiny_net()
    opt = make("float", m)
    x, y = batches(1)[0]
    nn.functional.cross_entropy(m(x), y).backward()
    m[6].weight.grad.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step()


def test_default_params_are_linear_and_conv_weights_only():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    opt = QuantizedOptimizer(torch.optim.Adam(m.parameters(), lr=0.01), "sr", Grid.binary(1.0))
    assert [p.ndim for p in opt.qparams] == [4, 2] and opt.qparams[0] is m[0].weight and opt.qparams[1] is m[3].weight
    assert opt.names == ["param0", "param4"]  # positions in the base optimizer: conv w, conv b, bn w, bn b, linear w
    m(torch.randn(8, 1, 8, 8)).sum().backward()
    opt.step()
    assert set(m[0].weight.unique().tolist()) <= {-1.0, 1.0} and set(m[3].weight.unique().tolist()) <= {-1.0, 1.0}
    for p in (m[0].bias, m[1].weight, m[1].bias, m[3].bias):  # biases and batch-norm stay float
        assert not set(p.detach().unique().tolist()) <= {-1.0, 1.0}
    explicit = QuantizedOptimizer(torch.optim.Adam(m.parameters(), lr=0.01), "sr", Grid.binary(1.0), params=[m[3].bias])
    assert explicit.qparams == [m[3].bias]  # an explicit list still overrides
    with pytest.raises(ValueError, match="nothing to quantize"):
        QuantizedOptimizer(torch.optim.SGD([torch.zeros(5, requires_grad=True)], lr=0.1), "bc", Grid.binary(1.0))
    QuantizedOptimizer(torch.optim.SGD([torch.zeros(5, requires_grad=True)], lr=0.1), "float", Grid.binary(1.0))
    mlp = nn.Sequential(nn.Linear(4, 3))  # the paper's idiom on a model without convs: an empty list
    with pytest.raises(ValueError, match="nothing to quantize: params is empty"):
        QuantizedOptimizer(torch.optim.Adam(mlp.parameters()), "sr", Grid.binary(1.0), params=named_conv_weights(mlp))
    assert QuantizedOptimizer(torch.optim.Adam(mlp.parameters()), "float", Grid.binary(1.0), params=[]).qparams == []
