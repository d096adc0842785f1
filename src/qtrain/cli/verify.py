"""``qtrain verify``: does a finished run reproduce bit for bit on this machine?"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("verify", help="retrain a run's first epochs and compare its metrics bit for bit",
                       description="Retrain the first K epochs of RUN_DIR from its config.json in a temporary folder, "
                       "compare every field of those metrics.jsonl rows bit for bit (wall-clock fields excepted), and "
                       "say whether this machine's CPU capability, torch version and data digest match the run's. "
                       "Exit 0: identical; 1: some field differs; 2: bad input.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (config.json, metrics.jsonl)")
    p.add_argument("--epochs", type=int, default=1, metavar="K", help="epochs to retrain and compare (default 1)")
    p.add_argument("--data-dir", help="dataset folder, if not where the run read it (its config.json's data_dir)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..train.verify import report_text, verify_run

    result = verify_run(args.run_dir, epochs=args.epochs, data_dir=args.data_dir)
    print(report_text(result), end="")
    return 0 if result["identical"] else 1
