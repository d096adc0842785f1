r"""The poster's theory, runnable.

* :mod:`qtrain.theory.convex` -- Theorems 1 and 4, Corollary 1 (``qtrain convex``);
* :mod:`qtrain.theory.toy` -- exploration vs exploitation on a toy non-convex problem (``qtrain toy``);
* :mod:`qtrain.theory.markov` -- Theorem 5, SR as a Markov chain (``qtrain markov``).

Each module has ``run(out_dir=None, seed=0, quick=False, ...) -> dict``: it returns the
record it writes (with ``out_dir``) to ``out_dir/<name>.json``, atomically. Computation only:
nothing here imports plotting; the figure ``<name>.png`` is drawn by the caller (the commands)
with :func:`qtrain.plots.theory.draw`. Submodules are imported on demand so ``import qtrain``
stays light.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import torch

from .._io import atomic_write_json, json_safe

__all__ = ["finish", "single_thread"]


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


def finish(name: str, record: dict, out_dir: Optional[str]) -> dict:
    """Return ``record`` made JSON-safe; with ``out_dir`` also write ``<name>.json`` there
    (atomically) and record its path as ``record["files"]["json"]``."""
    record = json_safe(record)
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"--out {out} is a file; pass a directory")
        out.mkdir(parents=True, exist_ok=True)
        record["files"] = {"json": str(out / f"{name}.json")}
        atomic_write_json(out / f"{name}.json", record)
    return record
