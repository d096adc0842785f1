"""Every result of the poster in one report: ``qtrain reproduce --scale quick|mini|paper --out DIR``.

Runs the theory commands (convex, toy, markov; reduced workloads at the quick scale) and
Table 1 at the scale, then writes ``DIR/report.md`` and ``DIR/report.html``: each poster claim
in one line, the figure that shows it, the measured numbers beside the poster's, and a
verdict (reproduced / not reproduced). Thresholds that turn numbers into verdicts are
project choices, stated next to each claim.
"""
from __future__ import annotations

import html
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch

from .. import __version__
from .._io import atomic_write_bytes, atomic_write_json
from .table1 import ORDER, ROWS, run_table1

PARTS = ("convex", "toy", "markov", "table1")


@dataclass
class Claim:
    id: str
    claim: str          # the poster's statement, one line
    source: str         # where on the poster
    figure: str         # file (relative to the report) that shows it
    measured: str
    poster: str
    verdict: bool
    rule: str           # how the verdict is decided [choice]


def run_reproduce(scale: str, out: Path, data_dir: Optional[str] = None, seed: int = 0, device: Optional[str] = None,
                  epochs: Optional[int] = None, progress: bool = True, log: Callable = print,
                  table1_cells: Optional[List[str]] = None, train_subset: Optional[int] = None, **overrides) -> dict:
    """Run all parts at ``scale`` into ``out`` and write the report; returns the report dict."""
    from ..theory import convex, markov, toy

    if scale not in ("quick", "mini", "paper"):
        raise ValueError(f"scale={scale!r} is not one of quick, mini, paper")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; pass a directory for the report")
    out.mkdir(parents=True, exist_ok=True)
    quick = scale == "quick"
    results, times = {}, {}
    t_start = time.perf_counter()
    for i, part in enumerate(PARTS, 1):
        rest = ", ".join(PARTS[i:]) or "nothing"
        log(f"== reproduce [{i}/{len(PARTS)}] {part} (then: {rest}) ==")
        t0 = time.perf_counter()
        if part == "table1":
            results[part] = run_table1(scale, out / "table1", data_dir=data_dir, only=table1_cells, progress=progress,
                                       log=log, epochs=epochs, device=device, train_subset=train_subset, **overrides)
        else:
            module = {"convex": convex, "toy": toy, "markov": markov}[part]
            results[part] = module.run(str(out / "theory"), seed=seed, quick=quick)
        times[part] = time.perf_counter() - t0
        log(f"   {part} done in {times[part]:.1f} s")
    claims = theory_claims(results["convex"], results["toy"], results["markov"]) + table1_claims(results["table1"])
    report = {"scale": scale, "seed": seed, "overrides": overrides, "claims": [asdict(c) for c in claims],
              "reproduced": sum(c.verdict for c in claims), "total": len(claims), "seconds": times,
              "wall_seconds": time.perf_counter() - t_start, "machine": machine()}
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "report.md", markdown(report).encode())
    atomic_write_bytes(out / "report.html", to_html(report).encode())
    log(f"== reproduce: {report['reproduced']}/{report['total']} claims reproduced; report in {out / 'report.md'} ==")
    return report


def machine() -> dict:
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "qtrain": __version__, "python": platform.python_version()}


def _fmt(values, digits=3) -> str:
    return ", ".join(f"{v:.{digits}g}" for v in values)


def theory_claims(cv: dict, ty: dict, mk: dict) -> List[Claim]:
    slopes = cv["sr_floor_slope"]
    bc_ratio = list(cv["bc_quadratic_gap_ratio"].values())
    r_ratio = cv["r_stall_ratio"]["quadratic"]
    lrs = ty["lrs_descending"]
    tv = mk["tv_to_limit"]
    return [
        Claim("thm1-floor", "SR converges only up to an accuracy floor that grows with Δ", "Theorem 1",
              "theory/convex.png", f"log-log slope of SR's final gap vs Δ: "
              + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()), "floor term √d·Δ·G/2 (linear in Δ)",
              all(cv["sr_floor_grows"].values()), "slope > 0.5 on every problem"),
        Claim("bounds", "SR and BC gaps stay under the Theorem 1 / Theorem 4 bounds", "Theorems 1, 4",
              "theory/convex.png", f"{'no' if not cv['over_bound'] else len(cv['over_bound'])} measured gap(s) over "
              "their bound", "E[F(w̄_T) − F(w*)] ≤ bound", bool(cv["all_under_bound"]),
              "every (problem, method, Δ, T) mean gap ≤ its bound"),
        Claim("cor1-bc", "BC on a quadratic has no floor: it converges to the true minimizer", "Corollary 1",
              "theory/convex.png", f"BC (Q_s) gap(T)/gap(T/10) per Δ: {_fmt(bc_ratio, 2)}",
              "floor D·L₂·√(dΔ)/2 = 0 when L₂ = 0", bool(cv["bc_quadratic_no_floor"]),
              "ratio < 0.5 for every Δ (the gap keeps falling)"),
        Claim("r-stalls", "Fully quantized deterministic rounding (R) stalls", "Training methods; Table 1",
              "theory/convex.png", f"R gap(T)/gap(T/10) on the quadratic: {_fmt(r_ratio.values(), 2)}",
              "R-ADAM is the worst row of Table 1", bool(cv["r_stalls"]["quadratic"]),
              "ratio > 0.5 for every Δ on the quadratic"),
        Claim("toy-bc", "As the learning rate shrinks, BC concentrates on a minimizer", "Exploration-exploitation figure",
              "theory/toy.png", f"BC mass at the global minimizer for lr {_fmt(lrs)}: {_fmt(ty['bc_mass_at_min_by_lr'])}",
              "BC histogram concentrates", bool(ty["bc_mass_rises"]), "mass rises with shrinking lr and ends ≥ 0.9"),
        Claim("toy-sr", "As the learning rate shrinks, SR's distribution stagnates (stays spread out)",
              "Exploration-exploitation figure", "theory/toy.png",
              f"SR mass at the global minimizer for lr {_fmt(lrs)}: {_fmt(ty['sr_mass_at_min_by_lr'])}",
              "SR histogram does not concentrate", bool(ty["sr_stays_spread"]), "SR's mass at the smallest lr ≤ 0.6"),
        Claim("thm5-limit", "SR's stationary distribution π_α tends to π̃ as α → 0", "Theorem 5", "theory/markov.png",
              f"TV(π_α, π̃) for α {_fmt(mk['alphas'])}: {_fmt(tv, 2)}", "lim π_α = π̃", bool(mk["tv_falls"]),
              "TV falls with α and ends < 0.02"),
        Claim("thm5-spread", "π̃(x) > 0 for every state: SR is not concentrated on minimizers", "Theorem 5",
              "theory/markov.png", f"π̃ min {mk['pi_tilde_min']:.2e}, max {mk['pi_tilde_max']:.3f} "
              f"(at the minimizer: {mk['pi_tilde_at_minimizer']:.3f})", "π̃(x) > 0, not concentrated",
              mk["pi_tilde_min"] > 0 and mk["pi_tilde_max"] < 0.9, "min > 0 and max < 0.9"),
        Claim("thm5-exact", "The exact chain T_α describes simulated SR", "SR as a Markov chain", "theory/markov.png",
              f"TV(exact π_α, 10⁶-step simulation) = {mk['tv_exact_vs_simulated']:.4f} at α = {mk['alpha_sim']:g}",
              "SR is a Markov chain with transition matrix T_α", bool(mk["sim_agrees"]), "TV < 0.02"),
        Claim("squish", "Shrinking α 'squishes' moves but keeps the odds of moving right vs left", "SR as a Markov chain",
              "theory/markov.png", f"P(right, given a move) for α {_fmt(mk['alphas'])}: {_fmt(mk['p_right_given_move'])}; "
              f"limit {mk['p_right_limit']:.4f}", "T(0,1|move) = ∫₀^∞p(x)x dx / ∫|x|p(x) dx, independent of α",
              mk["p_right_spread_small_alpha"] < 0.05, "spread over α ≤ 0.1 below 0.05"),
    ]


def table1_claims(t1: dict) -> List[Claim]:
    claims = []
    by = {}
    for c in t1["cells"]:
        by.setdefault(c["column"], {})[c["row"]] = c
    for col, ch in t1["checks"].items():
        cells = by[col]
        err = {r: c["test_error"] for r, c in cells.items() if c["test_error"] is not None}
        paper_col = next(iter(cells.values()))["paper_column"]
        paper = {r: cells[r]["paper_error"] for r in cells}
        fig = "table1/table1_error.png"
        order = " < ".join(ROWS[r] for r in ch["measured_order"])
        claims.append(Claim(f"{col}-order", "Error ordering ADAM < BC-ADAM < Big SR-ADAM < SR-ADAM < R-ADAM",
                            f"Table 1 ({col})", fig, f"{order}; errors " + ", ".join(
                                f"{ROWS[r]} {err[r]:.2f}" for r in ORDER if r in err),
                            f"{paper_col}: " + ", ".join(f"{ROWS[r]} {paper[r]:.2f}" for r in ORDER if r in paper and paper[r]),
                            bool(ch["ordering_reproduced"]), "measured order equals the poster's"))
        if {"adam", "bc-adam", "sr-adam"} <= set(err):
            gap_bc, gap_sr = err["bc-adam"] - err["adam"], err["sr-adam"] - err["adam"]
            claims.append(Claim(f"{col}-bc-close", "BC-ADAM is comparable to full-precision ADAM", f"Table 1 ({col})", fig,
                                f"BC − ADAM = {gap_bc:.2f} points; SR − ADAM = {gap_sr:.2f}",
                                f"BC − ADAM = {paper['bc-adam'] - paper['adam']:.2f}" if paper.get("adam") else "–",
                                gap_bc <= 0.5 * gap_sr, "BC's gap to ADAM ≤ half of SR's"))
        if {"sr-adam", "r-adam"} <= set(err):
            claims.append(Claim(f"{col}-sr-beats-r", "SR-ADAM outperforms R-ADAM", f"Table 1 ({col})", fig,
                                f"SR {err['sr-adam']:.2f} vs R {err['r-adam']:.2f}",
                                f"SR {paper['sr-adam']:.2f} vs R {paper['r-adam']:.2f}" if paper.get("sr-adam") else "–",
                                err["sr-adam"] < err["r-adam"], "SR error < R error"))
        if ch["big_batch_helps_sr"] is not None:
            claims.append(Claim(f"{col}-big-batch", "A bigger batch makes SR greedier and lowers its error",
                                f"Table 1 ({col}); big-batch effect", fig,
                                f"Big SR {err['big-sr-adam']:.2f} vs SR {err['sr-adam']:.2f}",
                                f"Big SR {paper['big-sr-adam']:.2f} vs SR {paper['sr-adam']:.2f}" if paper.get("sr-adam") else "–",
                                bool(ch["big_batch_helps_sr"]), "Big SR error < SR error"))
        if ch["sr_changes_more_than_bc"] is not None:
            wc = {r: cells[r]["weight_change_mean"] for r in cells}
            claims.append(Claim(f"{col}-explore", "SR-ADAM explores: it changes more weights than BC-ADAM (and R-ADAM)",
                                "Exploration vs exploitation figure", "table1/table1_weight_change.png",
                                "% of quantized weights changed (mean over layers): " + ", ".join(
                                    f"{ROWS[r]} {wc[r]:.1f}" for r in ("sr-adam", "bc-adam", "r-adam", "big-sr-adam")
                                    if wc.get(r) is not None),
                                "SR-ADAM up to ~40%, BC-ADAM < 20%, R-ADAM barely moves",
                                bool(ch["sr_changes_more_than_bc"]) and (wc.get("r-adam") is None or wc["sr-adam"] > wc["r-adam"]),
                                "SR's mean % changed > BC's and > R's"))
    return claims


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# qtrain reproduction report ({report['scale']} scale)", "",
             f"**{report['reproduced']} of {report['total']} claims reproduced.** Wall time {report['wall_seconds']:.0f} s "
             f"({', '.join(f'{k} {v:.0f} s' for k, v in report['seconds'].items())}); seed {report['seed']}; "
             f"torch {m['torch']}, {m['threads']} threads, {m['cuda'] or 'CPU'}, host {m['host']}"
             + (f"; Table 1 overrides {report['overrides']}" if report.get("overrides") else "") + ".", "",
             "| claim | source | measured | poster | verdict |", "|---|---|---|---|---|"]
    for c in report["claims"]:
        lines.append(f"| {c['claim']} | {c['source']} | {c['measured']} | {c['poster']} | "
                     f"{'reproduced' if c['verdict'] else '**not reproduced**'} |")
    lines += ["", "## Claims one by one", ""]
    for c in report["claims"]:
        lines += [f"### {c['claim']}", "",
                  f"- Verdict: **{'reproduced' if c['verdict'] else 'not reproduced'}** (rule [choice]: {c['rule']})",
                  f"- Measured: {c['measured']}", f"- Poster: {c['poster']} ({c['source']})", "",
                  f"![{c['id']}]({c['figure']})", ""]
    lines += ["Details: `theory/*.json`, `table1/table1.md`, `table1/runs/*/metrics.jsonl`."]
    return "\n".join(lines) + "\n"


def to_html(report: dict) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(c['claim'])}</td><td>{e(c['source'])}</td><td>{e(c['measured'])}</td>"
                   f"<td>{e(c['poster'])}</td><td style='color:{'green' if c['verdict'] else 'crimson'}'>"
                   f"{'reproduced' if c['verdict'] else 'not reproduced'}</td></tr>" for c in report["claims"])
    figs = "".join(f"<h3>{e(f)}</h3><img src='{e(f)}' style='max-width:100%'>"
                   for f in dict.fromkeys(c["figure"] for c in report["claims"]))
    return (f"<!doctype html><meta charset='utf-8'><title>qtrain report</title>"
            f"<body style='font-family:sans-serif;max-width:1100px;margin:auto'>"
            f"<h1>qtrain reproduction report ({e(report['scale'])} scale)</h1>"
            f"<p><b>{report['reproduced']} of {report['total']} claims reproduced.</b></p>"
            f"<table border=1 cellpadding=4 style='border-collapse:collapse'><tr><th>claim</th><th>source</th>"
            f"<th>measured</th><th>poster</th><th>verdict</th></tr>{rows}</table>{figs}"
            f"<pre>{e(json.dumps(report['machine']))}</pre></body>")
