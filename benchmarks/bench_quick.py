"""Time of the quick reproduction (goal, issue 12: `bash scripts/quick.sh` after set-up, 5 seeds,
<= 60 s on an idle 2-core machine), and which layout of the Table 1 runs is fastest: one worker
process per core with 1 torch thread per run (the quick/mini presets) or a single worker whose
runs use every core (`--set threads=N`). Both are measured side by side in one invocation, each in
a fresh output folder and a fresh process; the script prints wall time, CPU time (all processes)
and the load average before each, since a busy machine stretches wall time but not CPU time.

    .venv/bin/python benchmarks/bench_quick.py                  # full: reproduce + both layouts
    .venv/bin/python benchmarks/bench_quick.py --seeds 2 --epochs 4 --skip-reproduce   # shorter layout check
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time


def timed(cmd, env=None):
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, load


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, help="override the quick presets' 16 epochs (shorter check)")
    ap.add_argument("--skip-reproduce", action="store_true", help="only compare the two Table 1 layouts")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    qtrain = [sys.executable, "-m", "qtrain"]
    extra = ["--seeds", str(args.seeds), "--no-progress"] + (["--epochs", str(args.epochs)] if args.epochs else [])
    print(f"{cores} cores; quick scale, {args.seeds} seeds" + (f", {args.epochs} epochs" if args.epochs else ""))
    print(f"{'what':58s} {'wall s':>7s} {'CPU s':>7s} {'load before':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        if not args.skip_reproduce:
            rows.append(("qtrain reproduce --scale quick (defaults: one worker per core)",
                         timed(qtrain + ["reproduce", "--scale", "quick", "--out", f"{tmp}/rep"] + extra)))
        rows.append((f"table1: {cores} workers x 1 thread (presets)",
                     timed(qtrain + ["table1", "--scale", "quick", "--out", f"{tmp}/a"] + extra)))
        rows.append((f"table1: 1 worker x {cores} threads (--set threads={cores})",
                     timed(qtrain + ["table1", "--scale", "quick", "--out", f"{tmp}/b", "--workers", "1",
                                     "--set", f"threads={cores}"] + extra)))
        for what, (wall, cpu, load) in rows:
            print(f"{what:58s} {wall:7.1f} {cpu:7.1f} {load:11.2f}")
        (wa, ca, _), (wb, cb, _) = rows[-2][1], rows[-1][1]
        print(f"1 worker x {cores} threads / {cores} workers x 1 thread: wall {wb / wa:.2f}x, CPU {cb / ca:.2f}x")
        print(f"(idle-machine estimate of the reproduction: CPU s / {cores} cores = "
              f"{rows[0][1][1] / cores:.0f} s)" if not args.skip_reproduce else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
