"""Publishing (publish.py) as logic: slots, parallel PUTs, links, failures, the outbox handoff.

A fake client answers the API calls (recording them, failing where a test says) and sends each
PUT for real to a tiny loopback server. These tests exist so that scripts/mutation can judge
publish.py in seconds; test_publish_concurrency.py, test_writer.py and test_outbox.py check the
same code against a real songbird server.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pandas as pd
import pytest
import whylogs as why
from conftest import serving

from whylogs_songbird.client import SongbirdClient
from whylogs_songbird.config import resolve_settings
from whylogs_songbird.errors import (
    AuthError,
    ConfigError,
    PublishError,
    SessionNotFoundError,
    SongbirdApiError,
    SongbirdConnectionError,
    SongbirdError,
)
from whylogs_songbird.models import (
    BatchLogSessionReferenceResponse,
    CreateDatasetProfileUploadResponse,
    CreateSessionResponse,
    GetProfileObservatoryLinkResponse,
    LogSessionReferenceResponse,
    SegmentTag,
)
from whylogs_songbird.outbox import Outbox
from whylogs_songbird.profiles import ProfileItem
from whylogs_songbird.publish import PublishedProfile, Publisher, PublishResult
from whylogs_songbird.session import SessionStore

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast(
    "whylogs_songbird/publish.py",
    "whylogs_songbird/results.py",
    "whylogs_songbird/links.py",
    "whylogs_songbird/outbox/delivery.py",
)

P = importlib.import_module("whylogs_songbird.publish")  # the package exports a function of the same name
R = importlib.import_module("whylogs_songbird.results")
D = importlib.import_module("whylogs_songbird.outbox.delivery")

ENDPOINT = "http://127.0.0.1:9"
OTHER = "http://127.0.0.1:10"
T1 = 1_700_000_000_000  # 2023-11-14 22:13:20Z
T2 = 1_700_000_001_000
T3 = 1_700_000_002_000
T4 = 1_700_000_003_000
MIDNIGHT = 1_699_920_000_000  # 2023-11-14 00:00:00Z
#: Seconds a test waits for something that should happen at once (in flight together, a link asked).
DEADLINE = 5.0
#: Seconds after which a hung test (a task waiting on one that never runs) ends the run, with
#: tracebacks: set by scripts/mutation, where a mutant can leave a pool thread waiting forever.
#: Unset (a normal run, a loaded CI machine) the guard is off.
WATCHDOG = float(os.environ.get("SONGBIRD_TEST_HANG_SECONDS", "0"))


def arm_watchdog() -> None:
    if WATCHDOG > 0:
        faulthandler.dump_traceback_later(WATCHDOG, exit=True)


@pytest.fixture(autouse=True)
def hang_guard():
    """Armed for the whole test. pytest disarms it when a test fails, so the teardowns that wait
    for threads (closing publishers) arm it again: they depend on this fixture to run before it ends."""
    arm_watchdog()
    yield
    if WATCHDOG > 0:
        faulthandler.cancel_dump_traceback_later()


# -- a loopback server for the PUTs, and a fake client for everything else --------------------


class PutServer:
    """Records every PUT (path with query, body); answers 200, with a duplicate header if told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.url = ""
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.puts: list[tuple[str, bytes]] = []
            self.duplicates: dict[str, str] = {}
            self.hook = None

    def bodies(self) -> dict[str, bytes]:
        with self.lock:
            return {urlsplit(path).path.rsplit("/", 1)[-1]: body for path, body in self.puts}


@pytest.fixture(scope="module")
def put_server():
    state = PutServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            name = urlsplit(self.path).path.rsplit("/", 1)[-1]
            if state.hook is not None:
                state.hook(name)
            with state.lock:
                state.puts.append((self.path, body))
                duplicate = state.duplicates.get(name)
            self.send_response(200)
            if duplicate:
                self.send_header("X-Songbird-Duplicate-Of", duplicate)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    with serving(httpd) as state.url:
        yield state


@pytest.fixture
def puts(put_server):
    put_server.reset()
    yield put_server
    put_server.reset()


class FakeClient:
    """The songbird API calls publish.py makes: recorded, answered predictably, failed on request.

    ``errors["<op>:<name>"]`` is a list of exceptions raised by the next calls of that operation
    (one each). Slot ids: ``b<timestamp>[-<key><value>...]`` for batches, ``r-<alias>`` for references.
    """

    def __init__(self, puts: PutServer, *, endpoint: str = ENDPOINT, slot_links: bool = True) -> None:
        self.endpoint = endpoint
        self.puts = puts
        self.slot_links = slot_links
        self.http = SongbirdClient(puts.url, max_retries=0)
        self.calls: list[tuple] = []
        self.errors: dict[str, list[Exception]] = {}
        self.put_threads: list[str] = []
        self.sessions = 0
        self.closed = False
        self.link_asked = threading.Event()
        self.lock = threading.Lock()

    def ops(self, name: str) -> list[tuple]:
        with self.lock:
            return [call[1:] for call in self.calls if call[0] == name]

    def _record(self, *call: object) -> None:
        with self.lock:
            self.calls.append(call)

    def _script(self, key: str) -> None:
        with self.lock:
            queue = self.errors.get(key)
            error = queue.pop(0) if queue else None
        if error is not None:
            raise error

    def _slot(self, model, upload_id: str):
        return model(
            id=upload_id,
            upload_url=f"{self.puts.url}/v0/uploads/{upload_id}?signature=s",
            observatory_url=f"https://obs.test/{upload_id}" if self.slot_links else None,
        )

    def create_session(self, user_id: str) -> CreateSessionResponse:
        with self.lock:
            self.sessions += 1
            number = self.sessions
        self._record("session", user_id)
        return CreateSessionResponse(id=f"session-{number}")

    def create_dataset_profile_upload(self, session_id, dataset_timestamp, segment_tags=None):
        tags = [(t.key, t.value) for t in segment_tags or []]
        self._record("slot", session_id, dataset_timestamp, tags)
        upload_id = f"b{dataset_timestamp}" + "".join(f"-{k}{v}" for k, v in tags)
        self._script(f"slot:{upload_id}")
        return self._slot(CreateDatasetProfileUploadResponse, upload_id)

    def create_reference_profile_upload(self, session_id, alias=None, dataset_timestamp=None):
        self._record("reference", session_id, alias, dataset_timestamp)
        self._script(f"reference:{alias}")
        return self._slot(LogSessionReferenceResponse, f"r-{alias}")

    def batch_create_reference_profile_upload(self, session_id, references):
        self._record("references", session_id, [(r.alias, r.dataset_timestamp) for r in references])
        self._script("references:")
        return BatchLogSessionReferenceResponse(
            references=[self._slot(LogSessionReferenceResponse, f"r-{r.alias}") for r in references]
        )

    def get_session_profile_observatory_link(
        self, session_id, batch_profile_timestamps=None, reference_profile_ids=None
    ):
        keys = [*batch_profile_timestamps, *reference_profile_ids]
        self._record("link", session_id, list(batch_profile_timestamps), list(reference_profile_ids))
        self.link_asked.set()
        self._script("link:")
        return GetProfileObservatoryLinkResponse(
            observatory_url=f"https://obs.test/{session_id}/link/" + "+".join(map(str, keys)),
            individual_observatory_urls=[f"https://obs.test/{session_id}/one/{k}" for k in keys],
        )

    def upload_profile(self, upload_url: str, data: bytes):
        name = urlsplit(upload_url).path.rsplit("/", 1)[-1]
        self._record("put", name)
        with self.lock:
            self.put_threads.append(threading.current_thread().name)
        self._script(f"put:{name}")
        return self.http.upload_profile(upload_url, data)

    def close(self) -> None:
        self.closed = True
        self.http.close()


class View:
    """Serializes (as `serialize_view` asks a plain view to) to fixed bytes, or fails."""

    def __init__(self, data: bytes, error: Exception | None = None) -> None:
        self.data = data
        self.error = error

    def _do_write(self, buffer) -> None:
        if self.error is not None:
            raise self.error
        buffer.write(self.data)


def batch(ts: int, data: bytes | None = None, tags=(), error: Exception | None = None) -> ProfileItem:
    return ProfileItem(
        view=View(data if data is not None else f"batch {ts}".encode(), error),
        dataset_timestamp=ts,
        segment_tags=tuple(SegmentTag(key=k, value=v) for k, v in tags),
    )


def ref(alias: str, ts: int = T1, error: Exception | None = None) -> ProfileItem:
    return ProfileItem(view=View(f"reference {alias}".encode(), error), dataset_timestamp=ts, alias=alias)


def api_error(cls=SongbirdApiError, message="boom", status=503, operation="upload_profile"):
    return cls(message, status=status, operation=operation)


@pytest.fixture
def config_dir(tmp_path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def make(hang_guard, config_dir, puts):
    """Publisher(settings of ``options``, client=FakeClient) -> (publisher, client); closed afterwards."""
    made: list[Publisher] = []

    def make(client: FakeClient | None = None, on_profile=None, **options):
        options.setdefault("endpoint", ENDPOINT)
        options.setdefault("config_dir", str(config_dir))
        client = client or FakeClient(puts)
        publisher = Publisher(resolve_settings(options), client=client, on_profile=on_profile)
        made.append(publisher)
        return publisher, client

    yield make
    arm_watchdog()
    for publisher in made:
        publisher.close()


@pytest.fixture
def fresh_shared(hang_guard, monkeypatch, puts):
    """No shared publisher from another test; every client made by publish.py is a FakeClient.
    Yields the list of (endpoint asked for, settings, client) of every client made."""
    monkeypatch.setattr(P, "_SHARED", {})
    made: list[tuple] = []

    def make_client(settings, endpoint=None):
        client = FakeClient(puts, endpoint=endpoint or settings.endpoint)
        made.append((endpoint, settings, client))
        return client

    monkeypatch.setattr(P, "make_client", make_client)
    monkeypatch.setattr(D, "make_client", make_client)  # the outbox's delivery makes its clients too
    yield made
    arm_watchdog()
    for publisher in P._SHARED.values():
        publisher.close()


def stored_sessions(config_dir: Path) -> dict:
    return json.loads((config_dir / "sessions.json").read_text())


def messages(caplog, name: str = "whylogs_songbird.publish") -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == name]


# -- the result objects --------------------------------------------------------------------------


def three_profiles() -> PublishResult:
    return PublishResult(
        endpoint=ENDPOINT,
        profiles=[
            PublishedProfile(
                kind="batch", dataset_timestamp=MIDNIGHT, ok=True, observatory_url="https://obs.test/a?x=1&y=2"
            ),
            PublishedProfile(kind="reference", dataset_timestamp=T1, alias="<train>", error='bad "x" & <y>'),
            PublishedProfile(
                kind="batch", dataset_timestamp=T1, ok=True, segment_tags=(SegmentTag(key="city", value="a"),)
            ),
        ],
        observatory_urls=["https://obs.test/c?a=1&b=2", "https://obs.test/d"],
    )


def test_summary_counts_landed_and_failed_and_names_the_first_failure():
    assert three_profiles().summary() == (f'2 of 3 profiles published to {ENDPOINT}; 1 failed (<train>: bad "x" & <y>)')
    two_failed = PublishResult(
        endpoint=ENDPOINT,
        profiles=[
            PublishedProfile(kind="batch", dataset_timestamp=T1, error="first"),
            PublishedProfile(kind="batch", dataset_timestamp=T2, error="second"),
        ],
    )
    assert (
        two_failed.summary() == f"0 of 2 profiles published to {ENDPOINT}; 2 failed (batch 2023-11-14 22:13:20Z: first)"
    )
    landed = PublishResult(endpoint=ENDPOINT, profiles=[PublishedProfile(kind="batch", dataset_timestamp=T1, ok=True)])
    assert landed.summary() == f"1 of 1 profiles published to {ENDPOINT}"
    nothing = PublishResult(endpoint=ENDPOINT, profiles=[], error="the server is down")
    assert nothing.summary() == f"nothing was published to {ENDPOINT}: the server is down"


def test_the_notebook_view_is_an_escaped_table_with_the_combined_links():
    assert three_profiles()._repr_html_() == (
        "<div><b>songbird</b>: 2 of 3 profiles published to http://127.0.0.1:9; "
        "1 failed (&lt;train&gt;: bad &quot;x&quot; &amp; &lt;y&gt;)"
        "<table><tr><th></th><th>kind</th><th>profile</th><th>link</th></tr>"
        "<tr><td>✅</td><td>batch</td><td>batch 2023-11-14</td>"
        '<td><a href="https://obs.test/a?x=1&amp;y=2" target="_blank">open</a></td></tr>'
        "<tr><td>❌</td><td>reference</td><td>&lt;train&gt;</td><td>bad &quot;x&quot; &amp; &lt;y&gt;</td></tr>"
        "<tr><td>✅</td><td>batch</td><td>batch 2023-11-14 22:13:20Z [city=a]</td><td></td></tr>"
        "</table>"
        '<p>Compare together:</p><ul><li><a href="https://obs.test/c?a=1&amp;b=2" target="_blank">'
        "https://obs.test/c?a=1&amp;b=2</a></li>"
        '<li><a href="https://obs.test/d" target="_blank">https://obs.test/d</a></li></ul>'
        "</div>"
    )


def test_the_notebook_view_without_combined_links_has_no_list_and_a_failure_shows_no_link():
    result = PublishResult(
        endpoint=ENDPOINT,
        profiles=[PublishedProfile(kind="batch", dataset_timestamp=T1, observatory_url="https://obs.test/x")],
    )
    assert result._repr_html_() == (
        "<div><b>songbird</b>: 0 of 1 profiles published to http://127.0.0.1:9; "
        "1 failed (batch 2023-11-14 22:13:20Z: None)"
        "<table><tr><th></th><th>kind</th><th>profile</th><th>link</th></tr>"
        "<tr><td>❌</td><td>batch</td><td>batch 2023-11-14 22:13:20Z</td><td></td></tr>"
        "</table></div>"
    )


def test_compare_with_asks_comparison_links_with_the_result_the_name_and_the_options(monkeypatch):
    seen = []
    assert R.comparison_links is P.comparison_links  # the publisher tells its results how to compare
    monkeypatch.setattr(R, "comparison_links", lambda *args, **kwargs: seen.append((args, kwargs)) or ["link"])
    result = PublishResult(endpoint=ENDPOINT, profiles=[])
    assert result.compare_with("train", endpoint=OTHER) == ["link"]
    assert seen == [((result, "train"), {"endpoint": OTHER})]


# -- the publisher: what it is made of -----------------------------------------------------------


def test_a_publisher_builds_its_client_session_and_outbox_from_the_settings(monkeypatch, config_dir, puts):
    made = []
    monkeypatch.setattr(P, "make_client", lambda settings: made.append(settings) or FakeClient(puts))
    settings = resolve_settings({"endpoint": ENDPOINT, "config_dir": str(config_dir), "session_id": "pinned-1"})
    with Publisher(settings) as publisher:
        assert made == [settings] and publisher.settings is settings
        assert publisher.session.client is publisher.client and isinstance(publisher.client, FakeClient)
        assert publisher.session.store is SessionStore.for_directory(config_dir)
        assert publisher.session.pinned_session_id == "pinned-1"
        assert publisher.outbox.directory == config_dir / "outbox"
        assert publisher.on_profile is None
    assert publisher.client.closed
    elsewhere = resolve_settings(
        {"endpoint": ENDPOINT, "config_dir": str(config_dir), "outbox_dir": str(config_dir / "o")}
    )
    assert Publisher(elsewhere).outbox.directory == config_dir / "o"
    assert (
        Publisher(resolve_settings({"endpoint": ENDPOINT, "config_dir": str(config_dir), "outbox": False})).outbox
        is None
    )
    unpinned = Publisher(resolve_settings({"endpoint": ENDPOINT, "config_dir": str(config_dir)}))
    assert unpinned.session.pinned_session_id is None


def test_without_settings_a_publisher_resolves_them_from_the_environment(monkeypatch, puts):
    monkeypatch.setattr(P, "make_client", lambda settings: FakeClient(puts))
    monkeypatch.setenv("SONGBIRD_MAX_WORKERS", "7")
    publisher = Publisher()
    assert publisher.settings == resolve_settings() and publisher.settings.max_workers == 7


def test_given_a_client_and_a_session_a_publisher_uses_them(monkeypatch, config_dir, puts):
    monkeypatch.setattr(P, "make_client", lambda settings: pytest.fail("no client should be made"))
    client = FakeClient(puts)
    session = P.GuestSession(client, SessionStore(config_dir), "given-1")
    publisher = Publisher(
        resolve_settings({"endpoint": ENDPOINT, "config_dir": str(config_dir)}), client=client, session=session
    )
    assert publisher.client is client and publisher.session is session


def test_the_threads_are_started_once_with_max_workers_and_close_waits_for_them(make):
    publisher, client = make(max_workers=3)
    pool = publisher._threads()
    assert publisher._threads() is pool and pool._max_workers == 3
    release = threading.Event()
    pool.submit(release.wait, DEADLINE)
    closer = threading.Thread(target=publisher.close)
    closer.start()
    closer.join(timeout=0.3)
    assert closer.is_alive()  # close waits for the running task
    release.set()
    closer.join(timeout=DEADLINE)
    assert not closer.is_alive() and publisher._pool is None and client.closed
    assert publisher._threads() is not pool  # a closed publisher starts new threads when used again


# -- batch profiles ------------------------------------------------------------------------------


def test_one_batch_profile_runs_inline_and_takes_the_link_of_its_slot(make, puts, config_dir):
    publisher, client = make()
    result = publisher.publish([batch(T1, b"bytes-1", tags=[("city", "a")])])
    user = stored_sessions(config_dir)["userId"]
    assert client.calls == [
        ("session", user),
        ("slot", "session-1", T1, [("city", "a")]),
        ("put", f"b{T1}-citya"),
    ]
    assert puts.puts == [(f"/v0/uploads/b{T1}-citya?signature=s", b"bytes-1")]
    assert client.put_threads == ["MainThread"] and publisher._pool is None
    [profile] = result.profiles
    assert profile == PublishedProfile(
        kind="batch",
        dataset_timestamp=T1,
        segment_tags=(SegmentTag(key="city", value="a"),),
        ok=True,
        profile_id=f"b{T1}-citya",
        session_id="session-1",
        observatory_url=f"https://obs.test/b{T1}-citya",
        size=7,
    )
    assert profile.upload_url == f"{puts.url}/v0/uploads/b{T1}-citya?signature=s"
    assert profile.exception is None and profile.error is None and profile.duplicate_of is None
    assert result.endpoint == ENDPOINT and result.error is None and result.ok
    assert result.observatory_urls == [f"https://obs.test/b{T1}-citya"]


def test_one_batch_profile_without_a_slot_link_asks_for_one(make, puts):
    publisher, client = make(FakeClient(puts, slot_links=False))
    result = publisher.publish([batch(T1)])
    assert client.ops("link") == [("session-1", [T1], [])]
    assert result.observatory_urls == [f"https://obs.test/session-1/link/{T1}"]
    assert result.profiles[0].observatory_url == f"https://obs.test/session-1/one/{T1}"


def test_segments_of_one_batch_share_one_link_and_their_puts_run_on_the_threads(make, puts):
    publisher, client = make(FakeClient(puts, slot_links=False))
    items = [batch(T1, f"segment {c}".encode(), tags=[("city", c)]) for c in "abcd"]
    result = publisher.publish(items)
    assert sorted(client.ops("slot")) == [("session-1", T1, [("city", c)]) for c in "abcd"]
    assert puts.bodies() == {f"b{T1}-city{c}": f"segment {c}".encode() for c in "abcd"}
    assert len(client.put_threads) == 4 and all(name.startswith("songbird_") for name in client.put_threads)
    assert client.ops("link") == [("session-1", [T1], [])]  # one timestamp: one link, asked once
    assert result.observatory_urls == [f"https://obs.test/session-1/link/{T1}"]
    assert [p.observatory_url for p in result.profiles] == [f"https://obs.test/session-1/one/{T1}"] * 4
    assert [p.profile_id for p in result.profiles] == [f"b{T1}-city{c}" for c in "abcd"]
    assert [p.size for p in result.profiles] == [9, 9, 9, 9] and result.ok


def test_two_profiles_already_go_to_the_threads(make, puts):
    publisher, client = make()
    assert publisher.publish([batch(T1), batch(T2)]).ok
    assert len(client.put_threads) == 2 and all(name.startswith("songbird_") for name in client.put_threads)


def test_one_worker_runs_everything_inline_in_order(make, puts):
    publisher, client = make(max_workers=1)
    result = publisher.publish([batch(T2), batch(T1), batch(T3)])
    assert [c[:3] for c in client.calls if c[0] != "session"] == [
        ("slot", "session-1", T2),
        ("put", f"b{T2}"),
        ("slot", "session-1", T1),
        ("put", f"b{T1}"),
        ("slot", "session-1", T3),
        ("put", f"b{T3}"),
        ("link", "session-1", [T2, T1, T3]),
    ]
    assert set(client.put_threads) == {"MainThread"} and publisher._pool is None
    assert [p.dataset_timestamp for p in result.profiles] == [T2, T1, T3]
    assert result.observatory_urls == [f"https://obs.test/session-1/link/{T2}+{T1}+{T3}"]


def test_links_hold_at_most_three_profiles_and_keep_the_slot_links(make, puts):
    publisher, client = make()
    result = publisher.publish([batch(T1), batch(T2), batch(T3), batch(T4)])
    assert sorted(client.ops("link")) == [("session-1", [T1, T2, T3], []), ("session-1", [T4], [])]
    assert result.observatory_urls == [
        f"https://obs.test/session-1/link/{T1}+{T2}+{T3}",
        f"https://obs.test/session-1/link/{T4}",
    ]
    assert [p.observatory_url for p in result.profiles] == [f"https://obs.test/b{t}" for t in (T1, T2, T3, T4)]


def test_a_chunks_link_is_asked_for_while_another_put_still_runs(make, puts):
    publisher, client = make()
    seen: list[bool] = []

    def hold(name: str) -> None:
        if name == f"b{T4}":
            seen.append(client.link_asked.wait(DEADLINE))

    puts.hook = hold
    result = publisher.publish([batch(T1), batch(T2), batch(T3), batch(T4)])
    assert seen == [True] and result.ok
    assert client.ops("link")[0] == ("session-1", [T1, T2, T3], [])
    assert len(client.ops("link")) == 2


def test_the_puts_run_at_the_same_time_up_to_max_workers(make, puts):
    publisher, client = make(max_workers=4)
    arrived = threading.Barrier(4, timeout=DEADLINE)
    puts.hook = lambda name: arrived.wait()
    result = publisher.publish([batch(t) for t in (T1, T2, T3, T4)])
    assert result.ok and not arrived.broken
    assert sorted(client.put_threads) == ["songbird_0", "songbird_1", "songbird_2", "songbird_3"]

    publisher, client = make(max_workers=2)
    pairs = threading.Barrier(2, timeout=DEADLINE)
    puts.hook = lambda name: pairs.wait()
    result = publisher.publish([batch(t) for t in (T1, T2, T3, T4)])
    assert result.ok and not pairs.broken
    assert sorted(set(client.put_threads)) == ["songbird_0", "songbird_1"]


def test_a_duplicate_upload_is_reported_and_warned_about(make, puts, caplog):
    caplog.set_level(logging.WARNING, "whylogs_songbird.publish")
    puts.duplicates[f"b{T1}"] = "earlier-1"
    puts.duplicates["r-train"] = "earlier-2"
    publisher, client = make()
    result = publisher.publish([batch(T1), ref("train"), batch(T2)])
    assert [p.duplicate_of for p in result.profiles] == ["earlier-1", "earlier-2", None] and result.ok
    assert sorted(messages(caplog)) == [
        (
            logging.WARNING,
            f"songbird: {label} has the same bytes as upload {earlier} already stored for this session, "
            "timestamp and segment; the server kept one copy and ignored this upload.",
        )
        for label, earlier in (("batch 2023-11-14 22:13:20Z", "earlier-1"), ("train", "earlier-2"))
    ]


def test_every_profile_is_reported_to_the_hook_landed_or_not(make, puts):
    done: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def hook(profile: PublishedProfile) -> None:
        with lock:
            done.append((profile.label, profile.ok))

    publisher, client = make(on_profile=hook)
    client.errors[f"put:b{T2}"] = [AuthError("refused", status=403, operation="upload_profile")]
    publisher.publish([batch(T1), batch(T2), ref("a"), ref("b", error=ValueError("bad"))])
    assert sorted(done) == [
        ("a", True),
        ("b", False),
        ("batch 2023-11-14 22:13:20Z", True),
        ("batch 2023-11-14 22:13:21Z", False),
    ]


def test_a_failed_batch_says_why_and_the_others_land(make, puts, caplog):
    caplog.set_level(logging.DEBUG, "whylogs_songbird.publish")
    publisher, client = make(outbox=False)
    bad = ValueError("cannot serialize")
    refused = AuthError("refused", status=403, operation="upload_profile")
    client.errors[f"put:b{T2}"] = [refused]
    result = publisher.publish([batch(T1, error=bad), batch(T2), batch(T3)])
    first, second, third = result.profiles
    assert (first.ok, first.error, first.exception, first.profile_id) == (
        False,
        "ValueError: cannot serialize",
        bad,
        None,
    )
    assert (second.ok, second.error, second.exception) == (False, "refused", refused)
    assert second.profile_id == f"b{T2}" and second.session_id == "session-1" and second.size is None
    assert second.upload_url == f"{puts.url}/v0/uploads/b{T2}?signature=s"
    assert third.ok and third.error is None
    assert sorted(c[1] for c in client.ops("slot")) == [T2, T3]  # a profile that does not serialize asks for no slot
    assert set(puts.bodies()) == {f"b{T3}"}
    assert not result.ok and result.landed == [third] and result.failed == [first, second]
    assert result.observatory_urls == [f"https://obs.test/b{T3}"] and client.ops("link") == []
    logged = [r for r in caplog.records if r.levelno == logging.DEBUG and "was not published" in r.getMessage()]
    assert sorted((r.getMessage(), r.exc_info[1]) for r in logged) == sorted(
        [
            ("songbird: batch 2023-11-14 22:13:20Z was not published: ValueError: cannot serialize", bad),
            ("songbird: batch 2023-11-14 22:13:21Z was not published: refused", refused),
        ],
        key=lambda pair: pair[0],
    )


def test_an_unknown_session_is_renewed_once_and_each_session_gets_its_links(make, puts):
    publisher, client = make(max_workers=1)
    client.errors[f"slot:b{T2}"] = [api_error(SessionNotFoundError, "gone", 404, "create_dataset_profile_upload")]
    result = publisher.publish([batch(T1), batch(T2)])
    assert [c[:2] for c in client.ops("slot")] == [("session-1", T1), ("session-1", T2), ("session-2", T2)]
    assert [p.session_id for p in result.profiles] == ["session-1", "session-2"] and result.ok
    assert client.ops("link") == [("session-1", [T1], []), ("session-2", [T2], [])]
    assert result.observatory_urls == [f"https://obs.test/session-1/link/{T1}", f"https://obs.test/session-2/link/{T2}"]
    assert result.session_id == "session-2"


def test_a_failed_link_is_left_out_with_a_warning(make, puts, caplog):
    caplog.set_level(logging.WARNING, "whylogs_songbird.publish")
    publisher, client = make(FakeClient(puts, slot_links=False))
    client.errors["link:"] = [SongbirdConnectionError("no link today")]
    result = publisher.publish([batch(T1), batch(T2)])
    assert result.ok and result.observatory_urls == []
    assert client.ops("link") == [("session-1", [T1, T2], [])]  # asked once: a failed early link is not asked again
    assert [p.observatory_url for p in result.profiles] == [None, None]
    assert messages(caplog)[0] == (
        logging.WARNING,
        f"songbird: could not get an observatory link for [{T1}, {T2}]: no link today",
    )


def test_a_link_error_that_is_not_songbirds_propagates(make, puts):
    publisher, client = make(FakeClient(puts, slot_links=False))
    client.errors["link:"] = [RuntimeError("bug")]
    with pytest.raises(RuntimeError, match="^bug$"):
        publisher.publish([batch(T1)])


def test_a_chunk_with_a_failed_profile_gets_its_link_from_what_landed(make, puts):
    publisher, client = make(FakeClient(puts, slot_links=False))
    client.errors[f"put:b{T2}"] = [AuthError("refused", status=403, operation="upload_profile")]
    result = publisher.publish([batch(T1), batch(T2), batch(T3), batch(T4)])
    assert sorted(client.ops("link")) == [("session-1", [T1, T3, T4], []), ("session-1", [T4], [])]
    assert result.observatory_urls == [f"https://obs.test/session-1/link/{T1}+{T3}+{T4}"]
    assert [p.observatory_url for p in result.profiles] == [
        f"https://obs.test/session-1/one/{T1}",
        None,
        f"https://obs.test/session-1/one/{T3}",
        f"https://obs.test/session-1/one/{T4}",
    ]


def test_chunks_that_changed_get_their_links_at_the_end_on_the_threads(make, puts):
    publisher, client = make(FakeClient(puts, slot_links=False))
    stamps = [T1 + n * 1000 for n in range(6)]
    client.errors[f"put:b{stamps[1]}"] = [AuthError("refused", status=403, operation="upload_profile")]
    threads = []
    real = client.get_session_profile_observatory_link

    def link(*args):
        threads.append(threading.current_thread().name)
        return real(*args)

    client.get_session_profile_observatory_link = link
    result = publisher.publish([batch(t) for t in stamps])
    one, two, three, four, five, six = stamps
    assert sorted(client.ops("link")) == [
        ("session-1", [one, three, four], []),
        ("session-1", [four, five, six], []),
        ("session-1", [five, six], []),
    ]
    assert result.observatory_urls == [
        f"https://obs.test/session-1/link/{one}+{three}+{four}",
        f"https://obs.test/session-1/link/{five}+{six}",
    ]
    assert len(threads) == 3 and all(name.startswith("songbird_") for name in threads)


# -- reference profiles --------------------------------------------------------------------------


def test_one_reference_gets_its_own_slot_call(make, puts, config_dir):
    publisher, client = make()
    result = publisher.publish([ref("train", T2)])
    assert client.ops("reference") == [("session-1", "train", T2)] and client.ops("references") == []
    assert puts.bodies() == {"r-train": b"reference train"}
    [profile] = result.profiles
    assert (profile.kind, profile.alias, profile.profile_id, profile.ok) == ("reference", "train", "r-train", True)
    assert result.observatory_urls == ["https://obs.test/r-train"]
    assert stored_sessions(config_dir)["sessions"][ENDPOINT]["references"] == {"train": "r-train"}


def test_many_references_share_one_slot_call_and_are_remembered(make, puts, config_dir):
    publisher, client = make(FakeClient(puts, slot_links=False))
    result = publisher.publish([ref("a", T1), batch(T3), ref("b", T2), ref("c"), ref("d")])
    assert client.ops("references") == [("session-1", [("a", T1), ("b", T2), ("c", T1), ("d", T1)])]
    assert client.ops("reference") == [] and client.ops("slot") == [("session-1", T3, [])]
    assert puts.bodies() == {
        "r-a": b"reference a",
        "r-b": b"reference b",
        "r-c": b"reference c",
        "r-d": b"reference d",
        f"b{T3}": f"batch {T3}".encode(),
    }
    assert [(p.kind, p.profile_id) for p in result.profiles] == [
        ("reference", "r-a"),
        ("batch", f"b{T3}"),
        ("reference", "r-b"),
        ("reference", "r-c"),
        ("reference", "r-d"),
    ]
    assert sorted(client.ops("link")) == [("session-1", [], ["r-c", "r-d"]), ("session-1", [T3], ["r-a", "r-b"])]
    assert result.observatory_urls == [
        f"https://obs.test/session-1/link/{T3}+r-a+r-b",
        "https://obs.test/session-1/link/r-c+r-d",
    ]
    assert [p.observatory_url for p in result.profiles] == [
        "https://obs.test/session-1/one/r-a",
        f"https://obs.test/session-1/one/{T3}",
        "https://obs.test/session-1/one/r-b",
        "https://obs.test/session-1/one/r-c",
        "https://obs.test/session-1/one/r-d",
    ]
    stored = stored_sessions(config_dir)["sessions"][ENDPOINT]
    assert stored["references"] == {"a": "r-a", "b": "r-b", "c": "r-c", "d": "r-d"}


def test_the_reference_slot_call_renews_an_unknown_session(make, puts):
    publisher, client = make()
    gone = api_error(SessionNotFoundError, "gone", 404, "batch_create_reference_profile_upload")
    client.errors["references:"] = [gone]
    result = publisher.publish([ref("a"), ref("b")])
    assert [c[0] for c in client.ops("references")] == ["session-1", "session-2"]
    assert [p.session_id for p in result.profiles] == ["session-2", "session-2"] and result.ok


def test_a_failed_reference_slot_call_fails_every_reference(make, puts):
    publisher, client = make(outbox=False)
    down = SongbirdConnectionError("server down")
    client.errors["references:"] = [down]
    result = publisher.publish([ref("a"), ref("b"), batch(T1)])
    assert [(p.ok, p.error, p.exception) for p in result.profiles[:2]] == [(False, "server down", down)] * 2
    assert result.profiles[2].ok and set(puts.bodies()) == {f"b{T1}"}


def test_a_reference_that_does_not_serialize_fails_alone(make, puts, config_dir):
    publisher, client = make()
    result = publisher.publish([ref("a"), ref("b", error=ValueError("bad view")), ref("c")])
    assert [(p.alias, p.ok, p.error) for p in result.profiles] == [
        ("a", True, None),
        ("b", False, "ValueError: bad view"),
        ("c", True, None),
    ]
    assert set(puts.bodies()) == {"r-a", "r-c"}
    assert stored_sessions(config_dir)["sessions"][ENDPOINT]["references"] == {"a": "r-a", "c": "r-c"}
    assert Outbox(config_dir / "outbox").entries() == []  # a refused profile is not kept


def test_references_of_a_pinned_session_are_not_remembered(make, puts, config_dir):
    publisher, client = make(session_id="pinned-1")
    result = publisher.publish([ref("a")])
    assert client.ops("reference") == [("pinned-1", "a", T1)] and result.ok
    assert not (config_dir / "sessions.json").exists()


@pytest.mark.parametrize("error", [OSError("read-only"), SongbirdError("read-only")])
def test_a_reference_id_that_cannot_be_remembered_is_only_logged(make, puts, caplog, monkeypatch, error):
    caplog.set_level(logging.DEBUG, "whylogs_songbird.publish")
    publisher, client = make()
    calls = []

    def remember(*args):
        calls.append(args)
        raise error

    monkeypatch.setattr(publisher.session.store, "remember_references", remember)
    result = publisher.publish([ref("a"), batch(T1), ref("b")])
    assert result.ok and calls == [(ENDPOINT, "session-1", {"a": "r-a", "b": "r-b"})]
    assert (logging.DEBUG, "songbird: could not remember reference ids: read-only") in messages(caplog)


# -- the outbox handoff --------------------------------------------------------------------------


def test_a_profile_that_finally_failed_on_a_retryable_error_goes_to_the_outbox(make, puts, config_dir, caplog):
    caplog.set_level(logging.DEBUG, "whylogs_songbird.publish")
    publisher, client = make(session_id="pinned-1")
    client.errors[f"slot:b{T1}-citya"] = [SongbirdConnectionError("connection refused")]
    client.errors[f"put:b{T2}"] = [api_error(status=503)]
    result = publisher.publish([batch(T3), batch(T1, b"one", tags=[("city", "a")]), batch(T2, b"two")])
    outbox_dir = config_dir / "outbox"
    entries = {e.dataset_timestamp: e for e in Outbox(outbox_dir).entries()}
    assert set(entries) == {T1, T2}
    first, second = entries[T1], entries[T2]
    assert (first.endpoint, first.kind, first.alias, first.segment_tags) == (ENDPOINT, "batch", None, [["city", "a"]])
    assert (first.error, first.pinned_session_id, first.size) == ("connection refused", "pinned-1", 3)
    assert (first.session_id, first.upload_id, first.upload_url) == (None, None, None)
    assert (second.session_id, second.upload_id) == ("pinned-1", f"b{T2}")
    assert second.upload_url == f"{puts.url}/v0/uploads/b{T2}?signature=s" and second.error == "boom"
    assert Outbox(outbox_dir).read_bytes(first) == b"one" and Outbox(outbox_dir).read_bytes(second) == b"two"
    three, one, two = result.profiles
    assert (one.outbox_entry, two.outbox_entry, three.outbox_entry) == (first.id, second.id, None)
    assert one.error == (
        f"connection refused It was saved to the outbox ({outbox_dir}, entry {first.id}): "
        "run `songbird outbox flush` to deliver it when the server is back."
    )
    assert two.error == (
        f"boom It was saved to the outbox ({outbox_dir}, entry {second.id}): "
        "run `songbird outbox flush` to deliver it when the server is back."
    )
    assert (
        logging.DEBUG,
        f"songbird: batch 2023-11-14 22:13:20Z [city=a] kept in the outbox as {first.id}",
    ) in messages(caplog)


def test_a_reference_is_kept_with_its_alias(make, puts, config_dir):
    publisher, client = make()
    client.errors["put:r-train"] = [api_error(status=429)]
    result = publisher.publish([ref("train", T2)])
    [entry] = Outbox(config_dir / "outbox").entries()
    assert (entry.kind, entry.alias, entry.dataset_timestamp, entry.pinned_session_id) == (
        "reference",
        "train",
        T2,
        None,
    )
    assert (entry.session_id, entry.upload_id) == ("session-1", "r-train")
    assert result.profiles[0].outbox_entry == entry.id


@pytest.mark.parametrize(
    "error",
    [
        AuthError("refused", status=403, operation="upload_profile"),
        SongbirdApiError("bad request", status=400, operation="upload_profile"),
        RuntimeError("bug"),
    ],
)
def test_a_profile_refused_for_good_is_not_kept(make, puts, config_dir, error):
    publisher, client = make()
    client.errors[f"put:b{T1}"] = [error]
    result = publisher.publish([batch(T1)])
    assert Outbox(config_dir / "outbox").entries() == [] and result.profiles[0].outbox_entry is None
    assert result.profiles[0].error in ("refused", "bad request", "RuntimeError: bug")


def test_without_an_outbox_nothing_is_kept(make, puts, config_dir):
    publisher, client = make(outbox=False)
    client.errors[f"put:b{T1}"] = [SongbirdConnectionError("down")]
    result = publisher.publish([batch(T1)])
    assert not (config_dir / "outbox").exists() and result.profiles[0].error == "down"


def test_an_outbox_that_cannot_be_written_is_said_in_the_error(make, puts, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    publisher, client = make(outbox_dir=str(blocker))
    client.errors[f"put:b{T1}"] = [SongbirdConnectionError("down")]
    result = publisher.publish([batch(T1)])
    assert result.profiles[0].error == (
        f"down (and it could not be saved to the outbox {blocker}: [Errno 17] File exists: '{blocker}')"
    )
    assert result.profiles[0].outbox_entry is None


# -- one publisher per process and settings ------------------------------------------------------


def test_the_shared_publisher_is_one_per_settings_and_keeps_at_most_32(fresh_shared, config_dir):
    base = {"endpoint": ENDPOINT, "config_dir": str(config_dir)}
    first = resolve_settings({**base, "max_workers": 1})
    publisher = P.shared_publisher(first)
    assert P.shared_publisher(first) is publisher and publisher.settings is first
    for workers in range(2, 33):
        P.shared_publisher(resolve_settings({**base, "max_workers": workers}))
    assert len(P._SHARED) == 32 and P._SHARED[first] is publisher
    P.shared_publisher(resolve_settings({**base, "max_workers": 33}))
    assert len(P._SHARED) == 32 and first not in P._SHARED
    assert [s.max_workers for s in P._SHARED] == list(range(2, 34))
    assert P.shared_publisher(first) is not publisher


def test_a_forked_process_builds_its_own_shared_publishers(fresh_shared, config_dir, monkeypatch):
    settings = resolve_settings({"endpoint": ENDPOINT, "config_dir": str(config_dir)})
    parents = P.shared_publisher(settings)
    lock = P._SHARED_LOCK
    monkeypatch.setattr(P, "_SHARED_PID", -1)
    mine = P.shared_publisher(settings)
    assert mine is not parents and {settings: mine} == P._SHARED
    assert os.getpid() == P._SHARED_PID and P._SHARED_LOCK is not lock
    assert P.shared_publisher(settings) is mine


# -- publish() and publish_references() ----------------------------------------------------------


@pytest.fixture(scope="module")
def profile():
    return why.log(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))


def test_publish_sends_the_profile_with_the_options(fresh_shared, config_dir, profile, puts):
    result = P.publish(profile, dataset_timestamp=T2, endpoint=ENDPOINT, config_dir=str(config_dir), max_workers=3)
    [(endpoint, settings, client)] = fresh_shared
    assert endpoint is None and settings.max_workers == 3 and settings.config_dir == config_dir
    assert client.ops("slot") == [("session-1", T2, [])] and result.ok
    assert puts.bodies()[f"b{T2}"][:4] == b"WHY1"
    named = P.publish(
        profile, reference_profile_name="train", dataset_timestamp=T1, endpoint=ENDPOINT, config_dir=str(config_dir)
    )
    client = fresh_shared[-1][2]
    assert client.ops("reference") == [("session-1", "train", T1)] and named.profiles[0].alias == "train"


def test_publish_raises_with_the_result_when_a_profile_failed(fresh_shared, config_dir, profile, puts, monkeypatch):
    real = P.Publisher.publish

    def failing(self, items):
        self.client.errors[f"put:b{T1}"] = [AuthError("refused", status=403, operation="upload_profile")]
        return real(self, items)

    monkeypatch.setattr(P.Publisher, "publish", failing)
    with pytest.raises(PublishError) as raised:
        P.publish(profile, dataset_timestamp=T1, endpoint=ENDPOINT, config_dir=str(config_dir))
    assert str(raised.value) == (
        f"0 of 1 profiles published to {ENDPOINT}; 1 failed (batch 2023-11-14 22:13:20Z: refused)"
    )
    assert raised.value.result.profiles[0].error == "refused"


VALID_NAMES = (
    "api_key, backoff, config_dir, dataset_id, dataset_timestamp, endpoint, local_data_dir, local_port, max_retries, "
    "max_workers, org_id, outbox, outbox_dir, reference_profile_name, session_id, timeout"
)


def test_publish_refuses_an_unknown_option_naming_every_valid_one(fresh_shared, profile):
    with pytest.raises(ConfigError) as raised:
        P.publish(profile, reference_name="train")
    assert str(raised.value) == (
        f"Unknown songbird option 'reference_name'; did you mean 'reference_profile_name'? Valid names: {VALID_NAMES}."
    )
    with pytest.raises(ConfigError) as raised:
        P.publish(profile, zzz=1, aaa=2)
    assert str(raised.value) == f"Unknown songbird options 'aaa', 'zzz'. Valid names: {VALID_NAMES}."
    assert fresh_shared == []


def test_publish_references_takes_a_dict_or_pairs(fresh_shared, config_dir, profile, puts):
    options = {"endpoint": ENDPOINT, "config_dir": str(config_dir)}
    result = P.publish_references({"a": profile, "b": profile}, **options)
    [(_, settings, client)] = fresh_shared
    assert settings.config_dir == config_dir and result.ok
    assert [[alias for alias, _ in c[1]] for c in client.ops("references")] == [["a", "b"]]
    P.publish_references([("c", profile)], **options)
    assert client.ops("reference")[0][:2] == ("session-1", "c")


def test_publish_references_refuses_none_and_raises_on_a_failure(fresh_shared, config_dir, profile, puts, monkeypatch):
    for empty in ({}, []):
        with pytest.raises(PublishError) as raised:
            P.publish_references(empty)
        assert str(raised.value) == "publish_references got no references: pass a dict of {name: profile}."
        assert raised.value.result is None
    real = P.Publisher.publish

    def failing(self, items):
        self.client.errors["references:"] = [AuthError("no", status=403, operation="x")]
        return real(self, items)

    monkeypatch.setattr(P.Publisher, "publish", failing)
    with pytest.raises(PublishError) as raised:
        P.publish_references({"a": profile, "b": profile}, endpoint=ENDPOINT, config_dir=str(config_dir))
    assert str(raised.value) == f"0 of 2 profiles published to {ENDPOINT}; 2 failed (a: no)"


# -- comparison links ----------------------------------------------------------------------------


def landed_batch(ts: int, session_id: str | None = "session-1") -> PublishedProfile:
    return PublishedProfile(kind="batch", dataset_timestamp=ts, ok=True, session_id=session_id)


def landed_reference(alias: str, profile_id: str | None) -> PublishedProfile:
    return PublishedProfile(
        kind="reference", dataset_timestamp=T1, alias=alias, ok=True, profile_id=profile_id, session_id="s"
    )


def comparison_client(fresh_shared) -> FakeClient:
    [(_, _, client)] = fresh_shared
    return client


def test_comparison_links_pair_the_reference_with_two_batches_at_a_time(fresh_shared, config_dir):
    options = {"endpoint": ENDPOINT, "config_dir": str(config_dir), "session_id": None}
    profiles = [
        landed_reference("other", "r-other"),
        landed_reference("train", "r-train"),
        landed_batch(T1),
        landed_batch(T2, "session-9"),
        landed_batch(T1),
        landed_batch(T3),
    ]
    failed = PublishedProfile(kind="batch", dataset_timestamp=T4, session_id="session-1")
    result = PublishResult(endpoint=ENDPOINT, profiles=[*profiles, failed])
    links = P.comparison_links(result, "train", **options)
    client = comparison_client(fresh_shared)
    assert client.ops("link") == [("session-1", [T1, T2], ["r-train"]), ("session-1", [T3], ["r-train"])]
    assert links == [
        f"https://obs.test/session-1/link/{T1}+{T2}+r-train",
        f"https://obs.test/session-1/link/{T3}+r-train",
    ]
    assert P.comparison_links(profiles, "train", **options) == links


def test_comparison_links_of_timestamps_use_the_stored_session_and_reference(fresh_shared, config_dir):
    store = SessionStore.for_directory(config_dir)
    store.set(ENDPOINT, "stored-1")
    store.remember_references(ENDPOINT, "stored-1", {"train": "r-stored"})
    links = P.comparison_links([T1, T2, T3, T1], "train", endpoint=ENDPOINT, config_dir=str(config_dir))
    client = comparison_client(fresh_shared)
    assert client.ops("link") == [("stored-1", [T1, T2], ["r-stored"]), ("stored-1", [T3], ["r-stored"])]
    assert len(links) == 2
    # a pinned session wins over the stored one; a reference without an id is looked up
    store.remember_references(ENDPOINT, "stored-1", {"train": "r-stored"})
    P.comparison_links([landed_reference("train", None), T4], "train", endpoint=ENDPOINT, config_dir=str(config_dir))
    assert client.ops("link")[-1] == ("stored-1", [T4], ["r-stored"])


def test_comparison_links_in_a_pinned_session(fresh_shared, config_dir):
    with pytest.raises(ConfigError) as raised:
        P.comparison_links([T1], "train", endpoint=ENDPOINT, config_dir=str(config_dir), session_id="pinned-1")
    assert str(raised.value) == (
        "No reference named 'train' was published into session pinned-1 from this machine: "
        "publish it first, e.g. publish(why.log(df), reference_profile_name='train')."
    )
    links = P.comparison_links(
        [landed_reference("train", "r-1"), T1],
        "train",
        endpoint=ENDPOINT,
        config_dir=str(config_dir),
        session_id="pinned-1",
    )
    assert comparison_client(fresh_shared).ops("link") == [("pinned-1", [T1], ["r-1"])]
    assert links == [f"https://obs.test/pinned-1/link/{T1}+r-1"]


def test_comparison_links_refuse_what_they_cannot_compare(fresh_shared, config_dir):
    options = {"endpoint": ENDPOINT, "config_dir": str(config_dir)}
    with pytest.raises(ConfigError) as raised:
        P.comparison_links([T1], "", **options)
    assert str(raised.value) == "A reference profile name must be a non-empty string."
    for odd in (True, "1700000000000", 1.5):
        with pytest.raises(ConfigError) as raised:
            P.comparison_links([T1, odd], "train", **options)
        assert str(raised.value) == f"comparison_links takes published profiles or epoch-ms timestamps, not {odd!r}."
    with pytest.raises(ConfigError) as raised:
        P.comparison_links([T1], "train", **options)
    assert str(raised.value) == f"There is no stored guest session for {ENDPOINT}: publish the batches first."
    with pytest.raises(ConfigError) as raised:
        P.comparison_links([landed_reference("train", "r-1"), landed_batch(T1, None)], "train", **options)
    assert str(raised.value) == f"There is no stored guest session for {ENDPOINT}: publish the batches first."
    with pytest.raises(ConfigError) as raised:
        P.comparison_links([landed_reference("train", "r-1"), landed_batch(T1, "s")], "test", **options)
    assert str(raised.value).startswith("No reference named 'test' was published into session s from this machine")
    with pytest.raises(ConfigError) as raised:
        P.comparison_links([landed_reference("train", "r-1")], "train", session_id="s", **options)
    assert str(raised.value) == "comparison_links got no batch profiles to compare with the reference."
    assert [client.ops("link") for _, _, client in fresh_shared] == [[], []]


# -- delivering the outbox -----------------------------------------------------------------------


@pytest.fixture
def outbox(tmp_path) -> Outbox:
    return Outbox(tmp_path / "deep" / "outbox")


def keep(outbox: Outbox, endpoint: str = ENDPOINT, data: bytes = b"kept", **extra):
    options = {"kind": "batch", "dataset_timestamp": T1, "alias": None, "segment_tags": ()}
    options.update(extra)
    return outbox.save(endpoint=endpoint, data=data, error="down", **options)


def flush(outbox: Outbox, config_dir: Path, **kwargs):
    return P.flush_outbox(outbox, resolve_settings({"config_dir": str(config_dir)}), **kwargs)


@pytest.fixture
def clock(monkeypatch):
    """Stops the clock (after the entries were saved: the outbox orders them by their time)."""
    return lambda: monkeypatch.setattr(D.time, "time", lambda: 1_700_000_500.5)


def test_flush_on_an_empty_outbox_makes_its_directory_and_does_nothing(fresh_shared, outbox, config_dir):
    report = flush(outbox, config_dir)
    assert outbox.directory.is_dir() and report.delivered == [] and report.failed == [] and fresh_shared == []


def test_flush_asks_for_a_slot_records_it_then_puts(fresh_shared, outbox, config_dir, puts, clock):
    entry = keep(outbox, data=b"batch bytes", segment_tags=(SegmentTag(key="city", value="a"),))
    reference = keep(outbox, data=b"ref bytes", kind="reference", alias="train", dataset_timestamp=T2)
    clock()
    report = flush(outbox, config_dir)
    [(endpoint, settings, client)] = fresh_shared
    assert endpoint == ENDPOINT and settings.config_dir == config_dir and client.closed
    assert client.ops("slot") == [("session-1", T1, [("city", "a")])]
    assert client.ops("reference") == [("session-1", "train", T2)]
    assert puts.bodies() == {f"b{T1}-citya": b"batch bytes", "r-train": b"ref bytes"}
    assert [e.id for e in report.delivered] == [entry.id, reference.id] and report.failed == []
    first = report.delivered[0]
    assert (first.session_id, first.upload_id, first.attempts, first.last_attempt_at) == (
        "session-1",
        f"b{T1}-citya",
        1,
        1_700_000_500.5,
    )
    assert first.upload_url == f"{puts.url}/v0/uploads/b{T1}-citya?signature=s"
    assert first.observatory_url == f"https://obs.test/b{T1}-citya"
    assert outbox.entries() == [] and sorted(p.name for p in outbox.directory.iterdir()) == [".flush.lock"]
    assert stored_sessions(config_dir)["sessions"][ENDPOINT]["sessionId"] == "session-1"


def test_flush_puts_to_a_recorded_slot_without_asking_again(fresh_shared, outbox, config_dir, puts):
    keep(outbox, slot=("session-7", "old-1", f"{puts.url}/v0/uploads/old-1?signature=s"))
    report = flush(outbox, config_dir)
    client = fresh_shared[0][2]
    assert client.calls == [("put", "old-1")] and puts.bodies() == {"old-1": b"kept"} and report.ok


@pytest.fixture
def expiring(monkeypatch):
    """The first PUT to a slot called old-* is refused as expired."""
    real = FakeClient.upload_profile

    def upload(self, url, data):
        if "/old-" in url:
            self._record("put", "old")
            raise AuthError("expired", status=403, operation="upload_profile")
        return real(self, url, data)

    monkeypatch.setattr(FakeClient, "upload_profile", upload)


def test_expired_slot_then_new_slot(fresh_shared, outbox, config_dir, puts, expiring, caplog):
    caplog.set_level(logging.WARNING, "whylogs_songbird.outbox")
    keep(outbox, kind="reference", alias="train", slot=("session-7", "old-1", f"{puts.url}/v0/uploads/old-1?s=1"))
    report = flush(outbox, config_dir)
    client = fresh_shared[0][2]
    assert [c[0] for c in client.calls] == ["put", "session", "reference", "put"] and report.ok
    assert puts.bodies() == {"r-train": b"kept"}
    assert messages(caplog, "whylogs_songbird.outbox.delivery") == [
        (logging.WARNING, "outbox: upload URL of train expired; requesting a new one")
    ]


def test_an_entry_not_delivered_keeps_its_new_slot_and_its_error(fresh_shared, outbox, config_dir, puts, clock, caplog):
    caplog.set_level(logging.WARNING, "whylogs_songbird.outbox")
    entry = keep(outbox)
    later = keep(outbox, dataset_timestamp=T2)
    clock()
    real = FakeClient.upload_profile

    def upload(self, url, data):
        if f"b{T1}" in url:
            raise SongbirdConnectionError("still down")
        return real(self, url, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FakeClient, "upload_profile", upload)
        report = flush(outbox, config_dir)
    assert [(e.id, why_not) for e, why_not in report.failed] == [(entry.id, "still down")] and not report.ok
    assert [e.id for e in report.delivered] == [later.id]
    [waiting] = outbox.entries()
    assert (waiting.id, waiting.error, waiting.attempts, waiting.last_attempt_at) == (
        entry.id,
        "still down",
        1,
        1_700_000_500.5,
    )
    assert (waiting.session_id, waiting.upload_id) == ("session-1", f"b{T1}")
    assert waiting.upload_url == f"{puts.url}/v0/uploads/b{T1}?signature=s"
    assert messages(caplog, "whylogs_songbird.outbox.delivery") == [
        (logging.WARNING, "outbox: batch 2023-11-14 22:13:20Z not delivered yet: still down")
    ]
    # the next flush PUTs to the recorded slot
    report = flush(outbox, config_dir)
    assert report.ok and [e.attempts for e in report.delivered] == [2]
    assert fresh_shared[-1][2].calls == [("put", f"b{T1}")]


def test_flush_only_for_one_endpoint_and_one_client_per_endpoint_and_pinned_session(
    fresh_shared, outbox, config_dir, puts
):
    here = [keep(outbox, dataset_timestamp=t) for t in (T1, T2)]
    pinned = keep(outbox, dataset_timestamp=T3, pinned_session_id="pinned-1")
    there = keep(outbox, OTHER, dataset_timestamp=T4)
    report = flush(outbox, config_dir, only_for=ENDPOINT)
    assert [e.id for e in report.delivered] == [here[0].id, here[1].id, pinned.id]
    assert [e.id for e in outbox.entries()] == [there.id]
    assert [(endpoint, client.endpoint) for endpoint, _, client in fresh_shared] == [
        (ENDPOINT, ENDPOINT),
        (ENDPOINT, ENDPOINT),
    ]
    shared, pinned_client = fresh_shared[0][2], fresh_shared[1][2]
    assert shared.ops("slot") == [("session-1", T1, []), ("session-1", T2, [])]
    assert pinned_client.ops("slot") == [("pinned-1", T3, [])] and pinned_client.ops("session") == []
    assert shared.closed and pinned_client.closed
    report = flush(outbox, config_dir)
    assert [e.id for e in report.delivered] == [there.id] and fresh_shared[-1][0] == OTHER


def test_retarget_sends_entries_to_another_endpoint_in_its_session(fresh_shared, outbox, config_dir, puts):
    moved = keep(
        outbox, OTHER, pinned_session_id="pinned-1", slot=("pinned-1", "old-1", f"{puts.url}/v0/uploads/old-1?s=1")
    )
    moved.observatory_url = "https://obs.test/old"
    outbox.write(moved)
    staying = keep(
        outbox, ENDPOINT, dataset_timestamp=T2, slot=("session-5", "kept-1", f"{puts.url}/v0/uploads/kept-1?s=1")
    )
    seen = []
    real = D._deliver

    def deliver(box, entry, session):
        seen.append(
            (
                entry.endpoint,
                entry.pinned_session_id,
                entry.session_id,
                entry.upload_id,
                entry.upload_url,
                entry.observatory_url,
            )
        )
        seen.append(json.loads((box.directory / f"{entry.id}.json").read_text())["endpoint"])
        return real(box, entry, session)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(D, "_deliver", deliver)
        report = flush(outbox, config_dir, retarget=ENDPOINT)
    assert seen == [
        (ENDPOINT, None, None, None, None, None),
        ENDPOINT,
        (ENDPOINT, None, "session-5", "kept-1", f"{puts.url}/v0/uploads/kept-1?s=1", None),
        ENDPOINT,
    ]
    assert report.ok and [e.id for e in report.delivered] == [moved.id, staying.id]
    [(endpoint, _, client)] = fresh_shared
    assert endpoint == ENDPOINT
    assert client.calls[1:] == [("slot", "session-1", T1, []), ("put", f"b{T1}"), ("put", "kept-1")]


def test_flush_waits_for_another_flush_as_long_as_it_is_told(fresh_shared, outbox, config_dir, monkeypatch):
    waited = []
    real = outbox.flush_lock

    def flush_lock(timeout):
        waited.append(timeout)
        return real(timeout)

    monkeypatch.setattr(outbox, "flush_lock", flush_lock)
    flush(outbox, config_dir)
    flush(outbox, config_dir, lock_timeout=2.5)
    assert waited == [0, 2.5]


def test_an_unexpected_error_stops_the_flush_and_closes_the_clients(
    fresh_shared, outbox, config_dir, puts, monkeypatch
):
    keep(outbox)
    monkeypatch.setattr(
        FakeClient, "upload_profile", lambda self, url, data: (_ for _ in ()).throw(RuntimeError("bug"))
    )
    with pytest.raises(RuntimeError, match="^bug$"):
        flush(outbox, config_dir)
    assert fresh_shared[0][2].closed and len(outbox.entries()) == 1


def test_request_slot_asks_for_the_kind_of_profile_it_is_told(make, puts):
    publisher, client = make()
    tags = [SegmentTag(key="k", value="v")]
    session_id, slot = P.request_slot(publisher.session, "batch", T1, segment_tags=tags, alias="ignored")
    assert (session_id, slot.id) == ("session-1", f"b{T1}-kv")
    session_id, slot = P.request_slot(publisher.session, "reference", T2, segment_tags=tags, alias="train")
    assert (session_id, slot.id) == ("session-1", "r-train")
    assert client.ops("slot") == [("session-1", T1, [("k", "v")])]
    assert client.ops("reference") == [("session-1", "train", T2)]


def test_what_batches_name_without_a_batch_profile_or_the_reference_is_none():
    from whylogs_songbird.links import batches_to_compare

    assert batches_to_compare([T1, T2], "train") == (None, [T1, T2], None)
    assert batches_to_compare([landed_reference("other", "r-1"), T1], "train") == (None, [T1], None)
    assert batches_to_compare([landed_reference("train", "r-1"), landed_batch(T2, "s-2")], "train") == (
        "s-2",
        [T2],
        "r-1",
    )
    assert batches_to_compare(PublishResult(endpoint=ENDPOINT, profiles=[]), "train") == (None, [], None)


def test_a_dataset_s_comparison_links_are_its_own_whatever_session_the_batches_name(tmp_path):
    from whylogs_songbird.links import comparison_links_in
    from whylogs_songbird.session import DatasetTarget

    asked: list[tuple[str, str, list[int], list[str]]] = []

    class DatasetClient:
        endpoint = ENDPOINT

        def get_dataset_observatory_link(self, org: str, dataset: str, stamps: list[int], refs: list[str]):
            asked.append((org, dataset, stamps, refs))
            return SimpleNamespace(observatory_url=f"https://obs.test/{org}/{dataset}/{'+'.join(map(str, stamps))}")

    store = SessionStore.for_directory(tmp_path)
    store.set(ENDPOINT, "org-1/model-1")  # what a dataset's publish stores: its references are remembered by it
    store.remember_references(ENDPOINT, "org-1/model-1", {"train": "r-dataset"})
    target = DatasetTarget(DatasetClient(), store, "org-1", "model-1")  # type: ignore[arg-type]
    links = comparison_links_in(target, [T1, T2, T1], "train", session_id="session-9", pinned_session_id="pinned-1")
    assert links == [f"https://obs.test/org-1/model-1/{T1}+{T2}"]
    assert asked == [("org-1", "model-1", [T1, T2], ["r-dataset"])]


# -- dataset mode ----------------------------------------------------------------------------------


class DatasetClient(FakeClient):
    """The log API calls a dataset-mode publish makes, answered as FakeClient answers a session's."""

    def log_reference(self, org_id, dataset_id, alias=None, dataset_timestamp=None):
        self._record("log_reference", org_id, dataset_id, alias, dataset_timestamp)
        self._script(f"reference:{alias}")
        return SimpleNamespace(id=f"r-{alias}", upload_url=f"{self.puts.url}/v0/uploads/r-{alias}?signature=s")

    def get_dataset_observatory_link(self, org_id, dataset_id, batch_profile_timestamps, reference_profile_ids):
        return self.get_session_profile_observatory_link(
            f"{org_id}/{dataset_id}", batch_profile_timestamps, reference_profile_ids
        )

    def create_reference_profile(self, org_id, dataset_id, alias, dataset_timestamp, segments):
        tags = [[(t.key, t.value) for t in segment] for segment in segments]
        self._record("create_reference", org_id, dataset_id, alias, dataset_timestamp, tags)
        return SimpleNamespace(id=f"r-{alias}", upload_urls=[f"{self.puts.url}/v0/uploads/r-{alias}?signature=s"])

    def log_async(self, org_id, dataset_id, dataset_timestamp, segment_tags):
        self._record("log_async", org_id, dataset_id, dataset_timestamp, [(t.key, t.value) for t in segment_tags])
        return SimpleNamespace(
            id=f"b{dataset_timestamp}", upload_url=f"{self.puts.url}/v0/uploads/b{dataset_timestamp}?signature=s"
        )


def test_a_dataset_s_references_get_their_slots_one_by_one_and_a_failed_one_is_kept_with_its_dataset(
    make, puts, config_dir
):
    client = DatasetClient(puts)
    publisher, _ = make(client, dataset_id="model-1", org_id="org-1", api_key="key-1")
    client.errors["put:r-test"] = [api_error(status=503)]
    result = publisher.publish([ref("train", T1), batch(T2), ref("test", T3)])
    assert client.ops("log_reference") == [("org-1", "model-1", "train", T1), ("org-1", "model-1", "test", T3)]
    assert client.ops("log_async") == [("org-1", "model-1", T2, [])]
    assert client.ops("references") == client.ops("reference") == []
    train, one, test = result.profiles
    assert [(p.ok, p.session_id, p.profile_id) for p in (train, one, test)] == [
        (True, "org-1/model-1", "r-train"),
        (True, "org-1/model-1", f"b{T2}"),
        (False, "org-1/model-1", "r-test"),
    ]
    [entry] = Outbox(config_dir / "outbox").entries()
    assert (entry.kind, entry.alias, entry.org_id, entry.dataset_id) == ("reference", "test", "org-1", "model-1")
    assert (entry.session_id, entry.upload_id) == ("org-1/model-1", "r-test")


def test_a_dataset_s_segmented_references_are_made_with_their_segments(make, puts):
    client = DatasetClient(puts)
    publisher, _ = make(client, dataset_id="model-1", org_id="org-1", api_key="key-1")
    segmented = [
        ProfileItem(
            view=View(f"reference {city}".encode()),
            dataset_timestamp=T1,
            alias="train",
            segment_tags=(SegmentTag(key="city", value=city),),
        )
        for city in ("a", "b")
    ]
    result = publisher.publish(segmented)
    assert client.ops("create_reference") == [
        ("org-1", "model-1", "train", T1, [[("city", "a")]]),
        ("org-1", "model-1", "train", T1, [[("city", "b")]]),
    ]
    assert client.ops("log_reference") == [] and all(p.ok for p in result.profiles)


def test_a_failure_without_words_is_kept_with_an_empty_error(make, config_dir):
    publisher, client = make()
    client.errors[f"put:b{T1}"] = [SongbirdConnectionError("")]
    publisher.publish([batch(T1)])
    [entry] = Outbox(config_dir / "outbox").entries()
    assert (entry.error, entry.upload_id) == ("", f"b{T1}")
