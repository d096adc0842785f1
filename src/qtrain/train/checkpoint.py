"""Checkpoints, written atomically (see :mod:`qtrain._io`) and read back with one-line errors."""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Union

import torch

from .._io import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"
FORMAT = "qtrain-checkpoint-v1"


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
