"""Atomic files: checkpoints and JSON results are written to a temporary file in the same
folder, flushed to disk, then renamed over the target, so a killed run never leaves a
half-written file and the previous good copy survives until the new one is complete."""
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Union

import torch

CHECKPOINT = "checkpoint.pt"
FORMAT = "qtrain-checkpoint-v1"


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
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


def atomic_write_json(path: Union[str, Path], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def save_checkpoint(path: Union[str, Path], state: dict) -> None:
    """``torch.save`` ``state`` (plus a format tag) to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Union[str, Path]) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; one-line errors when it is missing,
    corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass the RUN_DIR of a run started with --out")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({first[:120]}); "
                         "delete it to start over or resume from another copy") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a qtrain checkpoint (format tag {state.get('format') if isinstance(state, dict) else None!r})")
    return state
