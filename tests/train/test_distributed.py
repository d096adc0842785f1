"""Two CPU processes under torchrun (gloo): ranks stay bit-identical, and match one process."""
import json
import os
import socket
import subprocess
import sys

import torch

from qtrain.train import load_checkpoint

COMMON = ["--data", "digits", "--epochs", "2", "--batch-size", "64", "--train-subset", "512",
          "--test-subset", "200", "--no-progress", "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc, out, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "qtrain", "train", *COMMON, "--out", str(out), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
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
