r"""Power of the Table 1 tests: the smallest difference they detect, and the seeds a difference needs.

Every Table 1 test is a t-test of a contrast :math:`C = \sum_i w_i \bar x_i` with standard error
:math:`\mathrm{SE} = \sqrt{\sum_i w_i^2 s_i^2 / n_i}` and Welch-Satterthwaite degrees of freedom
:math:`\nu` (:mod:`qtrain.experiments.stats`). When the true contrast is :math:`\delta`, the
statistic :math:`T = \hat C / \mathrm{SE}` follows (to Welch's approximation) a noncentral
:math:`t_\nu` with noncentrality :math:`\lambda = \delta/\mathrm{SE}`, so a one-sided test at level
:math:`\alpha` has power

.. math::
    \pi(\delta) = P\big(T_{\nu,\lambda} > t_{1-\alpha,\nu}\big)
    \qquad \text{(two-sided: } P(T_{\nu,\lambda} > t_{1-\alpha/2,\nu}) + P(T_{\nu,\lambda} < -t_{1-\alpha/2,\nu})\text{)}.

The **minimum detectable effect** is :math:`\mathrm{MDE} = \lambda^\ast\,\mathrm{SE}`, with
:math:`\lambda^\ast` solving :math:`\pi = 0.8`, the spreads :math:`s_i` taken as measured. With
no spread at all (:math:`\mathrm{SE} = 0`) any difference is detected: MDE 0. For planning,
:func:`seeds_needed` finds the smallest common :math:`n` whose test reaches that power at a given
:math:`\delta`, from pilot spreads. ``tests/experiments/test_power.py`` checks :func:`mde` against
a Monte-Carlo simulation of Welch's test.

>>> round(mde(1.0, 1e6), 3)   # normal limit, one-sided 5%: z_0.95 + z_0.8 = 1.645 + 0.842
2.486
>>> seeds_needed([1.0, 1.0], [-1.0, 1.0], 2.0)   # two groups, sd 1: 2 points need 4 seeds each
4
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

from .stats import ALPHA

POWER = 0.8  # the power every minimum detectable effect is stated for [choice]


def _scipy():
    try:
        from scipy import optimize, stats
    except ImportError:
        raise ImportError("power and mde need scipy: pip install 'qtrain[full]'") from None
    return optimize, stats


def power(delta: float, se: float, df: float, alpha: float = ALPHA, sided: int = 1) -> float:
    r"""Power :math:`\pi(\delta)` of the t-test of a contrast with standard error ``se`` and ``df``
    degrees of freedom, one-sided (``sided=1``, effect in the tested direction) or two-sided."""
    _, st = _scipy()
    if sided not in (1, 2):
        raise ValueError(f"sided={sided!r} must be 1 or 2")
    if se == 0:
        return 1.0 if delta != 0 else alpha  # no spread: any non-zero difference is seen
    ncp, crit = delta / se, st.t.ppf(1 - alpha / sided, df)
    p = st.nct.sf(crit, df, ncp)
    return float(p + (st.nct.cdf(-crit, df, ncp) if sided == 2 else 0.0))


def mde(se: float, df: float, alpha: float = ALPHA, target: float = POWER, sided: int = 1) -> float:
    """The smallest difference the test detects with power ``target`` (0 when ``se`` is 0)."""
    optimize, _ = _scipy()
    if not (0 < alpha < 1 and alpha / sided < target < 1):
        raise ValueError(f"alpha={alpha!r} and target power={target!r} must satisfy 0 < alpha/sided < power < 1")
    if se == 0:
        return 0.0
    hi = 1.0
    while power(hi, 1.0, df, alpha, sided) < target:
        hi *= 2.0
    lam = optimize.brentq(lambda x: power(x, 1.0, df, alpha, sided) - target, 0.0, hi, xtol=1e-10)
    return lam * se


def contrast_se_df(sds: Sequence[float], ns: Sequence[int], weights: Sequence[float]) -> Tuple[float, float]:
    """SE and Welch-Satterthwaite df of :math:`\\sum_i w_i \\bar x_i` for groups of spreads ``sds``, sizes ``ns``."""
    parts = [w * w * s * s / n for s, n, w in zip(sds, ns, weights)]
    var = sum(parts)
    denom = sum(p * p / (n - 1) for p, n in zip(parts, ns))
    df = var * var / denom if denom > 0 else float(sum(n - 1 for n in ns))
    return math.sqrt(var), df


def seeds_needed(sds: Sequence[float], weights: Sequence[float], delta: float, alpha: float = ALPHA,
                 target: float = POWER, sided: int = 1, max_seeds: int = 1000) -> Optional[int]:
    """Smallest seeds per group (>= 2) whose test detects ``delta`` with power ``target``, the spreads
    being ``sds``; ``None`` when more than ``max_seeds`` would be needed."""
    if not delta > 0:
        raise ValueError(f"difference={delta!r} must be > 0 (points), e.g. --difference 2")

    def enough(n: int) -> bool:
        se, df = contrast_se_df(sds, [n] * len(sds), weights)
        return power(delta, se, df, alpha, sided) >= target

    if enough(2):
        return 2
    lo, hi = 2, 4
    while not enough(hi):
        if hi >= max_seeds:
            return None
        lo, hi = hi, min(2 * hi, max_seeds)
    while hi - lo > 1:  # power rises with n: bisect to the first n that is enough
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def cheapest_seeds(sds: Sequence[float], weights: Sequence[float], delta: float, costs: Sequence[float],
                   ns_now: Optional[Sequence[int]] = None, alpha: float = ALPHA, target: float = POWER,
                   sided: int = 1, max_seeds: int = 200) -> Optional[List[int]]:
    r"""Seeds per group, each at least ``ns_now`` (and 2), whose test detects ``delta`` with power
    ``target`` at the least cost of the seeds added, :math:`\sum_i (n_i - n_i^{\rm now})\,c_i`;
    ``None`` when no allocation within ``max_seeds`` per group is enough.

    Unlike :func:`seeds_needed` (one common :math:`n`), the groups may differ: a noisy or cheap
    group gets more seeds. Exhaustive over allocations, pruned by the best cost found, so the
    answer is the exact minimum (the first found among equal costs).

    >>> cheapest_seeds([1.0, 1.0], [-1.0, 1.0], 2.0, costs=[1.0, 1.0])   # equal costs: equal seeds
    [4, 4]
    >>> cheapest_seeds([2.0, 1.0], [-1.0, 1.0], 2.0, costs=[1.0, 9.0])  # the noisy, cheap group grows
    [13, 4]
    """
    k = len(sds)
    if not (len(weights) == len(costs) == k) or (ns_now is not None and len(ns_now) != k):
        raise ValueError(f"sds, weights, costs and ns_now need one entry per group ({k}), "
                         f"got {len(weights)} weights, {len(costs)} costs")
    if any(not c > 0 for c in costs):
        raise ValueError(f"costs={list(costs)!r} must be > 0 (e.g. seconds per run)")
    if not delta > 0:
        raise ValueError(f"difference={delta!r} must be > 0 (points), e.g. --difference 2")
    start = [max(2, int(n)) for n in (ns_now or [2] * k)]
    top = max(max_seeds, *start)
    best: List = [math.inf, None]

    def enough(ns: List[int]) -> bool:
        se, df = contrast_se_df(sds, ns, weights)
        return power(delta, se, df, alpha, sided) >= target

    def search(prefix: List[int], cost: float) -> None:
        i = len(prefix)
        if i == k - 1:  # the last group: bisect for its fewest seeds within the best cost so far
            room = (best[0] - cost) / costs[i]
            hi = top if room == math.inf else min(top, start[i] + math.ceil(room) - 1)
            if hi < start[i] or not enough(prefix + [hi]):
                return
            lo = start[i] - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if enough(prefix + [mid]) else (mid, hi)
            best[:] = [cost + (hi - start[i]) * costs[i], prefix + [hi]]
            return
        for n in range(start[i], top + 1):
            c = cost + (n - start[i]) * costs[i]
            if c >= best[0]:
                return
            if enough(prefix + [n] + [top] * (k - i - 1)):  # else no completion of this prefix suffices
                search(prefix + [n], c)

    if enough(start):
        return start
    if not enough([top] * k):
        return None
    search([], 0.0)
    return best[1]


def interval(est: float, se: float, df: float, level: float = 0.95) -> Tuple[float, float]:
    """Two-sided ``level`` confidence interval :math:`\\hat C \\pm t_{(1+\\mathrm{level})/2,\\nu}\\,\\mathrm{SE}`."""
    _, st = _scipy()
    half = 0.0 if se == 0 else float(st.t.ppf((1 + level) / 2, df)) * se
    return est - half, est + half
