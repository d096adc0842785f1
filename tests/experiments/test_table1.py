import json

import pytest
import torch

from qtrain.cli import main as cli
from qtrain.experiments.table1 import COLUMNS, PAPER, ROWS, cell_config, cells, run_table1, summarise
from qtrain.train import TrainConfig


@pytest.mark.parametrize("scale", ["quick", "mini", "paper"])
def test_every_preset_parses_and_builds(scale):
    from qtrain.models import build

    found = cells(scale)
    assert len(found) == {"quick": 5, "mini": 5, "paper": 30}[scale]
    for name, path in found.items():
        cfg = cell_config(path)
        column, row = name.split(".")
        assert row in ROWS and isinstance(cfg, TrainConfig)
        assert cfg.threads == (None if scale == "paper" else 1)  # fixed per scale, so results don't depend on the machine
        assert cfg.method == {"adam": "float", "bc-adam": "bc", "big-sr-adam": "sr", "sr-adam": "sr", "r-adam": "r"}[row]
        if scale == "paper":
            assert column in COLUMNS and PAPER[row][column] > 0
            assert cfg.batch_size == (1024 if row == "big-sr-adam" else (256 if cfg.data == "imagenet" else 128))
            assert cfg.epochs == (40 if cfg.data == "imagenet" else 164)
        classes = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "digits": 10}[cfg.data]
        kw = {"width": cfg.width} if cfg.width else {}
        size = 224 if cfg.data == "imagenet" else (8 if cfg.data == "digits" else 32)
        if scale != "paper" or row == "adam":  # build each paper model once
            build(cfg.model, classes, in_channels=1 if cfg.data == "digits" else 3, image_size=size, **kw)


def test_quick_table1_end_to_end(tmp_path):
    only = ["digits-smallcnn.adam", "digits-smallcnn.sr-adam", "digits-smallcnn.bc-adam"]
    report = run_table1("quick", tmp_path, only=only, progress=False, epochs=1, train_subset=256, seeds=1,
                        log=lambda *_: None)
    assert {c["cell"] for c in report["cells"]} == set(only)
    for f in ("table1.json", "table1.md", "table1_error.png", "table1_weight_change.png"):
        assert (tmp_path / f).stat().st_size > 0
    md = (tmp_path / "table1.md").read_text()
    assert "| SR-ADAM | " in md and "| 23.33 |" in md and "n_test = 300; seed 0)" in md and "poster: CIFAR-10 VGG-9" in md
    saved = json.loads((tmp_path / "table1.json").read_text())
    assert saved["cells"][0]["test_error_sem"] is None  # one seed: no standard error, hence no verdicts
    assert all(c["verdict"] is None and "one seed" in c["reason"] for c in saved["claims"] if c["id"].endswith("explore"))
    # a second call reads the finished runs back instead of training again
    again = run_table1("quick", tmp_path, only=only, progress=False, report_only=True, log=lambda *_: None,
                       epochs=1, train_subset=256, seeds=1)
    assert [c["test_errors"] for c in again["cells"]] == [c["test_errors"] for c in report["cells"]]
    assert again["runs_reused"] == 3 and again["runs_trained"] == 0 and "3 finished earlier and reused" in \
        (tmp_path / "table1.md").read_text()
    # ... but never mixes in a finished run made with other settings
    with pytest.raises(ValueError, match="epochs=1"):
        run_table1("quick", tmp_path, only=only[:1], progress=False, log=lambda *_: None, train_subset=256, seeds=1)
    # --retrain trains finished runs again (here with 2 epochs instead of 1), the others stay reused
    before = (tmp_path / "runs" / only[1] / "seed0" / "summary.json").read_bytes()
    redo = run_table1("quick", tmp_path, only=only[:1], progress=False, log=lambda *_: None, train_subset=256, seeds=1,
                      epochs=2, retrain=True)
    assert redo["runs_trained"] == 1 and redo["runs_reused"] == 0 and redo["cells"][0]["epochs"] == 2
    assert (tmp_path / "runs" / only[1] / "seed0" / "summary.json").read_bytes() == before
    with pytest.raises(ValueError, match="drop one"):
        run_table1("quick", tmp_path, only=only[:1], report_only=True, retrain=True, log=lambda *_: None)


def test_seeds_and_workers(tmp_path):
    """Each (cell, seed) is its own run with seed = preset seed + k; 1 and 2 workers give identical numbers."""
    only = ["digits-smallcnn.sr-adam"]
    kw = dict(only=only, progress=False, epochs=1, train_subset=128, seeds=2, log=lambda *_: None)
    threads = torch.get_num_threads()
    two = run_table1("quick", tmp_path / "w2", workers=2, **kw)
    one = run_table1("quick", tmp_path / "w1", workers=1, **kw)
    assert torch.get_num_threads() == threads  # an in-process run sets threads=1 and restores the caller's count
    assert two["workers"] == 2 and one["workers"] == 1
    keys = ("cell", "seeds", "test_errors", "test_error", "test_error_sem", "weight_change_means", "weight_change_peaks",
            "n_test", "threads")
    saved = [json.loads((tmp_path / w / "table1.json").read_text()) for w in ("w1", "w2")]
    assert [[{k: c[k] for k in keys} for c in s["cells"]] for s in saved][0] == \
        [[{k: c[k] for k in keys} for c in s["cells"]] for s in saved][1]
    assert [c["verdict"] for c in saved[0]["claims"]] == [c["verdict"] for c in saved[1]["claims"]]
    for c in saved[0]["cells"]:
        assert c["seeds"] == [0, 1] and len(c["test_errors"]) == 2 and c["n_test"] == 300 and c["threads"] == 1
        assert c["test_error"] == pytest.approx(sum(c["test_errors"]) / 2) and c["test_error_sem"] is not None
        assert c["test_errors"][0] != c["test_errors"][1] or c["weight_change_means"][0] != c["weight_change_means"][1]
        for k, seed in enumerate(c["seeds"]):
            config = json.loads((tmp_path / "w1" / "runs" / c["cell"] / f"seed{seed}" / "config.json").read_text())
            assert config["seed"] == seed and config["threads"] == 1
    # finished seeds beyond --seeds (a cell given extra seeds) are reported, never dropped
    lines = []
    fewer = run_table1("quick", tmp_path / "w1", **dict(kw, seeds=1, log=lines.append), report_only=True)
    assert [c["seeds"] for c in fewer["cells"]] == [[0, 1]] and fewer["missing"] == []
    assert "digits-smallcnn.sr-adam seed 1: finished beyond the 1 seed(s) asked; reported too" in lines
    assert fewer["cells"][0]["test_errors"] == saved[0]["cells"][0]["test_errors"]
    # a per-cell count (a power plan's extra seeds) lists the cell's unfinished seeds as missing
    lines = []
    more = run_table1("quick", tmp_path / "w1", **dict(kw, seeds=1, log=lines.append), report_only=True,
                      seeds_per_cell={"digits-smallcnn.sr-adam": 4})
    assert more["missing"] == [{"cell": "digits-smallcnn.sr-adam", "seed": 2}, {"cell": "digits-smallcnn.sr-adam", "seed": 3}]
    assert more["seeds_per_cell"] == {"digits-smallcnn.sr-adam": 4} and more["cells"][0]["seeds"] == [0, 1]
    assert "1 seed(s), digits-smallcnn.sr-adam 4;" in lines[-1]
    md = (tmp_path / "w1" / "table1.md").read_text()
    assert "Seeds asked: 1 per cell, except digits-smallcnn.sr-adam 4." in md
    assert "digits-smallcnn.sr-adam seed(s) 2, 3." in md
    same = run_table1("quick", tmp_path / "w1", **dict(kw, seeds=2), report_only=True,
                      seeds_per_cell={"digits-smallcnn.sr-adam": 2, "digits-smallcnn.adam": 3})
    assert same["missing"] == [] and same["seeds_per_cell"] == {}  # equal to --seeds, or a cell not selected
    # a cell's own count trains its missing seeds, and --retrain retrains all of them (not only --seeds')
    trained = run_table1("quick", tmp_path / "w1", **dict(kw, seeds=1), seeds_per_cell={"digits-smallcnn.sr-adam": 3})
    assert trained["runs_trained"] == 1 and trained["cells"][0]["seeds"] == [0, 1, 2] and trained["missing"] == []
    again = run_table1("quick", tmp_path / "w1", **dict(kw, seeds=1), seeds_per_cell={"digits-smallcnn.sr-adam": 2},
                       retrain=True)
    assert again["runs_trained"] == 2 and again["cells"][0]["seeds"] == [0, 1, 2]  # seed 2: finished beyond, reported
    with pytest.raises(ValueError, match=r"--cell-seeds digits-smallcnn.nope=3: no cell .* --list"):
        run_table1("quick", tmp_path / "bad", **kw, seeds_per_cell={"digits-smallcnn.nope": 3})
    with pytest.raises(ValueError, match=r"--cell-seeds digits-smallcnn.sr-adam=0 must be a positive integer"):
        run_table1("quick", tmp_path / "bad", **kw, seeds_per_cell={"digits-smallcnn.sr-adam": 0})
    # --set seed=10 shifts the whole seed list (and the run folders)
    lines = []
    run_table1("quick", tmp_path / "s10", **dict(kw, log=lines.append), report_only=True, seed=10)
    assert [line.split(": ")[0] for line in lines[:2]] == ["digits-smallcnn.sr-adam seed 10", "digits-smallcnn.sr-adam seed 11"]
    assert "s10/runs/digits-smallcnn.sr-adam/seed11" in lines[1]
    with pytest.raises(ValueError, match="seeds=0 must be a positive integer"):
        run_table1("quick", tmp_path / "bad", **dict(kw, seeds=0))
    with pytest.raises(ValueError, match="workers=0"):
        run_table1("quick", tmp_path / "bad", **kw, workers=0)
    with pytest.raises(ValueError, match="threads=0 must be a positive integer"):
        run_table1("quick", tmp_path / "bad", **kw, threads=0)


def test_summarise_orders_by_seed_mean():
    def cell(row, errs, wc):
        summaries = [{"test_error": e, "best_test_error": e, "weight_change_mean": wc, "weight_change": {"l": wc} if wc else {},
                      "seconds": 1, "batch_size": 1, "epochs": 1, "model": "m", "data": "d", "n_test": 100,
                      "config": {"threads": 1}} for e in errs]
        return {"cell": f"c.{row}", "column": "c", "row": row, "label": ROWS[row], "paper_column": "c10-vgg9",
                "seeds": list(range(len(errs))), "summaries": summaries,
                "histories": [[{"epoch": 1, "test_error": e, "weight_change": {"l": wc} if wc else {}}] for e in errs]}
    rep = summarise("x", [cell("adam", [5, 6], None), cell("bc-adam", [7, 8], 10), cell("big-sr-adam", [15, 16], 20),
                          cell("sr-adam", [12, 13], 30), cell("r-adam", [20, 21], 1)])
    ch = rep["checks"]["c"]
    assert ch["measured_order"] == ["adam", "bc-adam", "sr-adam", "big-sr-adam", "r-adam"] and ch["pairs_in_paper_order"] == 9
    bc = rep["cells"][1]
    assert bc["test_error"] == 7.5 and bc["test_error_sem"] == pytest.approx(0.5) and bc["weight_change_peaks"] == [10, 10]
    assert rep["counts"]["total"] == len(rep["claims"]) == 7
    assert rep["histories"]["c.bc-adam"] == [{"epoch": 1, "test_error": 7.5, "test_error_sem": pytest.approx(0.5),
                                              "seeds": 2, "weight_change": {"l": 10}, "weight_change_sem": {"l": 0}}]


def test_table1_cli_list_and_errors(capsys, tmp_path):
    assert cli(["table1", "--scale", "paper", "--list"]) == 0
    assert "imagenet-resnet18.big-sr-adam" in capsys.readouterr().out
    assert cli(["table1", "--scale", "huge", "--out", str(tmp_path)]) == 2
    assert "scale='huge'" in capsys.readouterr().err
    assert cli(["table1", "--scale", "quick", "--cells", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown cell" in capsys.readouterr().err
    assert cli(["table1", "--scale", "quick", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "seeds=0 must be a positive integer" in capsys.readouterr().err


def test_plan_seeds_cli_reads_the_pilot(tmp_path, capsys):
    import json

    from qtrain.cli import main as cli

    cells = [{"column": "c", "row": r, "paper_column": "c10-vgg9", "test_errors": e, "weight_change_means": w,
              "seeds": [0, 1, 2], "seconds": 3 * 360.0 if r == "big-sr-adam" else 3 * 36.0}  # Big SR-ADAM costs 10x
             for r, e, w in (("adam", [40.0, 40.5, 39.5], None), ("bc-adam", [48.0, 52.0, 50.0], [40.0, 41.0, 39.0]),
                             ("big-sr-adam", [60.0, 59.0, 61.0], [30.0, 31.0, 29.0]),
                             ("sr-adam", [58.0, 57.0, 58.5], [48.0, 49.0, 48.5]), ("r-adam", [65.4, 65.5, 65.4], [0, 0, 0]))]
    (tmp_path / "table1.json").write_text(json.dumps({"cells": cells}))
    assert cli(["table1", "--scale", "mini", "--out", str(tmp_path), "--plan-seeds", "--difference", "2"]) == 0
    out = capsys.readouterr().out
    assert "| c | R-ADAM − SR-ADAM (SR beats R) | 0.76, 0.06 | 3/3 | 0.87 | 3 | SR-ADAM 3, R-ADAM 3 (0.0 h) |" in out
    assert "difference of 2 points" in out
    # the cheapest plan grows the noisy group, and the cheap one: BC-ADAM 13 + Big SR-ADAM 4 beats 9 + 9
    assert "| 3/3 | 0.33 | 9 | BC-ADAM 13, Big SR-ADAM 4 (0.2 h) |" in out
    (tmp_path / "table1.json").write_text(json.dumps({"cells": [dict(c, seconds=None) for c in cells]}))
    assert cli(["table1", "--scale", "mini", "--out", str(tmp_path), "--plan-seeds"]) == 0
    assert "| 4 | – (no run times in the report) |" in capsys.readouterr().out
    assert cli(["table1", "--scale", "mini", "--out", str(tmp_path / "none"), "--plan-seeds"]) == 2


def test_r_that_cannot_move_holds_by_construction_end_to_end(tmp_path):
    """A tiny lr: R's steps (~1e-5) never reach the half gap s, so "R-ADAM barely moves" holds by
    construction (counted apart), and "SR beats R" says R's weights never moved."""
    only = ["digits-smallcnn.sr-adam", "digits-smallcnn.r-adam"]
    report = run_table1("quick", tmp_path, only=only, progress=False, epochs=1, train_subset=128, seeds=2,
                        workers=1, lr=1e-5, log=lambda *_: None)
    claims = {c["id"].split("-", 2)[-1]: c for c in report["claims"]}
    assert claims["r-still"]["verdict"] == "holds by construction" and claims["r-still"]["mde"] is None
    rec = next(c for c in report["cells"] if c["row"] == "r-adam")["step_record"]
    assert rec["cannot_move"] and 0 < rec["max_abs_base_step"] < 1e-4 < rec["half_level_gap"]
    assert f"max|s_t| = {rec['max_abs_base_step']:.3g}" in claims["r-still"]["measured"]
    assert "R-ADAM's conv weights never moved" in claims["sr-beats-r"]["measured"]
    assert report["counts"]["by_construction"] == 1
    assert "1 by construction" in (tmp_path / "table1.md").read_text()
