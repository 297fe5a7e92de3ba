"""Paired comparisons over seeds: is an attack's delta different from a baseline's, seed by seed?

A benchmark cell has one number per seed; two attacks measured on the same seeds (same data, same victim
initialization and order) are compared by the paired t-test on their per-seed differences. The p-value is
Student's t distribution's two-sided tail, computed from the regularized incomplete beta function (Lentz's
continued fraction), so no statistics package is needed.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence


def _beta_fraction(a: float, b: float, x: float, iterations: int = 300, eps: float = 1e-15) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iterations + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and x in [0, 1]."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x = {x} is outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def paired_t_test(values: Sequence[float], baseline: Sequence[float]) -> Dict[str, Optional[float]]:
    """The paired t-test of ``values`` against ``baseline`` (same seeds, same order): n, the mean and sample
    standard deviation of the differences, t and the two-sided p (None where n < 2; p 0 or 1 when every
    difference is the same)."""
    if len(values) != len(baseline):
        raise ValueError(f"{len(values)} values against {len(baseline)} baseline values: pair them by seed")
    diffs = [float(v) - float(b) for v, b in zip(values, baseline)]
    n = len(diffs)
    out: Dict[str, Optional[float]] = {"n": n, "mean_diff": sum(diffs) / n if n else None, "std_diff": None,
                                       "t": None, "p": None}
    if n < 2:
        return out
    mean = out["mean_diff"]
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    out["std_diff"] = std
    if std == 0.0:
        out["t"], out["p"] = (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
        return out
    t = mean / (std / math.sqrt(n))
    out["t"], out["p"] = t, t_two_sided_p(t, n - 1)
    return out
