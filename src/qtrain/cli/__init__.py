"""The ``qtrain`` command: argument parsing only; every command calls a library function.

Each submodule registers its sub-commands with ``register(subparsers)``; a command's
handler gets the parsed ``argparse.Namespace`` and returns an exit code. Errors that a user
can fix (``ValueError``, any ``OSError`` such as a full disk or a read-only folder, a missing
optional package, a lost rank under torchrun, ...) print one line and exit 2, no traceback;
``QTRAIN_DEBUG=1`` shows the traceback instead. A run stopped by SIGINT/SIGTERM after saving
says how to resume and exits 128 + the signal number.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from typing import Optional, Sequence

# sub-command modules, in the order they appear in --help
_MODULES = ("qtrain.cli.theory", "qtrain.cli.train", "qtrain.cli.experiments", "qtrain.cli.export", "qtrain.cli.verify")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtrain", description="Train quantized nets (BC / R / SR) and reproduce "
        "'Training Quantized Nets: A Deeper Understanding' (NeurIPS 2017).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    code = _call(args, argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: skip C++ teardown races at interpreter exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _call(args: argparse.Namespace, argv: list) -> int:
    from ..train.distributed import DistError
    from ..train.stopping import RunStopped

    try:
        return int(args.func(args) or 0)
    except RunStopped as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"qtrain {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"qtrain {args.command}: {_interrupted(args, argv)}", file=sys.stderr)
        return 130
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
