"""The cpu scale (two protocols as two columns, Big SR-ADAM at equal steps) and the width trend.

No data needed: presets are checked as configs, runs use the embedded digits at a tiny size, and
the tables are rendered from constructed runs.
"""
import json
import math

import numpy as np
import pytest

from qtrain.cli import main as cli
from qtrain.experiments import columns, width
from qtrain.experiments.table1 import LABELS, cell_config, cells, markdown, run_table1, summarise

P, B = "c10-smallcnn-poster", "c10-smallcnn-bc"
QUIET = dict(progress=False, log=lambda *_: None)


def test_cpu_presets_load_and_validate():
    from qtrain.models import build

    found = cells("cpu")
    rows = ("adam", "bc-adam", "big-sr-adam", "big-sr-adam-steps", "sr-adam", "r-adam")
    assert set(found) == {f"{c}.{r}" for c in (P, B) for r in rows}
    cfgs = {name: cell_config(path) for name, path in found.items()}
    for name, cfg in cfgs.items():
        column, row = name.split(".")
        assert row in LABELS and cfg.label == row and cfg.threads == 1
        assert cfg.data == "cifar10" and cfg.model == "smallcnn" and cfg.width == 32
        assert cfg.train_subset is None and cfg.val_size is None and cfg.test_subset is None  # 50,000 / 10,000 images
        assert cfg.lr_gamma ** len(cfg.milestones()) <= 0.01 + 1e-12  # the lr anneals to <= 1% of its peak
        assert cfg.batch_size == (1024 if row.startswith("big") else 128)
        if column == P:  # the poster's protocol
            assert (cfg.scale, cfg.latent_init, cfg.lr_scale, cfg.lr) == ("mean", "default", "none", 0.01)
        else:  # BinaryConnect's (configuration C of docs/results/README.md)
            assert (cfg.scale, cfg.latent_init, cfg.lr_scale, cfg.lr) == (1.0, "uniform", "glorot", 0.003)
    for col in (P, B):
        small, big, steps = (cfgs[f"{col}.{r}"] for r in ("sr-adam", "big-sr-adam", "big-sr-adam-steps"))
        assert big.epochs == small.epochs == 15 and big.milestones() == small.milestones() == [8, 11]
        k = big.batch_size // small.batch_size
        assert k == 8 and steps.epochs == 8 * big.epochs and steps.milestones() == [8 * m for m in big.milestones()]
        assert {f: v for f, v in steps.to_dict().items() if f not in ("epochs", "lr_milestones", "label", "extra")} == \
               {f: v for f, v in big.to_dict().items() if f not in ("epochs", "lr_milestones", "label", "extra")}
        # equal steps up to the dropped partial batches: floor(50000 / 1024) x 120 = 5,760 vs floor(50000 / 128) x 15 = 5,850
        assert abs((50000 // 1024) * steps.epochs / ((50000 // 128) * small.epochs) - 1) < 0.02
    build("smallcnn", 10, in_channels=3, image_size=32, width=32)


def test_width_presets_differ_only_in_width():
    found = cells("width")
    assert set(found) == {f"c10-smallcnn-w{w}.{r}" for w in (8, 16, 32, 64) for r in ("adam", "bc-adam", "sr-adam")}
    by_row = {}
    for name, path in found.items():
        cfg = cell_config(path)
        assert cfg.width == int(name.split(".")[0].rsplit("w", 1)[1]) and cfg.train_subset == 20000
        assert cfg.channels_last == (cfg.width == 64)  # a memory layout (speed, float rounding order), not protocol
        by_row.setdefault(cfg.label, set()).add(json.dumps({k: v for k, v in cfg.to_dict().items()
                                                            if k not in ("width", "channels_last")}, sort_keys=True))
    assert all(len(v) == 1 for v in by_row.values())  # same data, schedule and protocol at every width


def test_steps_recorded(tmp_path):
    only = [f"{P}.sr-adam", f"{P}.big-sr-adam"]
    report = run_table1("cpu", tmp_path, only=only, data="digits", width=4, epochs=2, seeds=1, **QUIET)
    steps = {c["row"]: c["steps"] for c in report["cells"]}
    summary = json.loads((tmp_path / "runs" / f"{P}.sr-adam" / "seed0" / "summary.json").read_text())
    n_train = summary["steps"] // 2
    assert steps == {"sr-adam": summary["steps"], "big-sr-adam": 2 * (n_train * 128 // 1024)} and n_train > 8
    assert f"| {summary['steps']:,} |" in (tmp_path / "table1.md").read_text()
    # runs written before `steps` was recorded: counted from the metrics history
    from qtrain.experiments.runs import steps_taken as _steps
    from qtrain.train import read_metrics

    history = read_metrics(tmp_path / "runs" / f"{P}.sr-adam" / "seed0")
    assert _steps({k: v for k, v in summary.items() if k != "steps"}, history) == summary["steps"]
    # a partial table names the runs it lacks
    partial = run_table1("cpu", tmp_path, only=only, data="digits", width=4, epochs=2, seeds=2, report_only=True, **QUIET)
    assert partial["missing"] == [{"cell": c, "seed": 1} for c in only]
    assert f"**Partial table**: 2 requested run(s) not finished" in (tmp_path / "table1.md").read_text()


def _cell(col, row, errs, wc=None, steps=None, cfg=None):
    summaries = [{"test_error": e, "seconds": 1.0, "batch_size": 1024 if row.startswith("big") else 128,
                  "epochs": 120 if row.endswith("steps") else 15, "model": "smallcnn", "data": "cifar10",
                  "n_test": 10000, "weight_change_mean": wc, "weight_change": {"a": wc} if wc is not None else {},
                  "steps": steps, "config": cfg or {}} for e in errs]
    hist = [[{"epoch": 1, "test_error": e, "weight_change": {"a": wc} if wc is not None else {}}] for e in errs]
    return {"cell": f"{col}.{row}", "column": col, "row": row, "label": LABELS[row], "paper_column": "c10-vgg9",
            "width": 32, "seeds": list(range(len(errs))), "summaries": summaries, "histories": hist}


def _two_protocols():
    poster_cfg = {"scale": "mean", "latent_init": "default", "lr_scale": "none", "optimizer": "adam", "lr": 0.01,
                  "lr_milestones": [8, 11], "lr_gamma": 0.1, "epochs": 15}
    bc_cfg = {**poster_cfg, "scale": 1.0, "latent_init": "uniform", "lr_scale": "glorot", "lr": 0.003}
    res = []
    for col, cfg, sr, r in ((P, poster_cfg, [40.0, 41.0, 42.0], [50.0, 51.0, 52.0]),
                            (B, bc_cfg, [60.0, 61.0, 62.0], [50.0, 51.0, 52.0])):  # SR beats R only under the poster's
        res += [_cell(col, "adam", [25.0, 25.5, 26.0], cfg=cfg), _cell(col, "bc-adam", [30.0, 31.0, 32.0], 40.0),
                _cell(col, "sr-adam", sr, 48.0, steps=5850, cfg=cfg),
                _cell(col, "big-sr-adam", [sr[0] + 5, sr[1] + 5, sr[2] + 6], 30.0, steps=720),
                _cell(col, "big-sr-adam-steps", [sr[0] - 5, sr[1] - 6, sr[2] - 5], 35.0, steps=5760),
                _cell(col, "r-adam", r, 0.0)]
    return summarise("cpu", res)


def test_two_protocol_table_renders():
    report = _two_protocols()
    md = markdown(report)
    header = next(line for line in md.splitlines() if line.startswith("| method |"))
    assert "the poster's protocol" in header and "BinaryConnect's protocol" in header
    assert header.count("poster: CIFAR-10 VGG-9") == 1 and "optimizer steps per run" in header
    assert "| Big SR-ADAM (equal steps) | " in md and "5,760" in md and "5,850" in md
    assert "s = layer mean |w| at init, default init, ADAM lr 0.01" in md and "latent weights ~ U(-s, s)" in md
    # a claim that holds under one protocol and fails under the other says so
    split = [a for a in columns.agreement(report) if a["split"]]
    assert [a["id"] for a in split] == ["sr-beats-r"]
    assert "**Holds under the poster's protocol and fails under BinaryConnect's protocol**: SR-ADAM outperforms R-ADAM" in md
    cells_ = {c["cell"]: c for c in report["cells"]}
    assert cells_[f"{B}.big-sr-adam-steps"]["steps"] == 5760 and cells_[f"{B}.big-sr-adam"]["steps"] == 720


def test_big_batch_claim_judged_at_equal_steps():
    claims = {c["id"]: c for c in _two_protocols()["claims"]}
    c = claims[f"{P}-big-batch"]
    # equal epochs: Big SR is 5.3 points worse (reported); equal steps: 5.3 points better (the verdict)
    assert c["verdict"] == "reproduced" and c["effect"].startswith("equal steps: SR-ADAM − Big SR-ADAM (equal steps) = +5.33")
    assert "equal epochs (reported, not judged): Big SR-ADAM" in c["measured"] and "(720 steps)" in c["measured"]
    # without the equal-steps row the claim falls back to equal epochs, as before
    rows = [r for r in _two_protocols()["cells"] if r["row"] != "big-sr-adam-steps"]
    from qtrain.experiments import bigbatch, verdicts

    plain = [x for x in bigbatch.equal_steps(verdicts.table1_claims(rows), rows) if x.id == f"{P}-big-batch"][0]
    assert plain.verdict == "not reproduced" and "equal steps" not in plain.measured


def _width_cells():
    rng = np.random.default_rng(0)
    out = []
    for w, (a, b, s) in {8: (55, 70, 72), 16: (40, 50, 58), 32: (31, 37, 49), 64: (25, 28, 45)}.items():
        for row, m in (("adam", a), ("bc-adam", b), ("sr-adam", s)):
            out.append({"row": row, "width": w, "test_errors": list(m + rng.normal(0, 0.8, 3))})
    return out


def test_width_trend_table_and_fit():
    t = width.trend(_width_cells())
    assert t["widths"] == [8, 16, 32, 64]
    gaps = t["gaps"]["bc-adam"]
    for g in gaps:  # Welch: SE^2 = var/n + var/n; the 95% interval is +- t(0.975, df) SE
        c = {(x["row"], x["width"]): x["test_errors"] for x in _width_cells()}
        a, b = c[("adam", g["width"])], c[("bc-adam", g["width"])]
        assert g["se"] == pytest.approx(math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3))
        assert g["ci95"][1] - g["diff"] == pytest.approx(width.t_crit(g["df"]) * g["se"])
    assert width.t_crit(4.0) == pytest.approx(2.7764451, abs=1e-6)  # scipy.stats.t.ppf(0.975, 4)
    f = t["fits"]["bc-adam"]
    x = np.log2([g["width"] for g in gaps])
    slope = np.polyfit(x, [g["diff"] for g in gaps], 1, w=[1 / g["se"] for g in gaps])[0]
    assert f["slope"] == pytest.approx(slope) and f["slope"] < 0 and f["slope_se"] > 0
    # unscaled SE of a weighted fit (numpy scales by the residuals' chi2/df, which we do only when > 1)
    raw = math.sqrt(np.polyfit(x, [g["diff"] for g in gaps], 1, w=[1 / g["se"] for g in gaps], cov="unscaled")[1][0, 0])
    assert f["slope_se"] == pytest.approx(raw * max(1.0, math.sqrt(f["chi2"] / 2)))
    md = width.markdown(t)
    assert "| 64 | " in md and "points per doubling of the width" in md and "extrapolated to width 128" in md
    assert "Poster (VGG-9): BC − ADAM = 2.39, SR − ADAM = 15.36 points." in md


def test_width_trend_figure(tmp_path):
    from qtrain.plots.width import gaps_vs_width

    assert gaps_vs_width(width.trend(_width_cells()), tmp_path / "w.png").stat().st_size > 5000


def test_width_trend_cli_tiny(tmp_path, capsys):
    cells_ = [f"c10-smallcnn-w{w}.{r}" for w in (8, 16) for r in ("adam", "bc-adam", "sr-adam")]
    code = cli(["width-trend", "--out", str(tmp_path), "--cells", *cells_, "--seeds", "2", "--epochs", "1",
                "--train-subset", "256", "--workers", "1", "--no-progress", "--set", "data=digits"])
    assert code == 0
    saved = json.loads((tmp_path / "table1.json").read_text())
    assert sorted({c["width"] for c in saved["cells"]}) == [8, 16] and all(len(c["seeds"]) == 2 for c in saved["cells"])
    t = json.loads((tmp_path / "width_trend.json").read_text())
    assert [g["width"] for g in t["gaps"]["sr-adam"]] == [8, 16] and t["fits"]["sr-adam"] is not None
    assert (tmp_path / "width_trend.png").stat().st_size > 0 and "| 16 | " in capsys.readouterr().out
