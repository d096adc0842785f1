r"""The poster's theory, runnable (NOTES §3).

* :mod:`qtrain.theory.convex` -- Theorems 1 and 4, Corollary 1 (``qtrain convex``);
* :mod:`qtrain.theory.toy` -- exploration vs exploitation on a toy non-convex problem (``qtrain toy``);
* :mod:`qtrain.theory.markov` -- Theorem 5, SR as a Markov chain (``qtrain markov``).

Each module has ``run(out_dir=None, seed=0, quick=False, ...) -> dict``: it returns the
record it writes to ``out_dir/<name>.json`` (atomically) next to ``out_dir/<name>.png``.
Submodules are imported on demand so ``import qtrain`` stays light.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Optional

import torch

__all__ = ["write_json_atomic", "finish", "single_thread"]


@contextlib.contextmanager
def single_thread():
    """Run torch on one intra-op thread inside the block (restored after): the theory batches are
    small, and on a loaded machine torch's thread pool costs far more than it gives (20x here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _clean(obj):
    """JSON-safe copy: NaN/inf become ``None``, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path, record: dict) -> Path:
    """Write ``record`` as JSON to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_clean(record), fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def finish(name: str, record: dict, out_dir: Optional[str], plot) -> dict:
    """Return ``record`` made JSON-safe; with ``out_dir`` also write ``<name>.json`` and, via
    ``plot(record, png_path)``, ``<name>.png``. Paths are added under ``record["files"]``."""
    record = _clean(record)
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"--out {out} is a file; pass a directory")
        out.mkdir(parents=True, exist_ok=True)
        png = out / f"{name}.png"
        record["files"] = {"json": str(out / f"{name}.json"), "png": str(png)}
        plot(record, png)
        write_json_atomic(out / f"{name}.json", record)
    return record
