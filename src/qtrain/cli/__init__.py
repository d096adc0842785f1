"""The ``qtrain`` command: argument parsing only; every command calls a library function.

Each submodule registers its sub-commands with ``register(subparsers)``; a command's
handler gets the parsed ``argparse.Namespace`` and returns an exit code. Errors that a user
can fix (``ValueError``, ``FileNotFoundError``, a missing optional package, ...) print one line
and exit 2, no traceback; ``QTRAIN_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

# sub-command modules, in the order they appear in --help
_MODULES = ("qtrain.cli.theory", "qtrain.cli.train", "qtrain.cli.experiments", "qtrain.cli.export")


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
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("qtrain: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError,
            PermissionError, ImportError) as e:
        if os.environ.get("QTRAIN_DEBUG"):
            raise
        print(f"qtrain {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
