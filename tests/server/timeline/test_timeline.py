"""The pure timeline and monitors modules on real whylogs views (no HTTP)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
import pytest
import whylogs as why
from timeline_data import DAY_MS, DAYS, SHIFT_DAY, SHIFTED, START_MS, day_frame, reference_frame, rows_of_day
from whylogs.core import DatasetProfileView

from whylogs_songbird.monitors import MonitorsError, evaluate, load_monitors, loads_monitors
from whylogs_songbird.timeline import (
    Batch,
    ColumnPoint,
    ReferenceInfo,
    TimelineError,
    TimelineInputs,
    bucket_bounds,
    bucketize,
    choose_granularity,
    column_points,
    compute_timeline,
    parse_granularity,
    timeline_frame,
)

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def daily() -> dict[str, DatasetProfileView]:
    """The reference and 30 daily batch views, by key."""
    views = {"ref": why.log(reference_frame()).view()}
    for day in range(DAYS):
        views[f"day{day}"] = why.log(day_frame(day)).view()
    return views


@pytest.fixture(scope="module")
def document(daily: dict[str, DatasetProfileView]) -> dict:
    batches = [Batch(key=f"day{d}", timestamp=START_MS + d * DAY_MS + 3 * HOUR_MS) for d in range(DAYS)]
    return compute_timeline(
        TimelineInputs(
            batches=batches,
            load=lambda b: daily[b.key],
            reference=daily["ref"],
            reference_info=ReferenceInfo(id="ref-x", alias="training"),
        )
    )


# -- buckets ---------------------------------------------------------------------------------


def test_bucket_bounds_are_utc_hours_days_iso_weeks_and_months() -> None:
    moment = 1_767_919_510_123  # 2026-01-09 00:45:10.123 UTC, a Friday
    assert bucket_bounds(moment, "hour") == (1_767_916_800_000 + 2_700_000 - 2_700_000, 1_767_920_400_000)
    assert bucket_bounds(moment, "day") == (1_767_916_800_000, 1_768_003_200_000)
    assert bucket_bounds(moment, "week") == (START_MS, START_MS + 7 * DAY_MS)  # Monday 2026-01-05
    assert bucket_bounds(moment, "month") == (1_767_225_600_000, 1_769_904_000_000)  # January 2026
    december = 1_796_083_200_000  # 2026-12-01
    assert bucket_bounds(december + 5, "month") == (december, 1_798_761_600_000)  # to 2027-01-01
    assert bucket_bounds(START_MS, "day") == (START_MS, START_MS + DAY_MS)  # the start belongs to its bucket
    assert bucket_bounds(START_MS - 1, "day") == (START_MS - DAY_MS, START_MS)


def test_default_granularity_is_the_coarsest_with_seven_points() -> None:
    def days(n: int) -> list[int]:
        return [START_MS + d * DAY_MS for d in range(n)]

    assert choose_granularity(days(30)) == "day"  # 5 weeks, 1-2 months
    assert choose_granularity(days(90)) == "week"  # 13 weeks
    assert choose_granularity(days(400)) == "month"
    assert choose_granularity([START_MS + h * HOUR_MS for h in range(30)]) == "hour"
    assert choose_granularity(days(3)) == "day"  # fewer than 7 points at any granularity: no finer than needed
    assert choose_granularity([]) == "day"


def test_parse_granularity_names_the_valid_ones() -> None:
    assert parse_granularity("Week") == "week"
    assert parse_granularity(None) is None
    with pytest.raises(TimelineError, match="hour, day, week, month"):
        parse_granularity("fortnight")


def test_bucketize_filters_segments_and_skips_empty_buckets() -> None:
    batches = [
        Batch("a", START_MS + 1, "region=eu"),
        Batch("b", START_MS + 2, "region=us"),
        Batch("c", START_MS + 3 * DAY_MS, "region=eu"),
    ]
    buckets = bucketize(batches, "day")
    assert [(b.start, b.profiles) for b in buckets] == [(START_MS, 2), (START_MS + 3 * DAY_MS, 1)]
    assert [b.profiles for b in bucketize(batches, "day", "region=us")] == [1]
    assert buckets[0].key != bucketize(batches[:1], "day")[0].key  # content identity changes with a new batch


# -- the 30-day timeline ---------------------------------------------------------------------


def test_shifted_column_drifts_from_day_20_and_not_before(document: dict) -> None:
    series = document["columns"][SHIFTED]
    categories = series["drift_category"]
    assert len(categories) == DAYS
    assert all(c == "DRIFT" for c in categories[SHIFT_DAY:]), categories
    assert all(c == "NO_DRIFT" for c in categories[:SHIFT_DAY]), categories
    assert all(p < 0.05 for p in series["drift_p_value"][SHIFT_DAY:])
    # against the previous bucket only the day of the shift stands out
    previous = series["previous_drift_category"]
    assert previous[0] is None
    assert previous[SHIFT_DAY] == "DRIFT"
    assert [c for i, c in enumerate(previous) if i not in (0, SHIFT_DAY)] == ["NO_DRIFT"] * (DAYS - 2)
    for other in ("age", "income", "color"):
        assert document["columns"][other]["drift_category"] == ["NO_DRIFT"] * DAYS, other
    assert document["column_order"][0] == SHIFTED
    assert document["columns"][SHIFTED]["worst_drift"] == "DRIFT"
    assert document["columns"]["color"]["drift_algorithm"][0] == "chi-square"
    assert document["columns"][SHIFTED]["drift_algorithm"][0] == "ks"


def test_counts_per_bucket_equal_rows_logged(document: dict) -> None:
    assert document["granularity"] == "day"
    assert [b["profiles"] for b in document["buckets"]] == [1] * DAYS
    assert [b["start"] for b in document["buckets"]] == [START_MS + d * DAY_MS for d in range(DAYS)]
    expected = [rows_of_day(d) for d in range(DAYS)]
    for name in ("score", "age", "income", "color"):
        assert document["columns"][name]["count"] == expected, name
    income = document["columns"]["income"]
    assert income["null_count"] == [rows // 20 for rows in expected]
    assert income["null_fraction"] == pytest.approx([(rows // 20) / rows for rows in expected])


def test_series_hold_the_band_distinct_and_top_share(document: dict) -> None:
    score = document["columns"][SHIFTED]
    assert score["type"] == "fractional"
    for p5, p50, p95 in zip(score["p5"], score["p50"], score["p95"]):
        assert p5 < p50 < p95
    assert score["mean"][0] == pytest.approx(600, abs=5)
    assert score["mean"][-1] == pytest.approx(650, abs=5)
    color = document["columns"]["color"]
    assert color["type"] == "string"
    assert color["distinct"] == pytest.approx([4] * DAYS, abs=0.1)
    assert color["top_share"] == pytest.approx([0.4] * DAYS, abs=0.01)
    assert list(color["top_items"]) == ["red", "green", "blue", "grey"]
    assert score["top_share"] == [None] * DAYS  # numeric columns get the band, not frequent items


def test_document_is_strict_json_and_a_frame(document: dict) -> None:
    text = json.dumps(document, allow_nan=False)
    assert json.loads(text)["reference"] == {"id": "ref-x", "alias": "training", "timestamp": None}
    frame = timeline_frame(document)
    assert len(frame) == DAYS * 4
    drifted = frame[(frame.column == SHIFTED) & (frame.drift_category == "DRIFT")]
    assert len(drifted) == DAYS - SHIFT_DAY
    assert drifted.start.min() == pd.Timestamp(START_MS + SHIFT_DAY * DAY_MS, unit="ms", tz="UTC")


def test_without_reference_drift_is_null(daily: dict[str, DatasetProfileView]) -> None:
    batches = [Batch(key=f"day{d}", timestamp=START_MS + d * DAY_MS) for d in range(3)]
    doc = compute_timeline(TimelineInputs(batches=batches, load=lambda b: daily[b.key]))
    assert doc["reference"] is None
    assert doc["columns"][SHIFTED]["drift_category"] == [None, None, None]
    assert doc["columns"][SHIFTED]["previous_drift_category"][1:] == ["NO_DRIFT", "NO_DRIFT"]


def test_hourly_uploads_merge_into_daily_buckets_like_whylogs_merge() -> None:
    frames = {}
    for day in range(2):
        for hour in range(0, 24, 3):
            frames[(day, hour)] = day_frame(day * 24 + hour)[: 50 + hour]
    views = {f"{d}-{h}": why.log(f).view() for (d, h), f in frames.items()}
    batches = [Batch(key=f"{d}-{h}", timestamp=START_MS + d * DAY_MS + h * HOUR_MS) for (d, h) in frames]
    doc = compute_timeline(TimelineInputs(batches=batches, load=lambda b: views[b.key], granularity="day"))
    assert [b["profiles"] for b in doc["buckets"]] == [8, 8]
    for day in range(2):
        day_views = [views[f"{day}-{h}"] for h in range(0, 24, 3)]
        merged = functools.reduce(lambda a, b: a.merge(b), day_views)
        expected = column_points(merged)
        for name, point in expected.items():
            series = doc["columns"][name]
            assert series["count"][day] == point.count == sum(len(frames[(day, h)]) for h in range(0, 24, 3))
            for stat in ("mean", "p5", "p50", "p95", "distinct", "null_count", "top_share"):
                value = point.value(stat)
                assert series[stat][day] == (None if value is None else pytest.approx(value, rel=1e-9)), (name, stat)
        # and whylogs' exact metrics agree with profiling the whole day at once
        whole = column_points(why.log(pd.concat([frames[(day, h)] for h in range(0, 24, 3)])).view())
        assert {n: p.count for n, p in whole.items()} == {n: p.count for n, p in expected.items()}
        assert whole["age"].mean == pytest.approx(expected["age"].mean, rel=1e-9)
    hourly = compute_timeline(TimelineInputs(batches=batches, load=lambda b: views[b.key], granularity="hour"))
    assert len(hourly["buckets"]) == 16


def test_a_cached_build_loads_only_what_changed_and_gives_the_same_document(
    daily: dict[str, DatasetProfileView],
) -> None:
    """compute_timeline with the server's hook: a second build reads every point back, and one more
    day loads only that day, the day before it (its previous drift) and the reference."""
    stored: dict[str, bytes] = {}
    loaded: list[str] = []

    def cached(key: str, compute):
        if key not in stored:
            stored[key] = json.dumps(compute()).encode()
        return json.loads(stored[key])

    def inputs(days: int) -> TimelineInputs:
        def load(batch: Batch) -> DatasetProfileView:
            loaded.append(batch.key)
            return daily[batch.key]

        def reference() -> DatasetProfileView:
            loaded.append("ref")
            return daily["ref"]

        batches = [Batch(key=f"day{d}", timestamp=START_MS + d * DAY_MS + 3 * HOUR_MS) for d in range(days)]
        return TimelineInputs(batches=batches, load=load, reference=reference, reference_key="ref", granularity="day")

    first = compute_timeline(inputs(8), cached=cached)
    assert first == compute_timeline(inputs(8))
    loaded.clear()
    assert compute_timeline(inputs(8), cached=cached) == first and loaded == []
    longer = compute_timeline(inputs(9), cached=cached)
    assert sorted(set(loaded)) == ["day7", "day8", "ref"]
    assert longer == compute_timeline(inputs(9)) and longer["buckets"][:8] == first["buckets"]


def test_column_point_round_trips_through_json(daily: dict[str, DatasetProfileView]) -> None:
    for point in column_points(daily["day0"]).values():
        assert ColumnPoint.from_json(json.loads(json.dumps(point.to_json()))) == point


# -- monitors --------------------------------------------------------------------------------

MONITORS = """
reference = "training"
[[monitor]]
columns = ["*"]
metric = "drift"
fail_on = "drift"
[[monitor]]
columns = ["income"]
metric = "null_fraction"
max = 0.2
"""


def _upto(document: dict, day: int) -> dict:
    """The document as it was on ``day`` (the latest bucket is that day)."""
    cut = dict(document)
    cut["buckets"] = document["buckets"][: day + 1]
    cut["columns"] = {
        name: {k: (v[: day + 1] if isinstance(v, list) else v) for k, v in series.items()}
        for name, series in document["columns"].items()
    }
    return cut


def test_monitors_fail_on_the_drifted_day_only(document: dict) -> None:
    monitors = loads_monitors(MONITORS)
    assert monitors.reference == "training"
    assert evaluate(monitors, _upto(document, SHIFT_DAY - 1)) == []
    failures = evaluate(monitors, _upto(document, SHIFT_DAY))
    assert [(f.column, f.metric, f.value) for f in failures] == [(SHIFTED, "drift", "DRIFT")]
    assert failures[0].bucket_start == START_MS + SHIFT_DAY * DAY_MS
    assert "against the reference (ks, p = " in failures[0].reason
    every = evaluate(monitors, document, which="all")
    assert sorted({f.bucket_start for f in every}) == [START_MS + d * DAY_MS for d in range(SHIFT_DAY, DAYS)]
    previous = loads_monitors('[[monitor]]\ncolumns = ["*"]\nmetric = "drift"\nagainst = "previous"\n')
    assert [f.bucket_start for f in evaluate(previous, document, "all")] == [START_MS + SHIFT_DAY * DAY_MS]


def test_threshold_monitors_use_min_and_max(document: dict) -> None:
    strict = loads_monitors('[[monitor]]\ncolumns = ["income"]\nmetric = "null_fraction"\nmax = 0.01\n')
    (failure,) = evaluate(strict, document)
    assert failure.reason.startswith("null_fraction = 0.04") and "above max 0.01" in failure.reason
    counts = loads_monitors('[[monitor]]\ncolumns = ["age", "color"]\nmetric = "count"\nmin = 500\nmax = 1e6\n')
    assert [f.column for f in evaluate(counts, _upto(document, 0))] == ["age", "color"]  # 400 rows < 500
    assert evaluate(counts, document) == []  # 603 rows on the last day


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[monitor]]\ncolumns = ["*"]\nmetric = "nul_fraction"\nmax = 1\n',
            "unknown metric 'nul_fraction'; valid metrics: drift, count",
        ),
        ('[[monitor]]\ncolumns = ["*"]\nmetric = "mean"\n', "monitor 1: a mean monitor needs min and/or max"),
        ('[[monitor]]\ncolumns = ["*"]\nmetric = "drift"\nfail_on = "maybe"\n', "unknown fail_on 'maybe'"),
        ('[[monitor]]\ncolumns = ["*"]\nmetric = "drift"\nmax = 3\n', "not min/max"),
        ('[[monitor]]\ncolumns = ["*"]\nmetric = "mean"\nmax = 3\nlimit = 4\n', "unknown key 'limit'"),
        ('[[monitor]]\nmetric = "mean"\nmax = 3\n', "monitor 1, columns: missing"),
        ('refrence = "x"\n[[monitor]]\ncolumns = ["*"]\nmetric = "drift"\n', "unknown top-level key 'refrence'"),
        ('reference = "x"\n', "no monitors"),
        ("[[monitor]\n", "not valid TOML"),
        ('[[monitor]]\ncolumns = ["a"]\nmetric = "mean"\nmin = 3\nmax = 1\n', "min (3.0) is above max (1.0)"),
    ],
)
def test_bad_monitors_files_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(MonitorsError) as caught:
        loads_monitors(text, source="checks.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("checks.toml: ")


def test_unknown_column_names_the_valid_ones(document: dict, tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[monitor]]\ncolumns = ["scroe"]\nmetric = "mean"\nmax = 1\n')
    expected = r"unknown column 'scroe'; the session's columns: score, age, income, color"
    with pytest.raises(MonitorsError, match=expected):
        evaluate(load_monitors(path), document)
    with pytest.raises(MonitorsError, match="does not exist"):
        load_monitors(tmp_path / "missing.toml")
