"""The buckets a timeline service keeps by day between views of a session's whole history (``_Layout``
and ``TimelineService._laid_out`` of whylogs_songbird/server/timeline_service.py, seen through
``resolve``'s ``laid``): the buckets of unchanged days are the same objects at the next view, a week
is made again exactly when one of its days changed (a day more, a day less, a batch replaced), the
batches by identity are exactly those shown and what was given out is never changed afterwards, each
session has its own layouts, kept as long as its days are. And what a document built from them says:
the granularity asked for, and each bucket's batch timestamps encoded once, within their bound.

Fakes at the seams only: the sessions' stored batches (lists in the test) with the listing and the
outline's reads (day marks, day reads); documents load small whylogs views logged in the test."""

from __future__ import annotations

import functools
import json
from typing import Any

import pandas as pd
import pytest
import whylogs as why
from stored_listing import stored
from whylogs.core import DatasetProfileView

from whylogs_songbird.server import timeline_service
from whylogs_songbird.server.timeline_service import (
    LISTED_SESSIONS,
    MemoryArtefacts,
    ResolvedView,
    StoredProfile,
    TimelineQuery,
    TimelineService,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/timeline_service.py")

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, a Thursday: its ISO week starts on Monday 2025-12-29
WEEK = 7 * DAY


@functools.cache
def logged(value: float) -> DatasetProfileView:
    return why.log(pd.DataFrame({"x": [value, value + 1.0]})).view()


def batch(name: str, timestamp: int | None, **options: Any) -> StoredProfile:
    return stored(name, timestamp, stored_at=1, **options)


class Sessions:
    """Stored batches by session id, the listing and the outline's reads of them (an unknown session
    id is a KeyError, as a store's reads never answer for another session)."""

    def __init__(self, **batches: list[StoredProfile]) -> None:
        self.batches = dict(batches)

    def list_profiles(self, session_id: str) -> list[StoredProfile]:
        return list(self.batches[session_id])

    def load(self, profile: StoredProfile) -> DatasetProfileView:
        return logged(float(len(profile.id)))

    def _timed(self, session_id: str) -> list[StoredProfile]:
        return [p for p in self.batches[session_id] if p.kind == "batch" and p.dataset_timestamp is not None]

    def batches_between(self, session_id: str, start: int | None, end: int | None) -> list[StoredProfile]:
        stamps = {p.id: p.dataset_timestamp or 0 for p in self._timed(session_id)}
        return [
            p
            for p in self._timed(session_id)
            if (start is None or stamps[p.id] >= start) and (end is None or stamps[p.id] < end)
        ]

    def references(self, session_id: str) -> list[StoredProfile]:
        return [p for p in self.batches[session_id] if p.kind == "reference"]

    def segments(self, session_id: str) -> set[str]:
        return {p.segment for p in self._timed(session_id)}

    def span(self, session_id: str) -> tuple[int, int] | None:
        stamps = [p.dataset_timestamp or 0 for p in self._timed(session_id)]
        return (min(stamps), max(stamps)) if stamps else None

    def timestamps(self, session_id: str) -> list[tuple[int, str, bool]]:
        raise AssertionError("a view within the bucket cap lists no timestamps")

    def bucket_counts(self, session_id: str, size: int, offset: int) -> tuple[int, int]:
        raise AssertionError("a view within the bucket cap counts nothing")

    def day_marks(self, session_id: str) -> dict[int, Any] | None:
        marks: dict[int, list[str]] = {}
        for p in self._timed(session_id):
            marks.setdefault((p.dataset_timestamp or 0) // DAY, []).append(p.identity)
        return {day: tuple(sorted(found)) for day, found in marks.items()}

    def service(self, **options: Any) -> TimelineService:
        outline: Any = self
        return TimelineService(self.list_profiles, self.load, MemoryArtefacts(), outline=outline, **options)


def laid(service: TimelineService, session_id: str, granularity: str, segment: str | None = None) -> Any:
    view: ResolvedView = service.resolve(session_id, TimelineQuery(granularity=granularity, segment=segment))
    assert view.laid is not None and view.batches == view.laid.batches
    return view.laid


def daily(count: int, *, prefix: str = "b", first: int = 0) -> list[StoredProfile]:
    """One batch an hour into each of ``count`` days from day ``first`` after T0's, named <prefix><day>."""
    return [batch(f"{prefix}{d}", T0 + d * DAY + HOUR) for d in range(first, first + count)]


def ids(profiles: Any) -> list[str]:
    return [p.id for p in profiles]


def keys(*names: str) -> list[str]:
    return [f"{name}:sha-{name}:1" for name in names]


def same(a: list[Any], b: list[Any]) -> list[bool]:
    return [x is y for x, y in zip(a, b, strict=True)]


def test_a_week_is_made_again_only_when_a_day_of_it_changes_and_holds_its_batches():
    sessions = Sessions(s1=daily(14))  # 2026-01-01 .. 01-14: 4 days of the first week, 7, then 3
    service = sessions.service()
    first = laid(service, "s1", "week")
    weeks = [(T0 - 3 * DAY, T0 + 4 * DAY, 4), (T0 + 4 * DAY, T0 + 11 * DAY, 7), (T0 + 11 * DAY, T0 + 18 * DAY, 3)]
    assert [(b.start, b.end, b.profiles) for b in first.buckets] == weeks
    assert same(laid(service, "s1", "week").buckets, first.buckets) == [True, True, True]  # nothing changed

    sessions.batches["s1"][6] = batch("b6'", T0 + 6 * DAY + HOUR)  # 2026-01-07 stored again
    changed = laid(service, "s1", "week")
    assert same(changed.buckets, first.buckets) == [True, False, True]
    assert [b.key for b in changed.buckets[1].batches] == keys("b4", "b5", "b6'", "b7", "b8", "b9", "b10")

    sessions.batches["s1"].append(batch("b16", T0 + 16 * DAY + HOUR))  # a fourth day in the third week
    grown = laid(service, "s1", "week")
    assert same(grown.buckets, changed.buckets) == [True, True, False]
    assert [b.key for b in grown.buckets[2].batches] == keys("b11", "b12", "b13", "b16")

    del sessions.batches["s1"][13]  # 2026-01-14 emptied: three days again
    shrunk = laid(service, "s1", "week")
    assert same(shrunk.buckets, grown.buckets) == [True, True, False]
    assert [b.key for b in shrunk.buckets[2].batches] == keys("b11", "b12", "b16")
    assert [(b.start, b.end) for b in shrunk.buckets] == [(start, end) for start, end, _ in weeks]


def test_a_month_is_made_again_only_when_a_day_of_it_changes():
    sessions = Sessions(s1=daily(3, prefix="d", first=-2) + daily(2))  # 2025-12-30, 12-31, 2026-01-01 (twice), 01-02
    service = sessions.service()
    first = laid(service, "s1", "month")
    assert [(b.start, b.profiles) for b in first.buckets] == [(T0 - 31 * DAY, 2), (T0, 3)]
    sessions.batches["s1"].append(batch("late", T0 + 30 * DAY + 23 * HOUR))  # 2026-01-31 23:00
    later = laid(service, "s1", "month")
    assert same(later.buckets, first.buckets) == [True, False]
    assert [b.key for b in later.buckets[1].batches] == keys("b0", "d0", "b1", "late")
    assert later.buckets[1].end == T0 + 31 * DAY


def test_with_a_segment_an_unchanged_day_keeps_its_bucket_and_only_that_segment_is_shown():
    batches = [batch(f"a{d}", T0 + d * DAY + HOUR, segment="a=1") for d in range(4)]
    batches += [batch(f"n{d}", T0 + d * DAY + 2 * HOUR) for d in range(4)]
    sessions = Sessions(s1=batches)
    service = sessions.service()
    first = laid(service, "s1", "day", "a=1")
    assert ids(first.batches) == ["a0", "a1", "a2", "a3"]
    assert first.by_identity == {p.identity: p for p in first.batches}
    sessions.batches["s1"][6] = batch("n2'", T0 + 2 * DAY + 2 * HOUR)  # day 2 changes, outside the segment
    again = laid(service, "s1", "day", "a=1")
    assert same(again.buckets, first.buckets) == [True, True, False, True]
    assert ids(again.batches) == ["a0", "a1", "a2", "a3"] and again.by_identity == first.by_identity


def test_the_batches_by_identity_are_those_shown_and_what_was_given_out_never_changes():
    sessions = Sessions(s1=daily(3))
    service = sessions.service()
    first = laid(service, "s1", "day")
    given = dict(first.by_identity)
    assert given == {p.identity: p for p in sessions.batches["s1"]}

    sessions.batches["s1"].append(batch("b3", T0 + 3 * DAY + HOUR))  # a new day, none changed
    grown = laid(service, "s1", "day")
    assert first.by_identity == given
    assert grown.by_identity == {p.identity: p for p in grown.batches}
    assert ids(grown.batches) == ["b0", "b1", "b2", "b3"]

    held = dict(grown.by_identity)
    sessions.batches["s1"][1] = batch("b1'", T0 + DAY + HOUR)  # as many days, one changed
    replaced = laid(service, "s1", "day")
    assert grown.by_identity == held
    assert replaced.by_identity == {p.identity: p for p in replaced.batches}
    assert ids(replaced.batches) == ["b0", "b1'", "b2", "b3"]

    held = dict(replaced.by_identity)
    del sessions.batches["s1"][0]  # a day fewer
    shrunk = laid(service, "s1", "day")
    assert replaced.by_identity == held
    assert shrunk.by_identity == {p.identity: p for p in shrunk.batches} and ids(shrunk.batches) == ["b1'", "b2", "b3"]


def test_each_session_has_its_own_days_and_buckets():
    sessions = Sessions(s1=daily(3), s2=daily(2, prefix="c", first=10))
    service = sessions.service()
    first = laid(service, "s1", "day")
    other = laid(service, "s2", "day")
    assert ids(first.batches) == ["b0", "b1", "b2"] and ids(other.batches) == ["c10", "c11"]
    assert [b.start for b in other.buckets] == [T0 + 10 * DAY, T0 + 11 * DAY]
    again = laid(service, "s1", "day")  # s2's view in between changed nothing of s1's
    assert same(again.buckets, first.buckets) == [True, True, True]


def test_the_layouts_kept_are_those_of_the_sessions_whose_days_are_kept():
    sessions = Sessions(**{f"s{i}": daily(1, prefix=f"s{i}-") for i in range(LISTED_SESSIONS + 1)})
    service = sessions.service()
    kept = {}
    for i in range(LISTED_SESSIONS):
        kept[f"s{i}"] = laid(service, f"s{i}", "day").buckets
        laid(service, f"s{i}", "hour")
    laid(service, f"s{LISTED_SESSIONS}", "day")  # a ninth session: s0's days and layouts go
    assert sorted(service._layouts) == sorted(
        [(f"s{i}", "day", None) for i in range(1, LISTED_SESSIONS + 1)]
        + [(f"s{i}", "hour", None) for i in range(1, LISTED_SESSIONS)]
    )
    assert same(laid(service, "s1", "day").buckets, kept["s1"]) == [True]
    assert same(laid(service, "s0", "day").buckets, kept["s0"]) == [False]  # read and made again


def test_without_day_marks_every_batch_is_the_session_s_timed_batches_as_listed():
    class Unmarked(Sessions):
        def day_marks(self, session_id: str) -> None:
            return None

    sessions = Unmarked(
        s1=[
            batch("late", T0 + 5 * DAY),
            batch("untimed", None),
            batch("ref", None, kind="reference"),
            batch("early", T0),
            batch("epoch", 0),
        ],
        s2=daily(2),
    )
    service = sessions.service()
    assert ids(service.every_batch("s1", sessions)) == ["late", "early", "epoch"]
    assert ids(service.every_batch("s2", sessions)) == ["b0", "b1"]


@pytest.mark.parametrize(
    ("granularity", "starts"),
    [("week", [T0 - 3 * DAY, T0 + 4 * DAY]), ("hour", [T0 + d * DAY + HOUR for d in range(8)])],
)
def test_a_document_is_of_the_granularity_asked_for_not_the_one_it_would_choose(granularity, starts):
    sessions = Sessions(s1=daily(8))  # eight days: a view of its own choosing is daily
    service = sessions.service()
    assert service.document("s1", TimelineQuery())["granularity"] == "day"
    document = service.document("s1", TimelineQuery(granularity=granularity))
    assert document["granularity"] == granularity
    assert [b["start"] for b in document["buckets"]] == starts


def encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The starts of the buckets whose batch timestamps are encoded from now on."""
    encoded: list[int] = []
    real = timeline_service._stamps_json

    def counted(bucket: Any) -> bytes:
        encoded.append(bucket.start)
        return real(bucket)

    monkeypatch.setattr(timeline_service, "_stamps_json", counted)
    return encoded


def test_a_refresh_encodes_the_batch_timestamps_of_the_changed_bucket_only(monkeypatch):
    sessions = Sessions(s1=daily(4))
    encoded = encodes(monkeypatch)
    service = sessions.service()
    daily_view = TimelineQuery(granularity="day")
    assert json.loads(service.document_bytes("s1", daily_view))["batch_timestamps"] == [
        [T0 + d * DAY + HOUR] for d in range(4)
    ]
    assert encoded == [T0 + d * DAY for d in range(4)]
    encoded.clear()
    sessions.batches["s1"].append(batch("b2+", T0 + 2 * DAY + 5 * HOUR))
    document = service.document_bytes("s1", daily_view)
    assert encoded == [T0 + 2 * DAY]
    assert json.loads(document)["batch_timestamps"][2] == [T0 + 2 * DAY + HOUR, T0 + 2 * DAY + 5 * HOUR]
    stamps = b"[[1767229200000],[1767315600000],[1767402000000,1767416400000],[1767488400000]]"
    assert b'"batch_timestamps":' + stamps in document


@pytest.mark.parametrize(("spare", "encoded_again"), [(0, [T0 + DAY]), (-1, [T0, T0 + DAY])])
def test_the_encoded_batch_timestamps_are_kept_within_their_bound(monkeypatch, spare, encoded_again):
    each = len(b"[1767229200000]")  # one batch's timestamp, as encoded
    monkeypatch.setattr(timeline_service, "STAMPS_BYTES", 2 * each + spare)
    sessions = Sessions(s1=daily(2))
    encoded = encodes(monkeypatch)
    service = sessions.service()
    service.document_bytes("s1", TimelineQuery(granularity="day"))
    assert encoded == [T0, T0 + DAY]
    encoded.clear()
    sessions.batches["s1"].append(batch("b1+", T0 + DAY + 2 * HOUR))
    service.document_bytes("s1", TimelineQuery(granularity="day"))
    assert encoded == encoded_again  # one byte short: the day encoded first went, and is encoded again
