"""The paired t-test against tabulated Student t quantiles and a hand computation."""
import math

import pytest

from mmguard.metrics.stats import incomplete_beta, paired_t_test, t_two_sided_p


@pytest.mark.parametrize("t, df, p", [(2.7764, 4, 0.05), (4.6041, 4, 0.01), (12.706, 1, 0.05), (2.2281, 10, 0.05),
                                      (1.9600, 1e6, 0.05), (0.0, 4, 1.0), (8.6103, 4, 0.001)])
def test_two_sided_p_matches_t_tables(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)
    assert t_two_sided_p(-t, df) == pytest.approx(p, abs=2e-4)


def test_incomplete_beta_closed_forms():
    for x in (0.1, 0.5, 0.93):
        assert incomplete_beta(1, 1, x) == pytest.approx(x)                  # uniform
        assert incomplete_beta(2, 1, x) == pytest.approx(x * x)
        assert incomplete_beta(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)))


def test_paired_test_by_hand():
    a, b = [0.9, 0.8, 0.85, 0.95, 0.7], [0.5, 0.6, 0.4, 0.55, 0.6]
    diffs = [x - y for x, y in zip(a, b)]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    res = paired_t_test(a, b)
    assert res["n"] == 5 and res["mean_diff"] == pytest.approx(mean) and res["std_diff"] == pytest.approx(sd)
    assert res["t"] == pytest.approx(mean / (sd / math.sqrt(5)))
    assert 0 < res["p"] < 0.05
    assert paired_t_test([1, 2], [1, 2])["p"] == 1.0 and paired_t_test([2, 3], [1, 2])["p"] == 0.0
    assert paired_t_test([1.0], [0.5])["p"] is None
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_t_test([1, 2], [1])
