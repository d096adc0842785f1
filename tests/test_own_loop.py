"""The README's "Use it in your own loop" claims: LR schedulers, gradient clipping, autocast,
torch.compile, checkpoints and DDP each work with QuantizedOptimizer."""
import io
import warnings

import pytest
import torch
import torch.distributed as dist
from torch import nn

from qtrain import Grid, QuantizedOptimizer, named_conv_weights, quantize

from test_optim import batches, flat, tiny_net

G = Grid.binary(0.1)


def run(model, opt, data, sched=None, clip=None, autocast=False, net=None):
    net = net or model
    for x, y in data:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched is not None:
            sched.step()
    return model


def on_grid(model):
    return all(torch.equal(p.abs(), torch.full_like(p, 0.1)) for _, p in named_conv_weights(model))


@pytest.mark.parametrize("make", [lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=6),
                                  lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=6)])
def test_schedulers_drive_the_base_learning_rate_without_warnings(make):
    m = tiny_net()
    opt = QuantizedOptimizer(torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), "sr", G,
                             params=named_conv_weights(m))
    sched = make(opt)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for x, y in batches(6):
            run(m, opt, [(x, y)], sched)
            lrs.append(opt.base.param_groups[0]["lr"])
    assert len(set(lrs)) == 6 and on_grid(m)


def test_clipping_before_step_clips_what_the_quantizer_sees():
    w = nn.Parameter(torch.zeros(4))
    opt = QuantizedOptimizer(torch.optim.SGD([w], lr=1.0), "r", Grid.uniform(0.25), params=[w])
    w.grad = torch.tensor([30.0, -40.0, 0.0, 0.0])  # norm 50 -> clipped to norm 1: (0.6, -0.8)
    nn.utils.clip_grad_norm_([w], 1.0)
    opt.step()
    assert w.detach().tolist() == quantize(torch.tensor([-0.6, 0.8, 0.0, 0.0]), Grid.uniform(0.25)).tolist()


def test_autocast_keeps_float32_weights_on_the_grid():
    m = tiny_net()
    opt = QuantizedOptimizer(torch.optim.Adam(m.parameters(), lr=0.01), "bc", G, params=named_conv_weights(m))
    run(m, opt, batches(3), autocast=True, clip=1.0)
    assert on_grid(m) and all(p.dtype == torch.float32 for p in m.parameters())


@pytest.mark.parametrize("method", ["sr", "bc"])  # bc: the parameters hold their latents during each base step
def test_compiled_model_trains_bit_for_bit_like_eager(method):
    a, b = tiny_net(), tiny_net()
    opt_a = QuantizedOptimizer(torch.optim.Adam(a.parameters(), lr=0.01), method, G, params=named_conv_weights(a))
    opt_b = QuantizedOptimizer(torch.optim.Adam(b.parameters(), lr=0.01), method, G, params=named_conv_weights(b))
    run(a, opt_a, batches(3))
    run(b, opt_b, batches(3), net=torch.compile(b, backend="eager"))  # weights change in place between calls
    assert torch.equal(flat(a), flat(b)) and on_grid(b)


def test_checkpoint_loads_with_weights_only():
    m = tiny_net()
    opt = QuantizedOptimizer(torch.optim.Adam(m.parameters(), lr=0.01), "bc", G, params=named_conv_weights(m))
    run(m, opt, batches(2))
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert sd["qtrain"]["grids"] == [G.to_dict()] * 2 and sd["qtrain"]["step"] == 2


def test_ddp_wrapped_model_matches_the_plain_model(tmp_path):
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        a, b = tiny_net(), tiny_net()
        ddp = nn.parallel.DistributedDataParallel(b)
        opt_a = QuantizedOptimizer(torch.optim.Adam(a.parameters(), lr=0.01), "sr", G, params=named_conv_weights(a))
        opt_b = QuantizedOptimizer(torch.optim.Adam(ddp.parameters(), lr=0.01), "sr", G,
                                   params=named_conv_weights(ddp.module))
        run(a, opt_a, batches(3))
        run(b, opt_b, batches(3), net=ddp)
        assert torch.equal(flat(a), flat(b)) and on_grid(b)
    finally:
        dist.destroy_process_group()
