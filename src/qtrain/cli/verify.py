"""``qtrain verify``: does a finished run reproduce bit for bit on this machine? ``qtrain bn-reestimate``:
how much of its test error is stale batch-norm statistics?"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("verify", help="retrain a run's first epochs and compare its metrics bit for bit",
                       description="Retrain the first K epochs of RUN_DIR from its config.json in a temporary folder, "
                       "compare every field of those metrics.jsonl rows bit for bit (wall-clock fields excepted), and "
                       "say whether this machine's CPU (model, flags, capability), torch version, threads and data digest match the run's. "
                       "Exit 0: identical; 1: some field differs; 2: bad input.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (config.json, metrics.jsonl)")
    p.add_argument("--epochs", type=int, default=1, metavar="K", help="epochs to retrain and compare (default 1)")
    p.add_argument("--data-dir", help="dataset folder, if not where the run read it (its config.json's data_dir)")
    p.set_defaults(func=main)

    p = sub.add_parser("bn-reestimate", help="test error of finished runs with BN statistics re-estimated for the "
                       "final weights", description="For each RUN_DIR, evaluate the checkpointed weights on the test "
                       "set with the stored BatchNorm running statistics and again with statistics re-estimated in one "
                       "pass over the training split (training augmentation, the run's batch size), then summarise "
                       "per cell (the run folder's parent). A diagnostic: weights are untouched and the runs are only "
                       "read. Exit 0; 2: bad input.")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="finished run folders (checkpoint.pt, summary.json); unfinished ones are skipped with a note")
    p.add_argument("--data-dir", help="dataset folder, if not where the runs read it (their config.json's data_dir)")
    p.add_argument("--out", type=Path, help="write the report here as Markdown, and the numbers beside it as .json")
    p.add_argument("--keep", action="store_true", help="with --out: keep the rows of OUT's .json for runs not given "
                   "now (measured before, e.g. on another machine whose checkpoints are gone); a run given again is "
                   "measured again and replaces its row")
    p.set_defaults(func=bn_main)


def main(args: argparse.Namespace) -> int:
    from ..train.verify import report_text, verify_run

    result = verify_run(args.run_dir, epochs=args.epochs, data_dir=args.data_dir)
    print(report_text(result), end="")
    return 0 if result["identical"] else 1


def bn_main(args: argparse.Namespace) -> int:
    import json
    import sys

    from .._io import atomic_write_bytes, atomic_write_json
    from ..experiments.render import bn_reestimate_markdown
    from ..train.reestimate import RunUnfinished, check_rows, check_run, merge_rows, summarize

    kept = []
    if args.keep and args.out is None:
        raise ValueError("--keep keeps the rows of an earlier --out F.md's F.json; give --out F.md")
    if args.out is not None:
        if args.out.suffix != ".md":
            raise ValueError(f"--out {args.out} must end in .md (the numbers go beside it as .json)")
        numbers = args.out.with_suffix(".json")
        if numbers.exists():
            try:
                ours = set(json.loads(numbers.read_text())) == {"runs", "cells"}
            except (ValueError, OSError, TypeError):
                ours = False
            if not ours:
                raise ValueError(f"--out {args.out} would replace {numbers}, which bn-reestimate did not write; "
                                 "pick another name")
            if args.keep:
                kept = check_rows(json.loads(numbers.read_text())["runs"], str(numbers))
        elif args.keep:
            raise ValueError(f"--keep: {numbers} does not exist, so there are no earlier rows to keep; drop --keep")
    rows, skipped, given = [], [], {}
    for run in args.run_dirs:
        try:
            r = check_run(run, data_dir=args.data_dir)
        except RunUnfinished:
            print(f"{run}: skipped, not finished (no summary.json)", file=sys.stderr, flush=True)
            skipped.append(run)
            continue
        twin = given.setdefault((r["cell"], r["seed"]), run)
        if twin is not run:
            raise ValueError(f"{twin} and {run} are both {r['cell']} seed {r['seed']} (a cell is its run folder's "
                             "parent); give each run once")
        print(f"{r['cell']} seed {r['seed']}: test error {r['stored']:.2f}% with the stored BN statistics, "
              f"{r['reestimated']:.2f}% re-estimated", flush=True)
        rows.append(r)
    if not rows:
        raise ValueError(f"none of the {len(skipped)} run(s) has finished; bn-reestimate needs finished runs")
    rows = merge_rows(kept, rows)
    cells = summarize(rows)
    text = bn_reestimate_markdown(rows, cells)
    print(text, end="")
    if args.out is not None:
        atomic_write_json(args.out.with_suffix(".json"), {"runs": rows, "cells": cells})
        atomic_write_bytes(args.out, text.encode("utf-8"))
    return 0
