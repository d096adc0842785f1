"""Several training protocols as columns of one Table 1 (the ``cpu`` scale): their description,
the table with the poster's column once, and where the verdicts of the columns disagree.

A column's *protocol* is read from its runs' ``config.json``: the binary scale :math:`s` of the
quantized (conv) weights, their initialisation, the per-layer learning-rate factor, the optimizer,
its learning rate and the decay schedule.

>>> protocol({"scale": "mean", "latent_init": "default", "lr_scale": "none", "optimizer": "adam", "lr": 0.01,
...           "lr_milestones": [8, 11], "lr_gamma": 0.1, "epochs": 15})
's = layer mean |w| at init, default init, ADAM lr 0.01 (x0.1 after epochs 8, 11: final lr 1% of the peak)'
"""
from __future__ import annotations

from typing import Dict, List

from . import verdicts
from .poster import COLUMNS, DISPLAY, LABELS, PAPER

# what a column's name suffix stands for (the cpu scale's two protocols)
NAMES = {"poster": "the poster's protocol", "bc": "BinaryConnect's protocol"}


def protocol(cfg: dict) -> str:
    """One line describing a run's protocol from its config (``{}`` gives ``""``)."""
    if not cfg:
        return ""
    scale = cfg.get("scale", "mean")
    parts = ["s = layer mean |w| at init" if scale == "mean" else f"s = {float(scale):g}",
             "latent weights ~ U(-s, s)" if cfg.get("latent_init") == "uniform" else "default init"]
    if cfg.get("lr_scale", "none") != "none":
        parts.append(f"per-layer lr factor ({cfg['lr_scale']})")
    opt = str(cfg.get("optimizer", "adam")).upper()
    lr, gamma, ms = cfg.get("lr"), cfg.get("lr_gamma", 0.1), cfg.get("lr_milestones")
    sched = ""
    if ms:
        final = gamma ** len([m for m in ms if m < cfg.get("epochs", max(ms) + 1)])
        sched = f" (x{gamma:g} after epochs {', '.join(map(str, ms))}: final lr {100 * final:g}% of the peak)"
    parts.append(f"{opt} lr {lr:g}{sched}" if lr is not None else opt)
    return ", ".join(parts)


def name(column: str) -> str:
    """A column's protocol name from its suffix (``c10-smallcnn-poster`` -> "the poster's protocol")."""
    return NAMES.get(column.rsplit("-", 1)[-1], column)


def table(report: dict, cols: List[str]) -> List[str]:
    """Markdown rows: one measured column per protocol, the poster's column once, the steps per row."""
    first = {col: next(c for c in report["cells"] if c["column"] == col) for col in cols}
    paper_col = first[cols[0]]["paper_column"]
    head = []
    for col in cols:
        c = first[col]
        seeds = sorted({len(x["seeds"]) for x in report["cells"] if x["column"] == col})
        head.append(f"{name(col)} ({c['model']} width {c['width']} on {c['data']}, n_test = {c['n_test'] or '?'}; "
                    + (f"{seeds[0]} seed(s)" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]} seeds by row") + ")")
    head += [f"poster: {COLUMNS.get(paper_col, paper_col)}", "optimizer steps per run"]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for row in DISPLAY:
        by = {c["column"]: c for c in report["cells"] if c["row"] == row}
        if not by:
            continue
        vals = [verdicts.pm(by[col]["test_errors"]) + f" (n = {len(by[col]['test_errors'])})" if col in by else "–"
                for col in cols]
        paper = PAPER.get(row, {}).get(paper_col)
        steps = sorted({c.get("steps") for c in by.values() if c.get("steps") is not None})
        lines.append(f"| {LABELS.get(row, row)} | " + " | ".join(vals) + f" | {'–' if paper is None else f'{paper:.2f}'} | "
                     + (" / ".join(f"{s:,}" for s in steps) or "–") + " |")
    lines += ["", "Protocols: " + "; ".join(f"**{name(col)}** ({col}): {first[col].get('protocol') or '?'}" for col in cols)
              + ". n = seeds in the cell."]
    return lines


def _kind(claim_id: str, cols: List[str]) -> tuple:
    for col in sorted(cols, key=len, reverse=True):
        if claim_id.startswith(col + "-"):
            return col, claim_id[len(col) + 1:]
    return None, claim_id


def of_claim(report: dict, claim_id: str) -> str:
    """`` (the poster's protocol)`` for a claim of a table with several columns, else ``""``."""
    cols = sorted({c["column"] for c in report["cells"]})
    col, _ = _kind(claim_id, cols)
    return f" ({name(col)})" if len(cols) > 1 and col is not None else ""


def agreement(report: dict) -> List[dict]:
    """Per claim of a table with several columns: the verdict in each column, and whether they agree.

    ``split`` is true when the claim is reproduced under one column's protocol and not reproduced
    under another's (a claim that holds under one protocol and fails under the other)."""
    cols = sorted({c["column"] for c in report["cells"]})
    if len(cols) < 2:
        return []
    by: Dict[str, dict] = {}
    for c in report["claims"]:
        col, kind = _kind(c["id"], cols)
        if col is not None:
            by.setdefault(kind, {"claim": c["claim"], "verdicts": {}})["verdicts"][col] = c["verdict"]
    out = []
    for kind, v in by.items():
        got = list(v["verdicts"].values())
        out.append({"id": kind, "claim": v["claim"], "verdicts": v["verdicts"], "agree": len(set(got)) == 1,
                    "split": verdicts.REPRODUCED in got and verdicts.NOT_REPRODUCED in got})
    return out


def agreement_lines(report: dict) -> List[str]:
    """Markdown: the verdicts side by side per protocol, and the claims whose verdicts differ."""
    rows = agreement(report)
    if not rows:
        return []
    width = {c["column"]: c.get("width") or 0 for c in report["cells"]}
    cols = sorted({col for r in rows for col in r["verdicts"]}, key=lambda c: (width.get(c, 0), c))
    lines = ["| claim | " + " | ".join(name(c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['claim']} | " + " | ".join(r["verdicts"].get(c) or "no verdict" for c in cols) + " |")
    split = [r for r in rows if r["split"]]
    differ = [r for r in rows if not r["agree"] and not r["split"]]
    lines.append("")
    for r in split:
        holds = [name(c) for c, v in r["verdicts"].items() if v == verdicts.REPRODUCED]
        fails = [name(c) for c, v in r["verdicts"].items() if v == verdicts.NOT_REPRODUCED]
        lines.append(f"- **Holds under {', '.join(holds)} and fails under {', '.join(fails)}**: {r['claim']}.")
    for r in differ:
        lines.append(f"- Verdicts differ by protocol: {r['claim']} ("
                     + ", ".join(f"{name(c)}: {v or 'no verdict'}" for c, v in r["verdicts"].items()) + ").")
    if not split and not differ:
        lines.append("- Every claim has the same verdict under both protocols.")
    return lines + [""]
