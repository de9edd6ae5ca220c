"""Fault injection in the local server, and the writer under faults: nothing lost, nothing made up.

``ServerConfig(fault_rate=R, fault_seed=N)`` answers a seeded fraction R of API requests with a
500, 503, 429 or a dropped connection, decided before the route runs. The writer's reports must
then match the server's state exactly: every profile reported as landed is stored with the very
bytes that were written and its link opens; nothing reported as failed is stored; and no retry
ever created a second upload slot.
"""

import hashlib
import html
import importlib
import logging
import socket
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import make_profile_bytes
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column

from whylogs_songbird import PublishError, publish_references
from whylogs_songbird.server import ServerConfig
from whylogs_songbird.server.cli import main, parse_args
from whylogs_songbird.server.faults import FAULT_KINDS, FaultInjector
from whylogs_songbird.server.store import DB_FILE, OPERATIONS

TS = 1_700_000_000_000
TIMEOUT = 10
FAULT_STATUSES = {500, 503, 429}
FAKE_SESSION = "session-" + "A" * 24


# -- helpers ---------------------------------------------------------------------------------


def api_requests(session_id=FAKE_SESSION):
    """One request for each of the seven operations, and the presigned PUT."""
    return [
        ("POST", "/v0/sessions", {"userId": "u"}),
        ("GET", f"/v0/sessions/{session_id}", None),
        ("POST", f"/v0/sessions/{session_id}/upload", {"datasetTimestamp": TS, "segmentTags": []}),
        ("POST", f"/v0/sessions/{session_id}/reference", {"alias": "a"}),
        ("POST", f"/v0/sessions/{session_id}/references", {"references": [{"alias": "a"}]}),
        ("POST", f"/v0/sessions/observatory-link/{session_id}", {"batchProfileTimestamps": [TS]}),
        ("POST", f"/v0/sessions/{session_id}/claim?org_id=org-test", None),
        ("PUT", "/v0/uploads/log-" + "B" * 24 + "?expires=1&signature=00", b"bytes"),
    ]


def call(server, method, path, body=None):
    """Send one request without retries: the status, or "drop" when no answer came back."""
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    try:
        r = requests.request(method, server.url + path, timeout=TIMEOUT, **kwargs)
    except requests.ConnectionError:
        return "drop", None
    return r.status_code, r


def fault_counts(server):
    stats = requests.get(f"{server.url}/_local/stats", timeout=TIMEOUT).json()
    return {kind: stats.get(f"fault_{kind}", 0) for kind in FAULT_KINDS}


def slot_ids(server):
    """Every upload slot the server ever handed out (stored or not), read from its database."""
    with sqlite3.connect(f"file:{server.data_dir / DB_FILE}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM uploads")}


def stored_profiles(server):
    """Every stored profile of every session, by upload id."""
    return {
        record.id: record
        for session in server.store.recent_sessions(limit=10_000)
        for record in server.store.list_profiles(session.id)
    }


# -- the injector ----------------------------------------------------------------------------


def test_faults_are_off_by_default(server):
    assert ServerConfig().fault_rate == 0 and server.config.fault_rate == 0
    for _ in range(30):
        assert call(server, "POST", "/v0/sessions", {"userId": "u"})[0] == 200
    assert fault_counts(server) == dict.fromkeys(FAULT_KINDS, 0)


def test_fault_settings_are_checked_and_on_the_command_line(monkeypatch):
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)  # main() would set up the root logger
    args = parse_args(["--fault-rate", "0.3", "--fault-seed", "7"])
    assert (args.fault_rate, args.fault_seed) == (0.3, 7)
    assert parse_args([]).fault_rate == 0
    assert main(["--fault-rate", "1.5"]) == 2  # refused before anything starts
    for bad in ({"fault_rate": -0.1}, {"fault_rate": 2}, {"fault_rate": True}, {"fault_seed": "x"}):
        with pytest.raises(ValueError, match="fault_"):
            ServerConfig(**bad)
    with pytest.raises(ValueError, match="fault kinds"):
        FaultInjector(0.5, kinds=("teapot",))
    assert "fault_rate=0.3, fault_seed=7" in repr(ServerConfig(fault_rate=0.3, fault_seed=7))


def test_every_api_route_is_faulted_before_it_runs_and_nothing_else_is(server_factory):
    server = server_factory(fault_rate=1.0, fault_seed=3)
    outcomes = []
    for _ in range(3):
        for method, path, body in api_requests():
            status, r = call(server, method, path, body)
            outcomes.append(status)
            assert status in FAULT_STATUSES | {"drop"}, (method, path, status)
            if status == 429:
                assert r.headers["Retry-After"] in ("0", "1")
            if r is not None:
                assert "Injected fault" in r.json()["message"]
    stats = server.stats()
    assert all(stats[operation] == 0 for operation in OPERATIONS), "no route ran"
    assert sum(fault_counts(server).values()) == len(outcomes) == 24
    assert set(outcomes) == FAULT_STATUSES | {"drop"}
    # Never faulted: health, local extras, the OpenAPI document, the observatory pages and static files.
    for path in ("/healthz", "/_local/stats", "/openapi.json", "/docs", "/", "/static/observatory.css"):
        for _ in range(5):
            assert call(server, "GET", path)[0] == 200, path
    session_page = f"/resources/model-1/profiles?profile={TS}&sessionToken={FAKE_SESSION}"
    assert call(server, "GET", session_page)[0] == 404  # the page's own answer, not a fault
    assert sum(fault_counts(server).values()) == 24


def test_the_same_seed_gives_the_same_faults(server_factory):
    def outcomes(seed):
        server = server_factory(fault_rate=0.5, fault_seed=seed)
        return [call(server, "POST", "/v0/sessions", {"userId": "u"})[0] for _ in range(40)]

    first = outcomes(11)
    assert first == outcomes(11)
    assert first != outcomes(12)


def test_fault_rate_and_mix(server_factory):
    server = server_factory(fault_rate=0.3, fault_seed=5)
    outcomes = [call(server, "POST", "/v0/sessions", {"userId": "u"})[0] for _ in range(300)]
    faults = [o for o in outcomes if o != 200]
    assert 0.2 <= len(faults) / len(outcomes) <= 0.4
    counts = fault_counts(server)
    assert counts == {kind: faults.count(int(kind) if kind.isdigit() else kind) for kind in FAULT_KINDS}
    assert all(counts[kind] > 0 for kind in FAULT_KINDS)
    # A faulted create_session created nothing.
    assert len(server.store.recent_sessions(limit=1000)) == outcomes.count(200) == server.stats()["create_session"]


def _raw_request(port, head, body):
    """Send a raw HTTP request; return every byte the server sent back before closing."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(head + body)
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # closed with our bytes unread: a reset is a dropped connection too
    return received


def test_dropped_connection_sends_no_status_line(server_factory, caplog):
    caplog.set_level(logging.DEBUG)
    server = server_factory(request_hooks=[FaultInjector(1.0, seed=0, kinds=("drop",))])
    port = int(server.url.rsplit(":", 1)[1])
    small = b'{"userId": "u"}'
    big = make_profile_bytes(2000) * 4
    cases = [
        (b"POST /v0/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n", small),
        (b"PUT /v0/uploads/log-" + b"C" * 24 + b"?expires=1&signature=00 HTTP/1.1\r\nHost: 127.0.0.1\r\n", big),
        (b"GET /v0/sessions/" + FAKE_SESSION.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n", b""),
    ]
    for head, body in cases:
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        assert _raw_request(port, head, body) == b"", head
    assert fault_counts(server)["drop"] == 3
    # The server neither answered "500: no response" nor logged one, and still serves.
    assert not [r for r in caplog.records if "without starting response" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert requests.get(f"{server.url}/healthz", timeout=TIMEOUT).status_code == 200


def test_faulted_post_creates_no_slot_and_faulted_put_stores_nothing(server_factory):
    server = server_factory(fault_rate=0.5, fault_seed=21)
    session_id = None
    while session_id is None:
        status, r = call(server, "POST", "/v0/sessions", {"userId": "u"})
        session_id = r.json()["id"] if status == 200 else None
    handed_out = {}
    for i in range(40):
        status, r = call(server, "POST", f"/v0/sessions/{session_id}/upload", {"datasetTimestamp": TS + i})
        if status == 200:
            handed_out[r.json()["id"]] = r.json()["uploadUrl"]
        else:
            assert status in FAULT_STATUSES | {"drop"}
        assert slot_ids(server) == set(handed_out), f"after a {status}"
    data = make_profile_bytes()
    put_ok = set()
    for upload_id, url in handed_out.items():
        try:
            status = requests.put(url, data=data, timeout=TIMEOUT).status_code
        except requests.ConnectionError:
            status = "drop"
        if status == 200:
            put_ok.add(upload_id)
        assert server.store.get_upload(upload_id).stored == (status == 200), status
    assert 0 < len(put_ok) < len(handed_out)
    assert set(stored_profiles(server)) == put_ok
    assert list((server.data_dir / "tmp").iterdir()) == []


# -- the writer under faults -----------------------------------------------------------------


class Recorder:
    """Records the upload items each write made (so their exact bytes are known), per thread."""

    def __init__(self, monkeypatch):
        self.local = threading.local()
        for module_name, name in (("writer", "items_from"), ("publish", "reference_items")):
            module = importlib.import_module(f"whylogs_songbird.{module_name}")
            monkeypatch.setattr(module, name, self._recording(getattr(module, name)))

    def _recording(self, make_items):
        def wrapper(*args, **kwargs):
            self.local.items = make_items(*args, **kwargs)
            return self.local.items

        return wrapper

    def take(self):
        items, self.local.items = self.local.items, None
        return items


@pytest.fixture(scope="module")
def writables():
    frames = [
        pd.DataFrame({"x": [float(i + j) for j in range(6)], "n": list(range(i, i + 6)), "city": list("abcabc")})
        for i in range(10)
    ]
    plain = [why.log(df) for df in frames]
    segmented = [why.log(df, schema=DatasetSchema(segments=segment_on_column("city"))) for df in frames]
    return plain, segmented


def run_writes(server, tmp_path, monkeypatch, writables, n_writes, max_retries):
    """``n_writes`` mixed writes from 8 threads; returns [(kind, whylogs answer or None, result, items)]."""
    plain, segmented = writables
    recorder = Recorder(monkeypatch)
    opts = {
        "endpoint": server.url,
        "config_dir": str(tmp_path / "config"),
        "max_retries": max_retries,
        "backoff": 0.01,
        "outbox": False,
    }

    def write(i):
        stamp = {"dataset_timestamp": TS + i * 60_000}
        kind = ("batch", "batch", "segmented", "reference", "references")[i % 5]
        if kind == "references":
            pair = {f"pair{i}-a": plain[i % 10], f"pair{i}-b": plain[(i + 1) % 10]}
            try:
                result = publish_references(pair, **opts)
            except PublishError as exc:
                result = exc.result
            return kind, None, result, recorder.take()
        writable = segmented[i % 10] if kind == "segmented" else plain[i % 10]
        extra = {"reference_profile_name": f"ref{i}"} if kind == "reference" else stamp
        writer = writable.writer("songbird").option(**opts, **extra)
        answer = writer.write()
        return kind, answer, writer._writer.last_result, recorder.take()

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(write, range(n_writes)))


def check_reports_match_the_server(server, writes):
    """The writer's reports and the server's state agree exactly."""
    pairs = []
    for kind, answer, result, items in writes:
        assert result is not None and len(result.profiles) == len(items), kind
        if answer is not None:  # whylogs' answer agrees with the full result
            assert answer[0] is result.ok
            if len(items) > 1:
                assert [flag for flag, _ in answer[1]] == [p.ok for p in result.profiles]
        pairs.extend(zip(items, result.profiles))
    landed = [(item, p) for item, p in pairs if p.ok]
    failed = [(item, p) for item, p in pairs if not p.ok]
    stored = stored_profiles(server)

    # Exactly what was reported as landed is stored: the same set of ids ...
    assert set(stored) == {p.profile_id for _, p in landed}
    assert len(landed) == len(stored)
    # ... each with the very bytes that were written, where it was said to go ...
    for item, p in landed:
        record = stored[p.profile_id]
        data = item.serialize()
        assert record.sha256 == hashlib.sha256(data).hexdigest() and record.size == len(data) == p.size
        assert server.store.read_profile_bytes(record) == data
        assert record.session_id == p.session_id and record.kind == p.kind
        assert record.alias == p.alias if p.kind == "reference" else record.dataset_timestamp == p.dataset_timestamp
        assert record.segment_tags == tuple((t.key, t.value) for t in item.segment_tags)
    # ... and nothing reported as failed is stored, under its id or any other.
    for _, p in failed:
        assert p.error and p.profile_id not in stored
    # Retries never made a second slot: every slot handed out belongs to exactly one profile.
    assert slot_ids(server) == {p.profile_id for _, p in pairs if p.profile_id}
    assert server.stats()["put"] == len(landed), "one successful PUT per landed profile"

    # Every landed profile's link opens, and shows that profile.
    def opens(p):
        r = requests.get(p.observatory_url, timeout=30)
        return r.status_code == 200 and (p.kind != "reference" or html.escape(p.alias) in r.text)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(opens, [p for _, p in landed]))
    return landed, failed


def test_200_writes_at_30_percent_faults_land_exactly_as_reported(server_factory, tmp_path, monkeypatch, writables):
    server = server_factory(fault_rate=0.3, fault_seed=2024)
    writes = run_writes(server, tmp_path, monkeypatch, writables, n_writes=200, max_retries=8)
    landed, failed = check_reports_match_the_server(server, writes)
    assert len(landed) + len(failed) == 80 + 40 * 3 + 40 + 40 * 2
    assert len(landed) >= 0.95 * (len(landed) + len(failed)), [p.error for _, p in failed][:3]
    counts = fault_counts(server)
    assert all(counts[kind] > 0 for kind in FAULT_KINDS), counts
    assert sum(counts.values()) > 100, "the writes went through many faults"


def test_without_retries_failures_are_reported_and_none_is_stored(server_factory, tmp_path, monkeypatch, writables):
    server = server_factory(fault_rate=0.3, fault_seed=99)
    writes = run_writes(server, tmp_path, monkeypatch, writables, n_writes=60, max_retries=0)
    landed, failed = check_reports_match_the_server(server, writes)
    assert len(failed) >= 20 and len(landed) >= 20
    # Each failure says what went wrong, in words a user can act on.
    assert all(
        ("500" in p.error or "503" in p.error or "429" in p.error or "could not reach" in p.error) for _, p in failed
    ), {p.error for _, p in failed}
