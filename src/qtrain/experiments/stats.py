r"""Small-sample statistics for the reproduction verdicts: Welch's t-test and a one-sample t-test.

Pure Python (``math`` only), so reports need no extra dependency. The Student t tail comes from
the regularized incomplete beta function,

.. math::
    P(T_\nu > t) = \tfrac12\, I_{\nu/(\nu + t^2)}\!\left(\tfrac{\nu}{2}, \tfrac12\right) \quad (t \ge 0),

evaluated with Lentz's continued fraction. A **contrast** of group means
:math:`C = \sum_i w_i \bar x_i` has standard error :math:`\mathrm{SE} = \sqrt{\sum_i w_i^2 s_i^2 / n_i}`
and Welch-Satterthwaite degrees of freedom

.. math::
    \nu = \frac{\mathrm{SE}^4}{\sum_i (w_i^2 s_i^2 / n_i)^2 / (n_i - 1)};

Welch's two-sample test is the contrast :math:`\bar b - \bar a` (weights :math:`-1, +1`). Every
test is one-sided at level :data:`ALPHA`: ``p_greater`` = :math:`P(T_\nu \ge C/\mathrm{SE})` under
:math:`C = 0`, ``p_less`` its mirror.

>>> r = welch([10.0, 11.0, 12.0], [20.0, 21.0, 22.0])   # b - a
>>> round(r["diff"], 2), round(r["se"], 3), r["p_greater"] < ALPHA
(10.0, 0.816, True)
>>> decide(r), decide(welch([1.0, 2.0], [2.0, 1.0]))
('greater', None)
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

ALPHA = 0.05  # one-sided level of every Table 1 verdict [choice]


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def sem(xs: Sequence[float]) -> Optional[float]:
    """Standard error of the mean :math:`s/\\sqrt n`; ``None`` for fewer than two values."""
    n = len(xs)
    if n < 2:
        return None
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta :math:`I_x(a, b)` for ``a, b > 0``, ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """:math:`P(T_\\nu > t)` for Student's t with ``df`` > 0 degrees of freedom (``t`` may be ±inf)."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _result(est: float, se: float, df: float) -> Dict[str, float]:
    if se > 0:
        t = est / se
    else:  # no spread in any group: the sign of the estimate decides
        t = math.copysign(math.inf, est) if est != 0 else 0.0
    p_greater = t_sf(t, df) if t != 0 else 0.5
    return {"diff": est, "se": se, "df": df, "t": t, "p_greater": p_greater, "p_less": 1.0 - p_greater if t != 0 else 0.5}


def contrast(groups: Sequence[Sequence[float]], weights: Sequence[float]) -> Optional[Dict[str, float]]:
    """Welch test of :math:`\\sum_i w_i \\bar x_i` against 0; ``None`` when a group has < 2 values."""
    if len(groups) != len(weights):
        raise ValueError(f"{len(groups)} groups but {len(weights)} weights; pass one weight per group")
    if any(len(g) < 2 for g in groups):
        return None
    est = sum(w * mean(g) for w, g in zip(weights, groups))
    parts = [w * w * sem(g) ** 2 for w, g in zip(weights, groups)]
    var = sum(parts)
    denom = sum(p * p / (len(g) - 1) for p, g in zip(parts, groups))
    df = var * var / denom if denom > 0 else float(sum(len(g) - 1 for g in groups))
    return _result(est, math.sqrt(var), df)


def welch(a: Sequence[float], b: Sequence[float]) -> Optional[Dict[str, float]]:
    """Welch's test of :math:`\\bar b - \\bar a` (``diff``); ``None`` when a group has < 2 values."""
    return contrast([a, b], [-1.0, 1.0])


def one_sample(xs: Sequence[float], mu: float) -> Optional[Dict[str, float]]:
    """One-sample t-test of :math:`\\bar x - \\mu` (``df = n - 1``); ``None`` for < 2 values."""
    if len(xs) < 2:
        return None
    return _result(mean(xs) - mu, sem(xs), float(len(xs) - 1))


def decide(result: Optional[Dict[str, float]], alpha: float = ALPHA, alpha_less: Optional[float] = None) -> Optional[str]:
    """``"greater"`` / ``"less"`` when the estimate is significantly > 0 / < 0 at one-sided level
    ``alpha`` (``alpha_less`` for the lower side, default ``alpha``), else ``None``."""
    if result is None:
        return None
    if result["p_greater"] < alpha:
        return "greater"
    if result["p_less"] < (alpha if alpha_less is None else alpha_less):
        return "less"
    return None
