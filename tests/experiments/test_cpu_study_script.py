"""scripts/cpu_study.sh: which runs each lane trains, in what order, and that finished runs are skipped.

The script is driven with a fake ``PYTHON`` that records its arguments instead of training."""
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cpu_study.sh"
B, P = "c10-smallcnn-bc", "c10-smallcnn-poster"
ROWS = ["adam", "bc-adam", "sr-adam", "big-sr-adam", "r-adam", "big-sr-adam-steps"]


def run_lane(tmp_path, *args):
    log = tmp_path / "calls.log"
    fake = tmp_path / "fakepython"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake))
    subprocess.run(["bash", str(SCRIPT), *args], check=True, env=env, cwd=tmp_path)
    return log.read_text().splitlines() if log.exists() else []


def trained(calls):
    """(cell, seed) per call, from `train --config .../CELL.yaml --seed K` or `train --resume .../CELL/seedK`."""
    out = []
    for c in calls:
        a = c.split()
        if "--resume" in a:
            run = Path(a[a.index("--resume") + 1])
            out.append((run.parent.name, int(run.name.removeprefix("seed"))))
        else:
            out.append((Path(a[a.index("--config") + 1]).stem, int(a[a.index("--seed") + 1])))
    return out


def column_queue(column):
    want = [(f"{column}.{row}", k) for k in range(5) for row in ROWS[:5]]  # the 15-epoch rows first
    if column == P:
        want += [(f"{P}.bc-adam", k) for k in range(5, 10)]  # the extra seeds of the 5-seed power plan
    else:
        want += [(f"{B}.big-sr-adam", k) for k in (5, 6)]
    want += [(f"{column}.big-sr-adam-steps", k) for k in range(5)]
    if column == P:  # the cheapest allocation for 80% power at the equal-steps 5-seed point
        want += [(f"{P}.sr-adam", k) for k in range(5, 11)] + [(f"{P}.big-sr-adam-steps", k) for k in (5, 6)]
    return want


@pytest.mark.parametrize("lane, column, other", [("study-bc", B, P), ("study-poster", P, B)])
def test_column_lanes_train_their_column_then_the_others_from_its_end(tmp_path, lane, column, other):
    calls = run_lane(tmp_path, lane, "DATA", str(tmp_path / "out"))
    assert not any("table1" in c for c in calls)  # table1 holds OUT/cpu: two lanes could not share it
    assert trained(calls) == column_queue(column) + column_queue(other)[::-1]
    assert all(f"{tmp_path}/out/cpu/runs/" in c for c in calls)


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs util-linux flock")
def test_a_run_another_lane_holds_is_skipped(tmp_path):
    locks = tmp_path / "out" / "locks"
    locks.mkdir(parents=True)
    with open(locks / f"{B}.adam.seed1", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a lane training that run would
        calls = run_lane(tmp_path, "runs", "DATA", str(tmp_path / "out"), "cpu",
                         f"{B}.adam:0", f"{B}.adam:1", f"{B}.adam:2")
    assert trained(calls) == [(f"{B}.adam", 0), (f"{B}.adam", 2)]
    calls = run_lane(tmp_path, "runs", "DATA", str(tmp_path / "out"), "cpu", f"{B}.adam:1")
    assert trained(calls)[-1] == (f"{B}.adam", 1)  # released with its holder: trained now


def test_finished_runs_are_skipped_and_interrupted_ones_resume(tmp_path):
    runs = tmp_path / "out" / "runs"
    (runs / f"{B}.adam" / "seed0").mkdir(parents=True)
    (runs / f"{B}.adam" / "seed0" / "summary.json").write_text("{}")
    (runs / f"{B}.adam" / "seed1").mkdir(parents=True)
    (runs / f"{B}.adam" / "seed1" / "checkpoint.pt").write_bytes(b"")
    calls = run_lane(tmp_path, "runs", "DATA", str(tmp_path / "out"), "cpu",
                     f"{B}.adam:0", f"{B}.adam:1", f"{B}.sr-adam:3")
    assert len(calls) == 2
    assert calls[0].split()[:3] == ["-m", "qtrain", "train"] and "--resume" in calls[0]
    assert "--config src/qtrain/experiments/presets/cpu/c10-smallcnn-bc.sr-adam.yaml --seed 3" in calls[1]


def test_plan_prints_the_cell_seeds_the_queues_ask():
    """`plan` (used by scripts/collect_study.sh for the report's missing list) agrees with the lanes' queues."""
    r = subprocess.run(["bash", str(SCRIPT), "plan"], capture_output=True, text=True, check=True)
    want = {}
    for cell, k in column_queue(B) + column_queue(P):
        want[cell] = max(want.get(cell, 0), k + 1)
    assert r.stdout.split() == sorted(f"{c}={n}" for c, n in want.items() if n != 5)
    assert r.stdout.split() == [f"{B}.big-sr-adam=7", f"{P}.bc-adam=10", f"{P}.big-sr-adam-steps=7", f"{P}.sr-adam=11"]


def test_unknown_lane_is_refused(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "nope", "DATA", "OUT"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "not nope" in r.stderr


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs util-linux flock")
def test_two_column_lanes_share_the_work_and_train_each_run_once(tmp_path):
    """Both lanes at once, with a fake trainer that takes a moment (longer in the poster's column) and leaves summary.json behind."""
    fake = tmp_path / "fakepython"
    fake.write_text('#!/bin/bash\necho "$@" >> "$LOG"\nargs=("$@")\nfor i in "${!args[@]}"; do\n'
                    '  case "${args[$i]}" in --out|--resume) run="${args[$((i+1))]}";; esac\ndone\n'
                    'case "$run" in *poster*) sleep 0.2;; *) sleep 0.02;; esac\n'  # the poster's column: the long one
                    'mkdir -p "$run"; echo "{}" > "$run/summary.json"\n')
    fake.chmod(0o755)
    lanes = [subprocess.Popen(["bash", str(SCRIPT), lane, "DATA", str(tmp_path / "out")], cwd=tmp_path,
                              env=dict(os.environ, PYTHON=str(fake), LOG=str(tmp_path / f"{lane}.log")))
             for lane in ("study-bc", "study-poster")]
    assert [p.wait(timeout=120) for p in lanes] == [0, 0]
    runs = [trained((tmp_path / f"{lane}.log").read_text().splitlines()) for lane in ("study-bc", "study-poster")]
    everything = runs[0] + runs[1]
    assert sorted(everything) == sorted(column_queue(B) + column_queue(P))  # each run exactly once
    assert len(runs[0]) > len(column_queue(B))  # the lane with the shorter column helped the other
