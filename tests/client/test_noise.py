"""What a newcomer sees that they did not cause (issue 22 item 6): whylogs' pandas FutureWarning per
segment is hidden, and only that warning, only around our calls."""

import warnings

import pandas as pd
import pytest
import whylogs as why

from whylogs_songbird.engines._common import profile_frame, schema_for
from whylogs_songbird.profiles import segment_warning_silenced


def frame() -> pd.DataFrame:
    return pd.DataFrame({"region": ["north", "south", "north", "east"], "amount": [1.0, 2.0, 3.0, 4.0]})


def test_segmenting_shows_no_future_warning_and_leaves_the_filters_alone():
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pieces = profile_frame(frame(), ["region"])
    assert sorted(pieces) == [("east",), ("north",), ("south",)]
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert warnings.filters == before, "the user's warning filters are as they were"


def test_only_that_warning_is_hidden():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with segment_warning_silenced():
            why.log(frame(), schema=schema_for(["region"]))
            warnings.warn("When grouping with a length-1 list-like, in our own code", FutureWarning, stacklevel=1)
            warnings.warn("something else", FutureWarning, stacklevel=1)
    said = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert said == ["When grouping with a length-1 list-like, in our own code", "something else"]


def test_a_fresh_database_says_nothing_of_migrations_a_real_migration_is_logged(tmp_path, caplog):
    import logging
    import sqlite3

    from whylogs_songbird.server.storage.sql import MIGRATIONS, SCHEMA, SQLITE
    from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore

    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server"):
        SqliteMetadataStore(tmp_path / "fresh.sqlite3").close()
    assert not [r for r in caplog.records if "added column" in r.getMessage()]

    old = tmp_path / "old.sqlite3"
    with sqlite3.connect(old) as conn:  # the uploads table as it was before the migrated columns
        conn.execute(SQLITE.sql(next(s for s in SCHEMA if "EXISTS uploads" in s)))
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server"):
        SqliteMetadataStore(old).close()
    added = [r.getMessage() for r in caplog.records if "added column" in r.getMessage()]
    migrated = [f"storage: added column {table}.{column}" for table, column, _ in MIGRATIONS if table == "uploads"]
    assert "storage: added column uploads.duplicate_of" in added and added == migrated


def test_our_retries_are_debug_lines_not_warnings(caplog):
    import logging

    from conftest import free_port

    from whylogs_songbird import SongbirdClient
    from whylogs_songbird.errors import SongbirdConnectionError

    def create_session() -> None:
        client = SongbirdClient(f"http://127.0.0.1:{free_port()}", max_retries=2, backoff_factor=0)
        with client, pytest.raises(SongbirdConnectionError):
            client.create_session("me")

    with caplog.at_level(logging.INFO):
        create_session()
    assert not [r for r in caplog.records if r.name.startswith("urllib3") and "Retrying" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="urllib3"):
        create_session()
    retries = [r for r in caplog.records if r.name.startswith("urllib3") and "Retrying" in r.getMessage()]
    assert len(retries) == 2 and all(r.levelno == logging.DEBUG for r in retries)
