"""Hardening of the server (issue 13), each over real HTTP: Host allow-list, session listing, slow and
idle connections, bounded requests and quotas, security headers, claimed sessions, segment labels, logs."""

import html
import json
import logging
import os
import re
import resource
import socket
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import ANY_ORG_KEY, ORG_KEY, make_profile_bytes

from whylogs_songbird import SongbirdClient
from whylogs_songbird.errors import RequestLimitError
from whylogs_songbird.models import (
    MAX_ALIAS_LENGTH,
    MAX_REFERENCES_PER_BATCH,
    MAX_SEGMENT_TAGS,
    MAX_TAG_VALUE_LENGTH,
    LogReferenceRequest,
    SegmentTag,
)
from whylogs_songbird.server.connections import RateLimitFilter, backlog_for, default_max_connections
from whylogs_songbird.server.security import CONTENT_SECURITY_POLICY, HostAllowList, host_from_header, machine_names

TS = 1_700_000_000_000
TIMEOUT = 10


def new_session(server, user_id="u"):
    r = requests.post(f"{server.url}/v0/sessions", json={"userId": user_id}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def upload(server, session_id, tags=(), data=None, ts=TS):
    body = {"datasetTimestamp": ts, "segmentTags": [{"key": k, "value": v} for k, v in tags]}
    r = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    slot = r.json()
    put = requests.put(slot["uploadUrl"], data=data or make_profile_bytes(), timeout=TIMEOUT)
    assert put.status_code == 200, put.text
    return slot


def port_of(server):
    return urlsplit(server.url).port


# -- 1. Host header ------------------------------------------------------------------------------


def test_foreign_host_names_get_421_and_no_data(server):
    session_id = new_session(server)
    slot = upload(server, session_id)
    for path in (
        "/",
        f"/sessions/{session_id}",
        urlsplit(slot["observatoryUrl"]).path + "?" + urlsplit(slot["observatoryUrl"]).query,
        "/healthz",
        "/openapi.json",
    ):
        r = requests.get(server.url + path, headers={"Host": "rebound.attacker.example"}, timeout=TIMEOUT)
        assert r.status_code == 421, path
        assert session_id not in r.text and "sessionToken" not in r.text
        assert "--allowed-host rebound.attacker.example" in r.json()["message"]
    # an API call that would build an upload URL from the Host header is refused the same way
    r = requests.post(
        f"{server.url}/v0/sessions/{session_id}/upload",
        json={"datasetTimestamp": TS},
        headers={"Host": "rebound.attacker.example:8787"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 421 and "uploadUrl" not in r.text
    assert len(server.store.list_profiles(session_id)) == 1  # no slot was made


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:{port}", "localhost:{port}", "LOCALHOST.", "127.8.9.10", "[::1]:{port}", "[::1]"]
)
def test_the_bind_address_localhost_and_every_loopback_address_are_answered(server, host):
    r = requests.get(server.url + "/healthz", headers={"Host": host.format(port=port_of(server))}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text


def test_allowed_hosts_and_the_public_url_host_are_answered(server_factory):
    server = server_factory(allowed_hosts=["songbird.lan", "10.1.2.3"], public_url="https://obs.example.org/")
    for host in ("songbird.lan", "SongBird.LAN:8787", "10.1.2.3", "obs.example.org"):
        assert requests.get(server.url + "/", headers={"Host": host}, timeout=TIMEOUT).status_code == 200, host
    assert requests.get(server.url + "/", headers={"Host": "other.lan"}, timeout=TIMEOUT).status_code == 421
    anything = server_factory(allowed_hosts=["*"])
    assert requests.get(anything.url + "/healthz", headers={"Host": "x.example"}, timeout=TIMEOUT).status_code == 200


def test_a_wildcard_bind_answers_to_the_machine_own_names_and_addresses():
    wildcard = HostAllowList("0.0.0.0")
    own = machine_names()
    assert socket.gethostname().lower() in own
    assert all(wildcard.allows(name) for name in own)
    assert not wildcard.allows("rebound.attacker.example")
    specific = HostAllowList("192.168.7.7")
    assert specific.allows("192.168.7.7") and specific.allows("127.0.0.1") and not specific.allows("192.168.7.8")
    assert host_from_header("[::1]:80") == "::1" and host_from_header("Example.COM.:1") == "example.com"


# -- 2. listing sessions -------------------------------------------------------------------------


def test_the_command_line_takes_the_new_options(tmp_path):
    from whylogs_songbird.server.cli import main, parse_args

    config = parse_args(
        ["--data-dir", str(tmp_path), "--allowed-host", "a.lan", "--allowed-host", "b.lan", "--list-sessions"]
        + ["--header-timeout", "3", "--body-timeout", "4", "--max-connections", "50"]
        + ["--max-session-profiles", "10", "--max-session-bytes", "1000000"]
    )
    assert config.allowed_hosts == ["a.lan", "b.lan"] and config.list_sessions
    assert (config.header_timeout, config.body_timeout, config.max_connections) == (3, 4, 50)
    assert (config.max_session_profiles, config.max_session_bytes) == (10, 1_000_000)
    assert not parse_args(["--data-dir", str(tmp_path)]).list_sessions  # off unless asked
    refused = main(["--data-dir", str(tmp_path), "--list-sessions", "--public-url", "https://obs.example.org"])
    assert refused == 2


def test_sessions_are_listed_only_when_asked(server_factory):
    quiet = server_factory()
    listed = server_factory(list_sessions=True)
    for srv in (quiet, listed):
        session_id = new_session(srv)
        page = requests.get(srv.url + "/", timeout=TIMEOUT).text
        assert (session_id in page) is (srv is listed)


# -- 3. slow and idle connections ----------------------------------------------------------------


def read_until_closed(sock, deadline=30.0):
    """Everything the server sends until it closes the connection (fails after ``deadline`` seconds)."""
    sock.settimeout(deadline)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_slow_and_silent_connections_are_closed_while_others_are_served(server_factory):
    server = server_factory(header_timeout=1.0, body_timeout=1.0)
    address = ("127.0.0.1", port_of(server))
    silent = socket.create_connection(address)
    half_line = socket.create_connection(address)
    half_line.sendall(b"GET /heal")
    half_headers = socket.create_connection(address)
    half_headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    no_body = socket.create_connection(address)
    no_body.sendall(
        b"POST /v0/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"userId": '
    )
    # the server keeps answering everyone else meanwhile
    with requests.Session() as other:
        assert other.get(server.url + "/healthz", timeout=TIMEOUT).status_code == 200
        assert other.post(server.url + "/v0/sessions", json={"userId": "x"}, timeout=TIMEOUT).status_code == 200

    assert read_until_closed(silent) == b""  # it never said a word: just closed
    for sock in (half_line, half_headers):
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"--header-timeout" in answer and b"within 1 s" in answer
    answer = read_until_closed(no_body)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"--body-timeout" in answer, answer
    assert server.stats()["create_session"] == 1  # the unfinished request never created a session
    for sock in (silent, half_line, half_headers, no_body):
        sock.close()


def test_an_unfinished_upload_times_out_and_stores_nothing(server_factory, caplog):
    caplog.set_level(logging.INFO)
    server = server_factory(body_timeout=1.0)
    session_id = new_session(server)
    slot = requests.post(
        f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT
    ).json()
    url = urlsplit(slot["uploadUrl"])
    data = make_profile_bytes()
    with socket.create_connection(("127.0.0.1", port_of(server))) as sock:
        head = f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n\r\n"
        sock.sendall(head.encode() + data[: len(data) // 2])
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert server.store.list_profiles(session_id) == []
    deadline = time.monotonic() + 10
    while list((server.data_dir / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((server.data_dir / "tmp").iterdir()) == []
    assert requests.put(slot["uploadUrl"], data=data, timeout=TIMEOUT).status_code == 200  # the slot still works
    # the cut-off upload is a warning about the client, not a server error with a traceback
    assert [r for r in caplog.records if "sent no body bytes for 1 s" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_connections_over_the_cap_get_503_until_some_close(server_factory):
    server = server_factory(max_connections=3, max_client_connections=3, header_timeout=60.0)
    address = ("127.0.0.1", port_of(server))
    held = [socket.create_connection(address) for _ in range(3)]
    with socket.create_connection(address) as extra:
        answer = read_until_closed(extra)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"--max-connections" in answer, answer
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 20
    while True:  # the server notices the closed connections, then serves again
        try:
            if requests.get(server.url + "/healthz", timeout=TIMEOUT, headers={"Connection": "close"}).ok:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_default_cap_and_backlog_fit_the_descriptor_limit():
    for limit in (256, 1024, 4096, 1_048_576):
        cap = default_max_connections(limit)
        assert 8 <= cap <= 1024
        assert cap + 4 * backlog_for(cap, limit) <= max(limit - 64, 40)


def test_repeated_log_records_are_rate_limited():
    limiter = RateLimitFilter(interval=3600)
    records = [
        __import__("logging").LogRecord("asyncio", 40, __file__, 1, "socket.accept() out of system resource", (), None)
        for _ in range(1000)
    ]
    passed = [r for r in records if limiter.filter(r)]
    assert len(passed) == 1
    limiter.interval = 0
    late = __import__("logging").LogRecord(
        "asyncio", 40, __file__, 1, "socket.accept() out of system resource", (), None
    )
    assert limiter.filter(late) and "999 more like this" in late.getMessage()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_connection_flood_under_a_low_descriptor_limit_neither_starves_the_server_nor_floods_its_log(tmp_path):
    """The reported attack: more silent connections than the server has file descriptors."""
    port = _free_port()
    log_path = tmp_path / "server.log"
    command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port)]
    # a header timeout long enough that the held connections are still held while the test looks
    command += ["--data-dir", str(tmp_path / "data"), "--header-timeout", "60"]

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=low_limit)
    url = f"http://127.0.0.1:{port}"
    socks = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        for _ in range(400):  # more than the 256 descriptors the server may open
            socks.append(socket.create_connection(("127.0.0.1", port)))
        refused = 0
        for sock in socks[-100:]:  # the latest ones are over the cap: answered 503 at once
            sock.settimeout(30)
            try:
                if sock.recv(64).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except (ConnectionResetError, TimeoutError):
                pass
        assert refused > 0
        for sock in socks:  # the attacker lets go
            sock.close()
        deadline = time.monotonic() + 60
        while True:  # the server notices and serves again
            try:
                if requests.get(url + "/healthz", timeout=5, headers={"Connection": "close"}).ok:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        for sock in socks:
            sock.close()
        process.terminate()
        process.wait(timeout=20)
    text = log_path.read_text()
    # the attack once wrote tens of thousands of accept errors; now at most one per 10 s, if any
    assert text.count("Too many open files") <= 2, text[-3000:]
    assert len(text.splitlines()) < 80, text[-3000:]  # refusals and timeouts: once per 10 s, with a count


# -- 4. bounded requests -------------------------------------------------------------------------


def test_oversized_requests_get_400_naming_the_limit(server):
    session_id = new_session(server)
    base = f"{server.url}/v0/sessions/{session_id}"
    cases = [
        ("/references", {"references": [{}] * (MAX_REFERENCES_PER_BATCH + 1)}, str(MAX_REFERENCES_PER_BATCH)),
        (
            "/upload",
            {"datasetTimestamp": TS, "segmentTags": [{"key": f"k{i}", "value": "v"} for i in range(65)]},
            str(MAX_SEGMENT_TAGS),
        ),
        (
            "/upload",
            {"datasetTimestamp": TS, "segmentTags": [{"key": "k", "value": "v" * (MAX_TAG_VALUE_LENGTH + 1)}]},
            "MAX_TAG_VALUE_LENGTH",
        ),
        ("/reference", {"alias": "a" * (MAX_ALIAS_LENGTH + 1)}, str(MAX_ALIAS_LENGTH)),
    ]
    for path, body, limit in cases:
        r = requests.post(base + path, json=body, timeout=TIMEOUT)
        assert r.status_code == 400, (path, r.text)
        assert limit in r.json()["message"], r.text
    assert server.store.list_profiles(session_id) == [] and _slot_count(server) == 0
    ok = requests.post(base + "/references", json={"references": [{}] * MAX_REFERENCES_PER_BATCH}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["references"]) == MAX_REFERENCES_PER_BATCH


def _slot_count(server):
    import sqlite3

    from whylogs_songbird.server.store import DB_FILE

    with sqlite3.connect(f"file:{server.data_dir / DB_FILE}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM uploads").fetchone()[0]


def test_the_client_refuses_oversized_requests_before_sending(server):
    client = SongbirdClient(endpoint=server.url)
    session_id = client.create_session("me").id
    before = server.stats()
    with pytest.raises(RequestLimitError, match=str(MAX_REFERENCES_PER_BATCH)):
        client.batch_create_reference_profile_upload(
            session_id, [LogReferenceRequest() for _ in range(MAX_REFERENCES_PER_BATCH + 1)]
        )
    with pytest.raises(RequestLimitError, match=str(MAX_SEGMENT_TAGS)):
        client.create_dataset_profile_upload(session_id, TS, [SegmentTag(key=f"k{i}", value="v") for i in range(65)])
    with pytest.raises(RequestLimitError, match="MAX_TAG_KEY_LENGTH"):
        client.create_dataset_profile_upload(session_id, TS, [SegmentTag(key="k" * 300, value="v")])
    with pytest.raises(RequestLimitError, match=str(MAX_ALIAS_LENGTH)):
        client.create_reference_profile_upload(session_id, alias="a" * (MAX_ALIAS_LENGTH + 1))
    assert server.stats() == before  # nothing was sent
    client.close()


# -- 5. headers ----------------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(server):
    session_id = new_session(server)
    slot = upload(server, session_id)
    pages = ["/", f"/sessions/{session_id}", slot["observatoryUrl"].replace(server.url, ""), "/sessions/session-x"]
    others = ["/healthz", "/openapi.json", "/v0/nope", "/static/observatory.js"]
    for path in pages + others:
        r = requests.get(server.url + path, timeout=TIMEOUT)
        assert r.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        if path in pages:
            assert r.headers["Cache-Control"] == "no-store", path
            assert "<script>" not in r.text and "onclick" not in r.text.lower()  # no inline script to allow
    r = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT)
    assert r.headers["Cache-Control"] == "no-store"  # carries an upload URL
    assert (
        requests.get(server.url + "/static/observatory.css", timeout=TIMEOUT)
        .headers["Cache-Control"]
        .startswith("public")
    )


# -- 7. claimed sessions -------------------------------------------------------------------------


def test_a_claimed_session_pages_answer_404_like_its_api(server):
    session_id = new_session(server, user_id="install-42")
    slot = upload(server, session_id)
    page = slot["observatoryUrl"]
    assert requests.get(page, timeout=TIMEOUT).status_code == 200
    r = requests.post(
        f"{server.url}/v0/sessions/{session_id}/claim?org_id=org-test", headers={"X-API-Key": ORG_KEY}, timeout=TIMEOUT
    )
    assert r.status_code == 200
    for url in (page, f"{server.url}/sessions/{session_id}"):
        r = requests.get(url, timeout=TIMEOUT)
        assert r.status_code == 404 and "claimed" in r.text
        assert 'data-field="rows"' not in r.text and f'href="/sessions/{session_id}"' not in r.text
    api = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=10)
    assert api.status_code == 404
    listed = requests.get(server.url + "/", timeout=TIMEOUT)
    assert session_id not in listed.text


def test_get_session_reveals_user_id_only_to_its_org(server_factory):
    server = server_factory(api_keys=[ORG_KEY, ANY_ORG_KEY, "otherkey.secret:org-other"])
    session_id = new_session(server, user_id="install-42")

    def get(key):
        return requests.get(f"{server.url}/v0/sessions/{session_id}", headers={"X-API-Key": key}, timeout=TIMEOUT)

    assert get(ANY_ORG_KEY).json()["session"]["userId"] == "install-42"
    for key in (ORG_KEY, "otherkey.secret"):
        r = get(key)
        assert r.status_code == 200 and "install-42" not in r.text
    requests.post(
        f"{server.url}/v0/sessions/{session_id}/claim?org_id=org-test", headers={"X-API-Key": ORG_KEY}, timeout=TIMEOUT
    )
    assert get(ORG_KEY).json()["session"]["userId"] == "install-42"  # now it is org-test's session
    r = get("otherkey.secret")
    assert r.status_code == 404 and "install-42" not in r.text


# -- 9. segment labels ---------------------------------------------------------------------------


def test_segment_labels_that_could_collide_open_different_pages(server):
    session_id = new_session(server)
    one_tag = upload(server, session_id, tags=[("a", "b,c=d")], data=make_profile_bytes(7))
    two_tags = upload(server, session_id, tags=[("a", "b"), ("c", "d")], data=make_profile_bytes(13))
    first = parse_qs(urlsplit(one_tag["observatoryUrl"]).query)["segment"]
    second = parse_qs(urlsplit(two_tags["observatoryUrl"]).query)["segment"]
    assert first == ['a="b,c=d"'] and second == ["a=b,c=d"]
    rows = []
    for slot in (one_tag, two_tags):
        r = requests.get(slot["observatoryUrl"], timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        rows.append(re.search(r'data-field="rows" data-value="(\d+)"', r.text).group(1))
    assert rows == ["7", "13"]
    # the whole batch lists both segments, each linking to its own page
    whole = requests.get(
        f"{server.url}/resources/model-1/profiles?profile={TS}&sessionToken={session_id}", timeout=TIMEOUT
    )
    links = sorted(html.unescape(u) for u in re.findall(r'<a class="segment-link" href="([^"]+)"', whole.text))
    assert sorted(parse_qs(urlsplit(u).query)["segment"][0] for u in links) == ['a="b,c=d"', "a=b,c=d"]
    # a label that matches no segment exactly is not found, even if it once would have
    r = requests.get(f"{one_tag['observatoryUrl'].split('&segment=')[0]}&segment=a%3Db%2Cc%3Dd%2Ce%3Df", timeout=10)
    assert r.status_code == 404


# -- 10. logs ------------------------------------------------------------------------------------


def test_whylogs_chunk_lines_stay_out_of_the_server_log(tmp_path):
    port = _free_port()
    log_path = tmp_path / "server.log"
    command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--data-dir", str(tmp_path / "d")]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        session_id = requests.post(url + "/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
        slot = requests.post(
            f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT
        ).json()
        assert requests.put(slot["uploadUrl"], data=make_profile_bytes(), timeout=TIMEOUT).status_code == 200
        assert requests.get(slot["observatoryUrl"], timeout=30).status_code == 200  # reads the profile again
    finally:
        process.terminate()
        process.wait(timeout=20)
    text = log_path.read_text()
    assert "PUT /v0/uploads/" in text  # the access log is there
    assert "Attempting to read profile file" not in text and "whylogs.core" not in text, text


def test_json_of_the_refusals_is_clean(server):
    r = requests.get(server.url + "/", headers={"Host": "a<b>.example"}, timeout=TIMEOUT)
    assert r.status_code == 421 and r.headers["Content-Type"] == "application/json"
    json.loads(r.text)


def test_per_session_quotas_refuse_clearly_and_store_nothing(server_factory):
    data = make_profile_bytes()
    server = server_factory(max_session_profiles=2)
    session_id = new_session(server)
    first = upload(server, session_id)
    upload(server, session_id)
    assert requests.put(first["uploadUrl"], data=data, timeout=TIMEOUT).status_code == 200  # a replacement counts once
    r = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT)
    assert r.status_code == 403 and "--max-session-profiles" in r.json()["message"]
    r = requests.post(f"{server.url}/v0/sessions/{session_id}/references", json={"references": [{}]}, timeout=10)
    assert r.status_code == 403
    client = SongbirdClient(endpoint=server.url)
    with pytest.raises(Exception, match="start a new session"):
        client.create_reference_profile_upload(session_id, alias="one more")
    client.close()
    assert len(server.store.list_profiles(session_id)) == 2
    assert requests.post(
        f"{server.url}/v0/sessions/{new_session(server)}/upload", json={"datasetTimestamp": TS}, timeout=10
    ).ok

    server = server_factory(max_session_bytes=len(data) + 10)
    session_id = new_session(server)
    upload(server, session_id, data=data)
    slot = requests.post(
        f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS + 1}, timeout=TIMEOUT
    ).json()
    r = requests.put(slot["uploadUrl"], data=data, timeout=TIMEOUT)
    assert r.status_code == 403 and "--max-session-bytes" in r.json()["message"]
    assert [u.dataset_timestamp for u in server.store.list_profiles(session_id)] == [TS]


# -- 8. on disk (built in the storage seam; checked here end to end) ----------------------------


def _serve_cli(tmp_path, data_dir, log_name):
    """``python -m whylogs_songbird.server`` with umask 000 (every file would be world-writable); returns
    (process, url)."""
    port = _free_port()
    log = open(tmp_path / log_name, "wb")  # noqa: SIM115 - the process holds it; closed by the caller's wait
    process = subprocess.Popen(
        [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.umask(0),
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return process, url
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError((tmp_path / log_name).read_text())
        time.sleep(0.1)


def test_the_data_dir_is_private_whatever_the_umask_and_leftovers_are_reconciled(tmp_path):
    import stat

    data_dir = tmp_path / "data"
    process, url = _serve_cli(tmp_path, data_dir, "first.log")
    try:
        session_id = requests.post(url + "/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
        slot = requests.post(
            f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT
        ).json()
        assert requests.put(slot["uploadUrl"], data=make_profile_bytes(), timeout=TIMEOUT).status_code == 200
        modes = {
            path.relative_to(data_dir): stat.S_IMODE(path.stat().st_mode) for path in [data_dir, *data_dir.rglob("*")]
        }
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert any(p.suffix == ".bin" for p in modes) and any(str(p).endswith("-wal") for p in modes), modes
    for path, mode in modes.items():
        expected = 0o700 if (data_dir / path).is_dir() else 0o600
        assert mode == expected, (path, oct(mode))
    # leftovers of a crash: a temporary body and a profile file no row points at
    leftover = data_dir / "tmp" / "upload-crashed.part"
    leftover.write_bytes(b"half a body")
    stray = data_dir / "profiles" / session_id / ("log-" + "Q" * 24 + ".bin")
    stray.write_bytes(make_profile_bytes())
    first_url = url
    process, url = _serve_cli(tmp_path, data_dir, "second.log")
    try:
        page = slot["observatoryUrl"].replace(first_url, url)
        assert requests.get(page, timeout=30).status_code == 200  # the real profile survived
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert not leftover.exists() and not stray.exists()
    assert "reconciled the store at start" in (tmp_path / "second.log").read_text()
