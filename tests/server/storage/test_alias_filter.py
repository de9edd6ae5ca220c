"""The session page's alias filter (``q``, storage/paging.py): a profile matches when its alias holds
the text, ASCII letters in either case, ``%``, ``_`` and ``\\`` taken as written. The same on SQLite
and on PostgreSQL, where the filter may be answered from the trigram index of ``pg_trgm``
(``session_page_alias_text``): the answers read through that index are the same, and a database
whose role may not install the extension serves the filter without the index and says so."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.storage.base import NewUpload
from whylogs_songbird.server.storage.files import FileBlobStore
from whylogs_songbird.server.storage.paging import ProfileQuery
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.store import Store

ALIASES = [
    "Train 2024",
    "train_2023",
    "TRAINING",
    "trainee",
    "50% sample",
    "100%",
    "x_y",
    "a\\b",
    "holdout",
    "tXa",
]
TEXTS = ["train", "TRAIN", "ain 2", "n_2", "_", "%", "0%", "\\", "a\\b", "t%n", "t_a", "HOLD", "nothing-has-this"]


def expected(session: dict[str, str | None], text: str) -> set[str]:
    """What the filter means: the alias holds the text, ASCII letters in either case."""
    return {upload_id for upload_id, alias in session.items() if text.lower() in (alias or "").lower()}


def seed(store: Store) -> tuple[str, dict[str, str | None]]:
    """A session of references with :data:`ALIASES` and a batch without an alias (id -> alias), and
    another session with the same aliases (never found from the first)."""
    sessions = []
    for _ in range(2):
        session_id = store.create_session("u").id
        slots = store.create_uploads(
            session_id,
            [*(NewUpload("reference", alias=alias) for alias in ALIASES), NewUpload("batch", dataset_timestamp=1)],
            ttl_seconds=900,
        )
        for n, upload in enumerate(slots):
            store_profile_bytes(store, upload.id, b"profile %d" % n)
        sessions.append((session_id, {upload.id: upload.alias for upload in slots}))
    return sessions[0]


def found(store: Store, session_id: str, text: str) -> set[str]:
    page = store.page_profiles(session_id, ProfileQuery(text=text, limit=100))
    return {upload.id for upload in page.uploads}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = Store(tmp_path / "data")
    else:
        url = request.getfixturevalue("postgres_service").new_schema()
        opened = Store(metadata=PostgresMetadataStore(url), blobs=FileBlobStore(tmp_path / "data"))
    yield opened
    opened.close()


def test_the_filter_matches_the_aliases_that_hold_the_text_as_written(store):
    session_id, session = seed(store)
    by_alias = {alias: upload_id for upload_id, alias in session.items()}
    trains = ("Train 2024", "train_2023", "TRAINING", "trainee")
    assert found(store, session_id, "train") == {by_alias[alias] for alias in trains}, "in either case"
    assert found(store, session_id, "_") == {by_alias["train_2023"], by_alias["x_y"]}, "_ is no wildcard"
    assert found(store, session_id, "%") == {by_alias["50% sample"], by_alias["100%"]}, "% is no wildcard"
    assert found(store, session_id, "\\") == {by_alias["a\\b"]}
    assert found(store, session_id, "") == set(session), "no text: every profile"
    for text in TEXTS:
        assert found(store, session_id, text) == expected(session, text), text


@contextlib.contextmanager
def read_through_trigrams(metadata: PostgresMetadataStore) -> Iterator[psycopg.Connection]:
    """The store's reads, on one connection in a transaction (rolled back at the end) where the
    filter can be answered from the trigram index only: the other indexes over a session are
    dropped, sequential scans are off."""
    with psycopg.connect(metadata.url) as conn:
        conn.execute(
            "DROP INDEX session_page_by_uploaded, session_page_by_timestamp, session_page_by_alias, uploads_by_session,"
            " uploads_by_ingest"
        )
        conn.execute("SET LOCAL enable_seqscan = off")
        original = metadata._read
        metadata._read = lambda: contextlib.nullcontext(conn)  # type: ignore[method-assign]
        try:
            yield conn
        finally:
            metadata._read = original  # type: ignore[method-assign]
            conn.rollback()


def test_answers_read_through_the_trigram_index_are_the_same(postgres_service, tmp_path):
    url = postgres_service.new_schema()
    store = Store(metadata=PostgresMetadataStore(url), blobs=FileBlobStore(tmp_path / "data"))
    try:
        session_id, session = seed(store)
        metadata: Any = store.metadata
        with read_through_trigrams(metadata) as conn:
            scans = "SELECT pg_stat_get_xact_numscans('session_page_alias_text'::regclass)"
            before = conn.execute(scans).fetchone()[0]
            assert found(store, session_id, "nothing-has-this") == set()
            assert conn.execute(scans).fetchone()[0] > before, "the filter was read from the trigram index"
            for text in TEXTS:
                assert found(store, session_id, text) == expected(session, text), text
    finally:
        store.close()


def test_a_role_that_may_not_install_pg_trgm_serves_the_filter_without_its_index(postgres_service, tmp_path, caplog):
    admin_url = postgres_service.new_database("trgm")
    role = f"app_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'CREATE SCHEMA app AUTHORIZATION "{role}"')
    parts = urlsplit(admin_url)
    url = parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}", query="options=-csearch_path%3Dapp").geturl()
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.storage"):
        store = Store(metadata=PostgresMetadataStore(url), blobs=FileBlobStore(tmp_path / "data"))
    try:
        assert [r.getMessage() for r in caplog.records] == [
            "storage: the session page's alias filter has no index: PostgreSQL refused CREATE EXTENSION pg_trgm"
            " (InsufficientPrivilege); it reads a session's every profile until a database owner runs"
            " CREATE EXTENSION pg_trgm (the next start builds the index)"
        ]
        session_id, session = seed(store)
        assert found(store, session_id, "train") == expected(session, "train") != set()
    finally:
        store.close()
    with psycopg.connect(admin_url, autocommit=True) as admin:  # an owner installs it, in another schema
        admin.execute("CREATE EXTENSION pg_trgm SCHEMA public")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.storage"):
        PostgresMetadataStore(url).close()
    assert caplog.records == []
    with psycopg.connect(url, autocommit=True) as conn:
        [definition] = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'app' AND indexname = 'session_page_alias_text'"
        ).fetchone()
    assert "USING gin (lower(COALESCE(alias, ''::text)) public.gin_trgm_ops)" in definition
