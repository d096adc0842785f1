"""Speed of the theory commands (not a test): ``python benchmarks/bench_theory.py``.

1. The toy figure's whole workload: BC and SR x 4 learning rates x 10^6 iterations (target 2 s).
   Fast because each chain runs in a small compiled C loop that calls qtrain's own rounding
   kernel through a function pointer (no Python per step), with noise drawn in bulk by torch.
2. pi_alpha for a chain of >= 10^4 states (target 1 s): 1-D toy gradient on Grid.uniform(2^-10,
   bits=14) (16384 levels in [-8, 8)), alpha = 0.001, sigma = 2: exact banded T_alpha + sparse LU.
"""
import time

import numpy as np

from qtrain import Grid
from qtrain.theory import _chain, markov, toy


def best_of(fn, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def toy_workload():
    return [toy.simulate(m, lr, 1_000_000, 0, 100 * i + j)
            for i, m in enumerate(("bc", "sr")) for j, lr in enumerate((1.0, 0.1, 0.01, 0.001))]


def pi_alpha_1e4():
    g = Grid.uniform(2.0**-10, bits=14)
    return markov.stationary(markov.transition_matrix(g, toy.gradient, 2.0, 0.001))


if __name__ == "__main__":
    print(f"engine: {'compiled loop + qtrain rounding kernel' if _chain.fast_available() else 'Python loop'}")
    t, hists = best_of(toy_workload)
    assert all(h.sum() == 1_000_000 for h in hists)
    print(f"toy workload (2 methods x 4 lrs x 1e6 iters): {t:.3f} s  target 2 s  ratio {t / 2:.2f}")
    t, pi = best_of(pi_alpha_1e4)
    assert abs(pi.sum() - 1) < 1e-9 and pi.size == 16384
    print(f"pi_alpha, 16384 states (alpha=0.001): {t:.3f} s  target 1 s  ratio {t / 1:.2f}")
