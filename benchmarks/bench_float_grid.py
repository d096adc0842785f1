"""Q_d and Q_s onto float formats, 10^7 float32 values, ratio to ``x.clone()`` measured side by side.

Both go through ``qtrain.quantize`` (the C kernel ``csrc/floatgrid.c`` on CPU float32, with
its finiteness check and counter-based random numbers); the torch paths (the cast
``x.to(dtype).float()`` for Q_d, the float32 bit path for Q_s) are printed for reference, as is
the uniform-grid SR. Cases are interleaved over rounds; goal: Q_s <= 2x clone.

    .venv/bin/python benchmarks/bench_float_grid.py [n]
"""
import statistics
import sys
import time

import torch

from qtrain import Grid, quantize
from qtrain.floatgrid import FORMATS, _sr32


def main(n=10**7, rounds=5):
    torch.manual_seed(0)
    x = torch.randn(n)
    cases = {"x.clone()": lambda: x.clone(),
             "uniform grid SR (qtrain.quantize)": lambda: quantize(x, Grid.uniform(2**-4), "stochastic", generator=1)}
    for name in FORMATS:
        g = Grid.float(name)
        cases[f"{name} Q_d"] = lambda g=g: quantize(x, g, "nearest")
        cases[f"{name} Q_s"] = lambda g=g: quantize(x, g, "stochastic", generator=1)
    cases["bfloat16 Q_d torch cast"] = lambda: x.to(torch.bfloat16).float()
    cases["bfloat16 Q_s torch bit path"] = lambda: _sr32(x, FORMATS["bfloat16"], 12345)
    times = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(rounds):
        for k, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["x.clone()"])
    print(f"n = {n:.0e} float32, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {rounds}")
    print(f"{'case':36s} {'median ms':>10s} {'x clone':>8s}")
    for k, ts in times.items():
        t = statistics.median(ts)
        print(f"{k:36s} {t * 1e3:10.2f} {t / base:8.2f}")


if __name__ == "__main__":
    main(int(float(sys.argv[1])) if len(sys.argv) > 1 else 10**7)
