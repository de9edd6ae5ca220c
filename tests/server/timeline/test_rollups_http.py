"""Rollups of hour and day buckets and the session's timeline version, over HTTP on both stores:
the rollups, the version and the stored timeline documents follow batches that land, land late
and are deleted, as the ingest worker, the views and the store's deletion leave them.

Kept apart from the rollups' fast tests (test_timeline_rollups.py, test_rollups_logic.py, which
hold the same behaviour as logic): this one starts a server and waits on its ingest worker, far
too slow to run against each mutant of those modules."""

from __future__ import annotations

import time
from typing import Any

import requests
from conftest import both_stores, make_profile_bytes
from whylogs.core import DatasetProfileView

from whylogs_songbird.server import LocalServer
from whylogs_songbird.server.rollups import ALL_SEGMENTS, read_version, rollup_key, store_rollups
from whylogs_songbird.server.timeline_service import DOC_PREFIX
from whylogs_songbird.timeline import (
    DAY_MS,
    HOUR_MS,
    NUMBER_SERIES,
    Batch,
    TimelineInputs,
    bucket_bounds,
    compute_timeline,
)

TIMEOUT = 120
DAY0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def new_session(server: LocalServer) -> str:
    r = requests.post(f"{server.url}/v0/sessions", json={"userId": "tester"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def upload(server: LocalServer, session_id: str, data: bytes, timestamp: int | None = None, alias: str = "") -> str:
    path, body = (
        ("upload", {"datasetTimestamp": timestamp}) if timestamp is not None else ("reference", {"alias": alias})
    )
    r = requests.post(f"{server.url}/v0/sessions/{session_id}/{path}", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    put = requests.put(r.json()["uploadUrl"], data=data, timeout=TIMEOUT)
    assert put.status_code in (200, 204), put.text
    return str(r.json()["id"])


def summarised(server: LocalServer, session_id: str, count: int) -> None:
    """Wait until the session holds ``count`` profiles, all summarised by the ingest worker and each
    batch merged into its day's rollup, its last step (a presigned PUT is learned first)."""
    rollups = store_rollups(server.store)

    def rolled(profile: Any) -> bool:
        day = rollups.read(
            session_id, "day", bucket_bounds(profile.dataset_timestamp, "day")[0], ALL_SEGMENTS, merged=False
        )
        return day is not None and any(m.upload_id == profile.id for m in day.members)

    deadline = time.monotonic() + 60
    while True:
        server.store.learn_landed(session_id)
        profiles = server.store.list_profiles(session_id)
        ready = len(profiles) == count and all(p.ingest_state == "ready" for p in profiles)
        if ready and all(rolled(p) for p in profiles if p.kind == "batch"):
            return
        assert time.monotonic() < deadline, f"the ingest worker did not finish: {profiles}"
        time.sleep(0.05)


def day_view(server: LocalServer, session_id: str, granularity: str = "day") -> dict[str, Any]:
    r = requests.get(
        f"{server.url}/api/v1/sessions/{session_id}/timeline", params={"granularity": granularity}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def stored_rollup(server: LocalServer, session_id: str, granularity: str, start: int) -> bytes | None:
    return server.store.metadata.get_derived(session_id, rollup_key(granularity, start, ALL_SEGMENTS))


def version(server: LocalServer, session_id: str) -> str:
    return read_version(server.store.metadata, session_id)


def doc_keys(server: LocalServer, session_id: str) -> list[str]:
    rows = server.store.metadata._query("SELECT key FROM derived WHERE session_id = ?", (session_id,))  # type: ignore[attr-defined]
    return sorted(str(row["key"]) for row in rows if str(row["key"]).startswith(DOC_PREFIX))


@both_stores
def test_rollups_version_and_stored_documents_follow_landed_late_and_deleted_batches(server: LocalServer) -> None:
    session_id = new_session(server)
    batches = {DAY0 + HOUR_MS: 1, DAY0 + 2 * HOUR_MS: 2, DAY0 + 3 * HOUR_MS: 3, DAY0 + DAY_MS + HOUR_MS: 4}
    ids = {
        stamp: upload(server, session_id, make_profile_bytes(12, seed=seed), stamp) for stamp, seed in batches.items()
    }
    upload(server, session_id, make_profile_bytes(30, seed=9), alias="training")
    summarised(server, session_id, 5)
    rollups = store_rollups(server.store)
    day0 = rollups.read(session_id, "day", DAY0, ALL_SEGMENTS)
    assert day0 is not None and [m.upload_id for m in day0.members] == [ids[s] for s in sorted(ids)[:3]]
    assert rollups.read(session_id, "hour", DAY0 + 2 * HOUR_MS, ALL_SEGMENTS) is not None

    # the view's numbers are those of merging every profile of each bucket (no rollup involved)
    first = version(server, session_id)
    document = day_view(server, session_id)
    assert [b["profiles"] for b in document["buckets"]] == [3, 1]
    views = {s: DatasetProfileView.deserialize(make_profile_bytes(12, seed=seed)) for s, seed in batches.items()}
    expected = compute_timeline(
        TimelineInputs(
            batches=[Batch(key=str(s), timestamp=s) for s in batches],
            load=lambda batch: views[batch.timestamp],
            reference=DatasetProfileView.deserialize(make_profile_bytes(30, seed=9)),
            granularity="day",
        )
    )
    for name in ("n", "x", "s"):
        for series in (*NUMBER_SERIES, "drift_p_value", "previous_drift_p_value"):
            assert document["columns"][name][series] == expected["columns"][name][series], (name, series)
    # reading views changes neither the version nor the stored document
    assert version(server, session_id) == first != ""
    assert day_view(server, session_id) == document and version(server, session_id) == first
    day1 = stored_rollup(server, session_id, "day", DAY0 + DAY_MS)

    # a late batch of day 0 (before its others): the version changes, day 1's rollup does not
    late = upload(server, session_id, make_profile_bytes(12, seed=5), DAY0 + 30 * 60_000)
    summarised(server, session_id, 6)
    second = version(server, session_id)
    assert second != first
    assert stored_rollup(server, session_id, "day", DAY0 + DAY_MS) == day1
    day0 = rollups.read(session_id, "day", DAY0, ALL_SEGMENTS)
    assert day0 is not None and day0.members[0].upload_id == late and len(day0.members) == 4
    assert [b["profiles"] for b in day_view(server, session_id)["buckets"]] == [4, 1]

    # deleting a profile: the version changes, its hour and day rollups go, the others stay
    r = requests.delete(f"{server.url}/v0/sessions/{session_id}/profiles/{ids[DAY0 + 2 * HOUR_MS]}", timeout=TIMEOUT)
    assert r.status_code == 204, r.text
    assert version(server, session_id) not in (first, second)
    assert stored_rollup(server, session_id, "day", DAY0) is None
    assert stored_rollup(server, session_id, "hour", DAY0 + 2 * HOUR_MS) is None
    assert stored_rollup(server, session_id, "hour", DAY0 + HOUR_MS) is not None
    assert stored_rollup(server, session_id, "day", DAY0 + DAY_MS) == day1
    after = day_view(server, session_id)
    assert [b["profiles"] for b in after["buckets"]] == [3, 1]
    assert after["columns"]["n"]["count"] == [36, 12]
    rebuilt = rollups.read(session_id, "day", DAY0, ALL_SEGMENTS)  # merged again by the view, without it
    assert rebuilt is not None and ids[DAY0 + 2 * HOUR_MS] not in [m.upload_id for m in rebuilt.members]

    # one stored document per query, however often the session changed
    for round_ in range(2):
        day_view(server, session_id, "week")
        day_view(server, session_id)
        assert len(doc_keys(server, session_id)) == 2, doc_keys(server, session_id)
        upload(server, session_id, make_profile_bytes(10, seed=10 + round_), DAY0 + (20 + round_) * HOUR_MS)
        summarised(server, session_id, 6 + round_)
    assert [b["profiles"] for b in day_view(server, session_id)["buckets"]] == [5, 1]
    assert len(doc_keys(server, session_id)) == 2

    # deleting the session leaves nothing derived of it
    assert requests.delete(f"{server.url}/v0/sessions/{session_id}", timeout=TIMEOUT).status_code == 204
    assert server.store.metadata.get_derived(session_id, rollup_key("hour", DAY0 + HOUR_MS, ALL_SEGMENTS)) is None
