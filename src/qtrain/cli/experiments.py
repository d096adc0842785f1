"""``qtrain table1`` and ``qtrain reproduce``: the paper's experiments, one command each."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


SEEDS_HELP = ("Table 1 runs per cell, with seeds preset seed + 0, 1, ..., N-1, each in runs/<cell>/seed<s>/ "
              "(default: quick 5, mini 3, cpu 5, width 3, paper 1)")
CELL_SEEDS_HELP = ("a cell's own seed count, for the cells a power plan gives more seeds (the others get --seeds), "
                   "e.g. --cell-seeds c10-smallcnn-poster.bc-adam=10; missing runs are trained, or listed by --report-only")
WORKERS_HELP = ("Table 1 runs trained in parallel processes (default: one per core at the CPU scales, "
                "whose runs use 1 torch thread each; 1 at the paper scale); results do not depend on it")
RETRAIN_HELP = "delete the Table 1 run folders (finished or interrupted) and train them again, instead of reusing them"
NO_PROGRESS_HELP = "no progress bars: one line per run and epoch (also the default when stdout is not a terminal)"


def register(sub) -> None:
    p = sub.add_parser("table1", help="train the Table 1 cells of a scale and write table1.md/json + figures",
                       description="Train ADAM, BC-ADAM, Big SR-ADAM, SR-ADAM, R-ADAM on a scale's presets. "
                       "Finished cells are read back, interrupted ones resumed.")
    p.add_argument("--scale", required=True, help="quick | mini | cpu | width | paper")
    p.add_argument("--out", type=Path, help="output folder (runs/<cell>/ + table1.*)")
    p.add_argument("--data-dir", help="dataset folder (CIFAR-10: the python batches, or a parent)")
    p.add_argument("--cells", nargs="*", help="only these cells (names from --list)")
    p.add_argument("--list", action="store_true", help="list the scale's cells and their preset files, then exit")
    p.add_argument("--report-only", action="store_true", help="only collect finished runs into the report")
    p.add_argument("--plan-seeds", action="store_true",
                   help="read the pilot runs' OUT/table1.json and print the seeds per method each test needs for 80%% "
                   "power at --difference, and the cheapest seeds to add, priced at each method's mean run time; trains nothing")
    p.add_argument("--difference", type=float, default=2.0, metavar="D",
                   help="with --plan-seeds: the difference to detect, in points (default 2)")
    p.add_argument("--seeds", type=int, help=SEEDS_HELP)
    p.add_argument("--cell-seeds", nargs="+", action="extend", default=[], metavar="CELL=N", help=CELL_SEEDS_HELP)
    p.add_argument("--workers", type=int, help=WORKERS_HELP)
    p.add_argument("--epochs", type=int, help="override every cell's epochs (smoke tests)")
    p.add_argument("--train-subset", type=int, help="override: use the first N training images")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field in every cell, e.g. --set scale=1 lr=0.001")
    p.add_argument("--no-progress", dest="progress", action="store_false", help=NO_PROGRESS_HELP)
    p.add_argument("--retrain", action="store_true", help=RETRAIN_HELP)
    p.set_defaults(func=table1)

    r = sub.add_parser("reproduce", help="every poster result (theory + Table 1) into one report",
                       description="Run convex, toy, markov and table1 at a scale and write DIR/report.md with a "
                       "verdict per poster claim.")
    r.add_argument("--scale", required=True, help="quick | mini | cpu | paper")
    r.add_argument("--out", type=Path, required=True, help="output folder (report.md/html/json, theory/, table1/)")
    r.add_argument("--data-dir", help="dataset folder for the mini/paper scales")
    r.add_argument("--seed", type=int, default=0, help="seed of the theory parts (Table 1 uses its presets' seeds + k)")
    r.add_argument("--seeds", type=int, help=SEEDS_HELP)
    r.add_argument("--cell-seeds", nargs="+", action="extend", default=[], metavar="CELL=N", help=CELL_SEEDS_HELP)
    r.add_argument("--workers", type=int, help=WORKERS_HELP)
    r.add_argument("--device", help="auto | cpu | cuda")
    r.add_argument("--epochs", type=int, help="override Table 1 epochs (smoke tests)")
    r.add_argument("--report-only", action="store_true",
                   help="train and compute nothing: rewrite the report from OUT's theory/*.json and finished runs")
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override TrainConfig fields of every Table 1 cell")
    r.add_argument("--no-progress", dest="progress", action="store_false", help=NO_PROGRESS_HELP)
    r.add_argument("--retrain", action="store_true", help=RETRAIN_HELP)
    r.set_defaults(func=reproduce)

    w = sub.add_parser("width-trend", help="ADAM, BC-ADAM, SR-ADAM at smallcnn widths 8-64: the gaps to ADAM vs width",
                       description="Train (or collect) the width scale and write table1.* plus width_trend.md/json/png: "
                       "BC − ADAM and SR − ADAM per width with SEs and a line in log2(width). Resumable.")
    w.add_argument("--out", type=Path, required=True, help="output folder (runs/<cell>/, table1.*, width_trend.*)")
    w.add_argument("--data-dir", help="dataset folder (CIFAR-10: the python batches, or a parent)")
    w.add_argument("--cells", nargs="*", help="only these cells (names from qtrain table1 --scale width --list)")
    w.add_argument("--report-only", action="store_true", help="only collect finished runs into the report")
    w.add_argument("--seeds", type=int, help="runs per cell (default 3)")
    w.add_argument("--workers", type=int, help=WORKERS_HELP)
    w.add_argument("--epochs", type=int, help="override every cell's epochs (smoke tests)")
    w.add_argument("--train-subset", type=int, help="override: use the first N training images")
    w.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override TrainConfig fields of every cell")
    w.add_argument("--no-progress", dest="progress", action="store_false", help=NO_PROGRESS_HELP)
    w.set_defaults(func=width_trend)


def table1(args: argparse.Namespace) -> int:
    from ..experiments.table1 import cells, run_table1

    if args.list:
        for name, path in cells(args.scale).items():
            print(f"{name:32s} {path}")
        return 0
    if args.out is None:
        raise ValueError("--out DIR is required")
    per_cell = parse_cell_seeds(args.cell_seeds)
    if args.plan_seeds:
        from ..experiments.planning import plan_seeds, plan_table, read_pilot

        print(plan_table(plan_seeds(read_pilot(args.out), difference=args.difference)), end="")
        return 0
    settings = parse_set(args.set, TABLE1_FLAGS)
    from ..train.lock import run_lock

    with run_lock(args.out, "table1"):
        report = run_table1(args.scale, args.out, data_dir=args.data_dir, only=args.cells, report_only=args.report_only,
                            progress=args.progress, epochs=args.epochs, train_subset=args.train_subset,
                            device=args.device, seeds=args.seeds, workers=args.workers, retrain=args.retrain,
                            command=_command(args), settings=settings, seeds_per_cell=per_cell)
    print((args.out / "table1.md").read_text())
    return 0 if report["cells"] else 1


def width_trend(args: argparse.Namespace) -> int:
    from ..experiments.width import run_width_trend
    from ..train.lock import run_lock

    with run_lock(args.out, "width-trend"):
        t = run_width_trend(args.out, data_dir=args.data_dir, seeds=args.seeds, only=args.cells,
                            report_only=args.report_only, progress=args.progress, workers=args.workers,
                            epochs=args.epochs, train_subset=args.train_subset, command=_command(args),
                            settings=parse_set(args.set, TABLE1_FLAGS))
    print((args.out / "width_trend.md").read_text())
    return 0 if t["widths"] else 1


def reproduce(args: argparse.Namespace) -> int:
    from ..experiments.reproduce import run_reproduce

    settings = parse_set(args.set, REPRODUCE_FLAGS)
    from ..train.lock import run_lock

    with run_lock(args.out, "reproduce"):
        run_reproduce(args.scale, args.out, data_dir=args.data_dir, seed=args.seed, device=args.device,
                      epochs=args.epochs, progress=args.progress, seeds=args.seeds, workers=args.workers,
                      command=_command(args), retrain=args.retrain, report_only=args.report_only,
                      settings=settings, seeds_per_cell=parse_cell_seeds(args.cell_seeds))
    print(f"report: {args.out / 'report.md'}")
    return 0


def _command(args: argparse.Namespace) -> str:
    from . import ARGV

    return shlex.join(["qtrain"] + list(ARGV or sys.argv[1:]))


# settings with a flag of their own: --set refuses them and names the flag
_COMMON_FLAGS = {"epochs": "--epochs", "device": "--device", "data_dir": "--data-dir", "progress": "--no-progress",
                 "seeds": "--seeds", "workers": "--workers", "out": "--out", "cells": "--cells",
                 "table1_cells": "--cells", "command": "--out (the command line is recorded by itself)"}
TABLE1_FLAGS = dict(_COMMON_FLAGS, train_subset="--train-subset", report_only="--report-only", only="--cells",
                    list="--list")
REPRODUCE_FLAGS = dict(_COMMON_FLAGS)


def parse_cell_seeds(items) -> dict:
    """``["c10-smallcnn-poster.bc-adam=10"]`` -> ``{"c10-smallcnn-poster.bc-adam": 10}``; the cell names
    and counts are checked where they are used (:func:`qtrain.experiments.table1.run_table1`)."""
    out = {}
    for item in items or []:
        cell, sep, n = item.partition("=")
        n = n.strip()
        if not sep or not cell or not (n.isascii() and n.isdigit()):
            raise ValueError(f"--cell-seeds {item!r} must look like CELL=N with N a whole number, "
                             "e.g. --cell-seeds c10-smallcnn-poster.bc-adam=10")
        if cell in out:
            raise ValueError(f"--cell-seeds names {cell} twice ({out[cell]} and {n}); give it once")
        out[cell] = int(n)
    return out


def parse_set(items, flags: dict = TABLE1_FLAGS) -> dict:
    """``["scale=1", "lr=0.001"]`` -> ``{"scale": 1, "lr": 0.001}`` (values read as YAML scalars, bounded).

    Keys must be TrainConfig fields (``scale`` is the binary/ternary grid scale s; the Table 1
    scale is ``--scale``); settings that have a flag of their own (``flags``) are refused in one
    line naming that flag."""
    import dataclasses

    from .._yaml import load as load_yaml
    from ..train.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set {item!r} must look like KEY=VALUE, e.g. --set scale=1")
        if key in flags:
            raise ValueError(f"--set {key}=... is not a per-run setting here; use {flags[key]}")
        if key not in fields:
            raise ValueError(f"--set {key}=... is not a run setting (TrainConfig field); known: {', '.join(sorted(fields))}")
        out[key] = load_yaml(value, f"--set {key}={value[:40]}")
        if key == "scale" and out[key] in ("quick", "mini", "cpu", "width", "paper"):
            raise ValueError(f"--set scale={out[key]} sets the binary/ternary grid scale s (a number or 'mean'); "
                             f"the Table 1 scale is --scale {out[key]}")
    return out
