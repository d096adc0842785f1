"""Atomic result files: written to a temporary file in the same folder, flushed to disk, then
renamed over the target, so a killed process never leaves a half-written file and the previous
good copy survives until the new one is complete. JSON is kept strict: NaN/inf become ``null``,
numpy/torch values become Python numbers and lists, paths become strings.

Files get the permissions ``0o666 & ~umask`` like any ``open(path, "w")`` (a bare temporary
file would be ``0o600``). A temporary file is named ``.<name>.<pid>.<random>.tmp``; one left by
a killed writer is removed by :func:`remove_stale_tmp` once its PID is gone. A failed write
(disk full, read-only folder) raises :class:`WriteError`: one line naming the file and the fix.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> p = atomic_write_json(d / "r.json", {"x": float("nan")})
>>> p.read_text()
'{\\n  "x": null\\n}\\n'
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, List, Union

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_savefig", "json_safe", "remove_stale_tmp",
           "pid_alive", "WriteError"]


class WriteError(OSError):
    """A result file could not be written (one line: the file, the reason, the fix)."""

    def __str__(self) -> str:
        return str(self.strerror)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Union[str, Path], data) -> Path:
    """Write ``data`` (bytes, or an iterable of buffers written one after another, so a large file
    need not be built in memory) to ``path`` atomically."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            for part in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        fix = "free some disk space" if e.errno in (28, 122) else "make it writable"
        raise WriteError(e.errno, f"cannot write {path} ({e.strerror or e}); {fix} or pick another "
                         f"--out (the previous copy, if any, is unchanged)") from None
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps`` writes as strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: Union[str, Path], obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=2) + "\n").encode())


def atomic_savefig(fig, path: Union[str, Path], **kwargs) -> Path:
    """``fig.savefig(path, **kwargs)``, atomically (the format comes from the suffix)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=kwargs.pop("format", path.suffix.lstrip(".") or "png"), **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_TMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")
_OLD_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # written before temporary names held the PID
_OLD_AGE = 3600.0  # seconds after which such a file is taken as abandoned


def remove_stale_tmp(folder: Union[str, Path]) -> List[Path]:
    """Delete the temporary files in ``folder`` left by writers whose PID is gone (or, for names
    without a PID, untouched for an hour); returns them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        try:
            stale = (not pid_alive(int(m.group(1)))) if m else (
                _OLD_TMP.match(p.name) is not None and time.time() - p.stat().st_mtime > _OLD_AGE)
            if stale and p.is_file():
                p.unlink()
                removed.append(p)
        except FileNotFoundError:  # its writer finished meanwhile
            pass
    return removed
