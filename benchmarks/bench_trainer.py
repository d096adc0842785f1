"""Throughput of qtrain's training loop vs a bare PyTorch loop over the same model and the
same in-memory batches (float ADAM, so the loop itself is what is measured).
Goal (issue 4): qtrain >= 0.95x the bare loop's images/s.

    .venv/bin/python benchmarks/bench_trainer.py [--model smallcnn] [--batches 40] [--rounds 3]
"""
import argparse
import statistics
import time

import torch
from torch import nn

from qtrain import QuantizedOptimizer, Grid
from qtrain.data import InMemoryDataset, batches
from qtrain.models import build
from qtrain.train.loop import train_epoch


def fake_cifar(n):
    g = torch.Generator().manual_seed(0)
    return InMemoryDataset("cifar10", torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                           torch.randint(0, 10, (n,), generator=g), torch.zeros(0, 3, 32, 32, dtype=torch.uint8),
                           torch.zeros(0, dtype=torch.long), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), True)


def bare(model, opt, data):
    model.train()
    for x, y in data:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smallcnn")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    bs = 128
    ds = fake_cifar(bs * args.batches)
    # pre-materialise identical batches so both loops see exactly the same tensors
    data = list(batches(ds, "train", bs, shuffle=True, augment=True, seed=0, epoch=0))
    torch.manual_seed(0)
    m1 = build(args.model, 10)
    o1 = torch.optim.Adam(m1.parameters(), lr=0.01)
    torch.manual_seed(0)
    m2 = build(args.model, 10)
    o2 = QuantizedOptimizer(torch.optim.Adam(m2.parameters(), lr=0.01), "float", Grid.binary())
    bare(m1, o1, data[:3])
    train_epoch(m2, o2, data[:3], 3, False, "")
    # interleaved rounds, order alternating, so drift and cache effects hit both loops alike
    tb, tq = [], []
    for r in range(args.rounds):
        order = ("bare", "qtrain") if r % 2 == 0 else ("qtrain", "bare")
        for which in order:
            t = time.perf_counter()
            if which == "bare":
                bare(m1, o1, data)
                tb.append(time.perf_counter() - t)
            else:
                train_epoch(m2, o2, data, len(data), True, "bench")
                tq.append(time.perf_counter() - t)
    n = bs * len(data)
    ib, iq = n / statistics.median(tb), n / statistics.median(tq)
    print(f"{args.model}, batch {bs}, {len(data)} batches, {torch.get_num_threads()} threads")
    print(f"bare PyTorch loop   {ib:9.0f} images/s")
    print(f"qtrain train_epoch  {iq:9.0f} images/s   ratio {iq / ib:.3f} (progress bar on)")


if __name__ == "__main__":
    main()
