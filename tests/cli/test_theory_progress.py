"""The theory commands say how far they are (stderr) while stdout keeps their results."""
from qtrain.cli import main as cli


def test_toy_and_convex_report_progress(tmp_path, capsys):
    assert cli(["toy", "--quick", "--iters", "2000", "--lrs", "1", "0.1", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "4/4 chains done" in err and "chains done" not in out and "mass at minimizer" in out
    assert cli(["convex", "--quick", "--T", "200", "--seeds", "2", "--deltas", "0.25", "0.125",
                "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "quadratic: step 200/200" in err and "logistic: step 20/200" in err and "step" not in out
