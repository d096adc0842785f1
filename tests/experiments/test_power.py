"""Minimum detectable effects and seed planning, checked against a simulation of Welch's test."""
import numpy as np
import pytest

from qtrain.experiments import power as pw
from qtrain.experiments import stats

st = pytest.importorskip("scipy.stats")


def _welch_rejects(a, b, alpha, sided):
    """Welch's test of mean(b) - mean(a) on each row of a, b (vectorised), one- or two-sided."""
    va, vb = a.var(axis=1, ddof=1) / a.shape[1], b.var(axis=1, ddof=1) / b.shape[1]
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.shape[1] - 1) + vb ** 2 / (b.shape[1] - 1))
    t = (b.mean(axis=1) - a.mean(axis=1)) / se
    if sided == 1:
        return t > st.t.ppf(1 - alpha, df)
    return np.abs(t) > st.t.ppf(1 - alpha / 2, df)


@pytest.mark.parametrize("na, nb, sa, sb, sided", [(3, 3, 1.9, 0.3, 1), (3, 3, 1.0, 1.0, 1), (5, 8, 1.0, 2.0, 1),
                                                   (4, 6, 1.5, 0.5, 2)])
def test_mde_agrees_with_a_simulation_within_10_percent(na, nb, sa, sb, sided):
    # The simulated MDE: the shift at which Welch's test rejects in 80% of 40,000 fixed-seed draws
    # (common random numbers, so the rejection rate rises with the shift and bisection finds it).
    # Its Monte-Carlo error is about 1% of the MDE; the 10% bound leaves room for Welch's df
    # approximation, which the computed MDE takes at the true spreads.
    rng = np.random.default_rng(16)
    a, b = rng.normal(0, sa, (40_000, na)), rng.normal(0, sb, (40_000, nb))
    se, df = pw.contrast_se_df([sa, sb], [na, nb], [-1.0, 1.0])
    computed = pw.mde(se, df, sided=sided)
    lo, hi = 0.0, 4 * computed
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _welch_rejects(a, b + mid, 0.05, sided).mean() < 0.8 else (lo, mid)
    assert computed == pytest.approx(lo, rel=0.10)


def test_power_and_mde_are_inverse_and_match_the_normal_limit():
    for df in (2.1, 4.0, 30.0):
        d = pw.mde(0.7, df)
        assert pw.power(d, 0.7, df) == pytest.approx(0.8, abs=1e-8)
    z = st.norm.ppf(0.95) + st.norm.ppf(0.8)
    assert pw.mde(1.0, 1e7) == pytest.approx(z, rel=1e-4)
    assert pw.mde(1.0, 1e7, sided=2) == pytest.approx(st.norm.ppf(0.975) + st.norm.ppf(0.8), rel=1e-3)
    assert pw.mde(0.0, 4.0) == 0.0 and pw.power(1.0, 0.0, 4.0) == 1.0
    with pytest.raises(ValueError, match="sided"):
        pw.power(1.0, 1.0, 3.0, sided=3)


def test_mde_uses_the_welch_test_of_the_verdicts():
    a, b = [39.4, 39.4, 39.9], [47.6, 53.2, 47.6]
    test = stats.welch(a, b)
    se, df = pw.contrast_se_df([np.std(a, ddof=1), np.std(b, ddof=1)], [3, 3], [-1.0, 1.0])
    assert se == pytest.approx(test["se"]) and df == pytest.approx(test["df"])


def test_seeds_needed_is_the_first_n_with_enough_power():
    n = pw.seeds_needed([1.9, 0.3], [-1.0, 1.0], 2.0)
    se, df = pw.contrast_se_df([1.9, 0.3], [n, n], [-1.0, 1.0])
    se1, df1 = pw.contrast_se_df([1.9, 0.3], [n - 1, n - 1], [-1.0, 1.0])
    assert pw.power(2.0, se, df) >= 0.8 > pw.power(2.0, se1, df1)
    assert pw.seeds_needed([0.0, 0.0], [-1.0, 1.0], 2.0) == 2
    assert pw.seeds_needed([100.0, 100.0], [-1.0, 1.0], 0.01, max_seeds=50) is None
    with pytest.raises(ValueError, match="difference"):
        pw.seeds_needed([1.0], [1.0], 0.0)


def _brute_cheapest(sds, weights, delta, costs, ns_now, cap):
    """Every allocation up to ``cap`` seeds per group: the cheapest with 80% power (first among ties)."""
    import itertools
    found = None
    for ns in itertools.product(*[range(n, cap + 1) for n in ns_now]):
        se, df = pw.contrast_se_df(sds, list(ns), weights)
        if pw.power(delta, se, df) >= 0.8:
            cost = sum((n - m) * c for n, m, c in zip(ns, ns_now, costs))
            if found is None or cost < found[0] - 1e-9:
                found = (cost, list(ns))
    return found


@pytest.mark.parametrize("sds, weights, costs, ns_now", [
    ([1.78, 1.29], [-1.0, 1.0], [5600.0, 870.0], [5, 5]),
    ([2.0, 1.0], [-1.0, 1.0], [1.0, 9.0], [2, 2]),
    ([0.5, 2.5], [-1.0, 1.0], [3.0, 1.0], [4, 2]),
    ([2.37, 0.25, 1.29], [1.0, -0.5, -0.5], [810.0, 877.0, 875.0], [5, 5, 5]),
    ([1.5, 1.5, 1.5], [1.0, -0.7, -0.3], [1.0, 2.0, 3.0], [2, 2, 2]),
])
def test_cheapest_seeds_is_the_minimum_cost_of_an_exhaustive_search(sds, weights, costs, ns_now):
    got = pw.cheapest_seeds(sds, weights, 2.0, costs, ns_now)
    cost, _ = _brute_cheapest(sds, weights, 2.0, costs, ns_now, cap=22)
    se, df = pw.contrast_se_df(sds, got, weights)
    assert pw.power(2.0, se, df) >= 0.8 and all(n >= m for n, m in zip(got, ns_now))
    assert sum((n - m) * c for n, m, c in zip(got, ns_now, costs)) == pytest.approx(cost)


def test_cheapest_seeds_costs_no_more_than_a_common_seed_count_and_checks_its_input():
    sds, w, costs = [1.9, 0.3], [-1.0, 1.0], [1.0, 1.0]
    n = pw.seeds_needed(sds, w, 2.0)
    got = pw.cheapest_seeds(sds, w, 2.0, costs)
    assert sum(got) - 4 <= 2 * n - 4 and got[1] < got[0]  # the quiet group needs fewer seeds
    assert pw.cheapest_seeds(sds, w, 2.0, costs, ns_now=[40, 40]) == [40, 40]  # already enough: add nothing
    assert pw.cheapest_seeds([100.0, 100.0], w, 0.01, costs, max_seeds=50) is None
    with pytest.raises(ValueError, match="costs"):
        pw.cheapest_seeds(sds, w, 2.0, [1.0, 0.0])
    with pytest.raises(ValueError, match="one entry per group"):
        pw.cheapest_seeds(sds, w, 2.0, [1.0])
