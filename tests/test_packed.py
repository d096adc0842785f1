"""The one-call paths for small tensors (qtrain._packed, quantize's record path, the power-of-two
division) compute exactly the bits of the per-tensor paths they replace."""
import pytest
import torch

from qtrain import Grid, QuantizedOptimizer, quantize
from qtrain import _kernel
from qtrain._packed import grads_finite
from qtrain.rng import resolve_key
from qtrain.rounding import _eager, quantize_into

needs_kernel = pytest.mark.skipif(_kernel.rec_fns() is None, reason="no C compiler: the packed path is off")

GRIDS = [Grid.uniform(2**-5, bits=4), Grid.uniform(0.03, bits=6), Grid.uniform(2**-3), Grid.uniform(0.07),
         Grid.binary(0.05)]


def _bits(t):
    return t.detach().contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def _run(method, grid, bc_rounding, packed, steps=3):
    g = torch.Generator().manual_seed(1)
    shapes = [(8, 3, 3, 3), (140_000,), (10,), (16, 4, 3), (5,)]  # 140k: over the packed size, per-tensor path
    params = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in shapes]
    params.append(torch.nn.Parameter(torch.randn(7, generator=g, dtype=torch.float64) * 0.1))  # not float32
    params.append(torch.nn.Parameter(torch.randn(3, 4, generator=g).t()))  # not contiguous
    opt = QuantizedOptimizer(torch.optim.Adam(params, lr=0.02), method, grid, params=params, seed=7,
                             bc_rounding=bc_rounding)
    if not packed:
        opt._packed.run = lambda *a, **k: set()
    out = []
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05
        opt.step()
        out.append([_bits(p).clone() for p in params] + [_bits(lat).clone() for lat in opt.latents])
    return out, opt


@needs_kernel
@pytest.mark.parametrize("grid", GRIDS, ids=repr)
@pytest.mark.parametrize("method,bc_rounding", [("r", "nearest"), ("sr", "nearest"), ("bc", "nearest"),
                                                 ("bc", "stochastic")])
def test_packed_step_equals_per_tensor_calls(method, grid, bc_rounding):
    fast, opt = _run(method, grid, bc_rounding, packed=True)
    slow, _ = _run(method, grid, bc_rounding, packed=False)
    assert opt._packed.index == [0, 2, 3, 4]  # float64, transposed and large tensors take the per-tensor path
    for a, b in zip(fast, slow):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


@needs_kernel
def test_packed_rebuilds_when_storage_changes():
    p = torch.nn.Parameter(torch.randn(50))
    opt = QuantizedOptimizer(torch.optim.SGD([p], lr=0.1), "sr", Grid.uniform(2**-4), seed=0, params=[p])
    p.grad = torch.randn(50)
    opt.step()
    p.data = torch.randn(50)  # new storage: the cached record must not write to the old one
    old = opt._packed.key
    opt.step()
    assert opt._packed.key != old and opt._packed.index == [0]
    assert torch.equal((p / 2**-4).round() * 2**-4, p)  # the new storage is on the grid


@needs_kernel
def test_packed_nan_raises():
    p = torch.nn.Parameter(torch.randn(40))
    opt = QuantizedOptimizer(torch.optim.SGD([p], lr=0.1), "r", Grid.uniform(2**-4), check_finite=False, params=[p])
    p.grad = torch.full((40,), float("nan"))
    with pytest.raises(ValueError, match="without a finite level"):
        opt.step()


@pytest.mark.parametrize("grid", GRIDS + [Grid.uniform(2**-120)], ids=repr)
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_small_quantize_and_pow2_division_match_eager(grid, rounding):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1000, generator=g) * torch.logspace(-40, 38, 1000)  # tiny (subnormal quotients) to huge
    x = x[(x / grid.delta).isfinite() & (x.abs() < 1e30)] if grid.kind == "uniform" and not grid.bounded else x
    got = quantize(x, grid, rounding, generator=11)
    want = _eager(x.contiguous(), grid, rounding == "stochastic", resolve_key(11))
    assert torch.equal(_bits(got), _bits(want))
    assert torch.equal(_bits(got), _bits(quantize_into(x, None, grid, rounding == "stochastic", resolve_key(11))))


def test_grads_finite():
    for bad in (float("nan"), float("inf"), -float("inf")):
        for n in (1, 70_000, 200_000):
            for pos in (0, n - 1):
                g = torch.zeros(n)
                g[pos] = bad
                assert not grads_finite([torch.zeros(3), None, g])
    # finite gradients whose norm overflows, float64 and sparse ones (the torch path)
    assert grads_finite([torch.full((10,), 3e38), torch.full((5,), 1e300, dtype=torch.float64),
                         torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,))])
    assert not grads_finite([torch.tensor([1.0, float("nan")], dtype=torch.float64)])
    assert not grads_finite([torch.sparse_coo_tensor([[1]], [float("inf")], (4,))])
    # uncoalesced: two finite entries at one index sum to inf, as the base step would sum them
    assert not grads_finite([torch.sparse_coo_tensor([[2, 2]], [3e38, 3e38], (4,))])
    assert grads_finite([torch.sparse_coo_tensor([[2, 2]], [3e38, -3e38], (4,))])
