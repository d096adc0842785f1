"""``qtrain --help``: answers without torch, refuses abbreviated options, shows every option's
description and default."""
import argparse
import dataclasses
import subprocess
import sys

import pytest

from qtrain.cli import build_parser
from qtrain.cli.train import config_defaults
from qtrain.train import TrainConfig


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", ["", "train", "table1", "reproduce", "convex", "toy", "markov", "export", "plot"])
def test_help_does_not_import_torch(command):
    code = ("import sys\nfrom qtrain.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')" % ([command, "--help"] if command else ["--help"]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    assert out.stdout.strip().endswith("NO-TORCH"), out.stdout[-300:]
    assert "usage: qtrain" in out.stdout


def test_every_option_has_a_description_and_no_abbreviations():
    parser = build_parser()
    assert not parser.allow_abbrev
    subs = _subparsers(parser)
    assert {"train", "table1", "reproduce", "convex", "toy", "markov", "export", "plot"} <= set(subs)
    for name, sub in subs.items():
        assert not sub.allow_abbrev, name
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.option_strings}"


def test_abbreviated_option_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", "--epoch", "1", "--out", "x"])
    assert e.value.code == 2
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_a_misspelt_option_is_refused_by_its_command_naming_the_closest(capsys):
    from qtrain.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "--epoch", "1", "--data", "digits", "--out", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: qtrain train" in err
    assert err.strip().endswith("qtrain train: error: unrecognized arguments: --epoch 1; did you mean --epochs for --epoch?")
    with pytest.raises(SystemExit):
        main(["convex", "--out", "x", "--zzz"])
    assert capsys.readouterr().err.strip().endswith("qtrain convex: error: unrecognized arguments: --zzz")
    with pytest.raises(SystemExit):
        main(["--bogus"])
    assert "qtrain: error: unrecognized arguments: --bogus" in capsys.readouterr().err
    cases = {("train", "--batch", "3"): "qtrain train: error: unrecognized arguments: --batch 3; did you mean --batch-size for --batch?",
             ("train", "--lr_milestones", "2"): "; did you mean --lr-milestones for --lr_milestones?",
             ("train", "--gpu"): "qtrain train: error: unrecognized arguments: --gpu",  # no near option: no guess
             ("train", "--epochs", "1", "--", "--foo"): "qtrain train: error: unrecognized arguments: -- --foo",
             ("--bogus", "train", "--epochs", "1"): "qtrain: error: unrecognized arguments: --bogus"}  # before the command
    for argv, want in cases.items():
        with pytest.raises(SystemExit):
            main(list(argv))
        assert capsys.readouterr().err.strip().endswith(want), argv


@pytest.mark.parametrize("command", ["train", "table1", "reproduce", "convex", "toy", "markov", "export"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    if command == "train":
        for flag in ("--epochs", "--lr", "--seed", "--method", "--batch-size"):
            assert flag in text
        assert "learning rate (default: 0.01)" in text and "training epochs (default: 164)" in text
        assert "(default: float)" in text and "random seed" in text
    elif command in ("convex", "toy", "markov"):
        assert "(default 0)" in text  # --seed
    elif command == "reproduce":
        assert "(default: 0)" in text


def test_train_help_defaults_are_the_dataclass_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    parsed = config_defaults()
    assert parsed == {k: v for k, v in fields.items() if k in parsed}
    assert {"epochs", "lr", "seed", "method", "batch_size", "threads"} <= set(parsed)


def test_version_matches_the_package_metadata_without_torch(capsys):
    import tomllib
    from pathlib import Path
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--version"])
    assert e.value.code == 0
    declared = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"qtrain {declared}"
