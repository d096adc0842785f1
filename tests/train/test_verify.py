"""``qtrain verify``: a finished run retrains bit for bit here; a changed stored number is found."""
import json
import math

import pytest

from qtrain.cli import main as cli
from qtrain.train import TrainConfig, run
from qtrain.train.verify import compare_rows

TINY = dict(data="digits", model="smallcnn", method="sr", epochs=3, batch_size=64, train_subset=384, test_subset=150,
            width=8, progress=False, threads=1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify") / "run"
    run(TrainConfig(**TINY), path)  # 3 epochs, lr decayed after epochs 2 and 2: verify keeps that schedule
    return path


def test_an_untouched_run_verifies(finished, capsys):
    assert cli(["verify", str(finished), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "result: identical" in out and "not compared" in out
    assert "machine: run " in out and ": the same (CPU model and flags, capability, torch, threads, GPU)" in out
    assert "data: run sha256 " in out and out.count("the same") == 2


def test_one_changed_number_fails(finished, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    rows[0]["test_loss"] = math.nextafter(rows[0]["test_loss"], math.inf)  # one ulp
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "| 1 | test_loss | " in out and "result: 1 field(s) differ" in out


def test_another_cpu_model_is_named(finished, tmp_path, capsys):
    """A run recorded on another CPU model of the same capability: verify names the CPU model as the
    difference (an AMD EPYC and an Intel Xeon, both AVX512, gave other bits) and says it can explain them."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    config = json.loads((copy / "config.json").read_text())
    config["machine"]["cpu"] = "Another CPU"
    (copy / "config.json").write_text(json.dumps(config))
    assert cli(["verify", str(copy)]) == 0  # the bits here are still the run's own
    out = capsys.readouterr().out
    assert "(Another CPU); here " in out and ": DIFFERENT (cpu)" in out and "result: identical" in out
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    rows[0]["train_loss"] = math.nextafter(rows[0]["train_loss"], math.inf)
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "this machine's cpu differ(s) from the run's, which can change the bits (another CPU model can, even at " \
        "the same capability)" in out


def test_bad_input_exits_2(finished, tmp_path, capsys):
    assert cli(["verify", str(tmp_path / "nothing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert cli(["verify", str(finished), "--epochs", "4"]) == 2
    assert "holds 3 finished epoch(s); pass --epochs 3 or less" in capsys.readouterr().err
    assert cli(["verify", str(finished), "--epochs", "0"]) == 2
    (tmp_path / "empty").mkdir()
    assert cli(["verify", str(tmp_path / "empty")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_compare_rows_flattens_skips_wall_clock_and_lists_new_fields():
    old = [{"epoch": 1, "seconds": 1.0, "weight_change": {"a": 0.5}}]
    new = [{"epoch": 1, "seconds": 2.0, "weight_change": {"a": 0.5000001}, "max_abs_base_step": {"a": 0.1}}]
    r = compare_rows(old, new)
    assert [d["field"] for d in r["differences"]] == ["weight_change.a"]
    assert r["new_fields"] == ["max_abs_base_step.a"] and r["compared"] == 2
