"""Every result of the poster in one report: ``qtrain reproduce --scale quick|mini|cpu|paper --out DIR``.

Runs the theory commands (convex, toy, markov; reduced workloads at the quick scale) and
Table 1 at the scale (``seeds`` runs per cell, in ``workers`` processes), then writes
``DIR/report.md``, ``DIR/report.html`` (the same content) and ``DIR/report.json``: each poster
claim in one line, the figure that shows it, the measured numbers beside the poster's, and a
verdict -- reproduced, not reproduced, inconclusive, or none with the reason
(:mod:`qtrain.experiments.verdicts` states the rules). Thresholds that turn numbers into
verdicts are project choices, stated next to each claim.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, List, Optional

import torch

from .. import __version__
from .._io import atomic_write_bytes, atomic_write_json
from . import render, stats, verdicts
from .table1 import SEEDS, cell_config, cells, check_cell_seeds, check_data, cores, run_table1
from .verdicts import Claim, from_bool

PARTS = ("convex", "toy", "markov", "table1")


def run_reproduce(scale: str, out: Path, data_dir: Optional[str] = None, seed: int = 0, device: Optional[str] = None,
                  epochs: Optional[int] = None, progress: bool = True, log: Callable = print,
                  table1_cells: Optional[List[str]] = None, train_subset: Optional[int] = None,
                  seeds: Optional[int] = None, workers: Optional[int] = None, command: Optional[str] = None,
                  retrain: bool = False, report_only: bool = False, settings: Optional[dict] = None,
                  seeds_per_cell: Optional[dict] = None, **overrides) -> dict:
    """Run all parts at ``scale`` into ``out`` and write the report; returns the report dict.

    ``command`` (the command line, if any) is recorded in the report; ``retrain`` trains Table 1's
    runs again instead of reusing finished ones; ``settings`` (a mapping, e.g. from ``--set``) and
    ``overrides`` are TrainConfig fields of every Table 1 cell. ``seed`` seeds the theory parts; Table 1 runs ``seeds`` seeds per cell (default per scale:
    quick 5, mini 3, paper 1; ``seeds_per_cell`` ``{cell: N}`` for cells given their own count) in
    ``workers`` processes (default: one per core at the CPU scales).
    ``report_only`` computes nothing: it reads ``theory/*.json`` and the finished Table 1 runs
    under ``out`` and writes the report again (with the current rules).
    """
    from ..plots.theory import draw
    from ..theory import convex, markov, toy

    if scale not in ("quick", "mini", "cpu", "paper"):
        raise ValueError(f"scale={scale!r} is not one of quick, mini, cpu, paper")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; pass a directory for the report")
    out.mkdir(parents=True, exist_ok=True)
    quick = scale == "quick"
    check_cell_seeds(scale, seeds_per_cell)
    names = table1_cells or list(cells(scale))  # data first: a missing --data-dir stops before the theory parts
    if not report_only:  # --report-only reads finished runs only: it needs no data
        check_data([cell_config(cells(scale)[n], data_dir=data_dir, **{**(settings or {}), **overrides})
                    for n in names if n in cells(scale)])
    results, times = {}, {}
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    t_start = time.perf_counter()
    for i, part in enumerate(PARTS, 1):
        rest = ", ".join(PARTS[i:]) or "nothing"
        log(f"== reproduce [{i}/{len(PARTS)}] {part} (then: {rest}) ==")
        t0 = time.perf_counter()
        if part == "table1":
            results[part] = run_table1(scale, out / "table1", data_dir=data_dir, only=table1_cells, progress=progress,
                                       log=log, epochs=epochs, device=device, train_subset=train_subset, seeds=seeds,
                                       workers=workers, retrain=retrain, report_only=report_only, command=command,
                                       settings=settings, seeds_per_cell=seeds_per_cell, **overrides)
        elif report_only:
            results[part] = _read_theory(out / "theory" / f"{part}.json")
        else:
            module = {"convex": convex, "toy": toy, "markov": markov}[part]
            results[part] = module.run(str(out / "theory"), seed=seed, quick=quick)
            draw(results[part], out / "theory")
        times[part] = time.perf_counter() - t0
        log(f"   {part} done in {times[part]:.1f} s")
    t1 = results["table1"]
    theory = [asdict(c) for c in theory_claims(results["convex"], results["toy"], results["markov"])]
    claims = theory + t1["claims"]
    counts = verdicts.tally(claims)
    report = {"scale": scale, "seed": seed, "seeds": t1["seeds_requested"] if seeds is None else seeds,
              "default_seeds": SEEDS[scale], "alpha": stats.ALPHA, "overrides": {**(settings or {}), **overrides}, "claims": claims,
              "table1_counts": verdicts.tally(t1["claims"]), "theory_counts": verdicts.tally(theory), **counts,
              "seconds": times, "wall_seconds": time.perf_counter() - t_start, "command": command,
              "started": started, "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "table1": {**{k: t1[k] for k in ("runs_trained", "runs_reused", "reused_seconds", "workers")},
                         "seeds_per_cell": t1.get("seeds_per_cell", {}), "missing": t1.get("missing", [])},
              "table1_cells": [{k: c[k] for k in ("cell", "column", "row", "label", "paper_column", "paper_error", "seeds",
                                                 "test_errors", "test_error", "test_error_sem", "weight_change_mean",
                                                 "n_test", "model", "data", "width", "threads", "steps", "protocol")}
                              for c in t1["cells"]],
              "machine": machine(), "run_machines": t1.get("run_machines", []), "report_only": report_only}
    atomic_write_json(out / "report.json", report)
    md = render.markdown(report)
    atomic_write_bytes(out / "report.md", md.encode())
    atomic_write_bytes(out / "report.html", render.to_html(md, f"qtrain reproduction report ({scale} scale)", base=out).encode())
    log(f"== reproduce: {verdicts.headline(report['table1_counts'], 'Table 1 claims')}; "
        f"{verdicts.headline(report['theory_counts'], 'theory checks')}; report in {out / 'report.md'} ==")
    return report


def _read_theory(path: Path) -> dict:
    """A theory part's record as its run wrote it (for ``report_only``)."""
    import json

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --report-only needs the theory parts of an earlier run in --out "
                                "(run without --report-only first)")
    return json.loads(path.read_text())


def machine() -> dict:
    from ..train.provenance import cpu_capability, cpu_model

    return {"host": platform.node(), "cpu": cpu_model(), "capability": cpu_capability(), "cores": cores(),
            "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "qtrain": __version__, "python": platform.python_version()}


def _fmt(values, digits=3) -> str:
    return ", ".join(f"{v:.{digits}g}" for v in values)


def theory_claims(cv: dict, ty: dict, mk: dict) -> List[Claim]:
    """The theory parts' claims; their checks are deterministic, so each is reproduced or not."""
    slopes = cv["sr_floor_slope"]
    bc_ratio = list(cv["bc_quadratic_gap_ratio"].values())
    r_ratio = cv["r_stall_ratio"]["quadratic"]
    lrs = ty["lrs_descending"]
    tv = mk["tv_to_limit"]
    return [Claim(*c[:6], from_bool(c[6]), c[7]) for c in (
        ("thm1-floor", "SR converges only up to an accuracy floor that grows with Δ", "Theorem 1",
          "theory/convex.png", f"log-log slope of SR's final gap vs Δ: "
          + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()), "floor term √d·Δ·G/2 (linear in Δ)",
          all(cv["sr_floor_grows"].values()), "slope > 0.5 on every problem"),
        ("bounds", "SR and BC gaps stay under the Theorem 1 / Theorem 4 bounds", "Theorems 1, 4",
          "theory/convex.png", f"{'no' if not cv['over_bound'] else len(cv['over_bound'])} measured gap(s) over "
          "their bound", "E[F(w̄_T) − F(w*)] ≤ bound", bool(cv["all_under_bound"]),
          "every (problem, method, Δ, T) mean gap ≤ its bound"),
        ("cor1-bc", "BC on a quadratic has no floor: it converges to the true minimizer", "Corollary 1",
          "theory/convex.png", f"BC (Q_s) gap(T)/gap(T/10) per Δ: {_fmt(bc_ratio, 2)}",
          "floor D·L₂·√(dΔ)/2 = 0 when L₂ = 0", bool(cv["bc_quadratic_no_floor"]),
          "ratio < 0.5 for every Δ (the gap keeps falling)"),
        ("r-stalls", "Fully quantized deterministic rounding (R) stalls", "Training methods; Table 1",
          "theory/convex.png", f"R gap(T)/gap(T/10) on the quadratic: {_fmt(r_ratio.values(), 2)}",
          "R-ADAM is the worst row of Table 1", bool(cv["r_stalls"]["quadratic"]),
          "ratio > 0.5 for every Δ on the quadratic"),
        ("toy-bc", "As the learning rate shrinks, BC concentrates on a minimizer", "Exploration-exploitation figure",
          "theory/toy.png", f"BC mass at the global minimizer for lr {_fmt(lrs)}: {_fmt(ty['bc_mass_at_min_by_lr'])}",
          "BC histogram concentrates", bool(ty["bc_mass_rises"]), "mass rises with shrinking lr and ends ≥ 0.9"),
        ("toy-sr", "As the learning rate shrinks, SR's distribution stagnates (stays spread out)",
          "Exploration-exploitation figure", "theory/toy.png",
          f"SR mass at the global minimizer for lr {_fmt(lrs)}: {_fmt(ty['sr_mass_at_min_by_lr'])}",
          "SR histogram does not concentrate", bool(ty["sr_stays_spread"]), "SR's mass at the smallest lr ≤ 0.6"),
        ("thm5-limit", "SR's stationary distribution π_α tends to π̃ as α → 0", "Theorem 5", "theory/markov.png",
          f"TV(π_α, π̃) for α {_fmt(mk['alphas'])}: {_fmt(tv, 2)}", "lim π_α = π̃", bool(mk["tv_falls"]),
          "TV falls with α and ends < 0.02"),
        ("thm5-spread", "π̃(x) > 0 for every state: SR is not concentrated on minimizers", "Theorem 5",
          "theory/markov.png", f"π̃ min {mk['pi_tilde_min']:.2e}, max {mk['pi_tilde_max']:.3f} "
          f"(at the minimizer: {mk['pi_tilde_at_minimizer']:.3f})", "π̃(x) > 0, not concentrated",
          mk["pi_tilde_min"] > 0 and mk["pi_tilde_max"] < 0.9, "min > 0 and max < 0.9"),
        ("thm5-exact", "The exact chain T_α describes simulated SR", "SR as a Markov chain", "theory/markov.png",
          f"TV(exact π_α, {mk['sim_steps']:,}-step simulation) = {mk['tv_exact_vs_simulated']:.4f} at α = {mk['alpha_sim']:g}",
          "SR is a Markov chain with transition matrix T_α", bool(mk["sim_agrees"]), "TV < 0.02"),
        ("squish", "Shrinking α 'squishes' moves but keeps the odds of moving right vs left", "SR as a Markov chain",
          "theory/markov.png", f"P(right, given a move) for α {_fmt(mk['alphas'])}: {_fmt(mk['p_right_given_move'])}; "
          f"limit {mk['p_right_limit']:.4f}", "T(0,1|move) = ∫₀^∞p(x)x dx / ∫|x|p(x) dx, independent of α",
          mk["p_right_spread_small_alpha"] < 0.05, "spread over α ≤ 0.1 below 0.05"),
    )]
