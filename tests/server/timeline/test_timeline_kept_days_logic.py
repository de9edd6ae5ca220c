"""The batches a timeline service keeps by day between views (``TimelineService.every_batch`` of
whylogs_songbird/server/timeline_service.py): which session's marks and batches it reads, when it
reads changed days one by one and when in one listing, the days at the ends of the store's 64-bit
timestamps and around the epoch, and how many sessions and batches it keeps.

Fakes at the seams only: the sessions' stored batches (lists in the test), their listing and the
outline's day marks and day reads (each read recorded; a bound beyond 64 bits is refused, as the
store's SQL parameters refuse it). Nothing is loaded: no document is built."""

from __future__ import annotations

import pytest
from stored_listing import stored

from whylogs_songbird.server import timeline_service
from whylogs_songbird.server.timeline_service import LISTED_SESSIONS, MemoryArtefacts, StoredProfile, TimelineService

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/timeline_service.py")

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
SMALLEST, LARGEST = -(2**63), 2**63 - 1  # the store's timestamps are 64-bit


def batch(name: str, timestamp: int) -> StoredProfile:
    return stored(name, timestamp, stored_at=1)


class Store:
    """Stored batches by session, with the listing and the outline's reads the service makes."""

    def __init__(self) -> None:
        self.batches: dict[str, list[StoredProfile]] = {}
        #: every read of a session's batches: ("list", session) or ("day", session, start, end)
        self.reads: list[tuple[object, ...]] = []

    def list_profiles(self, session_id: str) -> list[StoredProfile]:
        self.reads.append(("list", session_id))
        return list(self.batches.get(session_id, []))

    def batches_between(self, session_id: str, start: int | None, end: int | None) -> list[StoredProfile]:
        for bound in (start, end):
            if bound is not None and not SMALLEST <= bound <= LARGEST:
                raise OverflowError(f"bound {bound} does not fit a 64-bit integer")
        self.reads.append(("day", session_id, start, end))
        return [
            p
            for p in self.batches.get(session_id, [])
            if (start is None or (p.dataset_timestamp or 0) >= start)
            and (end is None or (p.dataset_timestamp or 0) < end)
        ]

    def day_marks(self, session_id: str) -> dict[int, tuple[str, ...]]:
        marks: dict[int, list[str]] = {}
        for p in self.batches.get(session_id, []):
            marks.setdefault((p.dataset_timestamp or 0) // DAY, []).append(p.identity)
        return {day: tuple(sorted(found)) for day, found in marks.items()}

    def days(self, session_id: str, count: int, *, per_day: int = 1, first: int = T0) -> None:
        """``count`` days of ``per_day`` batches each for ``session_id``, from the day of ``first``."""
        self.batches[session_id] = [
            batch(f"{session_id}-{d}-{i}", first + d * DAY + i) for d in range(count) for i in range(per_day)
        ]

    def stored_again(self, session_id: str, days: range) -> None:
        """The first batch of each of ``days`` (counted from the session's first day) stored again:
        the mark of its day changes."""
        held = self.batches[session_id]
        first_day = min((p.dataset_timestamp or 0) // DAY for p in held)
        for i, p in enumerate(held):
            day = (p.dataset_timestamp or 0) // DAY - first_day
            if day in days and not any((q.dataset_timestamp or 0) // DAY - first_day == day for q in held[:i]):
                held[i] = batch(p.id + "'", p.dataset_timestamp or 0)

    def read_again(self, service: TimelineService, session_id: str) -> list[tuple[object, ...]]:
        """The reads one ``every_batch`` of ``session_id`` makes (its result checked against the store)."""
        self.reads.clear()
        found = service.every_batch(session_id, self)  # type: ignore[arg-type]
        assert sorted(found, key=lambda p: p.id) == sorted(self.batches.get(session_id, []), key=lambda p: p.id)
        return list(self.reads)

    def service(self) -> TimelineService:
        def unused(profile: StoredProfile) -> None:
            raise AssertionError("nothing is loaded to list batches")

        return TimelineService(self.list_profiles, unused, MemoryArtefacts())  # type: ignore[arg-type]


def day_reads(reads: list[tuple[object, ...]]) -> int:
    return sum(1 for read in reads if read[0] == "day")


def test_each_session_s_days_are_read_from_its_own_marks_listing_and_day_reads():
    store = Store()
    store.days("s1", 10)
    store.days("s2", 3, first=T0 + 40 * DAY)
    service = store.service()
    assert store.read_again(service, "s1") == [("list", "s1")]  # 10 new days: one listing
    assert sorted(store.read_again(service, "s2")) == [
        ("day", "s2", T0 + (40 + d) * DAY, T0 + (41 + d) * DAY) for d in range(3)
    ]
    store.batches["s1"].append(batch("late", T0 + 4 * DAY + 5 * HOUR))
    assert store.read_again(service, "s1") == [("day", "s1", T0 + 4 * DAY, T0 + 5 * DAY)]
    assert store.read_again(service, "s2") == []  # nothing changed in s2
    assert service.every_batch("s1", store)[4:6] == [store.batches["s1"][4], store.batches["s1"][-1]]  # type: ignore[arg-type]


def test_eight_changed_days_are_read_one_by_one_and_nine_in_one_listing():
    store = Store()
    store.days("eight", 8)
    store.days("nine", 9)
    service = store.service()
    assert day_reads(store.read_again(service, "eight")) == 8
    assert store.read_again(service, "nine") == [("list", "nine")]
    store.days("sixteen", 16)
    assert store.read_again(service, "sixteen") == [("list", "sixteen")]
    store.stored_again("sixteen", range(8))
    assert day_reads(store.read_again(service, "sixteen")) == 8
    store.stored_again("sixteen", range(7, 16))  # 9 of 16
    assert store.read_again(service, "sixteen") == [("list", "sixteen")]
    assert service.listed == {"listing": 3, "day": 16}


def test_half_the_days_changed_are_read_one_by_one_and_one_more_in_one_listing():
    store = Store()
    store.days("s1", 20, per_day=2)
    service = store.service()
    assert store.read_again(service, "s1") == [("list", "s1")]
    store.stored_again("s1", range(10))  # 10 of 20 days
    reads = sorted(store.read_again(service, "s1"))
    assert reads == [("day", "s1", T0 + d * DAY, T0 + (d + 1) * DAY) for d in range(10)]
    store.stored_again("s1", range(9, 20))  # 11 of 20
    assert store.read_again(service, "s1") == [("list", "s1")]


def test_a_listing_groups_batches_by_their_utc_day_edges():
    store = Store()
    edges = [T0 - 1, T0, T0 + DAY - 1, T0 + DAY]  # the last ms of 2025-12-31, 2026-01-01 00:00, ...
    store.batches["s1"] = [batch(f"e{i}", t) for i, t in enumerate(edges)]
    store.batches["s1"] += [batch(f"d{d}", T0 + d * DAY) for d in range(2, 9)]  # 10 days in all
    service = store.service()
    assert store.read_again(service, "s1") == [("list", "s1")]
    store.batches["s1"][1] = batch("e1'", T0)  # 2026-01-01 changes: only it is read, and holds e1' and e2
    assert store.read_again(service, "s1") == [("day", "s1", T0, T0 + DAY)]
    assert [p.id for p in service.every_batch("s1", store)[:4]] == ["e0", "e1'", "e2", "e3"]  # type: ignore[arg-type]


def test_the_first_and_last_days_of_64_bit_timestamps_are_read_unbounded_past_them():
    store = Store()
    first_day, last_day = SMALLEST // DAY, LARGEST // DAY
    store.batches["s1"] = [
        batch("smallest", SMALLEST),
        batch("day-after", (first_day + 1) * DAY),
        batch("day-before-last", last_day * DAY - 1),
        batch("largest", LARGEST),
    ]
    reads = store.read_again(store.service(), "s1")
    assert sorted(reads, key=lambda read: read[2] if read[2] is not None else SMALLEST) == [
        ("day", "s1", None, (first_day + 1) * DAY),
        ("day", "s1", (first_day + 1) * DAY, (first_day + 2) * DAY),
        ("day", "s1", (last_day - 1) * DAY, last_day * DAY),
        ("day", "s1", last_day * DAY, None),
    ]


def test_days_before_the_epoch_are_read_within_their_own_edges():
    store = Store()
    store.batches["s1"] = [batch("two-days-before", -2 * DAY), batch("last-ms-before", -1), batch("epoch", 0)]
    reads = store.read_again(store.service(), "s1")
    assert sorted(reads, key=lambda read: int(read[2])) == [  # type: ignore[call-overload]
        ("day", "s1", -2 * DAY, -DAY),
        ("day", "s1", -DAY, 0),
        ("day", "s1", 0, DAY),
    ]


def test_the_days_of_exactly_the_last_eight_sessions_viewed_are_kept():
    store = Store()
    for i in range(LISTED_SESSIONS + 1):
        store.days(f"s{i}", 1)
    service = store.service()
    for i in range(LISTED_SESSIONS):
        store.read_again(service, f"s{i}")
    assert store.read_again(service, "s0") == []  # eight kept: s0 viewed again, the last
    assert store.read_again(service, f"s{LISTED_SESSIONS}")  # a ninth: s1, viewed longest ago, goes
    assert store.read_again(service, "s2") == []
    assert store.read_again(service, "s1") == [("day", "s1", T0, T0 + DAY)]


@pytest.mark.parametrize(("bound", "first_kept"), [(80, True), (79, False)])
def test_at_most_the_bound_on_batches_is_kept(monkeypatch, bound, first_kept):
    monkeypatch.setattr(timeline_service, "LISTED_BATCHES", bound)
    store = Store()
    store.days("a", 1, per_day=40)
    store.days("b", 1, per_day=40)
    service = store.service()
    store.read_again(service, "a")
    store.read_again(service, "b")  # 80 batches
    assert (store.read_again(service, "a") == []) is first_kept


def test_sessions_are_dropped_oldest_first_until_the_rest_are_within_the_bound(monkeypatch):
    store = Store()
    store.days("a", 1, per_day=10)
    store.days("b", 1, per_day=10)
    store.days("c", 1, per_day=40)
    store.days("d", 1, per_day=40)
    monkeypatch.setattr(timeline_service, "LISTED_BATCHES", 45)
    service = store.service()
    for session_id in "abc":
        store.read_again(service, session_id)  # 60: a goes (50), then b (40)
    assert store.read_again(service, "b") == [("day", "b", T0, T0 + DAY)]  # c and b: 50, c goes
    assert store.read_again(service, "b") == []
    assert store.read_again(service, "c") == [("day", "c", T0, T0 + DAY)]
    monkeypatch.setattr(timeline_service, "LISTED_BATCHES", 85)
    service = store.service()
    for session_id in "acd":
        store.read_again(service, session_id)  # 90: a goes, 80 are within the bound
    assert store.read_again(service, "c") == [] and store.read_again(service, "d") == []
