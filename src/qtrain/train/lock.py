"""One writer per run folder: :func:`run_lock` holds ``<folder>/.qtrain.lock`` while a command
writes there.

The lock is an exclusive ``fcntl.flock`` on that file, which records the holder as
``{"pid", "host", "command", "since"}``. A second process finds it held and stops with one
line naming the holder's PID (a :class:`RunLocked`, a ``ValueError``: the CLI exits 2) before
changing anything in the folder. The kernel drops the lock when its process dies, so the
lock of a killed run is simply taken over. The same process may take the lock again
(nested use). On acquiring, temporary files of dead writers are removed from the folder.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with run_lock(d, "train") as path:
...     path.name
'.qtrain.lock'
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple, Union

from .._io import remove_stale_tmp

LOCK = ".qtrain.lock"
_held: Dict[str, Tuple[int, int]] = {}  # lock path -> (file descriptor, nesting depth) in this process


class RunLocked(ValueError):
    """Another live process writes to this folder."""


def _holder(fd: int) -> dict:
    for _ in range(10):  # the holder writes its record right after locking: give it a moment
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        try:
            info = json.loads(raw.decode("utf-8"))
            if isinstance(info, dict):
                return info
        except ValueError:
            pass
        time.sleep(0.05)
    return {}


def acquire(folder: Union[str, Path], command: str) -> Path:
    """Take the lock of ``folder`` (created if missing) or raise :class:`RunLocked`."""
    folder = Path(folder)
    path = folder / LOCK
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = str(path.resolve())
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            return path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise ValueError(f"--out {folder} is not writable ({e.strerror or e}); pick a writable folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = _holder(fd)
        os.close(fd)
        where = f" on {owner['host']}" if owner.get("host") not in (None, socket.gethostname()) else ""
        raise RunLocked(f"{folder} is in use by PID {owner.get('pid', '?')}{where} (qtrain {owner.get('command', '?')}, "
                        f"since {owner.get('since', '?')}); wait for it to end or stop it, or pick another --out") from None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode())
    _held[key] = (fd, 1)
    remove_stale_tmp(folder)
    return path


def release(path: Union[str, Path]) -> None:
    """Undo one :func:`acquire` of ``path``; the last one unlocks (the file stays, emptied)."""
    key = str(Path(path).resolve())
    if key not in _held:
        return
    fd, depth = _held.pop(key)
    if depth > 1:
        _held[key] = (fd, depth - 1)
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # closing the descriptor drops the flock


@contextlib.contextmanager
def run_lock(folder: Union[str, Path], command: str = "train") -> Iterator[Path]:
    """Hold the lock of ``folder`` for the ``with`` block (see the module docstring)."""
    path = acquire(folder, command)
    try:
        yield path
    finally:
        release(path)
