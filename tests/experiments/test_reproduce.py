import json

from qtrain.cli import main as cli
from qtrain.experiments.reproduce import run_reproduce


def test_reproduce_quick_reduced(tmp_path):
    lines = []
    report = run_reproduce("quick", tmp_path, epochs=1, train_subset=256, progress=False, log=lines.append)
    ids = {c["id"] for c in report["claims"]}
    assert {"thm1-floor", "bounds", "cor1-bc", "r-stalls", "toy-bc", "toy-sr", "thm5-limit", "thm5-spread",
            "thm5-exact", "squish"} <= ids
    assert {"digits-smallcnn-order", "digits-smallcnn-explore", "digits-smallcnn-big-batch"} <= ids
    md = (tmp_path / "report.md").read_text()
    for c in report["claims"]:  # a verdict line for every claim, and its figure exists
        assert f"### {c['claim']}" in md
        assert (tmp_path / c["figure"]).is_file()
    assert md.count("- Verdict: **") == len(report["claims"]) == report["total"]
    assert "<table" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["total"] == report["total"]
    assert any("[4/4] table1" in line for line in lines)  # progress says what runs and what remains
    # the theory verdicts hold even at the reduced size
    verdict = {c["id"]: c["verdict"] for c in report["claims"]}
    assert all(verdict[k] for k in ("thm1-floor", "bounds", "cor1-bc", "toy-bc", "toy-sr", "thm5-spread"))


def test_reproduce_bad_scale(tmp_path, capsys):
    assert cli(["reproduce", "--scale", "giant", "--out", str(tmp_path)]) == 2
    assert "scale='giant'" in capsys.readouterr().err
