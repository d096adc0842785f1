"""One training step (forward, backward, step) of a CIFAR ResNet-20, batch 128:
BC-ADAM, SR-ADAM and R-ADAM vs plain ADAM, measured side by side (interleaved rounds,
median per method). Goal (issue 2): each <= 1.05x ADAM.

    .venv/bin/python benchmarks/bench_step.py [--rounds 5] [--steps 10]
"""
import argparse
import statistics
import time

import torch
from torch import nn

from qtrain import Grid, QuantizedOptimizer, named_conv_weights
from qtrain.models import build


def setup(method):
    torch.manual_seed(0)
    model = build("resnet20", 10)
    base = torch.optim.Adam(model.parameters(), lr=0.01)
    scales = {id(p): p.detach().abs().mean().item() for _, p in named_conv_weights(model)}
    opt = base if method == "adam" else QuantizedOptimizer(
        base, method, lambda p: Grid.binary(scales[id(p)]), params=named_conv_weights(model))
    return model, opt


def timed_steps(model, opt, x, y, steps):
    t = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    methods = ["adam", "bc", "sr", "r"]
    runs = {m: setup(m) for m in methods}
    for m in methods:
        timed_steps(*runs[m], x, y, 2)  # warm-up
    times = {m: [] for m in methods}
    for r in range(args.rounds):  # interleaved, order rotating each round
        for m in methods[r % 4:] + methods[:r % 4]:
            times[m].append(timed_steps(*runs[m], x, y, args.steps))
    base = statistics.median(times["adam"])
    print(f"ResNet-20, batch 128, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'method':10s} {'ms/step':>9s} {'vs ADAM':>8s}")
    for m, name in zip(methods, ["ADAM", "BC-ADAM", "SR-ADAM", "R-ADAM"]):
        t = statistics.median(times[m])
        print(f"{name:10s} {t * 1e3:9.1f} {t / base:8.3f}")


if __name__ == "__main__":
    main()
