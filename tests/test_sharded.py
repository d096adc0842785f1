"""FSDP2 (DTensor) parameters in QuantizedOptimizer, on 2 gloo processes on CPU: the sharded run
equals the unsharded one bit for bit (float, BC, R, SR; uneven and empty shards; per-layer grids
from a callable and a dict; a float-format grid), a non-finite gradient on one rank refuses the
step on both, sharded checkpoints (torch.distributed.checkpoint) resume bit-identically on 2
ranks and on 1, and tensors the kernels cannot take are refused in one line."""
import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from qtrain import Grid, QuantizedOptimizer
from qtrain.rng import offset_key, uniform

fsdp = pytest.importorskip("torch.distributed.fsdp")
STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, fn, args, out):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears gloo down while a peer still talks to it ("terminate called", SIGABRT)
    finally:
        dist.destroy_process_group()


def spawn(fn, world=2, *args):
    """Run ``fn(rank, world, *args)`` on ``world`` gloo processes; returns their results."""
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(_entry, args=(world, free_port(), fn, args, out), nprocs=world, start_method="spawn")
        return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in range(world)]


def make_model():
    """Dims 7, 5, 1 on dim 0: uneven over 2 ranks (4/3, 3/2) and one empty shard (1/0)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 1))


def shard(model):
    for i in (0, 2, 4):
        fsdp.fully_shard(model[i])
    fsdp.fully_shard(model)
    return model


GRIDS = {"binary": lambda: Grid.binary(0.05), "uniform": lambda: Grid.uniform(2**-5, bits=4),
         "callable": lambda: (lambda p: Grid.binary(p.abs().mean().item())),
         "dict": lambda: {"0.weight": Grid.uniform(0.03), "2.weight": Grid.ternary(0.1), "4.weight": Grid.binary(0.2)},
         "bfloat16": lambda: Grid.float("bfloat16")}


def build(model, method, grid, seed=3, diagnostics=False):
    named = [(n, p) for n, p in model.named_parameters() if n.endswith("weight")]
    return QuantizedOptimizer(torch.optim.Adam(model.parameters(), lr=0.02), method, GRIDS[grid](), params=named,
                              seed=seed, bc_rounding="stochastic" if method == "bc" and grid == "uniform" else "nearest",
                              diagnostics=diagnostics)


def train(model, opt, steps, start=0):
    for t in range(start, start + steps):
        g = torch.Generator().manual_seed(100 + t)  # every rank sees the same batch
        x, y = torch.randn(8, 6, generator=g), torch.randn(8, 1, generator=g)
        opt.zero_grad()
        (model(x) - y).square().mean().backward()
        opt.step()


def full(model):
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for n, p in model.named_parameters()}


CASES = [("float", "binary"), ("bc", "binary"), ("bc", "uniform"), ("r", "uniform"), ("sr", "binary"),
         ("sr", "uniform"), ("sr", "callable"), ("sr", "dict"), ("sr", "bfloat16"), ("bc", "callable")]


def _bits(rank, world):
    out = {}
    for method, grid in CASES:
        model = shard(make_model())
        opt = build(model, method, grid)
        train(model, opt, STEPS)
        out[method, grid] = full(model), [g.to_dict() for g in opt.grids]
    model = shard(make_model())  # diagnostics: the whole tensors' fractions (no packed kernel call)
    opt = build(model, "r", "uniform", diagnostics=True)
    train(model, opt, STEPS)
    out["diag"] = full(model), opt.diagnostics()
    return out


def test_sharded_runs_equal_unsharded_bit_for_bit():
    ranks = spawn(_bits)
    for method, grid in CASES:
        model = make_model()
        opt = build(model, method, grid)
        train(model, opt, STEPS)
        want = full(model)
        for r in ranks:
            got, grids = r[method, grid]
            assert grids == [g.to_dict() for g in opt.grids], (method, grid)  # callable grids: the full tensor's
            for n in want:
                assert torch.equal(got[n], want[n]), (method, grid, n)
        if method != "float" and grid in ("binary", "callable"):  # the quantized weights are binary
            assert len(torch.unique(want["2.weight"])) == 2
    model = make_model()  # diagnostics on: the same weights, and the whole tensors' fractions
    opt = build(model, "r", "uniform", diagnostics=True)
    train(model, opt, STEPS)
    want, wdiag = full(model), opt.diagnostics()
    for r in ranks:
        got, diag = r["diag"]
        assert all(torch.equal(got[n], want[n]) for n in want)
        for n, d in wdiag.items():
            assert diag[n]["changed"] == pytest.approx(d["changed"], abs=1e-6), n
            assert diag[n]["stalled"] == pytest.approx(d["stalled"], abs=1e-6), n


def test_offset_key_is_the_stream_from_start():
    """The shard's stream is the whole tensor's from its global offset, also across 2^32."""
    for key in (0, 7, 2**64 - 1, 0x1234_5678_9ABC_DEF0):
        for start in (1, 5, 2**32 - 3, 2**33 + 11):
            want = torch.tensor([uniform(key, 1, start=start + j)[0].item() for j in range(3)])
            assert torch.equal(uniform(offset_key(key, start), 3), want), (key, start)
    x = torch.randn(1000)
    g = Grid.uniform(0.1)
    from qtrain.rounding import quantize_into
    whole = quantize_into(x, None, g, True, 99)
    assert torch.equal(quantize_into(x[337:], None, g, True, 99, 337), whole[337:])
    assert torch.equal(quantize_into(x.double()[337:], None, g, True, 99, 337),  # the compiled/eager path
                       quantize_into(x.double(), None, g, True, 99)[337:])
    f = Grid.float("float8_e4m3fn")
    assert torch.equal(quantize_into(x[5:], None, f, True, 4, 5), quantize_into(x, None, f, True, 4)[5:])


def _nan_on_one_rank(rank, world):
    model = shard(make_model())
    opt = build(model, "sr", "binary")
    train(model, opt, 1)
    before = full(model)
    model(torch.randn(2, 6)).sum().backward()
    if rank == 1:
        model[2].weight.grad.to_local()[0, 0] = float("nan")
    try:
        opt.step()
        raised = None
    except FloatingPointError as e:
        raised = str(e)
    return raised, all(torch.equal(before[n], v) for n, v in full(model).items()), opt.step_count


def test_a_non_finite_gradient_on_one_rank_refuses_the_step_on_every_rank():
    (m0, same0, s0), (m1, same1, s1) = spawn(_nan_on_one_rank)
    assert m0 and "another rank" in m0 and "\n" not in m0
    assert m1 and "2.weight" in m1
    assert same0 and same1 and s0 == s1 == 1


def _save_then_continue(rank, world, path):
    return {m: _save_then_continue_one(os.path.join(path, m), m) for m in ("sr", "bc")}


def _save_then_continue_one(path, method):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from qtrain import sharded
    model = shard(make_model())
    opt = build(model, method, "callable" if method == "bc" else "binary")
    train(model, opt, 2)
    dcp.save({"model": get_model_state_dict(model), "optim": sharded.state_dict(model, opt)}, checkpoint_id=path)
    train(model, opt, 2, start=2)
    return full(model)


def _resume(rank, world, path):
    return {m: _resume_one(rank, os.path.join(path, m), m) for m in ("sr", "bc")}


def _resume_one(rank, path, method):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    from qtrain import sharded
    torch.manual_seed(rank + 50)  # another initialisation: everything must come from the checkpoint
    model = shard(nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 1)))
    opt = build(model, method, "binary", seed=11)  # another grid and seed too
    state = {"model": get_model_state_dict(model), "optim": sharded.state_dict(model, opt)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])
    sharded.load_state_dict(model, opt, state["optim"])
    assert opt.step_count == 2 and opt.seed == 3
    train(model, opt, 2, start=2)
    return full(model)


def test_sharded_checkpoint_resumes_bit_identically_on_two_ranks_and_on_one(tmp_path):
    path = str(tmp_path / "ckpt")
    straight = spawn(_save_then_continue, 2, path)
    for world in (2, 1):
        for r in spawn(_resume, world, path):
            for method in ("sr", "bc"):
                for n, v in straight[0][method].items():
                    assert torch.equal(r[method][n], v), (world, method, n)
    for method in ("sr", "bc"):  # and the whole run equals the unsharded one
        model = make_model()
        opt = build(model, method, "callable" if method == "bc" else "binary")
        train(model, opt, 4)
        for n, v in full(model).items():
            assert torch.equal(straight[0][method][n], v), (method, n)


class Marked(torch.Tensor):
    """A tensor subclass the kernels know nothing about."""


def test_a_tensor_subclass_is_refused_in_one_line():
    lin = nn.Linear(3, 2)
    lin.weight = nn.Parameter(torch.Tensor._make_subclass(Marked, torch.randn(2, 3), True))
    adam = torch.optim.Adam(lin.parameters())
    for method in ("bc", "r", "sr"):
        with pytest.raises(ValueError, match=r"parameter 'weight'.*Marked.*subclass") as e:
            QuantizedOptimizer(adam, method, Grid.binary(0.1), params=[("weight", lin.weight)])
        assert "\n" not in str(e.value)
    QuantizedOptimizer(adam, "float", Grid.binary(0.1))  # float hands no parameter to the kernels
    meta = nn.Linear(3, 2, device="meta")
    with pytest.raises(ValueError, match="meta device"):
        QuantizedOptimizer(torch.optim.SGD(meta.parameters(), lr=0.1), "sr", Grid.binary(0.1))


def _refusals(rank, world):
    from torch.distributed.tensor import Partial, Shard, distribute_tensor, init_device_mesh
    mesh = init_device_mesh("cpu", (world,))
    out = []
    for placement in (Shard(1), Partial()):
        w = nn.Parameter(distribute_tensor(torch.randn(4, 6), mesh, [Shard(1)]))
        if isinstance(placement, Partial):
            w = nn.Parameter(torch.distributed.tensor.DTensor.from_local(torch.randn(4, 6), mesh, [placement]))
        try:
            QuantizedOptimizer(torch.optim.SGD([w], lr=0.1), "sr", Grid.binary(0.1), params=[("w", w)])
            out.append(None)
        except ValueError as e:
            out.append(str(e))
    half = nn.Parameter(distribute_tensor(torch.randn(4, 6), mesh, [Shard(0)]).to(torch.bfloat16))
    try:
        QuantizedOptimizer(torch.optim.SGD([half], lr=0.1), "sr", Grid.binary(0.125), params=[("h", half)])
    except ValueError as e:
        out.append(str(e))
    return out


def test_dtensors_the_rounding_cannot_place_are_refused():
    for msgs in spawn(_refusals):
        assert len(msgs) == 3 and all(m and "\n" not in m for m in msgs), msgs
        assert "parameter 'w'" in msgs[0] and "dim 0" in msgs[0]
        assert "Partial" in msgs[1] and "MixedPrecisionPolicy" in msgs[2]


def test_readme_sharded_example_runs_under_torchrun(tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Sharded training"):]
    code = re.findall(r"```python\n(.*?)```", section[:section.index("\n## ", 5)], re.S)[0]
    (tmp_path / "fsdp_sr.py").write_text(code)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "fsdp_sr.py"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    values = eval(r.stdout.strip().splitlines()[-1])
    assert len(values) == 2 and values[0] == -values[1]
    assert (tmp_path / "ckpt" / ".metadata").is_file()
