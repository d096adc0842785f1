"""Stochastic rounding of 10^7 float32 values vs ``x.clone()``, measured side by side.

Goal (issue 2): SR <= 2.0x clone on a 2-core machine. Also prints the plain eager
``floor(x/Δ + rand_like(x))·Δ`` formulation and qtrain's eager path (the one GPUs and
non-float32 tensors take) for reference.

    .venv/bin/python benchmarks/bench_quantize.py
"""
import statistics
import time

import torch

from qtrain import Grid, quantize
from qtrain import _kernel
from qtrain.rng import resolve_key
from qtrain.rounding import _eager


def best_of(fn, reps=15):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(n=10**7):
    torch.manual_seed(0)
    x = torch.randn(n)
    g = Grid.uniform(2**-4)
    d = g.delta
    key = resolve_key(1)
    cases = {
        "x.clone()": lambda: x.clone(),
        "qtrain SR (kernel)" if _kernel.get() else "qtrain SR (eager; no compiler)":
            lambda: quantize(x, g, "stochastic", generator=1),
        "qtrain R (kernel)" if _kernel.get() else "qtrain R (eager)": lambda: quantize(x, g, "nearest"),
        "qtrain SR eager path": lambda: _eager(x, g, True, key),
        "floor(x/Δ + rand_like(x))·Δ": lambda: torch.floor(x / d + torch.rand_like(x)) * d,
    }
    base = None
    print(f"n = {n:.0e} float32, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'case':34s} {'median ms':>10s} {'x clone':>8s}")
    for name, fn in cases.items():
        fn()  # warm-up (builds the kernel on first use)
        t = best_of(fn)
        base = base or t
        print(f"{name:34s} {t * 1e3:10.2f} {t / base:8.2f}")


if __name__ == "__main__":
    main()
