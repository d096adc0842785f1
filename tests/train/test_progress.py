"""What a run prints: one line per epoch off a terminal, bars only on one, rounded printed numbers
(files keep full precision), the thread count it picks, and export's human line."""
import io
import json

import pytest
import torch

from qtrain.cli import main as cli
from qtrain.models import build
from qtrain.train import TrainConfig, read_metrics, run
from qtrain.train import threads
from qtrain.train.progress import bar_wanted, epoch_line, rounded

ARGS = ["train", "--data", "digits", "--model", "smallcnn", "--method", "sr", "--epochs", "2", "--batch-size", "64",
        "--train-subset", "512", "--test-subset", "200"]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_one_line_per_epoch_then_rounded_json(tmp_path, capsys):
    assert cli(ARGS + ["--out", str(tmp_path / "r")]) == 0  # stdout is not a terminal under pytest
    first, *lines, last = capsys.readouterr().out.strip().splitlines()
    assert first.startswith("training: method sr (stochastic rounding) with adam, smallcnn on digits (512 training "
                            "examples), 2 epochs of batch 64, lr 0.01, threads 1 -> ")
    assert [x.split()[:2] for x in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    for x in lines:
        assert "train loss" in x and "test loss" in x and "error" in x and " lr " in x and x.endswith(" s")
    printed = json.loads(last)
    rows = read_metrics(tmp_path / "r")
    assert printed["test_error"] == round(rows[-1]["test_error"], 4)
    assert printed["seconds"] == round(sum(r["seconds"] for r in rows), 1)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["test_error"] == rows[-1]["test_error"]  # files keep full precision
    assert printed["threads"] == 1 and json.loads((tmp_path / "r" / "config.json").read_text())["threads"] == 1


def test_no_progress_and_library_runs(tmp_path, capsys):
    cfg = TrainConfig(data="digits", model="smallcnn", epochs=1, batch_size=64, train_subset=256, test_subset=100)
    run(cfg, tmp_path / "a")
    assert capsys.readouterr().out.splitlines()[1].startswith("epoch 1/1 ")
    run(TrainConfig(**{**cfg.to_dict(), "threads": None}), tmp_path / "b", epoch_lines=False)
    assert capsys.readouterr().out == ""


def test_bars_only_on_a_terminal():
    assert not bar_wanted(True, io.StringIO())
    assert bar_wanted(True, _Tty()) and not bar_wanted(False, _Tty())


def test_rounded_and_epoch_line():
    r = rounded({"test_error": 79.60000000000001, "seconds": 12.345678, "train_loss": 0.123456789, "epochs": 3,
                 "weight_change": {"conv": 33.333333333}, "bytes": 7464, "best_test_error": None})
    assert r == {"test_error": 79.6, "seconds": 12.3, "train_loss": 0.12346, "epochs": 3,
                 "weight_change": {"conv": 33.3333}, "bytes": 7464, "best_test_error": None}
    row = {"epoch": 3, "train_loss": 0.51234, "train_error": 17.3125, "test_loss": 0.4871, "test_error": 16.0,
           "lr": 0.01, "seconds": 4.21}
    assert epoch_line(row, 10, "val") == ("epoch 3/10  train loss 0.5123 error 17.31%  val loss 0.4871 error 16.00%  "
                                         "lr 0.01  4.2 s")


def test_thread_pick_follows_the_work_per_step(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 16)
    mini = build("smallcnn", 10, in_channels=3, image_size=32, width=16)
    assert threads.pick_threads(mini, (3, 32, 32), 128) == 1  # the mini scale: 2.2 GFLOP per step
    wide = build("resnet20", 10, in_channels=3, image_size=32)
    flops = 6 * threads.macs_per_example(wide, (3, 32, 32)) * 128
    assert 2.5e10 < flops < 3.5e10  # ResNet-20: ~41 M MACs per 32x32 image
    assert threads.pick_threads(wide, (3, 32, 32), 128) == int(flops // threads.FLOP_PER_THREAD) > 1
    monkeypatch.setattr(threads, "cores", lambda: 2)
    assert threads.pick_threads(wide, (3, 32, 32), 128) == 2
    before = [p.clone() for p in wide.parameters()] + [b.clone() for b in wide.buffers()]
    threads.macs_per_example(wide, (3, 32, 32))
    assert all(torch.equal(a, b) for a, b in zip(before, list(wide.parameters()) + list(wide.buffers())))


def test_omp_num_threads_caps_the_pick(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for omp, want in (("", 8), ("1", 1), ("3", 3), ("64", 8), ("0", 8), ("two", 8)):
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
        assert threads.cores() == want, omp
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for omp in ("1", "6", ""):  # torchrun sets OMP_NUM_THREADS=1 itself: the share of the cores counts
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
        assert threads.cores() == 4


def test_explicit_threads_are_kept(tmp_path, capsys):
    assert cli(ARGS + ["--epochs", "1", "--threads", "2", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["threads"] == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["threads"] == 2


def test_export_prints_a_line_then_json_and_refuses_non_runs(tmp_path, capsys):
    assert cli(ARGS + ["--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert cli(["export", str(tmp_path / "r"), "--out", str(tmp_path / "m.safetensors")]) == 0
    human, js = capsys.readouterr().out.strip().splitlines()
    info = json.loads(js)
    assert human.startswith(f"exported {tmp_path / 'r'} (epoch 1)") and f"{info['bytes']:,} bytes" in human
    for target in (tmp_path / "nothing", tmp_path):
        assert cli(["export", str(target), "--out", str(tmp_path / "x.safetensors")]) == 2
        err = capsys.readouterr().err
        assert "is not a run folder" in err and "--resume" not in err and len(err.strip().splitlines()) == 1


def test_milestones_out_of_reach_warn_that_the_lr_never_decays():
    import warnings

    from qtrain.train.schedule import make_scheduler
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.warns(UserWarning, match=r"lr_milestones \[8, 12\] are all at or past epochs=4"):
        make_scheduler(opt, TrainConfig(epochs=4, lr_milestones=[8, 12]), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cfg in (TrainConfig(epochs=9, lr_milestones=[8, 12]), TrainConfig(epochs=1),  # one in reach; defaults
                    TrainConfig(epochs=4, lr_milestones=[8], lr_gamma=1.0)):  # no decay asked for
            make_scheduler(opt, cfg, 10)
