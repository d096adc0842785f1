"""Dynamic (BitNet-style) grids: the rules, the step, unclipped latents, exact resume."""
import doctest
import io
import math

import pytest
import torch

import qtrain.dynamic as dynamic_mod
from qtrain import Grid, QuantizedOptimizer, quantize
from qtrain.dynamic import DynamicGrid


def test_rules_follow_the_formulas():
    torch.manual_seed(0)
    w = torch.randn(1000) * 0.1
    mean, mx = w.abs().double().mean().item(), w.abs().max().item()
    g = DynamicGrid.ternary()(w)
    assert g.kind == "ternary" and math.isclose(g.scale, mean, rel_tol=1e-6)
    assert math.isclose(DynamicGrid.binary("absmax")(w).scale, mx, rel_tol=1e-7)
    u = DynamicGrid.uniform(4, "absmax")(w)
    assert u.bits == 4 and math.isclose(u.delta, mx / 7, rel_tol=1e-7)
    assert math.isclose(DynamicGrid.uniform(3, "absmean")(w).delta, 2 * mean / math.sqrt(3), rel_tol=1e-6)
    # BitNet b1.58: Q_d on the ternary grid is RoundClip(w / s, -1, 1) * s
    q = quantize(w, g)
    ref = torch.clamp(torch.round(w.double() / g.scale), -1, 1) * g.scale
    assert torch.allclose(q.double(), ref, rtol=1e-6, atol=0)
    assert DynamicGrid.ternary()(torch.zeros(5)).scale == 1e-12  # the floor


def test_low_precision_scales_hold_their_levels():
    w = torch.randn(300, dtype=torch.bfloat16)
    s = DynamicGrid.ternary()(w).scale
    assert float(torch.tensor(s).to(torch.bfloat16)) == s
    d = DynamicGrid.uniform(6, "absmax").grid(w).delta
    assert d == 2.0 ** round(math.log2(d))


@pytest.mark.parametrize("bad", [dict(kind="quaternary"), dict(kind="ternary", stat="rms"),
                                 dict(kind="uniform", bits=1), dict(kind="uniform", bits=None),
                                 dict(kind="ternary", bits=4), dict(kind="ternary", clip=0.5),
                                 dict(kind="ternary", clip="2")])
def test_bad_rules_are_refused_in_one_line(bad):
    with pytest.raises(ValueError) as e:
        DynamicGrid(**bad)
    assert "\n" not in str(e.value)


def test_nan_weights_are_refused():
    with pytest.raises(ValueError, match="NaN or inf"):
        DynamicGrid.ternary()(torch.tensor([1.0, float("nan")]))


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.Tanh(), torch.nn.Linear(24, 3)).to(dtype)


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g)


def _train(net, opt, steps, start=0):
    x, y = _data()
    for t in range(start, start + steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[t % 4::4].to(net[0].weight.dtype)).float(), y[t % 4::4]).backward()
        opt.step()


def test_bc_step_recomputes_the_scale_and_keeps_latents_unclipped():
    net = _net()
    rule = DynamicGrid.ternary()
    opt = QuantizedOptimizer(torch.optim.Adam(net.parameters(), lr=0.02), "bc", rule,
                             params=[net[0].weight, net[2].weight])
    for _ in range(5):
        _train(net, opt, 1)
        for p, lat, g in zip(opt.qparams, opt.latents, opt.grids):
            assert g == rule(lat)
            assert torch.equal(p, quantize(lat, g))
    assert any(float(lat.abs().max()) > 1.5 * g.scale for lat, g in zip(opt.latents, opt.grids))


def test_clip_multiple_bounds_the_latents():
    net = _net()
    opt = QuantizedOptimizer(torch.optim.Adam(net.parameters(), lr=0.05), "bc", DynamicGrid.ternary(clip=1.5),
                             params=[net[0].weight])
    _train(net, opt, 6)
    assert float(opt.latents[0].abs().max()) <= 1.5 * opt.grids[0].scale * (1 + 1e-6)


@pytest.mark.parametrize("clip", [None, 1])
def test_unclipped_latents_let_the_scale_grow(clip):
    """A loss that pushes every weight outward by lr per step: with unclipped latents the absmean
    scale grows by exactly that; clipped at the current scale (BinaryConnect's clip of the fixed-scale
    grid), the tails are cut and the scale first shrinks -- the issue's complaint."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(200))
    opt = QuantizedOptimizer(torch.optim.SGD([w], lr=0.05), "bc", DynamicGrid.ternary(clip=clip))
    sign, s0, scales = opt.latents[0].sign().clone(), opt.grids[0].scale, []
    for _ in range(20):
        opt.zero_grad()
        (-(w * sign).sum()).backward()
        opt.step()
        scales.append(opt.grids[0].scale)
        if clip is not None:
            assert float(opt.latents[0].abs().max()) <= scales[-1] * (1 + 1e-6)
    if clip is None:
        assert math.isclose(scales[-1], s0 + 20 * 0.05, rel_tol=1e-5)
    else:
        assert scales[1] < 0.8 * s0


@pytest.mark.parametrize("method,rule", [("bc", DynamicGrid.ternary()), ("bc", DynamicGrid.uniform(4, "absmean")),
                                         ("sr", DynamicGrid.uniform(4, "absmax")), ("r", DynamicGrid.binary())])
def test_resume_is_bit_identical(method, rule):
    net = _net()
    grids = {"a": rule, "b": Grid.uniform(2**-5, bits=3)}
    opt = QuantizedOptimizer(torch.optim.Adam(net.parameters(), lr=0.02), method, grids,
                             params=[("a", net[0].weight), ("b", net[2].weight)], seed=3)
    _train(net, opt, 3)
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "opt": opt.state_dict()}, buf)
    _train(net, opt, 3, start=3)

    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    net2 = _net()
    net2.load_state_dict(ck["model"])
    # built with static grids and another seed: the checkpoint's rules, grids and seed win
    opt2 = QuantizedOptimizer(torch.optim.Adam(net2.parameters(), lr=0.02), method, Grid.ternary(0.1),
                              params=[("a", net2[0].weight), ("b", net2[2].weight)], seed=9)
    opt2.load_state_dict(ck["opt"])
    assert opt2.dynamic == {0: rule}
    _train(net2, opt2, 3, start=3)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt.grids == opt2.grids and all(torch.equal(a, b) for a, b in zip(opt.latents, opt2.latents))


def test_bfloat16_parameters_train_on_dynamic_ternary():
    net = _net(torch.bfloat16)
    opt = QuantizedOptimizer(torch.optim.AdamW(net.parameters(), lr=0.02), "bc", DynamicGrid.ternary(),
                             params=[net[0].weight])
    _train(net, opt, 3)
    w, s = net[0].weight, opt.grids[0].scale
    assert w.dtype == torch.bfloat16 and set(w.float().unique().tolist()) <= {-s, 0.0, s}


def test_assigning_a_grid_between_steps_takes_effect():
    net = _net()
    opt = QuantizedOptimizer(torch.optim.SGD(net.parameters(), lr=0.01), "sr", Grid.uniform(2**-4),
                             params=[net[0].weight])
    opt.grids[0] = Grid.uniform(2**-6, bits=4)
    _train(net, opt, 1)
    assert opt.state_dict()["qtrain"]["grids"][0]["bits"] == 4
    assert net[0].weight.abs().max() <= 8 * 2**-6


def test_docstring_examples():
    r = doctest.testmod(dynamic_mod)
    assert r.attempted > 0 and r.failed == 0
