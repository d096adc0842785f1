r"""Verdicts on the poster's claims, with their uncertainty over seeds and the power of each test.

Every claim gets one of ``"reproduced"``, ``"not reproduced"``, ``"inconclusive"``, ``"holds by
construction"``, or no verdict (``None``) with the ``reason`` (a missing method, or one seed, so
no standard error). Table 1 rules **[choice]**, all at the one-sided level
:data:`~qtrain.experiments.stats.ALPHA` = 0.05:

* a **comparison** ("A has lower error than B") is a Welch t-test of :math:`\bar B - \bar A` over
  the seeds: reproduced when it is positive at that level, not reproduced when it is significantly
  negative, inconclusive otherwise; the effect is printed as difference of means ± SE;
* a **threshold** ("BC-ADAM never changes more than 20%") is a one-sample t-test of the seed mean
  against the poster's number, with the same three outcomes;
* the **ordering** tests each adjacent pair of the poster's order: reproduced when every pair is
  in order at level α (an intersection-union test, size ≤ α), not reproduced when some pair is
  reversed at α/k (Bonferroni over the k pairs), inconclusive otherwise;
* **"BC-ADAM is comparable to ADAM"** is judged against a margin fixed before the runs from the
  poster's numbers alone. In the poster's column the claim is made for a gap BC − ADAM that is a
  share :math:`\rho = (\mathrm{BC} - \mathrm{ADAM})/(\mathrm{SR} - \mathrm{ADAM})` of SR's gap
  (VGG-9: 2.39/15.36 = 0.156). "Comparable" here means: BC's gap is at most that share of SR's
  gap measured at this scale, i.e. the contrast
  :math:`C = (\mathrm{BC} - \mathrm{ADAM}) - \rho\,(\mathrm{SR} - \mathrm{ADAM})` is not positive.
  Not reproduced when :math:`C > 0` significantly, reproduced when :math:`C < 0` significantly
  (Welch-Satterthwaite t-test, one-sided, level α each), inconclusive otherwise. Why SR's gap and
  not the poster's relative gap (BC − ADAM)/ADAM = 0.30: at a small scale ADAM's error is inflated
  by the model and the short schedule, and 0.30 of it (12 points at 40% error) would call BC
  "comparable" while it sits two thirds of the way to SR, the opposite of the poster's contrast
  between BC and the fully quantized methods; SR's gap measures what quantizing costs at the
  scale at hand. An absolute 2.39 points ignores the scale altogether;
* a claim **holds by construction** when the method could not have done otherwise: "R-ADAM barely
  moves" when the recorded largest base step :math:`\max|s_t|` stayed below the half level gap
  :math:`\Delta/2` in every quantized tensor, epoch and seed (then :math:`Q_d` returns every
  weight to its level at every step; ``max_abs_base_step`` and ``half_level_gap`` in
  ``metrics.jsonl``). It is counted apart from "reproduced".

Every test also reports its **minimum detectable effect** (``mde``,
:mod:`qtrain.experiments.power`): the difference it detects with 80% power at its level, given
the seeds and the spreads measured.

>>> cells = [{"column": "c", "row": r, "test_errors": e, "weight_change_means": None, "weight_change_peaks": None,
...           "paper_column": "c10-vgg9"} for r, e in (("sr-adam", [10.0, 11.0, 12.0]), ("r-adam", [20.0, 21.0, 22.0]))]
>>> [(c.id, c.verdict) for c in table1_claims(cells) if c.id.endswith(("sr-beats-r", "explore"))]
[('c-sr-beats-r', 'reproduced'), ('c-explore', None)]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from . import power, stats
from .poster import ORDER, PAPER, ROWS

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
BY_CONSTRUCTION = "holds by construction"
BC_MAX_CHANGED = 20.0  # % of weights; the poster: "BC-ADAM never changes more than 20%" [poster]
R_MAX_CHANGED = 1.0    # % of weights that "barely moves" means for R-ADAM [choice]
RANDOM_SIGNS = 50.0    # % of binary weights that differ from their start when the final signs are random
ONE_SEED = "one seed per method, so no standard error: run with --seeds 2 or more"


@dataclass
class Claim:
    id: str
    claim: str                     # the poster's statement, one line
    source: str                    # where on the poster
    figure: str                    # file (relative to the report) that shows it
    measured: str
    poster: str
    verdict: Optional[str]         # reproduced | not reproduced | inconclusive | holds by construction | None
    rule: str                      # how the verdict is decided [choice]
    effect: Optional[str] = None   # comparisons: difference of means ± SE and the test
    reason: Optional[str] = None   # why there is no verdict
    mde: Optional[float] = None    # smallest difference detected with 80% power (points); ordering: largest pair's
    mde_pairs: Optional[Dict[str, float]] = None  # ordering: per adjacent pair


def from_bool(ok: bool) -> str:
    """Verdict of a deterministic check (the theory claims)."""
    return REPRODUCED if ok else NOT_REPRODUCED


def tally(claims: Sequence[dict]) -> Dict[str, int]:
    """Counts of every kind of verdict."""
    v = [c["verdict"] for c in claims]
    return {"reproduced": v.count(REPRODUCED), "not_reproduced": v.count(NOT_REPRODUCED),
            "inconclusive": v.count(INCONCLUSIVE), "by_construction": v.count(BY_CONSTRUCTION),
            "no_verdict": v.count(None), "total": len(v)}


def headline(counts: Dict[str, int], what: str = "claims") -> str:
    return (f"{counts['total']} {what}: {counts['reproduced']} reproduced, {counts['not_reproduced']} not reproduced, "
            f"{counts['inconclusive']} inconclusive, {counts.get('by_construction', 0)} by construction, "
            f"{counts['no_verdict']} without a verdict")


def pm(values: Optional[Sequence[float]], digits: int = 2) -> str:
    """``mean ± SE`` of a list of per-seed values (just the value for one seed)."""
    if not values:
        return "–"
    se = stats.sem(values)
    return f"{stats.mean(values):.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def _mde(test: dict) -> float:
    return power.mde(test["se"], test["df"])


def _effect(test: dict, what: str, unit: str, claimed: str = "greater", stat: str = "Welch t") -> str:
    """The estimate, its SE and the test, worded by the direction observed (poster's or reversed),
    with the minimum detectable effect; zero spread is said as such, not as t = ±inf."""
    d, se = test["diff"], test["se"]
    if se == 0:
        return (f"{what} = {d:+.2f} {unit} with no spread over the seeds (every seed gave the same value), so "
                "there is no t-statistic: the sign decides")
    if d == 0:
        where, p = "no difference", 0.5
    else:
        where = "poster's direction" if (d > 0) == (claimed == "greater") else "reversed"
        p = test["p_greater"] if d > 0 else test["p_less"]
    return (f"{what} = {d:+.2f} ± {se:.2f} {unit} ({where}; {stat} = {test['t']:.2f}, df {test['df']:.1f}, "
            f"one-sided p = {p:.2g}); detectable with 80% power: {_mde(test):.2f} {unit}")


def _three_way(direction: Optional[str], claimed: str) -> str:
    if direction is None:
        return INCONCLUSIVE
    return REPRODUCED if direction == claimed else NOT_REPRODUCED


def _missing(cells: dict, rows: Sequence[str], key: str) -> Optional[str]:
    lacking = [ROWS[r] for r in rows if not (cells.get(r) or {}).get(key)]
    return f"needs {', '.join(ROWS[r] for r in rows)} in this column; missing: {', '.join(lacking)}" if lacking else None


def comparison(cells: dict, lo: str, hi: str, key: str, unit: str):
    """(verdict, effect, reason, mde) of the claim 'mean ``key`` of row ``lo`` < that of row ``hi``'."""
    reason = _missing(cells, (lo, hi), key)
    if reason:
        return None, None, reason, None
    test = stats.welch(cells[lo][key], cells[hi][key])
    if test is None:
        return None, None, ONE_SEED, None
    return (_three_way(stats.decide(test), "greater"), _effect(test, f"{ROWS[hi]} − {ROWS[lo]}", unit), None,
            _mde(test))


def threshold(cells: dict, row: str, key: str, limit: float, unit: str):
    """(verdict, effect, reason, mde) of the claim 'mean ``key`` of ``row`` < ``limit``'."""
    reason = _missing(cells, (row,), key)
    if reason:
        return None, None, reason, None
    test = stats.one_sample(cells[row][key], limit)
    if test is None:
        return None, None, ONE_SEED, None
    return (_three_way(stats.decide(test), "less"), _effect(test, f"mean − {limit:g}", unit, "less", "t"), None,
            _mde(test))


def ordering(cells: dict):
    """(verdict, effect, reason, measured order, mde per pair) of 'ADAM < BC-ADAM < Big SR-ADAM < SR-ADAM < R-ADAM'."""
    present = [r for r in ORDER if (cells.get(r) or {}).get("test_errors")]
    measured = sorted(present, key=lambda r: stats.mean(cells[r]["test_errors"]))
    if len(present) < 2:
        has = ", ".join(ROWS[r] for r in present) or "none"
        return None, None, f"an ordering needs at least two methods in this column (has: {has})", measured, None
    pairs = list(zip(present, present[1:]))
    tests = [stats.welch(cells[a]["test_errors"], cells[b]["test_errors"]) for a, b in pairs]
    if any(t is None for t in tests):
        return None, None, ONE_SEED, measured, None
    k = len(pairs)
    dirs = [stats.decide(t, stats.ALPHA, stats.ALPHA / k) for t in tests]
    verdict = (REPRODUCED if all(d == "greater" for d in dirs) else
               NOT_REPRODUCED if "less" in dirs else INCONCLUSIVE)
    effect = "; ".join(_effect(t, f"{ROWS[b]} − {ROWS[a]}", "points") for (a, b), t in zip(pairs, tests))
    return verdict, effect, None, measured, {f"{ROWS[b]} − {ROWS[a]}": _mde(t) for (a, b), t in zip(pairs, tests)}


def step_summary(method: str, histories: Sequence[list], seeds: Sequence[int]) -> Optional[dict]:
    r"""Over every quantized tensor, epoch and seed: the largest ratio of the recorded base step
    :math:`\max|s_t|` to the half level gap :math:`\Delta/2`, where it happened, and ``cannot_move``:
    R with every ratio < 1, or SR/BC with no step at all, could not change any weight. ``None``
    without a full record (float runs; runs made before the record; float-format grids)."""
    if method not in ("r", "sr", "bc") or not histories or not all(histories):
        return None
    top = None
    for seed, history in zip(seeds, histories):
        for row in history:
            steps, gaps = row.get("max_abs_base_step"), row.get("half_level_gap")
            if not steps or not gaps or any(gaps.get(n) in (None, 0) for n in steps):
                return None
            for name, s in steps.items():
                if top is None or s / gaps[name] > top["ratio"]:
                    top = {"ratio": s / gaps[name], "max_abs_base_step": s, "half_level_gap": gaps[name],
                           "layer": name, "epoch": row["epoch"], "seed": seed}
    if top is None:
        return None
    top["cannot_move"] = top["ratio"] < 1.0 if method == "r" else top["max_abs_base_step"] == 0.0
    return top


def _step_text(rec: dict) -> str:
    below = "below" if rec["ratio"] < 1 else "not below"
    return (f"the largest base step over every tensor, epoch and seed, max|s_t| = {rec['max_abs_base_step']:.3g} "
            f"({rec['layer']}, epoch {rec['epoch']}, seed {rec['seed']}), is {below} the half level gap "
            f"Δ/2 = {rec['half_level_gap']:.3g} a weight must cross to change level")


def _wc_note(cs: dict) -> str:
    binary = all((c or {}).get("grid", "binary") == "binary" for c in cs.values())
    return f"; random signs would give {RANDOM_SIGNS:g}% (binary weights)" if binary else ""


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
    r_rec = (cs.get("r-adam") or {}).get("step_record")
    r_frozen = bool(r_rec and r_rec["cannot_move"])
    out = []
    v, eff, why, measured, pairs = ordering(cs)
    out.append(Claim(f"{col}-order", "Error ordering ADAM < BC-ADAM < Big SR-ADAM < SR-ADAM < R-ADAM", src, fig,
                     " < ".join(ROWS[r] for r in measured) + " by mean error; errors (mean ± SE) " + (err(*ORDER) or "–"),
                     pap(*ORDER), v, f"each adjacent pair of the poster's order: {level} for 'in order' (all pairs), "
                     f"level {stats.ALPHA}/k (k pairs, Bonferroni) for 'reversed'", eff, why,
                     max(pairs.values()) if pairs else None, pairs))
    out.append(_bc_close(col, cs, paper, paper_col, src, fig, err))
    v, eff, why, m = comparison(cs, "sr-adam", "r-adam", "test_errors", "points")
    frozen_note = (f"; R-ADAM's conv weights never moved ({_step_text(r_rec)}): SR-ADAM is compared with a net "
                   "whose quantized weights keep their random initial values"
                   if r_frozen else "")
    out.append(Claim(f"{col}-sr-beats-r", "SR-ADAM outperforms R-ADAM", src, fig,
                     (err("sr-adam", "r-adam") or "–") + frozen_note,
                     pap("sr-adam", "r-adam"), v, f"SR error < R error: {level}", eff, why, m))
    v, eff, why, m = comparison(cs, "big-sr-adam", "sr-adam", "test_errors", "points")
    out.append(Claim(f"{col}-big-batch", "A bigger batch makes SR greedier and lowers its error",
                     f"{src}; big-batch effect", fig, err("big-sr-adam", "sr-adam") or "–", pap("big-sr-adam", "sr-adam"),
                     v, f"Big SR error < SR error: {level}", eff, why, m))
    v, eff, why, m = comparison(cs, "bc-adam", "sr-adam", "weight_change_means", "points of % changed")
    out.append(Claim(f"{col}-explore", "SR-ADAM changes more weights than BC-ADAM (it explores)",
                     "Exploration vs exploitation figure", wfig,
                     "% of quantized weights changed at the end (mean over layers): "
                     + wc("weight_change_means", "sr-adam", "bc-adam") + _wc_note(cs),
                     "SR-ADAM up to ~40%, BC-ADAM < 20%", v,
                     f"SR's mean % changed > BC's: {level} (the direction, as worded; the magnitudes are shown "
                     "beside the poster's)", eff, why, m))
    v, eff, why, m = threshold(cs, "bc-adam", "weight_change_peaks", BC_MAX_CHANGED, "points")
    out.append(Claim(f"{col}-bc-under-20", f"BC-ADAM never changes more than {BC_MAX_CHANGED:g}% of the weights",
                     "Exploration vs exploitation figure", wfig,
                     "largest % changed of any layer at any epoch: " + wc("weight_change_peaks", "bc-adam") + _wc_note(cs),
                     f"BC-ADAM < {BC_MAX_CHANGED:g}%", v,
                     f"per seed, the peak over layers and epochs of % weights changed; seed mean < {BC_MAX_CHANGED:g} "
                     f"by a one-sided one-sample t-test at level {stats.ALPHA}", eff, why, m))
    rule = (f"holds by construction when the recorded largest base step stays below the half level gap in every "
            f"tensor, epoch and seed (Q_d then returns every weight to its level); otherwise 'barely' = under "
            f"{R_MAX_CHANGED:g}%: per seed, the final % changed (mean over layers); seed mean < {R_MAX_CHANGED:g} by "
            f"a one-sided one-sample t-test at level {stats.ALPHA}")
    measured = "% of quantized weights changed at the end (mean over layers): " + wc("weight_change_means", "r-adam")
    if r_frozen:
        v, eff, why, m = BY_CONSTRUCTION, f"{_step_text(r_rec)}: no step could change a weight", None, None
        measured += f"; {_step_text(r_rec)}"
    else:
        v, eff, why, m = threshold(cs, "r-adam", "weight_change_means", R_MAX_CHANGED, "points")
        if r_rec:
            measured += f"; {_step_text(r_rec)}: steps could change weights"
        elif cs.get("r-adam"):
            measured += "; no step record (runs made before it was kept), so 'by construction' cannot be judged"
    out.append(Claim(f"{col}-r-still", "R-ADAM barely moves", "Exploration vs exploitation figure", wfig,
                     measured, "R-ADAM barely moves", v, rule, eff, why, m))
    return out


def bc_margin_share(paper_col: str) -> Optional[float]:
    """ρ = (BC − ADAM)/(SR − ADAM) in the poster's column: the share of SR's gap it calls comparable."""
    p = {r: PAPER.get(r, {}).get(paper_col) for r in ("adam", "bc-adam", "sr-adam")}
    if None in p.values() or p["sr-adam"] <= p["adam"]:
        return None
    return (p["bc-adam"] - p["adam"]) / (p["sr-adam"] - p["adam"])


def _bc_close(col, cs, paper, paper_col, src, fig, err) -> Claim:
    rho = bc_margin_share(paper_col)
    rho_text = f"{rho:.3f}" if rho is not None else "?"
    rule = (f"comparable = BC's gap to ADAM at most the share ρ of SR's gap that the poster's column shows "
            f"(ρ = (BC − ADAM)/(SR − ADAM) = {rho_text} on {paper_col}): the contrast (BC − ADAM) − ρ(SR − ADAM) by a "
            f"Welch-Satterthwaite t-test, not reproduced when significantly > 0, reproduced when significantly < 0 "
            f"(one-sided, level {stats.ALPHA} each), inconclusive otherwise")
    poster = (f"BC − ADAM = {paper['bc-adam'] - paper['adam']:.2f} points ({paper_col}; SR − ADAM = "
              f"{paper['sr-adam'] - paper['adam']:.2f}, ρ = {rho_text})" if rho is not None else "–")
    claim = Claim(f"{col}-bc-close", "BC-ADAM is comparable to full-precision ADAM", src, fig,
                  err("adam", "bc-adam", "sr-adam") or "–", poster, None, rule)
    claim.reason = _missing(cs, ("adam", "bc-adam", "sr-adam"), "test_errors")
    if rho is None and not claim.reason:
        claim.reason = f"the poster's column {paper_col} has no ADAM, BC-ADAM and SR-ADAM errors to fix the margin"
    if claim.reason:
        return claim
    a, b, s = (cs[r]["test_errors"] for r in ("adam", "bc-adam", "sr-adam"))
    test = stats.contrast([b, a, s], [1.0, rho - 1.0, -rho])
    gap, sr_gap = stats.welch(a, b), stats.welch(a, s)
    if test is None:
        claim.reason = ONE_SEED
        return claim
    lo, hi = power.interval(gap["diff"], gap["se"], gap["df"])
    margin = rho * sr_gap["diff"]
    claim.measured += (f"; BC − ADAM = {gap['diff']:.2f} points, 95% interval [{lo:.2f}, {hi:.2f}], against the "
                       f"margin ρ(SR − ADAM) = {rho:.3f} × {sr_gap['diff']:.2f} = {margin:.2f} points "
                       f"(poster: {paper['bc-adam'] - paper['adam']:.2f})")
    claim.verdict = {"greater": NOT_REPRODUCED, "less": REPRODUCED, None: INCONCLUSIVE}[stats.decide(test)]
    claim.effect = _effect(test, "(BC − ADAM) − ρ(SR − ADAM)", "points", "less", "t")
    claim.mde = _mde(test)
    return claim
