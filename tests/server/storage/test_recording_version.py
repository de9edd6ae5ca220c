"""Recording an upload replaces its session's timeline version in the same write transaction, on
both SQL dialects: a view that reads the version finds the new profile, and a PUT costs one
write. Real SQLite and a real PostgreSQL schema, with real files for the bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_profile_bytes

from whylogs_songbird.server.rollups import VERSION_KEY, read_version
from whylogs_songbird.server.storage.base import TIMELINE_VERSION_KEY, UploadAlreadyStoredError
from whylogs_songbird.server.storage.files import FileBlobStore
from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore
from whylogs_songbird.server.store import Store, blob_key

TS = 1_700_000_000_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["sqlite", "postgresql"])
def dialect_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store on SQLite or on a fresh PostgreSQL schema, with its bytes in files."""
    if request.param == "sqlite":
        metadata = SqliteMetadataStore(tmp_path / "songbird.sqlite3")
    else:
        from whylogs_songbird.server.storage.postgres import PostgresMetadataStore

        metadata = PostgresMetadataStore(request.getfixturevalue("postgres_service").new_schema())
    store = Store(tmp_path, metadata=metadata, blobs=FileBlobStore(tmp_path / "blobs"))
    yield store
    store.close()


def test_the_version_key_is_the_timelines():
    assert VERSION_KEY == TIMELINE_VERSION_KEY == "timeline/version"


def test_only_a_new_valid_recording_replaces_the_version(dialect_store):
    store = dialect_store
    session = store.create_session("u").id
    first, second, third = (
        store.create_upload(session, "batch", ttl_seconds=60, dataset_timestamp=TS) for _ in range(3)
    )
    data, other = make_profile_bytes(seed=1), make_profile_bytes(seed=2)
    assert read_version(store, session) == ""
    store.store_profile_data(first.id, data, sha256=sha(data))
    recorded = read_version(store, session)
    assert len(recorded) == 16
    repeated = store.store_profile_data(second.id, data, sha256=sha(data))
    assert repeated.duplicate_of == first.id and read_version(store, session) == recorded, (
        "a duplicate shows nothing new"
    )
    again = store.store_profile_data(first.id, data, sha256=sha(data))
    assert again.recorded is False and read_version(store, session) == recorded, "a retried PUT changes nothing"
    store.metadata.mark_stored(third.id, key=blob_key(session, third.id), size=1, sha256="0" * 64, invalid="not one")
    assert store.get_upload(third.id).ingest_state == "invalid"
    assert read_version(store, session) == recorded, "an invalid profile is not recorded as one that landed"
    with pytest.raises(UploadAlreadyStoredError):
        store.metadata.mark_stored(first.id, key=None, size=1, sha256="1" * 64, if_unstored=True)
    assert read_version(store, session) == recorded, "a refused recording writes nothing"
    replaced = store.store_profile_data(first.id, other, sha256=sha(other))
    assert replaced.recorded and read_version(store, session) not in ("", recorded), "new bytes are a new version"


def test_the_version_of_another_session_is_left_alone(dialect_store):
    store = dialect_store
    mine, other = store.create_session("u").id, store.create_session("u").id
    store.metadata.put_derived(other, VERSION_KEY, b"kept")
    slot = store.create_upload(mine, "batch", ttl_seconds=60, dataset_timestamp=TS)
    data = make_profile_bytes()
    store.store_profile_data(slot.id, data, sha256=sha(data))
    assert read_version(store, other) == "kept" and read_version(store, mine) not in ("", "kept")


def test_the_timeline_of_a_store_that_records_the_version_writes_nothing_when_an_upload_lands(tmp_path):
    """One write per landed upload: the store's recording replaced the version, so the timeline's
    "upload landed" hook, as the app registers it, leaves it alone."""
    from whylogs_songbird.server.routes.timeline import make_service

    store = Store(tmp_path / "data")
    try:
        session = store.create_session("u").id
        store.metadata.put_derived(session, VERSION_KEY, b"as recorded")
        service = make_service(store)
        store.add_landed_hook(service.upload_landed)
        slot = store.create_upload(session, "reference", ttl_seconds=60)
        data = make_profile_bytes()
        store.store_profile_data(slot.id, data, sha256=sha(data))
        recorded = read_version(store, session)
        assert recorded not in ("", "as recorded")
        service.upload_landed(store.get_upload(slot.id))  # the hook once more: still no write
        assert read_version(store, session) == recorded
    finally:
        store.close()
