"""Per-rank optimizer memory of BC-ADAM under FSDP2 on N = 1, 2, 4 gloo processes (CPU), side by side.

Goal: each rank's optimizer state -- Adam's two moments and BC's latent weights, plus the
parameter shard itself -- falls as 1/N. The model is an MLP of a few square layers (dims not all
divisible by 4, so shards are uneven); every quantized weight is binary. After one step each rank
counts the bytes of the tensors it holds (the local shards of DTensors), and the table prints the
largest rank's count per N next to N = 1's divided by N.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fsdp_memory.py [--dim 1001 --layers 4]
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nbytes(t) -> int:
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def _rank(rank: int, world: int, port: int, dim: int, layers: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.fsdp import fully_shard
    from qtrain import Grid, QuantizedOptimizer

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(dim, dim) for _ in range(layers)])
    for block in model:
        fully_shard(block)
    fully_shard(model)
    named = [(n, p) for n, p in model.named_parameters() if p.ndim > 1]
    opt = QuantizedOptimizer(torch.optim.Adam(model.parameters(), lr=1e-3), "bc", Grid.binary(0.01), params=named)
    model(torch.randn(8, dim)).square().mean().backward()
    opt.step()
    moments = sum(_nbytes(v) for st in opt.base.state.values() for v in st.values()
                  if isinstance(v, torch.Tensor) and v.dim() > 0)
    latents = sum(_nbytes(t) for t in opt.latents)
    params = sum(_nbytes(p) for p in model.parameters())
    torch.save({"moments": moments, "latents": latents, "params": params}, os.path.join(out, f"{world}-{rank}.pt"))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=1001)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--ranks", type=int, nargs="*", default=[1, 2, 4])
    a = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as out:
        for n in a.ranks:
            mp.start_processes(_rank, args=(n, _port(), a.dim, a.layers, out), nprocs=n, start_method="spawn")
            per = [torch.load(os.path.join(out, f"{n}-{r}.pt")) for r in range(n)]
            rows[n] = max(per, key=lambda d: d["moments"] + d["latents"])
    base = rows[a.ranks[0]]
    total0 = base["moments"] + base["latents"]
    print(f"BC-ADAM, {a.layers} layers of {a.dim}x{a.dim}, binary weights; bytes held by the largest rank after one step")
    print(f"{'ranks':>5} {'Adam moments':>14} {'BC latents':>12} {'optimizer':>12} {'params':>12} "
          f"{'vs N=' + str(a.ranks[0]):>8} {'ideal':>7}")
    for n, r in rows.items():
        total = r["moments"] + r["latents"]
        print(f"{n:>5} {r['moments']:>14,} {r['latents']:>12,} {total:>12,} {r['params']:>12,} "
              f"{total / total0:>8.3f} {a.ranks[0] / n:>7.3f}")


if __name__ == "__main__":
    main()
