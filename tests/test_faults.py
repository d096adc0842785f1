"""Every fault a careless user or a flaky machine produces gives one line, exit 2, naming the
file or value and the fix, before the expensive part starts; and nothing of a run is lost."""
import errno
import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qtrain import _io
from qtrain.cli import main as cli
from qtrain.train import TrainConfig, load_checkpoint, run, save_checkpoint

TINY = dict(data="digits", model="smallcnn", epochs=2, batch_size=64, train_subset=128, test_subset=64, progress=False)
FLAGS = ["--data", "digits", "--model", "smallcnn", "--epochs", "1", "--batch-size", "64", "--train-subset", "128",
         "--test-subset", "64", "--no-progress"]


def fails(capsys, argv, *needles):
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert str(n) in err, (n, err)
    return err


# -- data files ----------------------------------------------------------------------------------
def _cifar(folder: Path, n: int = 8, bad=None):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        if name == "data_batch_3":
            d.update(bad or {})
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    return folder / "data_batch_3"


@pytest.mark.parametrize("damage,needle", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(np.random.default_rng(1).bytes(5000)), "not a pickle"),
    (lambda p: p.write_bytes(b"\x80\x02" + np.random.default_rng(2).bytes(5000)), "not a readable CIFAR"),
    (lambda p: _cifar(p.parent, bad={b"data": np.zeros((8, 3072))}), "float64"),
    (lambda p: _cifar(p.parent, bad={b"labels": [10] * 8}), "outside 0..9"),
    (lambda p: _cifar(p.parent, bad={b"labels": [-1] * 8}), "outside 0..9"),
    (lambda p: _cifar(p.parent, bad={b"labels": [0.5] * 8}), "not integers"),
])
def test_damaged_cifar_batches(tmp_path, capsys, damage, needle):
    bad = _cifar(tmp_path / "c10")
    damage(bad)
    fails(capsys, ["train", "--data", "cifar10", "--data-dir", str(tmp_path / "c10"), "--model", "smallcnn",
                   "--out", str(tmp_path / "r"), "--no-progress"], bad, needle, "official archive")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def _idx(path: Path, arr: np.ndarray, code: int = 0x08):
    raw = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw))


def _mnist(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        _idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))


def test_truncated_mnist_gzip_and_negative_labels(tmp_path, capsys):
    _mnist(tmp_path / "m")
    argv = ["train", "--data", "mnist", "--data-dir", str(tmp_path / "m"), "--model", "mlp", "--batch-size", "4",
            "--out", str(tmp_path / "r"), "--no-progress"]
    img = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    good = img.read_bytes()
    img.write_bytes(good[: len(good) // 2])
    fails(capsys, argv, img, "damaged gzip", "complete copy")
    img.write_bytes(good)
    labels = tmp_path / "m" / "train-labels-idx1-ubyte.gz"
    _idx(labels, np.array([-1] + [3] * 19, dtype=np.int8), code=0x09)
    fails(capsys, argv, labels, "-1..3", "outside 0..9")


@pytest.mark.parametrize("flag,value", [("--checkpoint-minutes", "-1"), ("--dist-timeout", "0")])
def test_bad_survival_settings(tmp_path, capsys, flag, value):
    fails(capsys, ["train", *FLAGS, flag, value, "--out", str(tmp_path / "r")], f"{flag[2:].replace('-', '_')}=", flag)


@pytest.mark.parametrize("cmd", ["table1", "reproduce"])
@pytest.mark.parametrize("value,needles", [
    ("digits-smallcnn.sr-adam", ["CELL=N", "--cell-seeds c10-smallcnn-poster.bc-adam=10"]),
    ("digits-smallcnn.sr-adam=x", ["CELL=N", "whole number"]),
    ("digits-smallcnn.sr-adam=0", ["--cell-seeds digits-smallcnn.sr-adam=0", "positive integer"]),
    ("digits-smallcnn.nope=3", ["no cell 'digits-smallcnn.nope'", "--list"]),
    ("digits-smallcnn.sr-adam=\u00b2", ["CELL=N", "whole number"]),
    ("digits-smallcnn.sr-adam=5000", ["=5000 is more than 1000 seeds", "--cell-seeds digits-smallcnn.sr-adam=7"]),
])
def test_bad_cell_seeds(tmp_path, capsys, cmd, value, needles):
    fails(capsys, [cmd, "--scale", "quick", "--out", str(tmp_path / "t"), "--cell-seeds", value], *needles)
    assert not list(tmp_path.glob("t/**/runs/*")) and not (tmp_path / "t" / "theory").exists()  # refused first


def test_a_cell_given_two_seed_counts(tmp_path, capsys):
    fails(capsys, ["table1", "--scale", "quick", "--out", str(tmp_path / "t"), "--cell-seeds",
                   "digits-smallcnn.adam=3", "digits-smallcnn.adam=4"], "digits-smallcnn.adam twice", "give it once")
    # the flag given twice adds up (the first list is not dropped), and --plan-seeds checks it too
    fails(capsys, ["table1", "--scale", "quick", "--out", str(tmp_path / "t"), "--cell-seeds", "digits-smallcnn.adam=3",
                   "--seeds", "2", "--cell-seeds", "digits-smallcnn.adam=4", "--plan-seeds"], "digits-smallcnn.adam twice")


def test_batch_larger_than_the_training_set(tmp_path, capsys):
    fails(capsys, ["train", *FLAGS, "--batch-size", "256", "--out", str(tmp_path / "r")],
          "batch_size=256", "128 examples", "--batch-size 128")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


# -- settings files ------------------------------------------------------------------------------
def test_bad_config_files(tmp_path, capsys):
    y = tmp_path / "p.yaml"
    y.write_text("1: 2\nepochs: 1\n")
    fails(capsys, ["train", "--config", str(y), "--out", str(tmp_path / "a")], "1", "not text")
    y.write_bytes(b"epochs: 1\nlabel: caf\xe9\n")
    fails(capsys, ["train", "--config", str(y), "--out", str(tmp_path / "a")], y, "not UTF-8")
    run(TrainConfig(**dict(TINY, epochs=1)), tmp_path / "r")
    cfg = tmp_path / "r" / "config.json"
    for content in (b"[1, 2]", b"\xff\xfe{}", b'{"epochs": 1'):
        cfg.write_bytes(content)
        fails(capsys, ["train", "--resume", str(tmp_path / "r")], cfg)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("ck") / "r"
    run(TrainConfig(**dict(TINY, epochs=1)), out)
    return out


@pytest.mark.parametrize("change,needle", [
    (lambda ck: ck.pop("optimizer"), "'optimizer' is missing"),
    (lambda ck: ck.update(epoch="1"), "'epoch' is '1'"),
    (lambda ck: ck.update(epoch=-5), "'epoch' is -5"),
    (lambda ck: ck.update(step=99), "batch 99"),
    (lambda ck: ck.update(history=[]), "0 metrics rows for epoch 1"),
    (lambda ck: ck["optimizer"].pop("state"), "does not fit"),
])
def test_bad_checkpoint_fields(finished, tmp_path, capsys, change, needle):
    out = tmp_path / "r"
    out.mkdir()
    for f in ("config.json", "metrics.jsonl"):
        (out / f).write_bytes((finished / f).read_bytes())
    ck = load_checkpoint(finished / "checkpoint.pt")
    ck.pop("format")
    change(ck)
    save_checkpoint(out / "checkpoint.pt", ck)
    fails(capsys, ["train", "--resume", str(out), "--no-progress"], out / "checkpoint.pt", needle)


# -- disk ----------------------------------------------------------------------------------------
def test_disk_full_is_found_before_training(tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr("qtrain.train.loop.train_epoch", lambda *a, **k: trained.append(1))

    def full(fd):  # room for the small files, not for a checkpoint
        if os.fstat(fd).st_size > 20000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(_io.os, "fsync", full)
    fails(capsys, ["train", *FLAGS, "--out", str(tmp_path / "r")], tmp_path / "r" / "checkpoint.pt",
          "No space left", "free some disk space")
    assert not trained and not list((tmp_path / "r").glob(".*.tmp"))


def test_disk_full_mid_run_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import qtrain.train.loop as loop
    real, calls = loop.save_checkpoint, []

    def save(path, state):
        calls.append(state["epoch"])
        if state["epoch"] == 2:
            raise _io.WriteError(errno.ENOSPC, f"cannot write {path} (No space left on device); free some disk space")
        real(path, state)
    monkeypatch.setattr(loop, "save_checkpoint", save)
    fails(capsys, ["train", *FLAGS, "--epochs", "2", "--checkpoint-minutes", "0", "--out", str(tmp_path / "r")],
          "No space left")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1
    assert cli(["train", "--resume", str(tmp_path / "r"), "--no-progress"]) == 0  # nothing lost
    assert [r["epoch"] for r in map(json.loads, (tmp_path / "r" / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def test_read_only_out(tmp_path, capsys):
    if os.geteuid() == 0:  # root writes anywhere a mode allows: use a folder the kernel refuses
        out = Path("/sys/qtrain-test-run")
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        out = tmp_path / "ro" / "r"
    fails(capsys, ["train", *FLAGS, "--out", str(out)], out, "not writable")


# -- tidy files ----------------------------------------------------------------------------------
def test_stale_temp_files_removed_and_umask_respected(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "r"
    out.mkdir()
    stale = out / f".checkpoint.pt.{dead.pid}.abc123.tmp"  # left by a killed writer
    live = out / f".summary.json.{os.getpid()}.xyz789.tmp"  # a live writer's (this process)
    old_style = out / ".metrics.jsonl.k3x_9a2b.tmp"  # an older qtrain's name, without the PID
    fresh_old_style = out / ".summary.json.q1w2e3r4.tmp"
    for f in (stale, live, old_style, fresh_old_style):
        f.write_bytes(b"half")
    os.utime(old_style, (1e9, 1e9))
    old = os.umask(0o027)
    try:
        run(TrainConfig(**dict(TINY, epochs=1)), out)
    finally:
        os.umask(old)
    assert not stale.exists() and not old_style.exists() and live.exists() and fresh_old_style.exists()
    for f in ("summary.json", "checkpoint.pt", "metrics.jsonl", "config.json"):
        assert (out / f).stat().st_mode & 0o777 == 0o640, f


def test_figures_are_written_atomically(tmp_path):
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig = plt.figure()
    path = _io.atomic_savefig(fig, tmp_path / "f.png", dpi=50)
    good = path.read_bytes()
    assert good[:8] == b"\x89PNG\r\n\x1a\n"

    class Broken:
        def savefig(self, buf, **kw):
            buf.write(b"half a figure")
            raise RuntimeError("renderer crashed")
    with pytest.raises(RuntimeError):
        _io.atomic_savefig(Broken(), path)
    assert path.read_bytes() == good and not list(tmp_path.glob(".*.tmp"))
    plt.close(fig)
