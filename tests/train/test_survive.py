"""Runs that survive: one writer per folder, checksummed checkpoints, history kept in the
checkpoint, mid-epoch saves on SIGINT/SIGTERM and on a timer, bit-identical resumes."""
import json
import os
import random
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qtrain.cli import main as cli
from qtrain.train import TrainConfig, load_checkpoint, read_metrics, run
from qtrain.train.stopping import Stopper

TINY = dict(data="digits", model="smallcnn", method="sr", epochs=2, batch_size=64, train_subset=512, test_subset=128, threads=1,
            progress=False)
FLAGS = ["--data", "digits", "--model", "smallcnn", "--method", "sr", "--epochs", "2", "--batch-size", "64",
         "--train-subset", "512", "--test-subset", "128", "--threads", "1", "--no-progress"]  # = TINY: 8 batches per epoch;
# one torch thread in every process (the thread count changes reduction order, hence the bits)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    run(TrainConfig(**TINY), out)
    return out


def same_run(a: Path, b: Path):
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    ra, rb = read_metrics(a), read_metrics(b)
    for key in ("epoch", "train_loss", "train_error", "test_loss", "test_error", "weight_change"):
        assert [r[key] for r in ra] == [r[key] for r in rb], key


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".qtrain.lock"}


# -- 1. one writer per run folder -------------------------------------------------------------------
HOLD = "import sys; from qtrain.train.lock import run_lock\nwith run_lock(sys.argv[1]):\n print('held', flush=True)\n sys.stdin.read()"


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(ref, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    for name, data in snapshot(ref).items():
        (out / name).write_bytes(data)
    before = snapshot(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (["train", *FLAGS, "--out", str(out)], ["train", "--resume", str(out), "--no-progress"],
                     ["table1", "--scale", "quick", "--out", str(out)]):
            assert cli(argv) == 2
            err = capsys.readouterr().err.strip()
            assert f"PID {holder.pid}" in err and "\n" not in err, err
        assert snapshot(out) == before  # nothing of the first run changed
    finally:
        holder.kill()  # kill -9: the lock stays behind as a file, held by no one
        holder.wait()
    assert cli(["train", "--resume", str(out), "--no-progress"]) == 0
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2]


# -- 2. checkpoint integrity -----------------------------------------------------------------------
def test_random_bit_flips_are_all_refused(ref, tmp_path, capsys):
    good = (ref / "checkpoint.pt").read_bytes()
    path = tmp_path / "checkpoint.pt"
    rng = random.Random(8)
    for trial in range(300):  # SHA-256 over the payload: a flip goes unnoticed with probability 2^-256
        bit = rng.randrange(8 * len(good))
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match="corrupt checkpoint"):
            load_checkpoint(path)
    for bad in (good[:-1], good + b"\0", good[: len(good) // 3], b""):
        path.write_bytes(bad)
        with pytest.raises(ValueError, match="corrupt checkpoint"):
            load_checkpoint(path)
    out = tmp_path / "r"  # and through the CLI: one line, exit 2
    out.mkdir()
    for name, data in snapshot(ref).items():
        (out / name).write_bytes(data)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    (out / "checkpoint.pt").write_bytes(bytes(flipped))
    assert cli(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt checkpoint" in err and str(out / "checkpoint.pt") in err and "\n" not in err


# -- 3. history in the checkpoint ------------------------------------------------------------------
@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),          # truncated
    lambda p: p.write_bytes(os.urandom(300)),                                     # garbage
    lambda p: p.unlink(),                                                         # missing
    lambda p: p.write_text("[1, 2]\n" + p.read_text()),                           # a line that is a list
    lambda p: p.write_bytes(b"\xff\xfe\x00" + p.read_bytes()),                    # not UTF-8
    lambda p: p.write_text(p.read_text() + p.read_text()),                        # duplicated epochs
])
def test_damaged_metrics_come_back_whole(ref, tmp_path, damage):
    out = tmp_path / "r"
    out.mkdir()
    for name, data in snapshot(ref).items():
        (out / name).write_bytes(data)
    damage(out / "metrics.jsonl")
    (out / "summary.json").unlink()
    assert cli(["train", "--resume", str(out), "--no-progress"]) == 0
    assert (out / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()
    s, r = json.loads((out / "summary.json").read_text()), json.loads((ref / "summary.json").read_text())
    assert s["seconds"] == r["seconds"] and s["best_test_error"] == r["best_test_error"] and s["test_error"] == r["test_error"]


def test_extended_resume_after_damage_has_one_row_per_epoch(ref, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    for name, data in snapshot(ref).items():
        (out / name).write_bytes(data)
    (out / "metrics.jsonl").write_text('{"epoch": 2}\n')
    assert cli(["train", "--resume", str(out), "--epochs", "3", "--lr-milestones", "1", "2", "--no-progress"]) == 0
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[:2] == read_metrics(ref)
    s = json.loads((out / "summary.json").read_text())
    assert s["seconds"] == pytest.approx(sum(r["seconds"] for r in rows))


# -- 4. mid-epoch checkpoints ----------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_saves_and_resume_is_bit_identical(ref, tmp_path, monkeypatch, capsys, sig):
    k = random.Random(int(sig)).randint(1, 7)  # a random step inside epoch 1 (8 batches)
    real, calls = Stopper.check, {"n": 0}

    def check(self):
        calls["n"] += 1
        if calls["n"] == k:
            os.kill(os.getpid(), sig)
        return real(self)
    monkeypatch.setattr(Stopper, "check", check)
    out = tmp_path / "r"
    assert cli(["train", *FLAGS, "--out", str(out)]) == 128 + sig
    monkeypatch.undo()
    err = capsys.readouterr().err.strip()
    assert f"stopped by {signal.Signals(sig).name}" in err and f"epoch 1, batch {k}/8" in err and "\n" not in err, err
    ck = load_checkpoint(out / "checkpoint.pt")
    assert (ck["epoch"], ck["step"]) == (0, k) and read_metrics(out) == []
    command = shlex.split(err.split("resume with: ")[1])
    assert command[:3] == ["qtrain", "train", "--resume"]
    assert cli(command[1:]) == 0
    same_run(ref, out)


KILL_AT = """import os, signal, sys
from qtrain.train import stopping
from qtrain.cli import main
real, n = stopping.Stopper.saved, [0]
def saved(self):
    real(self)
    n[0] += 1
    if n[0] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
stopping.Stopper.saved = saved
sys.exit(main(sys.argv[2:]))
"""


def test_kill9_after_a_timed_mid_epoch_save_then_resume_is_bit_identical(ref, tmp_path):
    k = random.Random(9).randint(1, 7)
    out = tmp_path / "r"
    # --checkpoint-minutes 1e-9: a timed save after every step; the process is killed right after the k-th
    r = subprocess.run([sys.executable, "-c", KILL_AT, str(k), "train", *FLAGS, "--checkpoint-minutes", "1e-9",
                        "--out", str(out)], env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == -signal.SIGKILL
    ck = load_checkpoint(out / "checkpoint.pt")
    assert (ck["epoch"], ck["step"]) == (0, k)
    assert cli(["train", "--resume", str(out), "--no-progress"]) == 0
    same_run(ref, out)


def test_stopped_before_the_first_save_says_to_rerun(tmp_path, monkeypatch, capsys):
    import qtrain.train.loop as loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "load_dataset", interrupted)
    argv = ["train", *FLAGS, "--out", str(tmp_path / "r")]
    assert cli(argv) == 130
    err = capsys.readouterr().err.strip()
    assert "rerun the original command: qtrain " + shlex.join(argv) in err
    monkeypatch.undo()
    assert cli(["train", "--resume", str(tmp_path / "r")]) == 2
    assert "rerun its original command" in capsys.readouterr().err


def test_nan_message_gives_a_command_that_works(tmp_path, monkeypatch, capsys, poison_loss):
    poison_loss(lambda n: n == 3)
    out = tmp_path / "r"
    assert cli(["train", *FLAGS, "--out", str(out)]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.strip()
    assert "loss became nan at batch 3 in epoch 1" in err and "(after epoch 0)" in err, err
    command = shlex.split(err.split("lower lr: ")[1])
    assert command[0] == "qtrain" and "--lr" in command
    assert cli(command[1:]) == 0
    s = json.loads((Path(command[command.index("--out") + 1]) / "summary.json").read_text())
    assert s["lr"] == pytest.approx(0.001) and s["epochs"] == 2
