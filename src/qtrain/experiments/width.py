r"""The width trend: does BC-ADAM's gap to ADAM shrink as the model grows while SR-ADAM's stays?

``qtrain width-trend --out DIR`` trains the ``width`` scale (ADAM, BC-ADAM, SR-ADAM on ``smallcnn``
at widths 8, 16, 32, 64; same data, schedule and protocol; :mod:`.table1` runs, resumable) and
writes ``DIR/table1.json`` (cells with ``width``), ``width_trend.json``, ``width_trend.md`` and
``width_trend.png``.

Per width :math:`w` the gaps are Welch differences of seed means, e.g.
:math:`g_{BC}(w) = \bar e_{BC} - \bar e_{ADAM}` with
:math:`\mathrm{SE} = \sqrt{s^2_{BC}/n_{BC} + s^2_{ADAM}/n_{ADAM}}`, Welch-Satterthwaite df and a 95%
interval :math:`g \pm t_{0.975,\nu}\,\mathrm{SE}`. The trend is a weighted least-squares line in
:math:`x = \log_2 w` with weights :math:`1/\mathrm{SE}^2`:
:math:`\hat g(x) = a + b\,(x - \bar x_w)`, :math:`\mathrm{SE}(b) = (\sum_i (x_i - \bar x_w)^2/\mathrm{SE}_i^2)^{-1/2}`
(the SEs taken as known; :math:`\chi^2` of the residuals, with :math:`k - 2` df, says whether a
line describes the points; when :math:`\chi^2/(k-2) > 1` both SEs are widened by
:math:`\sqrt{\chi^2/(k-2)}`, the points scattering about the line more than their SEs allow). The slope :math:`b` is the change of the gap per doubling of the width;
an extrapolation :math:`\hat g(x^*)` carries
:math:`\mathrm{SE} = \sqrt{\mathrm{SE}(a)^2 + (x^* - \bar x_w)^2\,\mathrm{SE}(b)^2}` and assumes the line
holds beyond the widths measured.

>>> cells = [{"row": r, "width": w, "test_errors": [e + d for d in (-0.5, 0.0, 0.5)]}
...          for w, ea, eb, es in ((8, 50, 62, 68), (16, 40, 50, 58), (32, 30, 36, 48))
...          for r, e in (("adam", ea), ("bc-adam", eb), ("sr-adam", es))]
>>> t = trend(cells)
>>> [round(g["diff"], 1) for g in t["gaps"]["bc-adam"]], round(t["fits"]["bc-adam"]["slope"], 2)
([12.0, 10.0, 6.0], -3.0)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional

from .._io import atomic_write_bytes, atomic_write_json
from . import stats
from .poster import PAPER

GAPS = ("bc-adam", "sr-adam")  # each minus ADAM
POSTER_GAP = {r: PAPER[r]["c10-vgg9"] - PAPER["adam"]["c10-vgg9"] for r in GAPS}  # VGG-9: 2.39 and 15.36 points
EXTRAPOLATE_TO = 128  # the width one doubling past the widest measured [choice]


def t_crit(df: float, level: float = 0.975) -> float:
    """Student t quantile by bisection on :func:`stats.t_sf` (``df`` > 0)."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1.0 - stats.t_sf(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _gap(base: List[float], other: List[float], width: int) -> dict:
    d = {"width": width, "diff": stats.mean(other) - stats.mean(base), "se": None, "df": None, "ci95": None,
         "n": [len(base), len(other)]}
    w = stats.welch(base, other)
    if w is not None and w["se"] > 0:
        half = t_crit(w["df"]) * w["se"]
        d.update(se=w["se"], df=w["df"], ci95=[w["diff"] - half, w["diff"] + half])
    return d


def fit(points: List[dict]) -> Optional[dict]:
    """Weighted least-squares line of the gap against log2(width); ``None`` with fewer than two points with an SE."""
    pts = [(math.log2(p["width"]), p["diff"], p["se"]) for p in points if p["se"]]
    if len(pts) < 2:
        return None
    w = [1.0 / s ** 2 for _, _, s in pts]
    xbar = sum(wi * x for wi, (x, _, _) in zip(w, pts)) / sum(w)
    sxx = sum(wi * (x - xbar) ** 2 for wi, (x, _, _) in zip(w, pts))
    if sxx == 0:
        return None
    a = sum(wi * y for wi, (_, y, _) in zip(w, pts)) / sum(w)
    b = sum(wi * (x - xbar) * y for wi, (x, y, _) in zip(w, pts)) / sxx
    chi2 = sum(wi * (y - a - b * (x - xbar)) ** 2 for wi, (x, y, _) in zip(w, pts))
    widen = max(1.0, math.sqrt(chi2 / (len(pts) - 2))) if len(pts) > 2 else 1.0
    se_a, se_b = widen * math.sqrt(1.0 / sum(w)), widen * math.sqrt(1.0 / sxx)
    xs = math.log2(EXTRAPOLATE_TO)
    pred, se_pred = a + b * (xs - xbar), math.sqrt(se_a ** 2 + (xs - xbar) ** 2 * se_b ** 2)
    return {"slope": b, "slope_se": se_b, "slope_p_less": 0.5 * math.erfc(-b / se_b / math.sqrt(2)),  # z-test: SEs as known
            "intercept_at_mean": a, "x_mean": xbar, "chi2": chi2, "chi2_df": len(pts) - 2, "se_widened_by": widen, "points": len(pts),
            "extrapolated_width": EXTRAPOLATE_TO, "extrapolated_gap": pred, "extrapolated_se": se_pred}


def trend(cells: List[dict]) -> dict:
    """Per width, BC − ADAM and SR − ADAM (mean, SE, 95% interval) and a line through each against log2(width)."""
    by: Dict[int, Dict[str, list]] = {}
    for c in cells:
        if c.get("width") is not None and c.get("test_errors"):
            by.setdefault(int(c["width"]), {})[c["row"]] = list(c["test_errors"])
    widths = sorted(by)
    errors = {w: {r: {"mean": stats.mean(e), "se": stats.sem(e), "n": len(e)} for r, e in by[w].items()} for w in widths}
    gaps = {r: [_gap(by[w]["adam"], by[w][r], w) for w in widths if "adam" in by[w] and r in by[w]] for r in GAPS}
    return {"widths": widths, "errors": errors, "gaps": gaps, "fits": {r: fit(g) for r, g in gaps.items()},
            "poster_gap": POSTER_GAP}


def _pm(g: dict) -> str:
    return f"{g['diff']:+.2f}" + ("" if g["se"] is None else f" ± {g['se']:.2f} [{g['ci95'][0]:+.1f}, {g['ci95'][1]:+.1f}]")


def markdown(t: dict) -> str:
    lab = {"adam": "ADAM", "bc-adam": "BC-ADAM", "sr-adam": "SR-ADAM"}
    lines = ["# Width trend: gaps to ADAM against the width of `smallcnn`", "",
             "Test error (%) mean ± SE over seeds (n), and the gaps BC − ADAM and SR − ADAM in points, "
             "± SE [95% interval] (Welch).", "",
             "| width | " + " | ".join(lab.values()) + " | BC − ADAM | SR − ADAM |", "|---|---|---|---|---|---|"]
    for w in t["widths"]:
        e = t["errors"][w]
        errs = [("–" if r not in e else f"{e[r]['mean']:.2f}" + ("" if e[r]["se"] is None else f" ± {e[r]['se']:.2f}")
                 + f" ({e[r]['n']})") for r in lab]
        gaps = [next((_pm(g) for g in t["gaps"][r] if g["width"] == w), "–") for r in GAPS]
        lines.append(f"| {w} | " + " | ".join(errs + gaps) + " |")
    lines += ["", f"Poster (VGG-9): BC − ADAM = {POSTER_GAP['bc-adam']:.2f}, SR − ADAM = {POSTER_GAP['sr-adam']:.2f} points.", ""]
    for r in GAPS:
        f = t["fits"][r]
        name = f"{lab[r]} − ADAM"
        if f is None:
            lines.append(f"- {name}: no trend (needs two widths with at least two seeds per method).")
            continue
        lines.append(f"- {name}: {f['slope']:+.2f} ± {f['slope_se']:.2f} points per doubling of the width "
                     f"(weighted least squares on log2(width), {f['points']} widths, χ² = {f['chi2']:.1f} on "
                     f"{f['chi2_df']} df" + (f", SEs widened x{f['se_widened_by']:.2f} for the scatter" if f["se_widened_by"] > 1 else "")
                     + (": two widths, so nothing checks that a line fits" if f["chi2_df"] == 0 else "")
                     + f"); extrapolated to width {f['extrapolated_width']}: {f['extrapolated_gap']:+.1f} "
                     f"± {f['extrapolated_se']:.1f} points, assuming the line holds past the widths measured.")
    return "\n".join(lines) + "\n"


def run_width_trend(out: Path, data_dir: Optional[str] = None, seeds: Optional[int] = None, log=print, **kwargs) -> dict:
    """Train (or collect) the ``width`` scale into ``out`` and write the trend's table, figure and JSON."""
    from ..plots.width import gaps_vs_width
    from .table1 import run_table1

    out = Path(out)
    report = run_table1("width", out, data_dir=data_dir, seeds=seeds, log=log, **kwargs)
    t = trend(report["cells"])
    atomic_write_json(out / "width_trend.json", t)
    atomic_write_bytes(out / "width_trend.md", markdown(t).encode())
    if t["widths"]:
        gaps_vs_width(t, out / "width_trend.png")
    return t
