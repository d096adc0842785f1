"""A run stopped right after the last batch of an epoch (its checkpoint says batch n of n) resumes,
and ends bit-identical to an uninterrupted run."""
import os
import shlex
import signal

import torch

from qtrain.cli import main as cli
from qtrain.train import TrainConfig, load_checkpoint, read_metrics, run
from qtrain.train.stopping import Stopper

TINY = dict(data="digits", model="smallcnn", method="sr", epochs=2, batch_size=64, train_subset=512, test_subset=128,
            threads=1, progress=False)
FLAGS = ["--data", "digits", "--model", "smallcnn", "--method", "sr", "--epochs", "2", "--batch-size", "64",
         "--train-subset", "512", "--test-subset", "128", "--threads", "1", "--no-progress"]  # 8 batches per epoch


def test_stopped_after_the_last_batch_of_an_epoch_resumes(tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref"
    run(TrainConfig(**TINY), ref)
    real, calls = Stopper.check, {"n": 0}

    def check(self, force=False):
        calls["n"] += 1
        if calls["n"] == 8:  # the 8th step of epoch 1: its last batch
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, force)
    monkeypatch.setattr(Stopper, "check", check)
    out = tmp_path / "r"
    assert cli(["train", *FLAGS, "--out", str(out)]) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "epoch 1, batch 8/8" in err, err
    assert (load_checkpoint(out / "checkpoint.pt")["step"]) == 8
    assert cli(shlex.split(err.split("resume with: ")[1])[1:]) == 0
    assert "resuming at epoch 1, batch 8/8: method sr" in capsys.readouterr().out
    assert cli(["train", "--resume", str(out), "--no-progress"]) == 0  # nothing left to train: says so
    assert "already finished: 2 of 2 epochs trained in" in capsys.readouterr().out
    a, b = load_checkpoint(ref / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    keys = ("train_loss", "train_error", "test_loss", "test_error", "weight_change")
    assert [[r[k] for k in keys] for r in read_metrics(ref)] == [[r[k] for k in keys] for r in read_metrics(out)]


def test_the_already_finished_hint_is_a_command_the_resume_rules_accept(tmp_path, capsys):
    # default milestones scale with --epochs, so the hint keeps the saved ones; a cosine run cannot grow
    out = tmp_path / "r"
    assert cli(["train", *FLAGS, "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli(["train", "--resume", str(out), "--no-progress"]) == 0
    hint = capsys.readouterr().out.split("to train it further: ")[1].splitlines()[0]
    assert hint == "qtrain train --resume RUN --epochs N --lr-milestones 1 2 (N > 2)"
    args = shlex.split(hint.split(" (N")[0].replace("RUN", str(out)).replace(" N ", " 3 "))[1:]
    assert cli(args + ["--no-progress"]) == 0 and len(read_metrics(out)) == 3
    from qtrain.train.progress import extend_hint
    assert "cannot be extended" in extend_hint(TrainConfig(lr_schedule="cosine"))
    assert extend_hint(TrainConfig(epochs=4, lr_milestones=[2, 3])) == \
        "to train it further: qtrain train --resume RUN --epochs N (N > 4)"
