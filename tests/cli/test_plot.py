"""``qtrain plot``: runs grouped by settings (seeds as a band), three panels, one-line errors."""
import json
import subprocess
import sys

import pytest

from qtrain.cli import main as cli
from qtrain.plots.runs import gather, mean_band

pytest.importorskip("matplotlib")


def fake_run(folder, seed, method="sr", shift=0.0, epochs=3):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"data": "digits", "model": "smallcnn", "method": method,
                                                    "optimizer": "adam", "seed": seed, "label": None, "lr": 0.01}))
    rows = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.2 / e, "train_error": 20.0 / e + shift,
             "test_error": 25.0 / e + shift, "lr": 0.01, "seconds": 1.0,
             "weight_change": {} if method == "float" else {"a": 10.0 * e + shift, "b": 20.0 * e}}
            for e in range(1, epochs + 1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_seeds_are_grouped_and_averaged(tmp_path):
    runs = [fake_run(tmp_path / f"sr{s}", s, shift=2.0 * s) for s in range(3)] + [fake_run(tmp_path / "f", 0, "float")]
    groups = gather(runs)
    assert {k: len(v) for k, v in groups.items()} == {"sr-adam": 3, "float-adam": 1}
    xs, mean, se = mean_band(groups["sr-adam"], "test_error")
    assert xs == [1, 2, 3] and mean[0] == pytest.approx(25.0 + 2.0)  # shifts 0, 2, 4
    assert se[0] == pytest.approx(2.0 / 3 ** 0.5)  # sd 2 over 3 seeds
    assert mean_band(groups["sr-adam"], "weight_change")[1][0] == pytest.approx((10 + 2 + 20) / 2)
    assert mean_band(groups["float-adam"], "weight_change")[0] == []


def test_plot_command_writes_the_figure(tmp_path, capsys):
    runs = [str(fake_run(tmp_path / f"r{s}", s)) for s in range(2)]
    assert cli(["plot", *runs, "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert "2 run(s) in 1 group(s)" in capsys.readouterr().out
    assert cli(["plot", str(tmp_path), "--out", str(tmp_path / "g.png")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert cli(["plot", str(tmp_path / "nowhere"), "--out", str(tmp_path / "g.png")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert cli(["plot", *runs, "--out", str(tmp_path / "g.txt")]) == 2


def test_plot_does_not_import_torch(tmp_path):
    runs = [str(fake_run(tmp_path / f"r{s}", s)) for s in range(2)]
    code = ("import sys\nfrom qtrain.cli import main\nassert main(['plot', *sys.argv[1:], '--out', %r]) == 0\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')" % str(tmp_path / "f.png"))
    out = subprocess.run([sys.executable, "-c", code, *runs], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1000:]
    assert out.stdout.strip().endswith("NO-TORCH")


def test_a_run_older_than_a_setting_joins_the_curve_of_that_settings_default(tmp_path):
    # a run made before `channels_last` existed recorded no such key: it ran with the default (False)
    old = fake_run(tmp_path / "old", 0)
    new_off, new_on = fake_run(tmp_path / "off", 1), fake_run(tmp_path / "on", 2)
    for run, value in ((new_off, False), (new_on, True)):
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(dict(cfg, channels_last=value)))
    groups = gather([old, new_off, new_on])
    assert {k: len(v) for k, v in groups.items()} == {"sr-adam (channels_last=False)": 2,
                                                      "sr-adam (channels_last=True)": 1}


def test_a_run_named_twice_counts_once_and_a_copy_is_refused(tmp_path, capsys):
    a, b = fake_run(tmp_path / "a", 0), fake_run(tmp_path / "b", 1, shift=2.0)
    assert {k: len(v) for k, v in gather([a, b, a, tmp_path / "b" / ".." / "a"]).items()} == {"sr-adam": 2}
    import shutil
    shutil.copytree(a, tmp_path / "copy")  # a copy of seed 0 would pass for a third seed and shrink the band
    with pytest.raises(ValueError, match="same settings and seed 0: the same run twice"):
        gather([a, b, tmp_path / "copy"])
    assert cli(["plot", str(a), str(tmp_path / "copy"), "--out", str(tmp_path / "f.png")]) == 2
    assert "pass each run once" in capsys.readouterr().err


def test_long_labels_fit_in_one_legend_below_the_panels(tmp_path, monkeypatch):
    runs = [fake_run(tmp_path / f"m{i}", 0, method=m) for i, m in enumerate(("sr", "bc", "float"))]
    for i, run in enumerate(runs):  # settings that differ make long labels
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(dict(cfg, lr_milestones=[8 + i, 12], batch_size=32 * (i + 1),
                                                         width=16 * (i + 1))))
    import matplotlib.pyplot as plt
    from qtrain.plots import runs as plots_runs
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure to inspect it
    plots_runs.plot_runs(gather(runs), tmp_path / "f.png")
    (fig,) = kept
    assert all(ax.get_legend() is None for ax in fig.axes)  # no legend over the data
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 3 and all("batch_size=" in t for t in texts)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # inside the figure
    assert all(box.y1 <= ax.get_tightbbox(renderer).y0 for ax in fig.axes)  # below the panels and their labels
    monkeypatch.undo()
    plt.close(fig)


def test_where_a_run_ran_does_not_split_its_curve(tmp_path):
    # provenance records (machine, data digest, machines of earlier parts) are not settings; an old run lacks them
    runs = [fake_run(tmp_path / f"s{s}", s) for s in range(3)]
    extra = ({"machine": {"cpu": "A"}, "data_sha256": "e05a"}, {"machine": {"cpu": "B"}, "earlier_machines": [{}]}, {})
    for run, more in zip(runs, extra):
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(dict(cfg, **more)))
    assert {k: len(v) for k, v in gather(runs).items()} == {"sr-adam": 3}
    code = ("import sys\nfrom qtrain.plots.runs import gather\ngather(sys.argv[1:])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code, *map(str, runs)], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "NO-TORCH", out.stderr[-1000:]  # nothing to fill: no torch
