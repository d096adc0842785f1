r"""The big-batch claim judged at equal optimizer steps.

The poster: "a bigger batch makes SR greedier and lowers its error" (Big SR-ADAM, batch 1024, beats
SR-ADAM, batch 128). The theory's variable is the variance of the gradient in one step: with batch
:math:`B` it falls as :math:`1/B`, so SR's random walk per step is more exploitative. At equal
*epochs*, though, batch :math:`kB` takes :math:`k` times fewer steps (:math:`\lfloor N/kB \rfloor`
per epoch), which mixes the gradient variance with the number of steps. A column that also holds
``big-sr-adam-steps`` (Big SR-ADAM trained for :math:`k` times the epochs, as many steps as SR-ADAM)
has its claim judged on that pair; the equal-epochs pair is reported beside it.

>>> from qtrain.experiments.verdicts import table1_claims
>>> cells = [{"column": "c", "row": r, "test_errors": e, "weight_change_means": None, "weight_change_peaks": None,
...           "paper_column": "c10-vgg9", "steps": n} for r, e, n in (("sr-adam", [50.0, 51.0, 52.0], 5850),
...           ("big-sr-adam", [55.0, 56.0, 57.0], 720), ("big-sr-adam-steps", [44.0, 45.0, 46.0], 5760))]
>>> [c.verdict for c in equal_steps(table1_claims(cells), cells) if c.id == "c-big-batch"]
['reproduced']
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

from . import verdicts
from .poster import LABELS

STEPS_ROW = "big-sr-adam-steps"


def _steps(c: dict) -> str:
    return "" if c.get("steps") is None else f" ({c['steps']:,} steps)"


def equal_steps(claims: Sequence, cells: List[dict]) -> list:
    """``claims`` (:class:`~qtrain.experiments.verdicts.Claim`) with each column's big-batch claim judged
    on Big SR-ADAM at equal steps vs SR-ADAM, where the column has that row; other claims unchanged."""
    by: Dict[str, Dict[str, dict]] = {}
    for c in cells:
        by.setdefault(c["column"], {})[c["row"]] = c
    out = []
    for claim in claims:
        col = claim.id[: -len("-big-batch")] if claim.id.endswith("-big-batch") else None
        cs = by.get(col) if col is not None else None
        if not cs or STEPS_ROW not in cs or "sr-adam" not in cs:
            out.append(claim)
            continue
        # the verdicts' comparison, with the equal-steps run in Big SR-ADAM's place
        swapped = {"big-sr-adam": cs[STEPS_ROW], "sr-adam": cs["sr-adam"]}
        v, eff, why, *power = verdicts.comparison(swapped, "big-sr-adam", "sr-adam", "test_errors", "points")
        _, eff_epochs, why_epochs, *_ = verdicts.comparison(cs, "big-sr-adam", "sr-adam", "test_errors", "points")
        label = LABELS[STEPS_ROW]
        measured = (f"equal steps: {label} {verdicts.pm(cs[STEPS_ROW]['test_errors'])}{_steps(cs[STEPS_ROW])}, "
                    f"SR-ADAM {verdicts.pm(cs['sr-adam']['test_errors'])}{_steps(cs['sr-adam'])}")
        if "big-sr-adam" in cs:
            b = cs["big-sr-adam"]
            measured += (f"; equal epochs (reported, not judged): Big SR-ADAM {verdicts.pm(b['test_errors'])}{_steps(b)}"
                         + (f", {eff_epochs}" if eff_epochs else f" ({why_epochs})"))
        extra = {"mde": power[0]} if power and any(f.name == "mde" for f in dataclasses.fields(claim)) else {}
        out.append(dataclasses.replace(
            claim, **extra, measured=measured, effect=None if eff is None else "equal steps: " + eff.replace("Big SR-ADAM", label),
            verdict=v, reason=why,
            rule=claim.rule.replace("Big SR error", f"{label} error") + "; judged at equal optimizer steps (the theory's "
                 "variable is the gradient variance per step), the equal-epochs pair beside it"))
    return out
