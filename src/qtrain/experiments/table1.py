"""Table 1 of the poster: top-1 test error of ADAM, BC-ADAM, Big SR-ADAM, SR-ADAM, R-ADAM, over seeds.

A *scale* is a folder of presets (``presets/<scale>/<column>.<row>.yaml``), one complete
:class:`~qtrain.train.TrainConfig` per cell:

* ``paper`` -- the 30 cells of the poster (GPUs and days; 1 seed by default);
* ``mini`` -- real CIFAR-10, a small CNN, a few minutes per method on 2 CPU cores (3 seeds);
* ``cpu`` -- all of CIFAR-10, a wider small CNN, two protocols as two columns and Big SR-ADAM also at
  equal optimizer steps (5 seeds; core-hours, in the background);
* ``width`` -- ADAM, BC-ADAM, SR-ADAM at four widths of the small CNN (3 seeds; :mod:`.width`);
* ``quick`` -- the embedded digits, seconds per method (5 seeds).

Each (cell, seed) is its own resumable run in ``OUT/runs/<cell>/seed<s>/`` with seed
:math:`s = s_0 + k`, :math:`k = 0, \\dots, N-1` (:math:`s_0` the preset's seed, 0 unless ``--set seed=...``;
``N`` = ``--seeds``). Finished runs are read back, interrupted ones resumed; the others train in
``workers`` processes. Each run's torch thread count is fixed by its preset (``threads``), so the
numbers do not depend on the number of workers or the machine's cores. :func:`run_table1` then
writes ``table1.json`` (per cell: ``seeds``, ``test_errors``, their mean ``test_error`` and standard
error ``test_error_sem``, ``weight_change_mean``, ``n_test``, the optimizer ``steps`` of one run and the
column's ``protocol``; per claim its verdict), ``table1.md``, ``table1_error.png`` and
``table1_weight_change.png`` (seed means with ± 1 SE bands). Cells can be
spread over machines: run ``--cells`` subsets into copies of OUT, gather the ``runs/`` folders,
then ``--report-only``.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .._io import atomic_write_bytes, atomic_write_json
from ..train import TrainConfig, run
from ..train.checkpoint import CHECKPOINT
from ..train.config import load_yaml, make, recorded
from ..train.stopping import RunStopped
from . import bigbatch, columns, stats, verdicts
from .runs import finished_seeds, provenance_text, read_summary, run_history, run_machines, steps_taken
from .poster import COLUMNS, DISPLAY, LABELS, ORDER, PAPER, ROWS  # noqa: F401  (re-exported)
from .workers import cores, default_workers, run_jobs  # noqa: F401  (cores: re-exported)

PRESETS = Path(__file__).with_name("presets")
SCALES = ("quick", "mini", "cpu", "width", "paper")
MAX_SEEDS = 1000  # a per-cell count above this is a typo, not a plan
SEEDS = {"quick": 5, "mini": 3, "cpu": 5, "width": 3, "paper": 1}  # default --seeds per scale [choice]


def cells(scale: str) -> Dict[str, Path]:
    """``{cell name: preset path}`` of a scale, cell names being ``<column>.<row>``."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not one of {', '.join(SCALES)}")
    found = {p.stem: p for p in sorted((PRESETS / scale).glob("*.yaml"))}
    if not found:
        raise FileNotFoundError(f"no presets in {PRESETS / scale}; the installation is incomplete")
    return found


def cell_config(preset: Path, **overrides) -> TrainConfig:
    """The preset's config with ``overrides`` (``None`` values ignored) applied."""
    values = load_yaml(preset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return make(values)


def _positive(name: str, value, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer, e.g. {example}")
    return value


def run_table1(scale: str, out: Path, data_dir: Optional[str] = None, only: Optional[Sequence[str]] = None,
               report_only: bool = False, progress: bool = True, log=print, seeds: Optional[int] = None,
               workers: Optional[int] = None, retrain: bool = False, command: Optional[str] = None,
               settings: Optional[dict] = None, seeds_per_cell: Optional[Dict[str, int]] = None, **overrides) -> dict:
    """Train (or collect) ``seeds`` runs of each cell of ``scale`` into ``out`` and write the Table 1 report.

    ``seeds_per_cell`` (``{cell: N}``) gives some cells their own seed count (a power plan that
    asks more seeds of the noisier cells); the others get ``seeds``. The report lists as missing
    every requested run that has not finished.

    ``overrides`` are TrainConfig fields applied to every cell (e.g. ``epochs=1`` for tests), as
    are ``settings`` (a mapping, so that fields named like this function's parameters -- ``scale``,
    the grid scale s -- can be given: ``--set``); the keyword arguments win;
    ``command`` (the command line) is what a stopped or failed table says to run again.
    ``retrain`` deletes the selected cells' run folders (finished or not) and trains them anew.
    """
    out = Path(out)
    available = cells(scale)
    names = list(available) if not only else list(only)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown cell(s) {', '.join(unknown)} for scale {scale!r}; see `qtrain table1 --scale {scale} --list`")
    n_seeds = SEEDS[scale] if seeds is None else _positive("seeds", seeds, "--seeds 5")
    per_cell = check_cell_seeds(scale, seeds_per_cell)
    if retrain and report_only:
        raise ValueError("--retrain trains the runs again and --report-only trains nothing; drop one of them")
    t0 = time.perf_counter()
    plan, jobs, done = {}, [], {}
    for name in names:
        given = dict(settings or {})
        given.update({k: v for k, v in dict(overrides, data_dir=data_dir, progress=progress).items() if v is not None})
        base = cell_config(available[name], **given)
        if (out / "runs" / name / "summary.json").exists():
            log(f"note: {out / 'runs' / name} holds a run in the old one-seed layout; it is not used "
                f"(move it to {out / 'runs' / name / f'seed{base.seed}'} to reuse it as seed {base.seed})")
        n_cell = per_cell.get(name, n_seeds)
        extra = [s - base.seed for s in finished_seeds(out / "runs" / name, base.seed + n_cell)]
        for k in [*range(n_cell), *extra]:  # finished seeds beyond the count asked (a noisy cell given more): reported too
            cfg = dataclasses.replace(base, seed=base.seed + k)
            run_dir = out / "runs" / name / f"seed{cfg.seed}"
            plan[(name, k)] = (cfg, run_dir)
            if retrain and k < n_cell and run_dir.exists():
                shutil.rmtree(run_dir)
            if (run_dir / "summary.json").exists():
                summary = read_summary(run_dir)
                _check_same_settings(f"{name}/seed{cfg.seed}", summary.get("config", {}), cfg)
                done[(name, k)] = summary
                if k >= n_cell:
                    log(f"{name} seed {cfg.seed}: finished beyond the {n_cell} seed(s) asked; reported too")
            elif report_only:
                log(f"{name} seed {cfg.seed}: no finished run in {run_dir} (skipped)")
            else:
                jobs.append(((name, k), cfg, run_dir))
    check_data([cfg for _, cfg, _ in jobs])
    threads = [cfg.threads for cfg, _ in plan.values()]
    n_workers = (default_workers(None if None in threads else max(threads, default=1)) if workers is None
                 else _positive("workers", workers, "--workers 2"))
    reused = dict(done)
    asked = {n: per_cell[n] for n in names if n in per_cell and per_cell[n] != n_seeds}
    log(f"Table 1 ({scale}): {len(names)} cell(s) x {n_seeds} seed(s)"
        + "".join(f", {n} {k}" for n, k in asked.items()) + f"; {len(reused)} run(s) finished earlier, "
        f"{len(jobs)} to train in {min(n_workers, max(len(jobs), 1))} worker process(es)")
    done.update(_train(jobs, n_workers, log, command))
    results = []
    for name in names:
        keys = sorted(key for key in done if key[0] == name)
        if not keys:
            continue
        column, row = name.split(".", 1)
        cfg0 = plan[keys[0]][0]
        results.append({"cell": name, "column": column, "row": row, "label": LABELS.get(row, row),
                        "paper_column": cfg0.extra.get("paper_column", column), "width": cfg0.width,
                        "seeds": [plan[key][0].seed for key in keys], "summaries": [done[key] for key in keys],
                        "histories": [run_history(plan[key][1]) for key in keys]})
    report = summarise(scale, results)
    missing = [{"cell": key[0], "seed": cfg.seed} for key, (cfg, _) in plan.items() if key not in done]
    report.update(wall_seconds=time.perf_counter() - t0, seeds_requested=n_seeds, seeds_per_cell=asked,
                  workers=n_workers, missing=missing,
                  runs_trained=len(jobs), runs_reused=len(reused),
                  reused_seconds=sum(s.get("seconds", 0.0) for s in reused.values()))
    write_report(report, out)
    return report


def check_cell_seeds(scale: str, seeds_per_cell: Optional[Dict[str, int]]) -> Dict[str, int]:
    """``seeds_per_cell`` checked: each key a cell of ``scale``, each count a positive integer."""
    available = cells(scale)
    for name, n in (seeds_per_cell or {}).items():
        if name not in available:
            raise ValueError(f"--cell-seeds {name}={n}: no cell {name!r} at scale {scale!r}; "
                             f"see `qtrain table1 --scale {scale} --list`")
        _positive(f"--cell-seeds {name}", n, f"--cell-seeds {name}=7")
        if n > MAX_SEEDS:
            raise ValueError(f"--cell-seeds {name}={n} is more than {MAX_SEEDS} seeds; give a planned count, e.g. "
                             f"--cell-seeds {name}=7")
    return dict(seeds_per_cell or {})


def check_data(configs: Sequence[TrainConfig]) -> None:
    """Load each dataset the runs need once, here, so a missing ``--data-dir`` stops the command with
    one line before any worker starts (ImageNet is only indexed by its runs, so it is left to them)."""
    from ..data import load_dataset

    for data, data_dir in dict.fromkeys((c.data, c.data_dir) for c in configs):
        if data != "imagenet":
            load_dataset(data, data_dir)


def _train_one(cfg_dict: dict, run_dir: str, resume: bool, epoch_lines: bool = True) -> dict:
    """One (cell, seed) run; top level so worker processes can unpickle it. Parallel workers print
    no per-epoch lines (they would interleave); the parent prints one line per finished run."""
    return run(make(cfg_dict), Path(run_dir), resume=resume, epoch_lines=epoch_lines)


def _train(jobs: list, workers: int, log, command: Optional[str] = None) -> dict:
    """Train ``jobs`` (key, cfg, run_dir) in-process (one worker) or in ``workers`` processes
    (:mod:`qtrain.experiments.workers`). A signal saves the runs in progress and raises one
    :class:`~qtrain.train.stopping.RunStopped` whose resume command is ``command`` (the
    table1/reproduce command line: finished runs are reused, interrupted ones resumed)."""
    results: dict = {}
    total = len(jobs)
    again = command or "the same command (finished runs are reused, interrupted ones resumed)"

    def report(i, key, cfg, summary):
        log(f"[{i}/{total}] {key[0]} seed {cfg.seed}: test error {_num(summary['test_error'])}% "
            f"in {summary['seconds']:.0f} s")

    if workers == 1 or total <= 1:
        for i, (key, cfg, run_dir) in enumerate(jobs, 1):
            resume = (run_dir / CHECKPOINT).exists()
            log(f"[{i}/{total}] {key[0]} seed {cfg.seed}: {'resuming' if resume else 'training'} "
                f"({cfg.model} on {cfg.data}, {cfg.method}, batch {cfg.batch_size}, {cfg.epochs} epochs)")
            try:
                results[key] = _train_one(cfg.to_dict(), str(run_dir), resume)
            except RunStopped as e:
                raise RunStopped(f"{key[0]} seed {cfg.seed}: {str(e).split('; resume with:')[0]}"
                                 + (f"; {total - i} run(s) not started" if total > i else "")
                                 + f"; resume with: {again}", e.signum) from None
            report(i, key, cfg, results[key])
        return results
    by_key = {key: cfg for key, cfg, _ in jobs}
    done = [0]

    def finished(key, summary):
        done[0] += 1
        report(done[0], key, by_key[key], summary)

    return run_jobs([(key, _train_one, ({**cfg.to_dict(), "progress": False}, str(run_dir),
                                        (run_dir / CHECKPOINT).exists(), False), f"{key[0]} seed {cfg.seed} ({run_dir})")
                     for key, cfg, run_dir in jobs], workers, finished, again)


_IGNORED = ("progress", "data_dir", "device", "download", "tensorboard")


def _check_same_settings(name: str, saved: dict, cfg: TrainConfig) -> None:
    """Refuse to report a finished run that was trained with other settings (e.g. a smoke run)."""
    for key, value in cfg.to_dict().items():
        if key == "threads" and value is None:  # the run picked its own and recorded it
            continue
        if key not in _IGNORED and recorded(saved, key) != value:
            raise ValueError(f"runs/{name} was trained with {key}={recorded(saved, key)!r}, the preset now "
                             f"says {value!r}; use another --out or delete that run folder")


def _peak(history: list) -> Optional[float]:
    """Largest % of weights changed of any layer at any epoch."""
    vals = [v for r in history for v in (r.get("weight_change") or {}).values()]
    return max(vals) if vals else None


def _values(summaries, key) -> Optional[list]:
    vals = [s.get(key) for s in summaries]
    return None if any(v is None for v in vals) else vals


def summarise(scale: str, results: List[dict]) -> dict:
    """Per cell the seeds' errors, mean and SE; per column the measured order; every claim's verdict."""
    rows = []
    for r in results:
        ss, s0 = r["summaries"], r["summaries"][0]
        errs = [s["test_error"] for s in ss]
        peaks = [_peak(h) for h in r["histories"]]
        wcm = _values(ss, "weight_change_mean")
        maxes = [max(s["weight_change"].values()) for s in ss if s.get("weight_change")]
        rows.append({"cell": r["cell"], "column": r["column"], "row": r["row"], "label": r["label"],
                     "paper_column": r["paper_column"], "paper_error": PAPER.get(r["row"], {}).get(r["paper_column"]),
                     "seeds": r["seeds"], "test_errors": errs, "test_error": stats.mean(errs),
                     "test_error_sem": stats.sem(errs), "best_test_errors": [s.get("best_test_error") for s in ss],
                     "weight_change_means": wcm, "weight_change_mean": None if wcm is None else stats.mean(wcm),
                     "weight_change_peaks": None if None in peaks else peaks,
                     "weight_change_max": stats.mean(maxes) if len(maxes) == len(ss) else None,
                     "n_test": s0.get("n_test"), "threads": s0.get("config", {}).get("threads"),
                     "seconds": sum(s["seconds"] for s in ss), "batch_size": s0["batch_size"], "epochs": s0["epochs"],
                     "model": s0["model"], "data": s0["data"], "width": r.get("width"),
                     "steps": steps_taken(s0, r["histories"][0]), "protocol": columns.protocol(s0.get("config", {})),
                     "grid": s0.get("config", {}).get("grid"),
                     "step_record": verdicts.step_summary(s0.get("method"), r["histories"], r["seeds"])})
    checks = {}
    for column in sorted({r["column"] for r in rows}):
        err = {r["row"]: r["test_error"] for r in rows if r["column"] == column}
        present = [k for k in ORDER if k in err]
        checks[column] = {"measured_order": sorted(present, key=lambda k: err[k]), "paper_order": present,
                          "pairs_in_paper_order": sum(err[a] < err[b] for i, a in enumerate(present) for b in present[i + 1:]),
                          "pairs": len(present) * (len(present) - 1) // 2}
    claims = [dataclasses.asdict(c) for c in bigbatch.equal_steps(verdicts.table1_claims(rows), rows)]
    return {"scale": scale, "alpha": stats.ALPHA, "cells": rows, "checks": checks, "claims": claims,
            "counts": verdicts.tally(claims), "run_machines": run_machines(results), "histories": {r["cell"]: _mean_history(r["histories"]) for r in results}}


def _mean_history(histories: List[list]) -> list:
    """Per epoch, the seeds' mean test error and per-layer % weights changed, each with its standard
    error over seeds (None for one seed), for the epochs all seeds reached."""
    n = min((len(h) for h in histories), default=0)
    out = []
    for e in range(n):
        rows = [h[e] for h in histories]
        wc = rows[0].get("weight_change") or {}
        errs = [r["test_error"] for r in rows]
        out.append({"epoch": rows[0]["epoch"], "test_error": stats.mean(errs), "test_error_sem": stats.sem(errs),
                    "seeds": len(rows),
                    "weight_change": {k: stats.mean([r["weight_change"][k] for r in rows]) for k in wc},
                    "weight_change_sem": {k: stats.sem([r["weight_change"][k] for r in rows]) for k in wc}})
    return out


def write_report(report: dict, out: Path) -> None:
    from ..plots.training import error_curves, weight_change_panels

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "table1.json", {k: v for k, v in report.items() if k != "histories"})
    atomic_write_bytes(out / "table1.md", markdown(report).encode())
    by_column: Dict[str, Dict[str, list]] = {}
    for c in report["cells"]:
        by_column.setdefault(c["column"], {})[c["label"]] = report["histories"].get(c["cell"], [])
    if by_column:
        error_curves(by_column, out / "table1_error.png")
        weight_change_panels(by_column, out / "table1_weight_change.png")


def seeds_text(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{len(seeds)} seeds ({seeds[0]}–{seeds[-1]})"
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))})"


def table(report: dict) -> List[str]:
    """Markdown rows of Table 1: per column the measured setup and, separately, the poster's column."""
    first = {c["column"]: c for c in reversed(report["cells"])}
    if not first:
        return ["No finished runs yet."]
    cols = sorted(first, key=lambda c: (list(COLUMNS).index(c) if c in COLUMNS else -1, first[c].get("width") or 0, c))
    if len(cols) > 1 and len({first[col]["paper_column"] for col in cols}) == 1:
        return columns.table(report, cols)  # one setup, several protocols: the poster's column once
    head = []
    for col in cols:
        c = first[col]
        seeds = sorted({tuple(x["seeds"]) for x in report["cells"] if x["column"] == col})
        setup = f"{c['model']}" + (f" width {c['width']}" if c.get("width") else "") + f" on {c['data']}"
        head += [f"measured: {col} ({setup}; n_test = {c['n_test'] if c['n_test'] else '?'}; "
                 + (seeds_text(seeds[0]) if len(seeds) == 1 else "seeds vary by row") + ")",
                 f"poster: {COLUMNS.get(c['paper_column'], c['paper_column'])}"]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for row in DISPLAY:
        cells_ = {c["column"]: c for c in report["cells"] if c["row"] == row}
        if cells_:
            vals = []
            for col in cols:
                c = cells_.get(col)
                vals += ["–", _num(PAPER.get(row, {}).get(first[col]["paper_column"]))] if c is None else \
                        [verdicts.pm(c["test_errors"]), _num(c["paper_error"])]
            lines.append(f"| {LABELS[row]} | " + " | ".join(vals) + " |")
    return lines


def markdown(report: dict) -> str:
    lines = [f"# Table 1 ({report['scale']} scale): top-1 test error (%), mean ± SE over seeds", "",
             "Measured columns are this scale's setup; the poster's column is its Table 1 for the column named"
             + ("" if report["scale"] == "paper" else "; the model and data differ, so compare orderings, not values")
             + ".", ""] + table(report)
    reuse = report.get("runs_reused", 0)
    lines += ["", f"Runs: {report.get('runs_trained', 0)} trained now, {reuse} finished earlier and reused"
              + (f" (their {report.get('reused_seconds', 0):.0f} s of training are not in this wall time)" if reuse else "")
              + f"; wall time {report.get('wall_seconds', 0):.0f} s with {report.get('workers', 1)} worker process(es).", "",
              *([provenance_text(report["run_machines"]), ""] if report.get("run_machines") else [])]
    if report.get("seeds_per_cell"):
        lines += [f"Seeds asked: {report['seeds_requested']} per cell, except "
                  + ", ".join(f"{c} {n}" for c, n in report["seeds_per_cell"].items()) + ".", ""]
    if report.get("missing"):
        by: Dict[str, list] = {}
        for m in report["missing"]:
            by.setdefault(m["cell"], []).append(str(m["seed"]))
        lines += [f"**Partial table**: {len(report['missing'])} requested run(s) not finished (the same command "
                  "without --report-only trains them; finished runs are reused): " + "; ".join(f"{c} seed(s) {', '.join(s)}" for c, s in by.items())
                  + ".", ""]
    lines += [f"## Claims ({verdicts.headline(report['counts'], 'Table 1 claims')})", ""] + columns.agreement_lines(report)
    for c in report["claims"]:
        lines.append(f"- **{c['verdict'] or 'no verdict'}**: {c['claim']}{columns.of_claim(report, c['id'])}. "
                     f"Measured: {c['measured']}."
                     + (f" Effect: {c['effect']}." if c["effect"] else "")
                     + (f" Why no verdict: {c['reason']}." if c["reason"] else "") + f" Rule: {c['rule']}.")
    lines += ["", "## Cells", "", "| cell | model | data | batch | epochs | steps | threads | seeds | error % per seed | "
              "weights changed % (mean / max layer) | seconds (all seeds) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in report["cells"]:
        wc = "–" if c["weight_change_mean"] is None else f"{c['weight_change_mean']:.1f} / {c['weight_change_max']:.1f}"
        lines.append(f"| {c['cell']} | {c['model']} | {c['data']} | {c['batch_size']} | {c['epochs']} | "
                     f"{'–' if c.get('steps') is None else format(c['steps'], ',')} | "
                     f"{c['threads'] or 'default'} | {', '.join(map(str, c['seeds']))} | "
                     f"{', '.join(_num(e) for e in c['test_errors'])} | {wc} | {c['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return "–" if v is None else f"{v:.2f}"
