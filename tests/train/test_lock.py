"""The run-folder lock: it holds the PID while held and is removed at exit; it never follows a
symbolic link or writes into an existing file; a run refused before training leaves no folder."""
import json
import os
import subprocess
import sys

import pytest

from qtrain.cli import main as cli
from qtrain.train.lock import LOCK, run_lock

FLAGS = ["--data", "digits", "--model", "smallcnn", "--epochs", "1", "--batch-size", "64", "--train-subset", "128",
         "--test-subset", "64", "--no-progress", "--threads", "1"]


def one_line(capsys, argv, code=2):
    assert cli(argv) == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_lock_holds_the_pid_and_is_removed_at_exit(tmp_path):
    with run_lock(tmp_path, "train") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path, "train") as path:
            raise RuntimeError("boom")
    assert not path.exists() and tmp_path.is_dir()  # a folder it did not create stays


@pytest.mark.parametrize("command", [["train", *FLAGS], ["table1", "--scale", "quick", "--epochs", "1"]])
def test_a_lock_symlink_is_refused_and_its_target_untouched(tmp_path, capsys, command):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "R"
    out.mkdir()
    (out / LOCK).symlink_to(victim)
    err = one_line(capsys, [*command, "--out", str(out)])
    assert "symbolic link" in err and str(out / LOCK) in err
    assert victim.read_text() == "precious\n" and (out / LOCK).is_symlink()
    (out / LOCK).unlink()
    (out / LOCK).symlink_to(tmp_path / "nowhere")  # a dangling link is not created through either
    one_line(capsys, [*command, "--out", str(out)])
    assert not (tmp_path / "nowhere").exists()


def test_a_stale_lock_that_is_a_hard_link_is_replaced_not_truncated(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "R"
    out.mkdir()
    os.link(victim, out / LOCK)
    with run_lock(out, "train") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert victim.read_text() == "precious\n"


def test_a_fifo_or_folder_as_lock_is_refused(tmp_path, capsys):
    out = tmp_path / "R"
    out.mkdir()
    os.mkfifo(out / LOCK)
    assert "not a regular file" in one_line(capsys, ["train", *FLAGS, "--out", str(out)])
    os.unlink(out / LOCK)
    (out / LOCK).mkdir()
    assert "a folder" in one_line(capsys, ["train", *FLAGS, "--out", str(out)])


def test_a_run_refused_before_training_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new" / "R"
    one_line(capsys, ["train", *FLAGS, "--batch-size", "256", "--out", str(out)])
    assert not (tmp_path / "new").exists()  # nor the parent it created
    one_line(capsys, ["table1", "--scale", "quick", "--set", "nope=1", "--out", str(out)])
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    one_line(capsys, ["train", *FLAGS, "--batch-size", "256", "--out", str(existing)])
    assert existing.is_dir() and list(existing.iterdir()) == []  # no config.json, no empty lock file


def test_a_second_process_sees_the_holders_pid(tmp_path):
    code = f"from qtrain.train.lock import run_lock\nwith run_lock({str(tmp_path)!r}):\n    print('in')"
    with run_lock(tmp_path, "train"):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode != 0 and f"in use by PID {os.getpid()}" in r.stderr


@pytest.mark.parametrize("out,needle", [("", "names no new folder"), (".", "names no new folder")])
def test_out_must_name_a_folder(tmp_path, capsys, monkeypatch, out, needle):
    monkeypatch.chdir(tmp_path)
    assert needle in one_line(capsys, ["train", *FLAGS, "--out", out])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,content", [("summary.json", "{}"), ("config.json", '{"mine": 1}')])
def test_a_folder_that_holds_no_run_is_not_overwritten(tmp_path, capsys, name, content):
    (tmp_path / name).write_text(content)
    assert "pick a new --out" in one_line(capsys, ["train", *FLAGS, "--out", str(tmp_path)])
    assert (tmp_path / name).read_text() == content
