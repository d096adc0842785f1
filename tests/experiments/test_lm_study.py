"""The Tiny Shakespeare study driver's verdicts (docs/results/lm/run_study.py), on made-up seed values."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "results" / "lm" / "run_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("lm_run_study", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cells(**rows):
    return {(k.replace("_", "-"), 2e-4): {"val_losses": v} for k, v in rows.items()}


def verdicts(study, c):
    return {x["id"].split("@")[0]: x["verdict"] for x in study.claims(c, [2e-4])}


def test_verdicts_follow_table1_rules(study):
    c = cells(float32=[2.40, 2.41, 2.42], r_bf16=[2.55, 2.56, 2.54], sr_bf16=[2.41, 2.40, 2.42],
              bc_ternary=[2.45, 2.46, 2.44], sr_ternary=[2.70, 2.72, 2.71])
    v = verdicts(study, c)
    assert v == {"r-stalls": "reproduced", "sr-beats-r": "reproduced", "bc-beats-sr": "reproduced",
                 "bc-close": "reproduced"}
    # R better than float, BC worse than SR: the other way round, significantly
    c = cells(float32=[2.55, 2.56, 2.54], r_bf16=[2.40, 2.41, 2.42], sr_bf16=[2.41, 2.40, 2.42],
              bc_ternary=[2.80, 2.81, 2.82], sr_ternary=[2.70, 2.72, 2.71])
    v = verdicts(study, c)
    assert v["r-stalls"] == "not reproduced" and v["bc-beats-sr"] == "not reproduced" and v["bc-close"] == "not reproduced"
    c = cells(float32=[2.40, 2.50, 2.45], r_bf16=[2.44, 2.47, 2.46])  # overlapping seeds; rows missing
    out = {x["id"].split("@")[0]: x for x in study.claims(c, [2e-4])}
    assert out["r-stalls"]["verdict"] == "inconclusive"
    assert out["bc-close"]["verdict"] is None and "two seeds" in out["bc-close"]["reason"]


def test_rows_cover_the_issue(study):
    keys = {k for k, *_ in study.ROWS}
    assert {"float32", "bf16", "r-bf16", "sr-bf16", "sr-fp8", "sr-bf16-state", "bc-ternary", "sr-ternary"} <= keys
