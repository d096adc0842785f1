"""Two CPU processes under torchrun (gloo): ranks stay bit-identical, and match one process;
a stopped rank ends the job with one line within --dist-timeout; a clean run exits 0 quietly."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qtrain.train import load_checkpoint

COMMON = ["--data", "digits", "--epochs", "2", "--batch-size", "64", "--train-subset", "512",
          "--test-subset", "200", "--no-progress", "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(nproc, out, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            "-m", "qtrain", "train", *COMMON, "--out", str(out), *args]


def torchrun(nproc, out, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(torchrun_cmd(nproc, out, *args), capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "terminate called" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    first, *epochs, last = r.stdout.strip().splitlines()
    assert first.startswith(("training: method ", "resuming at epoch ")), r.stdout  # rank 0 says what trains, once
    assert json.loads(last)["test_error"] is not None, r.stdout  # rank 0 reports, once
    ran = json.loads(last)["epochs"] - (int(first.split()[3].rstrip(":")) - 1 if first.startswith("resuming") else 0)
    assert len(epochs) == ran and all(x.startswith("epoch ") for x in epochs), r.stdout
    return json.loads((out / "summary.json").read_text())


def test_two_processes(tmp_path):
    s = torchrun(2, tmp_path / "sr2", "--model", "smallcnn", "--method", "sr")
    assert s["world_size"] == 2 and len(s["replica_digests"]) == 2
    assert s["replicas_identical"], s["replica_digests"]  # SR included: bit for bit after the last step

    # float training of a BN-free model: 2 processes x 32 = 1 process x 64, up to summation order
    two = torchrun(2, tmp_path / "f2", "--model", "mlp", "--method", "float")
    one = torchrun(1, tmp_path / "f1", "--model", "mlp", "--method", "float")
    assert two["replicas_identical"] and one["world_size"] == 1
    a = load_checkpoint(tmp_path / "f2" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "f1" / "checkpoint.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def _rank_pid(launcher: int, rank: int) -> int:
    for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(child)
    raise LookupError(rank)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the ranks")
def test_a_stopped_rank_ends_the_job_within_the_timeout(tmp_path):
    out, err_path, timeout = tmp_path / "r", tmp_path / "stderr.txt", 4
    cmd = torchrun_cmd(2, out, "--model", "smallcnn", "--method", "sr", "--epochs", "100", "--dist-timeout", str(timeout))
    with open(err_path, "w") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        t = time.monotonic()
        while not (out / "checkpoint.pt").exists():  # training has started on both ranks
            if p.poll() is not None or time.monotonic() - t > 120:
                pytest.skip(f"torchrun did not start: {err_path.read_text()[-500:]}")
            time.sleep(0.1)
        rank1 = _rank_pid(p.pid, 1)
        os.kill(rank1, signal.SIGSTOP)
        stopped = time.monotonic()
        while "stopped answering" not in err_path.read_text() and time.monotonic() - stopped < timeout + 20:
            time.sleep(0.1)
        waited = time.monotonic() - stopped
        os.kill(rank1, signal.SIGCONT)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    ours = [line for line in err_path.read_text().splitlines() if line.startswith("qtrain train")]
    assert ours and f"rank 0: another process stopped answering within --dist-timeout {timeout} s" in ours[0], ours
    assert "--resume" in ours[0] and waited < timeout + 10, (waited, ours)
    assert p.returncode != 0


KILL_AFTER_SAVE = """import os, signal, sys
from qtrain.train import stopping
from qtrain.cli import main
real = stopping.Stopper.saved
def saved(self):
    real(self)
    if os.environ["RANK"] == "0" and self.calls == 10:  # the first mid-epoch save (ranks agree every 10 steps)
        os.kill(os.getpid(), signal.SIGKILL)
stopping.Stopper.saved = saved
sys.exit(main(sys.argv[1:]))
"""


def test_mid_epoch_resume_under_torchrun_matches_every_metric(tmp_path):
    """Killed right after a mid-epoch save, resumed: train_loss/train_error equal the uninterrupted run's
    (each rank's running sums are saved, not rank 0's only)."""
    args = ["--model", "smallcnn", "--method", "sr", "--epochs", "1", "--batch-size", "32", "--threads", "1"]
    ref = torchrun(2, tmp_path / "ref", *args)
    script = tmp_path / "kill.py"
    script.write_text(KILL_AFTER_SAVE)
    out = tmp_path / "r"
    cmd = torchrun_cmd(2, out, *args, "--checkpoint-minutes", "1e-9")
    cmd[cmd.index("-m", 3):cmd.index("-m", 3) + 2] = [str(script)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode != 0
    ck = load_checkpoint(out / "checkpoint.pt")
    assert (ck["epoch"], ck["step"]) == (0, 10), (ck["epoch"], ck["step"])
    assert ck["partial"]["count"] == 320 and ck["partial"]["ranks"][:, 2].tolist() == [160, 160]
    resume = torchrun_cmd(2, out)
    resume[resume.index("train") + 1:] = ["--resume", str(out), "--no-progress"]
    r = subprocess.run(resume, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    want = json.loads((tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("train_loss", "train_error", "test_loss", "test_error", "weight_change"):
        assert got[key] == want[key], key
    assert ref["replicas_identical"] and json.loads((out / "summary.json").read_text())["replicas_identical"]
