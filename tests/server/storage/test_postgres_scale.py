"""PostgreSQL with much history: the session quota is counted no further than its limit, and the
paging indexes of schema v4 are built without blocking writes (CONCURRENTLY, outside a
transaction, a leftover of a failed build rebuilt), on a real PostgreSQL (tests/support/services.py)."""

from __future__ import annotations

import json

import psycopg
import pytest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.quotas import check_session_quota, create_slots
from whylogs_songbird.server.storage.base import NewUpload
from whylogs_songbird.server.storage.files import FileBlobStore
from whylogs_songbird.server.storage.paging import BOUNDED_PROFILE_COUNT
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.store import Store

TS = 1_700_000_000_000


def batch(n: int, start: int = 0) -> list[NewUpload]:
    return [NewUpload("batch", dataset_timestamp=TS + start + i) for i in range(n)]


@pytest.fixture
def url(postgres_service):
    return postgres_service.new_schema()


@pytest.fixture
def team(url, tmp_path):
    store = Store(tmp_path / "data", metadata=PostgresMetadataStore(url), blobs=FileBlobStore(tmp_path / "data"))
    yield store
    store.close()


def test_the_session_quota_at_n_and_n_plus_one_on_postgresql(team):
    session_id = team.create_session("u").id
    stored = team.create_uploads(session_id, batch(5), ttl_seconds=900)
    for i, upload in enumerate(stored):
        store_profile_bytes(team, upload.id, bytes([65 + i]) * 3)
    repeat = team.create_uploads(session_id, batch(1), ttl_seconds=900)[0]  # same timestamp and bytes as the first
    assert store_profile_bytes(team, repeat.id, b"AAA").duplicate_of == stored[0].id  # a duplicate: not counted
    at_limit = ServerConfig(max_session_profiles=7, max_open_slots=None)
    assert len(create_slots(team, at_limit, session_id, batch(2, start=10))) == 2  # 5 stored + 2 open = N
    with pytest.raises(ApiError) as refused:
        create_slots(team, at_limit, session_id, batch(1, start=20))  # N + 1
    assert refused.value.status == 403
    assert f"Session {session_id} holds 7 profiles and open upload slots and this server allows 7" in (
        refused.value.message
    )
    # a session already past a (lowered) limit is told exactly how much it holds
    with pytest.raises(ApiError, match="holds 7 profiles and open upload slots and this server allows 3"):
        create_slots(team, ServerConfig(max_session_profiles=3, max_open_slots=None), session_id, batch(1, start=30))
    # at PUT time the open slots do not count: 5 held + 2 new = N, + 3 is past it
    check_session_quota(team, at_limit, session_id, new_profiles=2)
    with pytest.raises(ApiError, match="holds 5 profiles and this server allows 7"):
        check_session_quota(team, at_limit, session_id, new_profiles=3)
    with pytest.raises(ApiError, match="holds 5 profiles and this server allows 2"):
        check_session_quota(team, ServerConfig(max_session_profiles=2), session_id, new_profiles=1)
    check_session_quota(team, ServerConfig(max_session_profiles=5), session_id, new_profiles=1, replacing=stored[0].id)
    with pytest.raises(ApiError, match="holds 15 bytes of profiles; 1 more"):
        check_session_quota(team, ServerConfig(max_session_bytes=15), session_id, new_profiles=1, new_bytes=1)
    check_session_quota(team, ServerConfig(max_session_bytes=15), session_id, new_bytes=3, replacing=stored[1].id)


def test_the_quota_count_walks_no_further_than_its_bound(team, url):
    session_id = team.create_session("u").id
    for i, upload in enumerate(team.create_uploads(session_id, batch(30), ttl_seconds=900)):
        store_profile_bytes(team, upload.id, bytes([i]))
    assert team.count_profiles(session_id) == 30 and team.count_profiles(session_id, at_most=4) == 4
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # a table this small would be read whole otherwise
        plan = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + BOUNDED_PROFILE_COUNT.replace("?", "%s"), (session_id, 4)
        ).fetchone()[0]
    nodes, walked = [plan[0]["Plan"]], []
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        if "Index" in node["Node Type"]:
            walked.append((node["Index Name"].startswith("session_page_by_"), node["Actual Rows"]))
    assert walked == [(True, 4)], json.dumps(plan)  # one paging index, 4 entries read of the session's 30
