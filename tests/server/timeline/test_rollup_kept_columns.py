"""Rollups merged into the columns this process wrote last (kept in memory, not read back), and
every bucket's writes of one merge in one transaction, on SQLite and PostgreSQL: the rollups
stored are byte for byte those of merging what is read back from the store, another host's write
is read (never merged over), and a write that fails leaves nothing kept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rollup_fakes import DAY0, DIGESTS, Summaries, member, merged_points, rollup_points

from whylogs_songbird.server import rollups as rollups_module
from whylogs_songbird.server.rollups import ALL_SEGMENTS, Rollups, rollup_key
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.store import Store

HOUR = 3_600_000


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens stores (hosts) on one database: SQLite in one data dir, or one PostgreSQL schema."""
    url = request.getfixturevalue("postgres_service").new_schema() if request.param == "postgres" else None
    opened: list[Store] = []

    def open_one() -> Store:
        metadata = PostgresMetadataStore(url) if url is not None else None
        store = Store(tmp_path / "data", metadata=metadata) if metadata is not None else Store(tmp_path / "data")
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def stored_rollup(store: Store, session_id: str, granularity: str, start: int) -> dict[str, bytes]:
    """Every derived value of one rollup (its header and merged columns), by key."""
    key = rollup_key(granularity, start, ALL_SEGMENTS)
    found = {}
    for suffix in ("", "/"):
        header = store.get_derived(session_id, key + suffix)
        if header is not None:
            found[key + suffix] = header
    rollup = Rollups(store, lambda s, m: None).read(session_id, granularity, start, ALL_SEGMENTS)
    if rollup is not None and rollup.digest is not None:
        found["merged"] = rollup.digest
    return found


def test_appended_batches_are_merged_into_the_kept_columns_as_into_those_read_back(open_store):
    kept_store, read_store = open_store(), open_store()
    kept_session, read_session = kept_store.create_session("u").id, read_store.create_session("u").id
    members = [member(i, DAY0 + 10 * i) for i in range(5)]
    summaries = Summaries()
    summaries.by_member = {(m.upload_id, m.sha256): d for m, d in zip(members, DIGESTS)}
    kept, read = Rollups(kept_store, summaries), Rollups(read_store, summaries)
    for m, digest in zip(members, DIGESTS):
        kept.add(kept_session, m, "", digest)
        rollups_module._HEADERS.forget(read_store, read_session, rollup_key("hour", DAY0, ALL_SEGMENTS))
        rollups_module._HEADERS.forget(read_store, read_session, rollup_key("day", DAY0, ALL_SEGMENTS))
        read.add(read_session, m, "", digest)  # nothing kept: merged into what it reads back
    for granularity in ("hour", "day"):
        from_memory = stored_rollup(kept_store, kept_session, granularity, DAY0)
        from_store = stored_rollup(read_store, read_session, granularity, DAY0)
        assert from_memory["merged"] == from_store["merged"]  # small profiles: every merge is exact
        header = list(from_memory.values())[0]
        assert header == list(from_store.values())[0]
        key = rollup_key(granularity, DAY0, ALL_SEGMENTS)  # the next batch merges into what is kept
        assert rollups_module._HEADERS.merged(kept_store, kept_session, key, header) is not None
        assert rollups_module._HEADERS.merged(read_store, read_session, key, header) is not None
    found = kept.read(kept_session, "hour", DAY0, ALL_SEGMENTS)
    assert found is not None and list(found.members) == members
    assert rollup_points(kept, found, summaries) == merged_points(members, summaries)


def test_a_bucket_another_host_wrote_since_is_read_back_not_merged_over(open_store):
    host_a, host_b = open_store(), open_store()
    session_id = host_a.create_session("u").id
    summaries = Summaries()
    a, b = Rollups(host_a, summaries), Rollups(host_b, summaries)
    members = [member(i, DAY0 + HOUR + 10 * i) for i in range(4)]
    for rollups, m, digest in zip((a, a, b, a), members, DIGESTS):
        summaries.by_member[(m.upload_id, m.sha256)] = digest
        rollups.add(session_id, m, "", digest)
    for granularity, start in (("hour", DAY0 + HOUR), ("day", DAY0)):
        found = a.read(session_id, granularity, start, ALL_SEGMENTS)
        assert found is not None and list(found.members) == members  # b's batch is in a's last merge
        assert rollup_points(a, found, summaries) == merged_points(members, summaries)


def test_a_merge_whose_write_fails_keeps_nothing_and_the_next_reads_the_store(open_store, monkeypatch):
    store = open_store()
    session_id = store.create_session("u").id
    summaries = Summaries()
    rollups = Rollups(store, summaries)
    members = [member(i, DAY0 + 10 * i) for i in range(4)]
    for m, digest in zip(members[:2], DIGESTS):
        summaries.by_member[(m.upload_id, m.sha256)] = digest
        rollups.add(session_id, m, "", digest)
    before = stored_rollup(store, session_id, "hour", DAY0)

    def broken(session_id: str, writes: object) -> None:
        raise OSError("the database went away")

    monkeypatch.setattr(store, "write_derived", broken)
    summaries.by_member[(members[2].upload_id, members[2].sha256)] = DIGESTS[2]
    with pytest.raises(OSError):
        rollups.add(session_id, members[2], "", DIGESTS[2])
    monkeypatch.undo()
    assert stored_rollup(store, session_id, "hour", DAY0) == before  # neither bucket half-written
    summaries.by_member[(members[3].upload_id, members[3].sha256)] = DIGESTS[3]
    rollups.add(session_id, members[3], "", DIGESTS[3])
    found = rollups.read(session_id, "hour", DAY0, ALL_SEGMENTS)
    assert found is not None and list(found.members) == [members[0], members[1], members[3]]
    assert rollup_points(rollups, found, summaries) == merged_points(list(found.members), summaries)


def test_derived_writes_are_made_in_order_in_one_transaction_and_puts_skip_a_deleted_session(open_store):
    store = open_store()
    session_id = store.create_session("u").id
    store.put_derived(session_id, "r/a/old", b"0")
    store.put_derived(session_id, "r/b", b"1")
    store.write_derived(
        session_id,
        [("put", "r/a/new", b"2"), ("put", "r/a", b"3"), ("drop", "r/a/", "r/a/new"), ("drop", "r/b", None)],
    )
    found = {key: store.get_derived(session_id, key) for key in ("r/a", "r/a/new", "r/a/old", "r/b")}
    assert found == {"r/a": b"3", "r/a/new": b"2", "r/a/old": None, "r/b": None}
    assert store.metadata.mark_session_deleted(session_id)
    store.write_derived(session_id, [("put", "r/c", b"4")])
    assert store.get_derived(session_id, "r/c") is None
