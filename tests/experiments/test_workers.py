"""table1's worker processes: Ctrl-C saves every run in progress and prints one line with the
command that resumes (exit 130); a killed worker is named in one line while the other runs
finish; workers die with their parent and start nothing after it is gone."""
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qtrain.train import load_checkpoint
from qtrain.train.stopping import RunStopped

CELLS = ["--cells", "digits-smallcnn.adam", "digits-smallcnn.sr-adam"]


def test_run_stopped_crosses_process_boundaries():
    e = pickle.loads(pickle.dumps(RunStopped("stopped by SIGINT: saved", signal.SIGINT)))
    assert str(e) == "stopped by SIGINT: saved" and e.exit_code == 130 and e.signum == signal.SIGINT


def start(out: Path, epochs: int, seeds: int = 1):
    argv = [sys.executable, "-m", "qtrain", "table1", "--scale", "quick", "--out", str(out), "--no-progress",
            "--seeds", str(seeds), "--epochs", str(epochs), "--workers", "2", *CELLS]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    t = time.monotonic()
    while len(list(out.glob("runs/*/seed*/checkpoint.pt"))) < 2:  # both workers are training
        if p.poll() is not None or time.monotonic() - t > 240:
            p.kill()
            pytest.fail(f"table1 did not start: {p.communicate()[1][-2000:]}")
        time.sleep(0.2)
    time.sleep(1.0)
    return p


def workers_of(pid: int) -> list:
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
            out.append(int(child))
    return out


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through /proc")


@needs_proc
def test_ctrl_c_saves_every_run_and_prints_one_line(tmp_path):
    p = start(tmp_path, epochs=200)
    os.killpg(p.pid, signal.SIGINT)  # what the terminal does: the whole process group
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "resume with: qtrain table1 --scale quick" in lines[0] and "saved at epoch" in lines[0], lines[0]
    for ck in tmp_path.glob("runs/*/seed0/checkpoint.pt"):
        state = load_checkpoint(ck)
        assert state["epoch"] < 200 and not (ck.parent / ".qtrain.lock").exists()


@needs_proc
def test_a_killed_worker_is_named_in_one_line_and_the_other_run_finishes(tmp_path):
    p = start(tmp_path, epochs=40)  # long enough (~8 s on an idle core) that the victim is still training
    victim = workers_of(p.pid)[0]
    os.kill(victim, signal.SIGKILL)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 2, err
    ours = [line for line in err.splitlines() if line.startswith("qtrain table1")]
    assert len(ours) == 1 and "Traceback" not in err, err
    assert "killed by SIGKILL" in ours[0] and "seed 0" in ours[0] and "resume with: qtrain table1" in ours[0]
    assert len(list(tmp_path.glob("runs/*/seed0/summary.json"))) == 1  # the other run finished
    assert "[1/2]" in out


@needs_proc
def test_workers_die_with_their_parent_and_start_nothing(tmp_path):
    p = start(tmp_path, epochs=200, seeds=2)  # 4 runs, 2 queued
    workers = workers_of(p.pid)
    assert len(workers) == 2
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)
    t = time.monotonic()
    while any(Path(f"/proc/{w}").exists() and b"spawn_main" in Path(f"/proc/{w}/cmdline").read_bytes()
              for w in workers if Path(f"/proc/{w}/cmdline").exists()):
        assert time.monotonic() - t < 60, "orphaned workers still alive"
        time.sleep(0.2)
    assert len(list(tmp_path.glob("runs/*/seed*/checkpoint.pt"))) == 2  # the queued runs never started
    assert not list(tmp_path.glob("runs/*/seed*/.qtrain.lock"))  # every run saved and let go of its folder
    for ck in tmp_path.glob("runs/*/seed*/checkpoint.pt"):
        assert load_checkpoint(ck)["epoch"] < 200


def test_one_worker_in_process_stops_with_the_table1_command(tmp_path, monkeypatch):
    from qtrain.experiments.table1 import run_table1
    from qtrain.train.stopping import Stopper

    real, calls = Stopper.check, {"n": 0}

    def check(self, force=False):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, force)
    monkeypatch.setattr(Stopper, "check", check)
    with pytest.raises(RunStopped) as e:
        run_table1("quick", tmp_path, only=["digits-smallcnn.adam"], progress=False, epochs=2, train_subset=256,
                   seeds=2, workers=1, log=lambda *_: None, command="qtrain table1 --scale quick --out X")
    msg = str(e.value)
    assert e.value.exit_code == 130 and "\n" not in msg
    assert msg.startswith("digits-smallcnn.adam seed 0: stopped by SIGINT: saved") and "1 run(s) not started" in msg
    assert msg.endswith("resume with: qtrain table1 --scale quick --out X")
    assert load_checkpoint(tmp_path / "runs" / "digits-smallcnn.adam" / "seed0" / "checkpoint.pt")["step"] == 3
