"""QuantizedOptimizer in code written outside qtrain: resume with any grid, sparse gradients,
copy/pickle, closure optimizers, float16/bfloat16 parameters, integer types, dict grids.
Statistical checks: fixed seeds, |z| > 5 (two-sided false-alarm rate 5.7e-7 per check)."""
import copy
import io
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from qtrain import Grid, QuantizedOptimizer, named_conv_weights

from test_optim import batches, flat, tiny_net, train

Z = 5.0


def per_layer(p):  # the per-layer grid the docs show: recomputed from whatever weights p holds
    return Grid.binary(p.abs().mean().item())


def build(m, method, grid=per_layer, seed=0, **kw):
    return QuantizedOptimizer(torch.optim.Adam(m.parameters(), lr=0.01), method, grid,
                              params=named_conv_weights(m), seed=seed, **kw)


def checkpoint(m, opt):
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# -- 1: resume restores grids, seed, step and latents --------------------------------------------
def per_layer_uniform(p):  # after quantization the std differs a lot: another grid entirely
    return Grid.uniform(p.std().item() / 2, bits=3)


@pytest.mark.parametrize("grid", [per_layer, per_layer_uniform], ids=["binary-mean", "uniform-std"])
@pytest.mark.parametrize("method", ["bc", "r", "sr"])
def test_resume_with_a_per_layer_grid_and_another_seed_is_bit_identical(method, grid):
    kw = {"bc_rounding": "stochastic", "grid": grid} if method == "bc" else {"grid": grid}
    data = batches(8)
    ref = tiny_net()
    train(ref, build(ref, method, **kw), data)

    m = tiny_net()
    opt = build(m, method, **kw)
    train(m, opt, data[:3])
    ck = checkpoint(m, opt)
    m2 = tiny_net(seed=5)
    m2.load_state_dict(ck["model"])
    opt2 = build(m2, method, seed=123, **kw)  # grid recomputed from the restored (quantized) weights
    assert opt2.grids != opt.grids  # e.g. the float32 mean of ±s is not the float64 scale it came from
    opt2.load_state_dict(ck["opt"])
    assert (opt2.grids, opt2.seed, opt2.step_count) == (opt.grids, 0, 3)
    train(m2, opt2, data[3:])
    assert torch.equal(flat(ref), flat(m2))


# -- 2: sparse gradients ---------------------------------------------------------------------------
class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 8, sparse=True)
        self.head = nn.Linear(8, 3)

    def forward(self, idx):
        return self.head(self.emb(idx).mean(1))


def bag_loss(m, seed):
    g = torch.Generator().manual_seed(seed)
    idx, y = torch.randint(0, 20, (16, 4), generator=g), torch.randint(0, 3, (16,), generator=g)
    return nn.functional.cross_entropy(m(idx), y)


@pytest.mark.parametrize("method", ["float", "sr"])
def test_sparse_gradients_of_float_parameters(method):
    a, b = Bag(), Bag()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    g = Grid.uniform(2**-4)
    opt_b = QuantizedOptimizer(torch.optim.SGD(b.parameters(), lr=0.1), method, g,
                               params=[("head.weight", b.head.weight)])
    for s in range(3):
        for m, o in ((a, opt_a), (b, opt_b)):
            o.zero_grad()
            bag_loss(m, s).backward()
        assert b.emb.weight.grad.is_sparse
        opt_a.step()
        opt_b.step()
    if method == "float":  # bit for bit the base optimizer
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    else:  # the quantized head is on the grid, the sparse embedding trained in float
        w = b.head.weight.detach()
        assert torch.equal(w, torch.round(w / g.delta) * g.delta) and not torch.equal(a.emb.weight, Bag().emb.weight)
    b.emb.weight.grad = torch.sparse_coo_tensor([[1]], [[float("nan")] * 8], (50, 8), check_invariants=True)
    with pytest.raises(FloatingPointError, match=r"param_groups\[0\]\['params'\]\[0\].*nothing was updated"):
        opt_b.step()


@pytest.mark.parametrize("base", ["sgd", "sparse_adam"])
def test_sparse_gradients_of_quantized_parameters(base):
    m = Bag()
    g = Grid.uniform(2**-5)
    emb = torch.optim.SGD([m.emb.weight], lr=0.5) if base == "sgd" else torch.optim.SparseAdam([m.emb.weight], lr=0.05)
    opt = QuantizedOptimizer(emb, "sr", g, params=[("emb", m.emb.weight)], seed=1)
    before = m.emb.weight.detach().clone()
    opt.zero_grad()
    bag_loss(m, 0).backward()
    opt.step()
    w = m.emb.weight.detach()
    assert torch.equal(w, torch.round(w / g.delta) * g.delta)  # on the grid
    assert torch.equal(w[20:], before[20:])  # rows outside the batch have no gradient entries: unchanged
    assert not torch.equal(w[:20], before[:20])


# -- 3: copy and pickle --------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("method", ["bc", "sr"])
def test_deepcopy_and_pickle_give_an_independent_working_optimizer(how, method):
    data = batches(6)
    m = tiny_net()
    opt = build(m, method)
    train(m, opt, data[:2])
    m2, opt2 = copy.deepcopy((m, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((m, opt)))
    assert opt2.qparams[0] is m2[0].weight and opt2.base.param_groups[0]["params"][0] is m2[0].weight
    snapshot = flat(m).clone()
    train(m2, opt2, data[2:])  # the copy trains ...
    assert torch.equal(flat(m), snapshot) and opt.step_count == 2  # ... and the original does not move
    train(m, opt, data[2:])
    assert torch.equal(flat(m), flat(m2)) and opt2.step_count == 6


def test_pickle_with_an_lr_scheduler_attached():
    """A scheduler wraps ``opt.step`` on the instance; like torch's optimizers, the pickle leaves it out."""
    m = tiny_net()
    opt = build(m, "sr")
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    train(m, opt, batches(1))
    sched.step()
    m2, opt2 = pickle.loads(pickle.dumps((m, opt)))
    train(m2, opt2, batches(2)[1:])
    assert opt2.step_count == 2


def test_shallow_copy_shares_base_and_parameters_but_not_its_counters():
    m = tiny_net()
    opt = build(m, "sr")
    shallow = copy.copy(opt)
    assert shallow.base is opt.base and shallow.qparams[0] is opt.qparams[0] and shallow.grids is not opt.grids
    train(m, shallow, batches(1))
    assert (shallow.step_count, opt.step_count) == (1, 0)
    assert torch.equal(m[0].weight.abs(), torch.full_like(m[0].weight, opt.grids[0].scale))


# -- 4: closure optimizers -----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["bc", "r", "sr"])
def test_lbfgs_is_refused_under_quantized_methods(method):
    m = tiny_net()
    with pytest.raises(ValueError, match=f"LBFGS needs a closure .* method={method!r}; use it with method='float'"):
        QuantizedOptimizer(torch.optim.LBFGS(m.parameters()), method, Grid.binary(0.1))


def test_lbfgs_under_float_is_the_base_optimizer():
    (x, y), = batches(1)
    runs = []
    for wrap in (False, True):
        m = tiny_net()
        opt = torch.optim.LBFGS(m.parameters(), lr=0.5, max_iter=4)
        opt = QuantizedOptimizer(opt, "float", Grid.binary(0.1)) if wrap else opt

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            return loss
        for _ in range(2):
            opt.step(closure)
        runs.append(flat(m))
    assert torch.equal(*runs)


# -- 5: float16 / bfloat16 quantized parameters --------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_sr_is_unbiased_and_on_the_grid(dtype):
    """The issue's case: w = 0.5, Δ = 1/16, SGD lr 1e-3, gradients ±1 -> each weight moves one level
    (down for g = +1, up for g = -1) with probability p = lr/Δ = 0.016; rounding w + s to bfloat16
    first would lose every upward move."""
    n, lr, delta = 200_000, 1e-3, 1 / 16
    w = nn.Parameter(torch.full((n,), 0.5, dtype=dtype))
    opt = QuantizedOptimizer(torch.optim.SGD([w], lr=lr), "sr", Grid.uniform(delta), seed=2, diagnostics=True, params=[w])
    w.grad = torch.cat([torch.ones(n // 2), -torch.ones(n // 2)]).to(dtype)
    opt.step()
    assert w.dtype == dtype and w.grad.dtype == dtype
    v = w.detach().double()
    assert set(v.unique().tolist()) <= {0.5 - delta, 0.5, 0.5 + delta}
    p, sd = lr / delta, math.sqrt(lr / delta * (1 - lr / delta) / (n // 2))
    down, up = (v[: n // 2] < 0.5).double().mean().item(), (v[n // 2:] > 0.5).double().mean().item()
    assert abs(down - p) < Z * sd and abs(up - p) < Z * sd
    assert abs(opt.diagnostics()["param0"]["changed"] - p) < Z * sd


@pytest.mark.parametrize("method", ["bc", "r", "sr"])
def test_low_precision_model_stays_exactly_on_the_grid_and_resumes(method):
    data = batches(6)
    g = Grid.uniform(2**-6, bits=4)

    def run(stop=None):
        m = tiny_net().to(torch.bfloat16)
        opt = build(m, method, grid=g)
        losses = []
        for i, (x, y) in enumerate(data):
            if i == stop:
                ck = checkpoint(m, opt)
                m = tiny_net(seed=3).to(torch.bfloat16)
                m.load_state_dict(ck["model"])
                opt = build(m, method, grid=g, seed=9)
                opt.load_state_dict(ck["opt"])
                assert opt.state[m[0].weight]["exp_avg"].dtype == torch.float32  # base state stays float32
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x.bfloat16()).float(), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            for _, p in named_conv_weights(m):
                assert p.dtype == torch.bfloat16
                k = p.double() / g.delta
                assert torch.equal(k, k.round()) and k.min() >= -8 and k.max() <= 7
        if method == "bc":
            assert all(lat.dtype == torch.float32 for lat in opt.latents)
        return flat(m)

    assert torch.equal(run(), run(stop=3))


def test_low_precision_refuses_grids_it_cannot_hold():
    w = nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="bfloat16 but Grid.uniform.*cannot hold exactly; use a power-of-two"):
        QuantizedOptimizer(torch.optim.SGD([w], lr=0.1), "sr", Grid.uniform(0.1, bits=8), params=[w])
    opt = QuantizedOptimizer(torch.optim.SGD([w], lr=1000.0625), "r", Grid.uniform(2**-4), params=[w])  # unbounded: checked per step
    w.grad = torch.full_like(w, -1.0)  # w + s = 1000.0625 in float32, a level bfloat16 cannot hold
    with pytest.raises(ValueError, match="4 quantized entries of param0 .* cannot be stored exactly in torch.bfloat16"):
        opt.step()
    assert torch.equal(w.detach(), torch.zeros(4, dtype=torch.bfloat16)) and opt.step_count == 0


# -- 8: integer types; 9: grids by name -----------------------------------------------------------
def test_numpy_integer_seed_is_the_same_run():
    a, b = tiny_net(), tiny_net()
    train(a, build(a, "sr", seed=3), batches(2))
    train(b, build(b, "sr", seed=np.int64(3)), batches(2))
    assert torch.equal(flat(a), flat(b))
    for bad in (True, 1.5, "3"):
        with pytest.raises(ValueError, match="seed="):
            build(tiny_net(), "sr", seed=bad)


def test_grid_dict_keyed_by_name():
    m = tiny_net()
    grids = {"0.weight": Grid.binary(0.1), "3.weight": Grid.uniform(2**-5, bits=3)}
    opt = build(m, "r", grid=grids)
    assert opt.grids == [grids["0.weight"], grids["3.weight"]]
    assert set(m[3].weight.detach().unique().mul(32).tolist()) <= set(range(-4, 4))
    with pytest.raises(ValueError, match=r"grid dict has no entry for \['3.weight'\]"):
        build(tiny_net(), "r", grid={"0.weight": Grid.binary(0.1)})
    with pytest.raises(ValueError, match=r"entries for names not in params: \['6.weight'\]"):
        build(tiny_net(), "r", grid={**grids, "6.weight": Grid.binary(0.1)})
    with pytest.raises(TypeError, match="grid for '3.weight' is float"):
        build(tiny_net(), "r", grid={"0.weight": Grid.binary(0.1), "3.weight": 0.5})
