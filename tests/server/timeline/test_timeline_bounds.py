"""The timeline's bounds over real HTTP: dataset timestamps in range at slot time (and whatever was
stored before served without a 500), the cap on a view's size with start/end ranges, values
computed once for parallel requests, replaced bucket versions pruned from the store (both stores),
the rendered-page cache bounded by bytes, user text isolated on the page, and a repeated server
error logged once."""

from __future__ import annotations

import logging
import random
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import both_stores, make_profile_bytes
from stored_profiles import store_profile_bytes, wait_summarised

from whylogs_songbird.check import BAD_INPUT, PASSED, run_check
from whylogs_songbird.models import MAX_TIMESTAMP, MIN_TIMESTAMP
from whylogs_songbird.server import LocalServer
from whylogs_songbird.server.common import observatory_link
from whylogs_songbird.server.routes.timeline import PAGE_CACHE_BYTES
from whylogs_songbird.server.store import NewUpload
from whylogs_songbird.server.timeline_service import BUCKET_PREFIX, DOC_PREFIX, MAX_VIEW_BUCKETS
from whylogs_songbird.server.unexpected import RepeatedErrors
from whylogs_songbird.timeline import DAY_MS, GRANULARITIES, HOUR_MS, bucket_bounds, civil_date, civil_days
from whylogs_songbird.timeline_client import fetch_timeline

TIMEOUT = 120
YEAR_10000 = 253_402_300_800_000  # 10000-01-01T00:00:00Z
YEAR_0 = -62_135_596_800_001  # 0000-12-31T23:59:59.999Z
DAY0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def new_session(server: LocalServer) -> str:
    r = requests.post(f"{server.url}/v0/sessions", json={"userId": "tester"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def put(url: str, data: bytes) -> None:
    r = requests.put(url, data=data, timeout=TIMEOUT)
    assert r.status_code in (200, 204), r.text


def upload_batch(server: LocalServer, session_id: str, timestamp: int, data: bytes, **body: Any) -> None:
    r = requests.post(
        f"{server.url}/v0/sessions/{session_id}/upload",
        json={"datasetTimestamp": timestamp, **body},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    put(r.json()["uploadUrl"], data)
    if server.store.presigns:  # once the ingest worker saw it land and summarised it
        wait_summarised(server.store, r.json()["id"])


def upload_reference(server: LocalServer, session_id: str, alias: str, data: bytes) -> str:
    r = requests.post(f"{server.url}/v0/sessions/{session_id}/reference", json={"alias": alias}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    put(r.json()["uploadUrl"], data)
    if server.store.presigns:
        wait_summarised(server.store, r.json()["id"])
    return str(r.json()["id"])


def store_directly(server: LocalServer, session_id: str, timestamps: list[int], data: bytes) -> None:
    """Batches stored as a server before the timestamp check did: slots made in the store (no
    check), the bytes PUT over HTTP to the slots' own URLs."""
    store = server.store
    for upload in store.create_uploads(session_id, [NewUpload("batch", t) for t in timestamps], ttl_seconds=600):
        url = store.upload_url(upload, 600) or server.app.state.signer.upload_url(
            server.url, upload.id, upload.expires_at
        )
        put(url, data)


def timeline(server: LocalServer, session_id: str, page: bool = False, **params: str) -> requests.Response:
    path = f"/sessions/{session_id}/timeline" if page else f"/api/v1/sessions/{session_id}/timeline"
    return requests.get(server.url + path, params=params, timeout=TIMEOUT)


def derived_keys(server: LocalServer, session_id: str) -> list[str]:
    """The keys of the session's stored derived values (read from the store's own table)."""
    rows = server.store.metadata._query("SELECT key FROM derived WHERE session_id = ?", (session_id,))  # type: ignore[attr-defined]
    return sorted(str(row["key"]) for row in rows)


# -- timestamps -------------------------------------------------------------------------------


def test_timestamps_outside_years_1_to_9999_are_refused_at_slot_time(server: LocalServer) -> None:
    session_id = new_session(server)
    for stamp in (YEAR_10000, YEAR_0, MAX_TIMESTAMP, MIN_TIMESTAMP):
        for path, body in (
            ("upload", {"datasetTimestamp": stamp}),
            ("reference", {"alias": "a", "datasetTimestamp": stamp}),
            ("references", {"references": [{"alias": "a"}, {"alias": "b", "datasetTimestamp": stamp}]}),
        ):
            r = requests.post(f"{server.url}/v0/sessions/{session_id}/{path}", json=body, timeout=TIMEOUT)
            assert r.status_code == 400, (path, stamp, r.text)
            message = r.json()["message"]
            assert "datasetTimestamp" in message and "outside years 1 to 9999" in message, message
    assert server.store.list_profiles(session_id) == [], "no slot was made"


def test_stored_extreme_timestamps_are_served_for_every_granularity(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    session_id = new_session(server)
    data = make_profile_bytes(20, seed=1)
    for day in range(3):
        upload_batch(server, session_id, DAY0 + day * DAY_MS, make_profile_bytes(20, seed=day))
    extreme = [YEAR_10000, YEAR_0, -1, MIN_TIMESTAMP, 2**63 - 1]
    store_directly(server, session_id, extreme, data)
    upload_reference(server, session_id, "training", make_profile_bytes(40, seed=9))
    caplog.set_level(logging.WARNING)
    labels = {
        "hour": ("10000-01-01 00:00 UTC", "0000-12-31 23:00 UTC"),
        "day": ("10000-01-01 (UTC)", "0000-12-31 (UTC)"),
        "week": ("week 9999-W52 from 9999-12-27 (UTC)", "week from 0000-12-25 (UTC)"),
        "month": ("January 10000 (UTC)", "December 0 (UTC)"),
    }
    for granularity in ("", *GRANULARITIES):
        r = timeline(server, session_id, granularity=granularity)
        assert r.status_code == 200, (granularity, r.text)
        doc = r.json()
        assert sum(b["profiles"] for b in doc["buckets"]) == 3 + len(extreme)
        starts = [b["start"] for b in doc["buckets"]]
        assert starts == sorted(starts)
        if granularity in ("hour", "day"):  # after a view at another granularity: its own buckets
            width = HOUR_MS if granularity == "hour" else DAY_MS
            assert all(b["end"] - b["start"] == width for b in doc["buckets"]), doc["buckets"]
        assert all(b["start"] <= t < b["end"] for b, t in zip(doc["buckets"], sorted(extreme)[:2], strict=False))
        page = timeline(server, session_id, page=True, granularity=granularity)
        assert page.status_code == 200, (granularity, page.text[:500])
        for label in labels.get(granularity, ()):
            assert label in page.text, (granularity, label)
    hourly = timeline(server, session_id, granularity="hour").json()
    assert [b["start"] for b in hourly["buckets"]][-1] == (2**63 - 1) - (2**63 - 1) % HOUR_MS
    # a range around the extreme ones
    late = timeline(server, session_id, granularity="month", start="9999-12-01", end="9999-12-31")
    assert late.status_code == 200 and late.json()["buckets"] == []
    # and the other pages that show them
    for url in (
        f"{server.url}/sessions/{session_id}",
        *(observatory_link(server.url, session_id, [stamp]) for stamp in extreme),
        observatory_link(server.url, session_id, extreme[:3]),
    ):
        r = requests.get(url, timeout=TIMEOUT)
        assert r.status_code == 200, (url, r.text[:300])
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# -- the size of a view -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_span(tmp_path_factory: pytest.TempPathFactory, shared_sandbox):
    """A session of 2,000 small batches spread over 1970-2100 (stored directly: the test is the view)."""
    with LocalServer(data_dir=tmp_path_factory.mktemp("span"), sandbox=shared_sandbox) as server:
        session_id = new_session(server)
        rng = random.Random(20)
        low, high = 0, 4_102_444_800_000  # 1970-01-01 .. 2100-01-01
        stamps = sorted(rng.randrange(low, high) for _ in range(2000))
        uploads = server.store.create_uploads(session_id, [NewUpload("batch", t) for t in stamps], ttl_seconds=600)
        data = make_profile_bytes(10, seed=3)
        for upload in uploads:
            store_profile_bytes(server.store, upload.id, data)
        yield server, session_id, stamps


def test_a_view_of_too_many_buckets_is_refused_naming_the_cap(wide_span) -> None:
    server, session_id, stamps = wide_span
    computed_before = sum(server.app.state.timeline.computed.values())
    for params in ({"granularity": "hour"}, {"granularity": "day"}, {}):
        r = timeline(server, session_id, **params)
        assert r.status_code == 400, (params, r.text[:300])
        message = r.json()["message"]
        assert f"at most {MAX_VIEW_BUCKETS:,} buckets" in message, message
        assert "start/end" in message, message
        if params.get("granularity") == "hour":
            hours = len({t // HOUR_MS for t in stamps})
            assert f"has {hours:,} buckets" in message and "coarser granularity (day, week, month)" in message
        page = timeline(server, session_id, page=True, **params)
        assert page.status_code == 400 and f"{MAX_VIEW_BUCKETS:,} buckets" in page.text
    assert sum(server.app.state.timeline.computed.values()) == computed_before, "nothing was computed"


def test_start_and_end_narrow_the_view(wide_span) -> None:
    server, session_id, stamps = wide_span
    start, end = "2000-01-01", "2001-01-01T00:00Z"
    low, high = 946_684_800_000, 978_307_200_000
    inside = [t for t in stamps if low <= t < high]
    assert 3 <= len(inside) < 100
    r = timeline(server, session_id, granularity="hour", start=start, end=end)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["start"] == low and doc["end"] == high
    assert sum(b["profiles"] for b in doc["buckets"]) == len(inside)
    assert doc["columns"]["n"]["count"] == [10] * len(doc["buckets"])
    # the first bucket shown has no previous one; the others are compared with theirs
    previous = doc["columns"]["n"]["previous_drift_category"]
    assert previous[0] is None and None not in previous[1:]
    same = timeline(server, session_id, granularity="hour", start=str(low), end=str(high))
    assert same.json()["buckets"] == doc["buckets"]
    # the client passes the range through
    fetched = fetch_timeline(session_id, endpoint=server.url, granularity="hour", start=start, end=high)
    assert fetched["buckets"] == doc["buckets"]
    page = timeline(server, session_id, page=True, granularity="hour", start=start, end=end)
    assert page.status_code == 200 and f'value="{start}"' in page.text
    assert f"from <bdi>{start}</bdi> to <bdi>{end}</bdi>" in page.text
    assert "start=2000-01-01" in page.text  # the JSON link keeps the range
    for params, words in (
        ({"start": "yesterday"}, "not a time"),
        ({"start": "2001-01-01", "end": "2000-01-01"}, "not before end"),
        ({"end": "10000-01-01"}, "not a time"),
        ({"start": str(-(10**15))}, "outside years 1 to 9999"),
    ):
        bad = timeline(server, session_id, granularity="month", **params)
        assert bad.status_code == 400 and words in bad.json()["message"], (params, bad.text)


def test_songbird_check_takes_a_range(wide_span, tmp_path: Path) -> None:
    server, session_id, _ = wide_span
    monitors = tmp_path / "monitors.toml"
    monitors.write_text('granularity = "hour"\n\n[[monitor]]\ncolumns = ["s"]\nmetric = "null_fraction"\nmax = 0.5\n')
    whole = run_check(session_id, monitors, endpoint=server.url, which="all")
    assert whole.exit_code == BAD_INPUT and whole.error is not None and "start/end" in whole.error
    ranged = run_check(session_id, monitors, endpoint=server.url, which="all", start="2000-01-01", end="2001-01-01")
    assert ranged.exit_code == PASSED, ranged.error
    assert ranged.timeline is not None and ranged.buckets == len(ranged.timeline["buckets"]) > 0


def test_a_view_of_too_many_cells_is_refused(server: LocalServer) -> None:
    session_id = new_session(server)
    for day in range(5):
        upload_batch(server, session_id, DAY0 + day * DAY_MS, make_profile_bytes(10, seed=day))
    service = server.app.state.timeline
    service.max_cells = 12  # 5 daily buckets × 3 columns = 15 cells
    r = timeline(server, session_id, granularity="day")
    assert r.status_code == 400, r.text
    assert "12 cells (buckets × columns)" in r.json()["message"]
    assert timeline(server, session_id, granularity="week").status_code == 200  # 1 or 2 weeks × 3 columns
    narrow = timeline(server, session_id, granularity="day", start=str(DAY0), end=str(DAY0 + 4 * DAY_MS))
    assert narrow.status_code == 200 and len(narrow.json()["buckets"]) == 4


# -- computed once ----------------------------------------------------------------------------


def test_parallel_views_with_different_references_compute_each_value_once(server: LocalServer) -> None:
    session_id = new_session(server)
    days = 6
    for day in range(days):
        upload_batch(server, session_id, DAY0 + day * DAY_MS, make_profile_bytes(30, seed=day))
    references = [
        upload_reference(server, session_id, f"ref{i}", make_profile_bytes(30, seed=50 + i)) for i in range(4)
    ]
    service = server.app.state.timeline
    before = dict(service.computed)
    asks = [(ref, page) for ref in references for page in (False, True)] * 2  # 16 requests, 4 references
    with ThreadPoolExecutor(len(asks)) as pool:
        answers = list(
            pool.map(lambda ask: timeline(server, session_id, ask[1], granularity="day", reference=ask[0]), asks)
        )
    assert [a.status_code for a in answers] == [200] * len(asks)
    computed = {k: v - before.get(k, 0) for k, v in service.computed.items()}
    # per bucket: its points once; drift against each reference once, and against the previous bucket once
    assert computed == {"points": days, "drift": days * len(references) + days - 1}
    stored = [k for k in derived_keys(server, session_id) if k.startswith(BUCKET_PREFIX)]
    assert len(stored) == days + days * len(references) + days - 1
    # asked again: everything is read back
    again = timeline(server, session_id, granularity="day", reference=references[0])
    assert again.status_code == 200
    assert {k: v - before.get(k, 0) for k, v in service.computed.items()} == computed


# -- pruning, on both stores ------------------------------------------------------------------


@both_stores
def test_replaced_bucket_versions_are_pruned(server: LocalServer) -> None:
    session_id = new_session(server)
    for day in range(3):
        upload_batch(server, session_id, DAY0 + day * DAY_MS + HOUR_MS, make_profile_bytes(20, seed=day))
    upload_reference(server, session_id, "training", make_profile_bytes(40, seed=9))

    def stored() -> list[str]:
        return [k for k in derived_keys(server, session_id) if k.startswith(BUCKET_PREFIX)]

    def view(granularity: str) -> dict[str, Any]:
        r = timeline(server, session_id, granularity=granularity)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def expected(doc: dict[str, Any]) -> int:
        buckets = len(doc["buckets"])
        return buckets + buckets + max(0, buckets - 1)  # points, drift against the reference and the previous one

    daily = view("day")
    assert len(stored()) == expected(daily) == 8
    # more batches in the last bucket, then one in the first: new versions of those buckets
    for seed in (11, 12, 13):
        upload_batch(server, session_id, DAY0 + 2 * DAY_MS + seed * 60_000, make_profile_bytes(20, seed=seed))
        daily = view("day")
        assert len(stored()) == expected(daily) == 8, stored()
    upload_batch(server, session_id, DAY0 + 5 * HOUR_MS, make_profile_bytes(20, seed=14))
    daily = view("day")
    assert [b["profiles"] for b in daily["buckets"]] == [2, 1, 4]
    assert len(stored()) == 8, stored()
    # another granularity keeps its own, pruned the same way
    weekly = view("week")
    assert len(stored()) == 8 + expected(weekly)
    upload_batch(server, session_id, DAY0 + 2 * DAY_MS + 7 * HOUR_MS, make_profile_bytes(20, seed=15))
    view("week")
    view("day")
    assert len(stored()) == 8 + expected(weekly), stored()
    # and one stored document per view at most (the day and the week views)
    documents = [k for k in derived_keys(server, session_id) if k.startswith(DOC_PREFIX)]
    assert 1 <= len(documents) <= 2, documents


# -- the page cache ---------------------------------------------------------------------------


def test_the_page_cache_is_bounded_by_bytes(server: LocalServer) -> None:
    session_id = new_session(server)
    for index in range(16):  # 16 segments of 64 KB labels: every page lists them, about 1 MB each
        tags = [{"key": f"k{t:02d}", "value": f"{index:02d}" + "x" * 1000} for t in range(64)]
        upload_batch(server, session_id, DAY0 + index * HOUR_MS, make_profile_bytes(5, seed=index), segmentTags=tags)
    references = [upload_reference(server, session_id, f"r{i}", make_profile_bytes(9, seed=i)) for i in range(3)]
    pages = server.app.state.timeline_pages
    assert pages.max_bytes == PAGE_CACHE_BYTES and pages.max_entries is None
    pages.max_bytes = 8 * 1024 * 1024  # the bound, made small enough to fill with a few pages
    sizes = []
    for granularity in GRANULARITIES:
        for reference in references:
            r = timeline(server, session_id, page=True, granularity=granularity, reference=reference)
            assert r.status_code == 200
            sizes.append(sys.getsizeof(r.text))  # what the page takes in memory
            assert 0 < pages.bytes <= pages.max_bytes, sizes
            assert pages.bytes == sum(size for _, size in pages._data.values())
    assert min(sizes) > 2_000_000, "every page lists the 16 segments"
    assert sum(sizes) > 4 * pages.max_bytes, "the pages would not all fit"
    assert 0 < len(pages) <= pages.max_bytes // min(sizes)


# -- user text on the page --------------------------------------------------------------------

OVERRIDE = "\u202e"


def test_user_text_on_the_page_is_isolated_and_its_controls_shown(server: LocalServer) -> None:
    session_id = new_session(server)
    frame = pd.DataFrame({f"evil{OVERRIDE}gnp.exe": [1.0, 2.0, 3.0], "plain": ["a", "b", "c"]})
    data = why.log(frame).view().serialize()
    segment_tags = [{"key": "region", "value": f"eu{OVERRIDE}ten"}]
    for day in range(2):
        upload_batch(server, session_id, DAY0 + day * DAY_MS, data, segmentTags=segment_tags)
    upload_reference(server, session_id, f"train{OVERRIDE}ing", data)
    segment = f"region=eu{OVERRIDE}ten"
    r = timeline(server, session_id, page=True, granularity="day", segment=segment)
    assert r.status_code == 200, r.text[:500]
    html = r.text
    badge = '<span class="ctl" title="control character U+202E">U+202E</span>'
    assert f'<span class="hm-col"><bdi>evil{badge}gnp.exe</bdi></span>' in html
    assert f'<span class="tag"><bdi>region=eu{badge}ten</bdi></span>' in html
    assert f'<span class="tag" id="reference-name"><bdi>train{badge}ing</bdi></span>' in html
    assert ">region=eu&lt;U+202E&gt;ten</option>" in html
    assert ">train&lt;U+202E&gt;ing (ref-" in html
    assert 'title="evil&lt;U+202E&gt;gnp.exe · ' in html
    # the raw character is only where it is a value for the page's scripts, never shown
    hidden = re.sub(r'(value|data-column)="[^"]*"', "", html)
    assert OVERRIDE not in hidden


# -- a repeated server error ------------------------------------------------------------------


def test_a_repeated_server_error_logs_one_traceback(server_factory, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request):  # a request hook that fails on one path, as a bug would
        if request.url.path.endswith("/broken"):
            raise RuntimeError("a bug in a request hook")
        return None

    server = server_factory(request_hooks=[broken])
    caplog.set_level(logging.INFO)
    for _ in range(40):
        r = requests.post(f"{server.url}/v0/sessions/broken", json={}, timeout=TIMEOUT)
        assert r.status_code == 500
        assert r.json() == {"message": "The local songbird server failed unexpectedly; see its log for the traceback."}
    assert requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).status_code == 200
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]
    assert "a bug in a request hook" in caplog.text
    repeats = [r for r in caplog.records if "unexpected error again" in r.getMessage()]
    assert len(repeats) <= 1


# -- the calendar arithmetic (pure) -----------------------------------------------------------


def test_bucket_bounds_match_the_calendar_where_datetime_reaches_and_hold_beyond() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    rng = random.Random(7)
    low, high = -62_135_596_800_000 + 8 * DAY_MS, 253_402_300_799_999 - 40 * DAY_MS
    for stamp in [rng.randrange(low, high) for _ in range(3000)] + [0, -1, DAY0, DAY0 - 1]:
        moment = epoch + timedelta(milliseconds=stamp)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        monday = day - timedelta(days=day.weekday())
        first = day.replace(day=1)
        following = (
            first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
        )

        def ms(value: datetime) -> int:
            return (value - epoch) // timedelta(milliseconds=1)

        assert bucket_bounds(stamp, "week") == (ms(monday), ms(monday + timedelta(days=7)))
        assert bucket_bounds(stamp, "month") == (ms(first), ms(following))
        assert bucket_bounds(stamp, "day") == (ms(day), ms(day + timedelta(days=1)))
        assert civil_date(stamp // DAY_MS) == (moment.year, moment.month, moment.day)
    for days in range(-1_000_000, 3_000_000, 997):
        assert civil_days(*civil_date(days)) == days
    for stamp in (YEAR_10000, YEAR_0, MIN_TIMESTAMP, 2**63 - 1, -(2**70), 2**70):
        for granularity in GRANULARITIES:
            start, end = bucket_bounds(stamp, granularity)
            assert start <= stamp < end
            assert bucket_bounds(start, granularity) == (start, end) == bucket_bounds(end - 1, granularity)


def test_repeated_errors_log_a_traceback_once_then_one_line_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.repeated")
    errors = RepeatedErrors(log, interval=3600)
    caplog.set_level(logging.INFO, logger="test.repeated")

    def fail(n: int) -> None:
        try:
            {}["missing"] if n else [][1]  # two kinds of error, each from its own line
        except (KeyError, IndexError) as exc:
            errors.report(exc)

    for _ in range(50):
        fail(1)
    fail(0)
    assert [bool(r.exc_info) for r in caplog.records] == [True, True], "one traceback per kind, nothing else"
    errors.interval = 0  # the interval has passed: the next one says how many were left out
    fail(1)
    last = caplog.records[-1]
    assert not last.exc_info and "KeyError" in last.getMessage() and "50 time(s)" in last.getMessage()
