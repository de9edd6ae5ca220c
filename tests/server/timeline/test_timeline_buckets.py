"""The timeline's bucketing (whylogs_songbird/timeline.py) as pure logic: UTC bucket edges, the
default granularity at its thresholds, grouping, and merging.

Expected edges are dates written by hand (``utc(2024, 2, 29)``), turned into epoch milliseconds
by the standard library. The property tests check, whatever the timestamps, that every batch
lands in exactly one bucket that holds it, and that merging the buckets gives what whylogs' merge
of all the profiles gives.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone

import pandas as pd
import pytest
import whylogs as why
from hypothesis import given
from hypothesis import strategies as st
from whylogs.core import DatasetProfileView

from whylogs_songbird.timeline import (
    GRANULARITIES,
    MIN_POINTS,
    Batch,
    Bucket,
    TimelineError,
    bucket_bounds,
    bucketize,
    choose_granularity,
    content_key,
    merge_views,
    parse_granularity,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/timeline.py")

HOUR = 3_600_000
DAY = 24 * HOUR


def utc(*parts: int) -> int:
    """Epoch milliseconds of a UTC date and time (year, month, day[, hour, minute, second, ms])."""
    ms = parts[6] if len(parts) > 6 else 0
    return int(datetime(*parts[:6], tzinfo=timezone.utc).timestamp()) * 1000 + ms


def test_the_helper_agrees_with_known_instants():
    assert utc(1970, 1, 1) == 0
    assert utc(2026, 1, 1) == 1_767_225_600_000
    assert utc(2024, 2, 29, 12, 0, 0, 5) == 1_709_208_000_005


# -- edges of each granularity ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "granularity", "start", "end"),
    [
        # hours: the first and last millisecond of an hour
        ((2026, 3, 8, 14, 0, 0, 0), "hour", (2026, 3, 8, 14), (2026, 3, 8, 15)),
        ((2026, 3, 8, 14, 59, 59, 999), "hour", (2026, 3, 8, 14), (2026, 3, 8, 15)),
        ((2026, 12, 31, 23, 59, 59, 999), "hour", (2026, 12, 31, 23), (2027, 1, 1)),
        # days: UTC midnight to midnight
        ((2026, 3, 8, 0, 0, 0, 0), "day", (2026, 3, 8), (2026, 3, 9)),
        ((2026, 3, 8, 23, 59, 59, 999), "day", (2026, 3, 8), (2026, 3, 9)),
        ((2026, 12, 31, 12), "day", (2026, 12, 31), (2027, 1, 1)),
        ((2024, 2, 29, 12), "day", (2024, 2, 29), (2024, 3, 1)),
        ((2024, 2, 28, 23, 59, 59, 999), "day", (2024, 2, 28), (2024, 2, 29)),
        # ISO weeks: Monday 00:00 UTC to the next Monday; 2026-01-01 is a Thursday
        ((2026, 1, 1, 12), "week", (2025, 12, 29), (2026, 1, 5)),
        ((2026, 1, 4, 23, 59, 59, 999), "week", (2025, 12, 29), (2026, 1, 5)),
        ((2026, 1, 5, 0, 0, 0, 0), "week", (2026, 1, 5), (2026, 1, 12)),
        ((2025, 12, 29, 0, 0, 0, 0), "week", (2025, 12, 29), (2026, 1, 5)),
        ((2025, 12, 28, 23, 59, 59, 999), "week", (2025, 12, 22), (2025, 12, 29)),
        ((2024, 2, 29, 12), "week", (2024, 2, 26), (2024, 3, 4)),
        ((2100, 3, 1, 0), "week", (2100, 3, 1), (2100, 3, 8)),  # a Monday
        # months: the first of the month to the first of the next; leap years
        ((2026, 1, 31, 23, 59, 59, 999), "month", (2026, 1, 1), (2026, 2, 1)),
        ((2026, 2, 1, 0, 0, 0, 0), "month", (2026, 2, 1), (2026, 3, 1)),
        ((2024, 2, 29, 23, 59, 59, 999), "month", (2024, 2, 1), (2024, 3, 1)),
        ((2024, 3, 1, 0, 0, 0, 0), "month", (2024, 3, 1), (2024, 4, 1)),
        ((2100, 2, 28, 23, 59, 59, 999), "month", (2100, 2, 1), (2100, 3, 1)),  # 2100 is not a leap year
        ((2100, 3, 1, 0, 0, 0, 0), "month", (2100, 3, 1), (2100, 4, 1)),
        ((2000, 2, 29, 6), "month", (2000, 2, 1), (2000, 3, 1)),  # 2000 is one
        ((2026, 12, 31, 23, 59, 59, 999), "month", (2026, 12, 1), (2027, 1, 1)),
        ((2027, 1, 1, 0, 0, 0, 0), "month", (2027, 1, 1), (2027, 2, 1)),
        ((2026, 11, 30, 23, 59, 59, 999), "month", (2026, 11, 1), (2026, 12, 1)),
        # before 1970 (negative epoch milliseconds)
        ((1969, 12, 31, 23, 30), "hour", (1969, 12, 31, 23), (1970, 1, 1)),
        ((1969, 12, 31, 23, 30), "day", (1969, 12, 31), (1970, 1, 1)),
        ((1969, 12, 31, 23, 30), "week", (1969, 12, 29), (1970, 1, 5)),
        ((1969, 12, 31, 23, 30), "month", (1969, 12, 1), (1970, 1, 1)),
    ],
)
def test_bucket_edges_in_utc(moment, granularity, start, end):
    assert bucket_bounds(utc(*moment), granularity) == (utc(*start), utc(*end))


def test_a_leap_day_is_a_day_of_its_own_and_february_lengths():
    assert bucket_bounds(utc(2024, 2, 29), "day") == (1_709_164_800_000, 1_709_164_800_000 + DAY)
    for year, days in ((2024, 29), (2100, 28), (2000, 29), (2026, 28)):
        start, end = bucket_bounds(utc(year, 2, 10), "month")
        assert (end - start) // DAY == days, year


@pytest.mark.parametrize(("month", "days"), [(1, 31), (4, 30), (7, 31), (8, 31), (9, 30), (12, 31)])
def test_month_lengths(month, days):
    start, end = bucket_bounds(utc(2026, month, 15), "month")
    assert (start, (end - start) // DAY) == (utc(2026, month, 1), days)


def test_buckets_do_not_depend_on_the_local_time_zone(monkeypatch):
    # 2026-03-08 is the day New York moves its clocks forward: a UTC bucket still has 24 hours
    moments = [utc(2026, 3, 8, 6, 59), utc(2026, 3, 8, 7, 1), utc(2026, 11, 1, 5, 30), utc(2026, 3, 29, 1, 30)]
    expected = {(m, g): bucket_bounds(m, g) for m in moments for g in GRANULARITIES}
    for zone in ("America/New_York", "Europe/Berlin", "Pacific/Chatham", "Asia/Kolkata"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        try:
            assert {(m, g): bucket_bounds(m, g) for m in moments for g in GRANULARITIES} == expected
        finally:
            monkeypatch.undo()
            time.tzset()
    assert expected[(utc(2026, 3, 8, 7, 1), "day")] == (utc(2026, 3, 8), utc(2026, 3, 9))
    assert expected[(utc(2026, 11, 1, 5, 30), "hour")] == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 6))


def test_an_unknown_granularity_is_refused():
    with pytest.raises(TimelineError) as caught:
        bucket_bounds(0, "year")  # type: ignore[arg-type]
    assert str(caught.value) == "unknown granularity 'year': give one of hour, day, week, month"


@pytest.mark.parametrize(
    ("given_", "parsed"),
    [(None, None), ("", None), ("day", "day"), ("WEEK", "week"), ("  Month ", "month"), ("hour", "hour")],
)
def test_parse_granularity(given_, parsed):
    assert parse_granularity(given_) == parsed


def test_parse_granularity_refuses_others_showing_at_most_forty_characters():
    with pytest.raises(TimelineError) as caught:
        parse_granularity("minute")
    assert str(caught.value) == "unknown granularity 'minute': give one of hour, day, week, month"
    with pytest.raises(TimelineError) as caught:
        parse_granularity("x" * 100)
    assert str(caught.value) == f"unknown granularity {'x' * 40!r}: give one of hour, day, week, month"


# -- the default granularity at its thresholds -------------------------------------------------------


def daily(first: int, days: int, hours: tuple[int, ...] = (9,)) -> list[int]:
    return [first + d * DAY + h * HOUR for d in range(days) for h in hours]


MONDAY = utc(2026, 1, 5)


def test_min_points_is_seven():
    assert MIN_POINTS == 7


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        ([], "day"),
        # months: 7 months of daily batches give months, 6 give weeks (26 of them)
        (daily(utc(2026, 1, 1), 212), "month"),
        (daily(utc(2026, 1, 1), 181), "week"),
        # weeks: 7 ISO weeks of daily batches give weeks, 6 give days
        (daily(MONDAY, 43), "week"),
        (daily(MONDAY, 42), "day"),
        # days: 7 days of hourly batches give days, 6 give hours
        (daily(MONDAY, 7, hours=(1, 2, 3)), "day"),
        (daily(MONDAY, 6, hours=(1, 2, 3)), "hour"),
        # hours: 7 hours in one day give hours
        ([MONDAY + h * HOUR for h in range(7)], "hour"),
        # fewer than 7 everywhere: the coarsest with as many buckets as hours
        ([MONDAY + h * HOUR for h in range(6)], "hour"),
        (daily(MONDAY, 3), "day"),
        ([MONDAY, MONDAY + 7 * DAY, MONDAY + 14 * DAY], "week"),
        ([utc(2026, 1, 1), utc(2026, 3, 1), utc(2026, 5, 1)], "month"),
        ([MONDAY + 1, MONDAY + 2, MONDAY + 3], "month"),  # one instant, more or less
        # the docs' examples: 30 daily batches, 90, a year
        (daily(utc(2026, 1, 1), 30), "day"),
        (daily(utc(2026, 1, 1), 90), "week"),
        (daily(utc(2026, 1, 1), 365), "month"),
    ],
)
def test_the_default_granularity_is_the_coarsest_with_seven_buckets(stamps, expected):
    assert choose_granularity(stamps) == expected
    assert choose_granularity(iter(stamps)) == expected  # any iterable, read once


def test_min_points_can_be_given():
    stamps = daily(MONDAY, 14)  # 14 days, 2 weeks, 1 month
    assert choose_granularity(stamps, min_points=2) == "week"
    assert choose_granularity(stamps, min_points=3) == "day"
    assert choose_granularity(stamps, min_points=14) == "day"
    assert choose_granularity(stamps, min_points=15) == "day"  # fallback: days have as many as hours
    assert choose_granularity(stamps, min_points=1) == "month"


def test_repeated_timestamps_count_once():
    assert choose_granularity([MONDAY] * 10 + [MONDAY + HOUR] * 10) == "hour"


# -- grouping ------------------------------------------------------------------------------------------


def test_bucketize_groups_by_bucket_oldest_first_and_skips_empty_buckets():
    batches = [
        Batch("c", utc(2026, 1, 7, 10)),
        Batch("a", utc(2026, 1, 5, 23, 59, 59, 999)),
        Batch("b", utc(2026, 1, 5, 0)),
        Batch("d", utc(2026, 1, 7, 10)),
        Batch("e", utc(2026, 1, 6, 0)),
    ]
    buckets = bucketize(batches, "day")
    assert buckets == [
        Bucket(utc(2026, 1, 5), utc(2026, 1, 6), (batches[2], batches[1])),
        Bucket(utc(2026, 1, 6), utc(2026, 1, 7), (batches[4],)),
        Bucket(utc(2026, 1, 7), utc(2026, 1, 8), (batches[0], batches[3])),  # same time: by key
    ]
    assert [b.profiles for b in buckets] == [2, 1, 2]
    assert bucketize([], "day") == []


def test_bucketize_keeps_one_segment_when_asked():
    batches = [Batch("a", MONDAY, "region=eu"), Batch("b", MONDAY + 1, "region=us"), Batch("c", MONDAY + DAY)]
    assert [b.batches for b in bucketize(batches, "day", "region=eu")] == [(batches[0],)]
    assert [b.batches for b in bucketize(batches, "day", "")] == [(batches[2],)]
    assert [b.profiles for b in bucketize(batches, "day")] == [2, 1]
    assert bucketize(batches, "day", "region=none") == []


def test_a_bucket_key_changes_with_its_batches_and_not_their_order():
    one = Bucket(0, DAY, (Batch("x", 1), Batch("y", 2)))
    assert one.key == content_key(["y", "x"]) == content_key(iter(["x", "y"]))
    assert len(one.key) == 32 and int(one.key, 16) >= 0
    assert one.key != Bucket(0, DAY, (Batch("x", 1),)).key
    assert one.key != Bucket(0, DAY, (Batch("x", 1), Batch("z", 2))).key
    assert content_key([]) == content_key(())


def test_merging_nothing_is_refused():
    with pytest.raises(ValueError) as caught:
        merge_views([])
    assert str(caught.value) == "nothing to merge: give at least one profile view"


# -- properties: every batch in one bucket; merging the buckets equals merging everything -------------

#: From 1950 to 2100: the range this layer explores (other tests own the extremes).
stamps = st.integers(min_value=utc(1950, 1, 1), max_value=utc(2100, 12, 31, 23, 59, 59, 999))


@given(timestamp=stamps, granularity=st.sampled_from(GRANULARITIES))
def test_property_a_bucket_holds_its_timestamp_and_is_aligned(timestamp, granularity):
    start, end = bucket_bounds(timestamp, granularity)
    assert start <= timestamp < end
    assert bucket_bounds(start, granularity) == (start, end)
    assert bucket_bounds(end - 1, granularity) == (start, end)
    assert bucket_bounds(end, granularity)[0] == end  # the next bucket starts where this one ends
    first = datetime.fromtimestamp(start / 1000, tz=timezone.utc)
    assert (first.minute, first.second, first.microsecond) == (0, 0, 0)
    if granularity != "hour":
        assert first.hour == 0
    if granularity == "week":
        assert first.weekday() == 0 and end - start == 7 * DAY
    if granularity == "month":
        assert first.day == 1 and 28 * DAY <= end - start <= 31 * DAY


@functools.lru_cache(maxsize=1)
def pool() -> tuple[DatasetProfileView, ...]:
    """Small whylogs views with different counts, nulls and values."""
    views = []
    for i in range(6):
        rows = 3 + 2 * i
        frame = pd.DataFrame(
            {
                "x": [float(i * 10 + r) if r % 3 else None for r in range(rows)],
                "s": [f"v{(i + r) % 4}" for r in range(rows)],
            }
        )
        views.append(why.log(frame).view())
    return tuple(views)


def numbers(view: DatasetProfileView) -> dict[str, tuple]:
    out = {}
    for name, column in sorted(view.get_columns().items()):
        counts = column.get_metric("counts")
        distribution = column.get_metric("distribution")
        out[name] = (
            counts.n.value,
            counts.null.value,
            distribution.n,
            pytest.approx(distribution.avg, rel=1e-9, abs=1e-12),
        )
    return out


@given(
    base=stamps,
    # batches near each other (several share a bucket), or anywhere
    batches=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 70 * DAY).map(lambda o: ("near", o)), stamps.map(lambda t: ("at", t))),
            st.integers(0, 5),
        ),
        min_size=1,
        max_size=8,
    ),
    granularity=st.sampled_from(GRANULARITIES),
)
def test_property_merging_the_buckets_equals_merging_every_profile(base, batches, granularity):
    views = pool()
    batches = [(base + when if how == "near" else when, v) for (how, when), v in batches]
    found = [Batch(key=f"k{i}", timestamp=t) for i, (t, _) in enumerate(batches)]
    view_of = {f"k{i}": views[v] for i, (_, v) in enumerate(batches)}
    buckets = bucketize(found, granularity)
    # every batch in exactly one bucket, which holds its timestamp; buckets ordered and disjoint
    assert sorted(b.key for bucket in buckets for b in bucket.batches) == sorted(view_of)
    for bucket in buckets:
        assert all(bucket.start <= b.timestamp < bucket.end for b in bucket.batches)
        assert list(bucket.batches) == sorted(bucket.batches, key=lambda b: (b.timestamp, b.key))
    assert all(a.end <= b.start for a, b in zip(buckets, buckets[1:]))
    merged_buckets = [merge_views([view_of[b.key] for b in bucket.batches]) for bucket in buckets]
    for bucket, merged in zip(buckets, merged_buckets):
        rows = sum(view_of[b.key].get_column("x").get_metric("counts").n.value for b in bucket.batches)
        assert merged.get_column("x").get_metric("counts").n.value == rows
    everything = merge_views([view_of[b.key] for b in found])
    assert numbers(merge_views(merged_buckets)) == numbers(everything)
