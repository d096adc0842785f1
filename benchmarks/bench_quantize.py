"""Rounding speed, measured side by side in one run (interleaved rounds, medians).

1. SR of 10^7 float32 values vs ``x.clone()`` (goal, issue 2: <= 2.0x) with the C kernel.
2. The non-kernel path (issue 10: <= 1.5x the naive one-liner ``floor(x/Δ + rand_like(x))·Δ``
   in the same dtype): float32 with the C kernel bypassed, and float64. That path is the
   ``torch.compile``'d function (its compile time is printed separately); the old eager path
   is timed too, for reference.
3. ``quantize`` on 1,000 float32 values (issue 10: <= 10 µs median).

    .venv/bin/python benchmarks/bench_quantize.py [--n 10000000] [--rounds 7]
"""
import argparse
import os
import statistics
import time

import torch

from qtrain import Grid, _compiled, _kernel, quantize
from qtrain.rng import resolve_key
from qtrain.rounding import _eager


def timed(fn, reps=1):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def side_by_side(cases, rounds, reps=1):
    for fn in cases.values():
        fn()  # warm-up
    times = {k: [] for k in cases}
    names = list(cases)
    for r in range(rounds):  # interleaved, order rotating each round
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(timed(cases[k], reps))
    return {k: statistics.median(v) for k, v in times.items()}


def table(title, med, base_name, unit=1e3, unit_name="ms"):
    print(f"\n{title}")
    print(f"{'case':44s} {'median ' + unit_name:>11s} {'ratio':>7s}")
    for k, t in med.items():
        print(f"{k:44s} {t * unit:11.3f} {t / med[base_name]:7.2f}   (vs {base_name})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10**7)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    n, g, key = args.n, Grid.uniform(2**-4), resolve_key(1)
    d = g.delta
    print(f"n = {n:.0e}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}, C kernel: {'yes' if _kernel.get() else 'no'}, "
          f"compiled path: {'yes' if _compiled.get() else 'no'}")
    torch.manual_seed(0)
    x32 = torch.randn(n)
    x64 = x32.double()

    # compile time, separately (first call per dtype; Inductor's on-disk cache makes later processes faster)
    for x in (x32, x64):
        t = time.perf_counter()
        ok = _compiled.quantize_flat(x[:8].clone(), g, True, key) is not None
        print(f"compile {x.dtype}: {time.perf_counter() - t:.1f} s" + ("" if ok else " (unavailable: eager fallback)"))

    if _kernel.get():
        table(f"1. C kernel, float32 (goal: SR <= 2.0x clone)", side_by_side({
            "x.clone()": lambda: x32.clone(),
            "qtrain SR (kernel)": lambda: quantize(x32, g, "stochastic", generator=1),
            "qtrain R (kernel)": lambda: quantize(x32, g, "nearest"),
        }, args.rounds), "x.clone()")

    kernel_get = _kernel.get
    _kernel.get = lambda: None  # section 2: quantize() as it runs without the C kernel (GPUs, float64, no compiler)
    for x in (x32, x64):
        cases = {
            "floor(x/Δ + rand_like(x))·Δ": lambda x=x: torch.floor(x / d + torch.rand_like(x)) * d,
            "x.clone()": lambda x=x: x.clone(),
            "quantize SR (compiled path)": lambda x=x: quantize(x, g, "stochastic", generator=1),
            "quantize R (compiled path)": lambda x=x: quantize(x, g),
        }
        if n <= 10**7:
            cases["qtrain SR, eager fallback"] = lambda x=x: _eager(x, g, True, key)
        rounds = args.rounds if n <= 10**7 else 3
        table(f"2. non-kernel path, {x.dtype} (goal: SR <= 1.5x the one-liner)",
              side_by_side(cases, max(3, rounds // 2 + 1)), "floor(x/Δ + rand_like(x))·Δ")
    _kernel.get = kernel_get

    small = torch.randn(1000)
    table("3. quantize on 1,000 float32 values (goal: <= 10 µs median)", side_by_side({
        "x.clone()": lambda: small.clone(),
        "quantize SR": lambda: quantize(small, g, "stochastic", generator=1),
        "quantize R": lambda: quantize(small, g),
    }, 15, reps=200), "x.clone()", 1e6, "µs")


if __name__ == "__main__":
    main()
