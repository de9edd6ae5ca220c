"""``--workers N``: several processes on one socket share everything that matters through the
store (sessions, uploads, counters, digests) and the secret file; connections keep TCP_NODELAY."""

import concurrent.futures
import contextlib
import os
import signal
import socket

import pytest
import requests
from conftest import health, make_profile_bytes
from server_processes import new_slot, start_server_process, stop, wait_for

from whylogs_songbird.server.serving import bind_socket

TIMEOUT = 30


def test_the_listening_socket_says_tcp_so_connections_get_nodelay():
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname())
        accepted, _ = sock.accept()
        with client, accepted:
            assert accepted.proto == socket.IPPROTO_TCP, "asyncio sets TCP_NODELAY only on such sockets"
    finally:
        sock.close()


def test_several_workers_agree_on_sessions_uploads_and_counters(tmp_path):
    process, url = start_server_process(tmp_path / "data", "--workers", "2")
    try:
        pids = set()

        def seen_both():
            pids.add(health(url, tmp_path / "data")["pid"])  # a new connection each time
            return len(pids) >= 2

        wait_for(seen_both, "connections are spread over two processes")

        def one_upload(i):
            with requests.Session() as session:  # each client its own connection, so its own worker
                sid = session.post(f"{url}/v0/sessions", json={"userId": f"u{i}"}, timeout=TIMEOUT).json()["id"]
                slot = new_slot(url, sid, ts=1_700_000_000_000 + i)
                # the PUT and the page on fresh connections: likely another process than the one that made the slot
                put = requests.put(slot["uploadUrl"], data=make_profile_bytes(seed=i), timeout=TIMEOUT)
                assert put.status_code == 200, put.text
                page = requests.get(slot["observatoryUrl"], timeout=TIMEOUT)
                assert page.status_code == 200, page.text[:300]
                return sid

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            sessions = list(pool.map(one_upload, range(12)))
        assert len(set(sessions)) == 12

        def counted() -> dict:
            return requests.get(f"{url}/_local/stats", timeout=TIMEOUT).json()

        # each process writes its counts to the shared store in batches (within Store.COUNT_FLUSH_SECONDS)
        wait_for(lambda: (lambda s: (s["create_session"], s["upload"], s["put"]))(counted()) == (12, 12, 12), "counts")
        for _ in range(4):  # whichever process answers, the counters are the same
            stats = requests.get(f"{url}/_local/stats", timeout=TIMEOUT).json()
            assert stats["create_session"] == 12 and stats["upload"] == 12 and stats["put"] == 12, stats
        assert health(url, tmp_path / "data")["sessions"] == 12
    finally:
        stop(process)


def test_sigterm_stops_every_worker_and_the_server_stays_down(tmp_path):
    """SIGTERM to ``python -m whylogs_songbird.server --workers 2`` stops the launcher and both
    workers, and nothing starts serving again (the process group empties, the port is closed)."""
    process, url = start_server_process(tmp_path / "data", "--workers", "2")
    try:
        assert requests.post(f"{url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).status_code == 200
        process.send_signal(signal.SIGTERM)
        process.wait(60)

        def group_gone() -> bool:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(group_gone, "every worker of the server's process group exits")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/healthz", timeout=5)
    finally:
        if process.poll() is None:
            stop(process)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # a worker left behind
            process.stderr.close()


def test_request_durations_add_up_across_workers_whichever_answers(tmp_path):
    """``songbird_request_duration_seconds`` lives in prometheus_client's multiprocess directory
    under the data dir: every worker's scrape counts every worker's requests; it is removed at stop,
    as is one left by a launcher that no longer runs."""
    from request_metrics import PUT_ROUTE, SLOT_ROUTE, make_uploads, request_counts, wait_for_counts

    stale = tmp_path / "data" / "metrics-999999999-1"  # a pid no process has: its launcher is gone
    stale.mkdir(parents=True)
    (stale / "histogram_1.db").write_bytes(b"left by a killed launcher")
    process, url = start_server_process(tmp_path / "data", "--workers", "2")
    try:
        pids = set()

        def seen_both():
            pids.add(health(url, tmp_path / "data")["pid"])  # a new connection each time
            return len(pids) >= 2

        wait_for(seen_both, "connections are spread over two processes")

        def upload(i: int) -> str:
            return make_uploads(url, 3)  # fresh connections: spread over both workers

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(upload, range(4)))
        expected = {
            ("POST", "/v0/sessions", "2xx"): 4,
            ("POST", SLOT_ROUTE, "2xx"): 12,
            ("PUT", PUT_ROUTE, "2xx"): 12,
            ("PUT", PUT_ROUTE, "4xx"): 4,
        }
        wait_for_counts(url, expected)
        for _ in range(12):  # whichever process answers the scrape (a new connection each), the same counts
            counts = request_counts(url)
            assert {key: counts.get(key) for key in expected} == expected
        [shared] = (tmp_path / "data").glob("metrics-*")
        assert len(list(shared.glob("histogram_*.db"))) >= 2, "each worker writes its own file"
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        stop(process)
    assert not list((tmp_path / "data").glob("metrics-*")), "the launcher removes its directory"
