"""What a background refresh of a watched timeline reads of the session's batches (the listing seam of
whylogs_songbird/server/timeline_service.py, ``TimelineService.every_batch``): with the outline's
day marks, a batch landing reads only its own day again, whatever the session's history, and the
document equals the one a fresh service builds from the whole listing.

Fakes at the seams only: the session's stored profiles (a list in the test), the outline's reads of
them (counted), and their loader (small whylogs views logged in the test)."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import pandas as pd
import pytest
import whylogs as why
from stored_listing import stored
from whylogs.core import DatasetProfileView

from whylogs_songbird import timeline
from whylogs_songbird.server import timeline_service
from whylogs_songbird.server.timeline_service import (
    LISTED_SESSIONS,
    WATCHED_KEY,
    MemoryArtefacts,
    StoredProfile,
    TimelineQuery,
    TimelineService,
)
from whylogs_songbird.timeline import bucketize, content_key

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/timeline_service.py")

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
DAYS = 20


@functools.cache
def logged(value: float) -> DatasetProfileView:
    return why.log(pd.DataFrame({"x": [value, value + 1.0]})).view()


def batch(name: str, timestamp: int, *, pending: bool = False) -> StoredProfile:
    return stored(name, timestamp, stored_at=1, pending=pending)


class Session:
    """Session ``s1``'s stored profiles, its whole listing and the outline's narrower reads, each counted."""

    def __init__(self) -> None:
        self.profiles = [batch(f"b{i}", T0 + (i // 2) * DAY + (i % 2) * HOUR) for i in range(2 * DAYS)]
        self.listed = 0
        self.days_read: list[int] = []
        self.version = 1

    def list_profiles(self, session_id: str) -> list[StoredProfile]:
        self.listed += 1
        return list(self.profiles)

    def load(self, profile: StoredProfile) -> DatasetProfileView:
        return logged(float(len(profile.identity) % 7))

    def _batches(self) -> list[StoredProfile]:
        return [p for p in self.profiles if p.dataset_timestamp is not None]

    # the outline

    def batches_between(self, session_id: str, start: int | None, end: int | None) -> list[StoredProfile]:
        assert start is not None and end == start + DAY  # here only a day at a time
        self.days_read.append(start)
        return [p for p in self._batches() if start <= (p.dataset_timestamp or 0) < end]

    def references(self, session_id: str) -> list[StoredProfile]:
        return []

    def segments(self, session_id: str) -> list[str]:
        return sorted({p.segment for p in self._batches()})

    def span(self, session_id: str) -> tuple[int, int] | None:
        stamps = [p.dataset_timestamp or 0 for p in self._batches()]
        return (min(stamps), max(stamps)) if stamps else None

    def bucket_counts(self, session_id: str, size: int, offset: int) -> tuple[int, int]:
        raise AssertionError("a view within the bucket cap counts nothing")

    def timestamps(self, session_id: str) -> list[tuple[int, str, bool]]:
        raise AssertionError("a view within the bucket cap lists no timestamps")

    def day_marks(self, session_id: str) -> dict[int, Any]:
        marks: dict[int, list[tuple[str, bool]]] = {}
        for p in self._batches():
            marks.setdefault((p.dataset_timestamp or 0) // DAY, []).append((p.identity, p.pending))
        return {day: tuple(sorted(found)) for day, found in marks.items()}

    def service(self, *, outline: bool = True) -> TimelineService:
        return TimelineService(
            self.list_profiles,
            self.load,
            MemoryArtefacts(),
            version=lambda session_id: f"v{self.version}",
            outline=self if outline else None,  # type: ignore[arg-type]
            state=lambda profile, patient: "pending" if profile.pending else "ready",
        )

    def lands(self, profile: StoredProfile) -> None:
        self.profiles.append(profile)
        self.version += 1


DAILY = TimelineQuery(granularity="day")


def fresh(session: Session, query: TimelineQuery = DAILY) -> bytes:
    """The document a service that kept nothing builds from the whole listing."""
    return session.service(outline=False).document_bytes("s1", query)


def test_a_refresh_after_one_batch_lands_reads_only_that_batch_s_day():
    session = Session()
    service = session.service()
    first = service.document_bytes("s1", DAILY, watched=True)
    assert service.cache.get("s1", WATCHED_KEY) is not None
    assert session.listed == 1 and session.days_read == []  # every day new: one listing
    assert first == fresh(session)
    session.listed = 0

    session.lands(batch("late", T0 + 7 * DAY + 5 * HOUR))  # into day 7 of 20
    service.batch_landed("s1")  # what the background refresh runs
    assert session.listed == 0 and session.days_read == [T0 + 7 * DAY]
    assert service.listed == {"listing": 1, "day": 1}
    refreshed = service.document_bytes("s1", DAILY)  # stored by the refresh: nothing read again
    assert session.days_read == [T0 + 7 * DAY]
    assert refreshed == fresh(session) != first
    assert json.loads(refreshed)["buckets"][7]["profiles"] == 3

    session.lands(batch("new", T0 + 30 * DAY))  # a new day
    service.batch_landed("s1")
    assert session.days_read == [T0 + 7 * DAY, T0 + 30 * DAY]
    assert service.document_bytes("s1", DAILY) == fresh(session)


def test_a_day_whose_batch_was_summarised_or_removed_is_read_again_and_only_it():
    session = Session()
    session.profiles[4] = dataclasses.replace(session.profiles[4], pending=True)  # day 2
    service = session.service()
    assert json.loads(service.document_bytes("s1", DAILY))["pending"] == ["b4"]
    session.profiles[4] = dataclasses.replace(session.profiles[4], pending=False)  # summarised
    session.version += 1
    assert service.document_bytes("s1", DAILY) == fresh(session)
    assert session.days_read == [T0 + 2 * DAY]
    del session.profiles[10:12]  # day 5 gone: nothing to read
    del session.profiles[0]  # day 0 loses one
    session.version += 1
    assert service.document_bytes("s1", DAILY) == fresh(session)
    assert session.days_read == [T0 + 2 * DAY, T0]
    session.version += 1  # a new version, no day changed (e.g. a reference landed): nothing read
    assert service.document_bytes("s1", DAILY, watched=True) == fresh(session)
    assert session.days_read == [T0 + 2 * DAY, T0] and service.listed["listing"] == 1


def test_most_days_changed_are_listed_at_once_and_other_granularities_share_the_days():
    session = Session()
    service = session.service()
    service.document_bytes("s1", DAILY)
    for i, profile in enumerate(session.profiles):
        if i % 2 == 0:
            session.profiles[i] = dataclasses.replace(profile, identity=profile.identity + "x")  # stored again
    session.version += 1
    weekly = TimelineQuery(granularity="week")
    assert service.document_bytes("s1", weekly) == fresh(session, weekly)
    assert session.days_read == [] and service.listed == {"listing": 2}
    hourly = TimelineQuery(granularity="hour")
    assert service.document_bytes("s1", hourly) == fresh(session, hourly)
    assert service.listed == {"listing": 2}


def test_a_refresh_after_one_batch_lands_buckets_hashes_and_loads_only_that_day_s_batches(monkeypatch):
    """The kept buckets of the unchanged days are used again: only the changed day's batches are
    bucketed and hashed into a content key, and loaded with its neighbours' (the drifts between them)."""
    session = Session()
    service = session.service()
    service.document_bytes("s1", DAILY, watched=True)
    session.listed = 0
    bucketed: list[int] = []
    hashed: list[str] = []
    loaded: list[str] = []

    def counted_bucketize(batches: Any, *args: Any, **kwargs: Any) -> Any:
        batches = list(batches)
        bucketed.append(len(batches))
        return bucketize(batches, *args, **kwargs)

    def counted_content_key(parts: Any) -> str:
        parts = list(parts)
        hashed.extend(p for p in parts if ":sha-" in p)  # a batch's identity
        return content_key(parts)

    def counted_load(profile: StoredProfile) -> DatasetProfileView:
        loaded.append(profile.id)
        return session.load(profile)

    monkeypatch.setattr(timeline_service, "bucketize", counted_bucketize)
    monkeypatch.setattr(timeline, "content_key", counted_content_key)
    service.load = counted_load
    session.lands(batch("late", T0 + 7 * DAY + 5 * HOUR))  # into day 7 of 20
    service.batch_landed("s1")
    assert session.days_read == [T0 + 7 * DAY] and session.listed == 0
    assert bucketed == [3]  # day 7's three batches, not the session's 41
    assert sorted(hashed) == sorted(p.identity for p in session.profiles if p.id in ("b14", "b15", "late"))
    # day 7, and its neighbours for the drift between them (days 6 and 8)
    assert set(loaded) == {"b12", "b13", "b14", "b15", "late", "b16", "b17"}
    assert service.document_bytes("s1", DAILY) == fresh(session)


@pytest.mark.parametrize("granularity", ["hour", "day", "week", "month"])
def test_kept_buckets_give_the_document_a_fresh_service_builds_as_days_change(granularity):
    session = Session()
    for i in range(0, len(session.profiles), 3):  # a third of the batches segmented
        session.profiles[i] = dataclasses.replace(session.profiles[i], segment="a=1")
    service = session.service()
    queries = [TimelineQuery(granularity=granularity), TimelineQuery(granularity=granularity, segment="a=1")]

    def same() -> None:
        for query in queries:
            document = service.document_bytes("s1", query)
            assert document == fresh(session, query)
            assert document == compact(json.loads(document))  # the batch timestamps spliced in as encoded

    same()
    session.lands(batch("mid-week", T0 + 9 * DAY + 2 * HOUR))  # a day inside a week and a month
    same()
    session.lands(dataclasses.replace(batch("seg", T0 + 9 * DAY + 3 * HOUR), segment="a=1"))
    same()
    session.lands(batch("held", T0 + 3 * DAY, pending=True))  # left out while pending, listed
    held = json.loads(service.document_bytes("s1", queries[0]))
    assert held["pending"] == ["held"] and service.document_bytes("s1", queries[0]) == fresh(session, queries[0])
    session.profiles[-1] = dataclasses.replace(session.profiles[-1], pending=False)  # summarised
    session.version += 1
    same()
    del session.profiles[2:6]  # days 1 and 2 gone
    session.version += 1
    same()
    session.lands(batch("early", T0 - 9 * DAY))  # a new first bucket
    same()


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def test_a_column_named_like_the_place_of_the_batch_timestamps_is_encoded_as_it_is():
    session = Session()
    name = timeline_service._STAMPS
    session.load = lambda profile: why.log(pd.DataFrame({name: [1.0, 2.0]})).view()  # type: ignore[method-assign]
    document = session.service().document_bytes("s1", DAILY)
    parsed = json.loads(document)
    assert list(parsed["columns"]) == [name] and len(parsed["batch_timestamps"]) == DAYS
    assert parsed["batch_timestamps"][0] == [T0, T0 + HOUR] and document == compact(parsed)


def test_only_the_sessions_viewed_last_are_kept():
    session = Session()
    service = session.service()
    for i in range(LISTED_SESSIONS + 1):
        service.every_batch(f"s{i}", session)  # type: ignore[arg-type]
    assert service.listed == {"listing": LISTED_SESSIONS + 1}
    service.every_batch(f"s{LISTED_SESSIONS}", session)  # type: ignore[arg-type]
    assert service.listed == {"listing": LISTED_SESSIONS + 1}  # kept
    service.every_batch("s0", session)  # type: ignore[arg-type]
    assert service.listed == {"listing": LISTED_SESSIONS + 2}  # the first one viewed was dropped


def test_the_batches_kept_are_bounded_but_the_session_viewed_last_is_kept_whatever_its_size(monkeypatch):
    session = Session()  # 40 batches
    monkeypatch.setattr(timeline_service, "LISTED_BATCHES", 70)
    service = session.service()
    service.every_batch("s0", session)  # type: ignore[arg-type]
    service.every_batch("s1", session)  # type: ignore[arg-type]: 80 batches kept in all: s0 goes
    service.every_batch("s1", session)  # type: ignore[arg-type]
    assert service.listed == {"listing": 2}
    service.every_batch("s0", session)  # type: ignore[arg-type]
    assert service.listed == {"listing": 3}
    monkeypatch.setattr(timeline_service, "LISTED_BATCHES", 10)
    service.every_batch("s2", session)  # type: ignore[arg-type]: over the bound alone, and kept
    service.every_batch("s2", session)  # type: ignore[arg-type]
    assert service.listed == {"listing": 4}
