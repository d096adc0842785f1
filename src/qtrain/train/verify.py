"""Check that a finished run reproduces bit for bit on this machine: ``qtrain verify RUN_DIR``.

:func:`verify_run` retrains the first ``K`` epochs of the run in ``RUN_DIR`` from its
``config.json`` (same seed, same settings, the same learning-rate schedule as the full run) in a
temporary folder and compares every field of those rows of ``metrics.jsonl`` bit for bit (the
JSON numbers' exact text, which is the shortest repr of the float: equal text, equal bits),
nested fields (per-layer ``weight_change``, ``max_abs_base_step``, ...) one by one. The
wall-clock fields (``seconds``, ``train_seconds``, ``images_per_s``) are not compared. Fields the
stored run lacks (recorded by a newer qtrain) are listed, not counted as differences. It also
says whether this machine's CPU model and flags, CPU capability, torch version and threads, and
the data's digest, match what the run recorded (:mod:`qtrain.train.provenance`): bits are expected to agree only
where they do.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from .loop import load_run_config, run
from .metrics import read_metrics
from .provenance import machine_differences

WALL_CLOCK = ("seconds", "train_seconds", "images_per_s")  # differ on every run: not compared


def _flat(row: dict, prefix: str = "") -> Dict[str, object]:
    out: Dict[str, object] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def compare_rows(stored: List[dict], retrained: List[dict]) -> dict:
    """Field-by-field comparison of metrics rows: ``differences`` (epoch, field, stored, retrained),
    ``compared`` (fields compared) and ``new_fields`` (in the retrained rows only)."""
    diffs, new, compared = [], set(), 0
    for a, b in zip(stored, retrained):
        fa, fb = _flat(a), _flat(b)
        for key in sorted(set(fa) | set(fb)):
            if key in WALL_CLOCK:
                continue
            if key not in fa:
                new.add(key)
                continue
            compared += 1
            if key not in fb or json.dumps(fa[key]) != json.dumps(fb[key]):
                diffs.append({"epoch": a.get("epoch"), "field": key, "stored": fa[key],
                              "retrained": fb.get(key, "(missing)")})
    return {"differences": diffs, "compared": compared, "new_fields": sorted(new)}


def _read_json(path: Path) -> Optional[dict]:
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def verify_run(run_dir, epochs: int = 1, data_dir: Optional[str] = None) -> dict:
    """Retrain the first ``epochs`` epochs of the run in ``run_dir`` and compare (see the module doc).

    Returns ``identical``, the comparison (:func:`compare_rows`), and ``machine`` / ``data``: what
    the run recorded, what this machine has, and whether they match (``None``: not recorded).
    Raises ``ValueError`` / ``OSError`` (one line) for a folder that is not a finished run, an
    ``epochs`` it does not have, or data that cannot be read.
    """
    run_dir = Path(run_dir)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"--epochs {epochs!r} must be a positive integer, e.g. --epochs 1")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder; pass the RUN_DIR of a run (it holds config.json)")
    cfg = load_run_config(run_dir)
    stored = read_metrics(run_dir)
    if len(stored) < epochs:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} holds {len(stored)} finished epoch(s); pass --epochs "
                         f"{max(len(stored), 1)} or less" + ("" if stored else " after the run finishes an epoch"))
    summary = _read_json(run_dir / "summary.json") or {}
    if (summary.get("world_size") or 1) > 1:
        raise ValueError(f"{run_dir} was trained by {summary['world_size']} processes; verify it under torchrun with "
                         "as many (this command retrains in one process)")
    recorded = _read_json(run_dir / "config.json") or {}
    device = summary.get("device") or cfg.device
    check = dataclasses.replace(cfg, epochs=epochs, lr_milestones=cfg.milestones(), progress=False,
                                checkpoint_minutes=0.0, tensorboard=False, download=False,
                                data_dir=data_dir if data_dir is not None else cfg.data_dir,
                                device="cpu" if device == "cpu" else cfg.device)
    with tempfile.TemporaryDirectory(prefix="qtrain-verify-") as tmp:
        run(check.validate(), Path(tmp))
        retrained = read_metrics(Path(tmp))
        here = _read_json(Path(tmp) / "config.json") or {}
    result = compare_rows(stored[:epochs], retrained[:epochs])
    m_run, m_here = recorded.get("machine"), here.get("machine")
    d_run, d_here = recorded.get("data_sha256"), here.get("data_sha256")
    differ = machine_differences(m_run, m_here) if m_run and m_here else None  # None: a record is missing
    result.update(identical=not result["differences"], epochs=epochs, run_dir=str(run_dir), wall_clock=list(WALL_CLOCK),
                  machine={"run": m_run, "here": m_here, "same": None if differ is None else not differ,
                           "differ": differ or []},
                  data={"run": d_run, "here": d_here, "same": None if not d_run or not d_here else d_run == d_here})
    return result


def _machine_text(m: Optional[dict]) -> str:
    if not m:
        return "not recorded"
    return (f"{m.get('capability')}, torch {m.get('torch')}, {m.get('threads')} thread(s) ({m.get('cpu')}"
            + (f", GPU {m['gpu']}" if m.get("gpu") else "") + ")")


def _short(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 24 else text[:23] + "…"


def report_text(result: dict) -> str:
    """What ``qtrain verify`` prints: the differences (if any), the machine and data checks, the result."""
    lines = [f"verify {result['run_dir']}: retrained epoch(s) 1..{result['epochs']} here in a temporary folder", ""]
    if result["differences"]:
        lines += ["| epoch | field | stored | retrained |", "|---|---|---|---|"]
        lines += [f"| {d['epoch']} | {d['field']} | {_short(d['stored'])} | {_short(d['retrained'])} |"
                  for d in result["differences"]]
        lines.append("")
    m, d = result["machine"], result["data"]
    same = {True: "the same", False: "DIFFERENT", None: "unknown (not recorded)"}
    differ = m.get("differ") or []
    lines += [f"machine: run {_machine_text(m['run'])}; here {_machine_text(m['here'])}: {same[m['same']]} "
              + (f"({', '.join(differ)})" if differ else "(CPU model and flags, capability, torch, threads, GPU)"),
              f"data: run sha256 {d['run'] or 'not recorded'}; here {d['here'] or 'none'}: {same[d['same']]}"]
    if result["new_fields"]:
        lines.append(f"fields the stored run lacks (newer qtrain; not compared): {', '.join(result['new_fields'])}")
    verdict = ("identical" if result["identical"] else f"{len(result['differences'])} field(s) differ") + \
        f": {result['compared']} field(s) compared bit for bit; wall-clock fields ({', '.join(result['wall_clock'])}) not compared"
    if not result["identical"] and m["same"] is False:
        verdict += (f"; this machine's {', '.join(differ)} differ(s) from the run's, which can change the bits"
                    + (" (another CPU model can, even at the same capability)" if differ == ["cpu"] else ""))
    lines.append(f"result: {verdict}")
    return "\n".join(lines) + "\n"
