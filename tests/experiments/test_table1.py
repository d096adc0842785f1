import json

import pytest

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
    report = run_table1("quick", tmp_path, only=only, progress=False, epochs=1, train_subset=256, log=lambda *_: None)
    assert {c["cell"] for c in report["cells"]} == set(only)
    for f in ("table1.json", "table1.md", "table1_error.png", "table1_weight_change.png"):
        assert (tmp_path / f).stat().st_size > 0
    md = (tmp_path / "table1.md").read_text()
    assert "| SR-ADAM |" in md and "(23.33)" in md
    saved = json.loads((tmp_path / "table1.json").read_text())
    assert saved["checks"]["digits-smallcnn"]["sr_changes_more_than_bc"] is not None
    # a second call reads the finished runs back instead of training again
    again = run_table1("quick", tmp_path, only=only, progress=False, report_only=True, log=lambda *_: None,
                       epochs=1, train_subset=256)
    assert [c["test_error"] for c in again["cells"]] == [c["test_error"] for c in report["cells"]]
    # ... but never mixes in a finished run made with other settings
    with pytest.raises(ValueError, match="epochs=1"):
        run_table1("quick", tmp_path, only=only[:1], progress=False, log=lambda *_: None, train_subset=256)


def test_ordering_checks():
    def cell(row, err, wc):
        return {"cell": f"c.{row}", "column": "c", "row": row, "label": ROWS[row], "paper_column": "c10-vgg9",
                "summary": {"test_error": err, "best_test_error": err, "weight_change_mean": wc,
                            "weight_change": {"l": wc}, "seconds": 1, "batch_size": 1, "epochs": 1, "model": "m",
                            "data": "d"}, "history": []}
    good = summarise("x", [cell("adam", 5, None), cell("bc-adam", 6, 10), cell("big-sr-adam", 9, 20),
                           cell("sr-adam", 12, 30), cell("r-adam", 20, 1)])["checks"]["c"]
    assert good["ordering_reproduced"] and good["sr_changes_more_than_bc"] and good["big_batch_helps_sr"]
    bad = summarise("x", [cell("adam", 5, None), cell("bc-adam", 6, 40), cell("big-sr-adam", 14, 20),
                          cell("sr-adam", 12, 30), cell("r-adam", 20, 1)])["checks"]["c"]
    assert not bad["ordering_reproduced"] and bad["pairs_in_paper_order"] == 9
    assert bad["sr_changes_more_than_bc"] is False and bad["big_batch_helps_sr"] is False


def test_table1_cli_list_and_errors(capsys, tmp_path):
    assert cli(["table1", "--scale", "paper", "--list"]) == 0
    assert "imagenet-resnet18.big-sr-adam" in capsys.readouterr().out
    assert cli(["table1", "--scale", "huge", "--out", str(tmp_path)]) == 2
    assert "scale='huge'" in capsys.readouterr().err
    assert cli(["table1", "--scale", "quick", "--cells", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown cell" in capsys.readouterr().err
