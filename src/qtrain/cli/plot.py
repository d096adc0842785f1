"""``qtrain plot RUN [RUN ...] --out F.png``: error, loss and weight-change curves of runs."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("plot", help="draw error, loss and weight-change curves of one or more runs",
                       description="One figure with three panels (error, loss, % quantized weights changed) vs epoch. "
                       "Runs that differ only in their seed are drawn as their mean with a ± 1 SE band.")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (the --out of qtrain train)")
    p.add_argument("--out", type=Path, required=True, metavar="F.png", help="figure file to write (.png, .pdf, .svg)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..plots.runs import gather, plot_runs

    if args.out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"--out {args.out} should end in .png, .pdf or .svg, e.g. --out {args.out.with_suffix('.png')}")
    groups = gather(args.runs)
    path = plot_runs(groups, args.out)
    print(f"qtrain plot: {len(args.runs)} run(s) in {len(groups)} group(s) "
          f"({', '.join(f'{k}: {len(v)} seed(s)' for k, v in groups.items())}) -> {path}")
    return 0
