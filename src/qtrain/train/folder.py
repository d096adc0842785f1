"""What a new run may do to its ``--out`` folder: never overwrite files that belong to no run,
and leave nothing behind when it is refused before its first checkpoint.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> check_not_foreign(d)  # an empty folder takes a run
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

from .checkpoint import CHECKPOINT
from .config import TrainConfig
from .provenance import PROVENANCE_KEYS

EARLY_FILES = ("config.json", "metrics.jsonl", "metrics.csv")  # what a run writes before its first checkpoint


def check_not_foreign(out_dir: Path) -> None:
    """Refuse a new run in a folder whose ``summary.json`` or ``config.json`` a run would overwrite
    but which holds no run (a ``config.json`` of a run stopped before its first save is ours)."""
    out_dir = Path(out_dir)
    if (out_dir / "summary.json").exists():
        raise ValueError(f"{out_dir} holds a summary.json but no {CHECKPOINT}; qtrain would overwrite it: "
                         "pick a new --out")
    cfg_path = out_dir / "config.json"
    if cfg_path.exists():
        try:
            values = json.loads(cfg_path.read_bytes().decode("utf-8"))
        except (ValueError, OSError):
            values = None
        if not isinstance(values, dict) or set(values) - set(PROVENANCE_KEYS) != {f.name for f in dataclasses.fields(TrainConfig)}:
            raise ValueError(f"{cfg_path} is not a qtrain run's config.json and would be overwritten; pick a new --out")


def discard_unstarted(out_dir: Path) -> None:
    """Remove what a run wrote into ``out_dir`` before its first checkpoint (none: nothing to do)."""
    out_dir = Path(out_dir)
    if (out_dir / CHECKPOINT).exists():
        return
    for name in EARLY_FILES:
        with contextlib.suppress(OSError):
            (out_dir / name).unlink()
