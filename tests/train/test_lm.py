"""The language-model path on a small generated text: data, model, training, resume, errors."""
import json
import os
import random
import signal

import pytest
import torch

from qtrain.cli import main as cli
from qtrain.data import load_dataset
from qtrain.data.shakespeare import lm_batches, load_text, val_windows
from qtrain.models import GPT, build
from qtrain.train import TrainConfig, load_checkpoint, read_metrics, run
from qtrain.train.stopping import RunStopped, Stopper

WORDS = "the king shall speak to thee of love and death my lord good night".split()


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("text")
    lines = (" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300))
    (folder / "input.txt").write_text("\n".join(lines) + "\n")
    return folder


def tiny(text_dir, **kw):
    cfg = dict(data="shakespeare", model="gpt-tiny", data_dir=str(text_dir), optimizer="adamw", lr=3e-3,
               lr_schedule="cosine", warmup_steps=2, epochs=2, steps_per_epoch=5, batch_size=8, block_size=16,
               test_subset=40, threads=1, progress=False)
    cfg.update(kw)
    return TrainConfig(**cfg)


# -- data ------------------------------------------------------------------------------------------
def test_split_vocab_and_windows(text_dir):
    text = (text_dir / "input.txt").read_text()
    ds = load_dataset("shakespeare", text_dir)
    n = int(len(text) * 0.9)
    assert ds.vocab == "".join(sorted(set(text)))
    assert ds.decode(ds.train_ids) == text[:n] and ds.decode(ds.val_ids) == text[n:]
    a = list(lm_batches(ds, 6, 10, seed=3, epoch=1, steps=3))
    b = list(lm_batches(ds, 6, 10, seed=3, epoch=1, steps=3))
    c = list(lm_batches(ds, 6, 10, seed=3, epoch=2, steps=3))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))  # reproducible
    assert not torch.equal(a[0][0], c[0][0])  # another epoch, other windows
    for x, y in a:
        assert x.shape == (6, 10) and torch.equal(x[:, 1:], y[:, :-1])
        for row, target in zip(x, y):  # each window is a stretch of the training text, y the next characters
            s = ds.decode(row) + ds.decode(target[-1:])
            assert s in text[:n]
    shares = [list(lm_batches(ds, 6, 10, seed=3, epoch=1, steps=3, rank=r, world_size=2)) for r in range(2)]
    for k in range(3):  # the ranks' shares make up the single-process batch
        assert torch.equal(torch.cat([shares[0][k][0], shares[1][k][0]]), a[k][0])
    vx = torch.cat([x for x, _ in val_windows(ds, 10, 4)])
    assert vx.shape == ((len(ds.val_ids) - 1) // 10, 10) and ds.decode(vx.flatten()) == text[n:n + vx.numel()]


def test_missing_and_bad_text_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir") as e:
        load_text(tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    (tmp_path / "input.txt").write_bytes(b"\xff\xfe abc" * 10)
    with pytest.raises(ValueError, match="not UTF-8"):
        load_text(tmp_path)
    (tmp_path / "input.txt").write_text("abc")
    with pytest.raises(ValueError, match="too few"):
        load_text(tmp_path)
    sub = tmp_path / "parent" / "tinyshakespeare"
    sub.mkdir(parents=True)
    (sub / "input.txt").write_text("hello world " * 20)
    assert load_text(tmp_path / "parent").num_classes == 8  # the parent folder works too


# -- model -----------------------------------------------------------------------------------------
def test_gpt_is_causal_and_names_its_block_weights():
    torch.manual_seed(0)
    net = build("gpt-tiny", 11, block_size=12)
    x = torch.randint(0, 11, (2, 12))
    y = x.clone()
    y[:, 7:] = (y[:, 7:] + 1) % 11  # change the future only
    out_x, out_y = net(x), net(y)
    assert out_x.shape == (2, 12, 11) and out_x.dtype == torch.float32
    assert torch.equal(out_x[:, :7], out_y[:, :7]) and not torch.equal(out_x[:, 7:], out_y[:, 7:])
    names = [n for n, _ in net.block_weights()]
    assert len(names) == 16 and all(n.startswith("blocks.") for n in names)
    with pytest.raises(ValueError, match="block_size=12"):
        net(torch.zeros(1, 13, dtype=torch.long))
    assert net.to(torch.bfloat16)(x).dtype == torch.float32  # logits in float32 whatever the weights


# -- training --------------------------------------------------------------------------------------
def test_lm_run_reports_val_loss_and_quantizes_the_block_linears(text_dir, tmp_path):
    s = run(tiny(text_dir, method="sr", grid="ternary"), tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    vocab = len(load_text(text_dir).vocab)
    assert all(0 < r["val_loss"] < 2 * torch.log(torch.tensor(float(vocab))).item() for r in rows)
    assert rows[1]["val_loss"] < rows[0]["val_loss"]  # it learns
    assert s["val_loss"] == rows[-1]["val_loss"] and s["config"]["quantize"] == "blocks"
    assert set(rows[-1]["weight_change"]) == {n for n, _ in GPT(vocab).block_weights()}
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    w = ck["model"]["blocks.0.fc.weight"]
    assert w.unique().numel() <= 3  # ternary
    assert ck["model"]["tok.weight"].unique().numel() > 3  # embeddings stay float
    assert 0 < s["memory"]["bytes_per_param"] < 20


def test_bf16_weights_and_plain_adamw(text_dir, tmp_path):
    s = run(tiny(text_dir, weight_dtype="bfloat16"), tmp_path)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert all(t.dtype == torch.bfloat16 for t in ck["model"].values())
    assert s["memory"]["bytes_per_param"] == pytest.approx(6.0)  # bf16 weights + two bf16 moments (plain torch AdamW)


@pytest.mark.parametrize("cfg", [dict(method="sr", grid="bfloat16", quantize="every", weight_dtype="bfloat16"),
                                 dict(method="bc", grid="ternary", scale="dynamic"),
                                 dict(method="sr", grid="bfloat16", quantize="every", weight_dtype="bfloat16",
                                      state_dtype="bfloat16")], ids=["sr-bf16", "bc-ternary-dynamic", "sr-bf16-state"])
def test_lm_resume_mid_epoch_is_bit_identical(text_dir, tmp_path, monkeypatch, capsys, cfg):
    run(tiny(text_dir, **cfg), tmp_path / "ref")
    k = 7  # step 2 of epoch 2 (5 steps per epoch)
    real, calls = Stopper.check, {"n": 0}

    def check(self, *a, **kw):
        if not a and not kw:
            calls["n"] += 1
            if calls["n"] == k:
                os.kill(os.getpid(), signal.SIGINT)
        return real(self, *a, **kw)
    monkeypatch.setattr(Stopper, "check", check)
    out = tmp_path / "r"
    with pytest.raises(RunStopped):
        run(tiny(text_dir, **cfg), out)
    monkeypatch.undo()
    ck = load_checkpoint(out / "checkpoint.pt")
    assert (ck["epoch"], ck["step"]) == (1, 2)
    assert cli(["train", "--resume", str(out), "--no-progress"]) == 0
    a, b = load_checkpoint(tmp_path / "ref" / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["val_loss"] for r in read_metrics(tmp_path / "ref")] == [r["val_loss"] for r in read_metrics(out)]
    assert [r["lr"] for r in read_metrics(out)] == [r["lr"] for r in read_metrics(tmp_path / "ref")]
    capsys.readouterr()
    assert cli(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 2  # the cosine spans 2 epochs
    assert "--epochs 2" in capsys.readouterr().err


def test_cosine_schedule_reaches_zero_after_warmup(text_dir, tmp_path):
    run(tiny(text_dir, warmup_steps=3), tmp_path)
    lrs = [r["lr"] for r in read_metrics(tmp_path)]
    assert lrs[0] == pytest.approx(3e-3 / 3)  # first step of the warmup
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("args,needle", [
    (["--data-dir", "/nonexistent/qtrain-text"], "--data-dir"),
    (["--model", "smallcnn"], "does not fit data"),
    (["--block-size", "5000"], "block_size=5000"),
    (["--quantize", "conv", "--method", "sr"], "no conv tensors"),
    (["--optimizer", "torchao-sr-adamw"], "--weight-dtype bfloat16"),
    (["--warmup-steps", "50"], "warmup_steps=50"),
])
def test_lm_one_line_errors(text_dir, tmp_path, capsys, args, needle):
    base = ["train", "--data", "shakespeare", "--model", "gpt-tiny", "--data-dir", str(text_dir), "--epochs", "1",
            "--steps-per-epoch", "2", "--batch-size", "4", "--lr-schedule", "cosine", "--out", str(tmp_path / "r"),
            "--no-progress"]
    assert cli(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err, err


def test_image_runs_refuse_lm_settings(tmp_path, capsys):
    base = ["train", "--data", "digits", "--model", "smallcnn", "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"]
    for args, needle in ((["--steps-per-epoch", "5"], "steps_per_epoch=5"), (["--weight-dtype", "bfloat16"], "weight_dtype"),
                         (["--model", "gpt-tiny"], "does not fit data")):
        assert cli(base + args) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
    assert TrainConfig(data="digits", model="smallcnn").validate().quantize == "conv"


def test_dynamic_absmean_ternary_follows_the_latents(text_dir, tmp_path):
    run(tiny(text_dir, method="bc", grid="ternary", scale="dynamic"), tmp_path)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    q = ck["optimizer"]["qtrain"]
    assert len(q["latents"]) == 16
    for name, grid, latent in zip(q["names"], q["grids"], q["latents"]):
        # BitNet: s = mean |w_r| of the latents rounded at the last step, latents not clipped to ±s
        assert grid["scale"] == pytest.approx(latent.abs().mean().item(), rel=1e-5), name
        assert latent.abs().max().item() > grid["scale"]
        s = torch.tensor(grid["scale"], dtype=torch.float32).item()
        assert set(ck["model"][name].unique().tolist()) <= {-s, 0.0, s}


def test_bf16_state_is_kept_and_halves_the_moments(text_dir, tmp_path):
    cfg = dict(method="sr", grid="bfloat16", quantize="every", weight_dtype="bfloat16")
    a = run(tiny(text_dir, **cfg), tmp_path / "fp32-state")
    b = run(tiny(text_dir, state_dtype="bfloat16", **cfg), tmp_path / "bf16-state")
    assert a["memory"]["bytes_per_param"] == pytest.approx(10.0)  # bf16 weights + two float32 moments
    assert b["memory"]["bytes_per_param"] == pytest.approx(6.0)   # bf16 weights + two bf16 moments
    state = load_checkpoint(tmp_path / "bf16-state" / "checkpoint.pt")["optimizer"]["state"]
    assert {v["exp_avg"].dtype for v in state.values()} == {torch.bfloat16}
    assert abs(a["val_loss"] - b["val_loss"]) < 0.1


def test_lm_two_processes_match_one(text_dir, tmp_path):
    """torchrun, 2 CPU ranks (gloo): the ranks hold identical weights, and the run matches one process
    (the same batches: val loss equal to 1e-4, weights but for a few Adam-amplified entries) up to the summation
    order of the averaged gradient."""
    import socket
    import subprocess
    import sys

    def torchrun(nproc, out):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "qtrain", "train", "--data",
               "shakespeare", "--model", "gpt-tiny", "--data-dir", str(text_dir), "--epochs", "1", "--steps-per-epoch",
               "3", "--batch-size", "8", "--block-size", "16", "--test-subset", "40", "--optimizer", "adamw",
               "--method", "float", "--device", "cpu", "--no-progress", "--out", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads((out / "summary.json").read_text())

    two, one = torchrun(2, tmp_path / "two"), torchrun(1, tmp_path / "one")
    assert two["world_size"] == 2 and two["replicas_identical"], two["replica_digests"]
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
    a = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"]
    # Adam divides by sqrt(v): entries whose gradient is ~0 move by up to lr either way with the summation order
    off = sum(int(((a[k] - b[k]).abs() > 1e-4).sum()) for k in a)
    assert off < 0.01 * sum(t.numel() for t in a.values()), off
