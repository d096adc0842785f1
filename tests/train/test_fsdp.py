"""`torchrun ... qtrain train --fsdp` on two CPU processes (gloo) on digits: the sharded run equals
the DDP run bit for bit, its sharded checkpoint resumes bit-identically on 2 ranks and runs on 1,
and a checkpoint resumed with the wrong launcher flags gives one line."""
import json
import os
import shutil
import subprocess

from qtrain.train import load_checkpoint

from test_distributed import torchrun, torchrun_cmd

ARGS = ["--model", "smallcnn", "--method", "sr", "--lr-milestones", "5"]


def test_fsdp_equals_ddp_and_resumes_on_two_ranks_and_on_one(tmp_path):
    ddp = torchrun(2, tmp_path / "ddp", *ARGS)
    half = torchrun(2, tmp_path / "fsdp", *ARGS, "--fsdp", "--epochs", "1")
    assert half["replicas_identical"]
    ck = load_checkpoint(tmp_path / "fsdp" / "checkpoint.pt")
    shards = ck["optimizer"]["sharded"]
    assert ck["model"] == {} and (tmp_path / "fsdp" / shards).is_dir()
    assert [p.name for p in (tmp_path / "fsdp").iterdir() if p.name.startswith("sharded-")] == [shards]  # old ones pruned
    shutil.copytree(tmp_path / "fsdp", tmp_path / "one")

    resumed = torchrun(2, tmp_path / "fsdp", "--resume", str(tmp_path / "fsdp"), "--epochs", "2")
    assert resumed["replicas_identical"] and resumed["epochs"] == 2
    assert resumed["replica_digests"] == ddp["replica_digests"]  # FSDP + resume = DDP straight, bit for bit

    one = torchrun(1, tmp_path / "one", "--resume", str(tmp_path / "one"), "--epochs", "2")
    assert one["world_size"] == 1 and one["config"]["fsdp"] and len(one["replica_digests"]) == 1

    # a sharded checkpoint resumed without --fsdp: one line, exit 2
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [c for c in torchrun_cmd(1, tmp_path / "one", "--resume", str(tmp_path / "one"), "--epochs", "3")]
    cfg = json.loads((tmp_path / "one" / "config.json").read_text())
    cfg["fsdp"] = False
    (tmp_path / "one" / "config.json").write_text(json.dumps(cfg))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in r.stderr.splitlines() if line.startswith("qtrain train")]
    assert r.returncode != 0 and lines and "saved with --fsdp" in lines[0], r.stderr[-2000:]
