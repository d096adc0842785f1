"""``benchmarks/gpu_check.py`` waits for a GPU that is rarely lent: its ``--device cpu`` dry run
executes every check small on the CPU, so an API change cannot leave the script broken unseen.
On the CPU it also compares the C kernels with the torch code that CUDA runs (compiled, eager,
and the float formats' bit path), bit for bit."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_dry_run_on_cpu_passes_every_check():
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--n", "20000", "--rounds", "1",
                          "--steps", "1", "--batch", "4", "--identity-n", "5000"],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stdout + out.stderr
    table = out.stdout.split("\ncheck ")[-1]
    assert "FAIL" not in out.stdout
    for line in ("bit-identity, Q_d and Q_s, float32+float64", "bit-identity, float-format grids",
                 "SR of 2e+04 float32 vs clone()", "ResNet-20 step (batch 4) vs ADAM"):
        assert line in table, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: the script would run for real")
def test_without_cuda_it_says_so_and_exits_0():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "no CUDA device here" in out.stdout
