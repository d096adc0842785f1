"""The torch.compile'd rounding path: bit-identical to the scalar reference (float32 and
float64), one graph per dtype (no recompiles across sizes, grids, keys and roundings), and the
eager fallback. Compiles twice (float32, float64) on tiny tensors; Inductor caches on disk."""
import math
import warnings

import pytest
import torch

from qtrain import Grid, _compiled, _kernel, quantize
from qtrain.rng import resolve_key, uniform_reference
from qtrain.rounding import _eager, q_d_reference, q_s_reference

GRIDS = [Grid.uniform(2**-3), Grid.uniform(0.1), Grid.uniform(1 / 7), Grid.uniform(0.3, bits=2),
         Grid.uniform(1.0, bits=1), Grid.uniform(2**-10, bits=32), Grid.binary(1.0), Grid.binary(0.37), Grid.ternary(0.5)]
SPECIAL = [0.0, -0.0, -1e-3, 1e-3, 1e30, -1e30, 1e-40, -1e-40, 0.5, -0.5, 0.15, -0.45]
DTYPES = [torch.float32, torch.float64]
INT = {torch.float32: torch.int32, torch.float64: torch.int64}


@pytest.fixture(scope="module")
def compiled():
    if _compiled.get() is None:
        pytest.skip("torch.compile unavailable or disabled (QTRAIN_NO_COMPILE)")
    for dt in DTYPES:  # compile each dtype once, on a tiny tensor
        if _compiled.quantize_flat(torch.zeros(3, dtype=dt), GRIDS[0], True, 1) is None:
            pytest.skip(f"compilation failed for {dt} (warned); the eager path is used")
    return _compiled


def _values(g: Grid, dtype) -> list:
    gen = torch.Generator().manual_seed(0)
    d = g.delta if dtype == torch.float64 else float(torch.tensor(g.delta, dtype=torch.float32))
    ties = [(k + 0.5) * d for k in range(-6, 6)] + [k * d for k in range(-6, 6)]
    xs = (torch.randn(300, generator=gen, dtype=torch.float64) * 3).tolist() + ties + SPECIAL
    return torch.tensor(xs, dtype=dtype).tolist()  # values exactly representable in dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("g", GRIDS, ids=repr)
def test_compiled_equals_scalar_reference(compiled, g, dtype):
    xs, double = _values(g, dtype), dtype == torch.float64
    x = torch.tensor(xs, dtype=dtype)
    key = resolve_key(3)
    out, bad = compiled.quantize_flat(x, g, False, 0)
    assert bad == 0 and out.dtype == dtype
    assert out.tolist() == [q_d_reference(v, g, double) for v in xs]
    out, bad = compiled.quantize_flat(x, g, True, key)
    assert out.tolist() == [q_s_reference(v, g, uniform_reference(key, i), double) for i, v in enumerate(xs)]
    # bit for bit (sign of zero included) against the eager path, with infinities on bounded grids
    extra = [math.inf, -math.inf] if g.bounded else []
    x = torch.tensor(xs + extra, dtype=dtype)
    for stochastic in (False, True):
        out, bad = compiled.quantize_flat(x, g, stochastic, key)
        assert bad == 0
        assert torch.equal(out.view(INT[dtype]), _eager(x, g, stochastic, key).view(INT[dtype]))


def test_quantize_uses_it_without_the_kernel_and_counts_bad_inputs(compiled, monkeypatch):
    monkeypatch.setattr(_kernel, "get", lambda: None)
    x = torch.randn(64, 3)
    y = quantize(x.t(), Grid.uniform(0.1), "stochastic", generator=5)  # non-contiguous input
    assert torch.equal(y, _eager(x.t().contiguous(), Grid.uniform(0.1), True, resolve_key(5)))
    assert compiled.quantize_flat(torch.tensor([1.0, math.nan, math.inf]), Grid.uniform(0.5), True, 1)[1] == 2
    assert compiled.quantize_flat(torch.tensor([1.0, math.nan, math.inf]), Grid.uniform(0.5, bits=2), False, 1)[1] == 1
    assert compiled.quantize_flat(torch.tensor([1.0, math.nan, math.inf]), Grid.binary(1.0), False, 1)[1] == 1
    with pytest.raises(ValueError, match="unbounded"):
        quantize(torch.tensor([1.0, math.inf]), Grid.uniform(0.5), "stochastic")
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([1.0, math.nan], dtype=torch.float64), Grid.binary(1.0))


def test_no_recompiles_across_sizes_grids_keys_and_roundings(compiled):
    from torch._dynamo.utils import counters

    before = dict(counters["stats"])
    for n, g, key in [(2, GRIDS[1], 5), (1000, GRIDS[3], 2**63 + 7), (77, GRIDS[7], 9), (5000, GRIDS[8], 0)]:
        for dt in DTYPES:
            for stochastic in (False, True):
                with torch.enable_grad():
                    assert compiled.quantize_flat(torch.randn(n, dtype=dt), g, stochastic, key) is not None
    assert dict(counters["stats"]).get("unique_graphs", 0) == before.get("unique_graphs", 0)


def test_fallback_when_compilation_fails(monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(_compiled, "get", lambda: broken)
    monkeypatch.setattr(_compiled, "_broken", set())
    x = torch.randn(100, dtype=torch.float64)
    with pytest.warns(UserWarning, match="eager path"):
        y = quantize(x, Grid.uniform(0.1), "stochastic", generator=3)
    assert torch.equal(y, _eager(x, Grid.uniform(0.1), True, resolve_key(3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        quantize(x, Grid.uniform(0.1), "stochastic", generator=3)


def test_env_var_disables_compilation(monkeypatch):
    monkeypatch.setenv("QTRAIN_NO_COMPILE", "1")
    assert not _compiled.enabled() and _compiled.get.__wrapped__() is None
    monkeypatch.setenv("QTRAIN_NO_COMPILE", "0")
    assert _compiled.enabled()


@pytest.mark.parametrize("path", ["kernel", "compiled", "eager"])
def test_every_path_refuses_overflow_nan_and_inf_alike(path, monkeypatch):
    if path == "kernel" and _kernel.get() is None:
        pytest.skip("no C compiler")
    if path != "kernel":
        monkeypatch.setattr(_kernel, "get", lambda: None)
    if path == "eager":
        monkeypatch.setattr(_compiled, "get", lambda: None)
    tiny = Grid.uniform(2.0**-120)
    with pytest.raises(ValueError, match="overflows; use a bounded grid"):
        quantize(torch.tensor([1.0, 3e38]), tiny, "stochastic", generator=1)
    with pytest.raises(ValueError, match="1 NaN entry of 3"):
        quantize(torch.tensor([1.0, math.nan, 2.0]), Grid.binary(1.0))
    with pytest.raises(ValueError, match="1 infinite entry and Grid.uniform"):
        quantize(torch.tensor([1.0, -math.inf]), Grid.uniform(0.5))
    assert quantize(torch.tensor([math.inf, 3e38]), Grid.uniform(2.0**-120, bits=8)).tolist() == [127 * 2.0**-120] * 2
    x = torch.tensor([0.3, 7.0, -2.2])  # in place: out is x
    from qtrain.rounding import quantize_into
    assert quantize_into(x, x, Grid.uniform(0.5), False, 0) is x and x.tolist() == [0.5, 7.0, -2.0]


def test_step_keys_equal_the_resolved_stream_keys():
    from qtrain.rng import step_keys, stream_key

    for seed, step in [(0, 1), (2**70 + 3, 12345), (-5, 2**40)]:
        assert step_keys(seed, step, 70) == [resolve_key(stream_key(seed, step, i)) for i in range(70)]


@pytest.mark.parametrize("g", [Grid.uniform(1 / 7), Grid.uniform(0.1, bits=4), Grid.binary(0.37)], ids=repr)
def test_compiled_on_each_device_equals_eager_on_cpu_for_a_million_values(compiled, device, g):
    """Triton's default float32 division is approximate (up to 2 ulp): before the compiled function asked
    Inductor for IEEE division, 7 of 10^6 values with Δ = 1/7 rounded to the other level on an H200.
    On CPU this compares Inductor's C++ code with the eager path."""
    x = torch.randn(1_000_003, generator=torch.Generator().manual_seed(7)) * 3
    key = resolve_key(11)
    for stochastic in (False, True):
        got = compiled.quantize_flat(x.to(device), g, stochastic, key)
        assert got is not None and got[1] == 0
        assert torch.equal(got[0].cpu().view(torch.int32), _eager(x, g, stochastic, key).view(torch.int32))


def test_generated_gpu_code_is_asked_to_divide_like_eager(monkeypatch):
    config = pytest.importorskip("torch._inductor.config")
    if not hasattr(getattr(config, "eager_numerics", None), "division_rounding"):
        pytest.skip("this torch's Inductor has no eager_numerics.division_rounding option")
    seen = {}
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.update(kw) or fn)
    monkeypatch.delenv("QTRAIN_NO_COMPILE", raising=False)
    assert _compiled.get.__wrapped__() is _compiled.quantize_math
    assert seen["options"]["eager_numerics.division_rounding"] is True


@pytest.fixture
def fresh_gpu_answer():
    _compiled._gpu_divides_exactly.cache_clear()  # the answer is cached per device type: ask afresh
    yield
    _compiled._gpu_divides_exactly.cache_clear()


def test_a_torch_that_cannot_divide_exactly_on_gpus_sends_gpu_tensors_to_the_eager_path(monkeypatch, fresh_gpu_answer):
    # without Inductor's division_rounding, Triton's approximate float32 division could round a value
    # at a level boundary the other way: such a torch must not use the compiled path off the CPU
    called = []
    monkeypatch.setattr(_compiled, "get", lambda: lambda x, prm, keys: called.append(x) or (x, torch.tensor(0)))
    monkeypatch.setattr(_compiled, "_broken", set())
    monkeypatch.setattr(_compiled, "_eager_numerics", lambda: {})
    x = torch.zeros(8, device="meta")  # a non-CPU device type; the decision precedes any computation
    with pytest.warns(UserWarning, match="no eager_numerics.division_rounding.*eager path"):
        assert _compiled.quantize_flat(x, Grid.uniform(0.5), True, 1) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert _compiled.quantize_flat(x, Grid.uniform(0.5), False, 1) is None
    assert called == []
    monkeypatch.setattr(_compiled, "_eager_numerics", lambda: {"eager_numerics.division_rounding": True})
    _compiled._gpu_divides_exactly.cache_clear()
    assert _compiled._gpu_divides_exactly("cuda")
    y = torch.zeros(8)  # the CPU's generated code divides exactly whatever the options
    monkeypatch.setattr(_compiled, "_eager_numerics", lambda: {})
    assert _compiled.quantize_flat(y, Grid.uniform(0.5), False, 1) is not None and len(called) == 1
