"""Server security: signatures, secrets, ids, paths, sizes, binding, logs, and the wire rules."""

import asyncio
import hashlib
import hmac
import http.client
import logging
import os
import pickle
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import requests
import whylogs as why
from conftest import ANY_ORG_KEY, ORG_KEY, make_profile_bytes
from pydantic import ValidationError

from whylogs_songbird import SongbirdClient, publish_references
from whylogs_songbird.models import (
    HEALTH_TOKEN_FILE,
    HEALTH_TOKEN_HEADER,
    MAX_DATASET_TIMESTAMP,
    MAX_TIMESTAMP,
    MIN_DATASET_TIMESTAMP,
    MIN_TIMESTAMP,
    BatchLogReferenceRequest,
    GetProfileObservatoryLinkRequest,
    LogAsyncRequest,
    LogReferenceRequest,
)
from whylogs_songbird.server import LocalServer, ServerConfig
from whylogs_songbird.server.app import create_app
from whylogs_songbird.server.cli import parse_args
from whylogs_songbird.server.signing import UrlSigner, load_or_create_secret
from whylogs_songbird.server.store import DB_FILE
from whylogs_songbird.session import claim_session

TS = 1_700_000_000_000
TIMEOUT = 10


def new_session(server):
    return requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]


def new_slot(server, session_id):
    r = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def slot_count(server):
    with sqlite3.connect(f"file:{server.data_dir / DB_FILE}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM uploads").fetchone()[0]


def with_query(url, **changes):
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode({k: v for k, v in query.items() if v is not None})))


# -- upload signatures -------------------------------------------------------------------------


def test_forged_and_tampered_signatures_are_refused(server):
    session_id = new_session(server)
    slot, other = new_slot(server, session_id), new_slot(server, session_id)
    query = parse_qs(urlsplit(slot["uploadUrl"]).query)
    expires, signature = int(query["expires"][0]), query["signature"][0]
    forger = UrlSigner(b"\x00" * 32)  # the right scheme, the wrong secret
    other_signature = parse_qs(urlsplit(other["uploadUrl"]).query)["signature"][0]
    data = make_profile_bytes()
    refused = {
        "forged with another secret": with_query(slot["uploadUrl"], signature=forger.signature(slot["id"], expires)),
        "expiry pushed later": with_query(slot["uploadUrl"], expires=str(expires + 3600)),
        "expiry moved earlier": with_query(slot["uploadUrl"], expires=str(expires - 1)),
        "another upload's signature": with_query(slot["uploadUrl"], signature=other_signature),
        "signature cut short": with_query(slot["uploadUrl"], signature=signature[:-1]),
        "signature upper-cased": with_query(slot["uploadUrl"], signature=signature.upper()),
        "no signature": with_query(slot["uploadUrl"], signature=None),
        "no expiry": with_query(slot["uploadUrl"], expires=None),
        "expiry not a number": with_query(slot["uploadUrl"], expires="1e12"),
        "signature for another id": with_query(other["uploadUrl"], signature=signature),
    }
    for what, url in refused.items():
        r = requests.put(url, data=data, timeout=TIMEOUT)
        assert r.status_code == 403, what
        assert signature not in r.text
    assert server.store.list_profiles(session_id) == []
    assert requests.put(slot["uploadUrl"], data=data, timeout=TIMEOUT).status_code == 200  # the real one works


@pytest.fixture
def digest_comparisons(monkeypatch):
    """Every ``hmac.compare_digest`` call (the server runs in this process), as (len a, len b)."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setattr(secrets, "compare_digest", spy)
    return calls


def test_api_keys_are_compared_in_constant_time_with_no_early_exit(server_factory, digest_comparisons):
    keys = [f"key{i}.secret-{i}:org-{i}" for i in range(4)]
    srv = server_factory(api_keys=keys)
    session_id = new_session(srv)

    def comparisons(key):
        digest_comparisons.clear()
        r = requests.get(f"{srv.url}/v0/sessions/{session_id}", headers={"X-API-Key": key}, timeout=TIMEOUT)
        return r.status_code, len(digest_comparisons)

    first, last, wrong = comparisons(keys[0]), comparisons(keys[-1]), comparisons("key9.secret-9:org-9")
    assert (first[0], last[0], wrong[0]) == (200, 200, 401)
    # the first key, the last key and a wrong key cost the same comparisons: every held hash, each time
    assert first[1] == last[1] == wrong[1] >= len(keys)


def test_upload_signatures_are_compared_in_constant_time(server, digest_comparisons):
    session_id = new_session(server)
    slot = new_slot(server, session_id)
    signature = parse_qs(urlsplit(slot["uploadUrl"]).query)["signature"][0]
    flip = {"0": "1"}
    counts = []
    for where in (0, len(signature) // 2, len(signature) - 1):  # a wrong character early, midway, last
        forged = signature[:where] + flip.get(signature[where], "0") + signature[where + 1 :]
        digest_comparisons.clear()
        r = requests.put(with_query(slot["uploadUrl"], signature=forged), data=b"x", timeout=TIMEOUT)
        assert r.status_code == 403
        counts.append(list(digest_comparisons))
    assert counts[0] == counts[1] == counts[2] and len(counts[0]) >= 1, counts
    assert server.store.list_profiles(session_id) == []


def test_api_keys_are_held_only_as_hashes(tmp_path):
    keys = ["alpha.s3cr3t-value:org-a", "beta.an0ther-value"]
    config = ServerConfig(data_dir=tmp_path, api_keys=keys)
    the_app = create_app(config)
    ring = the_app.state.api_keys
    held = pickle.dumps(ring)  # everything the ring holds, byte for byte
    for key in keys:
        for piece in (key, key.split(":")[0], key.split(".")[1]):
            assert piece.encode() not in held
            assert piece not in repr(ring) and piece not in repr(config)
    assert len(ring) == 3 and all(len(digest) == 32 for digest, _ in ring._hashes)
    assert ring.lookup("beta.an0ther-value") is not None and ring.lookup("beta.an0ther") is None
    for name, value in vars(the_app.state)["_state"].items():
        assert not any(key.split(":")[0] in repr(value) for key in keys), name


# -- ids and paths ---------------------------------------------------------------------------


def test_ids_carry_at_least_128_random_bits(server):
    ids = {new_session(server) for _ in range(200)}
    assert len(ids) == 200
    for session_id in ids:
        random_part = re.fullmatch(r"session-([A-Za-z0-9_-]+)", session_id).group(1)
        assert len(random_part) * 6 >= 128, session_id  # base64url: 6 bits a character
    slot = new_slot(server, next(iter(ids)))
    assert len(slot["id"].split("-", 1)[1]) * 6 >= 128


TRAVERSALS = [
    "..",
    "...",
    "..%2F..%2Fsecret.key",
    "..%2f..%2f..%2foutside.txt",
    "%2e%2e%2f%2e%2e%2fsongbird.sqlite3",
    "%2E%2E%2F%2E%2E%2Foutside.txt",
    "..%252F..%252Fsecret.key",
    "..%5C..%5Csecret.key",
    "%2Fetc%2Fpasswd",
    "secret.key",
    "songbird.sqlite3",
    "session-..%2F..%2Foutside.txt",
    "session-%00",
    "log-%2e%2e%2f%2e%2e%2f%2e%2e%2foutside",
    "ref-" + "A" * 3000,
    "session-" + "B" * 5000,
    "%E2%80%A4%E2%80%A4%2Fsecret.key",
    "%C0%AE%C0%AE%2F",
    "%u002e%u002e",
]


def test_no_id_reaches_outside_the_data_dir(server_factory, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("OUTSIDE-SENTINEL-7f3a")
    server = server_factory(data_dir=tmp_path / "data")
    data_dir = server.data_dir
    secret = (data_dir / "secret.key").read_bytes()
    session_id = new_session(server)
    signer = UrlSigner(load_or_create_secret(data_dir))
    expires = int(time.time()) + 600
    profile = make_profile_bytes()
    before = sorted(p for p in tmp_path.rglob("*") if data_dir not in p.parents and p != data_dir)
    port = int(server.url.rsplit(":", 1)[1])
    answered = 0

    def send(method, path, body=None, headers=None):
        nonlocal answered
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        try:  # http.client sends the path exactly as given: no normalization, no re-encoding
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            status, text, location = response.status, response.read(), response.getheader("Location")
        finally:
            conn.close()
        assert status < 500, (method, path[:120], status)
        assert status in (307, 400, 401, 403, 404, 405), (method, path[:120], status, text[:200])
        if status == 307:  # a path ending in "/" (an encoded slash) is redirected to itself without it
            target = urlsplit(location)
            assert target.netloc == f"127.0.0.1:{port}" and not target.path.endswith("/"), location
            send(method, urlunsplit(("", "", target.path, target.query, "")), body, headers)
            return
        assert b"OUTSIDE-SENTINEL" not in text and b"SQLite format" not in text and secret not in text
        answered += 1

    json_headers = {"Content-Type": "application/json", "X-API-Key": ANY_ORG_KEY}
    for bad in TRAVERSALS:
        send("GET", f"/v0/sessions/{bad}", headers=json_headers)
        for op in ("upload", "reference", "references"):
            body = b'{"datasetTimestamp": 1700000000000, "references": [{"alias": "a"}]}'
            send("POST", f"/v0/sessions/{bad}/{op}", body, json_headers)
        send("POST", f"/v0/sessions/{bad}/claim?org_id=org-test", headers=json_headers)
        send("POST", f"/v0/sessions/observatory-link/{bad}", b'{"referenceProfileIds": ["ref-x"]}', json_headers)
        send(
            "POST",
            f"/v0/sessions/observatory-link/{session_id}",
            b'{"referenceProfileIds": ["%s"]}' % bad.encode(),
            json_headers,
        )
        # A PUT correctly signed for the bad id: the signature is not what keeps it out.
        signed = urlencode({"expires": expires, "signature": signer.signature(bad, expires)})
        send("PUT", f"/v0/uploads/{bad}?{signed}", profile, {"Content-Type": "application/octet-stream"})
        send("GET", f"/sessions/{bad}")
        send("GET", f"/resources/model-1/profiles?profile={bad}&sessionToken={session_id}")
        send("GET", f"/resources/model-1/profiles?profile={TS}&sessionToken={bad}")
        send("GET", f"/resources/{bad}/profiles?profile={TS}&sessionToken={session_id}")
        send("GET", f"/static/{bad}")
    assert answered == len(TRAVERSALS) * 13
    # Nothing was written outside the data dir, and inside it only what the server always has.
    after = sorted(p for p in tmp_path.rglob("*") if data_dir not in p.parents and p != data_dir)
    assert after == before
    assert {p.name for p in data_dir.iterdir()} <= {
        "secret.key",
        HEALTH_TOKEN_FILE,
        "profiles",
        "tmp",
        DB_FILE,
        f"{DB_FILE}-wal",
        f"{DB_FILE}-shm",
        f"{DB_FILE}.write-lock",
    }
    assert list((data_dir / "tmp").iterdir()) == [] and list((data_dir / "profiles").iterdir()) == []
    assert outside.read_text() == "OUTSIDE-SENTINEL-7f3a"


# -- size limits -----------------------------------------------------------------------------


def test_json_bodies_over_the_limit_are_413_on_every_post(server_factory):
    server = server_factory(max_json_bytes=1000)
    session_id = new_session(server)
    big = {"userId": "u" * 2000, "datasetTimestamp": TS, "references": [{"alias": "a" * 2000}], "alias": "a" * 2000}
    for path in ("/v0/sessions", "upload", "reference", "references", f"observatory-link/{session_id}"):
        url = f"{server.url}{path}" if path.startswith("/") else f"{server.url}/v0/sessions/{session_id}/{path}"
        if path.startswith("observatory"):
            url = f"{server.url}/v0/sessions/{path}"
        for _ in range(5):  # every time, not just usually: the refused body is drained before the close
            r = requests.post(url, json=big, timeout=TIMEOUT)
            assert r.status_code == 413 and "1000 bytes" in r.json()["message"], (path, r.text)
    assert server.store.list_profiles(session_id) == [] and len(server.store.recent_sessions()) == 1


def test_puts_over_the_limit_are_413_and_store_nothing(server_factory):
    server = server_factory(max_upload_bytes=4000)
    session_id = new_session(server)
    client = SongbirdClient(server.url, max_retries=0)
    big = make_profile_bytes(2000)
    assert len(big) > 4000
    for i in range(20):  # declared with Content-Length, and streamed without one
        slot = new_slot(server, session_id)
        body = big if i % 2 else iter([big[j : j + 1000] for j in range(0, len(big), 1000)])
        r = requests.put(slot["uploadUrl"], data=body, timeout=TIMEOUT)
        assert r.status_code == 413 and "4000 bytes" in r.json()["message"]
        with pytest.raises(Exception, match="413"):
            client.upload_profile(slot["uploadUrl"], big)
    assert server.store.list_profiles(session_id) == []
    assert list((server.data_dir / "tmp").iterdir()) == []


# -- binding ---------------------------------------------------------------------------------


def test_binds_loopback_unless_told_otherwise(server):
    assert ServerConfig().host == "127.0.0.1"
    assert parse_args([]).host == "127.0.0.1"
    assert urlsplit(server.url).hostname == "127.0.0.1"
    with pytest.raises(ValueError, match="127.0.0.1"):
        LocalServer(host="0.0.0.0")


def landing_page(tmp_path, host, **config):
    """The landing page of an app configured to bind ``host``, asked in-process (no socket is opened)."""
    the_app = create_app(ServerConfig(host=host, data_dir=tmp_path / "data", api_keys=[ANY_ORG_KEY], **config))

    async def visit():
        transport = httpx.ASGITransport(app=the_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8787") as client:
            session_id = (await client.post("/v0/sessions", json={"userId": "u"})).json()["id"]
            return session_id, await client.get("/"), await client.get(f"/sessions/{session_id}")

    try:
        session_id, page, session_page = asyncio.run(visit())
    finally:
        the_app.state.store.close()
    assert page.status_code == 200 and session_page.status_code == 200
    return session_id, page.text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_landing_page_lists_sessions_only_when_asked(tmp_path, host):
    session_id, text = landing_page(tmp_path / "listed", host, list_sessions=True)
    assert f'href="/sessions/{session_id}"' in text
    assert "not listed" not in text
    session_id, text = landing_page(tmp_path / "default", host)  # loopback or not: off unless asked
    assert session_id not in text and 'id="sessions"' not in text
    assert "lists them only when started with <code>--list-sessions</code>" in text


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "songbird.example.internal"])
def test_landing_page_hides_session_ids_by_default(tmp_path, host):
    session_id, text = landing_page(tmp_path, host)
    assert session_id not in text and 'id="sessions"' not in text
    assert "lists them only when started with <code>--list-sessions</code>" in text


def test_sessions_are_never_listed_behind_a_public_url(tmp_path):
    with pytest.raises(ValueError, match="--list-sessions cannot be combined with --public-url"):
        ServerConfig(data_dir=tmp_path, list_sessions=True, public_url="https://songbird.example.org")


# -- secrets never logged --------------------------------------------------------------------


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serving_pid(url, data_dir):
    """The pid that ``url``'s /healthz reports to the holder of ``data_dir``'s health token; None
    while nothing answers there, or a server of another data dir does (it shows no details)."""
    try:
        token = (data_dir / HEALTH_TOKEN_FILE).read_text(encoding="ascii").strip()
        r = requests.get(f"{url}/healthz", headers={HEALTH_TOKEN_HEADER: token}, timeout=1)
        return r.json().get("pid") if r.status_code == 200 else None
    except (OSError, ValueError, requests.ConnectionError):
        return None


@pytest.fixture
def cli_server(tmp_path):
    """``python -m whylogs_songbird.server`` in its own process, access log on, some faults; yields
    (url, data dir, path of its log).

    The port is picked free here but bound by the server seconds later: meanwhile another process
    (under xdist, the other worker's servers and connections) may take it. So the server counts as
    up only once /healthz gives its own pid to the holder of its data dir's health token, and a
    start that could not listen is made again on another port."""
    data_dir, log_path = tmp_path / "cli-server", tmp_path / "server.log"
    for _attempt in range(5):
        port = _free_port()
        command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--data-dir", str(data_dir)]
        command += ["--api-key", ORG_KEY, "--fault-rate", "0.2", "--fault-seed", "4"]
        # the server's own handle: the test reads the log through another, which moves no write offset
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while process.poll() is None and _serving_pid(url, data_dir) != process.pid:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        if process.poll() is None:
            break
        output = log_path.read_text()
        # its port was taken before it could listen: anything else is a failure of its own
        assert "cannot listen on" in output or "Address already in use" in output, output
    else:
        pytest.fail(f"no free port kept for the server in 5 tries: {output}")
    try:
        yield url, data_dir, log_path
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_secrets_never_appear_in_client_or_server_logs(cli_server, tmp_path, caplog):
    url, data_dir, log_path = cli_server
    caplog.set_level(logging.DEBUG)
    opts = {"endpoint": url, "config_dir": str(tmp_path / "config"), "outbox": False}
    opts.update(api_key=ORG_KEY, max_retries=10, backoff=0.01)
    frame = why.log({"x": [1.0, 2.0, 3.0]})
    for _ in range(5):
        result = publish_references({"a": frame, "b": frame, "c": frame, "d": frame}, **opts)
        assert result.ok
        ok, _ = frame.writer("songbird").option(**opts).write()
        assert ok
    client = SongbirdClient(url, api_key=ORG_KEY, max_retries=10, backoff_factor=0.01)
    assert client.get_session(result.session_id).session.session_id == result.session_id
    assert claim_session(org_id="org-test", **opts) == result.session_id
    with pytest.raises(Exception, match="401"):  # a wrong key is refused without being repeated back
        SongbirdClient(url, api_key="wrong.k3y-value", max_retries=0).get_session(result.session_id)

    signer = UrlSigner(load_or_create_secret(data_dir))
    with sqlite3.connect(f"file:{data_dir / DB_FILE}?mode=ro", uri=True) as conn:
        slots = conn.execute("SELECT id, expires_at FROM uploads").fetchall()
    signatures = [signer.signature(upload_id, expires) for upload_id, expires in slots]
    assert len(signatures) >= 25
    secrets_ = [ORG_KEY, ORG_KEY.split(":")[0], "wrong.k3y-value", *signatures]

    formatter = logging.Formatter()
    client_log = "\n".join(
        record.getMessage() + (formatter.formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )
    server_log = log_path.read_bytes().decode("utf-8", "replace")
    assert '"PUT /v0/uploads/' in server_log and "?<redacted>" in server_log, "the access log was on"
    assert "fault injection is on" in server_log and "127.0.0.1" in server_log
    # every retry logs urllib3's "Incremented Retry"; only a dropped connection's also logs "Retrying"
    # (which faults the client's requests meet depends on how the threads' requests interleave)
    assert "Incremented Retry" in client_log, "faults made the client retry (and log it)"
    for text in (client_log, server_log):
        leaked = [s[:12] for s in secrets_ if s in text]
        assert not leaked, leaked
    assert hashlib.sha256(ORG_KEY.encode()).hexdigest() not in server_log


# -- the wire rules, in the shared models ----------------------------------------------------


@pytest.mark.parametrize("value", [True, False, "1700000000000", 1.7e12, 2**63 - 1, MIN_TIMESTAMP - 1, None])
def test_timestamps_are_strict_64_bit_integers(server, value):
    for make in (
        lambda: LogAsyncRequest(dataset_timestamp=value),
        lambda: GetProfileObservatoryLinkRequest(batch_profile_timestamps=[value]),
    ):
        with pytest.raises(ValidationError):
            make()
    if value is not None:
        with pytest.raises(ValidationError):
            LogReferenceRequest(dataset_timestamp=value)
    session_id = new_session(server)
    for path, body in (
        ("upload", {"datasetTimestamp": value}),
        ("reference", {"alias": "a", "datasetTimestamp": value}),
        ("references", {"references": [{"alias": "a", "datasetTimestamp": value}]}),
    ):
        if value is None and path != "upload":
            continue  # an optional field may be null
        r = requests.post(f"{server.url}/v0/sessions/{session_id}/{path}", json=body, timeout=TIMEOUT)
        assert r.status_code == 400 and "datasetTimestamp" in r.json()["message"], (path, r.text)
    r = requests.post(
        f"{server.url}/v0/sessions/observatory-link/{session_id}",
        json={"batchProfileTimestamps": [value]},
        timeout=TIMEOUT,
    )
    assert r.status_code == 400
    assert slot_count(server) == 0, "no slot was made"


def test_the_bounds_are_accepted(server):
    session_id = new_session(server)
    for stamp in (MIN_DATASET_TIMESTAMP, MAX_DATASET_TIMESTAMP):
        r = requests.post(
            f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": stamp}, timeout=TIMEOUT
        )
        assert r.status_code == 200
    for stamp in (MIN_TIMESTAMP, MAX_TIMESTAMP):  # links look up what is stored: any 64-bit timestamp
        r = requests.post(
            f"{server.url}/v0/sessions/observatory-link/{session_id}",
            json={"batchProfileTimestamps": [stamp]},
            timeout=TIMEOUT,
        )
        assert r.status_code == 404, r.text


def test_references_must_not_be_empty(server):
    with pytest.raises(ValidationError):
        BatchLogReferenceRequest(references=[])
    session_id = new_session(server)
    r = requests.post(f"{server.url}/v0/sessions/{session_id}/references", json={"references": []}, timeout=TIMEOUT)
    assert r.status_code == 400 and "references" in r.json()["message"]


def test_openapi_document_shows_the_rules_from_the_models(server):
    doc = requests.get(f"{server.url}/openapi.json", timeout=TIMEOUT).json()
    schemas = doc["components"]["schemas"]
    # The document states exactly the bounds the models enforce (JSON numbers: compared by value).
    in_calendar = {
        "type": "integer",
        "format": "int64",
        "minimum": MIN_DATASET_TIMESTAMP,
        "maximum": MAX_DATASET_TIMESTAMP,
    }
    assert in_calendar.items() <= schemas["LogAsyncRequest"]["properties"]["datasetTimestamp"].items()
    [stamp, _] = schemas["LogReferenceRequest"]["properties"]["datasetTimestamp"]["anyOf"]
    assert in_calendar.items() <= stamp.items()
    bounds = {"type": "integer", "format": "int64", "minimum": MIN_TIMESTAMP, "maximum": MAX_TIMESTAMP}
    items = schemas["GetProfileObservatoryLinkRequest"]["properties"]["batchProfileTimestamps"]["items"]
    assert bounds.items() <= items.items()
    assert schemas["BatchLogReferenceRequest"]["properties"]["references"]["minItems"] == 1
    assert "422" not in str(doc["paths"])
