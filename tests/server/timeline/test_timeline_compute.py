"""The timeline's computation (whylogs_songbird/timeline.py) as pure logic: a column's numbers in a
merged view, the drift verdicts, the document assembled from bucket points, and compute_timeline
with its hooks (a loader, the merged-view hook, the ``cached`` JSON hook and the ``memo``).

Profiles are a few rows logged by whylogs in the test; expected numbers are worked out by hand
from those rows. Drift is judged by category and algorithm only, on distributions either identical
or disjoint, never by an exact p-value (the KS p-value is whylogs' and scipy's business).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import whylogs as why
from whylogs.core import DatasetProfileView

from whylogs_songbird.timeline import (
    DAY_MS,
    HOUR_MS,
    NUMBER_SERIES,
    Batch,
    Bucket,
    BucketPoints,
    ColumnPoint,
    DriftPoint,
    ReferenceInfo,
    TimelineInputs,
    _BucketViews,
    bucket_points,
    bucketize,
    build_timeline,
    column_point,
    column_points,
    compute_timeline,
    drift_points,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/timeline.py")

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, a Thursday


@functools.cache
def logged(**columns: tuple[Any, ...]) -> DatasetProfileView:
    """The whylogs view of a frame with these columns (cached: views are never changed)."""
    return why.log(pd.DataFrame({name: list(values) for name, values in columns.items()})).view()


def small() -> DatasetProfileView:
    return logged(x=(1.0, 2.0, 3.0, None), s=("a", "a", "b", None), n=(1, 2, 3, 4))


def far() -> DatasetProfileView:
    """Same columns as :func:`small`, ``x`` and ``s`` with no value in common with it, ``n`` the same."""
    return logged(x=(1001.0, 1002.0, 1003.0, 1004.0), s=("c", "c", "c", "d"), n=(1, 2, 3, 4))


# -- one column's numbers ------------------------------------------------------------------------------


def test_a_numeric_column_has_its_distribution_and_no_frequent_items():
    # x = 1, 2, 3 and a null: mean 2, sample stddev 1, the quantiles of three values are those values
    assert column_point(small().get_column("x")) == ColumnPoint(
        inferred_type="fractional",
        count=4,
        null_count=1,
        mean=2.0,
        stddev=1.0,
        min=1.0,
        p5=1.0,
        p50=2.0,
        p95=3.0,
        max=3.0,
        distinct=3.0000000149,  # the HyperLogLog estimate of 3, cut to 12 significant digits
        top_items=(),
    )
    integral = column_point(small().get_column("n"))
    assert (integral.inferred_type, integral.count, integral.null_count, integral.top_items) == ("integral", 4, 0, ())
    assert (integral.min, integral.max, integral.mean) == (1.0, 4.0, 2.5)
    assert integral.stddev == 1.29099444874  # sqrt(5/3), 12 significant digits


def test_a_string_column_has_its_frequent_items_and_no_distribution():
    assert column_point(small().get_column("s")) == ColumnPoint(
        inferred_type="string",
        count=4,
        null_count=1,
        distinct=2.00000000497,
        top_items=(("a", 2.0), ("b", 1.0)),
    )


def test_at_most_ten_frequent_items_are_kept_most_frequent_first():
    # value vK appears K times, for K = 1..12
    values = tuple(f"v{k:02d}" for k in range(1, 13) for _ in range(k))
    point = column_point(logged(s=values).get_column("s"))
    assert point.top_items == tuple((f"v{k:02d}", float(k)) for k in range(12, 2, -1))


def test_column_points_are_in_the_view_s_column_order():
    assert list(column_points(small())) == ["x", "s", "n"]
    assert column_points(small())["s"] == column_point(small().get_column("s"))


# -- drift ------------------------------------------------------------------------------------------------


def test_drift_of_disjoint_values_is_drift_and_of_identical_values_none():
    target = logged(x=(1.0, 2.0, 3.0, None), s=("a", "a", "b", None), n=(1, 2, 3, 4), only=(1, 2, 3, 4))
    found = drift_points(target, far())
    assert list(found) == ["x", "s", "n"]  # "only" has nothing to compare with
    assert {n: (d.category, d.algorithm) for n, d in found.items()} == {
        "x": ("DRIFT", "ks"),
        "s": ("DRIFT", "chi-square"),
        "n": ("NO_DRIFT", "ks"),
    }
    assert found["x"].statistic == 1.0  # disjoint samples: the CDFs differ by 1
    assert found["n"].statistic == 0.0
    assert found["x"].p_value is not None and found["x"].p_value < 0.01
    assert found["n"].p_value is not None and found["n"].p_value > 0.9
    same = drift_points(small(), small())
    assert {n: d.category for n, d in same.items()} == {"x": "NO_DRIFT", "s": "NO_DRIFT", "n": "NO_DRIFT"}


def test_a_drift_point_round_trips_through_json():
    point = DriftPoint(category="POSSIBLE_DRIFT", p_value=0.07, statistic=0.3, algorithm="chi-square")
    assert point.to_json() == ["POSSIBLE_DRIFT", 0.07, 0.3, "chi-square"]
    assert DriftPoint.from_json(point.to_json()) == point
    assert DriftPoint.from_json([None, None, None, 7]) == DriftPoint(None, None, None, "7")


# -- the document from bucket points ---------------------------------------------------------------------


def numbers(*points: ColumnPoint | None) -> dict[str, list[Any]]:
    """The number series of a column over buckets, read straight from the points (None where absent)."""
    return {stat: [None if p is None else getattr(p, stat) for p in points] for stat in NUMBER_SERIES}


N0 = ColumnPoint("fractional", 4, 1, 2.0, 1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0)
N1 = ColumnPoint("fractional", 2, 0, 5.0, 0.5, 4.5, 4.5, 5.0, 5.5, 5.5, 2.0)
N2 = ColumnPoint("integral", 3, 0, 7.0, 1.0, 6.0, 6.0, 7.0, 8.0, 8.0, 3.0)
S0 = ColumnPoint("string", 7, 1, distinct=3.0, top_items=(("a", 3.0), ("b", 2.0), ("c", 1.0)))
S1 = ColumnPoint("string", 3, 0, distinct=2.0, top_items=(("d", 2.0), ("b", 1.0)))
S2 = ColumnPoint("string", 6, 0, distinct=4.0, top_items=(("e", 2.0), ("f", 2.0), ("g", 1.0), ("a", 1.0)))
E = ColumnPoint("null", 2, 2)
UNKNOWN = ColumnPoint("unknown", 0, 0)


def three_buckets() -> list[BucketPoints]:
    def drift(category: str | None, p: float | None, statistic: float | None, algorithm: str) -> DriftPoint:
        return DriftPoint(category, p, statistic, algorithm)

    return [
        BucketPoints(
            start=T0,
            end=T0 + DAY_MS,
            profiles=2,
            columns={"s": S0, "n": N0},
            drift={"n": drift("NO_DRIFT", 0.8, 0.1, "ks"), "s": drift("POSSIBLE_DRIFT", 0.1, None, "chi-square")},
        ),
        BucketPoints(
            start=T0 + DAY_MS,
            end=T0 + 2 * DAY_MS,
            profiles=1,
            columns={"n": N1, "s": S1, "e": E},
            drift={"n": drift("DRIFT", 0.001, 0.9, "ks"), "s": drift("NO_DRIFT", 0.5, None, "chi-square")},
            previous_drift={"n": drift("POSSIBLE_DRIFT", 0.03, 0.4, "ks")},
        ),
        BucketPoints(
            start=T0 + 3 * DAY_MS,
            end=T0 + 4 * DAY_MS,
            profiles=3,
            columns={"e": E, "s": S2, "n": N2},
            drift={"n": drift("POSSIBLE_DRIFT", 0.04, 0.5, "ks"), "s": drift("NO_DRIFT", 0.6, None, "chi-square")},
            previous_drift={"n": drift("NO_DRIFT", 0.7, 0.2, "ks"), "s": drift("DRIFT", 0.0001, None, "chi-square")},
        ),
    ]


def test_the_document_of_three_buckets_written_out():
    document = build_timeline(
        "day", three_buckets(), reference=ReferenceInfo("r1", alias="base", timestamp=T0 - DAY_MS)
    )
    assert document == {
        "granularity": "day",
        "reference": {"id": "r1", "alias": "base", "timestamp": T0 - DAY_MS},
        "segment": None,
        "buckets": [
            {"start": T0, "end": T0 + DAY_MS, "profiles": 2},
            {"start": T0 + DAY_MS, "end": T0 + 2 * DAY_MS, "profiles": 1},
            {"start": T0 + 3 * DAY_MS, "end": T0 + 4 * DAY_MS, "profiles": 3},
        ],
        "columns": {
            "s": {
                "type": "string",
                **numbers(S0, S1, S2),
                # totals: a 4, b 3, then d, e, f 2 each (by value), c and g 1 cut; shares of the non-null
                # values (6, 3, 6), 0.0 where a bucket has items but not this one
                "top_items": {
                    "a": [0.5, 0.0, 0.166667],
                    "b": [0.333333, 0.333333, 0.0],
                    "d": [0.0, 0.666667, 0.0],
                    "e": [0.0, 0.0, 0.333333],
                    "f": [0.0, 0.0, 0.333333],
                },
                "drift_category": ["POSSIBLE_DRIFT", "NO_DRIFT", "NO_DRIFT"],
                "drift_p_value": [0.1, 0.5, 0.6],
                "drift_statistic": [None, None, None],
                "drift_algorithm": ["chi-square", "chi-square", "chi-square"],
                "previous_drift_category": [None, None, "DRIFT"],
                "previous_drift_p_value": [None, None, 0.0001],
                "previous_drift_statistic": [None, None, None],
                "previous_drift_algorithm": [None, None, "chi-square"],
                "worst_drift": "POSSIBLE_DRIFT",
            },
            "n": {
                "type": "fractional",  # two buckets of three say so
                **numbers(N0, N1, N2),
                "top_items": {},
                "drift_category": ["NO_DRIFT", "DRIFT", "POSSIBLE_DRIFT"],
                "drift_p_value": [0.8, 0.001, 0.04],
                "drift_statistic": [0.1, 0.9, 0.5],
                "drift_algorithm": ["ks", "ks", "ks"],
                "previous_drift_category": [None, "POSSIBLE_DRIFT", "NO_DRIFT"],
                "previous_drift_p_value": [None, 0.03, 0.7],
                "previous_drift_statistic": [None, 0.4, 0.2],
                "previous_drift_algorithm": [None, "ks", "ks"],
                "worst_drift": "DRIFT",
            },
            "e": {
                "type": "unknown",  # only nulls: no type to show
                **numbers(None, E, E),
                "top_items": {},
                "drift_category": [None, None, None],
                "drift_p_value": [None, None, None],
                "drift_statistic": [None, None, None],
                "drift_algorithm": [None, None, None],
                "previous_drift_category": [None, None, None],
                "previous_drift_p_value": [None, None, None],
                "previous_drift_statistic": [None, None, None],
                "previous_drift_algorithm": [None, None, None],
                "worst_drift": None,
            },
        },
        "column_order": ["n", "s", "e"],  # one DRIFT bucket, then one POSSIBLE_DRIFT, then none
    }


def test_the_number_series_hold_the_points_values():
    document = build_timeline("day", three_buckets())
    s = document["columns"]["s"]
    assert s["count"] == [7, 3, 6]
    assert s["null_fraction"] == [1 / 7, 0.0, 0.0]
    assert s["top_share"] == [0.5, 0.666667, 0.333333]
    assert document["columns"]["n"]["p50"] == [2.0, 5.0, 7.0]
    assert document["columns"]["e"]["null_fraction"] == [None, 1.0, 1.0]
    assert document["columns"]["e"]["top_share"] == [None, None, None]


def test_without_a_reference_the_drift_series_are_empty_and_the_order_is_the_profiles():
    points = [BucketPoints(start=T0, end=T0 + HOUR_MS, profiles=1, columns={"b": N0, "a": S0})]
    document = build_timeline("hour", points, segment="k=v", extra={"version": 3, "segment": "kept"})
    assert document["reference"] is None
    assert document["granularity"] == "hour"
    assert document["segment"] == "kept"  # extra is applied last
    assert document["version"] == 3
    assert document["column_order"] == ["b", "a"]
    for name in ("a", "b"):
        series = document["columns"][name]
        for key in ("drift_category", "drift_p_value", "previous_drift_category", "previous_drift_statistic"):
            assert series[key] == [None]
        assert series["worst_drift"] is None
    assert build_timeline("hour", points, segment="k=v")["segment"] == "k=v"


def test_the_document_of_no_bucket():
    assert build_timeline("week", []) == {
        "granularity": "week",
        "reference": None,
        "segment": None,
        "buckets": [],
        "columns": {},
        "column_order": [],
    }


def test_the_type_seen_most_often_wins_and_null_and_unknown_do_not_count():
    points = [
        BucketPoints(start=T0 + i * DAY_MS, end=T0 + (i + 1) * DAY_MS, profiles=1, columns={"x": point})
        for i, point in enumerate([N2, N2, N0, E, E, E, UNKNOWN, UNKNOWN, UNKNOWN])
    ]
    assert build_timeline("day", points)["columns"]["x"]["type"] == "integral"


def test_frequent_items_are_ranked_by_their_total_and_absent_where_the_column_is():
    points = [
        BucketPoints(start=T0, end=T0 + DAY_MS, profiles=1, columns={"s": S0, "n": N0}),
        BucketPoints(start=T0 + DAY_MS, end=T0 + 2 * DAY_MS, profiles=1, columns={"n": N1}),
        BucketPoints(start=T0 + 2 * DAY_MS, end=T0 + 3 * DAY_MS, profiles=1, columns={"s": S2}),
    ]
    top_items = build_timeline("day", points)["columns"]["s"]["top_items"]
    # totals: a 3 + 1, b 2, e 2, f 2, c 1, g 1
    assert list(top_items) == ["a", "b", "e", "f", "c"]
    assert top_items["a"] == [0.5, None, 0.166667]
    assert top_items["c"] == [0.166667, None, 0.0]


# -- compute_timeline with its hooks ------------------------------------------------------------------------


class Loader:
    """A loader of stored views that records which batch keys it loaded."""

    def __init__(self, views: dict[str, DatasetProfileView]) -> None:
        self.views = views
        self.loaded: list[str] = []

    def __call__(self, batch: Batch) -> DatasetProfileView:
        self.loaded.append(batch.key)
        return self.views[batch.key]


def day_views() -> dict[str, DatasetProfileView]:
    """Two batches on the first day (x = 1..3 and 4, 5), one on the third (x far away)."""
    return {
        "a": logged(x=(1.0, 2.0, 3.0)),
        "b": logged(x=(4.0, 5.0)),
        "c": logged(x=(1001.0, 1002.0, 1003.0)),
    }


BATCHES = (
    Batch("b", T0 + 5 * HOUR_MS),
    Batch("c", T0 + 2 * DAY_MS + HOUR_MS),
    Batch("a", T0 + HOUR_MS),
)
REFERENCE = logged(x=(1.0, 2.0, 3.0, 4.0, 5.0))


def test_compute_merges_each_day_and_scores_it_against_the_reference_and_the_day_before():
    load = Loader(day_views())
    document = compute_timeline(
        TimelineInputs(
            batches=BATCHES,
            load=load,
            reference=REFERENCE,
            reference_info=ReferenceInfo("ref"),
            granularity="day",
            extra={"version": 7},
        )
    )
    assert document["granularity"] == "day"
    assert document["reference"] == {"id": "ref", "alias": None, "timestamp": None}
    assert document["version"] == 7
    assert document["buckets"] == [
        {"start": T0, "end": T0 + DAY_MS, "profiles": 2},
        {"start": T0 + 2 * DAY_MS, "end": T0 + 3 * DAY_MS, "profiles": 1},
    ]
    x = document["columns"]["x"]
    assert (x["count"], x["mean"], x["min"], x["max"]) == ([5, 3], [3.0, 1002.0], [1.0, 1001.0], [5.0, 1003.0])
    assert x["drift_category"] == ["NO_DRIFT", "DRIFT"]  # the first day holds the reference's values
    assert x["previous_drift_category"] == [None, "DRIFT"]
    assert x["drift_algorithm"] == ["ks", "ks"]
    assert sorted(load.loaded) == ["a", "b", "c"]  # each batch loaded once, though each day is merged twice


def test_without_a_granularity_the_default_is_chosen():
    document = compute_timeline(TimelineInputs(batches=BATCHES, load=Loader(day_views())))
    assert document["granularity"] == "hour"  # three hourly buckets, and no coarser one has as many
    assert [b["profiles"] for b in document["buckets"]] == [1, 1, 1]
    assert document["reference"] is None
    assert document["columns"]["x"]["drift_category"] == [None, None, None]
    # 1-3, then 4-5, then 1001-1003: each hour has no value of the hour before
    assert document["columns"]["x"]["previous_drift_category"] == [None, "DRIFT", "DRIFT"]


def test_given_buckets_are_used_and_the_batches_not_read():
    hourly = bucketize(BATCHES, "hour", None)
    load = Loader(day_views())
    document = compute_timeline(TimelineInputs(batches=(), load=load, buckets=hourly))
    assert document["granularity"] == "hour"  # chosen from the given buckets' batches, not from batches=()
    assert [(b["start"], b["profiles"]) for b in document["buckets"]] == [
        (T0 + HOUR_MS, 1),
        (T0 + 5 * HOUR_MS, 1),
        (T0 + 2 * DAY_MS + HOUR_MS, 1),
    ]
    assert document["columns"]["x"]["count"] == [3, 2, 3]


def test_a_segment_keeps_only_its_batches():
    batches = [Batch("a", T0, segment="k=1"), Batch("b", T0 + HOUR_MS, segment="k=2"), Batch("c", T0 + 2 * HOUR_MS)]
    load = Loader(day_views())
    document = compute_timeline(TimelineInputs(batches=batches, load=load, granularity="day", segment="k=2"))
    assert document["segment"] == "k=2"
    assert document["buckets"] == [{"start": T0, "end": T0 + DAY_MS, "profiles": 1}]
    assert document["columns"]["x"]["count"] == [2]
    assert load.loaded == ["b"]


def test_the_merged_hook_replaces_loading_and_merging():
    asked: list[tuple[int, int]] = []

    def merged(bucket: Bucket) -> DatasetProfileView:
        asked.append((bucket.start, bucket.profiles))
        return REFERENCE

    load = Loader(day_views())
    document = compute_timeline(TimelineInputs(batches=BATCHES, load=load, granularity="day", merged=merged))
    assert load.loaded == []
    assert asked == [(T0, 2), (T0 + 2 * DAY_MS, 1)]  # once per bucket, though the first is asked for twice
    assert document["columns"]["x"]["count"] == [5, 5]


def bucket_keys() -> tuple[str, str]:
    first, second = (
        Bucket(0, 0, tuple(sorted(b, key=lambda b: (b.timestamp, b.key)))).key
        for b in ([BATCHES[0], BATCHES[2]], [BATCHES[1]])
    )
    return first, second


def test_the_cached_hook_is_asked_for_each_part_under_keys_naming_what_it_depends_on():
    store: dict[str, Any] = {}
    asked: list[str] = []

    def cached(key: str, compute: Callable[[], Any]) -> Any:
        asked.append(key)
        if key not in store:
            store[key] = compute()
        return store[key]

    reference_loads: list[int] = []

    def reference() -> DatasetProfileView:
        reference_loads.append(1)
        return REFERENCE

    def inputs() -> TimelineInputs:
        return TimelineInputs(batches=BATCHES, load=load, reference=reference, reference_key="REF", granularity="day")

    load = Loader(day_views())
    first = compute_timeline(inputs(), cached=cached)
    one, two = bucket_keys()
    assert asked == [f"points/{one}", f"drift/{one}/REF", f"points/{two}", f"drift/{two}/REF", f"drift/{two}/{one}"]
    assert reference_loads == [1]  # loaded once for both buckets
    assert first == compute_timeline(
        TimelineInputs(batches=BATCHES, load=Loader(day_views()), reference=REFERENCE, granularity="day")
    )
    # the second time everything is read back: nothing is loaded, not even the reference
    load.loaded.clear()
    assert compute_timeline(inputs(), cached=cached) == first
    assert load.loaded == [] and reference_loads == [1]
    # a value kept under a key is what the document shows
    store[f"points/{one}"] = {"x": {**store[f"points/{one}"]["x"], "count": 99}}
    assert compute_timeline(inputs(), cached=cached)["columns"]["x"]["count"] == [99, 3]


def test_the_memo_is_asked_under_the_bucket_the_reference_and_the_previous_bucket():
    kept: dict[tuple[str, str, str], BucketPoints] = {}

    def memo(keys: tuple[str, str, str], compute: Callable[[], BucketPoints]) -> BucketPoints:
        if keys not in kept:
            kept[keys] = compute()
        return kept[keys]

    one, two = bucket_keys()
    load = Loader(day_views())
    given = TimelineInputs(batches=BATCHES, load=load, reference=REFERENCE, reference_key="REF", granularity="day")
    first = compute_timeline(given, memo=memo)
    assert list(kept) == [(one, "REF", ""), (two, "REF", one)]
    load.loaded.clear()
    assert compute_timeline(given, memo=memo) == first and load.loaded == []
    kept.clear()
    compute_timeline(TimelineInputs(batches=BATCHES, load=load, reference_key="REF", granularity="day"), memo=memo)
    assert list(kept) == [(one, "", ""), (two, "", one)]  # no reference: its key is not part of it


def test_bucket_points_from_views():
    bucket = Bucket(T0, T0 + DAY_MS, (Batch("a", T0), Batch("b", T0 + 1)))
    alone = bucket_points(bucket, small(), None, None)
    assert (alone.start, alone.end, alone.profiles) == (T0, T0 + DAY_MS, 2)
    assert alone.columns == column_points(small())
    assert alone.drift is None and alone.previous_drift is None
    scored = bucket_points(bucket, small(), far(), small())
    assert {n: d.category for n, d in (scored.drift or {}).items()} == {"x": "DRIFT", "s": "DRIFT", "n": "NO_DRIFT"}
    assert {n: d.category for n, d in (scored.previous_drift or {}).items()} == {
        "x": "NO_DRIFT",
        "s": "NO_DRIFT",
        "n": "NO_DRIFT",
    }


def test_bucket_views_merge_each_bucket_once_and_keep_the_three_last_asked_for():
    views = {k: logged(x=(float(i),)) for i, k in enumerate("abcde")}
    load = Loader(views)
    kept = _BucketViews(load)
    buckets = {k: Bucket(0, 1, (Batch(k, 0),)) for k in views}
    for k in "abca":  # a is asked for again while kept
        kept.get(buckets[k])
    assert load.loaded == ["a", "b", "c"]
    kept.get(buckets["d"])  # b is now the least recently asked for, and goes
    kept.get(buckets["a"])
    kept.get(buckets["c"])
    assert load.loaded == ["a", "b", "c", "d"]
    kept.get(buckets["b"])
    assert load.loaded == ["a", "b", "c", "d", "b"]
    both = Bucket(0, 1, (Batch("a", 0), Batch("e", 1)))
    merged = _BucketViews(load, keep=1).get(both)
    assert merged.columns["x"].counts == (2, 0)  # read as the merged columns' sketches
    assert merged.columns["x"].kll.get_max_value() == 4.0
    assert merged.view(None).get_column("x").get_metric("distribution").max == 4.0
