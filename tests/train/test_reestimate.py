"""BN statistics re-estimated for final weights (``qtrain bn-reestimate``): the averages are the batch
statistics' plain means, stale statistics are repaired, the run is only read, bad input is refused."""
import json
import math
import statistics

import pytest
import torch
from torch import nn

from qtrain.cli import main as cli
from qtrain.train import TrainConfig, run
from qtrain.train.reestimate import check_run, reestimate_bn, summarize

TINY = dict(data="digits", model="smallcnn", method="bc", epochs=2, batch_size=64, train_subset=384, test_subset=150,
            width=8, progress=False, threads=1)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.Flatten(),
                         nn.LazyLinear(3))


def test_running_stats_are_the_plain_average_of_the_batch_statistics():
    net = small_net()
    xs = [torch.randn(6, 1, 5, 5) * (1 + i) + i for i in range(4)]  # batches with different statistics
    net(xs[0])  # materialise the lazy layer
    net.eval()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert reestimate_bn(net, [(x, None) for x in xs]) == 1
    h = [net[0](x).detach() for x in xs]
    mean = torch.stack([b.mean((0, 2, 3)) for b in h]).mean(0)
    var = torch.stack([b.transpose(0, 1).reshape(4, -1).var(1, unbiased=True) for b in h]).mean(0)
    bn = net[1]
    assert torch.allclose(bn.running_mean, mean, atol=1e-5) and torch.allclose(bn.running_var, var, atol=1e-5)
    assert bn.momentum == 0.3 and not net.training  # momentum and eval mode restored
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())  # weights untouched


def test_stale_statistics_are_repaired():
    """Statistics that do not belong to the weights cost accuracy; re-estimating restores it."""
    torch.manual_seed(1)
    x = torch.randn(512, 1, 5, 5)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 2, 2] > 1).long()
    net = small_net()
    opt = torch.optim.Adam(net.parameters(), 0.02)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()

    def err():
        with torch.no_grad():
            return (net(x).argmax(1) != y).float().mean().item()

    good = err()
    net[1].running_mean += 3.0  # statistics of some other weights
    net[1].running_var *= 9.0
    assert err() > good + 0.1
    reestimate_bn(net, x.split(64))
    assert err() <= good + 0.02


def test_bad_input_is_refused_and_the_old_statistics_kept():
    with pytest.raises(ValueError, match="has no BatchNorm layer"):
        reestimate_bn(nn.Sequential(nn.Linear(2, 2)), [torch.randn(2, 2)])
    net = small_net()
    net(torch.randn(6, 1, 5, 5))
    before = {k: v.clone() for k, v in net[1].state_dict().items()}

    def failing():
        yield torch.randn(6, 1, 5, 5) + 5
        raise OSError("disk gone")

    for inputs, err in (([], "no batches"), (failing(), "disk gone")):
        with pytest.raises((ValueError, OSError), match=err):
            reestimate_bn(net, inputs)
        assert net[1].momentum == 0.3 and net.training
        assert all(torch.equal(v, net[1].state_dict()[k]) for k, v in before.items())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = tmp_path_factory.mktemp("bn") / "runs" / "digits.bc" / "seed0"
    run(TrainConfig(**TINY), path)
    return path


def test_a_run_is_read_not_written(finished, monkeypatch):
    before = {p.name: p.read_bytes() for p in finished.iterdir()}
    torch.set_num_threads(2)
    rng = torch.get_rng_state()
    monkeypatch.chdir(finished)
    r = check_run(".")  # a relative folder still names its cell
    assert {p.name: p.read_bytes() for p in finished.iterdir()} == before
    assert torch.get_num_threads() == 2 and torch.equal(torch.get_rng_state(), rng)
    assert r["batch"] == 64
    final = json.loads((finished / "summary.json").read_text())["test_error"]
    assert r["matches_record"] and r["stored"] == r["recorded"] == final  # same weights, same bits here
    assert r["cell"] == "digits.bc" and r["seed"] == 0 and r["epoch"] == 2 and r["bn_layers"] == 3
    assert 0 <= r["reestimated"] <= 100


def test_cli_writes_the_report_and_numbers(finished, tmp_path, capsys):
    out = tmp_path / "rep" / "bn.md"
    assert cli(["bn-reestimate", str(finished), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "digits.bc seed 0: test error" in printed and "| digits.bc | 0 |" in out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["runs"][0]["cell"] == "digits.bc" and data["cells"][0]["seeds"] == [0]
    assert cli(["bn-reestimate", str(finished), "--out", str(tmp_path / "bn.txt")]) == 2
    assert "must end in .md" in capsys.readouterr().err


def test_runs_without_weights_or_bn_are_refused(finished, tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(finished, bare)
    (bare / "checkpoint.pt").unlink()
    with pytest.raises(FileNotFoundError, match="holds no checkpoint.pt"):
        check_run(bare)
    wrong = tmp_path / "wrong"
    shutil.copytree(finished, wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**cfg, "width": 16}))
    assert cli(["bn-reestimate", str(wrong)]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished, unfinished)
    (unfinished / "summary.json").unlink()
    assert cli(["bn-reestimate", str(unfinished)]) == 2
    assert "skipped, not finished" in capsys.readouterr().err
    assert cli(["bn-reestimate", str(unfinished), str(finished)]) == 0  # the finished one is still reported
    (tmp_path / "x.json").write_text("{}")
    assert cli(["bn-reestimate", str(finished), "--out", str(tmp_path / "x.md")]) == 2
    assert "did not write" in capsys.readouterr().err and (tmp_path / "x.json").read_text() == "{}"
    mlp = tmp_path / "mlp"
    run(TrainConfig(**{**TINY, "model": "mlp", "width": None, "method": "float", "epochs": 1}), mlp)
    assert cli(["bn-reestimate", str(mlp)]) == 2
    assert "has no BatchNorm layer" in capsys.readouterr().err
    assert cli(["bn-reestimate", str(tmp_path / "nowhere")]) == 2


def test_summary_statistics():
    rows = [dict(cell="a", seed=s, stored=e, reestimated=e - 1.0) for s, e in enumerate([30.0, 34.0, 35.0])]
    rows.append(dict(cell="b", seed=0, stored=20.0, reestimated=21.0))
    a, b = summarize(rows)
    sd = statistics.stdev([30.0, 34.0, 35.0])
    assert a["seeds"] == [0, 1, 2] and math.isclose(a["stored_sd"], sd) and math.isclose(a["stored_se"], sd / 3 ** 0.5)
    assert math.isclose(a["change"], -1.0) and math.isclose(a["reestimated_mean"], 32.0)
    assert b["seeds"] == [0] and math.isnan(b["stored_se"]) and b["change"] == 1.0


def test_keep_adds_to_an_earlier_report(finished, tmp_path, capsys):
    """--keep: rows of runs measured before (checkpoints gone) stay; a run given again is measured again."""
    import shutil

    out = tmp_path / "bn.md"
    assert cli(["bn-reestimate", str(finished), "--out", str(out)]) == 0
    first = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert first[0]["cpu"]  # where it was measured
    other = tmp_path / "runs" / "digits.sr" / "seed0"
    shutil.copytree(finished, other)  # another cell's run (named by its folder), measured now
    again = tmp_path / "runs" / "digits.bc" / "seed0"
    shutil.copytree(finished, again)  # the same (cell, seed) as the first report's run
    assert cli(["bn-reestimate", str(other), str(again), "--out", str(out), "--keep"]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert [(r["cell"], r["seed"]) for r in rows] == [("digits.bc", 0), ("digits.sr", 0)]
    assert rows[0]["run"] == str(again)  # measured again: replaced, not doubled
    capsys.readouterr()
    (other / "checkpoint.pt").unlink()
    assert cli(["bn-reestimate", str(finished), "--out", str(out), "--keep"]) == 0  # the gone one is kept
    rows = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert [(r["cell"], r["seed"]) for r in rows] == [("digits.bc", 0), ("digits.sr", 0)] and rows[0]["run"] == str(finished)
    assert "| digits.sr | 0 |" in out.read_text() and "measured on" in out.read_text()
    assert cli(["bn-reestimate", str(finished), "--out", str(out)]) == 0  # without --keep: only what was given
    assert len(json.loads(out.with_suffix(".json").read_text())["runs"]) == 1
    capsys.readouterr()
    assert cli(["bn-reestimate", str(finished), "--keep"]) == 2
    assert "give --out F.md" in capsys.readouterr().err
    assert cli(["bn-reestimate", str(finished), "--out", str(tmp_path / "new.md"), "--keep"]) == 2
    assert "drop --keep" in capsys.readouterr().err
    assert cli(["bn-reestimate", str(finished), str(again)]) == 2  # one (cell, seed) given twice: refused
    err = capsys.readouterr().err
    assert f"{finished} and {again} are both digits.bc seed 0" in err and "give each run once" in err


ROW = {"run": "r", "cell": "c", "seed": 0, "epoch": 2, "recorded": 50.0, "stored": 50.0, "reestimated": 40.0,
       "matches_record": True}


@pytest.mark.parametrize("runs,needle", [
    ({"a": 1}, "'runs' is dict, not a list"),
    ("x", "'runs' is str, not a list"),
    ([{**ROW, "seed": "0"}], "row 0 is damaged (field 'seed')"),
    ([ROW, {k: v for k, v in ROW.items() if k != "recorded"}], "row 1 is damaged (field 'recorded')"),
    ([{**ROW, "recorded": "50"}], "row 0 is damaged (field 'recorded')"),
    ([{**ROW, "matches_record": 1}], "row 0 is damaged (field 'matches_record')"),
    ([{**ROW, "stored": True}], "row 0 is damaged (field 'stored')"),
    ([ROW, 7], "row 1 is damaged (field 'run')"),
    ([ROW, dict(ROW)], "row 1 repeats c seed 0"),
])
def test_keep_refuses_damaged_earlier_rows_before_measuring(finished, tmp_path, capsys, runs, needle):
    damaged = tmp_path / "d.md"
    damaged.with_suffix(".json").write_text(json.dumps({"runs": runs, "cells": []}))
    assert cli(["bn-reestimate", str(finished), "--out", str(damaged), "--keep"]) == 2
    captured = capsys.readouterr()
    assert needle in captured.err and "rerun without --keep" in captured.err and len(captured.err.splitlines()) == 1
    assert "re-estimated" not in captured.out  # refused before any run was measured
    assert not damaged.exists()  # nothing written


def test_merge_rows_replaces_keeps_and_orders():
    from qtrain.train.reestimate import merge_rows

    kept = [{**ROW, "cell": "b", "seed": 3}, {**ROW, "cell": "a", "seed": 2}, {**ROW, "cell": "b", "seed": 1}]
    new = [{**ROW, "cell": "a", "seed": 0, "run": "new"}, {**ROW, "cell": "b", "seed": 3, "run": "again"},
           {**ROW, "cell": "z", "seed": 0}]
    rows = merge_rows(kept, new)
    assert [(r["cell"], r["seed"], r["run"]) for r in rows] == [("b", 1, "r"), ("b", 3, "again"), ("a", 0, "new"),
                                                                ("a", 2, "r"), ("z", 0, "r")]
