"""Every command that reads a dataset says, in one line, that --data-dir points at it (and
--download only as `qtrain train`'s flag); table1/reproduce say so before training or theory."""
import pytest

from qtrain.cli import main as cli


@pytest.mark.parametrize("command", [
    ["train", "--data", "cifar10", "--model", "smallcnn", "--epochs", "1"],
    ["train", "--data", "mnist", "--model", "mlp", "--epochs", "1"],
    ["table1", "--scale", "mini"],
    ["reproduce", "--scale", "mini"],
])
def test_missing_data_names_the_flag(tmp_path, capsys, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(command + ["--data-dir", str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err and "--data-dir DIR" in err
    if "cifar10" in command or command[0] in ("table1", "reproduce"):
        assert "qtrain train --data cifar10 --download --data-dir DIR" in err
    else:
        assert "--download" not in err  # MNIST is never downloaded
    assert not (tmp_path / "out" / "theory").exists()  # reproduce stopped before the theory parts
    assert not list((tmp_path / "out").glob("**/checkpoint.pt"))
