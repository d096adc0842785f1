r"""Seeds for a planned Table 1: from pilot runs, the seeds each test needs to detect a difference.

``qtrain table1 --out PILOT --plan-seeds [--difference D]`` reads ``PILOT/table1.json`` (any
finished ``table1`` or ``reproduce`` run; ``--report-only`` writes one from finished runs) and
prints, per column and test, the seeds now, the power now to detect ``D`` points (default 2),
and the seeds per method that give 80% power (:func:`qtrain.experiments.power.seeds_needed`,
the pilot's per-method spreads taken as the truth, one-sided Welch tests at level 0.05 as in
the verdicts), and the cheapest way there from the seeds already run: seeds per method priced
at each method's mean run time (:func:`qtrain.experiments.power.cheapest_seeds`). Pilot spreads
from 3 seeds are themselves uncertain: treat the answer as an order of magnitude, and re-plan
after the first batch of seeds.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from . import power, stats
from .bigbatch import STEPS_ROW
from .poster import LABELS, ORDER
from .verdicts import bc_margin_share


def planned_tests(cs: Dict[str, dict]) -> List[dict]:
    """The tests of one column as (label, rows, key, weights): what :func:`plan_seeds` sizes."""
    out = [{"test": f"{LABELS[b]} − {LABELS[a]} (ordering pair)", "rows": (a, b), "key": "test_errors", "weights": (-1.0, 1.0)}
           for a, b in zip(ORDER, ORDER[1:])]
    rho = bc_margin_share(next(iter(cs.values())).get("paper_column", ""))
    if rho is not None:
        out.append({"test": "(BC − ADAM) − ρ(SR − ADAM) (BC comparable)", "rows": ("bc-adam", "adam", "sr-adam"),
                    "key": "test_errors", "weights": (1.0, rho - 1.0, -rho)})
    out += [{"test": "R-ADAM − SR-ADAM (SR beats R)", "rows": ("sr-adam", "r-adam"), "key": "test_errors",
             "weights": (-1.0, 1.0)},
            {"test": "SR-ADAM − BC-ADAM, % changed (SR explores)", "rows": ("bc-adam", "sr-adam"),
             "key": "weight_change_means", "weights": (-1.0, 1.0)}]
    if STEPS_ROW in cs:  # the big-batch claim is judged at equal optimizer steps (see bigbatch.py)
        out.append({"test": f"SR-ADAM − {LABELS[STEPS_ROW]} (big batch)", "rows": (STEPS_ROW, "sr-adam"),
                    "key": "test_errors", "weights": (-1.0, 1.0)})
    return out


def _run_seconds(cell: dict) -> float:
    """Mean seconds of one run of a cell (0 when the report has no times): the cost of a seed."""
    n = len(cell.get("seeds") or ())
    return (cell.get("seconds") or 0.0) / n if n else 0.0


def plan_seeds(cells: List[dict], difference: float = 2.0, target: float = power.POWER) -> List[dict]:
    """Per column and test, from pilot runs (``table1.json``'s ``cells``): the seeds now, the power
    now to detect ``difference`` points, and the seeds per method that reach ``target`` power."""
    by: Dict[str, Dict[str, dict]] = {}
    for c in cells:
        by.setdefault(c["column"], {})[c["row"]] = c
    out = []
    for col, cs in by.items():
        for t in planned_tests(cs):
            groups = [(cs.get(r) or {}).get(t["key"]) for r in t["rows"]]
            row = {"column": col, "test": t["test"], "difference": difference}
            if any(not g or len(g) < 2 for g in groups):
                out.append(dict(row, reason="needs at least 2 pilot seeds of " + ", ".join(LABELS[r] for r in t["rows"])))
                continue
            sds = [stats.sem(g) * len(g) ** 0.5 for g in groups]
            ns = [len(g) for g in groups]
            se, df = power.contrast_se_df(sds, ns, t["weights"])
            costs = [_run_seconds(cs[r]) for r in t["rows"]]
            cheapest = None
            if all(costs):
                cheapest = power.cheapest_seeds(sds, t["weights"], difference, costs, ns_now=ns, target=target)
            out.append(dict(row, sds=sds, seeds_now=min(ns), ns_now=ns, power_now=power.power(difference, se, df),
                            seeds_needed=power.seeds_needed(sds, t["weights"], difference, target=target),
                            rows=list(t["rows"]), priced=all(costs), cheapest=cheapest,
                            cheapest_hours=None if cheapest is None else
                            sum((n - m) * c for n, m, c in zip(cheapest, ns, costs)) / 3600))
    return out


def read_pilot(out: Path) -> List[dict]:
    """The cells of ``out/table1.json`` (or ``out/table1/table1.json``, a ``reproduce`` folder)."""
    out = Path(out)
    for path in (out / "table1.json", out / "table1" / "table1.json"):
        if path.is_file():
            try:
                cells = json.loads(path.read_text()).get("cells")
            except (ValueError, AttributeError):
                raise ValueError(f"{path} is not a table1.json report; rewrite it with --report-only") from None
            if not isinstance(cells, list):
                raise ValueError(f"{path} has no cells; rewrite it with --report-only")
            return cells
    raise FileNotFoundError(f"no table1.json in {out} or {out / 'table1'}: run the pilot seeds first "
                            "(qtrain table1 --seeds 3 --out DIR), or write the report of finished runs with --report-only")


def plan_table(plan: List[dict], target: float = power.POWER) -> str:
    """Markdown table of :func:`plan_seeds`."""
    lines = [f"| column | test | spreads (sd per method) | seeds now | power now | seeds for {target:.0%} power "
             "| cheapest from now: seeds per method (added run-hours) |", "|---|---|---|---|---|---|---|"]
    for p in plan:
        if "reason" in p:
            lines.append(f"| {p['column']} | {p['test']} | – | – | – | {p['reason']} | – |")
            continue
        need = p["seeds_needed"] if p["seeds_needed"] is not None else "more than 1000"
        if p.get("cheapest") is None:
            cheap = "more than 200" if p.get("priced") else "– (no run times in the report)"
        else:
            cheap = ", ".join(f"{LABELS[r]} {n}" for r, n in zip(p["rows"], p["cheapest"])) + f" ({p['cheapest_hours']:.1f} h)"
        lines.append(f"| {p['column']} | {p['test']} | {', '.join(f'{s:.2f}' for s in p['sds'])} | "
                     f"{'/'.join(str(n) for n in p['ns_now'])} | {p['power_now']:.2f} | {need} | {cheap} |")
    d = plan[0]["difference"] if plan else 0
    return (f"Seeds per method for {target:.0%} power to detect a difference of {d:g} points (one-sided Welch "
            f"t-tests at level {stats.ALPHA}, the pilot's spreads taken as the truth). The last column keeps "
            "the seeds already run and adds the cheapest ones, priced at each method's mean run time:\n\n"
            + "\n".join(lines) + "\n")
