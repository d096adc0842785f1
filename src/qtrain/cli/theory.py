"""``qtrain convex | toy | markov``: the poster's theory, one command each (see :mod:`qtrain.theory`).

Each runs ``qtrain.theory.<name>.run`` (which writes ``<name>.json``) and then draws ``<name>.png``
beside it with :func:`qtrain.plots.theory.draw`.
"""
from __future__ import annotations

import argparse
import sys
import time


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <name>.json and <name>.png")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    p.add_argument("--quick", action="store_true", help="reduced workload (seconds; used by tests and reproduce)")


def _progress(name: str, t0: float):
    """A callback printing ``qtrain NAME [12.3 s] TEXT`` to stderr (stdout keeps the results)."""
    return lambda text: print(f"qtrain {name} [{time.perf_counter() - t0:.1f} s] {text}", file=sys.stderr, flush=True)


def _done(name: str, record: dict, out: str, t0: float, summary: str) -> int:
    from qtrain.plots.theory import draw

    draw(record, out)
    print(f"qtrain {name}: {summary}")
    print(f"qtrain {name}: wrote {record['files']['json']} and {record['files']['png']} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def _convex(args) -> int:
    from qtrain.theory import convex

    t0 = time.perf_counter()
    if args.grid != "uniform":
        return _convex_float(args, t0)
    r = convex.run(args.out, seed=args.seed, quick=args.quick, d=args.dim, deltas=args.deltas, T=args.T,
                   seeds=args.seeds, progress=_progress("convex", t0))
    slopes = ", ".join(f"{k} {v:.2f}" for k, v in r["sr_floor_slope"].items() if v is not None) or "n/a (one Δ)"
    return _done("convex", r, args.out, t0,
                 f"SR floor slope vs Δ: {slopes}; all gaps under bounds: {r['all_under_bound']}"
                 + ("" if r["all_under_bound"] else f" ({len(r['over_bound'])} over, see over_bound)"))


def _convex_float(args, t0) -> int:
    from qtrain.theory import convex_float

    if args.deltas is not None:
        raise ValueError(f"--deltas applies to --grid uniform; --grid {args.grid} sets the step by the format")
    r = convex_float.run(args.out, seed=args.seed, quick=args.quick, d=args.dim, T=args.T, seeds=args.seeds,
                         formats=None if args.grid == "float" else [args.grid], progress=_progress("convex", t0))
    rows = "; ".join(f"{x['problem']} {x['format']}: SR {x['sr_float_gap']:.2e} vs uniform(Δ_eff={x['delta_eff']:.1e}) "
                     f"{x['sr_uniform_gap']:.2e}" for x in r["rows"])
    return _done("convex", r, args.out, t0,
                 f"SR gap at T={r['T']}: {rows}; under Theorem 1's bound: {r['all_under_bound']}")


def _toy(args) -> int:
    from qtrain.theory import toy

    t0 = time.perf_counter()
    r = toy.run(args.out, seed=args.seed, quick=args.quick, lrs=args.lrs, iters=args.iters, sigma=args.sigma,
                progress=_progress("toy", t0))
    fmt = lambda v: " ".join(f"{x:.3f}" for x in v)  # noqa: E731
    return _done("toy", r, args.out, t0,
                 f"mass at minimizer, lr {r['lrs_descending']}: BC {fmt(r['bc_mass_at_min_by_lr'])}; "
                 f"SR {fmt(r['sr_mass_at_min_by_lr'])}")


def _markov(args) -> int:
    from qtrain.theory import markov

    t0 = time.perf_counter()
    r = markov.run(args.out, seed=args.seed, quick=args.quick, alphas=args.alphas, alpha_sim=args.alpha_sim,
                   sim_steps=args.sim_steps, progress=_progress("markov", t0))
    return _done("markov", r, args.out, t0,
                 f"TV(pi_alpha, pi_tilde) at alpha={r['alphas'][-1]:g}: {r['tv_to_limit'][-1]:.2e}; "
                 f"pi_tilde in [{r['pi_tilde_min']:.2e}, {r['pi_tilde_max']:.3f}]; "
                 f"TV exact vs simulated {r['tv_exact_vs_simulated']:.4f}")


def register(subparsers) -> None:
    p = subparsers.add_parser("convex", help="Theorems 1, 4 and Corollary 1 on strongly convex problems",
                              description="R, SR, BC (Q_s and Q_d forward) on a quadratic and an L2-regularised "
                              "logistic regression; gap of the averaged iterate vs T and vs Δ, with the bounds.")
    _common(p)
    p.add_argument("--dim", type=int, default=10, help="problem dimension d (default 10)")
    p.add_argument("--deltas", type=float, nargs="+", default=None, help="grid steps (default 2^-2 ... 2^-8)")
    p.add_argument("--T", type=int, default=None, help="iterations (default 20000, quick 2000)")
    p.add_argument("--seeds", type=int, default=None, help="repetitions per setting (default 64, quick 16)")
    p.add_argument("--grid", default="uniform", choices=["uniform", "float", "bfloat16", "float16", "float8_e4m3fn",
                                                          "float8_e5m2"],
                   help="uniform (default: the Δ sweep) or float-format grids, step relative to |w| "
                        "(float = all four formats); writes convex_float.json/.png")
    p.set_defaults(func=_convex)
    p = subparsers.add_parser("toy", help="exploration vs exploitation: BC and SR histograms on a toy problem",
                              description="BC and SR on a 1-D non-convex toy, 10^6 iterations per learning rate.")
    _common(p)
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="learning rates (default 1 0.1 0.01 0.001)")
    p.add_argument("--iters", type=int, default=None, help="iterations per run (default 10^6, quick 10^5)")
    p.add_argument("--sigma", type=float, default=2.0, help="gradient-noise standard deviation (default 2)")
    p.set_defaults(func=_toy)
    p = subparsers.add_parser("markov", help="Theorem 5: SR as a Markov chain; pi_alpha -> pi_tilde",
                              description="Exact T_alpha, pi_alpha, U, T-tilde and pi-tilde for the toy's SR.")
    _common(p)
    p.add_argument("--alphas", type=float, nargs="+", default=None, help="step sizes (default 1 ... 0.001)")
    p.add_argument("--alpha-sim", type=float, default=0.1, help="step size of the simulated chain (default 0.1)")
    p.add_argument("--sim-steps", type=int, default=None, help="simulated SR steps (default 10^6, quick 2e5)")
    p.set_defaults(func=_markov)
