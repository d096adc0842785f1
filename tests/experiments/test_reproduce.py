import html
import json

from qtrain.cli import main as cli
from qtrain.experiments import render
from qtrain.experiments.reproduce import run_reproduce

VERDICTS = {"reproduced", "not reproduced", "inconclusive", "holds by construction", None}


def test_reproduce_quick_reduced(tmp_path):
    lines = []
    report = run_reproduce("quick", tmp_path, epochs=1, train_subset=256, progress=False, log=lines.append, seeds=2,
                           workers=1)
    ids = {c["id"] for c in report["claims"]}
    assert {"thm1-floor", "bounds", "cor1-bc", "r-stalls", "toy-bc", "toy-sr", "thm5-limit", "thm5-spread",
            "thm5-exact", "squish"} <= ids
    assert {f"digits-smallcnn-{k}" for k in ("order", "bc-close", "sr-beats-r", "big-batch", "explore", "bc-under-20",
                                               "r-still")} <= ids
    md = (tmp_path / "report.md").read_text()
    for c in report["claims"]:  # a verdict line for every claim, and its figure exists
        assert f"### {c['claim']}" in md and c["verdict"] in VERDICTS
        assert (tmp_path / c["figure"]).is_file()
        assert c["verdict"] is not None or c["reason"]
    assert md.count("- Verdict: ") == len(report["claims"]) == report["total"]
    kinds = ("reproduced", "not_reproduced", "inconclusive", "by_construction", "no_verdict")
    assert report["total"] == sum(report[k] for k in kinds)
    t1, th = report["table1_counts"], report["theory_counts"]  # two headlines: Table 1's and the theory's
    assert t1["total"] == 7 and th["total"] == 10 and all(t1[k] + th[k] == report[k] for k in kinds)
    assert md.startswith(f"# qtrain reproduction report (quick scale)\n\n**7 Table 1 claims: {t1['reproduced']} reproduced")
    assert f"**10 theory checks (deterministic): {th['reproduced']} reproduced" in md
    assert md.count("- Power: ") == sum(c["mde"] is not None for c in report["claims"]) > 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["total"] == report["total"] and saved["seeds"] == 2
    assert all(c["seeds"] == [0, 1] and c["n_test"] == 300 for c in saved["table1_cells"])
    # the Markov claim states the simulated step count from the JSON (quick: 200,000, not 10⁶)
    steps = json.loads((tmp_path / "theory" / "markov.json").read_text())["sim_steps"]
    assert f"TV(exact π_α, {steps:,}-step simulation)" in md
    # the HTML holds everything the Markdown does: rules, effects, wall time, machine, Table 1
    page = (tmp_path / "report.html").read_text()
    for c in report["claims"]:
        for key in ("rule", "measured", "effect", "reason"):
            if c[key]:
                assert html.escape(c[key], quote=False) in page, (c["id"], key)
    assert "<table" in page
    for text in (render.wall_time(report), render.machine_prose(report), "measured: digits-smallcnn"):
        assert html.escape(text, quote=False) in page
    assert any("[4/4] table1" in line for line in lines)  # progress says what runs and what remains
    # the poster's values sit beside other models and data: the caveat is there, twice (table, claims)
    assert md.count("compare orderings, not values") == 2 and "compare orderings, not values" in page
    # figures are embedded: the page shows them wherever it is moved
    assert "src='data:image/png;base64," in page and "src='theory/" not in page and "src='table1/" not in page
    # the theory verdicts hold even at the reduced size
    verdict = {c["id"]: c["verdict"] for c in report["claims"]}
    assert all(verdict[k] == "reproduced" for k in ("thm1-floor", "bounds", "cor1-bc", "toy-bc", "toy-sr", "thm5-spread"))
    # --report-only rewrites the same verdicts from the records, training and computing nothing
    (tmp_path / "report.md").unlink()
    again = run_reproduce("quick", tmp_path, epochs=1, train_subset=256, progress=False, log=lines.append, seeds=2,
                          report_only=True)
    assert [c["verdict"] for c in again["claims"]] == [c["verdict"] for c in report["claims"]]
    assert again["table1"]["runs_trained"] == 0 and "--report-only" in (tmp_path / "report.md").read_text()
    # a cell's own seed count reaches Table 1: its unfinished seeds are listed there
    cell = report["table1_cells"][0]["cell"]
    more = run_reproduce("quick", tmp_path, epochs=1, train_subset=256, progress=False, log=lines.append, seeds=2,
                         report_only=True, seeds_per_cell={cell: 3})
    assert more["table1"]["missing"] == [{"cell": cell, "seed": 2}]
    assert f"{cell} seed(s) 2." in (tmp_path / "table1" / "table1.md").read_text()
    md = (tmp_path / "report.md").read_text()
    assert f"; {cell} 3 seeds." in md and "**Partial Table 1**: 1 requested run(s) not finished" in md


def test_wall_time_says_when_runs_were_reused():
    report = {"seconds": {"convex": 2.0, "table1": 1.0}, "wall_seconds": 3.2, "started": "2026-01-01T00:00:00Z",
              "finished": "2026-01-01T00:00:03Z",
              "table1": {"runs_trained": 0, "runs_reused": 25, "reused_seconds": 181.0, "workers": 2}}
    assert "from 2026-01-01T00:00:00Z to 2026-01-01T00:00:03Z" in render.wall_time(report)
    assert "reused 25 finished run(s) from an earlier invocation (their 181 s of training are not in this wall time)" \
        in render.wall_time(report)
    report["table1"].update(runs_trained=25, runs_reused=0)
    assert "trained all 25 run(s) now (none reused)" in render.wall_time(report)


def test_reproduce_bad_scale(tmp_path, capsys):
    assert cli(["reproduce", "--scale", "giant", "--out", str(tmp_path)]) == 2
    assert "scale='giant'" in capsys.readouterr().err


def test_html_embeds_images_it_finds_and_keeps_other_links(tmp_path):
    (tmp_path / "fig").mkdir()
    (tmp_path / "fig" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    page = render.to_html("![a](fig/a.png)\n\n![b](fig/missing.png)", "t", base=tmp_path)
    assert "src='data:image/png;base64,iVBORw0KGgpmYWtl'" in page and "src='fig/missing.png'" in page
    assert "src='fig/a.png'" in render.to_html("![a](fig/a.png)", "t")  # no folder given: links as before

