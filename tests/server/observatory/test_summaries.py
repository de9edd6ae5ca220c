"""Unit tests of the observatory's pure logic (summaries.py, and column_stats.py: types, merging, drift)
on real whylogs profiles."""

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")  # before anything imports whylogs

import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import whylogs as why  # noqa: E402
from whylogs.core.schema import DatasetSchema  # noqa: E402
from whylogs.core.segmentation_partition import segment_on_column  # noqa: E402
from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores  # noqa: E402
from whylogs.viz.utils.histogram_calculations import histogram_from_view  # noqa: E402

from whylogs_songbird import column_stats as C  # noqa: E402
from whylogs_songbird.profiles import items_from  # noqa: E402
from whylogs_songbird.server import summaries as S  # noqa: E402


def frame(seed: int = 0, n: int = 1000, shift: float = 0.0, cities=("Paris", "Berlin", "Rome"), p=None):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(50_000 + shift, 10_000, n),
            "score": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
            "city": rng.choice(list(cities), n, p=p),
            "active": rng.random(n) < 0.3,
        }
    )


@pytest.fixture(scope="module")
def view():
    return why.log(frame()).view()


def test_numeric_column_summary_equals_whylogs_own_numbers(view):
    for name in ("age", "income", "score"):
        column = view.get_column(name)
        own = column.to_summary_dict()
        summary = S.summarize_column(name, column)
        assert summary.count == own["counts/n"]
        assert summary.null_count == own["counts/null"]
        assert summary.mean == pytest.approx(own["distribution/mean"])
        assert summary.stddev == pytest.approx(own["distribution/stddev"])
        assert summary.min == own["distribution/min"] and summary.max == own["distribution/max"]
        assert summary.p25 == own["distribution/q_25"]
        assert summary.median == own["distribution/median"]
        assert summary.p75 == own["distribution/q_75"]
        assert summary.distinct == pytest.approx(own["cardinality/est"])
        assert summary.is_numeric and summary.chart_kind == "histogram"


def test_nulls_count_and_fraction(view):
    summary = S.summarize_column("score", view.get_column("score"))
    df = frame()
    assert summary.null_count == int(df["score"].isna().sum())
    assert summary.null_fraction == pytest.approx(df["score"].isna().mean())
    assert S.summarize_column("age", view.get_column("age")).null_fraction == 0


def test_inferred_types(view):
    types = {name: C.infer_type(column) for name, column in view.get_columns().items()}
    assert types == {
        "age": "integral",
        "income": "fractional",
        "score": "fractional",
        "city": "string",
        "active": "boolean",
    }
    odd = why.log(pd.DataFrame({"none": [None, None, None], "mixed": [1, "a", 2.5]})).view()
    assert C.infer_type(odd.get_column("none")) == "null"
    assert C.infer_type(odd.get_column("mixed")) == "mixed"
    # mostly integers with some fractions is a fractional column
    mostly = why.log(pd.DataFrame({"x": pd.Series([1, 2, 3, 4, 5, 6, 7, 8, 2.5, 3.5], dtype=object)})).view()
    assert C.infer_type(mostly.get_column("x")) == "fractional"


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"integral": 400, "string": 600}, "mixed"),  # no type holds 70%
        ({"integral": 500, "fractional": 100, "string": 400}, "mixed"),  # numbers are 60%
        ({"integral": 600, "string": 400}, "mixed"),  # a numeric plurality is not enough
        ({"integral": 300, "string": 700}, "string"),
        ({"integral": 600, "fractional": 200, "string": 200}, "fractional"),  # numbers are 80%
        ({"integral": 900, "fractional": 1}, "fractional"),
        ({"integral": 700, "boolean": 300}, "integral"),
    ],
)
def test_one_type_rule(counts, expected):
    full = {name: counts.get(name, 0) for name in C.TYPE_NAMES}
    assert C.type_of(C.ColumnStats(type_counts=full, count=sum(counts.values()), null_count=0)) == expected


def test_untyped_columns():
    assert C.type_of(C.ColumnStats()) == "unknown"
    empty = dict.fromkeys(C.TYPE_NAMES, 0)
    assert C.type_of(C.ColumnStats(type_counts=empty, count=3, null_count=3)) == "null"
    assert C.type_of(C.ColumnStats(type_counts=empty, count=0, null_count=0)) == "unknown"


def test_the_timeline_and_the_pages_name_a_mixed_column_alike():
    from whylogs_songbird.timeline import column_points

    values = pd.Series([*range(400), *(f"s{i}" for i in range(600))], dtype=object)
    shares = pd.Series([*range(500), *(i + 0.5 for i in range(100)), *(f"s{i}" for i in range(400))], dtype=object)
    view = why.log(pd.DataFrame({"strings_and_ints": values, "half_ints": shares})).view()
    points = column_points(view)
    summary = S.summarize_profile(view)
    for name in ("strings_and_ints", "half_ints"):
        assert points[name].inferred_type == summary.columns[name].inferred_type == "mixed", name


def test_frequent_items_are_whylogs_estimates_most_frequent_first(view):
    summary = S.summarize_column("city", view.get_column("city"))
    counts = frame()["city"].value_counts()
    assert [item.value for item in summary.frequent_items] == list(counts.index)
    assert [item.estimate for item in summary.frequent_items] == [float(c) for c in counts.values]
    assert not summary.is_numeric and summary.chart_kind == "bar"
    assert summary.mean is None and summary.p25 is None


def test_profile_summary_rows_and_columns(view):
    summary = S.summarize_profile(view)
    assert summary.row_count == 1000 and summary.column_count == 5
    assert list(summary.columns) == list(view.get_columns())


def test_histogram_of_one_profile_matches_whylogs_histogram(view):
    column = view.get_column("income")
    own = histogram_from_view(column, "income")
    data = S.histogram([column])
    assert data["edges"] == own["bins"]
    assert data["counts"] == [own["counts"]]
    assert sum(data["counts"][0]) == pytest.approx(1000, abs=2)


def test_overlaid_histograms_share_bins_and_keep_each_profile_total():
    a = why.log(frame(seed=1)).view().get_column("income")
    b = why.log(frame(seed=2, n=400, shift=40_000)).view().get_column("income")
    data = S.histogram([a, None, b])
    assert data["counts"][1] is None
    edges = data["edges"]
    assert edges[0] == min(
        a.get_metric("distribution").kll.value.get_min_value(), b.get_metric("distribution").kll.value.get_min_value()
    )
    assert all(len(c) == len(edges) - 1 for c in (data["counts"][0], data["counts"][2]))
    assert sum(data["counts"][0]) == pytest.approx(1000, abs=3)
    assert sum(data["counts"][2]) == pytest.approx(400, abs=3)


def test_histogram_of_a_constant_column():
    column = why.log(pd.DataFrame({"c": [7.0] * 5})).view().get_column("c")
    data = S.histogram([column])
    assert data["counts"] == [[5]] and data["edges"][0] < 7.0 < data["edges"][1]
    assert S.histogram([None]) is None


def test_frequent_items_chart_unions_items_and_fills_zeros():
    a = S.summarize_column("c", why.log(pd.DataFrame({"c": ["x", "x", "y"]})).view().get_column("c"))
    b = S.summarize_column("c", why.log(pd.DataFrame({"c": ["z", "y", "z", "z"]})).view().get_column("c"))
    data = S.frequent_items_chart([a, b, None])
    assert data["labels"] == ["z", "x", "y"]
    assert data["counts"] == [[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], None]


def test_chart_data_kinds(view):
    summary = S.summarize_profile(view)
    assert S.chart_data("age", [view], [summary])["kind"] == "histogram"
    assert S.chart_data("city", [view], [summary])["kind"] == "bar"
    assert S.chart_data("active", [view], [summary])["kind"] == "bar"
    json.dumps(S.chart_data("income", [view], [summary]), allow_nan=False)  # JSON-ready


def test_drift_flags_the_shifted_and_reweighted_columns_and_orders_most_drifted_first():
    reference = why.log(frame(seed=1)).view()
    target = why.log(frame(seed=2, shift=15_000, p=[0.1, 0.1, 0.8])).view()
    scores = C.drift_scores(target=target, reference=reference)
    assert scores["income"].category == "DRIFT" and scores["income"].algorithm == "ks"
    assert scores["city"].category == "DRIFT" and scores["city"].algorithm == "chi-square"
    assert scores["age"].category == "NO_DRIFT"
    # the numbers are whylogs' own
    raw = calculate_drift_scores(target_view=target, reference_view=reference, with_thresholds=True)
    for name, score in scores.items():
        assert score.pvalue == pytest.approx(raw[name]["pvalue"])
        assert score.statistic == pytest.approx(raw[name]["statistic"])
        assert score.category == raw[name]["drift_category"]
    ordered = C.most_drifted_first(scores)
    assert {s.column for s in ordered[:2]} == {"income", "city"}
    assert [s.severity for s in ordered] == sorted(s.severity for s in ordered)
    assert ordered[-1].category == "NO_DRIFT"


def test_drift_of_identical_profiles_is_none():
    view = why.log(frame(seed=3)).view()
    scores = C.drift_scores(target=view, reference=view)
    assert {s.category for s in scores.values()} == {"NO_DRIFT"}


def test_severity_uses_distance_when_there_is_no_pvalue():
    near = C.DriftScore("a", "hellinger", statistic=0.5, pvalue=None, category="DRIFT")
    far = C.DriftScore("b", "hellinger", statistic=0.9, pvalue=None, category="DRIFT")
    possible = C.DriftScore("c", "ks", statistic=0.1, pvalue=0.1, category="POSSIBLE_DRIFT")
    unknown = C.DriftScore("d", "ks", statistic=None, pvalue=None, category=None)
    assert [s.column for s in C.most_drifted_first({s.column: s for s in (unknown, possible, near, far)})] == [
        "b",
        "a",
        "c",
        "d",
    ]


def test_merged_segments_equal_the_whole_batch():
    df = frame(seed=4)
    whole = why.log(df).view()
    items = items_from(why.log(df, schema=DatasetSchema(segments=segment_on_column("city"))))
    assert len(items) == 3
    views = [S.read_view(item.serialize()) for item in items]  # the segmented file format
    merged = C.merge_views(views)
    for name in ("age", "income", "city"):
        a, b = S.summarize_column(name, merged.get_column(name)), S.summarize_column(name, whole.get_column(name))
        assert a.count == b.count and a.null_count == b.null_count
        if a.mean is not None:
            assert a.mean == pytest.approx(b.mean)
    with pytest.raises(ValueError):
        C.merge_views([])


def test_read_view_refuses_garbage():
    with pytest.raises(S.SummaryError, match="not a readable whylogs profile"):
        S.read_view(b"definitely not a profile")


def test_unusual_values_stay_finite_or_none():
    df = pd.DataFrame({"x": [1.0, math.inf, -math.inf, 2.0], "s": ["<b>", "&", "é", "<b>"]})
    view = why.log(df).view()
    summary = S.summarize_profile(view)
    for column in summary.columns.values():
        for value in (column.mean, column.stddev, column.min, column.max, column.median):
            assert value is None or math.isfinite(value)
    json.dumps([S.chart_data(n, [view], [summary]) for n in summary.columns], allow_nan=False)


@pytest.mark.parametrize(
    "values",
    [
        [-1e308, 1e308, 0.0],  # the span overflows to inf
        [1.7976931348623157e308, 1.7e308, 0.0],  # the right edge overflows to inf
        [1.7976931348623157e308] * 3,  # one value: its bin's edge overflows
    ],
)
def test_a_range_too_wide_for_floats_gives_a_note_not_nan_bins(values):
    view = why.log(pd.DataFrame({"x": values})).view()
    summary = S.summarize_profile(view)
    assert S.histogram([view.get_column("x")]) == {"note": S.RANGE_TOO_WIDE}
    assert S.chart_data("x", [view], [summary]) == {"kind": "note", "note": S.RANGE_TOO_WIDE}
    other = why.log(pd.DataFrame({"x": [0.0, 1.0, 2.0]})).view()  # shared bins with a narrow profile
    assert S.histogram([other.get_column("x"), view.get_column("x")]) == {"note": S.RANGE_TOO_WIDE}
    assert S.histogram([other.get_column("x")])["edges"][0] == 0.0


def test_drift_scores_equal_whylogs_default_choice_on_awkward_columns():
    """The batched KS test and the drift map give whylogs' numbers and choices: discrete,
    constant, tiny, mixed-type, missing and categorical columns, sketches past their exact size."""
    rng = np.random.default_rng(7)

    def awkward(seed: int, rows: int, shift: float) -> pd.DataFrame:
        r = np.random.default_rng(seed)
        return pd.DataFrame(
            {
                "normal": r.normal(shift, 1, rows),
                "discrete": r.integers(0, 4, rows) + (1 if shift else 0),
                "constant": np.full(rows, 3.0),
                "tiny": [1.5] + [None] * (rows - 1),
                "mixed": [str(v) if i % 3 == 0 else v for i, v in enumerate(r.normal(0, 1, rows))],
                "category": r.choice(["a", "b", "c"], rows, p=[0.2, 0.3, 0.5] if shift else [0.5, 0.3, 0.2]),
                "mostly_null": [None] * max(rows - 2, 0) + [1.0, 2.0][:rows],
                "heavy": r.pareto(1.5, rows) * 1e6,
            }
        )

    for rows_a, rows_b, shift in ((2000, 3000, 0.3), (40, 5, 0.0), (1, 1, 1.0)):
        reference = why.log(awkward(int(rng.integers(1_000)), rows_a, 0.0)).view()
        target = why.log(awkward(int(rng.integers(1_000)), rows_b, shift)).view()
        ours = C.drift_scores(target=target, reference=reference)
        raw = calculate_drift_scores(target_view=target, reference_view=reference, with_thresholds=True)
        assert set(ours) == {name for name, score in raw.items() if score}
        for name, score in ours.items():
            assert score.algorithm == raw[name]["algorithm"], name
            assert score.statistic == raw[name]["statistic"], name
            # the p-value is the same distribution's (see C.ks_pvalues): equal up to its measured error
            assert score.pvalue == pytest.approx(C.finite(raw[name]["pvalue"]), abs=C.KS_PVALUE_MAX_ERROR), name
            assert score.category == raw[name]["drift_category"], name
