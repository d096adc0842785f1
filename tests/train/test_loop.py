"""End-to-end training on the embedded digits: every method, resume, errors, NaN handling."""
import json

import pytest
import torch

import qtrain.train.loop as loop
from qtrain.cli import main as cli
from qtrain.train import TrainConfig, load_checkpoint, read_metrics, run

TINY = dict(data="digits", model="smallcnn", epochs=2, batch_size=64, train_subset=512, test_subset=200,
            progress=False)


@pytest.mark.parametrize("method", ["float", "bc", "r", "sr"])
def test_tiny_run_per_method(tmp_path, method):
    s = run(TrainConfig(method=method, **TINY), tmp_path)
    for key in ("data", "model", "method", "optimizer", "batch_size", "epochs", "test_error", "seconds"):
        assert key in s
    assert 0 <= s["test_error"] <= 100 and s["epochs"] == 2 and s["replicas_identical"]
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    convs = {"features.0.weight", "features.4.weight", "features.8.weight"}
    assert set(rows[0]["weight_change"]) == (set() if method == "float" else convs)  # float weights always move
    if method == "r":  # ADAM moves of ~lr = 0.01 rarely cross half a level (s = mean |w|): R barely moves
        assert max(rows[-1]["weight_change"].values()) < 5
    if method == "sr":  # SR flips with probability |move| / 2s per step: it explores
        assert min(rows[-1]["weight_change"].values()) > 5
    assert json.loads((tmp_path / "summary.json").read_text())["test_error"] == s["test_error"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2


def _interrupt_after(monkeypatch, n_epochs):
    real, calls = loop.train_epoch, {"n": 0}

    def flaky(*a, **k):
        if calls["n"] == n_epochs:
            raise KeyboardInterrupt  # killed mid-epoch
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_epoch", flaky)


@pytest.mark.parametrize("method", ["sr", "bc"])
def test_resume_after_a_kill_is_bit_identical(tmp_path, monkeypatch, method):
    cfg = dict(TINY, epochs=4, method=method, bc_rounding="stochastic")
    run(TrainConfig(**cfg), tmp_path / "ref")
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(TrainConfig(**cfg), tmp_path / "killed")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 2
    assert cli(["train", "--resume", str(tmp_path / "killed"), "--no-progress"]) == 0
    a = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ra, rb = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "killed")
    assert [r["test_error"] for r in ra] == [r["test_error"] for r in rb]


def test_cli_train_and_preset_override(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("data: digits\nmodel: smallcnn\nmethod: bc\nepochs: 3\nbatch_size: 64\ntrain_subset: 256\n")
    assert cli(["train", "--config", str(preset), "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["method"] == "bc" and s["epochs"] == 1


@pytest.mark.parametrize("args,needle", [
    (["--model", "resnet99"], "model='resnet99'"),
    (["--method", "xsr"], "method='xsr'"),
    (["--optimizer", "rmsprop"], "optimizer='rmsprop'"),
    (["--data", "svhn"], "data='svhn'"),
    (["--lr", "0"], "lr=0.0"),
    (["--lr", "-1"], "lr=-1.0"),
    (["--batch-size", "0"], "batch_size=0"),
    (["--epochs", "-2"], "epochs=-2"),
    (["--data", "cifar10", "--data-dir", "/nonexistent/qtrain-data"], "/nonexistent/qtrain-data"),
    (["--scale", "big"], "scale"),
    (["--width", "8", "--model", "resnet20"], "width=8"),
    (["--device", "gpu"], "device='gpu'"),
    (["--model", "mlp", "--method", "sr"], "no conv tensors"),
    (["--lr-milestones", "0"], "lr_milestones"),
])
def test_one_line_errors(tmp_path, capsys, args, needle):
    base = ["train", "--data", "digits", "--model", "smallcnn", "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"]
    assert cli(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_corrupt_and_mismatched_checkpoints(tmp_path, capsys):
    run(TrainConfig(**TINY), tmp_path / "r")
    ck = tmp_path / "r" / "checkpoint.pt"
    good = ck.read_bytes()
    ck.write_bytes(good[: len(good) // 2])
    assert cli(["train", "--resume", str(tmp_path / "r")]) == 2
    assert "corrupt" in capsys.readouterr().err
    ck.write_bytes(good)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg["method"] = "sr"
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    assert cli(["train", "--resume", str(tmp_path / "r")]) == 2
    assert "method='float'" in capsys.readouterr().err
    assert cli(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "config.json" in capsys.readouterr().err
    # an existing run is never overwritten by a fresh one
    assert cli(["train", "--data", "digits", "--model", "smallcnn", "--out", str(tmp_path / "r")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys, poison_loss):
    poison_loss(lambda n: n > 12)
    assert cli(["train", "--data", "digits", "--model", "smallcnn", "--epochs", "3", "--batch-size", "64",
                "--train-subset", "512", "--test-subset", "64", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "loss became nan" in err and "after epoch 1" in err and "\n" not in err
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1
    assert len(read_metrics(tmp_path / "r")) == 1


def test_yaml_numbers_written_as_strings_and_bad_types(tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("data: digits\nmodel: smallcnn\nweight_decay: 5e-4\nlr: 1e-2\nepochs: 1\ntrain_subset: 128\n")
    assert cli(["train", "--config", str(preset), "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["weight_decay"] == 5e-4
    preset.write_text("data: digits\nlr_gamma: fast\n")
    assert cli(["train", "--config", str(preset), "--out", str(tmp_path / "r2")]) == 2
    assert "lr_gamma='fast'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert cli(["train", "--data", "digits", "--model", "smallcnn", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_resume_refuses_a_different_lr_schedule_but_can_extend(tmp_path, capsys):
    run(TrainConfig(**dict(TINY, epochs=2)), tmp_path / "r")
    assert cli(["train", "--resume", str(tmp_path / "r"), "--epochs", "4", "--no-progress"]) == 2
    assert "--lr-milestones 1 2" in capsys.readouterr().err
    assert cli(["train", "--resume", str(tmp_path / "r"), "--epochs", "3", "--lr-milestones", "1", "2",
                "--no-progress"]) == 0
    assert [r["epoch"] for r in read_metrics(tmp_path / "r")] == [1, 2, 3]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["epochs"] == 3


def test_micro_batches_accumulate_the_same_gradient(tmp_path):
    """A BN-free model: 4 chunks of 16 give the batch-64 step up to float summation order."""
    a = run(TrainConfig(**dict(TINY, model="mlp", epochs=1)), tmp_path / "a")
    b = run(TrainConfig(**dict(TINY, model="mlp", epochs=1, micro_batch=16)), tmp_path / "b")
    wa = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert abs(a["test_error"] - b["test_error"]) < 2


def test_tensorboard_logging_mirrors_the_metrics(tmp_path, monkeypatch):
    """--tensorboard writes every epoch's scalars (a stand-in SummaryWriter records the calls)."""
    import sys
    import types

    calls = []

    class FakeWriter:
        def __init__(self, log_dir):
            calls.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("closed", None))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    run(TrainConfig(**dict(TINY, method="sr", tensorboard=True)), tmp_path)
    tags = {t for t, _ in calls}
    assert {"test_error", "train_loss", "lr", "weight_change/features.0.weight", "closed"} <= tags
    assert ("test_error", 2) in calls and calls[0] == ("dir", str(tmp_path / "tensorboard"))


def test_tensorboard_missing_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    assert cli(["train", "--data", "digits", "--model", "smallcnn", "--epochs", "1", "--tensorboard",
                "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "pip install 'qtrain[tensorboard]'" in capsys.readouterr().err
