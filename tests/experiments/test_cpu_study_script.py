"""scripts/cpu_study.sh: which runs each lane trains, in what order, and that finished runs are skipped.

The script is driven with a fake ``PYTHON`` that records its arguments instead of training."""
import os
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


@pytest.mark.parametrize("lane, column", [("study-bc", B), ("study-poster", P)])
def test_column_lanes_train_seed_rounds_of_their_own_column(tmp_path, lane, column):
    calls = run_lane(tmp_path, lane, "DATA", str(tmp_path / "out"))
    assert not any("table1" in c for c in calls)  # table1 holds OUT/cpu: two lanes could not share it
    want = [(f"{column}.{row}", k) for k in range(5) for row in ROWS[:5]]  # the 15-epoch rows first
    if lane == "study-poster":
        want += [(f"{P}.bc-adam", k) for k in range(5, 10)]
    want += [(f"{column}.big-sr-adam-steps", k) for k in range(5)]
    assert trained(calls) == want
    assert all(f"{tmp_path}/out/cpu/runs/" in c for c in calls)


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


def test_unknown_lane_is_refused(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "nope", "DATA", "OUT"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "not nope" in r.stderr
