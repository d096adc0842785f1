"""What a run records beyond its metrics: the base-step record (could a weight change level?) and
its provenance (machine, data digest)."""
import hashlib
import json

import pytest
import torch

from qtrain import Grid, QuantizedOptimizer
from qtrain.data.digest import data_sha256, files_sha256
from qtrain.data.embedded import DIGITS_FILE
from qtrain.train import TrainConfig, load_checkpoint, load_run_config, read_metrics, run

TINY = dict(data="digits", model="smallcnn", epochs=2, batch_size=64, train_subset=512, test_subset=200,
            progress=False, threads=1)
CONVS = {"features.0.weight", "features.4.weight", "features.8.weight"}


def _sgd_step(method, grid, lr, grad):
    w = torch.nn.Parameter(torch.ones(4) * 0.5)
    opt = QuantizedOptimizer(torch.optim.SGD([w], lr=lr), method, grid, params=[w], record_steps=True, seed=0)
    w.grad = grad.clone()
    opt.step()
    return opt, w


@pytest.mark.parametrize("method", ["r", "sr", "bc"])
def test_step_record_is_the_largest_base_step_and_the_half_gap(method):
    grad = torch.tensor([1.0, -3.0, 0.5, 0.0])
    opt, _ = _sgd_step(method, Grid.uniform(0.25), 0.01, grad)  # SGD: s_t = -lr * g, largest |s_t| = 0.03
    rec = opt.step_record()["param0"]
    assert rec["max_abs_base_step"] == pytest.approx(0.03, rel=1e-6)
    assert rec["half_level_gap"] == 0.125
    assert opt.step_record(reset=True)["param0"]["max_abs_base_step"] > 0
    assert opt.step_record()["param0"]["max_abs_base_step"] == 0.0  # reset
    assert Grid.binary(0.7).delta / 2 == pytest.approx(0.7)  # binary ±s: a weight must cross 0, a move of s


def test_step_record_is_off_by_default_and_kept_in_the_state_dict():
    opt, w = _sgd_step("r", Grid.binary(1.0), 0.1, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="record_steps=True"):
        QuantizedOptimizer(torch.optim.SGD([w], lr=0.1), "r", Grid.binary(1.0), params=[w]).step_record()
    sd = opt.state_dict()
    other = QuantizedOptimizer(torch.optim.SGD([w], lr=0.1), "r", Grid.binary(1.0), params=[w], record_steps=True)
    other.load_state_dict(sd)
    assert other.step_record() == opt.step_record()


def test_r_that_cannot_move_records_steps_below_the_half_gap(tmp_path):
    run(TrainConfig(method="r", lr=1e-5, scale=1.0, **TINY), tmp_path)
    rows = read_metrics(tmp_path)
    for row in rows:
        assert set(row["max_abs_base_step"]) == CONVS and set(row["half_level_gap"]) == CONVS
        for n in CONVS:
            assert 0 < row["max_abs_base_step"][n] < row["half_level_gap"][n] == 1.0
            assert row["weight_change"][n] == 0.0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["history"] == rows  # the checkpoint's history too


def test_float_runs_have_no_step_record(tmp_path):
    run(TrainConfig(method="float", epochs=1, **{k: v for k, v in TINY.items() if k != "epochs"}), tmp_path)
    assert "max_abs_base_step" not in read_metrics(tmp_path)[0]


def test_config_json_records_machine_and_data_digest(tmp_path):
    run(TrainConfig(method="sr", epochs=1, **{k: v for k, v in TINY.items() if k != "epochs"}), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    m = cfg["machine"]
    assert m["capability"] == torch.backends.cpu.get_cpu_capability() and m["torch"] == torch.__version__
    assert m["threads"] == 1 and m["cpu"]
    listing = f"{hashlib.sha256(DIGITS_FILE.read_bytes()).hexdigest()}  digits.npz\n"
    assert cfg["data_sha256"] == hashlib.sha256(listing.encode()).hexdigest()  # `sha256sum digits.npz | sha256sum`
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data_sha256"] == cfg["data_sha256"] and summary["machine"] == m
    assert load_run_config(tmp_path).method == "sr"  # the records are not settings: the run resumes


def test_data_digest_is_cached_and_follows_the_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"y")
    d1 = files_sha256([str(a), str(b)])
    assert files_sha256([str(a), str(b)]) == d1 != files_sha256([str(b), str(a)])
    a.write_bytes(b"x" * 11)  # another size: hashed again
    assert files_sha256([str(a), str(b)]) != d1

    class Folder:  # image-folder datasets list no files: no digest
        files = ()
    assert data_sha256(Folder()) is None


def test_a_run_resumed_on_another_machine_keeps_the_earlier_one(tmp_path):
    from qtrain.data import load_dataset
    from qtrain.train.provenance import config_record, machine_differences, same_bits_expected

    other = {"cpu": "Other CPU", "capability": "AVX2", "torch": "2.13.0+cpu", "threads": 1, "platform": "x86_64",
             "gpu": None}
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0, "machine": other, "data_sha256": "x"}))
    rec = config_record({"seed": 0}, tmp_path / "config.json", None, load_dataset("digits"))
    assert rec["earlier_machines"] == [other] and rec["machine"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert same_bits_expected(other, rec["machine"]) is False  # another CPU model never promises the same bits
    assert machine_differences(other, rec["machine"])[0] == "cpu"
    assert same_bits_expected(rec["machine"], dict(rec["machine"])) is True
    assert machine_differences(dict(rec["machine"], threads=rec["machine"]["threads"] + 1), rec["machine"]) == ["threads"]
    assert same_bits_expected(None, other) is None
    # the flags digest: compared where both records have it (older runs lack it), and it tells CPUs apart
    assert machine_differences({**rec["machine"], "cpu_flags": "0" * 16}, rec["machine"]) == (
        ["cpu_flags"] if rec["machine"]["cpu_flags"] else [])
    assert machine_differences({k: v for k, v in rec["machine"].items() if k != "cpu_flags"}, rec["machine"]) == []
