"""The stored-session file and the session lifecycle (session.py) as pure logic, with a fake client
(claiming, the last test, needs a real server and gets one).

test_session_guarantees.py checks the same code against a real server and real processes; these
tests pin down what that cannot see quickly: the file's exact shape, atomic writes that leave
nothing behind, the re-entrant lock's error, renewal bookkeeping and the log lines a user reads.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ORG_KEY

from whylogs_songbird import session as S
from whylogs_songbird.errors import ConfigError, SessionBusyError, SessionNotFoundError
from whylogs_songbird.session import GuestSession, SessionStore, write_json_atomic

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/session.py")

ENDPOINT = "http://127.0.0.1:9"


class FakeClient:
    """Hands out session ids in order and records who asked."""

    endpoint = ENDPOINT

    def __init__(self) -> None:
        self.users: list[str] = []

    def create_session(self, user_id: str) -> SimpleNamespace:
        self.users.append(user_id)
        return SimpleNamespace(id=f"session-{len(self.users)}")


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_json_is_written_whole_sorted_and_indented_in_a_new_nested_dir(tmp_path):
    path = tmp_path / "a" / "b" / "state.json"
    write_json_atomic(path, {"z": 1, "a": {"é": [1, 2]}})
    assert path.read_bytes() == b'{\n  "a": {\n    "\\u00e9": [\n      1,\n      2\n    ]\n  },\n  "z": 1\n}'
    assert files(path.parent) == ["state.json"]  # the temporary file was renamed, not left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"old": True})
    seen: list[str] = []

    def broken_replace(source, target):
        seen.append(str(source))
        raise OSError("disk full")

    monkeypatch.setattr(S.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"new": True})
    assert json.loads(path.read_text()) == {"old": True}
    assert files(tmp_path) == ["state.json"]
    # the temporary file was made beside the target (so the rename is atomic), named after it
    [tmp] = seen
    assert Path(tmp).parent == tmp_path and Path(tmp).name.startswith(".state.json.") and tmp.endswith(".tmp")


def test_the_file_holds_the_user_id_and_one_entry_per_endpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(S.time, "time", lambda: 1_700_000_123.9)
    store = SessionStore(tmp_path / "cfg")
    user = store.user_id()
    assert str(uuid.UUID(user)) == user and store.user_id() == user
    store.set(ENDPOINT, "session-a")
    store.set("http://other:1", "session-b")
    assert json.loads(store.path.read_text()) == {
        "userId": user,
        "sessions": {
            ENDPOINT: {"sessionId": "session-a", "createdAt": 1_700_000_123},
            "http://other:1": {"sessionId": "session-b", "createdAt": 1_700_000_123},
        },
    }
    assert store.get(ENDPOINT) == "session-a" and store.get("http://nowhere:1") is None
    assert store.forget(ENDPOINT) == "session-a" and store.get(ENDPOINT) is None
    assert store.forget(ENDPOINT) is None


@pytest.mark.parametrize("stored", ['{"userId": ""}', '{"userId": 7}', "[1, 2]", '"text"'])
def test_a_missing_or_odd_user_id_is_replaced_by_a_new_one(tmp_path, stored):
    store = SessionStore(tmp_path)
    store.path.write_text(stored)
    user = store.user_id()
    assert str(uuid.UUID(user)) == user
    assert json.loads(store.path.read_text())["userId"] == user


def test_a_file_that_is_not_json_says_to_delete_it(tmp_path):
    store = SessionStore(tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(ConfigError) as caught:
        store.get(ENDPOINT)
    assert str(caught.value) == (
        f"The session file {store.path} is not valid JSON: delete it (a new guest session will be made)."
    )


def test_a_file_holding_json_that_is_not_an_object_counts_as_empty(tmp_path):
    store = SessionStore(tmp_path)
    store.path.write_text('[{"sessions": {}}]')
    assert store.get(ENDPOINT) is None
    store.set(ENDPOINT, "session-a")
    assert store.get(ENDPOINT) == "session-a"


def test_references_are_remembered_only_for_the_stored_session(tmp_path):
    store = SessionStore(tmp_path)
    store.set(ENDPOINT, "session-a")
    store.remember_references(ENDPOINT, "session-a", {"train": "ref-1"})
    store.remember_references(ENDPOINT, "session-pinned", {"train": "ref-9"})  # not the stored one: ignored
    assert store.reference_id(ENDPOINT, "session-a", "train") == "ref-1"
    assert store.reference_id(ENDPOINT, "session-pinned", "train") is None
    assert store.reference_id(ENDPOINT, "session-a", "test") is None
    before = store.path.stat().st_mtime_ns
    store.remember_references(ENDPOINT, "session-a", {"train": "ref-1"})  # nothing new: no write
    assert store.path.stat().st_mtime_ns == before
    store.remember_references(ENDPOINT, "session-a", {"test": "ref-2"})
    assert json.loads(store.path.read_text())["sessions"][ENDPOINT]["references"] == {"train": "ref-1", "test": "ref-2"}
    store.set(ENDPOINT, "session-b")  # a new session: the old one's references are gone with it
    assert store.reference_id(ENDPOINT, "session-b", "train") is None


def test_one_store_per_directory_in_a_process_and_fresh_ones_after_a_fork(tmp_path, monkeypatch):
    first = SessionStore.for_directory(tmp_path / "x" / ".." / "cfg")
    assert SessionStore.for_directory(tmp_path / "cfg") is first
    assert first.path == (tmp_path / "cfg").resolve() / "sessions.json"
    assert SessionStore.for_directory(tmp_path / "other") is not first
    monkeypatch.setattr(S, "_STORES_PID", -1)  # as in a child forked from this process
    after_fork = SessionStore.for_directory(tmp_path / "cfg")
    assert after_fork is not first and SessionStore.for_directory(tmp_path / "cfg") is after_fork
    assert os.getpid() == S._STORES_PID


def test_the_lock_makes_its_directory_is_reentrant_and_a_held_lock_times_out_with_what_to_do(tmp_path):
    store = SessionStore(tmp_path / "new" / "cfg")
    with store.lock(), store.lock():  # re-entrant, in one thread
        assert (tmp_path / "new" / "cfg").is_dir()
    other = SessionStore(tmp_path / "new" / "cfg")  # another holder of the same file (as another process)
    other._file_lock.timeout = 0.2
    with store.lock(), pytest.raises(SessionBusyError) as caught:
        other.get(ENDPOINT)
    assert str(caught.value) == (
        f"Another process held the session lock {tmp_path / 'new' / 'cfg' / 'sessions.json.lock'} for 0.2 s "
        "(it is probably waiting on a slow server to create a session); try again."
    )
    assert other.get(ENDPOINT) is None  # released: usable again
    assert store._file_lock.timeout == 60


def test_a_session_is_created_once_stored_and_logged(tmp_path, caplog):
    client, store = FakeClient(), SessionStore(tmp_path)
    session = GuestSession(client, store)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.session"):
        assert session.session_id() == "session-1" and session.session_id() == "session-1"
    assert client.users == [store.user_id()]
    assert store.get(ENDPOINT) == "session-1"
    assert [r.getMessage() for r in caplog.records] == [f"Created guest session session-1 at {ENDPOINT}"]
    assert GuestSession(FakeClient(), store).session_id() == "session-1"  # type: ignore[arg-type]


def test_a_pinned_session_is_used_as_given_and_never_stored(tmp_path):
    client, store = FakeClient(), SessionStore(tmp_path)
    session = GuestSession(client, store, session_id="session-pinned")  # type: ignore[arg-type]
    assert session.session_id() == "session-pinned" and session.pinned_session_id == "session-pinned"
    assert client.users == [] and store.get(ENDPOINT) is None


def test_renewal_replaces_the_stale_session_once_and_says_so(tmp_path, caplog):
    client, store = FakeClient(), SessionStore(tmp_path)
    session = GuestSession(client, store, session_id="session-pinned")  # type: ignore[arg-type]
    seen: list[str] = []

    def operation(session_id: str) -> str:
        seen.append(session_id)
        if session_id == "session-pinned":
            raise SessionNotFoundError("gone", status=404, operation="upload")
        return f"ok {session_id}"

    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.session"):
        assert session.call(operation) == "ok session-1"
    assert seen == ["session-pinned", "session-1"]
    assert session.pinned_session_id is None and session.session_id() == "session-1"
    assert store.get(ENDPOINT) == "session-1"
    assert [r.getMessage() for r in caplog.records] == [
        f"Guest session session-pinned at {ENDPOINT} is unknown or expired; created new session session-1. "
        "Observatory links of the old session no longer work."
    ]
    assert session.renew("session-pinned") == "session-1" and client.users == [store.user_id()]  # already renewed


def test_a_renewal_another_process_stored_is_taken_not_repeated(tmp_path):
    client, store = FakeClient(), SessionStore(tmp_path)
    session = GuestSession(client, store)  # type: ignore[arg-type]
    assert session.session_id() == "session-1"
    store.set(ENDPOINT, "session-from-elsewhere")  # another process renewed it meanwhile
    assert session.renew("session-1") == "session-from-elsewhere" and client.users == [store.user_id()]
    store.set(ENDPOINT, "session-from-elsewhere")
    fresh = GuestSession(client, store)  # type: ignore[arg-type]
    assert fresh.renew("session-from-elsewhere") == "session-2"  # the stored one is the stale one: a new one


def test_forget_and_new(tmp_path):
    client, store = FakeClient(), SessionStore(tmp_path)
    session = GuestSession(client, store, session_id="session-pinned")  # type: ignore[arg-type]
    assert session.new() == "session-1" and session.pinned_session_id is None
    assert store.get(ENDPOINT) == "session-1"
    assert session.forget() == "session-1" and store.get(ENDPOINT) is None and session.pinned_session_id is None
    assert session.session_id() == "session-2"  # the next publish starts a new one


def test_a_file_without_sessions_or_with_an_odd_reference_remembers_nothing(tmp_path):
    store = SessionStore(tmp_path)
    store.path.write_text('{"userId": "u"}')
    assert store.reference_id(ENDPOINT, "session-a", "train") is None
    store.remember_references(ENDPOINT, "session-a", {"train": "ref-1"})  # no stored session: ignored
    assert json.loads(store.path.read_text()) == {"userId": "u"}
    store.path.write_text(json.dumps({"sessions": {ENDPOINT: {"sessionId": "session-a", "references": {"train": 7}}}}))
    assert store.reference_id(ENDPOINT, "session-a", "train") is None


@pytest.mark.parametrize(
    "options, message",
    [
        ({"api_key": ORG_KEY}, "claim_session needs org_id=... (or SONGBIRD_ORG_ID): the organization to claim into."),
        ({"org_id": "org-test"}, "claim_session needs api_key=... (or SONGBIRD_API_KEY): a key of that organization."),
    ],
)
def test_claiming_without_an_org_or_a_key_says_which_is_missing(tmp_path, monkeypatch, options, message):
    for name in ("SONGBIRD_ORG_ID", "SONGBIRD_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as caught:
        S.claim_session(endpoint=ENDPOINT, config_dir=tmp_path, **options)
    assert str(caught.value) == message


def test_claiming_the_stored_session_forgets_it_and_says_so(server, tmp_path, caplog):
    options = {"endpoint": server.url, "config_dir": tmp_path}
    with pytest.raises(ConfigError) as caught:
        S.claim_session(org_id="org-test", api_key=ORG_KEY, **options)
    assert str(caught.value) == f"There is no stored guest session for {server.url}: nothing to claim."
    session_id = S.new_session(**options)
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.session"):
        assert S.claim_session(org_id="org-test", api_key=ORG_KEY, **options) == session_id
    assert f"Claimed guest session {session_id} into organization org-test" in [r.getMessage() for r in caplog.records]
    assert S.current_session(**options) is None  # forgotten: the next publish starts a new session
