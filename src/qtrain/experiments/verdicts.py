r"""Verdicts on the poster's claims, with their uncertainty over seeds.

Every claim gets one of ``"reproduced"``, ``"not reproduced"``, ``"inconclusive"``, or no verdict
(``None``) with the ``reason`` (a missing method, or one seed, so no standard error). Table 1 rules
**[choice]**, all at the one-sided level :data:`~qtrain.experiments.stats.ALPHA` = 0.05:

* a **comparison** ("A has lower error than B") is a Welch t-test of :math:`\bar B - \bar A` over
  the seeds: reproduced when it is positive at that level, not reproduced when it is significantly
  negative, inconclusive otherwise; the effect is printed as difference of means ± SE;
* a **threshold** ("BC-ADAM never changes more than 20%") is a one-sample t-test of the seed mean
  against the poster's number, with the same three outcomes;
* the **ordering** tests each adjacent pair of the poster's order: reproduced when every pair is
  in order at level α (an intersection-union test, size ≤ α), not reproduced when some pair is
  reversed at α/k (Bonferroni over the k pairs), inconclusive otherwise.

>>> cells = [{"column": "c", "row": r, "test_errors": e, "weight_change_means": None, "weight_change_peaks": None,
...           "paper_column": "c10-vgg9"} for r, e in (("sr-adam", [10.0, 11.0, 12.0]), ("r-adam", [20.0, 21.0, 22.0]))]
>>> [(c.id, c.verdict) for c in table1_claims(cells) if c.id.endswith(("sr-beats-r", "explore"))]
[('c-sr-beats-r', 'reproduced'), ('c-explore', None)]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from . import stats
from .poster import ORDER, PAPER, ROWS

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
BC_MAX_CHANGED = 20.0  # % of weights; the poster: "BC-ADAM never changes more than 20%" [poster]
R_MAX_CHANGED = 1.0    # % of weights that "barely moves" means for R-ADAM [choice]
ONE_SEED = "one seed per method, so no standard error: run with --seeds 2 or more"


@dataclass
class Claim:
    id: str
    claim: str                     # the poster's statement, one line
    source: str                    # where on the poster
    figure: str                    # file (relative to the report) that shows it
    measured: str
    poster: str
    verdict: Optional[str]         # reproduced | not reproduced | inconclusive | None (no verdict)
    rule: str                      # how the verdict is decided [choice]
    effect: Optional[str] = None   # comparisons: difference of means ± SE and the test
    reason: Optional[str] = None   # why there is no verdict


def from_bool(ok: bool) -> str:
    """Verdict of a deterministic check (the theory claims)."""
    return REPRODUCED if ok else NOT_REPRODUCED


def tally(claims: Sequence[dict]) -> Dict[str, int]:
    """Headline counts of every kind of verdict."""
    v = [c["verdict"] for c in claims]
    return {"reproduced": v.count(REPRODUCED), "not_reproduced": v.count(NOT_REPRODUCED),
            "inconclusive": v.count(INCONCLUSIVE), "no_verdict": v.count(None), "total": len(v)}


def headline(counts: Dict[str, int]) -> str:
    return (f"{counts['total']} claims: {counts['reproduced']} reproduced, {counts['not_reproduced']} not reproduced, "
            f"{counts['inconclusive']} inconclusive, {counts['no_verdict']} without a verdict")


def pm(values: Optional[Sequence[float]], digits: int = 2) -> str:
    """``mean ± SE`` of a list of per-seed values (just the value for one seed)."""
    if not values:
        return "–"
    se = stats.sem(values)
    return f"{stats.mean(values):.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def _effect(test: dict, what: str, unit: str) -> str:
    return (f"{what} = {test['diff']:+.2f} ± {test['se']:.2f} {unit} (Welch t = {test['t']:.2f}, df {test['df']:.1f}, "
            f"p = {test['p_greater']:.2g} one-sided, poster's direction)")


def _three_way(direction: Optional[str], claimed: str) -> str:
    if direction is None:
        return INCONCLUSIVE
    return REPRODUCED if direction == claimed else NOT_REPRODUCED


def _missing(cells: dict, rows: Sequence[str], key: str) -> Optional[str]:
    lacking = [ROWS[r] for r in rows if not (cells.get(r) or {}).get(key)]
    return f"needs {', '.join(ROWS[r] for r in rows)} in this column; missing: {', '.join(lacking)}" if lacking else None


def comparison(cells: dict, lo: str, hi: str, key: str, unit: str):
    """(verdict, effect, reason) of the claim 'mean ``key`` of row ``lo`` < that of row ``hi``'."""
    reason = _missing(cells, (lo, hi), key)
    if reason:
        return None, None, reason
    test = stats.welch(cells[lo][key], cells[hi][key])
    if test is None:
        return None, None, ONE_SEED
    return (_three_way(stats.decide(test), "greater"), _effect(test, f"{ROWS[hi]} − {ROWS[lo]}", unit), None)


def threshold(cells: dict, row: str, key: str, limit: float, unit: str):
    """(verdict, effect, reason) of the claim 'mean ``key`` of ``row`` < ``limit``'."""
    reason = _missing(cells, (row,), key)
    if reason:
        return None, None, reason
    test = stats.one_sample(cells[row][key], limit)
    if test is None:
        return None, None, ONE_SEED
    effect = (f"mean − {limit:g} = {test['diff']:+.2f} ± {test['se']:.2f} {unit} (t = {test['t']:.2f}, "
              f"df {test['df']:.0f}, p = {test['p_less']:.2g} one-sided, poster's direction)")
    return _three_way(stats.decide(test), "less"), effect, None


def ordering(cells: dict):
    """(verdict, effect, reason, measured order) of 'ADAM < BC-ADAM < Big SR-ADAM < SR-ADAM < R-ADAM'."""
    present = [r for r in ORDER if (cells.get(r) or {}).get("test_errors")]
    measured = sorted(present, key=lambda r: stats.mean(cells[r]["test_errors"]))
    if len(present) < 2:
        has = ", ".join(ROWS[r] for r in present) or "none"
        return None, None, f"an ordering needs at least two methods in this column (has: {has})", measured
    pairs = list(zip(present, present[1:]))
    tests = [stats.welch(cells[a]["test_errors"], cells[b]["test_errors"]) for a, b in pairs]
    if any(t is None for t in tests):
        return None, None, ONE_SEED, measured
    k = len(pairs)
    dirs = [stats.decide(t, stats.ALPHA, stats.ALPHA / k) for t in tests]
    verdict = (REPRODUCED if all(d == "greater" for d in dirs) else
               NOT_REPRODUCED if "less" in dirs else INCONCLUSIVE)
    effect = "; ".join(_effect(t, f"{ROWS[b]} − {ROWS[a]}", "points") for (a, b), t in zip(pairs, tests))
    return verdict, effect, None, measured


def table1_claims(cells: List[dict]) -> List[Claim]:
    """The Table 1 claims of every column of a table (``table1.json``'s ``cells``)."""
    by: Dict[str, Dict[str, dict]] = {}
    for c in cells:
        by.setdefault(c["column"], {})[c["row"]] = c
    claims = []
    for col, cs in by.items():
        claims += _column_claims(col, cs)
    return claims


def _column_claims(col: str, cs: Dict[str, dict]) -> List[Claim]:
    paper_col = next(iter(cs.values()))["paper_column"]
    paper = {r: PAPER.get(r, {}).get(paper_col) for r in ORDER}
    fig, wfig, src = "table1/table1_error.png", "table1/table1_weight_change.png", f"Table 1 ({col})"

    def err(*rows):
        return ", ".join(f"{ROWS[r]} {pm(cs[r]['test_errors'])}" for r in rows if (cs.get(r) or {}).get("test_errors"))

    def wc(key, *rows):
        return ", ".join(f"{ROWS[r]} {pm(cs[r][key], 1)}%" for r in rows if (cs.get(r) or {}).get(key)) or "–"

    def pap(*rows):
        return f"{paper_col}: " + ", ".join(f"{ROWS[r]} {paper[r]:.2f}" for r in rows) if all(paper[r] for r in rows) else "–"

    level = f"one-sided Welch t-test over seeds at level {stats.ALPHA}"
    out = []
    v, eff, why, measured = ordering(cs)
    out.append(Claim(f"{col}-order", "Error ordering ADAM < BC-ADAM < Big SR-ADAM < SR-ADAM < R-ADAM", src, fig,
                     " < ".join(ROWS[r] for r in measured) + " by mean error; errors (mean ± SE) " + (err(*ORDER) or "–"),
                     pap(*ORDER), v, f"each adjacent pair of the poster's order: {level} for 'in order' (all pairs), "
                     f"level {stats.ALPHA}/k (k pairs, Bonferroni) for 'reversed'", eff, why))
    v, eff, why = _bc_close(cs)
    out.append(Claim(f"{col}-bc-close", "BC-ADAM is comparable to full-precision ADAM", src, fig,
                     err("adam", "bc-adam", "sr-adam") or "–",
                     f"BC − ADAM = {paper['bc-adam'] - paper['adam']:.2f} points" if paper["adam"] else "–", v,
                     "BC's gap to ADAM is below half of SR's: ½(SR + ADAM) − BC > 0 by a "
                     f"Welch-Satterthwaite t-test of that contrast at level {stats.ALPHA}", eff, why))
    v, eff, why = comparison(cs, "sr-adam", "r-adam", "test_errors", "points")
    out.append(Claim(f"{col}-sr-beats-r", "SR-ADAM outperforms R-ADAM", src, fig, err("sr-adam", "r-adam") or "–",
                     pap("sr-adam", "r-adam"), v, f"SR error < R error: {level}", eff, why))
    v, eff, why = comparison(cs, "big-sr-adam", "sr-adam", "test_errors", "points")
    out.append(Claim(f"{col}-big-batch", "A bigger batch makes SR greedier and lowers its error",
                     f"{src}; big-batch effect", fig, err("big-sr-adam", "sr-adam") or "–", pap("big-sr-adam", "sr-adam"),
                     v, f"Big SR error < SR error: {level}", eff, why))
    v, eff, why = comparison(cs, "bc-adam", "sr-adam", "weight_change_means", "points of % changed")
    out.append(Claim(f"{col}-explore", "SR-ADAM changes more weights than BC-ADAM (it explores)",
                     "Exploration vs exploitation figure", wfig,
                     "% of quantized weights changed at the end (mean over layers): "
                     + wc("weight_change_means", "sr-adam", "bc-adam"), "SR-ADAM up to ~40%, BC-ADAM < 20%",
                     v, f"SR's mean % changed > BC's: {level}", eff, why))
    v, eff, why = threshold(cs, "bc-adam", "weight_change_peaks", BC_MAX_CHANGED, "points")
    out.append(Claim(f"{col}-bc-under-20", f"BC-ADAM never changes more than {BC_MAX_CHANGED:g}% of the weights",
                     "Exploration vs exploitation figure", wfig,
                     "largest % changed of any layer at any epoch: " + wc("weight_change_peaks", "bc-adam"),
                     f"BC-ADAM < {BC_MAX_CHANGED:g}%", v,
                     f"per seed, the peak over layers and epochs of % weights changed; seed mean < {BC_MAX_CHANGED:g} "
                     f"by a one-sided one-sample t-test at level {stats.ALPHA}", eff, why))
    v, eff, why = threshold(cs, "r-adam", "weight_change_means", R_MAX_CHANGED, "points")
    out.append(Claim(f"{col}-r-still", "R-ADAM barely moves", "Exploration vs exploitation figure", wfig,
                     "% of quantized weights changed at the end (mean over layers): " + wc("weight_change_means", "r-adam"),
                     "R-ADAM barely moves", v,
                     f"'barely' = under {R_MAX_CHANGED:g}%: per seed, the final % changed (mean over layers); "
                     f"seed mean < {R_MAX_CHANGED:g} by a one-sided one-sample t-test at level {stats.ALPHA}", eff, why))
    return out


def _bc_close(cs: dict):
    reason = _missing(cs, ("adam", "bc-adam", "sr-adam"), "test_errors")
    if reason:
        return None, None, reason
    test = stats.contrast([cs[r]["test_errors"] for r in ("sr-adam", "adam", "bc-adam")], [0.5, 0.5, -1.0])
    if test is None:
        return None, None, ONE_SEED
    gap = stats.welch(cs["adam"]["test_errors"], cs["bc-adam"]["test_errors"])
    effect = (f"BC − ADAM = {gap['diff']:+.2f} ± {gap['se']:.2f} points; ½(SR + ADAM) − BC = {test['diff']:+.2f} ± "
              f"{test['se']:.2f} (t = {test['t']:.2f}, df {test['df']:.1f}, p = {test['p_greater']:.2g} one-sided, "
              "poster's direction)")
    return _three_way(stats.decide(test), "greater"), effect, None
