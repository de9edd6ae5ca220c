"""column_stats.py's pure logic with hand-worked numbers: reading a column's numbers, the type rule
at its 70% boundary, the severity order, the quantile cache's keeping and eviction, and which
path scores which column's drift (and with which p-value).

Inputs are tiny: profiles of a few rows, or the sketch library's own sketches built in the test.
KLL quantiles here use the library's exclusive rank: for n values held exactly, the quantile at
fraction r is the value at 0-based position floor(r n) of the sorted values (the last one for
r = 1), and the CDF at x is the share of values below x.
"""

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import whylogs as why
import whylogs_sketching as ds
from scipy.stats import chi2, kstwo
from whylogs.core.metrics.column_metrics import ColumnCountsMetric, TypeCountersMetric
from whylogs.core.metrics.metric_components import FractionalComponent, KllComponent
from whylogs.core.metrics.metrics import CardinalityMetric, DistributionMetric, FrequentItemsMetric, IntsMetric
from whylogs.core.view.column_profile_view import ColumnProfileView
from whylogs.core.view.dataset_profile_view import DatasetProfileView

from whylogs_songbird import column_stats as C

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/column_stats.py")

NO_TYPES = dict.fromkeys(C.TYPE_NAMES, 0)


def types(**counts: int) -> dict[str, int]:
    return {**NO_TYPES, **counts}


@pytest.fixture(scope="module")
def view() -> DatasetProfileView:
    return why.log(
        pd.DataFrame(
            {
                "num": [1.0, 2.0, 3.0, 4.0, None, None],
                "word": ["a", "b", "a", "c", "a", "b"],
                "blank": [None] * 6,
                "ints": [1, 2, 2, 3, 3, 3],
            }
        )
    ).view()


def kll(*values: float) -> "ds.kll_doubles_sketch":
    sketch = ds.kll_doubles_sketch()
    for value in values:
        sketch.update(value)
    return sketch


def hll(*values: str) -> "ds.hll_sketch":
    sketch = ds.hll_sketch(12)
    for value in values:
        sketch.update(value)
    return sketch


def items(*values: str) -> "ds.frequent_strings_sketch":
    sketch = ds.frequent_strings_sketch(7)
    for value in values:
        sketch.update(value)
    return sketch


def profile(**columns: C.ColumnSketches) -> C.ProfileColumns:
    def no_view(names):  # these profiles never need whylogs' view: nothing falls back
        raise AssertionError(f"whylogs' view asked for {names}")

    return C.ProfileColumns(columns, no_view)


# -- finite -----------------------------------------------------------------------------------


def test_finite_keeps_real_numbers_only():
    assert C.finite(2) == 2.0 and type(C.finite(2)) is float
    assert C.finite("2.5") == 2.5 and C.finite(np.float32(0.5)) == 0.5 and C.finite(-0.0) == 0.0
    for missing in (None, "abc", [1], math.nan, math.inf, -math.inf, np.float64("nan")):
        assert C.finite(missing) is None, missing


# -- reading a column ---------------------------------------------------------------------------


def test_a_numeric_column_read_from_its_profile(view):
    stats = C.read_column(view.get_column("num"), (0.0, 0.25, 0.5, 0.75, 1.0))
    assert stats.type_counts == types(fractional=4)
    assert (stats.count, stats.null_count) == (6, 2)  # the two NaN are nulls
    assert stats.distinct == pytest.approx(4, rel=1e-6)
    assert stats.has_distribution
    assert stats.mean == 2.5
    # sample standard deviation of 1, 2, 3, 4: sqrt(((1.5**2 + 0.5**2) * 2) / 3) = sqrt(5/3)
    assert stats.stddev == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    assert (stats.min, stats.max) == (1.0, 4.0)
    assert stats.quantiles == (1.0, 2.0, 3.0, 4.0, 4.0)
    assert stats.frequent_items == ()  # whylogs keeps no frequent items of fractions
    assert stats.typed_total == 4 and stats.untyped is None
    assert C.type_of(stats) == "fractional" and C.infer_type(view.get_column("num")) == "fractional"


def test_a_string_column_has_frequent_items_most_frequent_first_and_no_distribution(view):
    stats = C.read_column(view.get_column("word"), (0.5,))
    assert stats.type_counts == types(string=6) and (stats.count, stats.null_count) == (6, 0)
    assert stats.distinct == pytest.approx(3, rel=1e-6)
    assert not stats.has_distribution and stats.quantiles == ()
    assert (stats.mean, stats.stddev, stats.min, stats.max) == (None, None, None, None)
    assert stats.frequent_items == (("a", 3.0), ("b", 2.0), ("c", 1.0))
    assert C.frequent_items(view.get_column("word")) == (("a", 3.0), ("b", 2.0), ("c", 1.0))
    assert C.infer_type(view.get_column("word")) == "string"


def test_an_integer_column_and_an_all_null_one(view):
    ints = C.read_column(view.get_column("ints"))
    assert ints.type_counts == types(integral=6) and ints.quantiles == ()  # none asked for
    assert ints.mean == pytest.approx(14 / 6, rel=1e-12)
    # deviations from 7/3: -4/3, -1/3 (twice), 2/3 (three times): m2 = 16/9 + 2/9 + 12/9 = 10/3
    assert ints.stddev == pytest.approx(math.sqrt((10 / 3) / 5), rel=1e-12)
    assert ints.frequent_items == (("3", 3.0), ("2", 2.0), ("1", 1.0))
    assert C.infer_type(view.get_column("ints")) == "integral"
    blank = C.read_column(view.get_column("blank"))
    assert (blank.count, blank.null_count, blank.typed_total) == (6, 6, 0)
    assert blank.untyped == "null" and C.infer_type(view.get_column("blank")) == "null"
    assert blank.distinct == 0.0 and not blank.has_distribution and blank.frequent_items == ()


def test_frequent_items_of_equal_counts_are_ordered_by_value():
    column = why.log(pd.DataFrame({"w": ["b", "c", "a", "c"]})).view().get_column("w")
    assert C.frequent_items(column) == (("c", 2.0), ("a", 1.0), ("b", 1.0))
    no_items = ColumnProfileView(metrics={"counts": column.get_metric("counts")})
    assert C.frequent_items(no_items) == ()


def test_column_sketches_are_the_views_own_numbers(view):
    sketches = C.column_sketches(view.get_column("ints"))
    assert sketches.counts == (6, 0) and sketches.type_counts == types(integral=6)
    assert sketches.mean == pytest.approx(7 / 3, rel=1e-12) and sketches.m2 == pytest.approx(10 / 3, rel=1e-12)
    assert sketches.kll is view.get_column("ints").get_metric("distribution").kll.value
    assert sketches.hll.get_estimate() == pytest.approx(3, rel=1e-6)
    assert sketches.frequent is not None and sketches.standard
    assert C._standard_metrics() == {
        "counts": ColumnCountsMetric,
        "types": TypeCountersMetric,
        "distribution": DistributionMetric,
        "ints": IntsMetric,
        "cardinality": CardinalityMetric,
        "frequent_items": FrequentItemsMetric,
    }


def test_a_column_with_a_metric_whylogs_standard_set_lacks_is_not_standard(view):
    column = view.get_column("word")
    metrics = {name: column.get_metric(name) for name in column.get_metric_names()}
    odd = ColumnProfileView(metrics={**metrics, "custom": column.get_metric("counts")})
    sketches = C.column_sketches(odd)
    assert not sketches.standard and sketches.hll is not None and sketches.frequent is not None
    assert sketches.type_counts == types(string=6)  # read all the same
    bare = C.column_sketches(ColumnProfileView(metrics={"types": column.get_metric("types")}))
    assert not bare.standard and bare.counts is None and bare.kll is None  # no counts: not standard
    assert C.column_sketches(ColumnProfileView(metrics={})).type_counts is None


def test_reading_sketches_without_metrics_gives_nothing():
    assert C.read_sketches(C.ColumnSketches()) == C.ColumnStats()


def test_reading_an_empty_distribution_gives_no_numbers():
    empty = C.read_sketches(C.ColumnSketches(kll=kll(), mean=0.0, m2=0.0), (0.5,))
    assert not empty.has_distribution and empty.quantiles == () and empty.mean is None


def test_reading_sketches_by_hand():
    counts = types(integral=2)
    stats = C.read_sketches(
        C.ColumnSketches(counts=(3, 1), type_counts=counts, kll=kll(1.0, 3.0), mean=2.0, m2=2.0, hll=hll("1", "3")),
        (0.0, 0.5, 1.0),
    )
    assert stats.type_counts == counts and stats.type_counts is not counts  # a copy
    assert (stats.count, stats.null_count) == (3, 1)
    assert stats.distinct == pytest.approx(2, rel=1e-6)
    assert (stats.mean, stats.min, stats.max) == (2.0, 1.0, 3.0)
    assert stats.stddev == pytest.approx(math.sqrt(2.0), rel=1e-15)  # m2 / (n - 1) with n = 2
    assert stats.quantiles == (1.0, 3.0, 3.0)
    assert stats.frequent_items == ()


def test_one_value_has_no_spread_and_mean_not_finite_is_none():
    one = C.read_sketches(C.ColumnSketches(kll=kll(5.0), mean=5.0, m2=0.0))
    assert one.stddev == 0.0 and (one.min, one.max) == (5.0, 5.0)
    odd = C.read_sketches(C.ColumnSketches(kll=kll(1.0, 2.0, 3.0), mean=math.inf, m2=math.nan))
    assert odd.mean is None and odd.stddev is None and odd.has_distribution


def test_frequent_items_read_from_a_sketch():
    stats = C.read_sketches(C.ColumnSketches(frequent=items("x", "y", "y", "z", "x", "y")))
    assert stats.frequent_items == (("y", 3.0), ("x", 2.0), ("z", 1.0))
    ties = C.read_sketches(C.ColumnSketches(frequent=items("e", "d", "c", "b", "a")))
    assert ties.frequent_items == (("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0), ("e", 1.0))


def full_sketch() -> "ds.frequent_strings_sketch":
    """A sketch of room for 6 items given 8 distinct ones (a 5 times, b 3 times): it keeps a and b,
    with their counts as the estimates and lower bounds one below (4 and 2)."""
    sketch = ds.frequent_strings_sketch(3)
    for value in "aaaaabbbcdefgh":
        sketch.update(value)
    return sketch


def test_the_frequent_items_of_a_full_sketch_are_its_estimates_not_its_lower_bounds():
    assert C.frequent_strings(full_sketch()) == [("a", 5, 4, 5), ("b", 3, 2, 3)]
    assert C.read_sketches(C.ColumnSketches(frequent=full_sketch())).frequent_items == (("a", 5.0), ("b", 3.0))
    assert C.frequent_strings(items("q", "q")) == [("q", 2, 2, 2)]


# -- the type rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"integral": 7, "string": 3}, "integral"),  # 70%: the majority type
        ({"integral": 69, "string": 31}, "mixed"),  # 69%, and no other numbers
        ({"string": 7, "integral": 3}, "string"),
        ({"string": 69, "integral": 31}, "mixed"),
        ({"boolean": 7, "string": 3}, "boolean"),
        ({"integral": 7, "fractional": 1, "string": 2}, "fractional"),  # integers with some fractions
        ({"integral": 10}, "integral"),
        ({"fractional": 10}, "fractional"),
        ({"integral": 5, "fractional": 2, "string": 3}, "fractional"),  # numbers together 70%
        ({"integral": 4, "fractional": 2, "string": 4}, "mixed"),  # numbers together 60%
        ({"fractional": 6, "string": 4}, "mixed"),
        ({"integral": 6, "string": 4}, "mixed"),
        ({"object": 8, "tensor": 2}, "object"),
    ],
)
def test_the_type_rule_at_its_boundaries(counts, expected):
    # the counters as whylogs gives them (every name), and with only the names that saw values
    assert C.type_of(C.ColumnStats(type_counts=types(**counts), count=10, null_count=0)) == expected
    assert C.type_of(C.ColumnStats(type_counts=counts, count=10, null_count=0)) == expected


def test_the_type_of_columns_without_typed_values():
    assert C.type_of(C.ColumnStats()) == "unknown"
    assert C.type_of(C.ColumnStats(count=3)) == "unknown"  # no type counters at all
    assert C.type_of(C.ColumnStats(type_counts=NO_TYPES, count=3, null_count=3)) == "null"
    assert C.type_of(C.ColumnStats(type_counts=NO_TYPES, count=0, null_count=0)) == "unknown"
    assert C.type_of(C.ColumnStats(type_counts=NO_TYPES)) == "unknown"
    assert C.type_of(C.ColumnStats(type_counts={})) == "unknown"
    assert C.ColumnStats(type_counts={}).typed_total == 0 and C.ColumnStats().typed_total == 0


# -- merging ------------------------------------------------------------------------------------


def test_merging_nothing_says_what_to_give(view):
    with pytest.raises(ValueError, match="^nothing to merge: give at least one profile view$"):
        C.merge_views([])
    assert C.merge_views([view]) is view


# -- severity -----------------------------------------------------------------------------------


def test_severity_of_each_category():
    assert [C.severity(c) for c in ("DRIFT", "POSSIBLE_DRIFT", "NO_DRIFT")] == [0, 1, 2]
    for nothing in (None, "", "drift", "no_drift", "UNKNOWN"):
        assert C.severity(nothing) == 3, nothing


def test_most_drifted_first_by_category_then_p_value_then_distance_then_name():
    scores = [
        C.DriftScore("e", "ks", statistic=0.1, pvalue=0.5, category="NO_DRIFT"),
        C.DriftScore("d", "ks", statistic=None, pvalue=None, category=None),
        C.DriftScore("c", "ks", statistic=0.3, pvalue=0.01, category="DRIFT"),
        C.DriftScore("b", "ks", statistic=0.4, pvalue=0.01, category="DRIFT"),  # a tie: by name
        C.DriftScore("a", "ks", statistic=0.2, pvalue=0.1, category="POSSIBLE_DRIFT"),
        C.DriftScore("h", "hellinger", statistic=0.9, pvalue=None, category="DRIFT"),
        C.DriftScore("g", "hellinger", statistic=0.5, pvalue=None, category="DRIFT"),
        C.DriftScore("f", "hellinger", statistic=None, pvalue=None, category="DRIFT"),
    ]
    ordered = [s.column for s in C.most_drifted_first({s.column: s for s in scores})]
    # DRIFT: the distances (-0.9 < -0.5) and the p-values 0.01 sort together as numbers; no figure last
    assert ordered == ["h", "g", "b", "c", "f", "a", "e", "d"]
    assert scores[0].severity == (2, 0.5) and scores[1].severity == (3, math.inf)
    assert scores[5].severity == (0, -0.9) and scores[7].severity == (0, math.inf)
    assert scores[0].uses_pvalue and not scores[5].uses_pvalue
    assert C.most_drifted_first({}) == []


# -- the quantile cache -------------------------------------------------------------------------


def test_equal_points_share_a_kept_entry_and_other_points_do_not():
    quantiles, sketch = C._Quantiles(size=4), kll(1.0, 2.0, 3.0, 4.0)
    first = quantiles(sketch, (0.0, 0.5, 1.0))
    assert list(first) == [1.0, 3.0, 4.0] and not first.flags.writeable  # kept: read-only
    assert quantiles(sketch, (0.0, 0.5, 1.0)) is first  # an equal tuple, not the same one
    assert quantiles(sketch, quantiles.points([0.0, 0.5, 1.0])) is first
    assert list(quantiles(sketch, (0.25, 0.75))) == [2.0, 4.0]  # other points: taken again


def test_the_cache_forgets_the_least_recently_used_sketch():
    quantiles = C._Quantiles(size=2)
    points = quantiles.points((0.0, 1.0))
    a, b, c = kll(1.0), kll(2.0), kll(3.0)
    kept_a, kept_b = quantiles(a, points), quantiles(b, points)
    assert quantiles(a, points) is kept_a  # a used last: b is the oldest now
    kept_c = quantiles(c, points)
    assert quantiles(c, points) is kept_c and quantiles(a, points) is kept_a
    assert quantiles(b, points) is not kept_b and list(quantiles(b, points)) == [2.0, 2.0]
    split_a = quantiles.split(a, points)
    assert split_a == C.Split([1.0], [0.0]) and quantiles.split(a, points) is split_a
    quantiles.split(b, points), quantiles.split(c, points)  # a's split is the oldest: forgotten
    assert quantiles.split(c, points) is quantiles.split(c, points)
    assert quantiles.split(a, points) is not split_a


def known(sketch, values: list[float], others: tuple[float, ...] = (0.5,)) -> C.KnownQuantiles:
    """Known quantiles said to be ``sketch``'s: ``values`` at the KS points, then ``others``."""
    fractions = (*C.KS_POINTS, *others)
    return C.KnownQuantiles(fractions, values + [7.0] * len(others), C._split_of(sketch, np.array(values)))


def test_remembered_quantiles_are_read_back_and_the_oldest_forgotten():
    quantiles = C._Quantiles(size=2)
    sketches = [kll(1.0, 2.0, 3.0) for _ in range(3)]
    for sketch in sketches:  # the remembered number 7.0 at 0.5 tells a read-back from a sketch's own 2.0
        quantiles.remember(sketch, known(sketch, [float(v) for v in sketch.get_quantiles(list(C.KS_POINTS))]))
    assert quantiles.along(sketches[2], (0.5,)) == [7.0] and quantiles.along(sketches[1], (0.5,)) == [7.0]
    assert quantiles.along(sketches[1], (0.25,)) == [1.0]  # other points than remembered: the sketch's own
    assert quantiles.along(sketches[0], (0.5,)) == [2.0]  # the first one is forgotten


def test_known_quantiles_of_other_points_are_ignored():
    quantiles, sketch = C._Quantiles(size=2), kll(1.0, 2.0, 3.0)
    values = [float(v) for v in sketch.get_quantiles(list(C.KS_POINTS))]
    wrong = C.KnownQuantiles((0.0, 1.0), [9.0, 9.0], None)
    quantiles.remember(sketch, wrong)
    short = C.KnownQuantiles((*C.KS_POINTS, 0.5), values, None)  # a value missing
    quantiles.remember(sketch, short)
    assert quantiles.along(sketch, (0.5,)) == [2.0]
    assert list(quantiles(sketch, quantiles.points(C.KS_POINTS))) == values


def test_known_quantiles_of_a_sketch():
    sketch = kll(1.0, 2.0, 3.0, 4.0)
    found = C.known_quantiles(sketch, (0.5,))
    assert found.fractions == (*C.KS_POINTS, 0.5) and found.values[-1] == 3.0
    assert found.values[0] == 1.0 and found.values[len(C.KS_POINTS) - 1] == 4.0
    # the distinct quantiles, and the share of values below each
    assert found.split == C.Split([1.0, 2.0, 3.0, 4.0], [0.0, 0.25, 0.5, 0.75])
    assert C.known_quantiles(kll()) is None


# -- which drift test scores which column -----------------------------------------------------


def column_view(**metrics) -> ColumnProfileView:
    return ColumnProfileView(metrics=metrics)


def dataset(**columns: ColumnProfileView) -> DatasetProfileView:
    return DatasetProfileView(columns=columns, dataset_timestamp=None, creation_timestamp=None)


def test_split_columns_by_what_their_distributions_hold(view):
    numbers, words = view.get_column("num"), view.get_column("word")
    no_sketch = DistributionMetric(kll=KllComponent(None), mean=FractionalComponent(0.0), m2=FractionalComponent(0.0))
    target = dataset(
        only_here=numbers,
        numbers=numbers,
        no_distribution=column_view(counts=numbers.get_metric("counts")),
        no_sketch=column_view(distribution=no_sketch),
        reference_has_none=numbers,
        words=words,
        half_empty=numbers,
        also_numbers=numbers,
    )
    reference = dataset(
        numbers=numbers,
        no_distribution=numbers,
        no_sketch=numbers,
        reference_has_none=column_view(counts=numbers.get_metric("counts")),
        words=words,
        half_empty=words,
        also_numbers=numbers,
    )
    assert C._split_columns(target, reference) == (
        ["numbers", "also_numbers"],
        ["no_distribution", "reference_has_none", "words", "half_empty"],
    )
    ks, chi = C._split_columns(
        dataset(no_sketch=numbers, numbers=numbers),
        dataset(no_sketch=column_view(distribution=no_sketch), numbers=numbers),
    )
    assert (ks, chi) == (["numbers"], [])


def test_frequent_items_without_counts_are_left_out_of_drift_not_a_failure(view):
    """whylogs' chi-square test reads a column's counts beside its frequent items and fails without
    them: such a column (of a profile with a custom schema) gets no score; the others still do."""
    words = view.get_column("word")
    items_only = column_view(
        frequent_items=words.get_metric("frequent_items"), cardinality=words.get_metric("cardinality")
    )
    target = dataset(num=view.get_column("num"), items_only=items_only)
    reference = dataset(num=view.get_column("num"), items_only=items_only)
    assert C._frequent_items_without_counts(target) == {"items_only"}
    assert C._frequent_items_without_counts(dataset(num=view.get_column("num"), word=words)) == set()
    # unreadable on one side only: whylogs would still read both sides' frequent stats
    one_sided = C.drift_scores(target, dataset(num=view.get_column("num"), items_only=words))
    assert list(one_sided) == ["num"]
    scores = C.drift_scores(target, reference)
    assert list(scores) == ["num"] and scores["num"].category == "NO_DRIFT"
    only_here = C.drift_scores(target, dataset(num=view.get_column("num")))  # the reference lacks it
    assert list(only_here) == ["num"]
    assert list(C.drift_scores(dataset(num=view.get_column("num")), target)) == ["num"]


def sketches(**values) -> C.ColumnSketches:
    return C.ColumnSketches(**values)


def test_columns_without_a_distribution_get_the_chi_square_test_of_their_frequent_items():
    # target: a 3, b 1; reference: a 2, b 2. Expected counts int(share * 4) = 2 and 2, so the
    # statistic is (3-2)**2/2 + (1-2)**2/2 = 1 with 2 - 1 = 1 degree of freedom:
    # p = P(chi2_1 > 1) = erfc(1 / sqrt 2)
    target_items = dict(counts=(4, 0), hll=hll("a", "b"), frequent=items("a", "a", "a", "b"))
    reference_items = dict(counts=(4, 0), hll=hll("a", "b"), frequent=items("a", "a", "b", "b"))
    target = profile(
        gone=sketches(kll=kll(1.0), **target_items),  # not in the reference: left out, not the end
        no_kll=sketches(**target_items),
        reference_no_kll=sketches(kll=kll(1.0, 2.0), **target_items),
        no_items=sketches(counts=(4, 0), hll=hll("a")),
        no_counts=sketches(hll=hll("a"), frequent=items("a")),
        no_cardinality=sketches(counts=(1, 0), frequent=items("a")),
    )
    reference = profile(
        no_kll=sketches(kll=kll(1.0, 2.0), **reference_items),
        reference_no_kll=sketches(**reference_items),
        no_items=sketches(counts=(4, 0), hll=hll("a"), frequent=items("a")),
        no_counts=sketches(counts=(1, 0), hll=hll("a"), frequent=items("a")),
        no_cardinality=sketches(counts=(1, 0), hll=hll("a"), frequent=items("a")),
    )
    scores = C.drift_scores(target, reference)
    assert sorted(scores) == ["no_kll", "reference_no_kll"]
    for name in scores:
        score = scores[name]
        assert (score.column, score.algorithm, score.statistic) == (name, "chi-square", 1.0)
        assert score.pvalue == pytest.approx(math.erfc(1 / math.sqrt(2)), rel=1e-12)  # 0.3173
        assert score.category == "NO_DRIFT"


def test_the_chi_square_test_takes_the_estimates_of_a_full_sketch():
    # target: a 5, b 3 of 14 values, 8 distinct; reference: a 2, b 2 of 4. Expected counts
    # int(0.5 * 14) = 7 each: (5-7)**2/7 + (3-7)**2/7 = 20/7, with 8 - 1 = 7 degrees of freedom
    target = profile(w=sketches(counts=(14, 0), hll=hll(*"abcdefgh"), frequent=full_sketch()))
    reference = profile(w=sketches(counts=(4, 0), hll=hll("a", "b"), frequent=items("a", "a", "b", "b")))
    score = C.drift_scores(target, reference)["w"]
    assert score.statistic == pytest.approx(20 / 7, rel=1e-12)
    assert score.pvalue == pytest.approx(chi2.sf(20 / 7, 7), rel=1e-12)


@pytest.fixture(scope="module")
def wide() -> tuple[DatasetProfileView, DatasetProfileView]:
    """0..281 against 13..294: 282 values a side, held exactly by the sketches; the CDFs differ by
    at most 13/282, and the effective size is round(282 * 282 / 564) = 141, the first one past
    KS_EXACT_MAX_N, where the fast p-value differs most from scipy's (p about 0.91)."""
    reference = why.log(pd.DataFrame({"x": np.arange(282.0)})).view()
    target = why.log(pd.DataFrame({"x": np.arange(282.0) + 13})).view()
    return target, reference


def check_fast_ks(score: C.DriftScore) -> None:
    assert (score.algorithm, score.category) == ("ks", "NO_DRIFT")
    assert score.statistic == pytest.approx(13 / 282, rel=1e-12)
    exact = float(kstwo.sf(score.statistic, 141))  # whylogs' own p-value
    assert score.pvalue == float(C.ks_pvalues([score.statistic], [141])[0])
    assert score.pvalue == pytest.approx(exact, abs=C.KS_PVALUE_MAX_ERROR) and abs(score.pvalue - exact) > 1e-6


def test_ks_columns_get_the_fast_p_value_on_either_path(wide):
    target, reference = wide
    check_fast_ks(C.drift_scores(target, reference)["x"])
    column = target.get_column("x")
    metrics = {name: column.get_metric(name) for name in column.get_metric_names()}
    odd = dataset(x=column_view(**metrics, custom=column.get_metric("counts")))
    assert not C.profile_columns(odd).standard
    check_fast_ks(C.drift_scores(odd, reference)["x"])  # whylogs' drift map, with the batched KS test


def test_a_ks_test_without_a_p_value_falls_back_to_whylogs_default_choice(wide):
    # one value a side: effective size round(1/2) = 0, no KS p-value; whylogs' default choice
    # then takes the chi-square test of the frequent items: "1" never seen in the reference
    one = why.log(pd.DataFrame({"n": [1]})).view().get_column("n")
    two = why.log(pd.DataFrame({"n": [2]})).view().get_column("n")
    target = dataset(n=one, x=wide[0].get_column("x"))
    reference = dataset(n=two, x=wide[1].get_column("x"))
    for scores in (C.drift_scores(target, reference), C._drift_scores_by_map(target, reference)):
        assert scores["n"] == C.DriftScore("n", "chi-square", math.inf, 0.0, "DRIFT")
        check_fast_ks(scores["x"])  # the others keep their own scores


# -- whylogs' fields of a score -----------------------------------------------------------------


def test_a_score_from_whylogs_fields():
    assert C._score("c", None, None, None, "") == C.DriftScore("c", "?", None, None, None)
    assert C._score("c", "ks", 1, math.nan, "DRIFT") == C.DriftScore("c", "ks", 1.0, None, "DRIFT")
    assert C._scores({"a": None, "b": {}, "c": {"algorithm": "ks", "statistic": 0.5, "pvalue": 0.2}}) == {
        "c": C.DriftScore("c", "ks", 0.5, 0.2, None)
    }
    assert C._unscored(None) and C._unscored({}) and C._unscored({"pvalue": math.nan})
    assert not C._unscored({"pvalue": 0.5}) and not C._unscored({"pvalue": None})
    assert C._is_nan(math.nan) and not C._is_nan(None) and not C._is_nan("nan") and not C._is_nan(1.0)


# -- the KS p-value past the exact sizes --------------------------------------------------------


def p_value(d: float, n: float) -> float:
    return float(C.ks_pvalues([d], [n])[0])


def test_p_values_in_one_call_are_those_of_each_alone():
    d = np.array([0.02, 0.05, 0.08, 0.11, 0.3, 0.999])
    n = np.array([141, 200, 141, 500, 1000, 150])
    together = C.ks_pvalues(d, n)
    assert together.tolist() == [p_value(a, b) for a, b in zip(d, n)]
    assert len(set(together.tolist())) == 6


def test_a_size_that_is_not_a_count_or_a_statistic_that_is_nan_gives_nan_past_the_exact_sizes():
    assert all(math.isnan(p) for p in C.ks_pvalues([0.1, 0.1, math.nan], [200.5, 141.5, 200]))
    assert p_value(0.1, 200) == pytest.approx(kstwo.sf(0.1, 200), abs=C.KS_PVALUE_MAX_ERROR)


def test_statistics_and_sizes_of_any_real_type_are_taken_as_floats():
    assert C.ks_pvalues([Fraction(1, 2)], [Decimal(141)]).tolist() == [p_value(0.5, 141.0)]
    assert C.ks_pvalues(Fraction(1, 10), 200).tolist() == [p_value(0.1, 200.0)]


def test_just_past_the_exact_sizes_the_p_value_is_the_fast_one():
    # the largest difference from scipy's Durbin method, documented at n = 141 and p = 0.91
    exact = float(kstwo.sf(13 / 282, 141))
    assert abs(p_value(13 / 282, 141) - exact) == pytest.approx(3.07e-6, rel=0.01)
    assert abs(p_value(13 / 282, 141) - exact) < C.KS_PVALUE_MAX_ERROR


def test_the_closed_forms_near_the_ends_past_the_exact_sizes():
    for n in (141, 200, 1000):
        # 1/2n < D <= 1/n: 1 - n!/n**n (2 n D - 1)**n, which is 1 in floats for these n
        for t in (0.5 + 1e-9, 0.75, 1.0):
            assert p_value(t / n, n) == 1.0, (t, n)
        assert p_value(2 / n, n) > 0.9999  # just past: hardly a sign of drift either
        assert p_value(1.5, n) == 0.0 and p_value(1.0, n) == 0.0  # D >= 1
    # D >= 1 - 1/n: 2 (1 - D)**n, by hand
    assert p_value(1 - 1 / 141, 141) == pytest.approx(2 * (1 / 141) ** 141, rel=1e-12, abs=0)


def test_the_p_value_at_its_switches_is_scipys():
    n = 141
    # D = 1/2: twice the one-sided tail (scipy's route for D >= 1/2)
    assert p_value(0.5, n) == pytest.approx(kstwo.sf(0.5, n), rel=1e-12, abs=0)  # about 4e-33
    # n D**2 = 2.2: where scipy, and this, take twice the one-sided tail
    d = math.sqrt(2.2 / n)
    assert p_value(d, n) == pytest.approx(kstwo.sf(d, n), rel=1e-12)
    assert p_value(d * (1 - 1e-9), n) == pytest.approx(kstwo.sf(d * (1 - 1e-9), n), abs=C.KS_PVALUE_MAX_ERROR)
