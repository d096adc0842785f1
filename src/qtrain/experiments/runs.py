"""Reading finished runs back for a report, trusting nothing that a damaged file could change.

* :func:`read_summary` -- ``summary.json``, checked field by field (a mapping; numbers where
  numbers belong); anything else is one line naming the file and the fix.
* :func:`run_history` -- the per-epoch rows from the run's ``checkpoint.pt`` (digest-checked:
  the source of truth), not from ``metrics.jsonl``; a run without a checkpoint falls back to
  ``metrics.jsonl`` read strictly: a damaged line is refused in one line, never skipped, so a
  flipped byte cannot silently change a verdict.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional

from ..train.checkpoint import CHECKPOINT, check_history, load_checkpoint

_FIX = "delete it and run the same command again (a finished run's summary is rebuilt from its checkpoint)"
# summary.json fields a report reads, and their types (None allowed where a run may lack the value)
_NUMBER = (int, float)
_FIELDS = {"test_error": (_NUMBER, True), "seconds": (_NUMBER, False), "batch_size": (int, False),
           "epochs": (int, False), "model": (str, False), "data": (str, False), "weight_change": (dict, True),
           "weight_change_mean": (_NUMBER, True), "best_test_error": (_NUMBER, True), "n_test": (int, True),
           "config": (dict, True)}


def read_summary(run_dir: Path) -> dict:
    """``run_dir/summary.json``, checked; one-line ``ValueError`` naming the file otherwise."""
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, OSError) as e:  # not UTF-8, not JSON (truncated), unreadable
        raise ValueError(f"{path} is damaged ({' '.join(str(e).split())[:80]}); {_FIX}") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path} holds {json.dumps(summary)[:20]}, not a run summary; {_FIX}")
    for key, (kind, optional) in _FIELDS.items():
        v = summary.get(key)
        if v is None and (optional and key in summary or key in ("config", "n_test", "best_test_error",
                                                                 "weight_change_mean", "weight_change")):
            continue
        bad = isinstance(v, bool) or not isinstance(v, kind) or (isinstance(v, float) and not math.isfinite(v))
        if bad or (key == "weight_change" and not all(isinstance(x, _NUMBER) for x in v.values())):
            raise ValueError(f"{path}: field {key!r} is {json.dumps(v)[:30] if key in summary else 'missing'}; {_FIX}")
    return summary


def run_history(run_dir: Path) -> List[dict]:
    """The run's per-epoch metrics rows: from ``checkpoint.pt`` when it exists (its digest is
    checked), else from ``metrics.jsonl`` read strictly (a damaged line is an error)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT
    if ckpt.is_file():
        return load_checkpoint(ckpt, require=("epoch", "history"))["history"]
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            rows.append(json.loads(line.decode("utf-8")))
        except ValueError:
            raise ValueError(f"{path} is damaged at line {i} and {run_dir} has no {CHECKPOINT} to read the history "
                             "from; restore the run folder or delete it and train that run again") from None
    check_history(rows, str(path), "restore the run folder or delete it and train that run again")
    return rows


def run_machines(results: List[dict]) -> List[dict]:
    """The distinct (machine, data digest) records of the runs' ``summary.json``, with how many runs each."""
    seen: Dict[str, dict] = {}
    for r in results:
        for s in r["summaries"]:
            rec = {"machine": s.get("machine"), "data_sha256": s.get("data_sha256")}
            key = json.dumps(rec, sort_keys=True)
            seen.setdefault(key, dict(rec, runs=0))["runs"] += 1
    return list(seen.values())


def provenance_text(machines: List[dict]) -> str:
    """One sentence: where the runs ran, and when their numbers can be expected to agree bit for bit."""
    parts = []
    for m in machines:
        mm = m.get("machine")
        where = ("machine not recorded (runs made before it was)" if not mm else
                 f"{mm.get('cpu')}, CPU capability {mm.get('capability')}, torch {mm.get('torch')}, "
                 f"{mm.get('threads')} thread(s)" + (f", GPU {mm['gpu']}" if mm.get("gpu") else ""))
        digest = f"data sha256 {m['data_sha256'][:16]}…" if m.get("data_sha256") else "data digest not recorded"
        parts.append(f"{m['runs']} run(s): {where}; {digest}")
    return ("Where the runs ran: " + "; ".join(parts) + ". Same seed and settings give the same numbers bit for bit on the same CPU "
            "model, capability, torch version and thread count with the same data bytes; another capability (e.g. AVX2 "
            "instead of AVX512), or another CPU model of the same capability, can give other bits. `qtrain verify "
            "RUN_DIR` retrains a run's first epoch and compares.")


def steps_taken(summary: dict, history: list) -> Optional[int]:
    """Optimizer steps a run took: ``summary["steps"]``, or for runs that predate it, per epoch the images
    trained (``images_per_s`` x ``train_seconds``, whole batches only) over the batch size."""
    if summary.get("steps") is not None:
        return summary["steps"]
    if not history or any(r.get("images_per_s") is None or r.get("train_seconds") is None for r in history):
        return None
    return sum(round(r["images_per_s"] * r["train_seconds"] / summary["batch_size"]) for r in history)


def finished_seeds(cell_dir: Path, first: int) -> List[int]:
    """Seeds ``>= first`` with a finished run (``seed<s>/summary.json``) in ``cell_dir``, ascending."""
    found = [int(p.name[4:]) for p in cell_dir.glob("seed*") if p.name[4:].isdigit()] if cell_dir.is_dir() else []
    return sorted(s for s in found if s >= first and (cell_dir / f"seed{s}" / "summary.json").is_file())
