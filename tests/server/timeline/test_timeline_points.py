"""The timeline's pure parts beside its buckets (whylogs_songbird/timeline.py): time bounds and UTC
text, the calendar arithmetic, a column's numbers in one bucket and their JSON, the drift order
of columns, and the DataFrame of a document.

Expected values are written out by hand or come from Python's own ``datetime`` calendar;
tests/test_timeline_buckets.py holds the bucketing and merging.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from whylogs_songbird.timeline import (
    DAY_MS,
    HOUR_MS,
    NUMBER_SERIES,
    ColumnPoint,
    TimelineError,
    _finite,
    civil_date,
    civil_days,
    content_key,
    drift_order,
    parse_time_bound,
    timeline_frame,
    utc_text,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/timeline.py")

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


# -- start/end bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "millis"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0),
        (" 1767225600000 ", T0),
        ("-1000", -1000),
        ("2026-01-01", T0),
        ("2026-01-01T01:30", T0 + HOUR_MS + 30 * 60_000),
        ("2026-01-01T00:00:00.250Z", T0 + 250),
        ("2026-01-01T02:00:00+02:00", T0),
        ("2025-12-31T19:00-05:00", T0),
        ("2024-02-29", 1_709_164_800_000),
        ("0001-01-01", -62_135_596_800_000),
        ("9999-12-31T23:59:59.999", 253_402_300_799_999),
    ],
)
def test_a_bound_is_epoch_milliseconds_or_an_iso_time_in_utc(given_, millis):
    assert parse_time_bound(given_) == millis


def test_the_last_bound_is_one_past_year_9999_and_the_first_is_year_1():
    assert parse_time_bound("253402300800000") == 253_402_300_800_000  # 10000-01-01: an end just past 9999
    with pytest.raises(TimelineError) as caught:
        parse_time_bound("253402300800001", "end")
    assert str(caught.value) == "end='253402300800001' is outside years 1 to 9999: give a time in that range"
    assert parse_time_bound("-62135596800000") == -62_135_596_800_000
    with pytest.raises(TimelineError) as caught:
        parse_time_bound("-62135596800001")
    assert str(caught.value) == "start='-62135596800001' is outside years 1 to 9999: give a time in that range"


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "12345678901234567", "1e3", "0x10"])
def test_other_bounds_say_what_to_give(text):
    with pytest.raises(TimelineError) as caught:
        parse_time_bound(text, "end")
    assert str(caught.value) == (
        f"end={text!r} is not a time: give epoch milliseconds or an ISO 8601 date or date-time (UTC unless it "
        "has an offset), e.g. 2024-05-01 or 2024-05-01T12:00Z"
    )


def test_a_bound_with_microseconds_is_floored_to_the_millisecond():
    assert parse_time_bound("2026-01-01T00:00:00.000999") == T0
    assert parse_time_bound("1969-12-31T23:59:59.9995") == -1
    assert isinstance(parse_time_bound("2026-01-01T00:00:00.0005"), int)


def test_an_out_of_range_bound_is_shown_as_given_cut_at_40_characters():
    given_ = " " * 35 + "9999999999999999"
    with pytest.raises(TimelineError) as caught:
        parse_time_bound(given_)
    assert str(caught.value) == f"start={given_[:40]!r} is outside years 1 to 9999: give a time in that range"


def test_a_content_key_is_the_sha256_of_the_sorted_lines_cut_to_32():
    import hashlib

    assert content_key(["b", "a"]) == hashlib.sha256(b"a\nb").hexdigest()[:32]
    assert content_key([]) == hashlib.sha256(b"").hexdigest()[:32]


def test_a_long_bad_bound_is_shown_cut_at_40_characters():
    with pytest.raises(TimelineError) as caught:
        parse_time_bound("x" * 45)
    assert str(caught.value).startswith(f"start={'x' * 40!r} is not a time")


# -- the calendar ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        (0, "1970-01-01 00:00 UTC"),
        (T0 - 60_000, "2025-12-31 23:59 UTC"),
        (T0 + 13 * HOUR_MS + 7 * 60_000 + 59_999, "2026-01-01 13:07 UTC"),
        (1_709_164_800_000 + 23 * HOUR_MS, "2024-02-29 23:00 UTC"),
        (-1, "1969-12-31 23:59 UTC"),
        (-62_135_596_800_000, "0001-01-01 00:00 UTC"),
        (253_402_300_800_000, "10000-01-01 00:00 UTC"),
        (-62_167_219_200_000, "0000-01-01 00:00 UTC"),
    ],
)
def test_utc_text_of_any_instant(millis, text):
    assert utc_text(millis) == text


@pytest.mark.parametrize(
    ("day", "ymd"),
    [
        (0, (1970, 1, 1)),
        (-1, (1969, 12, 31)),
        (59, (1970, 3, 1)),
        (11_016, (2000, 2, 29)),
        (11_017, (2000, 3, 1)),
        (-25_508, (1900, 3, 1)),
        (-25_509, (1900, 2, 28)),
        (20_513, (2026, 3, 1)),
        (20_453, (2025, 12, 31)),
        (20_454, (2026, 1, 1)),
        (-719_528, (0, 1, 1)),
        (2_932_897, (10000, 1, 1)),
    ],
)
def test_known_dates_both_ways(day, ymd):
    assert civil_date(day) == ymd
    assert civil_days(*ymd) == day


@given(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)))
def test_property_the_calendar_is_python_s(day):
    days = (day - date(1970, 1, 1)).days
    assert civil_date(days) == (day.year, day.month, day.day)
    assert civil_days(day.year, day.month, day.day) == days


# -- a column's numbers in one bucket --------------------------------------------------------------


def test_finite_rounds_to_twelve_significant_digits_and_drops_nan_and_inf():
    assert _finite(1 / 3) == 0.333333333333
    assert _finite(123456789.123456789) == 123456789.123
    assert _finite(2 / 3, digits=3) == 0.667
    assert [_finite(v) for v in (None, math.nan, math.inf, -math.inf)] == [None] * 4
    assert _finite(5) == 5.0 and isinstance(_finite(5), float)


def test_non_null_and_null_fraction():
    assert ColumnPoint().non_null is None and ColumnPoint().null_fraction is None
    assert ColumnPoint(count=10).non_null == 10
    assert ColumnPoint(count=10, null_count=3).non_null == 7
    assert ColumnPoint(count=10, null_count=3).null_fraction == 0.3
    assert ColumnPoint(count=0, null_count=0).null_fraction is None
    assert ColumnPoint(count=10).null_fraction is None


def test_item_and_top_shares_are_of_the_non_null_values_at_most_one():
    point = ColumnPoint(count=12, null_count=2, top_items=(("a", 5.0), ("b", 2.0)))
    assert (point.item_share("a"), point.item_share("b"), point.item_share("zz")) == (0.5, 0.2, 0.0)
    assert point.top_share == 0.5
    over = ColumnPoint(count=4, top_items=(("a", 9.0),))  # an estimate above the count
    assert (over.item_share("a"), over.top_share) == (1.0, 1.0)
    thirds = ColumnPoint(count=3, top_items=(("a", 1.0),))
    assert thirds.top_share == 0.333333  # rounded to 6 decimals
    assert ColumnPoint(count=3).item_share("a") is None and ColumnPoint(count=3).top_share is None
    all_null = ColumnPoint(count=2, null_count=2, top_items=(("a", 1.0),))
    assert all_null.item_share("a") is None and all_null.top_share is None
    no_count = ColumnPoint(top_items=(("a", 1.0),))
    assert no_count.item_share("a") is None


def test_value_reads_only_the_number_series():
    point = ColumnPoint(count=4, null_count=1, mean=2.5, stddev=1.0, min=1.0, p5=1.0, p50=2.0, p95=4.0, max=4.0)
    point = ColumnPoint(**{**point.__dict__, "distinct": 3.0, "top_items": (("1", 2.0),)})
    assert [point.value(name) for name in NUMBER_SERIES] == [
        4,
        1,
        0.25,
        2.5,
        1.0,
        1.0,
        1.0,
        2.0,
        4.0,
        4.0,
        3.0,
        0.666667,
    ]
    for other in ("top_items", "inferred_type", "non_null", "COUNT"):
        with pytest.raises(KeyError) as caught:
            point.value(other)
        assert caught.value.args == (other,)


def test_a_point_round_trips_through_json():
    point = ColumnPoint("fractional", 9, 1, 2.5, 0.5, 1.0, 1.1, 2.0, 3.9, 4.0, 7.0, (("x", 3.0), ("y", 1.0)))
    data = point.to_json()
    assert data == {
        "type": "fractional",
        "count": 9,
        "null_count": 1,
        "mean": 2.5,
        "stddev": 0.5,
        "min": 1.0,
        "p5": 1.1,
        "p50": 2.0,
        "p95": 3.9,
        "max": 4.0,
        "distinct": 7.0,
        "top_items": [["x", 3.0], ["y", 1.0]],
    }
    assert ColumnPoint.from_json(data) == point


def test_a_point_from_sparse_json_has_defaults():
    assert ColumnPoint.from_json({}) == ColumnPoint()
    assert ColumnPoint.from_json({"type": None, "top_items": None}).inferred_type == "unknown"
    assert ColumnPoint.from_json({"top_items": [[1, "2"]]}).top_items == (("1", 2.0),)


# -- drift order -----------------------------------------------------------------------------------


def test_columns_are_ordered_by_drift_then_possible_drift_then_smallest_p_value():
    columns = {
        "calm": {"drift_category": ["NO_DRIFT", "NO_DRIFT"], "drift_p_value": [0.9, 0.8]},
        "maybe": {"drift_category": ["POSSIBLE_DRIFT", "NO_DRIFT"], "drift_p_value": [0.04, 0.5]},
        "drifted_once": {"drift_category": ["DRIFT", "NO_DRIFT"], "drift_p_value": [0.001, 0.7]},
        "drifted_twice": {"drift_category": ["DRIFT", "DRIFT"], "drift_p_value": [0.01, 0.02]},
        "maybe_twice": {"drift_category": ["POSSIBLE_DRIFT", "POSSIBLE_DRIFT"], "drift_p_value": [0.06, 0.07]},
        "lower_p": {"drift_category": ["NO_DRIFT", None], "drift_p_value": [0.2, None]},
        "no_drift_data": {},
        "also_none": {"drift_category": None, "drift_p_value": [None]},
    }
    assert drift_order(columns) == [
        "drifted_twice",
        "drifted_once",
        "maybe_twice",
        "maybe",
        "lower_p",
        "calm",
        "no_drift_data",
        "also_none",
    ]


def test_ties_keep_the_profile_s_column_order():
    same = {"drift_category": ["DRIFT"], "drift_p_value": [0.01]}
    assert drift_order({"b": same, "a": same, "c": same}) == ["b", "a", "c"]
    assert drift_order({}) == []


# -- the DataFrame ---------------------------------------------------------------------------------


def test_the_frame_has_a_row_per_column_and_bucket_with_every_series():
    document = {
        "buckets": [
            {"start": T0, "end": T0 + DAY_MS, "profiles": 2},
            {"start": T0 + DAY_MS, "end": T0 + 2 * DAY_MS, "profiles": 1},
        ],
        "columns": {
            "a": {"count": [3, 4], "mean": [1.5], "drift_category": ["NO_DRIFT", "DRIFT"]},
            "b": {"previous_drift_p_value": [None, 0.01]},
        },
    }
    frame = timeline_frame(document)
    assert list(frame.columns[:4]) == ["start", "end", "profiles", "column"]
    assert list(frame.columns[4:]) == [
        *NUMBER_SERIES,
        "drift_category",
        "drift_p_value",
        "drift_statistic",
        "drift_algorithm",
        "previous_drift_category",
        "previous_drift_p_value",
    ]
    assert list(frame["column"]) == ["a", "a", "b", "b"]
    assert list(frame["profiles"]) == [2, 1, 2, 1]
    assert list(frame["start"]) == [pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-01-02", tz="UTC")] * 2
    assert frame["end"].iloc[1] == pd.Timestamp("2026-01-03", tz="UTC")
    assert list(frame["count"].iloc[:2]) == [3, 4]
    assert frame["mean"].iloc[0] == 1.5 and pd.isna(frame["mean"].iloc[1])  # a series shorter than the buckets
    assert list(frame["drift_category"].iloc[:2]) == ["NO_DRIFT", "DRIFT"]
    assert frame["previous_drift_p_value"].iloc[3] == 0.01 and pd.isna(frame["count"].iloc[2])


def test_an_empty_document_is_an_empty_frame_with_the_columns():
    frame = timeline_frame({})
    assert len(frame) == 0 and len(frame.columns) == 4 + len(NUMBER_SERIES) + 6
    assert len(timeline_frame({"buckets": None, "columns": None})) == 0


def test_a_bucket_outside_what_pandas_holds_is_not_a_time():
    document = {
        "buckets": [{"start": 10**19, "end": T0, "profiles": 1}],  # a stored value beyond int64 nanoseconds
        "columns": {"a": {"count": [1]}},
    }
    frame = timeline_frame(document)
    assert pd.isna(frame["start"].iloc[0]) and frame["end"].iloc[0] == pd.Timestamp(
        datetime(2026, 1, 1, tzinfo=timezone.utc)
    )
