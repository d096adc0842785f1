"""Table 1 of the poster: top-1 test error of ADAM, BC-ADAM, Big SR-ADAM, SR-ADAM, R-ADAM.

A *scale* is a folder of presets (``presets/<scale>/<column>.<row>.yaml``), one complete
:class:`~qtrain.train.TrainConfig` per cell:

* ``paper`` -- the 30 cells of the poster (NOTES §4; GPUs and days);
* ``mini`` -- real CIFAR-10, a small CNN, a few minutes per method on 2 CPU cores;
* ``quick`` -- the embedded digits, seconds per method (smoke test of the whole pipeline).

:func:`run_table1` trains every selected cell in ``OUT/runs/<cell>/`` (finished cells are
read back, interrupted ones resumed), then writes ``table1.json``, ``table1.md`` (measured
errors next to the paper's), ``table1_error.png`` (test error vs epoch) and
``table1_weight_change.png`` (per-layer % of quantized weights changed, one panel per method,
as on the poster). Cells can be spread over machines: run ``--cells`` subsets into copies of
OUT, gather the ``runs/`` folders, then ``--report-only``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .._io import atomic_write_bytes, atomic_write_json
from ..train import TrainConfig, read_metrics, run
from ..train.checkpoint import CHECKPOINT
from ..train.config import load_yaml, make

PRESETS = Path(__file__).with_name("presets")
SCALES = ("quick", "mini", "paper")
ROWS = {"adam": "ADAM", "bc-adam": "BC-ADAM", "big-sr-adam": "Big SR-ADAM", "sr-adam": "SR-ADAM", "r-adam": "R-ADAM"}
COLUMNS = {"c10-vgg9": "CIFAR-10 VGG-9", "c10-vggbc": "CIFAR-10 VGG-BC", "c10-resnet56": "CIFAR-10 ResNet-56",
           "c10-wrn56_2": "CIFAR-10 WRN-56-2", "c100-resnet56": "CIFAR-100 ResNet-56",
           "imagenet-resnet18": "ImageNet ResNet-18"}
# Top-1 test error (%) from the poster's Table 1 [poster]
PAPER = {
    "adam":        {"c10-vgg9": 7.97, "c10-vggbc": 7.12, "c10-resnet56": 8.10, "c10-wrn56_2": 6.62, "c100-resnet56": 33.98, "imagenet-resnet18": 36.04},
    "bc-adam":     {"c10-vgg9": 10.36, "c10-vggbc": 8.21, "c10-resnet56": 8.83, "c10-wrn56_2": 7.17, "c100-resnet56": 35.34, "imagenet-resnet18": 52.11},
    "big-sr-adam": {"c10-vgg9": 16.95, "c10-vggbc": 16.77, "c10-resnet56": 19.84, "c10-wrn56_2": 16.04, "c100-resnet56": 50.79, "imagenet-resnet18": 77.68},
    "sr-adam":     {"c10-vgg9": 23.33, "c10-vggbc": 20.56, "c10-resnet56": 26.49, "c10-wrn56_2": 21.58, "c100-resnet56": 58.06, "imagenet-resnet18": 88.86},
    "r-adam":      {"c10-vgg9": 23.99, "c10-vggbc": 21.88, "c10-resnet56": 33.56, "c10-wrn56_2": 27.90, "c100-resnet56": 68.39, "imagenet-resnet18": 91.07},
}
ORDER = list(ROWS)  # the poster's ordering, best to worst


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


def run_table1(scale: str, out: Path, data_dir: Optional[str] = None, only: Optional[Sequence[str]] = None,
               report_only: bool = False, progress: bool = True, log=print, **overrides) -> dict:
    """Train (or collect) the cells of ``scale`` into ``out`` and write the Table 1 report.

    ``overrides`` are TrainConfig fields applied to every cell (e.g. ``epochs=1`` for tests).
    """
    out = Path(out)
    available = cells(scale)
    names = list(available) if not only else list(only)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown cell(s) {', '.join(unknown)} for scale {scale!r}; see `qtrain table1 --scale {scale} --list`")
    results = []
    t0 = time.perf_counter()
    for i, name in enumerate(names, 1):
        cfg = cell_config(available[name], data_dir=data_dir, progress=progress, **overrides)
        run_dir = out / "runs" / name
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            log(f"[{i}/{len(names)}] {name}: done earlier, reading {summary_path}")
            summary = json.loads(summary_path.read_text())
            _check_same_settings(name, summary.get("config", {}), cfg)
        elif report_only:
            log(f"[{i}/{len(names)}] {name}: no finished run in {run_dir} (skipped)")
            continue
        else:
            resume = (run_dir / CHECKPOINT).exists()
            log(f"[{i}/{len(names)}] {name}: {'resuming' if resume else 'training'} "
                f"({cfg.model} on {cfg.data}, {cfg.method}, batch {cfg.batch_size}, {cfg.epochs} epochs)")
            summary = run(cfg, run_dir, resume=resume)
            log(f"[{i}/{len(names)}] {name}: test error {_num(summary['test_error'])}% in {summary['seconds']:.0f} s")
        column, row = name.split(".", 1)
        results.append({"cell": name, "column": column, "row": row, "label": ROWS.get(row, row),
                        "paper_column": cfg.extra.get("paper_column", column), "summary": summary,
                        "history": read_metrics(run_dir)})
    report = summarise(scale, results)
    report["wall_seconds"] = time.perf_counter() - t0
    write_report(report, out)
    return report


_IGNORED = ("progress", "data_dir", "device", "download", "tensorboard")


def _check_same_settings(name: str, saved: dict, cfg: TrainConfig) -> None:
    """Refuse to report a finished cell that was trained with other settings (e.g. a smoke run)."""
    for key, value in cfg.to_dict().items():
        if key not in _IGNORED and saved.get(key, value) != value:
            raise ValueError(f"runs/{name} was trained with {key}={saved.get(key)!r}, the preset now says {value!r}; "
                             "use another --out or delete that run folder")


def summarise(scale: str, results: List[dict]) -> dict:
    """Measured vs paper per cell, and per column the ordering checks of NOTES §5."""
    rows = []
    for r in results:
        s = r["summary"]
        rows.append({"cell": r["cell"], "column": r["column"], "row": r["row"], "label": r["label"],
                     "test_error": s["test_error"], "best_test_error": s.get("best_test_error"),
                     "paper_column": r["paper_column"], "paper_error": PAPER.get(r["row"], {}).get(r["paper_column"]),
                     "weight_change_mean": s.get("weight_change_mean"), "weight_change_max":
                     max(s.get("weight_change", {}).values(), default=None), "seconds": s["seconds"],
                     "batch_size": s["batch_size"], "epochs": s["epochs"], "model": s["model"], "data": s["data"]})
    checks = {}
    for column in sorted({r["column"] for r in rows}):
        err = {r["row"]: r["test_error"] for r in rows if r["column"] == column and r["test_error"] is not None}
        wc = {r["row"]: r["weight_change_mean"] for r in rows if r["column"] == column}
        present = [k for k in ORDER if k in err]
        measured = sorted(present, key=lambda k: err[k])
        checks[column] = {
            "measured_order": measured, "paper_order": present, "ordering_reproduced": measured == present,
            "pairs_in_paper_order": sum(err[a] < err[b] for i, a in enumerate(present) for b in present[i + 1:]),
            "pairs": len(present) * (len(present) - 1) // 2,
            "sr_changes_more_than_bc": (wc["sr-adam"] > wc["bc-adam"]) if {"sr-adam", "bc-adam"} <= set(wc) else None,
            "big_batch_helps_sr": (err["big-sr-adam"] < err["sr-adam"]) if {"big-sr-adam", "sr-adam"} <= set(err) else None,
            "bc_close_to_float": (err["bc-adam"] - err["adam"]) if {"bc-adam", "adam"} <= set(err) else None,
        }
    return {"scale": scale, "cells": rows, "checks": checks, "histories": {r["cell"]: r["history"] for r in results}}


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


def markdown(report: dict) -> str:
    cols = sorted({c["column"] for c in report["cells"]}, key=lambda c: list(COLUMNS).index(c) if c in COLUMNS else -1)
    lines = [f"# Table 1 ({report['scale']} scale): top-1 test error (%)", "",
             "Each cell: measured (paper). The paper's number is the poster's Table 1 for the same column"
             + ("" if report["scale"] == "paper" else "; at this scale the model differs, so compare orderings, not values")
             + ".", ""]
    head = "| method | " + " | ".join(f"{c} (paper: {COLUMNS.get(_paper_col(report, c), _paper_col(report, c))})" for c in cols) + " |"
    lines += [head, "|---|" + "---|" * len(cols)]
    for row in ORDER:
        cells_ = {c["column"]: c for c in report["cells"] if c["row"] == row}
        if not cells_:
            continue
        vals = []
        for col in cols:
            c = cells_.get(col)
            if c is None:
                vals.append("–")
                continue
            vals.append(f"{_num(c['test_error'])} ({_num(c['paper_error'])})")
        lines.append(f"| {ROWS[row]} | " + " | ".join(vals) + " |")
    lines += ["", "## Checks (NOTES §5)", ""]
    for col, ch in report["checks"].items():
        order = " < ".join(ROWS[r] for r in ch["measured_order"])
        lines.append(f"- **{col}**: measured order {order}; poster's order "
                     f"{'reproduced' if ch['ordering_reproduced'] else 'NOT reproduced'} "
                     f"({ch['pairs_in_paper_order']}/{ch['pairs']} pairs in the poster's order).")
        if ch["sr_changes_more_than_bc"] is not None:
            sr = _wc(report, col, "sr-adam")
            bc = _wc(report, col, "bc-adam")
            lines.append(f"  SR-ADAM changed {sr:.1f}% of quantized weights (mean over layers) vs BC-ADAM {bc:.1f}%: "
                         f"{'SR explores more' if ch['sr_changes_more_than_bc'] else 'SR does NOT explore more'}.")
        if ch["big_batch_helps_sr"] is not None:
            lines.append(f"  Big batch {'helps' if ch['big_batch_helps_sr'] else 'does NOT help'} SR-ADAM.")
    lines += ["", "## Cells", "", "| cell | model | data | batch | epochs | error % | best % | weights changed % (mean / max) | seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in report["cells"]:
        wc = "–" if c["weight_change_mean"] is None else f"{c['weight_change_mean']:.1f} / {c['weight_change_max']:.1f}"
        lines.append(f"| {c['cell']} | {c['model']} | {c['data']} | {c['batch_size']} | {c['epochs']} | "
                     f"{_num(c['test_error'])} | {_num(c['best_test_error'])} | {wc} | {c['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _paper_col(report: dict, column: str) -> str:
    return next((c["paper_column"] for c in report["cells"] if c["column"] == column), column)


def _wc(report: dict, column: str, row: str) -> float:
    return next(c["weight_change_mean"] for c in report["cells"] if c["column"] == column and c["row"] == row)
