"""BC's lean step: the base optimizer moves the latent weights in place of the parameter's own
storage (``p.data = latent`` for the base step, then back), so nothing is copied. These check that
the swap is invisible: the same bits as BC written out by hand, the parameter's storage, autograd
hooks and grad accumulator intact, errors leave the parameter on its own storage, and base
optimizers that rebind ``p.data`` or parameters whose latent cannot stand in still work."""
import pytest
import torch
from torch import nn

from qtrain import Grid, QuantizedOptimizer, quantize

G = Grid.uniform(2**-4, bits=4)


def reference_bc(w0, grads, lr):
    """BC with plain SGD, written out: w_r <- clip(w_r - lr g), w_b = Q_d(w_r)."""
    lo, hi = G.bounds(torch.float32)
    wr = w0.clamp(lo, hi)
    out = []
    for g in grads:
        wr = (wr - lr * g).clamp(lo, hi)
        out.append(quantize(wr, G, "nearest"))
    return out


@pytest.mark.parametrize("shape", [(37,), (300, 500), (5, 7)])
def test_lent_latents_give_bc_written_out(shape):
    torch.manual_seed(0)
    w0 = torch.randn(shape) * 0.3
    grads = [torch.randn(shape) for _ in range(4)]
    p = nn.Parameter(w0.clone())
    opt = QuantizedOptimizer(torch.optim.SGD([p], lr=0.05), "bc", G, params=[p])
    ptr = p.data_ptr()
    for g, want in zip(grads, reference_bc(w0, grads, 0.05)):
        p.grad = g.clone()
        opt.step()
        assert torch.equal(p.detach(), want)
        assert p.data_ptr() == ptr and opt.latents[0].data_ptr() != ptr  # each keeps its own storage


def test_non_contiguous_parameter_and_its_strides_survive():
    torch.manual_seed(1)
    w0 = torch.randn(6, 4)
    p = nn.Parameter(w0.clone().t())  # strides (1, 4)
    opt = QuantizedOptimizer(torch.optim.SGD([p], lr=0.1), "bc", G, params=[p])
    g = torch.randn(4, 6)
    p.grad = g.clone()
    opt.step()
    assert p.stride() == (1, 4) and torch.equal(p.detach(), reference_bc(w0.t(), [g], 0.1)[0])


def test_grad_accumulator_hooks_survive_the_swap():
    """DDP and FSDP hang their hooks on the grad accumulator: a swap that changed dtype or shape
    would reset it. Same metadata keeps it, so the hook still fires after many steps."""
    model = nn.Linear(8, 3)
    fired = []
    model.weight.register_post_accumulate_grad_hook(lambda t: fired.append(1))
    opt = QuantizedOptimizer(torch.optim.Adam(model.parameters(), lr=0.01), "bc", G, params=[model.weight])
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 8)).square().mean().backward()
        opt.step()
    assert len(fired) == 3


class Rebinding(torch.optim.Optimizer):
    """An old-style optimizer that rebinds ``p.data`` instead of updating it in place."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data = p.data - group["lr"] * p.grad


def test_a_base_optimizer_that_rebinds_data_loses_no_update():
    torch.manual_seed(2)
    w0 = torch.randn(50) * 0.3
    grads = [torch.randn(50) for _ in range(3)]
    p = nn.Parameter(w0.clone())
    opt = QuantizedOptimizer(Rebinding([p], lr=0.05), "bc", G, params=[p])
    for g, want in zip(grads, reference_bc(w0, grads, 0.05)):
        p.grad = g.clone()
        opt.step()
        assert torch.equal(p.detach(), want)


class Failing(torch.optim.SGD):
    def step(self, closure=None):
        super().step(closure)
        raise RuntimeError("boom")


def test_an_error_in_the_base_step_returns_the_parameter_its_storage():
    p = nn.Parameter(torch.randn(40))
    opt = QuantizedOptimizer(Failing([p], lr=0.1), "bc", G, params=[p])
    ptr, before = p.data_ptr(), p.detach().clone()
    p.grad = torch.ones(40)
    with pytest.raises(RuntimeError, match="boom"):
        opt.step()
    assert p.data_ptr() == ptr and torch.equal(p.detach(), before)


def test_float16_parameters_lend_their_latents_to_the_float32_work_copy():
    """float16 parameters keep float32 latents: during the step the parameter holds a float32 work
    copy, and the latent stands in for that; the stored level is BC written out."""
    torch.manual_seed(3)
    w0 = torch.randn(64) * 0.3
    g = torch.randn(64)
    p = nn.Parameter(w0.clone().half())
    opt = QuantizedOptimizer(torch.optim.SGD([p], lr=0.05), "bc", G, params=[p])
    p.grad = g.half()
    opt.step()
    want = reference_bc(w0.half().float(), [g.half().float()], 0.05)[0]
    assert p.dtype == torch.float16 and torch.equal(p.detach().float(), want)


def test_an_error_while_lending_gives_every_parameter_its_storage_back():
    """The user resized ``b`` so its latent cannot be copied in: the step raises, and ``a`` (lent
    first) must not stay on its latent's storage, or BC would round its latent in place forever."""
    torch.manual_seed(4)
    a, b = nn.Parameter(torch.randn(10) * 0.3), nn.Parameter(torch.randn(10) * 0.3)
    opt = QuantizedOptimizer(torch.optim.SGD([a, b], lr=0.01), "bc", G, params=[a, b])
    a_ptr, b_saved = a.data_ptr(), b.data
    b.data = torch.zeros(12)
    a.grad, b.grad = torch.ones(10), torch.ones(12)
    with pytest.raises(ValueError, match=r"'param1' is now torch.float32 on cpu with 12 entries.*resized"):
        opt.step()
    assert a.data_ptr() == a_ptr and a.data_ptr() != opt.latents[0].data_ptr()
    b.data = b_saved
    a.grad, b.grad = torch.full((10,), 1e-3), torch.full((10,), 1e-3)
    opt.step()
    assert a.data_ptr() == a_ptr and not torch.equal(opt.latents[0], a.detach())  # the latent stays off the grid


class RebindingBadly(Rebinding):
    """Rebinds ``p.data`` to a tensor of another shape: copying it back into the latent fails."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.data = p.data[:-1] - group["lr"]


def test_an_error_while_returning_still_gives_every_parameter_its_storage_back():
    a, b = nn.Parameter(torch.randn(10)), nn.Parameter(torch.randn(10))
    opt = QuantizedOptimizer(RebindingBadly([a, b], lr=0.1), "bc", G, params=[a, b])
    ptrs = a.data_ptr(), b.data_ptr()
    a.grad, b.grad = torch.ones(10), torch.ones(10)
    with pytest.raises(RuntimeError):
        opt.step()
    assert (a.data_ptr(), b.data_ptr()) == ptrs and a.shape == b.shape == (10,)


def test_a_parameter_viewed_with_another_shape_at_the_same_address_is_copied_not_lent():
    p = nn.Parameter(torch.randn(20) * 0.3)
    opt = QuantizedOptimizer(torch.optim.SGD([p], lr=0.01), "bc", G, params=[p])
    p.grad = torch.ones(20)
    opt.step()
    p.data = p.data.view(1, 20)  # same data_ptr, another shape
    p.grad = torch.ones(1, 20)
    opt.step()
    assert p.shape == (1, 20) and torch.equal(p.detach().view(-1), quantize(opt.latents[0], G, "nearest"))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # torch.distributed.optim's own imports
def test_parameters_in_a_shared_buffer_are_copied_not_lent(tmp_path):
    """ZeRO's ``parameters_as_bucket_view`` makes each parameter a view of a bucket that it
    broadcasts after the local step: the update must land in the parameter's (bucket) storage, not
    in a lent latent, or the other ranks would receive the old weights."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        torch.manual_seed(5)
        m = nn.Linear(6, 4, bias=False)
        base = ZeroRedundancyOptimizer(m.parameters(), optimizer_class=torch.optim.SGD, lr=0.1,
                                       parameters_as_bucket_view=True)
        opt = QuantizedOptimizer(base, "bc", G)
        sent, broadcast = [], dist.broadcast

        def spy(tensor, *args, **kwargs):
            sent.append(tensor.detach().clone())
            return broadcast(tensor, *args, **kwargs)

        dist.broadcast = spy
        try:
            wr0 = opt.latents[0].clone()
            m.weight.grad = torch.ones(4, 6)
            opt.step()
        finally:
            dist.broadcast = broadcast
        assert torch.equal(sent[0][:24].view(4, 6), wr0 - 0.1)  # the base step's update is what was sent
        assert torch.equal(m.weight.detach(), quantize(opt.latents[0], G, "nearest"))
    finally:
        dist.destroy_process_group()


def test_the_x86_vector_option_is_only_given_on_x86():
    from qtrain._kernel import compiler_flags

    assert "-mprefer-vector-width=512" in compiler_flags("x86_64")
    assert not any(f.startswith("-mprefer-vector-width") for f in compiler_flags("aarch64"))


@pytest.mark.parametrize("change", ["double", "resize"])
def test_a_parameter_cast_after_the_optimizer_was_built_is_refused_in_one_line(change):
    m = nn.Linear(4, 3)
    opt = QuantizedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), "bc", G, params=[("fc.weight", m.weight)])
    if change == "double":
        m.double()
        m.weight.grad = torch.ones(3, 4, dtype=torch.float64)
    else:
        m.weight.data = torch.zeros(5, 4)
        m.weight.grad = torch.ones(5, 4)
    before = m.weight.detach().clone()
    with pytest.raises(ValueError, match=r"^parameter 'fc.weight' is now .*build the optimizer after") as e:
        opt.step()
    assert "\n" not in str(e.value) and torch.equal(m.weight.detach(), before)
