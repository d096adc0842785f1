"""The ``qtrain`` command: argument parsing only; every command calls a library function.

Each submodule registers its sub-commands with ``register(subparsers)``; a command's
handler gets the parsed ``argparse.Namespace`` and returns an exit code. Errors that a user
can fix (``ValueError``, any ``OSError`` such as a full disk or a read-only folder, a missing
optional package, a lost rank under torchrun, ...) print one line and exit 2, no traceback;
``QTRAIN_DEBUG=1`` shows the traceback instead. A run stopped by SIGINT/SIGTERM after saving
says how to resume and exits 128 + the signal number.

Every parser refuses abbreviated options (``--epoch`` is not ``--epochs``) and its ``--help``
shows each option's default. Command modules import torch only inside their handlers, so
``qtrain --help`` and ``qtrain COMMAND --help`` answer without loading it.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import shlex
import sys
from typing import Optional, Sequence

ARGV: list = []  # the command line being run (what a stopped table1/reproduce says to run again)
# sub-command modules, in the order they appear in --help
_MODULES = ("qtrain.cli.theory", "qtrain.cli.train", "qtrain.cli.experiments", "qtrain.cli.export", "qtrain.cli.plot",
            "qtrain.cli.verify")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default;
    ``None`` shows as ``none`` (the preset's or the library's choice); required options,
    on/off flags and positional arguments show none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if ("default" in text or not action.option_strings or action.required or action.nargs == 0
                or d is argparse.SUPPRESS):
            return text
        if d is None or (isinstance(d, list) and not d):
            return text + " (default: none)"
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """``qtrain``'s parsers: no prefix matching of options, defaults shown in ``--help``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="qtrain", description="Train quantized nets (BC / R / SR) and reproduce "
        "'Training Quantized Nets: A Deeper Understanding' (NeurIPS 2017).")
    from .. import __version__  # the package module only: no torch
    parser.add_argument("--version", action="version", version=f"qtrain {__version__}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that command group is not installed in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unrecognized(parser, args, argv, extra)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    global ARGV
    ARGV = argv
    code = _call(args, argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: skip C++ teardown races at interpreter exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _unrecognized(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list, extra: list) -> None:
    """Refuse ``extra`` arguments from the parser they belong to (the top level for those before the
    command, else the command's own: its usage line), naming the closest option of that command for
    a misspelt one (``--epoch``: did you mean ``--epochs``?). Exits 2."""
    subs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    name = getattr(args, "command", None)
    command = subs.choices.get(name) if subs is not None and name in argv else None
    before = argv[:argv.index(name)] if command is not None else argv
    if command is None or any(x in before for x in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    tail = argv[argv.index(name):]
    options = tail[:tail.index("--")] if "--" in tail else tail  # after "--" nothing is an option
    known = {o[2:]: o for a in command._actions for o in a.option_strings if o.startswith("--")}
    hints = []
    for x in extra:
        if x.startswith("--") and x != "--" and x in options:
            m = difflib.get_close_matches(x[2:].split("=", 1)[0].lower().replace("_", "-"), list(known), n=1, cutoff=0.6)
            hints += [f"{known[m[0]]} for {x}"] if m else []
    command.error(f"unrecognized arguments: {' '.join(extra)}" + (f"; did you mean {', '.join(hints)}?" if hints else ""))


class _NeverRaised(Exception):
    """Stands for an exception class whose module the command never imported (so it cannot be raised)."""


def _loaded(module: str, name: str) -> type:
    """``module.name`` if that module is already imported, else :class:`_NeverRaised`: commands that
    never load the training code (``--help``, ``plot``) do not import torch just to catch its errors."""
    return getattr(sys.modules.get(module), name, _NeverRaised)


def _call(args: argparse.Namespace, argv: list) -> int:
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # noqa: BLE001  (sorted below, where the classes' modules are loaded)
        return _failed(args, e)
    except KeyboardInterrupt:
        print(f"qtrain {args.command}: {_interrupted(args, argv)}", file=sys.stderr)
        return 130


def _failed(args: argparse.Namespace, e: Exception) -> int:
    RunStopped = _loaded("qtrain.train.stopping", "RunStopped")
    DistError = _loaded("qtrain.train.distributed", "DistError")
    try:
        raise e
    except RunStopped as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"qtrain {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except (ValueError, OSError, FloatingPointError, ImportError, DistError) as e:
        # user-fixable: bad settings or files, disk full, read-only folder, a lost rank
        if os.environ.get("QTRAIN_DEBUG"):
            raise
        print(f"qtrain {args.command}: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
              file=sys.stderr)
        return 2


def _interrupted(args: argparse.Namespace, argv: list) -> str:
    """What an interrupted command kept, and the command that continues it."""
    run_dir = getattr(args, "resume", None) or getattr(args, "out", None)
    if args.command == "train" and run_dir is not None and (run_dir / "checkpoint.pt").is_file():
        return f"interrupted; resume with: qtrain train --resume {shlex.quote(str(run_dir))}"
    if args.command == "train":
        return f"interrupted before anything was saved; rerun the original command: {shlex.join(['qtrain', *argv])}"
    return f"interrupted; rerun the original command (finished parts are reused): {shlex.join(['qtrain', *argv])}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
