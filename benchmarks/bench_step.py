"""Optimizer-step cost of float/BC/R/SR over Adam, measured side by side in one run
(interleaved rounds, order rotating, medians), plus peak memory in fresh processes.

Goals (issue 10), each against the bare ``torch.optim.Adam`` on the same tensors:

* two 2048x2048 weights, step only (fixed gradients): SR and R <= 1.3x, BC <= 1.5x, float <= 1.05x;
* a model of 60 tensors (60 x 64x64x3 = 0.74M weights), step only: SR/R/BC <= 1.3x;
* peak memory of a short run (fresh process each): SR-ADAM <= Adam + one largest quantized
  tensor; BC-ADAM <= that + its latent weights;
* ``quantize`` on 1,000 float32 values: <= 10 µs median.

Goal (issue 2), ``--resnet``: one ResNet-20 training step (forward, backward, step), batch 128,
BC/SR/R-ADAM <= 1.05x ADAM.

    .venv/bin/python benchmarks/bench_step.py [--rounds 7] [--resnet]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from qtrain import Grid, QuantizedOptimizer, named_conv_weights, quantize

METHODS = ["adam", "float", "sr", "r", "bc"]
NAMES = {"adam": "Adam", "float": "float-ADAM", "sr": "SR-ADAM", "r": "R-ADAM", "bc": "BC-ADAM"}


def make(method, shapes, seed=0):
    """Parameters of ``shapes`` with fixed gradients and the optimizer for ``method``."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(s, generator=g) * 0.05) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    base = torch.optim.Adam(params, lr=1e-3)
    opt = base if method == "adam" else QuantizedOptimizer(base, method, Grid.uniform(2**-6, bits=8), params=params)
    return opt


def step_only(shapes, rounds, steps):
    """Median seconds per step of each method: ``rounds`` rounds, each timing ``steps`` steps of
    every method in a rotating order. Short blocks over many rounds let every method see the
    same bursts of load from other processes (the medians then compare like with like)."""
    opts = {m: make(m, shapes) for m in METHODS}
    for o in opts.values():
        o.step()  # warm-up (Adam's state, the kernel)
    times = {m: [] for m in METHODS}
    for r in range(rounds):
        for m in METHODS[r % len(METHODS):] + METHODS[:r % len(METHODS)]:
            t = time.perf_counter()
            for _ in range(steps):
                opts[m].step()
            times[m].append((time.perf_counter() - t) / steps)
    return {m: statistics.median(v) for m, v in times.items()}


def report(title, med, goals):
    a = med["adam"]
    print(f"\n{title}")
    print(f"{'method':11s} {'ms/step':>9s} {'vs Adam':>8s}  goal")
    for m in METHODS:
        print(f"{NAMES[m]:11s} {med[m] * 1e3:9.3f} {med[m] / a:8.3f}  {goals.get(m, '')}")


def _hwm_mb():
    with open("/proc/self/status") as fh:  # VmHWM: this process's peak RSS (ru_maxrss survives exec)
        return int([line for line in fh if line.startswith("VmHWM")][0].split()[1]) / 1024


def peak_rss_child(method, steps=5):
    """Run in a fresh process: a short run; print the peak resident memory (MB) of the whole run
    and of the steps alone (the peak is reset after construction and the first step)."""
    opt = make(method, [(2048, 2048)] * 2)
    opt.step()
    whole = _hwm_mb()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    for _ in range(steps):
        opt.step()
    print(max(whole, _hwm_mb()), _hwm_mb())


def memory(repeats):
    peaks = {m: [] for m in ("adam", "sr", "bc")}
    for _ in range(repeats):
        for m in peaks:
            # large blocks straight from mmap, so freed memory leaves RSS at once: the peak is the live peak
            out = subprocess.run([sys.executable, __file__, "--memory-child", m], capture_output=True, text=True,
                                 check=True, env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
            peaks[m].append([float(v) for v in out.stdout.strip().splitlines()[-1].split()])
    med = {m: [statistics.median(v[j] for v in runs) for j in (0, 1)] for m, runs in peaks.items()}
    tensor = 2048 * 2048 * 4 / 2**20
    print(f"\npeak memory, two 2048x2048 float32 weights, fresh process each (median of {repeats}); largest "
          f"quantized tensor {tensor:.1f} MB, latents {2 * tensor:.1f} MB. Run = construction + 6 steps; "
          "steps = 5 steps after the first")
    print(f"{'method':8s} {'run MB':>8s} {'over Adam':>10s} {'steps MB':>9s} {'over Adam':>10s}  goal (over Adam)")
    for m, goal in (("adam", ""), ("sr", f"<= {tensor:.1f}"), ("bc", f"<= {3 * tensor:.1f}")):
        r, s = med[m]
        print(f"{NAMES[m]:8s} {r:8.1f} {r - med['adam'][0]:10.1f} {s:9.1f} {s - med['adam'][1]:10.1f}  {goal}")


def small_quantize(rounds):
    x, g = torch.randn(1000), Grid.uniform(2**-4)
    cases = {"x.clone()": lambda: x.clone(), "quantize SR": lambda: quantize(x, g, "stochastic", generator=1),
             "quantize R": lambda: quantize(x, g)}
    times = {k: [] for k in cases}
    for f in cases.values():
        f()
    for r in range(rounds):
        for k, f in cases.items():
            t = time.perf_counter()
            for _ in range(500):
                f()
            times[k].append((time.perf_counter() - t) / 500)
    print("\nquantize on 1,000 float32 values (goal <= 10 µs median)")
    for k, v in times.items():
        print(f"{k:12s} {statistics.median(v) * 1e6:8.2f} µs")


def resnet(rounds, steps):
    from qtrain.models import build

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    runs = {}
    for m in ("adam", "bc", "sr", "r"):
        torch.manual_seed(0)
        model = build("resnet20", 10)
        base = torch.optim.Adam(model.parameters(), lr=0.01)
        scales = {id(p): p.detach().abs().mean().item() for _, p in named_conv_weights(model)}
        runs[m] = (model, base if m == "adam" else QuantizedOptimizer(
            base, m, lambda p: Grid.binary(scales[id(p)]), params=named_conv_weights(model)))

    def train(m, n):
        model, opt = runs[m]
        t = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return (time.perf_counter() - t) / n

    names = list(runs)
    for m in names:
        train(m, 2)
    times = {m: [] for m in names}
    for r in range(rounds):
        for m in names[r % 4:] + names[:r % 4]:
            times[m].append(train(m, steps))
    a = statistics.median(times["adam"])
    print("\nResNet-20 training step, batch 128 (goal, issue 2: <= 1.05x ADAM)")
    for m in names:
        print(f"{NAMES[m]:11s} {statistics.median(times[m]) * 1e3:9.1f} ms {statistics.median(times[m]) / a:8.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--memory-repeats", type=int, default=3)
    ap.add_argument("--resnet", action="store_true", help="also time ResNet-20 training steps (issue 2)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return peak_rss_child(args.memory_child)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    report("two 2048x2048 weights, step only", step_only([(2048, 2048)] * 2, 6 * args.rounds, 1),
           {"float": "<= 1.05", "sr": "<= 1.3", "r": "<= 1.3", "bc": "<= 1.5"})
    report("60 tensors of 64x64x3 (0.74M weights), step only", step_only([(64, 64, 3)] * 60, 10 * args.rounds, 2),
           {"sr": "<= 1.3", "r": "<= 1.3", "bc": "<= 1.3"})
    memory(args.memory_repeats)
    small_quantize(args.rounds)
    if args.resnet:
        resnet(args.rounds, 4)


if __name__ == "__main__":
    main()
