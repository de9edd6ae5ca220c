"""The server's timeline service (whylogs_songbird/server/timeline_service.py) as logic, with fakes at
its seams only: the listing of a session's stored profiles and their loader (a few whylogs views
logged in the test); the artefact cache is the module's own in-memory one.

It checks what a query resolves to (granularity, range, segment, reference) and the messages of
what is refused, the caps on buckets and cells, what is stored and read back (and when not), and
the profiles an ingest worker still holds. The background refresh is test_timeline_refresh_logic.py's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import threading
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import whylogs as why
from stored_listing import stored
from whylogs.core import DatasetProfileView

from whylogs_songbird.column_stats import Profile, ProfileColumns
from whylogs_songbird.monitors import Monitor, MonitorsFile
from whylogs_songbird.server.rollups import ALL_SEGMENTS, Member, Rollups, family_of, rollup_key
from whylogs_songbird.server.timeline_service import (
    BUCKET_PREFIX,
    DOC_PREFIX,
    MAX_VIEW_BUCKETS,
    MAX_VIEW_CELLS,
    OLD_PREFIXES,
    WATCHED_KEY,
    MemoryArtefacts,
    StoredProfile,
    TimelineQuery,
    TimelineRequestError,
    TimelineService,
    _dumps,
    _memo_size,
    _names_size,
)
from whylogs_songbird.timeline import BucketPoints, ColumnPoint, DriftPoint

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/timeline_service.py")

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


@functools.cache
def logged(*values: float) -> DatasetProfileView:
    return why.log(pd.DataFrame({"x": list(values)})).view()


class Session:
    """The stored profiles of session ``s1`` and the fakes a service takes."""

    def __init__(self, profiles: list[StoredProfile]) -> None:
        self.profiles = profiles
        self.listed = 0
        self.loaded: list[str] = []

    def list_profiles(self, session_id: str) -> list[StoredProfile]:
        assert session_id == "s1"
        self.listed += 1
        return list(self.profiles)

    def load(self, profile: StoredProfile) -> DatasetProfileView:
        self.loaded.append(profile.id)
        return logged(1000.0, 1001.0) if profile.kind == "reference" else logged(1.0, 2.0, float(len(profile.id)))

    def service(self, **options: Any) -> TimelineService:
        options.setdefault("cache", MemoryArtefacts())
        cache = options.pop("cache")
        return TimelineService(self.list_profiles, self.load, cache, **options)


def three_days() -> Session:
    return Session(
        [
            stored("b1", T0 + HOUR),
            stored("b2", T0 + DAY + HOUR),
            stored("b3", T0 + 3 * DAY),
            stored("b4", None),  # no dataset timestamp: on no timeline
            stored("r1", T0, kind="reference", alias="base", stored_at=5),
        ]
    )


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages logged (each whole, so that a changed word shows)."""
    return [record.getMessage() for record in caplog.records]


def refused(service: TimelineService, **query: str | None) -> tuple[int, str]:
    with pytest.raises(TimelineRequestError) as caught:
        service.resolve("s1", TimelineQuery(**query))
    return caught.value.status, caught.value.message


# -- the in-memory artefact cache ---------------------------------------------------------------------------


def test_memory_artefacts_keep_the_most_recently_used_within_their_bytes():
    cache = MemoryArtefacts(max_bytes=10)
    cache.put("s", "a", b"aaaa")
    cache.put("s", "b", b"bbbb")
    assert cache.get("s", "a") == b"aaaa"  # a is now the most recently used
    cache.put("s", "c", b"cc")  # exactly 10 bytes: all kept
    assert [cache.get("s", k) for k in "abc"] == [b"aaaa", b"bbbb", b"cc"]
    cache.put("s", "d", b"d")  # 11 bytes: the least recently used (a) goes
    assert [cache.get("s", k) for k in "abcd"] == [None, b"bbbb", b"cc", b"d"]
    cache.put("s", "b", b"B")  # replacing a value counts its new size only
    cache.put("s", "e", b"eeeeee")
    assert [cache.get("s", k) for k in "bcde"] == [b"B", b"cc", b"d", b"eeeeee"]
    cache.put("t", "big", b"x" * 50)  # larger than the bound: kept alone
    assert cache.get("t", "big") == b"x" * 50 and cache.get("s", "e") is None


def test_memory_artefacts_drop_a_prefix_of_one_session_but_what_is_kept():
    cache = MemoryArtefacts(max_bytes=12)
    for key in ("p/1", "p/keep/2", "q/3"):
        cache.put("s", key, b"12")
    cache.put("t", "p/1", b"12")
    cache.drop("s", "p/", keep="p/keep/")
    assert [cache.get("s", k) for k in ("p/1", "p/keep/2", "q/3")] == [None, b"12", b"12"]
    assert cache.get("t", "p/1") == b"12"
    cache.drop("s", "p/")
    assert cache.get("s", "p/keep/2") is None
    cache.put("s", "r", b"12345678")  # the dropped bytes were given back: 2 + 2 + 8 fit
    assert (cache.get("t", "p/1"), cache.get("s", "q/3"), cache.get("s", "r")) == (b"12", b"12", b"12345678")


# -- resolving a query ----------------------------------------------------------------------------------------


def test_a_query_resolves_to_its_batches_references_and_default_granularity():
    session = three_days()
    view = session.service().resolve("s1", TimelineQuery())
    assert [b.id for b in view.batches] == ["b1", "b2", "b3"]
    assert [r.id for r in view.references] == ["r1"]
    assert view.reference is not None and view.reference.id == "r1"  # the newest, asked or not
    assert (view.granularity, view.segment, view.segments, view.start, view.end) == ("day", None, [], None, None)
    hourly = session.service().resolve(
        "s1", TimelineQuery(granularity=" Hour ", start="2026-01-02", end=str(T0 + 3 * DAY))
    )
    assert (hourly.granularity, hourly.start, hourly.end) == ("hour", T0 + DAY, T0 + 3 * DAY)


def test_the_default_granularity_counts_only_the_batches_in_the_range_and_segment():
    # two batches in the first day's hours 1 and 2, one in hour 1 of each of the next five days
    days = [stored(f"d{k}", T0 + k * DAY + HOUR) for k in range(1, 6)]
    session = Session([stored("a", T0 + HOUR), stored("b", T0 + 2 * HOUR), *days])
    service = session.service()

    def chosen(**query: str) -> str:
        return service.resolve("s1", TimelineQuery(**query)).granularity

    assert chosen() == "hour"  # 7 hours, 6 days
    assert chosen(start=str(T0 + HOUR)) == "hour"  # the start is in the range
    assert chosen(start=str(T0 + HOUR + 1)) == "day"  # 6 hours, 6 days: the coarser
    assert chosen(end=str(T0 + 2 * HOUR)) == "month"  # the end is not: one batch, one bucket
    assert chosen(end=str(T0 + 2 * HOUR + 1)) == "hour"  # two hours, one day
    session.profiles += [stored("o1", T0, segment="k=v"), stored("o2", T0 + 40 * DAY, segment="k=v")]
    assert chosen() == "day"  # 9 hours, 7 days
    assert chosen(segment="k=v") == "month"  # its two batches only
    assert [b.id for b in service.resolve("s1", TimelineQuery(segment="k=v")).batches] == ["o1", "o2"]


def test_bad_parameters_are_refused_saying_what_to_give():
    service = three_days().service()
    assert refused(service, granularity="fortnight") == (
        400,
        "unknown granularity 'fortnight': give one of hour, day, week, month",
    )
    status, message = refused(service, start="soon")
    assert status == 400 and message.startswith("start='soon' is not a time")
    status, message = refused(service, end="later")
    assert status == 400 and message.startswith("end='later' is not a time")
    assert refused(service, start="2026-01-02", end="2026-01-02") == (
        400,
        "start (2026-01-02) is not before end (2026-01-02): give a start before the end",
    )
    assert refused(service, start="2026-01-03", end="2026-01-02")[0] == 400
    assert service.resolve("s1", TimelineQuery(start="2026-01-02", end="2026-01-02T00:00:00.001")).end == T0 + DAY + 1


def test_an_unknown_segment_is_a_404_naming_the_known_ones():
    session = Session([stored("a", T0, segment="k=2"), stored("b", T0, segment="k=1"), stored("c", T0)])
    assert refused(session.service(), segment="k=3") == (404, "session s1 has no segment 'k=3'; its segments: k=1, k=2")
    assert refused(three_days().service(), segment="k=1") == (
        404,
        "session s1 has no segment 'k=1'; its segments: none: its batches are not segmented",
    )
    view = session.service().resolve("s1", TimelineQuery(segment="k=1"))
    assert (view.segment, view.segments, [b.id for b in view.batches]) == ("k=1", ["k=1", "k=2"], ["b"])


def test_a_reference_is_found_by_id_or_alias_the_newest_when_several():
    session = Session(
        [
            stored("b", T0),
            stored("r-old", T0, kind="reference", alias="base", stored_at=1),
            stored("r-new", T0, kind="reference", alias="base", stored_at=3),
            stored("r-z", T0, kind="reference", alias="other", stored_at=2),
            stored("r-a", T0, kind="reference", stored_at=3),
        ]
    )
    service = session.service()

    def picked(**query: str) -> str | None:
        reference = service.resolve("s1", TimelineQuery(**query)).reference
        return None if reference is None else reference.id

    assert picked() == "r-new"  # stored last; a tie in time goes to the larger id
    assert picked(reference="base") == "r-new"
    assert picked(reference="other") == "r-z"
    assert picked(reference="r-old") == "r-old"
    assert picked(reference="r-a") == "r-a"
    assert refused(service, reference="nope") == (
        404,
        "session s1 has no reference 'nope'; give a ref-… id or an alias: base, other, r-a",
    )


def test_without_references_there_is_none_unless_one_is_asked_for():
    session = Session([stored("b", T0)])
    assert session.service().resolve("s1", TimelineQuery()).reference is None
    assert refused(session.service(), reference="base") == (404, "session s1 has no reference profiles yet")


def test_the_monitors_reference_is_used_and_a_missing_one_falls_back_to_the_newest(caplog):
    session = three_days()
    session.profiles.append(stored("r2", T0, kind="reference", alias="later", stored_at=9))
    named = session.service(monitors=MonitorsFile(reference="base"))
    view = named.resolve("s1", TimelineQuery())
    assert view.reference is not None and view.reference.id == "r1"
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.timeline"):
        missing = session.service(monitors=MonitorsFile(reference="gone")).resolve("s1", TimelineQuery())
    assert missing.reference is not None and missing.reference.id == "r2"
    assert said(caplog) == ["timeline: session s1 has no reference 'gone' (monitors file); using the newest"]
    assert (
        Session([stored("b", T0)])
        .service(monitors=MonitorsFile(reference="gone"))
        .resolve("s1", TimelineQuery())
        .reference
        is None
    )


# -- the document -----------------------------------------------------------------------------------------------


def test_the_document_shows_each_bucket_and_what_the_server_adds():
    session = three_days()
    session.profiles.append(stored("r0", T0 - DAY, kind="reference", stored_at=2))
    service = session.service()
    document = service.document("s1", TimelineQuery())
    assert document["granularity"] == "day"
    assert [(b["start"], b["profiles"]) for b in document["buckets"]] == [(T0, 1), (T0 + DAY, 1), (T0 + 3 * DAY, 1)]
    assert document["session_id"] == "s1"
    assert document["reference"] == {"id": "r1", "alias": "base", "timestamp": T0}
    assert document["references"] == [
        {"id": "r1", "alias": "base", "timestamp": T0},
        {"id": "r0", "alias": None, "timestamp": T0 - DAY},
    ]
    assert (document["segments"], document["start"], document["end"]) == ([], None, None)
    assert document["batch_timestamps"] == [[T0 + HOUR], [T0 + DAY + HOUR], [T0 + 3 * DAY]]
    assert document["alerts"] == [] and "pending" not in document
    assert document["columns"]["x"]["count"] == [3, 3, 3]
    assert document["columns"]["x"]["drift_category"] == ["DRIFT", "DRIFT", "DRIFT"]
    assert document["columns"]["x"]["previous_drift_category"][0] is None
    # three buckets' points, their drift against the reference and two against the day before
    assert service.computed == {"points": 3, "drift": 5}


def test_a_document_is_stored_and_read_back_until_a_bucket_changes():
    session = three_days()
    cache = MemoryArtefacts()
    service = session.service(cache=cache)
    first = service.document_bytes("s1", TimelineQuery())
    assert service.document_bytes("s1", TimelineQuery()) == first
    assert service.computed == {"points": 3, "drift": 5}
    # a new service over the same cache reads every part back
    again = session.service(cache=cache)
    session.loaded.clear()
    assert again.document_bytes("s1", TimelineQuery()) == first
    assert again.computed == {} and session.loaded == []
    # another query of the same buckets (its own document) reads their parts back
    assert json.loads(again.document_bytes("s1", TimelineQuery(granularity="day"))) == json.loads(first)
    assert again.computed == {}
    # a new batch in the last day: that bucket's points and drifts only are computed
    session.profiles.append(stored("b5", T0 + 3 * DAY))
    changed = again.document("s1", TimelineQuery())
    assert changed["columns"]["x"]["count"] == [3, 3, 6]
    assert again.computed == {"points": 1, "drift": 2}
    # the replaced version of that bucket is dropped from the cache
    slot = [k for (s, k) in cache._data if k.startswith(BUCKET_PREFIX) and k.endswith("points")]
    assert len(slot) == 3


def test_with_a_version_a_stored_document_is_answered_without_listing_profiles():
    session = three_days()
    versions = {"s1": "v1"}
    service = session.service(version=lambda s: versions[s])
    first = service.document_bytes("s1", TimelineQuery())
    listed = session.listed
    assert service.document_bytes("s1", TimelineQuery()) == first and session.listed == listed
    versions["s1"] = "v2"
    session.profiles.append(stored("b5", T0 + 3 * DAY))
    assert json.loads(service.document_bytes("s1", TimelineQuery()))["columns"]["x"]["count"] == [3, 3, 6]
    assert session.listed == listed + 1


def test_a_ranged_view_shows_the_buckets_it_overlaps_and_is_not_stored():
    session = three_days()
    cache = MemoryArtefacts()
    service = session.service(cache=cache, version=lambda s: "v1")
    document = service.document("s1", TimelineQuery(start=str(T0 + DAY + 1), end=str(T0 + 3 * DAY + 1)))
    assert [b["start"] for b in document["buckets"]] == [T0 + DAY, T0 + 3 * DAY]
    assert (document["start"], document["end"]) == (T0 + DAY + 1, T0 + 3 * DAY + 1)
    assert document["columns"]["x"]["previous_drift_category"][0] is None  # nothing before, in the view
    assert not [k for (_, k) in cache._data if k.startswith(DOC_PREFIX)]
    assert service.document("s1", TimelineQuery(start=str(T0 + 3 * DAY + 1)))["buckets"][0]["start"] == T0 + 3 * DAY
    assert service.document("s1", TimelineQuery(granularity="day", end=str(T0 + DAY)))["buckets"] == [
        {"start": T0, "end": T0 + DAY, "profiles": 1}
    ]
    assert service.document("s1", TimelineQuery(granularity="day", start=str(T0 + 4 * DAY)))["buckets"] == []
    stored_docs = service.document_bytes("s1", TimelineQuery())
    assert [k for (_, k) in cache._data if k.startswith(DOC_PREFIX)] and stored_docs


def test_a_repeated_ranged_view_at_one_version_is_answered_from_memory_before_listing():
    session = three_days()
    versions = {"s1": "v1"}
    service = session.service(version=lambda s: versions[s])
    week = TimelineQuery(granularity="hour", start=str(T0), end=str(T0 + 7 * DAY))
    first = service.document_bytes("s1", week)
    listed = session.listed
    # the same range spelled otherwise is the same view; another range or granularity is built
    same = TimelineQuery(granularity="hour", start="2026-01-01T00:00:00Z", end=str(T0 + 7 * DAY))
    assert service.document_bytes("s1", same) == first and session.listed == listed
    assert service.document_bytes("s1", dataclasses.replace(week, end=str(T0 + 2 * DAY))) != first
    assert session.listed == listed + 1
    versions["s1"] = "v2"
    session.profiles.append(stored("b5", T0 + 3 * DAY))
    assert json.loads(service.document_bytes("s1", week))["columns"]["x"]["count"] == [3, 3, 6]
    assert session.listed == listed + 2
    # a bad range is still refused, saying why
    with pytest.raises(TimelineRequestError, match="start"):
        service.document_bytes("s1", TimelineQuery(start="not a time"))


def test_a_ranged_view_leaving_out_pending_profiles_is_not_answered_from_memory():
    session = three_days()
    session.profiles[1] = stored("b2", T0 + DAY + HOUR, pending=True)
    states = {"b2": "pending"}
    service = session.service(version=lambda s: "v1", state=lambda p, patient: states[p.id])
    week = TimelineQuery(start=str(T0), end=str(T0 + 7 * DAY))
    assert service.document("s1", week)["pending"] == ["b2"]
    listed = session.listed
    states["b2"] = "ready"  # summarised: its document shows it, at the same version
    document = service.document("s1", week)
    assert "pending" not in document and [b["profiles"] for b in document["buckets"]] == [1, 1, 1]
    assert session.listed == listed + 1
    assert service.document("s1", week) == document and session.listed == listed + 1


class Outline:
    """The narrower reads of a `Session`'s profiles (what the store answers from its indexes), counted."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.asked: list[str] = []

    def _batches(self) -> list[StoredProfile]:
        return [p for p in self.session.profiles if p.kind == "batch" and p.dataset_timestamp is not None]

    def batches_between(self, session_id: str, start: int | None, end: int | None) -> list[StoredProfile]:
        assert session_id == "s1"
        self.asked.append(f"between {start} {end}")
        return [
            p
            for p in self._batches()
            if (start is None or p.dataset_timestamp >= start) and (end is None or p.dataset_timestamp < end)
        ]

    def references(self, session_id: str) -> list[StoredProfile]:
        assert session_id == "s1"
        return [p for p in self.session.profiles if p.kind == "reference"]

    def segments(self, session_id: str) -> set[str]:
        assert session_id == "s1"
        return {p.segment for p in self._batches()}

    def span(self, session_id: str) -> tuple[int, int] | None:
        assert session_id == "s1"
        self.asked.append("span")
        stamps = [p.dataset_timestamp for p in self._batches()]
        return (min(stamps), max(stamps)) if stamps else None

    def timestamps(self, session_id: str) -> set[tuple[int, str, bool]]:
        assert session_id == "s1"
        self.asked.append("timestamps")
        return {(p.dataset_timestamp, p.segment, p.pending) for p in self._batches()}

    def bucket_counts(self, session_id: str, size: int, offset: int) -> tuple[int, int]:
        assert session_id == "s1"
        self.asked.append("bucket_counts")
        every = {(p.dataset_timestamp + offset) // size for p in self._batches()}
        settled = {(p.dataset_timestamp + offset) // size for p in self._batches() if not p.pending}
        return len(every), len(settled)

    def day_marks(self, session_id: str) -> None:
        return None  # no marks: a view of the whole history lists the session


def hourly(hours: int, **options: Any) -> Session:
    batches = [stored(f"h{i}", T0 + i * HOUR + 7, **options) for i in range(hours)]
    return Session([*batches, stored("r1", T0, kind="reference", alias="base", stored_at=5)])


@pytest.mark.parametrize(
    "query",
    [
        {"granularity": "hour", "start": str(T0 + 20 * HOUR + 1), "end": str(T0 + 30 * HOUR)},
        {"granularity": "day", "start": str(T0 + 20 * HOUR + 1)},
        {"end": str(T0 + 3 * HOUR + 1), "segment": "a=1"},
        {"granularity": "week", "reference": "base"},
    ],
)
def test_with_an_outline_a_view_lists_only_what_it_shows_and_shows_the_same(query):
    session = hourly(50)
    session.profiles += [stored("s1", T0 + 2 * HOUR, segment="a=1"), stored("s2", T0 + 40 * HOUR, segment="a=1")]
    expected = session.service().document_bytes("s1", TimelineQuery(**query))
    listed = session.listed
    outline = Outline(session)
    assert session.service(outline=outline).document_bytes("s1", TimelineQuery(**query)) == expected
    ranged = "start" in query or "end" in query
    assert session.listed == listed + (0 if ranged else 1)
    assert ranged == any(asked.startswith("between") for asked in outline.asked)
    assert session.service(outline=outline).resolve("s1", TimelineQuery(**query)).granularity == (
        session.service().resolve("s1", TimelineQuery(**query)).granularity
    )


def test_with_an_outline_a_ranged_view_reads_the_batches_of_the_buckets_it_overlaps():
    session = hourly(72)
    outline = Outline(session)
    service = session.service(outline=outline)
    document = service.document("s1", TimelineQuery(granularity="day", start=str(T0 + DAY + 5), end=str(T0 + DAY + 6)))
    assert document["buckets"] == [{"start": T0 + DAY, "end": T0 + 2 * DAY, "profiles": 24}]
    assert outline.asked == [f"between {T0 + DAY} {T0 + 2 * DAY}"] and session.listed == 0


def test_with_an_outline_too_many_buckets_are_refused_from_the_timestamps_without_listing():
    session = hourly(30)
    outline = Outline(session)
    service = session.service(outline=outline, max_buckets=20)
    with pytest.raises(TimelineRequestError) as listing:  # what the view says without an outline
        session.service(max_buckets=20).document_bytes("s1", TimelineQuery(granularity="hour"))
    listed = session.listed
    with pytest.raises(TimelineRequestError) as caught:
        service.document_bytes("s1", TimelineQuery(granularity="hour"))
    said = (caught.value.status, caught.value.message)
    assert said == (listing.value.status, listing.value.message)
    assert said == (
        400,
        "this hour view has 30 buckets; a timeline view shows at most 20 buckets: ask for a coarser granularity "
        "(day, week, month) or a shorter start/end range (e.g. start=2024-01-01&end=2024-02-01)",
    )
    assert session.listed == listed and outline.asked == ["span", "bucket_counts"]
    # of one segment: from the timestamps
    session.profiles += [stored(f"s{i}", T0 + i * HOUR, segment="a=1") for i in range(25)]
    outline.asked.clear()
    with pytest.raises(TimelineRequestError, match="this hour view has 25 buckets"):
        service.document_bytes("s1", TimelineQuery(granularity="hour", segment="a=1"))
    assert session.listed == listed and outline.asked == ["span", "timestamps"]
    del session.profiles[-25:]
    # a span of no more buckets than the cap: the timestamps are not read
    outline.asked.clear()
    assert session.service(outline=outline, max_buckets=30).document("s1", TimelineQuery(granularity="hour"))
    assert outline.asked == ["span"]
    # an unknown segment or reference is said first, as without an outline
    assert refused(service, granularity="hour", segment="b=2")[0] == 404
    assert refused(service, granularity="hour", reference="nope")[0] == 404
    # months: counted in calendar months
    monthly = Session([stored(f"m{i}", T0 + i * 32 * DAY) for i in range(3)])
    with pytest.raises(TimelineRequestError, match="this month view has 3 buckets"):
        monthly.service(outline=Outline(monthly), max_buckets=2).document("s1", TimelineQuery(granularity="month"))
    assert monthly.listed == 0


def test_with_an_outline_pending_profiles_that_may_decide_the_bucket_cap_are_left_to_the_view():
    session = hourly(30)
    session.profiles[29] = stored("h29", T0 + 29 * HOUR, pending=True)  # alone in its hour
    outline = Outline(session)
    held = session.service(outline=outline, max_buckets=29, state=lambda p, patient: "pending")
    assert len(held.document("s1", TimelineQuery(granularity="hour"))["buckets"]) == 29  # listed, and shown
    assert outline.asked == ["span", "bucket_counts"] and session.listed == 1
    ready = session.service(outline=outline, max_buckets=29, state=lambda p, patient: "ready")
    with pytest.raises(TimelineRequestError, match="this hour view has 30 buckets"):
        ready.document("s1", TimelineQuery(granularity="hour"))


def test_a_view_of_too_many_buckets_or_cells_is_refused_before_anything_is_computed():
    session = three_days()
    service = session.service(max_buckets=2)
    with pytest.raises(TimelineRequestError) as caught:
        service.document("s1", TimelineQuery())
    assert (caught.value.status, caught.value.message) == (
        400,
        "this day view has 3 buckets; a timeline view shows at most 2 buckets: ask for a coarser granularity "
        "(week, month) or a shorter start/end range (e.g. start=2024-01-01&end=2024-02-01)",
    )
    assert session.loaded == [] and service.computed == {}
    assert session.service(max_buckets=3).document("s1", TimelineQuery())["buckets"]
    monthly = Session([stored(f"m{i}", T0 + i * 32 * DAY) for i in range(3)]).service(max_buckets=2)
    with pytest.raises(TimelineRequestError) as caught:
        monthly.document("s1", TimelineQuery(granularity="month"))
    assert "shows at most 2 buckets: ask for a shorter start/end range" in caught.value.message
    names = {"b1": ["x", "y"], "b2": ["x", "z"], "b3": ["x"]}
    cells = session.service(max_cells=8, column_names=lambda p: names[p.id])
    with pytest.raises(TimelineRequestError) as caught:
        cells.document("s1", TimelineQuery())  # 3 buckets × 3 columns
    assert caught.value.message.startswith(
        "this day view has 3 buckets × 3+ columns; a timeline view shows at most 8 cells (buckets × columns): "
    )
    assert session.service(max_cells=9, column_names=lambda p: names[p.id]).document("s1", TimelineQuery())


def test_profiles_an_ingest_worker_holds_are_left_out_and_listed():
    session = three_days()
    session.profiles[1] = stored("b2", T0 + DAY + HOUR, pending=True)
    session.profiles.append(stored("b5", T0 + 3 * DAY, pending=True))
    session.profiles.append(stored("b6", T0 + 3 * DAY, pending=True))
    states = {"b2": "pending", "b5": "invalid", "b6": "ready"}
    asked: list[tuple[str, bool]] = []

    def state(profile: StoredProfile, patient: bool) -> str:
        asked.append((profile.id, patient))
        return states[profile.id]

    cache = MemoryArtefacts()
    service = session.service(cache=cache, state=state)
    document = service.document("s1", TimelineQuery())
    assert sorted(asked) == [("b2", False), ("b5", False), ("b6", False)]
    assert document["pending"] == ["b2"]
    assert [b["profiles"] for b in document["buckets"]] == [1, 2]  # b1; b3 and b6
    assert document["reference"]["id"] == "r1"  # ready: kept
    assert not [k for (_, k) in cache._data if k.startswith(DOC_PREFIX)]  # not stored: it will change
    asked.clear()
    service.document_bytes("s1", TimelineQuery(), background=True)
    assert {patient for _, patient in asked} == {True}


def test_a_pending_reference_is_left_out():
    session = three_days()
    session.profiles[4] = stored("r1", T0, kind="reference", alias="base", pending=True)
    document = session.service(state=lambda p, patient: "pending").document("s1", TimelineQuery())
    assert document["reference"] is None and document["pending"] == ["r1"]


def test_values_of_older_servers_are_dropped_and_an_unreadable_value_is_computed_again(caplog):
    session = three_days()
    cache = MemoryArtefacts()
    for prefix in OLD_PREFIXES:
        cache.put("s1", prefix + "x", b"{}")
    service = session.service(cache=cache)
    first = service.document("s1", TimelineQuery())
    assert not [k for (_, k) in cache._data if k.startswith(OLD_PREFIXES)]
    points = [k for (_, k) in cache._data if k.startswith(BUCKET_PREFIX) and k.endswith("points")]
    cache.put("s1", points[0], b"not json")
    for key in [k for (_, k) in cache._data if k.startswith(DOC_PREFIX)]:
        cache.put("s1", key, b"")
    again = session.service(cache=cache)
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.timeline"):
        assert again.document("s1", TimelineQuery()) == first
    assert again.computed == {"points": 1}
    assert said(caplog) == ["timeline: a stored value of session s1 cannot be read; computing it again"]


def test_a_watched_view_is_remembered_for_the_background_refresh():
    session = three_days()
    cache = MemoryArtefacts()
    service = session.service(cache=cache, version=lambda s: "v1")
    service.document("s1", TimelineQuery(granularity="week"))
    assert cache.get("s1", WATCHED_KEY) is None
    service.document("s1", TimelineQuery(granularity="week"), watched=True)  # read back, and noted
    assert json.loads(cache.get("s1", WATCHED_KEY) or b"") == {
        "granularity": "week",
        "reference": None,
        "segment": None,
        "start": None,
        "end": None,
    }
    service.document("s1", TimelineQuery(granularity="hour", segment=None), watched=True)
    assert json.loads(cache.get("s1", WATCHED_KEY) or b"")["granularity"] == "hour"


# -- monitors, when a batch lands ------------------------------------------------------------------------------


def count_monitor(**file: Any) -> MonitorsFile:
    return MonitorsFile(monitors=(Monitor(name="rows", columns=("x",), metric="count", max=3.5),), **file)


def with_a_busy_last_day() -> Session:
    session = three_days()
    session.profiles.append(stored("b5", T0 + 3 * DAY))  # the last day has 6 rows, the others 3
    return session


def test_a_landed_batch_evaluates_the_monitors_on_the_latest_bucket(caplog):
    service = with_a_busy_last_day().service(monitors=count_monitor())
    heard: list[tuple[str, list[int]]] = []

    def broken(session_id: str, document: dict[str, Any]) -> None:
        raise RuntimeError("a listener failed")

    service.evaluated += [broken, lambda s, d: heard.append((s, d["columns"]["x"]["count"]))]
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.timeline"):
        failures = service.batch_landed("s1")
    assert [(f.monitor, f.column, f.metric, f.bucket_start, f.bucket_end, f.value) for f in failures] == [
        ("rows", "x", "count", T0 + 3 * DAY, T0 + 4 * DAY, 6)
    ]
    assert heard == [("s1", [3, 3, 6])]  # the broken listener did not stop the next one
    assert said(caplog) == [
        "timeline: a listener of the monitors of session s1 failed",
        f"monitors evaluated: session s1, bucket from {T0 + 3 * DAY}: 1 failure(s)",
        "monitor failed: session s1, column x: count = 6 is above max 3.5 (rows)",
    ]
    # a view lists the failures of every bucket
    assert [a["start"] for a in service.document("s1", TimelineQuery())["alerts"]] == [T0 + 3 * DAY]


def test_monitors_apply_only_to_their_targets():
    session = with_a_busy_last_day()
    assert session.service(monitors=count_monitor(), target_of=lambda s: None).batch_landed("s1") == []
    assert session.service(monitors=count_monitor(sessions=["s2"])).batch_landed("s1") == []
    elsewhere = session.service(monitors=count_monitor(sessions=["s2"]))
    assert elsewhere.document("s1", TimelineQuery())["alerts"] == []
    dataset = session.service(monitors=count_monitor(datasets=["org/d"]), target_of=lambda s: ("dataset", "org/d"))
    assert len(dataset.batch_landed("s1")) == 1
    assert session.service().batch_landed("s1") == []  # no monitors


def test_a_monitor_of_a_column_the_session_lacks_is_logged_not_raised(caplog):
    monitors = MonitorsFile(monitors=(Monitor(columns=("nope",), metric="count", max=1),))
    service = three_days().service(monitors=monitors)
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.timeline"):
        assert service.document("s1", TimelineQuery())["alerts"] == []
    [message] = said(caplog)
    assert message.startswith("timeline: the monitors file does not fit session s1: ") and "nope" in message


def test_a_landed_batch_refreshes_the_last_view_asked_for(caplog):
    session = with_a_busy_last_day()
    cache = MemoryArtefacts()
    service = session.service(cache=cache)
    cache.put("s1", WATCHED_KEY, json.dumps({"granularity": "week"}).encode())
    assert service.batch_landed("s1") == []
    assert service.computed["points"] == 1  # its one week (Thursday to Sunday), stored for the next view
    cache.put("s1", WATCHED_KEY, json.dumps({"segment": "gone"}).encode())
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.timeline"):
        assert service.batch_landed("s1") == []
    assert said(caplog) == [
        "timeline: the last view of session s1 cannot be refreshed: session s1 has no segment 'gone'; "
        "its segments: none: its batches are not segmented"
    ]


def test_without_monitors_or_a_watched_view_a_landed_batch_starts_nothing():
    service = three_days().service()
    service.batch_stored("s1")
    assert service._worker is None and service.idle()


# -- rollups ------------------------------------------------------------------------------------------------------


class Derived:
    """The store's derived values, in memory (what rollups are kept in)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}
        self.reads: list[str] = []

    def get_derived(self, session_id: str, key: str) -> bytes | None:
        self.reads.append(key)
        return self.data.get((session_id, key))

    def put_derived(self, session_id: str, key: str, data: bytes) -> None:
        self.data[(session_id, key)] = data

    def drop_derived(self, session_id: str, prefix: str = "", keep: str | None = None) -> int:
        gone = [k for k in self.data if k[0] == session_id and k[1].startswith(prefix)]
        gone = [k for k in gone if keep is None or not k[1].startswith(keep)]
        for key in gone:
            del self.data[key]
        return len(gone)


def test_with_rollups_a_week_is_merged_from_its_days_and_shows_the_same():
    session = with_a_busy_last_day()
    session.profiles[4] = stored("r1", T0, kind="reference", alias="base", stored_at=5)
    plain = session.service().document("s1", TimelineQuery(granularity="week"))
    derived = Derived()
    rollups = Rollups(derived, lambda session_id, member: None)
    rolled = session.service(rollups=rollups).document("s1", TimelineQuery(granularity="week"))
    for stat in ("count", "mean", "min", "max", "drift_category"):
        assert rolled["columns"]["x"][stat] == plain["columns"]["x"][stat]
    last_day = rollups.read("s1", "day", T0 + 3 * DAY, ALL_SEGMENTS, merged=False)
    assert last_day is not None
    assert last_day.members == (
        Member(T0 + 3 * DAY, "b3:sha-b3:1", "b3", "sha-b3"),
        Member(T0 + 3 * DAY, "b5:sha-b5:1", "b5", "sha-b5"),
    )
    assert last_day.names == ("x",)
    # another service over the same rollups takes the column names from them, loads nothing to merge
    session.loaded.clear()

    def no_names(profile: StoredProfile) -> list[str]:
        raise AssertionError("the column names are in the rollups")

    again = session.service(rollups=rollups, column_names=no_names).document("s1", TimelineQuery(granularity="week"))
    assert again["columns"]["x"]["count"] == plain["columns"]["x"]["count"]
    # a day of one batch is read from that batch; the day of two from its rollup, b3 and b5 unloaded
    assert sorted(session.loaded) == ["b1", "b2", "r1"]
    daily = session.service(rollups=rollups, column_names=no_names).document("s1", TimelineQuery(granularity="day"))
    assert daily["columns"]["x"]["count"] == [3, 3, 6]


def test_a_bucket_of_one_batch_is_read_as_its_columns_and_shows_the_same():
    session = with_a_busy_last_day()
    rollups = Rollups(Derived(), lambda session_id, member: None)
    plain = session.service(rollups=rollups).document("s1", TimelineQuery(granularity="day"))
    asked: list[str] = []

    def columns(profile: StoredProfile) -> Profile:
        asked.append(profile.id)
        return ProfileColumns.of(session.load(profile))

    # a new service (nothing computed) over the rollups now stored: the days of b1 and b2 are one batch each
    read = session.service(rollups=rollups, columns=columns).document("s1", TimelineQuery(granularity="day"))
    assert asked == ["b1", "b2"]  # the last day (b3 and b5) is read from its rollup
    assert read == plain


def test_the_monitors_view_is_the_monitors_granularity_and_segment_waiting_for_workers(caplog):
    session = with_a_busy_last_day()
    asked: list[bool] = []

    def state(profile: StoredProfile, patient: bool) -> str:
        asked.append(patient)
        return "ready"

    session.profiles[0] = stored("b1", T0 + HOUR, pending=True)
    weekly = session.service(monitors=count_monitor(granularity="week"), state=state)
    failures = weekly.batch_landed("s1")
    # one ISO week, Monday 2025-12-29 to Sunday 2026-01-04: four batches of 3 rows
    assert [(f.bucket_start, f.bucket_end, f.value) for f in failures] == [(T0 - 3 * DAY, T0 + 4 * DAY, 12)]
    assert asked and set(asked) == {True}  # background work waits for the ingest worker
    session.profiles += [stored("s-a", T0, segment="k=v"), stored("s-b", T0 + DAY, segment="k=v")]
    segmented = session.service(monitors=count_monitor(segment="k=v"))
    assert segmented.batch_landed("s1") == []  # its two days have 3 rows each
    gone = session.service(monitors=count_monitor(segment="k=gone"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.timeline"):
        assert gone.batch_landed("s1") == []
    assert said(caplog) == ["timeline: session s1: session s1 has no segment 'k=gone'; its segments: k=v"]


def test_a_rollup_member_takes_the_sha256_of_the_store_s_record():
    session = with_a_busy_last_day()
    record = SimpleNamespace(sha256="from-the-record")
    session.profiles[2] = dataclasses.replace(session.profiles[2], record=record)
    rollups = Rollups(Derived(), lambda session_id, member: None)
    session.service(rollups=rollups).document("s1", TimelineQuery(granularity="day"))
    last_day = rollups.read("s1", "day", T0 + 3 * DAY, ALL_SEGMENTS, merged=False)
    assert last_day is not None and [m.sha256 for m in last_day.members] == ["from-the-record", "sha-b5"]


# -- what is stored: its keys, the version a document was built at, and what a new version drops -------------


class CountedArtefacts(MemoryArtefacts):
    """The module's in-memory cache, counting the values put under each key."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: dict[str, int] = {}
        self.gets: list[str] = []
        self.drops: list[str] = []

    def drop(self, session_id: str, prefix: str, keep: str | None = None) -> None:
        self.drops.append(prefix)
        super().drop(session_id, prefix, keep)

    def get(self, session_id: str, key: str) -> bytes | None:
        self.gets.append(key)
        return super().get(session_id, key)

    def put(self, session_id: str, key: str, value: bytes) -> None:
        self.puts[key] = self.puts.get(key, 0) + 1
        super().put(session_id, key, value)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for (_, k) in self._data if k.startswith(prefix))


def test_the_watched_query_is_stored_as_compact_json_and_written_only_when_it_changes():
    cache = CountedArtefacts()
    service = three_days().service(cache=cache)
    service.document("s1", TimelineQuery(granularity="week", segment=""), watched=True)
    assert cache.get("s1", WATCHED_KEY) == (
        b'{"granularity":"week","reference":null,"segment":"","start":null,"end":null}'
    )
    service.document("s1", TimelineQuery(granularity="week", segment=""), watched=True)
    assert cache.puts[WATCHED_KEY] == 1
    service.document("s1", TimelineQuery(granularity="week"), watched=True)
    assert cache.puts[WATCHED_KEY] == 2


def test_a_stored_document_is_its_version_a_newline_and_the_document():
    session = three_days()
    cache = CountedArtefacts()
    versions = {"s1": "v7"}
    service = session.service(cache=cache, version=lambda s: versions[s])
    first = service.document_bytes("s1", TimelineQuery())
    [key] = cache.keys(DOC_PREFIX)
    assert cache.get("s1", key) == b"v7\n" + first
    assert first == json.dumps(json.loads(first), separators=(",", ":")).encode()  # compact
    listed = session.listed
    # what is stored at the version is answered as it is, without listing a profile
    cache.put("s1", key, b'v7\n{"stored": true}')
    assert session.service(cache=cache, version=lambda s: versions[s]).document("s1", TimelineQuery()) == {
        "stored": True
    }
    assert session.listed == listed
    # stored at another version, or with nothing after the version: built again (and stored)
    for stored_value in (b'v6\n{"stored": true}', b"v7\n", b"v7"):
        cache.put("s1", key, stored_value)
        again = session.service(cache=cache, version=lambda s: versions[s])
        assert again.document_bytes("s1", TimelineQuery()) == first
        assert cache.get("s1", key) == b"v7\n" + first
    assert session.listed == listed + 3


def test_each_query_has_its_own_stored_document_and_monitors_another_one():
    session = three_days()
    session.profiles.append(stored("r2", T0, kind="reference", alias="other", stored_at=1))
    cache = CountedArtefacts()
    service = session.service(cache=cache, version=lambda s: "v1")
    service.document("s1", TimelineQuery())
    service.document("s1", TimelineQuery(granularity="day"))
    service.document("s1", TimelineQuery(reference="other"))
    service.document("s1", TimelineQuery(granularity="week"))
    assert len(cache.keys(DOC_PREFIX)) == 4
    # a range does not make another document: it is not stored at all
    service.document("s1", TimelineQuery(start=str(T0)))
    service.document("s1", TimelineQuery(end="  "))  # blank: no range, the stored one
    assert len(cache.keys(DOC_PREFIX)) == 4
    # the same query under another monitors file is another document
    monitored = session.service(cache=cache, version=lambda s: "v1", monitors=count_monitor())
    assert monitored.document("s1", TimelineQuery())["alerts"] == []
    assert len(cache.keys(DOC_PREFIX)) == 5


def test_without_a_version_a_stored_document_is_answered_only_while_all_it_shows_is_unchanged():
    session = Session(
        [
            stored("b1", T0 + HOUR, segment="k=1"),
            stored("b2", T0 + DAY, segment="k=1"),
            stored("r1", T0, kind="reference", alias="base", stored_at=5),
        ]
    )
    cache = MemoryArtefacts()
    service = session.service(cache=cache)
    query = TimelineQuery(segment="k=1")

    def shown() -> dict[str, Any]:
        return session.service(cache=cache).document("s1", query)

    first = service.document("s1", query)
    session.loaded.clear()
    assert shown() == first and session.loaded == []
    # a batch of another segment: its own buckets are not shown, its segment is
    session.profiles.append(stored("o1", T0, segment="k=2"))
    assert shown()["segments"] == ["k=1", "k=2"]
    # the reference's alias changed
    session.profiles[2] = stored("r1", T0, kind="reference", alias="renamed", stored_at=5)
    assert shown()["reference"]["alias"] == "renamed"
    # an older reference, not the one compared with, is listed
    session.profiles.append(stored("r0", T0, kind="reference", stored_at=1))
    assert [r["id"] for r in shown()["references"]] == ["r1", "r0"]
    # the reference's content changed (a new identity under the same id): its drift again
    before = dict(service.computed)
    session.profiles[2] = dataclasses.replace(session.profiles[2], identity="r1:sha-new:1")
    service.document("s1", query)
    assert service.computed["drift"] == before["drift"] + 2


def test_a_new_version_of_a_bucket_or_reference_drops_what_it_replaces():
    session = three_days()
    cache = CountedArtefacts()
    service = session.service(cache=cache)
    daily = TimelineQuery(granularity="day")
    service.document("s1", daily)

    def stored_of(kind: str) -> list[str]:
        return [k for k in cache.keys(BUCKET_PREFIX) if f"/{kind}" in k]

    assert (len(stored_of("points")), len(stored_of("ref/")), len(stored_of("prev/"))) == (3, 3, 2)
    # a new version's points drop the slot's older versions; its drift, stored under that new version
    # in the same build, replaces nothing: no drop
    slots = [key.rsplit("/", 2)[0] + "/" for key in stored_of("points")]
    assert [d for d in cache.drops if d.startswith(BUCKET_PREFIX)] == slots
    cache.drops.clear()
    # a batch lands in the first day: that bucket's points and drift are new, the old ones dropped;
    # the second day's drift against the first is new, the one against its older version dropped
    session.profiles.append(stored("b0", T0))
    service.document("s1", daily)
    assert (len(stored_of("points")), len(stored_of("ref/")), len(stored_of("prev/"))) == (3, 3, 2)
    assert service.computed == {"points": 4, "drift": 7}
    assert cache.drops == [slots[0], cache.drops[1]] and cache.drops[1].startswith(slots[1])  # the second's prev/
    assert cache.drops[1].endswith("/prev/")
    # the reference is stored again (same id, new content): every drift against it is new, the old dropped
    session.profiles[4] = dataclasses.replace(session.profiles[4], identity="r1:sha-new:1")
    service.document("s1", daily)
    assert (len(stored_of("points")), len(stored_of("ref/")), len(stored_of("prev/"))) == (3, 3, 2)
    assert service.computed == {"points": 4, "drift": 10}
    # another reference: its drift is stored beside the first one's (each kept for its own views)
    session.profiles.append(stored("r2", T0, kind="reference", stored_at=1))
    service.document("s1", TimelineQuery(granularity="day", reference="r2"))
    assert len(stored_of("ref/")) == 6 and len(stored_of("points")) == 3
    # another granularity's buckets are stored beside the days'
    service.document("s1", TimelineQuery(granularity="week"))
    assert len(stored_of("points")) == 4


def test_the_values_of_older_servers_are_dropped_once_per_session_and_process():
    session = three_days()
    cache = MemoryArtefacts()
    service = session.service(cache=cache)
    service.document("s1", TimelineQuery())
    cache.put("s1", OLD_PREFIXES[0] + "late", b"{}")
    service.document("s1", TimelineQuery(granularity="week"))
    assert cache.get("s1", OLD_PREFIXES[0] + "late") == b"{}"
    session.service(cache=cache).document("s1", TimelineQuery(granularity="hour"))
    assert cache.get("s1", OLD_PREFIXES[0] + "late") is None


def test_long_values_are_cut_short_in_messages():
    padded = " " * 30 + "2026-01-02" + " " * 10
    assert refused(three_days().service(), start=padded, end="2026-01-01") == (
        400,
        f"start ({padded[:40]}) is not before end (2026-01-01): give a start before the end",
    )
    assert refused(three_days().service(), start="2026-01-03", end=padded)[1].startswith(
        f"start (2026-01-03) is not before end ({padded[:40]}): "
    )
    segments = [f"k={'v' * 60}{i:03}" for i in range(8)]
    session = Session([stored(f"b{i}", T0, segment=s) for i, s in enumerate(segments)])
    status, message = refused(session.service(), segment="s" * 100)
    known = ", ".join(segments)
    assert (status, message) == (404, f"session s1 has no segment {'s' * 80!r}; its segments: {known[:400]}")
    references = [stored(f"r{i}", T0, kind="reference", alias="a" * 60 + str(i)) for i in range(8)]
    session = Session([stored("b", T0), *references])
    known = ", ".join(sorted(r.alias or "" for r in references))
    assert refused(session.service(), reference="n" * 100) == (
        404,
        f"session s1 has no reference {'n' * 80!r}; give a ref-… id or an alias: {known[:400]}",
    )


def test_the_memory_estimates_of_parsed_points_and_column_names():
    point = ColumnPoint()
    drift = DriftPoint(category=None, p_value=None, statistic=None, algorithm="ks")
    # 256 bytes and 400 a column, a drift against the reference, a drift against the previous bucket
    assert _memo_size(BucketPoints(start=0, end=1, profiles=1, columns={"a": point})) == 656
    assert _memo_size(BucketPoints(0, 1, 1, {"a": point, "b": point}, {"a": drift}, {"a": drift, "b": drift})) == 2256
    # 64 bytes and 56 a name, and its characters
    assert (_names_size(()), _names_size(("x", "abc"))) == (64, 64 + 57 + 59)


def test_parsed_points_are_kept_in_memory_within_their_bytes():
    def points_read(**memo_bytes: int) -> int:
        """How many bucket points a second view of the same three hours reads from the store."""
        cache = CountedArtefacts()
        service = three_days().service(cache=cache, **memo_bytes)
        service.document("s1", TimelineQuery(granularity="hour"))
        cache.gets.clear()
        service.document("s1", TimelineQuery(granularity="hour", reference="r1"))  # another document
        assert service.computed == {"points": 3, "drift": 5}  # nothing computed again
        return len([k for k in cache.gets if k.endswith("points")])

    assert points_read() == 0  # in memory (32 MiB by default)
    assert points_read(memo_bytes=1) == 3  # none kept: read back
    assert points_read(memo_bytes=1000) == 3  # each hour's points are counted at 1,056 bytes or more


def test_a_refused_view_suggests_only_coarser_granularities():
    hourly = Session([stored(f"h{i}", T0 + i * HOUR) for i in range(3)]).service(max_buckets=2)
    with pytest.raises(TimelineRequestError) as caught:
        hourly.document("s1", TimelineQuery(granularity="hour"))
    assert "ask for a coarser granularity (day, week, month) or a shorter" in caught.value.message
    weekly = Session([stored(f"w{i}", T0 + i * 7 * DAY) for i in range(3)]).service(max_buckets=2)
    with pytest.raises(TimelineRequestError) as caught:
        weekly.document("s1", TimelineQuery(granularity="week"))
    assert caught.value.message == (
        "this week view has 3 buckets; a timeline view shows at most 2 buckets: ask for a coarser granularity "
        "(month) or a shorter start/end range (e.g. start=2024-01-01&end=2024-02-01)"
    )
    # the caps count with thousands separators
    many = Session([stored(f"h{i}", T0 + i * HOUR) for i in range(1001)]).service(max_buckets=1000)
    with pytest.raises(TimelineRequestError) as caught:
        many.document("s1", TimelineQuery(granularity="hour"))
    assert caught.value.message.startswith("this hour view has 1,001 buckets; a timeline view shows at most 1,000 ")
    cells = Session([stored(f"h{i}", T0 + i * HOUR) for i in range(2)]).service(
        max_cells=1000, column_names=lambda p: [f"c{i}" for i in range(600)]
    )
    with pytest.raises(TimelineRequestError) as caught:
        cells.document("s1", TimelineQuery(granularity="hour"))
    assert "has 2 buckets × 600+ columns; a timeline view shows at most 1,000 cells" in caught.value.message


def test_references_are_listed_newest_first_a_tie_by_the_larger_id():
    session = Session(
        [
            stored("b", T0),
            stored("r-a", T0, kind="reference", stored_at=2),
            stored("r-b", T0, kind="reference", stored_at=2),
            stored("r-c", T0 + 1, kind="reference", stored_at=1),
        ]
    )
    document = session.service().document("s1", TimelineQuery())
    assert [(r["id"], r["timestamp"]) for r in document["references"]] == [
        ("r-b", T0),
        ("r-a", T0),
        ("r-c", T0 + 1),
    ]


def test_the_batch_timestamps_of_each_bucket_are_listed_once_and_in_order():
    session = Session(
        [stored("c", T0 + 2 * HOUR), stored("a", T0 + HOUR), stored("b", T0 + 2 * HOUR), stored("d", T0 + DAY)]
    )
    document = session.service().document("s1", TimelineQuery(granularity="day"))
    assert document["batch_timestamps"] == [[T0 + HOUR, T0 + 2 * HOUR], [T0 + DAY]]


def test_the_refresh_of_a_watched_view_waits_for_ingest_workers():
    session = three_days()
    session.profiles[0] = stored("b1", T0 + HOUR, pending=True)
    asked: list[bool] = []

    def state(profile: StoredProfile, patient: bool) -> str:
        asked.append(patient)
        return "ready"

    cache = MemoryArtefacts()
    cache.put("s1", WATCHED_KEY, b'{"granularity": "day"}')
    assert session.service(cache=cache, state=state).batch_landed("s1") == []
    assert asked == [True]


def test_the_monitors_of_a_dataset_are_logged_with_its_name(caplog):
    service = with_a_busy_last_day().service(
        monitors=count_monitor(datasets=["org/d"]), target_of=lambda s: ("dataset", "org/d")
    )
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.timeline"):
        [failure] = service.batch_landed("s1")
    assert said(caplog) == [
        f"monitors evaluated: dataset org/d, bucket from {T0 + 3 * DAY}: 1 failure(s)",
        "monitor failed: dataset org/d, column x: count = 6 is above max 3.5 (rows)",
    ]
    assert (failure.bucket_end, failure.reason) == (T0 + 4 * DAY, "count = 6 is above max 3.5")


def test_a_request_error_reads_as_its_message():
    error = TimelineRequestError(404, "session s1 has no segment 'x'")
    assert (str(error), error.status, error.message) == ("session s1 has no segment 'x'", 404, error.message)


def test_monitors_naming_the_session_evaluate_it_and_one_without_batches_has_no_failures():
    assert len(with_a_busy_last_day().service(monitors=count_monitor(sessions=["s1"])).batch_landed("s1")) == 1
    empty = Session([stored("r1", T0, kind="reference")]).service(monitors=count_monitor())
    assert empty.batch_landed("s1") == []


def test_with_rollups_an_hour_and_a_segment_are_rolled_up_on_their_own_and_each_batch_loaded_once():
    session = with_a_busy_last_day()
    session.profiles += [stored("k1", T0 + 3 * DAY, segment="k=v"), stored("k2", T0 + 3 * DAY + HOUR, segment="k=v")]
    rollups = Rollups(Derived(), lambda session_id, member: None)
    service = session.service(rollups=rollups, column_names=lambda p: ["x"])
    daily = service.document("s1", TimelineQuery(granularity="day"))
    assert daily["columns"]["x"]["count"] == [3, 3, 12]
    assert sorted(session.loaded) == ["b1", "b2", "b3", "b5", "k1", "k2", "r1"]  # merged once, never again
    segment = service.document("s1", TimelineQuery(granularity="day", segment="k=v"))
    assert segment["columns"]["x"]["count"] == [6]
    in_segment = rollups.read("s1", "day", T0 + 3 * DAY, family_of("k=v"), merged=False)
    assert in_segment is not None and [m.upload_id for m in in_segment.members] == ["k1", "k2"]
    everything = rollups.read("s1", "day", T0 + 3 * DAY, ALL_SEGMENTS, merged=False)
    assert everything is not None and [m.upload_id for m in everything.members] == ["b3", "b5", "k1", "k2"]
    hourly = service.document("s1", TimelineQuery(granularity="hour"))
    assert hourly["columns"]["x"]["count"] == [3, 3, 9, 3]
    last_hours = rollups.read("s1", "hour", T0 + 3 * DAY, ALL_SEGMENTS, merged=False)
    assert last_hours is not None and [m.upload_id for m in last_hours.members] == ["b3", "b5", "k1"]


def digest(*parts: str) -> str:
    """What the module's keys are made of: the sha256 of the sorted parts, one a line (hex)."""
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()


def test_bucket_values_are_stored_under_the_documented_keys():
    session = Session([stored("b1", T0), stored("b2", T0 + DAY), stored("r1", T0, kind="reference")])
    cache = CountedArtefacts()
    session.service(cache=cache).document("s1", TimelineQuery(granularity="day"))
    no_segment = digest("")[:16]
    first = f"timeline/b/v2/day/{no_segment}/{T0}/{digest('b1:sha-b1:1')[:32]}/"
    second = f"timeline/b/v2/day/{no_segment}/{T0 + DAY}/{digest('b2:sha-b2:1')[:32]}/"
    against_r1 = f"ref/{digest('r1')[:16]}/{digest('r1:sha-r1:1')[:32]}"
    assert cache.keys(BUCKET_PREFIX) == sorted(
        [
            f"{first}points",
            f"{first}{against_r1}",
            f"{second}points",
            f"{second}prev/{digest('b1:sha-b1:1')[:32]}",
            f"{second}{against_r1}",
        ]
    )
    segmented = Session([stored("b1", T0, segment="k=v")])
    cache = CountedArtefacts()
    segmented.service(cache=cache).document("s1", TimelineQuery(granularity="day", segment="k=v"))
    assert cache.keys(BUCKET_PREFIX) == [
        f"timeline/b/v2/day/{digest('k=v')[:16]}/{T0}/{digest('b1:sha-b1:1')[:32]}/points"
    ]


def test_every_view_first_calls_the_refresh_hook():
    session = three_days()
    nudged: list[str] = []
    service = session.service(refresh=nudged.append, version=lambda s: "v1")
    service.document("s1", TimelineQuery())
    service.document("s1", TimelineQuery())  # answered from the store: nudged all the same
    assert nudged == ["s1", "s1"]


def test_a_blank_range_is_no_range():
    session = three_days()
    cache = CountedArtefacts()
    service = session.service(cache=cache, version=lambda s: "v1")
    whole = service.document("s1", TimelineQuery())
    listed = session.listed
    for blank in (TimelineQuery(start=" ", end=""), TimelineQuery(start="", end="\t")):
        assert session.service(cache=cache, version=lambda s: "v1").document("s1", blank) == whole
    assert session.listed == listed  # the stored document, answered without listing


def test_a_range_starting_at_a_bucket_s_end_leaves_that_bucket_out():
    service = three_days().service()
    document = service.document("s1", TimelineQuery(granularity="day", start=str(T0 + DAY)))
    assert [b["start"] for b in document["buckets"]] == [T0 + DAY, T0 + 3 * DAY]
    document = service.document("s1", TimelineQuery(granularity="day", start=str(T0 + DAY - 1)))
    assert [b["start"] for b in document["buckets"]] == [T0, T0 + DAY, T0 + 3 * DAY]


def test_views_built_at_one_version_are_told_apart_by_their_range_and_what_is_pending():
    session = three_days()
    service = session.service(version=lambda s: "v1")
    ends = [service.document("s1", TimelineQuery(granularity="day", end=str(T0 + k * DAY))) for k in (1, 2)]
    assert [len(d["buckets"]) for d in ends] == [1, 2]
    starts = [service.document("s1", TimelineQuery(granularity="day", start=str(T0 + k * DAY))) for k in (2, 1)]
    assert [len(d["buckets"]) for d in starts] == [1, 2]
    states = {"b2": "pending"}
    session.profiles[1] = stored("b2", T0 + DAY + HOUR, pending=True)
    waiting = session.service(version=lambda s: "v1", state=lambda p, patient: states[p.id])
    assert waiting.document("s1", TimelineQuery())["pending"] == ["b2"]
    states["b2"] = "ready"  # summarised since: the next view shows it, whatever the version says
    document = waiting.document("s1", TimelineQuery())
    assert "pending" not in document and [b["profiles"] for b in document["buckets"]] == [1, 1, 1]


def test_without_a_version_an_unchanged_document_is_read_back_not_stored_again():
    session = three_days()
    cache = CountedArtefacts()
    session.service(cache=cache).document("s1", TimelineQuery())
    session.service(cache=cache).document("s1", TimelineQuery())
    [key] = cache.keys(DOC_PREFIX)
    assert cache.puts[key] == 1


def test_values_of_older_servers_are_looked_for_again_past_a_hundred_thousand_sessions():
    session = three_days()
    cache = MemoryArtefacts()
    service = TimelineService(lambda session_id: list(session.profiles), session.load, cache)
    service._current_format.update(f"seen{i}" for i in range(99_999))
    service.document("s1", TimelineQuery())  # the 100,000th session looked at
    late = OLD_PREFIXES[1] + "x"
    cache.put("s1", late, b"{}")
    service.document("s2", TimelineQuery())  # 100,000 remembered, not more: s2 is added
    service.document("s1", TimelineQuery(granularity="week"))
    assert cache.get("s1", late) == b"{}"  # s1 still remembered: not looked at again
    service.document("s3", TimelineQuery())  # 100,001: forgotten, s3 remembered alone
    service.document("s1", TimelineQuery(granularity="hour"))
    assert cache.get("s1", late) is None


def test_the_defaults_bound_a_view_and_the_in_memory_cache():
    assert (MAX_VIEW_BUCKETS, MAX_VIEW_CELLS) == (1000, 50_000)
    assert MemoryArtefacts().max_bytes == 256 * 1024 * 1024
    hours = Session([stored(f"h{i}", T0 + i * HOUR) for i in range(1001)]).service()
    with pytest.raises(TimelineRequestError) as caught:
        hours.document("s1", TimelineQuery(granularity="hour"))
    assert caught.value.message.startswith("this hour view has 1,001 buckets; a timeline view shows at most 1,000 ")
    wide = Session([stored("a", T0), stored("b", T0 + DAY)])
    names = [f"c{i}" for i in range(25_001)]
    with pytest.raises(TimelineRequestError) as caught:
        wide.service(column_names=lambda p: names).document("s1", TimelineQuery(granularity="day"))
    assert "has 2 buckets × 25,001+ columns; a timeline view shows at most 50,000 cells" in caught.value.message
    assert wide.service(column_names=lambda p: names[:-1]).document("s1", TimelineQuery(granularity="day"))


def test_a_batch_at_the_epoch_is_at_time_zero():
    session = Session([stored("z", 0), stored("y", 0)])
    rollups = Rollups(Derived(), lambda session_id, member: None)
    document = session.service(rollups=rollups).document("s1", TimelineQuery(granularity="day"))
    assert document["batch_timestamps"] == [[0]] and document["buckets"][0]["start"] == 0
    epoch_day = rollups.read("s1", "day", 0, ALL_SEGMENTS, merged=False)
    assert epoch_day is not None and [m.timestamp for m in epoch_day.members] == [0, 0]


def test_stored_json_is_strict_and_compact():
    assert _dumps({"a": [1, None], "b": "c"}) == b'{"a":[1,null],"b":"c"}'
    with pytest.raises(ValueError):
        _dumps({"mean": float("nan")})


def test_a_view_lists_the_failures_of_every_bucket_and_shows_its_segment():
    session = Session([stored("b1", T0), stored("b2", T0), stored("b3", T0 + DAY), stored("s", T0, segment="k=v")])
    service = session.service(monitors=count_monitor())
    document = service.document("s1", TimelineQuery(granularity="day"))
    assert [(a["start"], a["value"]) for a in document["alerts"]] == [(T0, 9)]  # the first day, not the latest
    assert document["segment"] is None
    assert service.document("s1", TimelineQuery(segment="k=v"))["segment"] == "k=v"


def test_a_value_computed_for_one_view_does_not_hold_up_another_view_s_values():
    session = three_days()
    session.profiles.append(stored("b5", T0 + 3 * DAY + HOUR))  # the last day has two hours
    entered, release = threading.Event(), threading.Event()

    def load(profile: StoredProfile) -> DatasetProfileView:
        if threading.current_thread().name == "first" and profile.id == "b1":
            entered.set()
            release.wait(60)  # (released below, whatever happens)
        return session.load(profile)

    service = TimelineService(session.list_profiles, load, MemoryArtefacts(), column_names=lambda p: ["x"])
    shown: dict[str, Any] = {}

    def view(granularity: str) -> None:
        shown[granularity] = service.document("s1", TimelineQuery(granularity=granularity))

    first = threading.Thread(target=view, args=("day",), name="first", daemon=True)
    second = threading.Thread(target=view, args=("hour",), name="second", daemon=True)
    first.start()
    try:
        assert entered.wait(5)  # the first view computes its first bucket's points
        second.start()
        second.join(5)
        assert not second.is_alive(), "the hour view waited for the day view's value"
    finally:
        release.set()
    first.join(5)
    assert shown["hour"]["columns"]["x"]["count"] == [3, 3, 3, 3]
    assert shown["day"]["columns"]["x"]["count"] == [3, 3, 6]


def test_the_in_memory_cache_gives_back_the_bytes_of_what_it_drops():
    cache = MemoryArtefacts(max_bytes=10)
    cache.put("s", "a", b"1")
    cache.put("s", "b", b"12345678")
    cache.drop("s", "a")  # 8 bytes left
    cache.put("s", "c", b"12")  # 10: all kept
    assert (cache.get("s", "b"), cache.get("s", "c")) == (b"12345678", b"12")
    cache.put("s", "d", b"1")  # 11: the least recently used (b) goes
    assert [cache.get("s", k) for k in "bcd"] == [None, b"12", b"1"]


def test_the_column_names_of_a_profile_are_read_once():
    session = three_days()
    asked: list[str] = []

    def names(profile: StoredProfile) -> list[str]:
        asked.append(profile.id)
        return ["x"]

    service = session.service(column_names=names)
    for granularity in ("day", "week", "hour"):
        service.document("s1", TimelineQuery(granularity=granularity))
    assert sorted(asked) == ["b1", "b2", "b3"]


def test_a_view_of_unready_profiles_without_references():
    session = Session([stored("b1", T0, pending=True), stored("b2", T0 + DAY)])
    document = session.service(state=lambda p, patient: "pending").document("s1", TimelineQuery(granularity="day"))
    assert (document["pending"], document["reference"], [b["start"] for b in document["buckets"]]) == (
        ["b1"],
        None,
        [T0 + DAY],
    )


def test_the_cap_on_cells_reads_only_the_names_of_the_view_s_own_rollups():
    session = Session(
        [
            stored("b1", T0 + HOUR),
            stored("b2", T0 + HOUR, segment="k=v"),
            stored("b3", T0 + DAY, segment="k=v"),
            stored("b4", T0 + DAY + HOUR),
        ]
    )
    derived = Derived()
    rollups = Rollups(derived, lambda session_id, member: None)
    for query in (TimelineQuery(granularity="day"), TimelineQuery(granularity="hour"), TimelineQuery(segment="k=v")):
        session.service(rollups=rollups).document("s1", query)

    def read_by_the_cap(**query: str) -> list[str]:
        derived.reads.clear()
        with pytest.raises(TimelineRequestError):
            session.service(rollups=rollups, max_cells=1).document("s1", TimelineQuery(**query))
        return derived.reads

    # the first bucket's rollup header only (not its merged columns): 2 buckets × 1 column are too many
    assert read_by_the_cap(granularity="day") == [rollup_key("day", T0, ALL_SEGMENTS)]
    assert read_by_the_cap(granularity="hour") == [rollup_key("hour", T0 + HOUR, ALL_SEGMENTS)]
    assert read_by_the_cap(granularity="day", segment="k=v") == [rollup_key("day", T0, family_of("k=v"))]


def test_the_cap_on_cells_keeps_the_names_of_a_rollup_it_read_and_reads_no_header_again():
    session = Session([stored("b1", T0 + HOUR), stored("b2", T0 + DAY + HOUR)])
    derived = Derived()
    service = session.service(rollups=Rollups(derived, lambda session_id, member: None), max_cells=1)
    shown = service.document("s1", TimelineQuery(granularity="day", end=str(T0 + DAY)))  # 1 bucket × 1 column
    assert [b["start"] for b in shown["buckets"]] == [T0]
    derived.reads.clear()
    with pytest.raises(TimelineRequestError) as caught:
        service.document("s1", TimelineQuery(granularity="day"))
    assert caught.value.message.startswith("this day view has 2 buckets × 1+ columns; ")
    assert derived.reads == []  # the first day's names were kept: refused before reading anything


def test_with_an_outline_a_sparse_history_of_exactly_the_cap_is_shown_and_one_more_bucket_refused():
    session = Session([stored("a", T0, segment="k=v"), stored("b", T0 + 5 * HOUR, segment="k=v")])
    service = session.service(outline=Outline(session), max_buckets=2)
    for segment in (None, "k=v"):  # counted by the store's index; from the timestamps of a segment
        document = service.document("s1", TimelineQuery(granularity="hour", segment=segment))
        assert [b["start"] for b in document["buckets"]] == [T0, T0 + 5 * HOUR]
    session.profiles.append(stored("c", T0 + 9 * HOUR, segment="k=v"))
    for segment in (None, "k=v"):
        with pytest.raises(TimelineRequestError) as caught:
            service.document("s1", TimelineQuery(granularity="hour", segment=segment))
        assert caught.value.message.startswith("this hour view has 3 buckets; a timeline view shows at most 2 buckets")


def _utc_ms(*when: int) -> int:
    """Milliseconds since the epoch of a UTC date and time (year, month, day[, hour, minute])."""
    return int(pd.Timestamp(*when, tz="UTC").timestamp() * 1000)


@pytest.mark.parametrize(
    "granularity, first, last",
    [
        ("hour", _utc_ms(2025, 12, 31, 22), _utc_ms(2026, 1, 1, 1, 59)),  # four hours over a year's end
        ("day", _utc_ms(2025, 12, 30, 0), _utc_ms(2026, 1, 2, 23, 59)),  # four days
        ("week", _utc_ms(2025, 12, 15, 0), _utc_ms(2026, 1, 11, 23, 59)),  # four ISO weeks, Monday to Sunday
        ("month", _utc_ms(2025, 11, 30, 23), _utc_ms(2026, 2, 1, 0)),  # November to February
    ],
)
def test_with_an_outline_a_span_of_exactly_the_cap_is_shown_from_its_ends_alone(granularity, first, last):
    """Two batches whose buckets are four apart: with a cap of 4 buckets the ends of the history say
    the view fits (nothing counted); with a cap of 3 the buckets are counted (two), and shown."""
    session = Session([stored("b1", first), stored("b2", last)])
    outline = Outline(session)
    for cap, asked in ((4, ["span"]), (3, ["span", "timestamps" if granularity == "month" else "bucket_counts"])):
        outline.asked.clear()
        document = session.service(outline=outline, max_buckets=cap).document(
            "s1", TimelineQuery(granularity=granularity)
        )
        assert outline.asked == asked, cap
        assert [b["profiles"] for b in document["buckets"]] == [1, 1], cap  # the buckets with batches


@pytest.mark.parametrize(
    "granularity, timestamps, cap, buckets",
    [
        # the last millisecond of an hour or a day and the first of the next are two buckets
        ("hour", [T0 + HOUR - 1, T0 + HOUR, T0 + 5 * HOUR], 2, 3),
        ("day", [T0 + DAY - 1, T0 + DAY, T0 + 5 * DAY], 2, 3),
        # ISO weeks: Sunday 2026-01-04's last millisecond and Monday 2026-01-05 are two weeks...
        ("week", [T0 + 4 * DAY - 1, T0 + 4 * DAY, T0 + 30 * DAY], 2, 3),
        # ...Monday 2026-01-05 and Sunday 2026-01-11's last millisecond one week
        ("week", [T0 + 4 * DAY, T0 + 11 * DAY - 1, T0 + 30 * DAY], 2, 2),
        # eight Mondays are eight weeks
        ("week", [T0 + (4 + 7 * i) * DAY for i in range(8)], 7, 8),
    ],
)
def test_with_an_outline_the_store_counts_buckets_from_their_utc_edges(granularity, timestamps, cap, buckets):
    session = Session([stored(f"b{i}", t) for i, t in enumerate(timestamps)])
    outline = Outline(session)
    service = session.service(outline=outline, max_buckets=cap)
    query = TimelineQuery(granularity=granularity)
    if buckets > cap:
        with pytest.raises(TimelineRequestError, match=f"this {granularity} view has {buckets} buckets;"):
            service.resolve("s1", query)
        assert session.listed == 0  # refused from the store's count alone
    else:
        assert len(service.resolve("s1", query).batches) == len(timestamps)
    assert outline.asked == ["span", "bucket_counts"]


@pytest.mark.parametrize("far", [2**62, -(2**62)])
def test_timestamps_beyond_two_to_the_62_are_counted_here_not_by_the_store(far):
    """The store counts buckets of ``timestamp + offset`` in 64-bit integers: from 2**62 on (either
    sign) the buckets are counted here, from the timestamps; one millisecond nearer, by the store."""
    for edge, asked in ((far, "timestamps"), (far - 1 if far > 0 else far + 1, "bucket_counts")):
        session = Session([stored("b1", edge), stored("b2", edge - 5 * HOUR if far > 0 else edge + 5 * HOUR)])
        outline = Outline(session)
        with pytest.raises(TimelineRequestError, match="this hour view has 2 buckets;"):
            session.service(outline=outline, max_buckets=1).resolve("s1", TimelineQuery(granularity="hour"))
        assert outline.asked == ["span", asked], edge


def test_with_an_outline_a_view_without_range_or_granularity_reads_no_outline():
    session = hourly(3)
    outline = Outline(session)
    view = session.service(outline=outline).resolve("s1", TimelineQuery())
    assert (view.granularity, len(view.batches), outline.asked, session.listed) == ("hour", 3, [], 1)


def test_with_an_outline_a_ranged_view_chooses_its_granularity_from_the_batches_in_its_range():
    """Seven earlier batches, a month apart, would make it monthly; the three in range are hourly."""
    early = [stored(f"e{i}", T0 - i * 32 * DAY) for i in range(1, 8)]
    session = Session([*early, *(stored(f"h{i}", T0 + i * HOUR) for i in range(3))])
    outline = Outline(session)
    assert session.service(outline=outline).resolve("s1", TimelineQuery(start=str(T0))).granularity == "hour"
    assert session.service().resolve("s1", TimelineQuery()).granularity == "month"


def test_with_an_outline_a_range_ending_at_a_bucket_s_start_reads_up_to_it_and_one_ms_later_the_whole_bucket():
    session = three_days()
    outline = Outline(session)
    service = session.service(outline=outline)
    ending = service.resolve("s1", TimelineQuery(granularity="day", start=str(T0), end=str(T0 + DAY)))
    assert [b.id for b in ending.batches] == ["b1"] and outline.asked == [f"between {T0} {T0 + DAY}"]
    outline.asked.clear()
    later = service.resolve("s1", TimelineQuery(granularity="day", start=str(T0), end=str(T0 + DAY + 1)))
    assert [b.id for b in later.batches] == ["b1", "b2"] and outline.asked == [f"between {T0} {T0 + 2 * DAY}"]


def test_with_rollups_a_week_of_two_days_is_merged_from_both_stored_day_rollups():
    """Two days of one ISO week (Thursday and Friday), each of two batches: a second view reads
    both days' stored rollups, and shows the whole week, not its first day."""
    session = Session([stored(f"b{i}", T0 + (i // 2) * DAY + i * HOUR) for i in range(4)])
    plain = session.service().document("s1", TimelineQuery(granularity="week"))
    rollups = Rollups(Derived(), lambda session_id, member: None)
    first = session.service(rollups=rollups).document("s1", TimelineQuery(granularity="week"))
    again = session.service(rollups=rollups).document("s1", TimelineQuery(granularity="week"))
    assert plain["columns"]["x"]["count"] == [12]
    assert first["columns"]["x"]["count"] == again["columns"]["x"]["count"] == [12]
    assert again["columns"]["x"]["mean"] == plain["columns"]["x"]["mean"]
