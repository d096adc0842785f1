"""Round three of the faults: hostile or damaged inputs are refused in one line (exit 2) before
anything large is allocated or written, and reports cannot be changed by a damaged metrics file.
Bombs are generated here, small enough for CI; the refusals come before they could grow."""
import gzip
import json
import pickle
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from qtrain.experiments.table1 import run_table1
from qtrain.train import TrainConfig, load_checkpoint, run, save_checkpoint
from test_faults import fails  # one line, exit 2, no traceback

FLAGS = ["--data", "digits", "--model", "smallcnn", "--epochs", "1", "--batch-size", "64", "--train-subset", "128",
         "--test-subset", "64", "--no-progress", "--threads", "1"]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def alias_bomb(levels: int, fan: int = 9) -> str:
    """``levels`` lines, each a list of ``fan`` aliases of the previous: fan**levels nodes expanded."""
    lines = ["a0: &a0 [" + ", ".join(["x"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return "extra:\n" + "\n".join("  " + line for line in lines) + "\n"


# -- YAML -----------------------------------------------------------------------------------------
def test_yaml_alias_bombs_are_refused_before_they_grow(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("data: digits\nmodel: smallcnn\n" + alias_bomb(9))  # 9**9 = 387M nodes expanded, ~600 bytes
    assert bomb.stat().st_size < 700
    before = peak_mb()
    fails(capsys, ["train", "--config", str(bomb), "--out", str(tmp_path / "r")], bomb, "YAML nodes")
    assert peak_mb() - before < 100
    assert not (tmp_path / "r").exists()  # no config.json of millions of lines
    flow = "{" + alias_bomb(9).split(":", 1)[1].strip().replace("\n  ", ", ") + "}"  # the same bomb on one line
    fails(capsys, ["table1", "--scale", "quick", "--out", str(tmp_path / "t"), "--set", "extra=" + flow], "YAML nodes")
    big = tmp_path / "big.yaml"
    big.write_text("label: " + "x" * (2 << 20) + "\n")
    fails(capsys, ["train", "--config", str(big), "--out", str(tmp_path / "r")], "characters")


@pytest.mark.parametrize("text,needle", [("extra: {d: 2024-01-02}\n", "not a JSON value"),
                                         ("data_dir: [1, 2]\n", "data_dir="), ("label: [x]\n", "label="),
                                         ("epochs: " + "9" * 400 + "\n", "epochs="),
                                         ("bits: " + "9" * 400 + "\ngrid: uniform\ndelta: 0.1\n", "bits="),
                                         ("lr: " + "9" * 400 + "\n", "lr=")])
def test_settings_of_the_wrong_type_or_size(tmp_path, capsys, text, needle):
    y = tmp_path / "p.yaml"
    y.write_text("data: digits\nmodel: smallcnn\n" + text)
    fails(capsys, ["train", "--config", str(y), "--out", str(tmp_path / "r")], needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag,value,needle", [
    ("--width", "200000", "width=200000"), ("--device", "mps", "mps"), ("--epochs", "1" + "0" * 400, "epochs="),
    ("--threads", "100000", "threads=100000"), ("--seed", str(2**64), "seed="), ("--seed", "-1", "seed="),
    ("--dist-timeout", "1e308", "dist_timeout="), ("--checkpoint-minutes", "inf", "checkpoint_minutes="),
    ("--batch-size", str(2**40), "batch_size="), ("--device", "cuda:123456789", "device="),
])
def test_numbers_out_of_range_name_the_field(tmp_path, capsys, flag, value, needle):
    fails(capsys, ["train", *FLAGS, flag, value, "--out", str(tmp_path / "r")], needle)  # the last flag wins
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("item,needle", [("scale=quick", "--scale quick"), ("seeds=2", "use --seeds"),
                                         ("workers=2", "use --workers"), ("out=x", "use --out"),
                                         ("epochs=2", "use --epochs"), ("lr=[", "not valid YAML"),
                                         ("nope=1", "not a run setting"), ("lr", "KEY=VALUE")])
def test_set_refuses_what_is_not_a_run_setting(tmp_path, capsys, item, needle):
    fails(capsys, ["table1", "--scale", "quick", "--out", str(tmp_path / "t"), "--set", item], needle)
    assert not (tmp_path / "t").exists()


def test_set_scale_is_the_grid_scale_and_reproduce_takes_set_seed(tmp_path):
    kw = dict(only=["digits-smallcnn.sr-adam"], progress=False, epochs=1, train_subset=64, seeds=1, log=lambda *_: None)
    report = run_table1("quick", tmp_path, settings={"scale": 1, "seed": 3}, **kw)
    cfg = json.loads((tmp_path / "runs" / "digits-smallcnn.sr-adam" / "seed3" / "config.json").read_text())
    assert cfg["scale"] == 1 and report["cells"][0]["seeds"] == [3]


# -- data files -----------------------------------------------------------------------------------
def _zeros_gzip(path: Path, nbytes: int, head: bytes = b"") -> None:
    """A gzip of ``head`` + ``nbytes`` zeros, written in chunks (the test never holds the zeros)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(c.compress(head))
        chunk = bytes(1 << 20)
        for _ in range(nbytes >> 20):
            f.write(c.compress(chunk))
        f.write(c.flush())


def _mnist(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                          ("labels-idx1", rng.integers(0, 10, n, dtype=np.uint8))):
            raw = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
            (folder / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(raw))


@pytest.mark.parametrize("head,needle", [
    (b"", "bad magic 00000000"),                                         # all zeros
    (struct.pack(">BBBBI", 0, 0, 8, 1, 2**32 - 1) + bytes(8), None),     # a header that asks for 4 GB
    (struct.pack(">BBBBI", 0, 0, 8, 1, 20), "payload"),                  # 20 labels, then 256 MB more
])
def test_gzip_bombs_in_mnist_files_are_refused_by_their_header(tmp_path, capsys, head, needle):
    _mnist(tmp_path / "m")
    labels = tmp_path / "m" / "train-labels-idx1-ubyte.gz"
    _zeros_gzip(labels, 256 << 20, head)
    assert labels.stat().st_size < 400_000
    before = peak_mb()
    err = fails(capsys, ["train", "--data", "mnist", "--data-dir", str(tmp_path / "m"), "--model", "mlp",
                         "--out", str(tmp_path / "r"), "--no-progress"], labels)
    assert needle is None or needle in err, err
    assert peak_mb() - before < 64  # nothing close to the 256 MB it would decompress to
    assert not (tmp_path / "r").exists()


def _cifar(folder: Path, labels=None):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 10, 8)]}
        if name == "data_batch_2" and labels is not None:
            d[b"labels"] = labels
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    return folder / "data_batch_2"


shared = [0] * 1_000_000


@pytest.mark.parametrize("labels,needle", [
    ([shared] * 8, "not integers (found a list)"),          # 8 references to one long list: 8M ints if expanded
    ([True] * 8, "found a bool"), (list(range(7)), "expected 8 labels"), ({"a": 1}, "not a list"),
    ([2**70] * 8, "far outside"), (np.zeros((8, 1000), dtype=np.int64), "expected 8 labels"),
])
def test_cifar_labels_are_checked_before_numpy_sees_them(tmp_path, capsys, labels, needle):
    bad = _cifar(tmp_path / "c10", labels)
    before = peak_mb()
    fails(capsys, ["train", "--data", "cifar10", "--data-dir", str(tmp_path / "c10"), "--model", "smallcnn",
                   "--out", str(tmp_path / "r"), "--no-progress"], bad, needle)
    assert peak_mb() - before < 200


# -- runs, reports, exports ------------------------------------------------------------------------
TINY = dict(data="digits", model="smallcnn", method="bc", epochs=1, batch_size=64, train_subset=128, test_subset=64,
            threads=1, progress=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    run(TrainConfig(**TINY), out)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("change,needle", [
    (lambda ck: ck["history"][0].update(test_error="x"), "history row 1 has test_error"),
    (lambda ck: ck["history"][0].update(weight_change=[1]), "weight_change"),
    (lambda ck: ck["history"].__setitem__(0, [1]), "history row 1"),
    (lambda ck: ck.update(step=1, epoch=0, history=[], partial={"loss_sum": 1.0, "correct": 1, "count": 1}), "running sums"),
    (lambda ck: ck.update(step=1, epoch=0, history=[], partial={"loss_sum": __import__("torch").tensor(1.0),
                                                              "correct": 5, "count": 2}), "running sums"),
    (lambda ck: ck["model"].update({"0.weight": [1.0]}), "not a named tensor"),
])
def test_hand_made_checkpoints_are_checked_field_by_field(finished, tmp_path, capsys, change, needle):
    out = copy_run(finished, tmp_path / "r")
    ck = load_checkpoint(out / "checkpoint.pt")
    ck.pop("format")
    change(ck)
    save_checkpoint(out / "checkpoint.pt", ck)  # a valid digest over bad content
    fails(capsys, ["train", "--resume", str(out), "--epochs", "2", "--no-progress"], out / "checkpoint.pt", needle)


@pytest.mark.parametrize("content", [b"null", b"[]", b'"x"', b"7", b'{"test_error": 1'])
def test_export_checks_summary_json_before_writing(finished, tmp_path, capsys, content):
    out = copy_run(finished, tmp_path / "r")
    (out / "summary.json").write_bytes(content)
    fails(capsys, ["export", str(out), "--out", str(tmp_path / "m.safetensors")], out / "summary.json")
    assert not (tmp_path / "m.safetensors").exists()


def test_export_with_a_config_that_does_not_fit(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path / "r")
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(dict(cfg, width=8)))
    fails(capsys, ["export", str(out), "--out", str(tmp_path / "m.safetensors")], "does not fit", "config.json")
    assert not (tmp_path / "m.safetensors").exists()


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("t1")
    kw = dict(only=["digits-smallcnn.bc-adam", "digits-smallcnn.sr-adam"], progress=False, epochs=2, train_subset=128,
              seeds=2, log=lambda *_: None, workers=1)
    return out, kw, run_table1("quick", out, **kw)


def _claims(report):
    return [(c["claim"], c["verdict"], c["measured"]) for c in report["claims"]]


def test_a_damaged_metrics_file_cannot_change_a_verdict(table, tmp_path):
    out, kw, report = table
    metrics = out / "runs" / "digits-smallcnn.bc-adam" / "seed0" / "metrics.jsonl"
    good = metrics.read_bytes()
    try:
        for i in (2, len(good) // 2, len(good) - 3):
            bad = bytearray(good)
            bad[i] ^= 0x20
            metrics.write_bytes(bytes(bad))
            again = run_table1("quick", out, report_only=True, **kw)
            assert _claims(again) == _claims(report)
        (metrics.parent / "checkpoint.pt").rename(metrics.parent / "ck.bak")  # no checkpoint: refused, not skipped
        with pytest.raises(ValueError, match="damaged at line"):
            run_table1("quick", out, report_only=True, **kw)
    finally:
        metrics.write_bytes(good)
        if (metrics.parent / "ck.bak").exists():
            (metrics.parent / "ck.bak").rename(metrics.parent / "checkpoint.pt")


@pytest.mark.parametrize("content", [b"[]", b"null", b"{}", b'{"test_error": "x"}', b"{"])
def test_table1_refuses_a_damaged_summary_in_one_line(table, capsys, content):
    out, kw, _ = table
    summary = out / "runs" / "digits-smallcnn.sr-adam" / "seed1" / "summary.json"
    good = summary.read_bytes()
    try:
        summary.write_bytes(content)
        fails(capsys, ["table1", "--scale", "quick", "--out", str(out), "--report-only", "--epochs", "2",
                       "--train-subset", "128", "--seeds", "2", "--cells", *kw["only"]], summary)
    finally:
        summary.write_bytes(good)


@pytest.mark.parametrize("name", ["qtrain._yaml", "qtrain.train.lock", "qtrain.train.folder"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
