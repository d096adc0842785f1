"""Atomic result files: written to a temporary file in the same folder, flushed to disk, then
renamed over the target, so a killed process never leaves a half-written file and the previous
good copy survives until the new one is complete. JSON is kept strict: NaN/inf become ``null``,
numpy/torch values become Python numbers and lists, paths become strings."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Union

__all__ = ["atomic_write_bytes", "atomic_write_json", "json_safe"]


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
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
