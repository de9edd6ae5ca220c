"""The KS p-value of the drift scoring (column_stats.ks_pvalues): whylogs' ``kstwo.sf(D, n)``,
exact for small n, and at the large-sample sizes within its documented error and always of the
same drift category."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kstwo

from whylogs_songbird import column_stats as C

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/column_stats.py")


def one(d: float, n: float) -> float:
    return float(C.ks_pvalues([d], [n])[0])


def category(p: float) -> str:
    """whylogs' KS thresholds: DRIFT below 0.05, POSSIBLE_DRIFT below 0.15."""
    return "DRIFT" if p < 0.05 else "POSSIBLE_DRIFT" if p < 0.15 else "NO_DRIFT"


def test_ends_of_the_statistic():
    for n in (1, 5, 140, 141, 5000, 2_000_000):
        assert one(0.0, n) == 1.0  # identical distributions
        assert one(1.0, n) == 0.0  # disjoint ones
    # D <= 1/(2n): every sample of n points is at least that far, p = 1
    assert one(0.5 / 1000, 1000) == 1.0
    # D >= 1 - 1/n: p = 2 (1 - D)**n, by hand for n = 200, D = 0.999
    assert one(0.999, 200) == pytest.approx(2 * 0.001**200, rel=1e-12)


def test_small_n_is_the_exact_distribution():
    # n = 1: D_1 = max(U, 1 - U) is uniform on [1/2, 1], so P(D_1 > d) = 2 (1 - d)
    for d in (0.5, 0.6, 0.75, 0.9):
        assert one(d, 1) == pytest.approx(2 * (1 - d), abs=1e-14)
    # n = 2: P(D_2 <= d) = 2 (2d - 1/2)**2 for 1/4 <= d <= 1/2, hand-derived from the order statistics
    for d in (0.3, 0.4, 0.45):
        assert one(d, 2) == pytest.approx(1 - 2 * (2 * d - 0.5) ** 2, abs=1e-12)
    # up to the switch, it is scipy's exact value itself, bit for bit
    d = np.linspace(0.001, 0.999, 57)
    for n in (3, 17, 60, C.KS_EXACT_MAX_N):
        assert np.array_equal(C.ks_pvalues(d, np.full(d.shape, n)), kstwo.sf(d, n))


def test_at_the_switch_both_sides_agree():
    n = C.KS_EXACT_MAX_N
    for c in (0.3, 0.5, 0.9, 1.14, 1.36, 1.6, 2.5):  # sqrt(n) D: p from 1 to below 1e-4
        below, above = one(c / math.sqrt(n), n), one(c / math.sqrt(n + 1), n + 1)
        assert above == pytest.approx(kstwo.sf(c / math.sqrt(n + 1), n + 1), abs=C.KS_PVALUE_MAX_ERROR)
        assert abs(above - below) < 0.01  # one more point hardly moves the distribution


def test_large_n_tends_to_kolmogorov_and_keeps_small_tails():
    # sqrt(n) D -> Kolmogorov's distribution: P(K > 1.36) = 2 sum (-1)**(k-1) exp(-2 k**2 1.36**2) = 0.04949
    kolmogorov = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * 1.36**2) for k in range(1, 50))
    assert kolmogorov == pytest.approx(0.04949, abs=1e-5)
    assert one(1.36 / math.sqrt(2_000_000), 2_000_000) == pytest.approx(kolmogorov, abs=2e-4)
    # a drift far past the thresholds keeps its tiny p-value (twice the one-sided tail, as scipy)
    tiny = one(0.05, 20_000)  # n D**2 = 50: about 2 exp(-100)
    assert 0 < tiny < 1e-40 and tiny == pytest.approx(kstwo.sf(0.05, 20_000), rel=1e-9)
    assert one(0.2, 20_000) == 0.0  # n D**2 = 800: below what a float holds, 0 as in scipy


def test_sizes_that_are_not_counts_give_nan():
    p = C.ks_pvalues([0.1, 0.1, 0.1, math.nan], [0, 2.5, -3, 100])
    assert all(math.isnan(v) for v in p)
    assert C.ks_pvalues([], []).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=C.KS_EXACT_MAX_N + 1, max_value=5_000),
    c=st.floats(min_value=0.0, max_value=2.2, allow_nan=False),
)
def test_whylogs_category_and_p_value_on_a_grid_of_large_sizes(n, c):
    """The property that matters: whylogs' own p-value (kstwo.sf at the rounded effective size) and
    this one name the same drift category, and differ by at most the documented error."""
    d = c / math.sqrt(n)
    ours, theirs = one(d, n), float(kstwo.sf(d, n))
    assert abs(ours - theirs) <= C.KS_PVALUE_MAX_ERROR
    assert category(ours) == category(theirs)


def test_the_thresholds_fall_where_scipy_uses_the_same_expansion():
    # near p = 0.05 and 0.15 the two agree to rounding, so a category never flips at a threshold
    for n in (141, 6000):
        for c in np.linspace(1.0, 1.5, 11):
            d = c / math.sqrt(n)
            assert one(d, n) == pytest.approx(kstwo.sf(d, n), abs=1e-12)
