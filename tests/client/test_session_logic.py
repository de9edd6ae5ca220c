"""session.py's own decisions, fast: which client call a slot or a link takes for each target,
when a session is renewed (and when not), what the people-facing helpers do with the stored session.

The only fake is the client session.py calls (it records each call and answers the client's typed
models or raises its typed errors); the session file, its directory and its locks are real.
test_session_guarantees.py proves the same behaviour end to end, over HTTP and across processes.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from whylogs_songbird import session as S
from whylogs_songbird.config import DEFAULT_LOCAL_PORT, ENV_VARS, LEGACY_LOCAL_PORT, Settings
from whylogs_songbird.errors import ConfigError, SessionBusyError, SessionNotFoundError, SongbirdApiError
from whylogs_songbird.models import (
    AsyncLogResponse,
    CreateDatasetProfileUploadResponse,
    CreateReferenceProfileResponse,
    CreateSessionResponse,
    GetProfileObservatoryLinkResponse,
    LogReferenceResponse,
    LogSessionReferenceResponse,
    Segment,
    SegmentTag,
)
from whylogs_songbird.session import DatasetSlot, DatasetTarget, GuestSession, SessionStore

#: scripts/mutation runs this file against the mutants of this module
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/session.py")

ENDPOINT = "http://127.0.0.1:9"
NORTH = SegmentTag(key="region", value="north")
BIG = SegmentTag(key="size", value="big")


class FakeClient:
    """The client seam: records ``(operation, args)`` and answers typed models; ``fail`` maps an
    operation to the errors its next calls raise, in order."""

    def __init__(self, endpoint: str = ENDPOINT) -> None:
        self.endpoint = endpoint
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: dict[str, list[Exception]] = {}
        self.sessions = 0
        self.closed = 0

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        errors = self.fail.get(name)
        if errors:
            raise errors.pop(0)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def create_session(self, user_id: str) -> CreateSessionResponse:
        self._record("create_session", user_id)
        self.sessions += 1
        return CreateSessionResponse(id=f"session-{self.sessions}")

    def create_dataset_profile_upload(self, session_id: str, timestamp: int, tags: list[SegmentTag]) -> Any:
        self._record("create_dataset_profile_upload", session_id, timestamp, tags)
        return CreateDatasetProfileUploadResponse(id=f"batch-in-{session_id}", upload_url="http://127.0.0.1:9/put/b")

    def create_reference_profile_upload(self, session_id: str, alias: str | None, timestamp: int) -> Any:
        self._record("create_reference_profile_upload", session_id, alias, timestamp)
        return LogSessionReferenceResponse(id=f"ref-in-{session_id}", upload_url="http://127.0.0.1:9/put/r")

    def log_async(self, org: str, dataset: str, timestamp: int, tags: list[SegmentTag]) -> AsyncLogResponse:
        self._record("log_async", org, dataset, timestamp, tags)
        return AsyncLogResponse(
            id="log-1", model_id=dataset, upload_url="http://127.0.0.1:9/put/a", upload_timestamp=5, tags=Segment()
        )

    def log_reference(self, org: str, dataset: str, alias: str | None, timestamp: int) -> LogReferenceResponse:
        self._record("log_reference", org, dataset, alias, timestamp)
        return LogReferenceResponse(
            id="ref-1", model_id=dataset, alias=alias or "", upload_url="http://127.0.0.1:9/put/l", upload_timestamp=5
        )

    def create_reference_profile(
        self, org: str, dataset: str, alias: str, timestamp: int, segments: list[list[SegmentTag]]
    ) -> CreateReferenceProfileResponse:
        self._record("create_reference_profile", org, dataset, alias, timestamp, segments)
        return CreateReferenceProfileResponse(
            id="ref-seg",
            alias=alias,
            dataset_id=dataset,
            upload_timestamp=5,
            segments=["s"],
            upload_urls=["http://127.0.0.1:9/put/s0"],
        )

    def get_session_profile_observatory_link(self, session_id: str, batches: list[int], refs: list[str]) -> Any:
        self._record("get_session_profile_observatory_link", session_id, batches, refs)
        return GetProfileObservatoryLinkResponse(observatory_url=f"http://127.0.0.1:9/s/{session_id}")

    def get_dataset_observatory_link(self, org: str, dataset: str, batches: list[int], refs: list[str]) -> Any:
        self._record("get_dataset_observatory_link", org, dataset, batches, refs)
        return GetProfileObservatoryLinkResponse(observatory_url=f"http://127.0.0.1:9/d/{org}/{dataset}")

    def claim_guest_session(self, session_id: str, org_id: str) -> None:
        self._record("claim_guest_session", session_id, org_id)

    def delete_session(self, session_id: str) -> None:
        self._record("delete_session", session_id)

    def close(self) -> None:
        self.closed += 1


def gone(session_id: str = "x") -> SessionNotFoundError:
    return SessionNotFoundError(f"Session {session_id} has expired.", status=400, operation="upload")


def guest(tmp_path: Path, session_id: str | None = None) -> tuple[FakeClient, SessionStore, GuestSession]:
    client, store = FakeClient(), SessionStore(tmp_path / "cfg")
    return client, store, GuestSession(client, store, session_id)  # type: ignore[arg-type]


def dataset(tmp_path: Path) -> tuple[FakeClient, DatasetTarget]:
    client = FakeClient()
    return client, DatasetTarget(client, SessionStore(tmp_path / "cfg"), "org-1", "model-7")  # type: ignore[arg-type]


# -- GuestSession ------------------------------------------------------------------------------


def test_the_stored_session_is_used_without_asking_the_server(tmp_path):
    client, store, session = guest(tmp_path)
    store.set(ENDPOINT, "stored-1")
    assert session.session_id() == "stored-1" and session.endpoint == ENDPOINT
    store.set(ENDPOINT, "stored-2")  # read once, then kept by this writer
    assert session.session_id() == "stored-1"
    assert client.calls == [] and session.pinned_session_id is None


def test_a_created_session_is_made_for_the_stored_user_and_stored_for_the_endpoint(tmp_path):
    client, store, session = guest(tmp_path)
    assert session.session_id() == "session-1"
    assert client.calls == [("create_session", (store.user_id(),))]
    assert json.loads(store.path.read_text())["sessions"][ENDPOINT]["sessionId"] == "session-1"


def test_call_passes_the_session_and_returns_the_answer(tmp_path):
    client, store, session = guest(tmp_path, "pinned")
    assert session.call(lambda sid: ("answer", sid)) == ("answer", "pinned")
    assert client.calls == []


def test_an_unknown_session_is_renewed_once_and_the_operation_retried_in_the_new_one(tmp_path):
    client, store, session = guest(tmp_path, "pinned")
    seen: list[str] = []

    def operation(sid: str) -> str:
        seen.append(sid)
        if sid == "pinned":
            raise gone(sid)
        return "done in " + sid

    assert session.call(operation) == "done in session-1"
    assert seen == ["pinned", "session-1"] and client.names() == ["create_session"]
    assert store.get(ENDPOINT) == "session-1" and session.pinned_session_id is None


def test_a_second_unknown_answer_after_renewing_is_raised_not_renewed_again(tmp_path):
    client, store, session = guest(tmp_path, "pinned")
    seen: list[str] = []

    def operation(sid: str) -> str:
        seen.append(sid)
        raise gone(sid)

    with pytest.raises(SessionNotFoundError, match="session-1 has expired"):
        session.call(operation)
    assert seen == ["pinned", "session-1"] and client.names() == ["create_session"]


def test_other_api_errors_are_raised_without_renewing(tmp_path):
    client, store, session = guest(tmp_path, "pinned")
    refused = SongbirdApiError("datasetTimestamp must be a number", status=400, operation="upload")
    seen: list[str] = []

    def operation(sid: str) -> str:
        seen.append(sid)
        raise refused

    with pytest.raises(SongbirdApiError) as caught:
        session.call(operation)
    assert caught.value is refused and seen == ["pinned"]
    assert client.calls == [] and store.get(ENDPOINT) is None and session.pinned_session_id == "pinned"


def test_renewing_a_session_that_is_not_the_current_one_keeps_the_current(tmp_path):
    client, store, session = guest(tmp_path)
    store.set(ENDPOINT, "current")
    assert session.session_id() == "current"
    assert session.renew("older") == "current"  # another thread renewed it already
    assert client.calls == [] and store.get(ENDPOINT) == "current"


def test_renewing_the_current_session_takes_a_newer_one_another_process_stored(tmp_path, caplog):
    client, store, session = guest(tmp_path)
    store.set(ENDPOINT, "stale")
    assert session.session_id() == "stale"
    SessionStore(tmp_path / "cfg").set(ENDPOINT, "from-elsewhere")  # another process renewed it
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.session"):
        assert session.renew("stale") == "from-elsewhere"
    assert client.calls == [] and session.session_id() == "from-elsewhere"
    assert [r.getMessage() for r in caplog.records] == [
        f"Guest session stale at {ENDPOINT} is unknown or expired; created new session from-elsewhere. "
        "Observatory links of the old session no longer work."
    ]


def test_a_renewed_session_is_kept_by_the_writer_and_not_renewed_again(tmp_path, caplog):
    client, store, session = guest(tmp_path, "stale")
    assert session.renew("stale") == "session-1"
    SessionStore(tmp_path / "cfg").set(ENDPOINT, "from-elsewhere")  # a later change by another process
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.session"):
        assert session.renew("stale") == "session-1"  # a second thread told the same: already done
    assert session.session_id() == "session-1" and caplog.records == []
    assert client.names() == ["create_session"]


@pytest.mark.parametrize("stored", [None, "stale"])
def test_renewing_with_nothing_newer_stored_creates_and_stores_one(tmp_path, stored):
    client, store, session = guest(tmp_path, "stale")
    if stored:
        store.set(ENDPOINT, stored)
    assert session.renew("stale") == "session-1"
    assert client.names() == ["create_session"] and store.get(ENDPOINT) == "session-1"
    assert session.session_id() == "session-1" and session.pinned_session_id is None


def test_a_fresh_writer_renewing_takes_the_stored_session_when_it_is_not_the_stale_one(tmp_path):
    client, store, session = guest(tmp_path)
    store.set(ENDPOINT, "newer")
    assert session.renew("stale") == "newer" and client.calls == []


def test_new_replaces_the_stored_session_and_forget_drops_it(tmp_path):
    client, store, session = guest(tmp_path, "pinned")
    store.set(ENDPOINT, "old")
    assert session.new() == "session-1" and session.session_id() == "session-1"
    assert store.get(ENDPOINT) == "session-1" and session.pinned_session_id is None
    assert session.forget() == "session-1"
    assert store.get(ENDPOINT) is None and session.pinned_session_id is None
    assert session.session_id() == "session-2"


def test_forgetting_a_pinned_session_unpins_it(tmp_path):
    client, store, session = guest(tmp_path, "pinned")
    assert session.forget() is None and session.pinned_session_id is None
    assert session.session_id() == "session-1"


# -- DatasetTarget and the slot / link seam -------------------------------------------------------


def test_a_dataset_target_is_named_org_slash_dataset_and_calls_straight_through(tmp_path):
    client, target = dataset(tmp_path)
    assert target.session_id() == "org-1/model-7" and target.dataset == ("org-1", "model-7")
    assert target.endpoint == ENDPOINT and target.pinned_session_id is None
    assert target.call(lambda sid: "in " + sid) == "in org-1/model-7"
    with pytest.raises(SessionNotFoundError):  # nothing to renew in a dataset
        target.call(lambda sid: (_ for _ in ()).throw(gone(sid)))
    assert repr(target) == f"DatasetTarget('{ENDPOINT}', org_id='org-1', dataset_id='model-7')"
    assert client.calls == []


def test_a_guest_batch_slot_asks_for_a_dataset_profile_upload_with_its_tags(tmp_path):
    client, store, session = guest(tmp_path, "s-1")
    sid, slot = S.request_slot(session, "batch", 1_700_000_000_000, segment_tags=(NORTH, BIG), alias="ignored")
    assert (sid, slot.id) == ("s-1", "batch-in-s-1")
    assert client.calls == [("create_dataset_profile_upload", ("s-1", 1_700_000_000_000, [NORTH, BIG]))]


def test_a_guest_reference_slot_asks_for_a_reference_upload_with_its_alias(tmp_path):
    client, store, session = guest(tmp_path, "s-1")
    sid, slot = S.request_slot(session, "reference", 17, alias="train")
    assert (sid, slot.id) == ("s-1", "ref-in-s-1")
    assert client.calls == [("create_reference_profile_upload", ("s-1", "train", 17))]


def test_a_guest_slot_in_an_unknown_session_is_asked_again_in_the_renewed_one(tmp_path):
    client, store, session = guest(tmp_path, "s-old")
    client.fail["create_dataset_profile_upload"] = [gone("s-old")]
    sid, slot = S.request_slot(session, "batch", 17)
    assert (sid, slot.id) == ("session-1", "batch-in-session-1")
    assert client.names() == ["create_dataset_profile_upload", "create_session", "create_dataset_profile_upload"]
    assert client.calls[-1] == ("create_dataset_profile_upload", ("session-1", 17, []))


def test_a_dataset_batch_slot_goes_through_log_async(tmp_path):
    client, target = dataset(tmp_path)
    sid, slot = S.request_slot(target, "batch", 17, segment_tags=[NORTH], alias="ignored")
    assert sid == "org-1/model-7"
    assert slot == DatasetSlot(id="log-1", upload_url="http://127.0.0.1:9/put/a")
    assert slot.observatory_url is None
    assert client.calls == [("log_async", ("org-1", "model-7", 17, [NORTH]))]


@pytest.mark.parametrize("alias", ["train", None])
def test_an_unsegmented_dataset_reference_goes_through_log_reference(tmp_path, alias):
    client, target = dataset(tmp_path)
    sid, slot = S.request_slot(target, "reference", 17, alias=alias)
    assert sid == "org-1/model-7" and slot == DatasetSlot(id="ref-1", upload_url="http://127.0.0.1:9/put/l")
    assert client.calls == [("log_reference", ("org-1", "model-7", alias, 17))]


def test_a_segment_of_a_dataset_reference_is_created_under_the_references_own_name(tmp_path):
    client, target = dataset(tmp_path)
    sid, slot = S.request_slot(target, "reference", 17, segment_tags=(NORTH, BIG), alias="train[region=north,size=big]")
    assert sid == "org-1/model-7" and slot == DatasetSlot(id="ref-seg", upload_url="http://127.0.0.1:9/put/s0")
    assert client.calls == [("create_reference_profile", ("org-1", "model-7", "train", 17, [[NORTH, BIG]]))]


def test_a_dataset_slot_keeps_its_upload_url_out_of_its_repr():
    slot = DatasetSlot(id="log-1", upload_url="http://127.0.0.1:9/put?signature=secret")
    assert "secret" not in repr(slot) and "log-1" in repr(slot)


@pytest.mark.parametrize(
    "alias, tags, expected",
    [
        ("train[region=north]", [NORTH], "train"),
        ("train[region=north,size=big]", [NORTH, BIG], "train"),
        ("train[size=big,region=north]", [NORTH, BIG], "train[size=big,region=north]"),  # another order
        ("train", [NORTH], "train"),  # no suffix
        ("[region=north]", [NORTH], "[region=north]"),  # the suffix is the whole name: kept
        ("x[region=north]", [NORTH], "x"),
        (None, [NORTH], "reference"),
        ("", [NORTH], "reference"),
        ("train[region=south]", [NORTH], "train[region=south]"),
    ],
)
def test_the_unsegmented_alias(alias, tags, expected):
    assert S._unsegmented_alias(alias, tags) == expected


def test_links_ask_the_session_or_the_dataset(tmp_path):
    client, store, session = guest(tmp_path, "s-1")
    link = S.request_link(session, "s-given", [1, 2], ["r-1"])
    assert link.observatory_url == "http://127.0.0.1:9/s/s-given"
    assert client.calls == [("get_session_profile_observatory_link", ("s-given", [1, 2], ["r-1"]))]
    dclient, target = dataset(tmp_path)
    link = S.request_link(target, "org-1/model-7", [3], ["r-2"])
    assert link.observatory_url == "http://127.0.0.1:9/d/org-1/model-7"
    assert dclient.calls == [("get_dataset_observatory_link", ("org-1", "model-7", [3], ["r-2"]))]


# -- open_target and store_for -------------------------------------------------------------------


def test_open_target_is_the_dataset_in_dataset_mode(tmp_path):
    client = FakeClient()
    settings = Settings(endpoint=ENDPOINT, org_id="org-1", dataset_id="model-7", config_dir=tmp_path, session_id="s")
    target = S.open_target(client, settings, "s-given")  # type: ignore[arg-type]
    assert isinstance(target, DatasetTarget) and target.dataset == ("org-1", "model-7")
    assert target.client is client and target.store is SessionStore.for_directory(tmp_path)


@pytest.mark.parametrize(
    "given, configured, expected",
    [("s-given", "s-set", "s-given"), (None, "s-set", "s-set"), (None, None, None), ("", "s-set", "")],
)
def test_open_target_is_the_guest_session_given_else_the_configured_one(tmp_path, given, configured, expected):
    client = FakeClient()
    settings = Settings(endpoint=ENDPOINT, org_id="org-1", config_dir=tmp_path, session_id=configured)
    target = S.open_target(client, settings, given)  # type: ignore[arg-type]
    assert isinstance(target, GuestSession) and target.client is client
    assert target.pinned_session_id == expected and target.store is SessionStore.for_directory(tmp_path)


LEGACY = f"http://127.0.0.1:{LEGACY_LOCAL_PORT}"
DEFAULT = f"http://127.0.0.1:{DEFAULT_LOCAL_PORT}"


def embedded_settings(tmp_path: Path, **changes: Any) -> Settings:
    fields = {"endpoint": DEFAULT, "embedded": True, "local_port": DEFAULT_LOCAL_PORT, "config_dir": tmp_path}
    return Settings(**{**fields, **changes})


def test_the_embedded_default_takes_over_the_session_of_the_earlier_port(tmp_path, caplog):
    SessionStore(tmp_path).set(LEGACY, "legacy-session")
    SessionStore(tmp_path).remember_references(LEGACY, "legacy-session", {"train": "ref-1"})
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.session"):
        store = S.store_for(embedded_settings(tmp_path))
    assert store is SessionStore.for_directory(tmp_path)
    assert store.get(DEFAULT) == "legacy-session" and store.get(LEGACY) == "legacy-session"
    assert store.reference_id(DEFAULT, "legacy-session", "train") == "ref-1"
    assert [r.getMessage() for r in caplog.records] == [
        f"songbird: {DEFAULT} now uses the guest session stored for {LEGACY}"
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"embedded": False},  # an endpoint set by hand, even the default's URL
        {"local_port": 9100, "endpoint": "http://127.0.0.1:9100"},  # the embedded default on another port
    ],
)
def test_only_the_embedded_default_on_its_default_port_takes_the_earlier_session(tmp_path, changes):
    SessionStore(tmp_path).set(LEGACY, "legacy-session")
    settings = embedded_settings(tmp_path, **changes)
    store = S.store_for(settings)
    assert store.get(settings.endpoint) is None and store.get(LEGACY) == "legacy-session"


def test_a_session_already_stored_for_the_default_is_kept_and_a_missing_one_is_not_made_up(tmp_path, caplog):
    store = SessionStore(tmp_path)
    store.set(LEGACY, "legacy-session")
    store.set(DEFAULT, "own")
    before = store.path.read_text()
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.session"):
        S.store_for(embedded_settings(tmp_path))
    assert store.path.read_text() == before and caplog.records == []
    other = tmp_path / "other"
    S.store_for(embedded_settings(other))
    assert not (other / "sessions.json").exists()


def test_a_legacy_entry_that_is_not_an_object_is_not_carried_over(tmp_path):
    store = SessionStore(tmp_path)
    store.path.write_text(json.dumps({"sessions": {LEGACY: "legacy-session"}}))
    S.store_for(embedded_settings(tmp_path))
    assert json.loads(store.path.read_text()) == {"sessions": {LEGACY: "legacy-session"}}


def test_a_busy_or_unwritable_store_does_not_stop_the_writer(tmp_path, caplog):
    held = SessionStore(tmp_path)
    held.set(LEGACY, "legacy-session")
    other = SessionStore.for_directory(tmp_path)
    other._file_lock.timeout = 0.05
    try:
        with held.lock(), caplog.at_level(logging.DEBUG, logger="whylogs_songbird.session"):
            assert S.store_for(embedded_settings(tmp_path)) is other
    finally:
        other._file_lock.timeout = 60
    assert held.get(DEFAULT) is None
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("songbird: could not carry over the earlier local session: Another process")


def test_a_carry_over_that_fails_to_write_is_only_logged(tmp_path, monkeypatch, caplog):
    SessionStore(tmp_path).set(LEGACY, "legacy-session")

    def full(path: Path, data: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(S, "write_json_atomic", full)
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.session"):
        S.store_for(embedded_settings(tmp_path))
    assert [r.getMessage() for r in caplog.records] == [
        "songbird: could not carry over the earlier local session: disk full"
    ]


# -- the lock ------------------------------------------------------------------------------------


def test_a_lock_that_fails_otherwise_releases_the_thread_lock_and_raises(tmp_path, monkeypatch):
    store = SessionStore(tmp_path / "cfg")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store._file_lock, "acquire", broken)
    with pytest.raises(KeyboardInterrupt):
        store.get(ENDPOINT)
    assert store._thread_lock.acquire(blocking=False)  # released: free for this (and any) thread
    store._thread_lock.release()


def test_a_timed_out_lock_releases_the_thread_lock(tmp_path):
    store, other = SessionStore(tmp_path), SessionStore(tmp_path)
    other._file_lock.timeout = 0.05
    with store.lock(), pytest.raises(SessionBusyError):
        other.get(ENDPOINT)
    taken: list[bool] = []
    thread = threading.Thread(target=lambda: taken.append(other._thread_lock.acquire(blocking=False)))
    thread.start()
    thread.join()
    assert taken == [True]


def test_locks_are_released_after_each_use(tmp_path):
    store = SessionStore(tmp_path)
    store.set(ENDPOINT, "s")
    assert not store._file_lock.is_locked
    other = SessionStore(tmp_path)
    other._file_lock.timeout = 0.05
    assert other.get(ENDPOINT) == "s"  # not held by the first store


def test_get_reads_only_a_session_object(tmp_path):
    store = SessionStore(tmp_path)
    store.path.write_text(json.dumps({"sessions": {ENDPOINT: "plain", "http://b:1": {"createdAt": 1}}}))
    assert store.get(ENDPOINT) is None and store.get("http://b:1") is None
    assert store.forget(ENDPOINT) is None
    assert json.loads(store.path.read_text()) == {"sessions": {"http://b:1": {"createdAt": 1}}}


def test_the_session_file_is_read_as_utf8(tmp_path):
    store = SessionStore(tmp_path)
    store.path.write_bytes(json.dumps({"sessions": {ENDPOINT: {"sessionId": "séance"}}}, ensure_ascii=False).encode())
    assert store.get(ENDPOINT) == "séance"


# -- the helpers for people ----------------------------------------------------------------------


@pytest.fixture
def helpers(tmp_path, monkeypatch):
    """The helpers' options (an endpoint and a config dir) with make_client answering a FakeClient."""
    for names in ENV_VARS.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    made: list[tuple[Settings, FakeClient]] = []

    def make_client(settings: Settings) -> FakeClient:
        made.append((settings, FakeClient(settings.endpoint)))
        return made[-1][1]

    monkeypatch.setattr(S, "make_client", make_client)
    return {"endpoint": ENDPOINT, "config_dir": tmp_path}, made, SessionStore.for_directory(tmp_path)


def test_current_session_is_the_pinned_else_the_stored_one_and_closes_its_client(helpers):
    options, made, store = helpers
    assert S.current_session(**options) is None
    store.set(ENDPOINT, "stored")
    assert S.current_session(**options) == "stored"
    assert S.current_session(session_id="pinned", **options) == "pinned"
    assert [client.closed for _, client in made] == [1, 1, 1]
    assert all(client.calls == [] for _, client in made)


def test_new_session_stores_a_new_one_and_forget_session_drops_it(helpers):
    options, made, store = helpers
    store.set(ENDPOINT, "old")
    assert S.new_session(**options) == "session-1" and store.get(ENDPOINT) == "session-1"
    assert S.forget_session(**options) == "session-1" and store.get(ENDPOINT) is None
    assert S.forget_session(**options) is None
    assert [client.closed for _, client in made] == [1, 1, 1]
    assert made[0][0].endpoint == ENDPOINT and made[0][1].names() == ["create_session"]


def test_claiming_the_stored_session_forgets_it(helpers, caplog):
    options, made, store = helpers
    store.set(ENDPOINT, "stored")
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.session"):
        assert S.claim_session(org_id="org-1", api_key="key.abc:org-1", **options) == "stored"
    settings, client = made[0]
    assert settings.org_id == "org-1" and settings.api_key == "key.abc:org-1"
    assert client.calls == [("claim_guest_session", ("stored", "org-1"))] and client.closed == 1
    assert store.get(ENDPOINT) is None
    assert [r.getMessage() for r in caplog.records] == ["Claimed guest session stored into organization org-1"]


def test_claiming_a_pinned_session_leaves_the_stored_one(helpers):
    options, made, store = helpers
    store.set(ENDPOINT, "stored")
    assert S.claim_session(org_id="org-1", api_key="k", session_id="pinned", **options) == "pinned"
    assert made[0][1].calls == [("claim_guest_session", ("pinned", "org-1"))]
    assert store.get(ENDPOINT) == "stored"


def test_a_refused_claim_keeps_the_stored_session_and_closes_the_client(helpers, monkeypatch):
    options, made, store = helpers
    store.set(ENDPOINT, "stored")
    made_client_fail = SongbirdApiError("refused", status=403, operation="claim_guest_session")

    def refuse(settings: Settings) -> FakeClient:
        client = FakeClient(settings.endpoint)
        client.fail["claim_guest_session"] = [made_client_fail]
        made.append((settings, client))
        return client

    monkeypatch.setattr(S, "make_client", refuse)
    with pytest.raises(SongbirdApiError):
        S.claim_session(org_id="org-1", api_key="k", **options)
    assert store.get(ENDPOINT) == "stored" and made[0][1].closed == 1


@pytest.mark.parametrize(
    "given, message",
    [
        ({"api_key": "k"}, "claim_session needs org_id=... (or SONGBIRD_ORG_ID): the organization to claim into."),
        ({"org_id": "org-1"}, "claim_session needs api_key=... (or SONGBIRD_API_KEY): a key of that organization."),
        ({"org_id": "org-1", "api_key": "k"}, f"There is no stored guest session for {ENDPOINT}: nothing to claim."),
    ],
)
def test_a_claim_without_what_it_needs_says_what_is_missing(helpers, given, message):
    options, made, store = helpers
    with pytest.raises(ConfigError) as caught:
        S.claim_session(**given, **options)
    assert str(caught.value) == message
    assert made[0][1].calls == [] and made[0][1].closed == 1


def test_deleting_the_stored_session_forgets_it(helpers, caplog):
    options, made, store = helpers
    store.set(ENDPOINT, "stored")
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.session"):
        assert S.delete_session(**options) == "stored"
    assert made[0][1].calls == [("delete_session", ("stored",))] and made[0][1].closed == 1
    assert store.get(ENDPOINT) is None
    assert [r.getMessage() for r in caplog.records] == ["Deleted guest session stored"]


@pytest.mark.parametrize("argument, pinned, expected", [("named", "pinned", "named"), (None, "pinned", "pinned")])
def test_deleting_another_session_leaves_the_stored_one(helpers, monkeypatch, argument, pinned, expected):
    options, made, store = helpers
    store.set(ENDPOINT, "stored")
    monkeypatch.setenv("SONGBIRD_SESSION_ID", pinned)
    assert S.delete_session(argument, **options) == expected
    assert made[0][1].calls == [("delete_session", (expected,))]
    assert store.get(ENDPOINT) == "stored"


def test_deleting_with_nothing_stored_or_named_says_to_name_one(helpers):
    options, made, store = helpers
    with pytest.raises(ConfigError) as caught:
        S.delete_session(**options)
    assert str(caught.value) == f"There is no stored guest session for {ENDPOINT}: name the session to delete."
    assert made[0][1].calls == [] and made[0][1].closed == 1
