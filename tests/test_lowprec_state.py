"""Low-precision optimizer state (state_dtype): float32 state equals torch and qtrain's own step bit
for bit, the state dtype is kept (also through a checkpoint), the SR write-back is unbiased, no
whole-size float32 temporary exists, the result does not depend on the chunking, refusals."""
import io
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import qtrain.lowprec_state as lps
from qtrain import Grid, QuantizedOptimizer
from qtrain.dynamic import DynamicGrid

BASES = {
    "adam-l2": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1),
    "adamw-amsgrad": lambda ps: torch.optim.AdamW(ps, lr=1e-2, amsgrad=True),
    "adamw-maximize": lambda ps: torch.optim.AdamW(ps, lr=1e-2, maximize=True),
    "sgd-nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-dampening": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1),
    "sgd-plain": lambda ps: torch.optim.SGD(ps, lr=0.1),
}


def _net(dtype=torch.float32):
    torch.manual_seed(0)  # the first weight (120,000 entries) spans two chunks
    return torch.nn.Sequential(torch.nn.Linear(300, 400), torch.nn.Tanh(), torch.nn.Linear(400, 3)).to(dtype)


def _train(net, opt, steps=4, start=0):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 300, generator=g), torch.randint(0, 3, (64,), generator=g)
    for t in range(start, start + steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[t % 2::2].to(net[0].weight.dtype)).float(), y[t % 2::2]).backward()
        opt.step()


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("base", list(BASES))
def test_float32_state_is_torchs_step(base):
    a, b = _net(), _net()
    ref = BASES[base](a.parameters())
    opt = QuantizedOptimizer(BASES[base](b.parameters()), "float", Grid.uniform(1.0), state_dtype=torch.float32)
    _train(a, ref)
    _train(b, opt)
    assert _same(a, b)


@pytest.mark.parametrize("base", ["adam-l2", "adamw-amsgrad", "sgd-nesterov"])
@pytest.mark.parametrize("method,grid,dtype", [("sr", Grid.uniform(2**-6), torch.float32),
                                               ("sr", Grid.float("bfloat16"), torch.bfloat16),
                                               ("r", Grid.uniform(2**-6, bits=8), torch.bfloat16),
                                               ("bc", Grid.ternary(2**-4), torch.float16)])
def test_float32_state_is_qtrains_own_step(base, method, grid, dtype):
    a, b = _net(dtype), _net(dtype)
    oa = QuantizedOptimizer(BASES[base](a.parameters()), method, grid, seed=2)
    ob = QuantizedOptimizer(BASES[base](b.parameters()), method, grid, seed=2, state_dtype=torch.float32)
    _train(a, oa)
    _train(b, ob)
    assert _same(a, b)
    assert all(torch.equal(x, y) for x, y in zip(oa.latents, ob.latents))


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method,grid", [("sr", Grid.float("bfloat16")), ("bc", DynamicGrid.ternary())])
def test_state_dtype_is_kept_and_resume_is_bit_identical(state_dtype, method, grid):
    def build(net):
        return QuantizedOptimizer(torch.optim.AdamW(net.parameters(), lr=1e-2), method, grid,
                                  params=[net[0].weight], seed=5, state_dtype=state_dtype)

    net = _net(torch.bfloat16)
    opt = build(net)
    _train(net, opt, 3)
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "opt": opt.state_dict()}, buf)
    _train(net, opt, 3, start=3)
    moments = [t for st in opt.state.values() for k, t in st.items() if k != "step"]
    assert len(moments) == 2 * 4 and all(t.dtype == state_dtype for t in moments)

    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    net2 = _net(torch.bfloat16)
    net2.load_state_dict(ck["model"])
    opt2 = build(net2)
    opt2.load_state_dict(ck["opt"])
    assert all(t.dtype == state_dtype for st in opt2.state.values() for k, t in st.items() if k != "step")
    _train(net2, opt2, 3, start=3)
    assert _same(net, net2)
    with pytest.raises(ValueError, match="state_dtype"):
        QuantizedOptimizer(torch.optim.AdamW(net2.parameters()), method, grid, params=[net2[0].weight],
                           state_dtype=torch.float32).load_state_dict(ck["opt"])


def test_result_does_not_depend_on_the_chunking(monkeypatch):
    nets = []
    for chunk in (lps.CHUNK, 1000):
        monkeypatch.setattr(lps, "CHUNK", chunk)
        net = _net(torch.bfloat16)
        _train(net, QuantizedOptimizer(torch.optim.Adam(net.parameters(), lr=1e-2), "sr", Grid.float("bfloat16"),
                                       seed=1, state_dtype=torch.bfloat16))
        nets.append(net)
    assert _same(*nets)


def _z_check(stored, exact, ulp, decay, n, z=5.0):
    r"""Each stored entry is the exact value plus :math:`\sum_k d^{t-k}\varepsilon_k`, independent
    zero-mean roundings with :math:`|\varepsilon_k| \le` ulp, so Var <= ulp^2 / (4 (1 - d^2))... and
    the mean of n entries has std <= ulp / (2 sqrt((1 - d^2) n)). |z| > 5: false alarm < 6e-7 per check."""
    bound = z * ulp / (2 * math.sqrt((1 - decay**2) * n))
    assert abs(stored.double().mean().item() - exact) <= bound, (stored.double().mean().item(), exact, bound)
    return bound


def test_stochastic_write_back_is_unbiased():
    """SGD momentum in bfloat16 with a constant gradient c that bfloat16 cannot hold: the stored
    buffer's mean follows the exact recursion b_t = 0.9 b_{t-1} + c; round-to-nearest would sit a
    fixed fraction of an ulp away (checked: far beyond the test's bound)."""
    n, c, mu = 1 << 17, 1.0 + 2**-10 + 2**-12, 0.9
    w = torch.nn.Parameter(torch.zeros(n))
    opt = QuantizedOptimizer(torch.optim.SGD([w], lr=1e-3, momentum=mu), "float", Grid.uniform(1.0), seed=0,
                             state_dtype=torch.bfloat16)
    exact = nearest = 0.0
    for t in range(6):
        w.grad = torch.full((n,), c)
        opt.step()
        exact = c if t == 0 else mu * exact + c
        f32 = torch.tensor(c) if t == 0 else torch.tensor(nearest).mul(mu).add(c)  # the same step, rounded to nearest
        nearest = f32.to(torch.bfloat16).item()
        buf = opt.state[w]["momentum_buffer"]
        assert buf.dtype == torch.bfloat16 and (t > 0 or len(buf.unique()) == 2)  # first: c's two neighbours
        ulp = 2.0 ** (math.floor(math.log2(exact)) - 7)
        bound = _z_check(buf, exact, ulp, mu, n)
    assert abs(nearest - exact) > 4 * bound


def test_adam_moments_are_unbiased():
    n, c, b1, b2 = 1 << 17, 0.3 + 2**-13, 0.9, 0.99
    w = torch.nn.Parameter(torch.zeros(n))
    opt = QuantizedOptimizer(torch.optim.Adam([w], lr=1e-3, betas=(b1, b2)), "sr", Grid.uniform(2**-8), seed=3,
                             state_dtype=torch.bfloat16)
    for t in range(1, 6):
        w.grad = torch.full((n,), c)
        opt.step()
        for key, beta, target in (("exp_avg", b1, c), ("exp_avg_sq", b2, c * c)):
            exact = (1 - beta**t) * target
            _z_check(opt.state[w][key], exact, 2.0 ** (math.floor(math.log2(exact)) - 7), beta, n)


class _Float32Allocations(TorchDispatchMode):
    """The largest float32 tensor any non-view op creates (storages that existed before are skipped)."""

    def __init__(self, existing):
        super().__init__()
        self.existing, self.largest = existing, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and not func.is_view \
                    and t.untyped_storage().data_ptr() not in self.existing:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, None])
def test_no_whole_size_float32_temporary(state_dtype):
    """With bf16 weights, SR and bf16 state no float32 tensor beyond one chunk is made; the default
    (float32 state) path makes whole-size copies -- the test can tell them apart."""
    w = torch.nn.Parameter(torch.randn(1 << 18, dtype=torch.bfloat16))
    opt = QuantizedOptimizer(torch.optim.AdamW([w], lr=1e-3), "sr", Grid.float("bfloat16"), state_dtype=state_dtype)
    for _ in range(2):
        w.grad = torch.randn(w.shape, dtype=torch.bfloat16)
        existing = {t.untyped_storage().data_ptr() for t in [w, w.grad] + [v for v in opt.state[w].values()]} \
            if opt.state else {w.untyped_storage().data_ptr(), w.grad.untyped_storage().data_ptr()}
        with _Float32Allocations(existing) as mode:
            opt.step()
    if state_dtype is None:
        assert mode.largest >= w.numel()
    else:
        assert mode.largest <= lps.CHUNK


@pytest.mark.parametrize("kwargs,match", [
    (dict(base=lambda ps: torch.optim.RMSprop(ps)), "SGD, Adam or AdamW"),
    (dict(state_dtype=torch.float8_e4m3fn), "float8 moments underflow"),
    (dict(state_dtype=torch.int8), "not supported"),
    (dict(diagnostics=True), "diagnostics"),
    (dict(method="sr", grid=DynamicGrid.ternary()), "method='bc'"),
    (dict(base=lambda ps: torch.optim.Adam(ps, fused=True)), "fused"),
])
def test_refusals_are_one_line(kwargs, match):
    net = _net()
    base = kwargs.pop("base", lambda ps: torch.optim.Adam(ps))(net.parameters())
    args = dict(method="sr", grid=Grid.uniform(2**-6), state_dtype=torch.bfloat16)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as e:
        QuantizedOptimizer(base, **args)
    assert "\n" not in str(e.value)


def test_sparse_gradients_are_refused_in_one_line():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = QuantizedOptimizer(torch.optim.SGD(emb.parameters(), lr=0.1), "float", Grid.uniform(1.0),
                             state_dtype=torch.bfloat16)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()
