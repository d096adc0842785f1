"""One writer per run folder: :func:`run_lock` holds ``<folder>/.qtrain.lock`` while a command
writes there.

The lock is an exclusive ``fcntl.flock`` on that file, which records the holder as
``{"pid", "host", "command", "since"}`` while it is held and is removed when the holder
releases it. A second process finds it held and stops with one line naming the holder's PID
(a :class:`RunLocked`, a ``ValueError``: the CLI exits 2) before changing anything in the
folder. The kernel drops the lock when its process dies, so the lock file of a killed run is
taken over: it is unlinked and a fresh one created (``O_CREAT | O_EXCL``), so an existing file
is never written to or truncated. A lock path that is a symbolic link, a folder or any other
non-regular file is refused (``O_NOFOLLOW``): nothing outside the folder is ever opened for
writing. The same process may take the lock again (nested use). On acquiring, temporary files
of dead writers are removed from the folder. :func:`run_lock` also removes the folders it
created when the block fails and leaves them empty (a run refused before it wrote anything
leaves nothing behind).

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with run_lock(d, "train") as path:
...     path.name
'.qtrain.lock'
>>> path.exists()
False
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

from .._io import remove_stale_tmp

LOCK = ".qtrain.lock"
_held: Dict[str, Tuple[int, int]] = {}  # lock path -> (file descriptor, nesting depth) in this process
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class RunLocked(ValueError):
    """Another live process writes to this folder."""


def _holder(fd: int) -> dict:
    for _ in range(10):  # the holder writes its record right after locking: give it a moment
        raw = os.pread(fd, 4096, 0)
        try:
            info = json.loads(raw.decode("utf-8"))
            if isinstance(info, dict):
                return info
        except ValueError:
            pass
        time.sleep(0.05)
    return {}


def _refuse(path: Path, what: str) -> ValueError:
    return ValueError(f"{path} is {what}, not a qtrain lock file; remove it (qtrain never follows or "
                      f"overwrites it) or pick another --out")


def _open(path: Path) -> Tuple[int, bool]:
    """``(fd, created)``: a new lock file, or the existing one (a regular file, never a link)."""
    try:
        return os.open(path, _OPEN | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
        pass
    try:
        fd = os.open(path, _OPEN)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(path, "a symbolic link") from None
        if e.errno == errno.EISDIR:
            raise _refuse(path, "a folder") from None
        if e.errno == errno.ENOENT:  # removed meanwhile by its releasing holder
            return -1, False
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(path, "not a regular file")
    return fd, False


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def acquire(folder: Union[str, Path], command: str) -> Path:
    """Take the lock of ``folder`` (created if missing) or raise :class:`RunLocked`."""
    folder = Path(folder)
    path = folder / LOCK
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = str(folder.resolve() / LOCK)
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            return path
    except OSError as e:
        raise ValueError(f"--out {folder} is not writable ({e.strerror or e}); pick a writable folder") from None
    for _ in range(100):
        try:
            fd, created = _open(path)
        except OSError as e:
            raise ValueError(f"--out {folder} is not writable ({e.strerror or e}); pick a writable folder") from None
        if fd < 0:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _holder(fd)
            os.close(fd)
            where = f" on {owner['host']}" if owner.get("host") not in (None, socket.gethostname()) else ""
            raise RunLocked(f"{folder} is in use by PID {owner.get('pid', '?')}{where} (qtrain {owner.get('command', '?')}, "
                            f"since {owner.get('since', '?')}); wait for it to end or stop it, or pick another --out") from None
        if not _same_file(fd, path):  # released (unlinked) or replaced after we opened it: try again
            os.close(fd)
            continue
        if not created:  # left by a dead holder: replace it by a fresh file (an existing file is never written)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)
            continue
        break
    else:  # pragma: no cover - 100 lost races in a row
        raise RunLocked(f"{folder}: could not take {path} (other processes keep replacing it); try again")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    _held[key] = (fd, 1)
    remove_stale_tmp(folder)
    return path


def release(path: Union[str, Path]) -> None:
    """Undo one :func:`acquire` of ``path``; the last one removes the lock file and unlocks."""
    path = Path(path)
    key = str(path.parent.resolve() / LOCK)
    if key not in _held:
        return
    fd, depth = _held.pop(key)
    if depth > 1:
        _held[key] = (fd, depth - 1)
        return
    if _same_file(fd, path):  # still ours: remove it while it is locked, then unlock
        with contextlib.suppress(OSError):
            os.unlink(path)
    os.close(fd)  # closing the descriptor drops the flock


def _new_dirs(folder: Path) -> List[Path]:
    """The folders that creating ``folder`` would make, deepest first."""
    out = []
    p = Path(os.path.abspath(folder))
    while not os.path.lexists(p) and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def remove_if_empty(dirs: List[Path]) -> None:
    """Remove ``dirs`` (deepest first) where they are empty folders."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def run_lock(folder: Union[str, Path], command: str = "train") -> Iterator[Path]:
    """Hold the lock of ``folder`` for the ``with`` block (see the module docstring); if the
    block fails, the folders this call created are removed again where they are left empty."""
    created = _new_dirs(Path(folder))
    path = acquire(folder, command)
    try:
        yield path
    except BaseException:
        release(path)
        remove_if_empty(created)
        raise
    release(path)
