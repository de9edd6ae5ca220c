"""The embedded default's local server (whylogs_songbird/background_server.py) without starting the real
server: what its health check is taken to mean, the pid file, which processes it may stop, and
what each case of ``songbird server stop`` says.

A plain ``http.server`` on a loopback port plays whatever answers there (a songbird of another
version, another program); processes are real (``python -c 'sleep'``, named like the server or
not). tests/test_embedded_default.py starts the real server end to end.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import free_port, serving

from whylogs_songbird import background_server
from whylogs_songbird.background_server import (
    HOST,
    LOCK_FILE,
    LOG_FILE,
    PID_FILE,
    SERVICE,
    START_TIMEOUT,
    STOP_TIMEOUT,
    NotSongbird,
    ServerStatus,
    ensure_server,
    health_token,
    local_url,
    probe,
    read_pid_file,
    server_command,
    stop_server,
)
from whylogs_songbird.config import resolve_settings
from whylogs_songbird.errors import LocalServerError, SongbirdConnectionError

# hang_bound: a broken worker or loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not its deadline
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/background_server.py"), pytest.mark.hang_bound]


def test_the_constants_are_the_documented_ones():
    assert (HOST, PID_FILE, LOG_FILE, LOCK_FILE, SERVICE) == (
        "127.0.0.1",
        "server.pid",
        "server.log",
        "server.lock",
        "songbird",
    )
    assert (START_TIMEOUT, STOP_TIMEOUT) == (60.0, 15.0)


def test_the_url_and_the_command_of_the_background_server(tmp_path):
    assert local_url(8737) == "http://127.0.0.1:8737"
    assert server_command(8737, tmp_path) == [
        sys.executable,
        "-m",
        "whylogs_songbird.server",
        "--host",
        "127.0.0.1",
        "--port",
        "8737",
        "--data-dir",
        str(tmp_path),
        "--list-sessions",
    ]


def test_the_health_token_is_the_stripped_file_of_the_data_dir(tmp_path):
    assert health_token(None) is None
    assert health_token(tmp_path) is None  # no file
    (tmp_path / "health.token").write_text(" tok-1\n", encoding="ascii")
    assert health_token(tmp_path) == "tok-1"
    (tmp_path / "health.token").write_text("  \n", encoding="ascii")
    assert health_token(tmp_path) is None
    (tmp_path / "health.token").write_bytes("tök".encode())
    assert health_token(tmp_path) is None


# -- what answers on the port ----------------------------------------------------------------------


class Health:
    """What the fake answers to ``/healthz`` (status, body, headers) and the tokens it was sent;
    ``for_token``: the body it answers instead to a request carrying that token."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {"status": "ok", "service": "songbird"}
        self.headers: dict[str, str] = {}
        self.tokens: list[str | None] = []
        self.stall = False
        self.for_token: dict[str, Any] = {}


@pytest.fixture
def health() -> Iterator[tuple[int, Health]]:
    answer = Health()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            answer.tokens.append(self.headers.get("X-Songbird-Health-Token"))
            if answer.stall:
                time.sleep(2)
            chosen = answer.for_token.get(self.headers.get("X-Songbird-Health-Token") or "", answer.body)
            body = chosen if isinstance(chosen, bytes) else json.dumps(chosen).encode()
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = QuietServer(("127.0.0.1", 0), Handler)
    with serving(httpd):
        yield httpd.server_address[1], answer


class QuietServer(http.server.ThreadingHTTPServer):
    """A loopback server that says nothing when a client hangs up first (a probe that gave up on a
    stalled answer leaves a broken pipe): any other error is reported as usual."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def test_nothing_listening_is_no_server():
    assert probe(free_port()) is None


def test_a_songbird_health_report_is_read_field_by_field(health, tmp_path):
    port, answer = health
    answer.body = {
        "status": "ok",
        "service": "songbird",
        "pid": 41,
        "data_dir": "/d",
        "started_at": 1_767_225_600_000,
        "sessions": 3,
        "version": "1.2",
        "stored_profiles": 7,
        "stored_bytes": 9000,
    }
    assert probe(port) == ServerStatus(
        url=f"http://127.0.0.1:{port}",
        pid=41,
        data_dir="/d",
        started_at=1_767_225_600_000,
        sessions=3,
        version="1.2",
        stored_profiles=7,
        stored_bytes=9000,
    )
    assert answer.tokens == [None]
    (tmp_path / "health.token").write_text("tok-9", encoding="ascii")
    probe(port, data_dir=tmp_path)
    assert answer.tokens[-1] == "tok-9"


def test_fields_of_the_wrong_type_are_not_told(health):
    port, answer = health
    answer.body = {"status": "ok", "pid": True, "data_dir": 5, "started_at": "x", "sessions": 2.5, "version": 1}
    status = probe(port)
    assert status is not None and status.url == f"http://127.0.0.1:{port}"
    told = (status.pid, status.data_dir, status.started_at, status.sessions, status.version)
    assert told == (None, None, None, None, None)
    assert (status.stored_profiles, status.stored_bytes) == (None, None)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, {"status": "starting"}, "{url}/healthz answered 200 without a songbird health report"),
        (200, [1], "{url}/healthz answered 200 without a songbird health report"),
        (200, b"<html>ok</html>", "{url}/healthz answered 200 without a songbird health report"),
        (404, {"status": "ok"}, "{url}/healthz answered 404 without a songbird health report"),
        (302, {"status": "ok"}, "{url}/healthz answered 302 without a songbird health report"),
        (200, {"status": "ok", "service": "dask"}, "{url}/healthz says it is 'dask', not songbird"),
    ],
)
def test_another_program_on_the_port_is_not_songbird(health, status, body, message):
    port, answer = health
    answer.status, answer.body = status, body
    answer.headers = {"Location": "http://127.0.0.1:1/healthz"} if status == 302 else {}
    with pytest.raises(NotSongbird) as caught:
        probe(port)
    assert str(caught.value) == message.format(url=f"http://127.0.0.1:{port}")


def test_a_songbird_older_than_the_service_field_is_songbird(health):
    port, answer = health
    answer.body = {"status": "ok", "pid": 1}
    assert probe(port).pid == 1


def test_a_program_that_accepts_but_never_answers_is_not_songbird(health):
    port, answer = health
    answer.stall = True
    with pytest.raises(NotSongbird) as caught:
        probe(port, timeout=0.3)
    assert str(caught.value) == f"http://127.0.0.1:{port} did not answer like a songbird server (ReadTimeout)"


def test_uptime_is_counted_from_the_start_and_never_negative():
    status = ServerStatus("u", 1, None, None, None, None)
    assert status.uptime_seconds is None
    started = int(time.time() * 1000) - 10_000
    assert 9.0 <= ServerStatus("u", 1, None, started, None, None).uptime_seconds < 60
    assert ServerStatus("u", 1, None, int(time.time() * 1000) + 60_000, None, None).uptime_seconds == 0.0


# -- ensure_server ---------------------------------------------------------------------------------


def settings_for(port: int, data_dir: Path):
    return resolve_settings({"local_port": port, "local_data_dir": data_dir}, environ={})


def test_a_running_server_is_used_and_announced_once(health, tmp_path, caplog, monkeypatch):
    port, answer = health
    answer.body = {"status": "ok", "pid": 424242}
    monkeypatch.setattr(background_server, "_ANNOUNCED", set())
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.local_server"):
        status = ensure_server(settings_for(port, tmp_path))
        again = ensure_server(settings_for(port, tmp_path))
    assert status == again and status.pid == 424242
    assert [r.getMessage() for r in caplog.records] == [
        f"songbird: no endpoint is set, so profiles go to the local songbird server at http://127.0.0.1:{port} "
        f"(data in {tmp_path}); stop it with `songbird server stop`."
    ]
    assert not (tmp_path / PID_FILE).exists() and not (tmp_path / LOCK_FILE).exists()  # nothing was started


def test_ensure_asks_with_the_data_dir_s_token(health, tmp_path):
    port, answer = health
    (tmp_path / "health.token").write_text("tok-3", encoding="ascii")
    ensure_server(settings_for(port, tmp_path))
    assert answer.tokens == ["tok-3"]


def test_another_server_or_a_restarted_one_is_announced_again(health, tmp_path, caplog, monkeypatch):
    port, answer = health
    monkeypatch.setattr(background_server, "_ANNOUNCED", set())
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.local_server"):
        for pid in (5, 5, 6, None, None):
            answer.body = {"status": "ok", "pid": pid}
            ensure_server(settings_for(port, tmp_path))
    assert len(caplog.records) == 3  # pid 5, pid 6 (a restart), and one that does not tell its pid
    assert {
        (5, f"http://127.0.0.1:{port}"),
        (6, f"http://127.0.0.1:{port}"),
        (0, f"http://127.0.0.1:{port}"),
    } == background_server._ANNOUNCED


def test_ensure_starts_a_server_when_nothing_answers(tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setattr(
        background_server, "server_command", lambda p, d: [sys.executable, "-S", "-c", FAKE_SERVER, str(p)]
    )
    status = ensure_server(settings_for(port, tmp_path / "data"))
    try:
        assert status.url == f"http://127.0.0.1:{port}" and read_pid_file(tmp_path / "data")["port"] == port
    finally:
        assert stop_server(settings_for(port, tmp_path / "data")).stopped_pid == status.pid


def test_the_announcement_names_the_server_s_own_data_dir(health, tmp_path, caplog, monkeypatch):
    port, answer = health
    answer.body = {"status": "ok", "data_dir": "/elsewhere"}
    monkeypatch.setattr(background_server, "_ANNOUNCED", set())
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.local_server"):
        ensure_server(settings_for(port, tmp_path))
    assert "(data in /elsewhere)" in caplog.records[0].getMessage()


def test_another_program_on_the_port_is_a_clear_error(health, tmp_path):
    port, answer = health
    answer.status = 404
    with pytest.raises(LocalServerError) as caught:
        ensure_server(settings_for(port, tmp_path))
    assert str(caught.value) == (
        f"Another program listens on 127.0.0.1:{port} (http://127.0.0.1:{port}/healthz answered 404 without a "
        "songbird health report), so the local songbird server cannot start there. Set another port for it "
        "(SONGBIRD_LOCAL_PORT or local_port=...), or set an endpoint (SONGBIRD_API_ENDPOINT or endpoint=...)."
    )
    assert caught.value.__suppress_context__


def test_without_the_server_extra_the_error_says_what_to_install(tmp_path, monkeypatch):
    real = background_server.importlib.util.find_spec
    monkeypatch.setattr(
        background_server.importlib.util,
        "find_spec",
        lambda name: None if name in ("uvicorn", "jinja2") else real(name),
    )
    with pytest.raises(LocalServerError) as caught:
        ensure_server(settings_for(free_port(), tmp_path / "d"))
    assert str(caught.value) == (
        "No endpoint is set, and the local songbird server cannot start: the server extra is not installed "
        '(uvicorn, jinja2 missing). Install it with pip install "whylogs-songbird[server]", or set an endpoint '
        "(SONGBIRD_API_ENDPOINT or endpoint=...)."
    )
    assert not (tmp_path / "d").exists()


# -- processes and the pid file --------------------------------------------------------------------


def sleeper(*name: str) -> subprocess.Popen[bytes]:
    """A process that sleeps; with ``name`` in its command line (e.g. our server's module). Returned
    once it runs (its /proc command line can be empty for a moment after the spawn)."""
    process = subprocess.Popen(
        [sys.executable, "-S", "-c", "import time; print(1, flush=True); time.sleep(120)", *name],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdout.readline() == b"1\n"
    return process


def test_the_pid_file_records_pid_and_port(tmp_path):
    assert read_pid_file(tmp_path) is None
    background_server._write_pid(tmp_path, 123, 8737)
    recorded = read_pid_file(tmp_path)
    assert (recorded["pid"], recorded["port"]) == (123, 8737)
    assert abs(recorded["started"] - time.time()) < 600
    for junk in ("not json", "[1]", '{"pid": "1"}', '{"port": 1}'):
        (tmp_path / PID_FILE).write_text(junk, encoding="utf-8")
        assert read_pid_file(tmp_path) is None


def test_the_log_tail_is_its_last_three_lines(tmp_path):
    assert background_server._tail(tmp_path / "none.log") == "no log"
    (tmp_path / "a.log").write_text("\n \n", encoding="utf-8")
    assert background_server._tail(tmp_path / "a.log") == "no output"
    (tmp_path / "a.log").write_text("one\n  two \nthree\nfour  \n\n", encoding="utf-8")
    assert background_server._tail(tmp_path / "a.log") == "two | three | four"
    assert background_server._tail(tmp_path / "a.log", lines=1) == "four"


# (not named with "processes": scripts/mutation deselects tests whose names have that word)
def test_only_a_process_running_our_server_module_looks_like_ours():
    ours, other = sleeper("whylogs_songbird.server"), sleeper("whylogs_songbird.serverless")
    try:
        assert background_server._looks_like_ours(ours.pid) is True
        assert background_server._looks_like_ours(other.pid) is False
    finally:
        for p in (ours, other):
            p.kill()
            p.wait()
    assert background_server._looks_like_ours(ours.pid) is False  # gone


def test_alive_and_terminate_a_process():
    process = sleeper()
    assert background_server._alive(process.pid) is True
    assert background_server._terminate(process.pid, timeout=10) is True
    process.wait()
    assert background_server._alive(process.pid) is False
    assert background_server._terminate(process.pid, timeout=1) is True  # already gone


def test_a_process_deaf_to_sigterm_is_killed_after_the_timeout():
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"1\n"  # SIGTERM is ignored from here on
    background_server._PROCESSES[stubborn.pid] = stubborn
    assert background_server._terminate(stubborn.pid, timeout=0.2) is True
    assert stubborn.wait(10) == -9 and stubborn.pid not in background_server._PROCESSES


# -- songbird server stop --------------------------------------------------------------------------


def test_stop_without_pid_file_or_server_says_none_runs(tmp_path):
    port = free_port()
    report = stop_server(settings_for(port, tmp_path))
    assert (report.stopped_pid, report.message) == (None, f"no local songbird server runs at http://127.0.0.1:{port}.")


def test_stop_leaves_a_server_it_did_not_start(health, tmp_path):
    port, answer = health
    answer.body = {"status": "ok", "pid": 77}
    report = stop_server(settings_for(port, tmp_path))
    assert (report.stopped_pid, report.message) == (
        None,
        f"the songbird server at http://127.0.0.1:{port} (pid 77) was not started by this package in {tmp_path}; "
        "stop it where it runs.",
    )


def test_stop_leaves_a_server_other_than_the_recorded_one(health, tmp_path):
    port, answer = health
    answer.body = {"status": "ok", "pid": 77}
    background_server._write_pid(tmp_path, 78, port)
    report = stop_server(settings_for(port, tmp_path))
    assert (report.stopped_pid, report.message) == (
        None,
        f"the songbird server at http://127.0.0.1:{port} (pid 77) is not the one this package started (pid 78); "
        "stop it where it runs.",
    )
    assert (tmp_path / PID_FILE).exists()


def test_stop_with_another_program_on_the_port_and_no_pid_file_says_none_runs(health, tmp_path):
    port, answer = health
    answer.status = 500
    report = stop_server(settings_for(port, tmp_path))
    assert report.message == f"no local songbird server runs at http://127.0.0.1:{port}."


def test_stop_removes_the_pid_file_of_a_dead_process(tmp_path):
    dead = sleeper()
    dead.kill()
    dead.wait()
    port = free_port()
    background_server._write_pid(tmp_path, dead.pid, port)
    report = stop_server(settings_for(port, tmp_path))
    assert (report.stopped_pid, report.message) == (
        None,
        f"no local songbird server runs at http://127.0.0.1:{port} (removed a stale pid file).",
    )
    assert not (tmp_path / PID_FILE).exists()


def test_stop_never_kills_a_recycled_pid(tmp_path, health):
    other = sleeper()
    try:
        port = free_port()
        background_server._write_pid(tmp_path, other.pid, port)
        report = stop_server(settings_for(port, tmp_path))
        assert report.message == f"no local songbird server runs at http://127.0.0.1:{port} (removed a stale pid file)."
        assert other.poll() is None and not (tmp_path / PID_FILE).exists()
        # a songbird that does not tell its pid (its token is another data dir's) is not ours either
        served, answer = health
        answer.body = {"status": "ok"}
        background_server._write_pid(tmp_path, other.pid, served)
        report = stop_server(settings_for(served, tmp_path))
        assert report.message == (
            f"the songbird server at http://127.0.0.1:{served} was not started by this package in {tmp_path} "
            "(removed a stale pid file)."
        )
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_stop_stops_the_recorded_server_and_forgets_its_announcement(tmp_path, monkeypatch):
    ours = sleeper("whylogs_songbird.server")
    port = free_port()
    background_server._write_pid(tmp_path, ours.pid, port)
    monkeypatch.setattr(background_server, "_ANNOUNCED", {(ours.pid, "u"), (1, "v")})
    report = stop_server(settings_for(port, tmp_path))
    assert (report.stopped_pid, report.message) == (
        ours.pid,
        f"stopped the local songbird server at http://127.0.0.1:{port} (pid {ours.pid}).",
    )
    assert ours.wait(10) is not None and not (tmp_path / PID_FILE).exists()
    assert {(1, "v")} == background_server._ANNOUNCED


def test_stop_that_cannot_stop_says_to_kill_by_hand(tmp_path, monkeypatch):
    ours = sleeper("whylogs_songbird.server")
    try:
        port = free_port()
        background_server._write_pid(tmp_path, ours.pid, port)
        monkeypatch.setattr(background_server, "_terminate", lambda pid: False)
        with pytest.raises(SongbirdConnectionError) as caught:
            stop_server(settings_for(port, tmp_path))
        assert str(caught.value) == f"The local songbird server (pid {ours.pid}) did not stop; kill it by hand."
        assert (tmp_path / PID_FILE).exists()
    finally:
        ours.kill()
        ours.wait()


def test_a_server_of_this_data_dir_on_another_port_is_moved(tmp_path, caplog):
    ours = sleeper("whylogs_songbird.server")
    background_server._write_pid(tmp_path, ours.pid, 8787)
    background_server._stop_one_on_another_port(8787, tmp_path)  # same port: left alone
    assert ours.poll() is None
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.local_server"):
        background_server._stop_one_on_another_port(8737, tmp_path)
    assert ours.wait(10) is not None
    assert [r.getMessage() for r in caplog.records] == [
        f"songbird: stopped the local songbird server on port 8787 (pid {ours.pid}) to start it on port 8737 "
        "(same data)."
    ]


def test_a_foreign_process_of_a_stale_pid_file_is_not_moved(tmp_path):
    other = sleeper()
    try:
        background_server._write_pid(tmp_path, other.pid, 8787)
        background_server._stop_one_on_another_port(8737, tmp_path)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    background_server._stop_one_on_another_port(8737, tmp_path / "none")  # no pid file: nothing to do


# -- starting --------------------------------------------------------------------------------------

#: A stand-in for the server's command: answers /healthz like a songbird server with its pid.
FAKE_SERVER = """
import http.server, json, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "service": "songbird", "pid": os.getpid()}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_started_server_is_waited_for_and_recorded(tmp_path, monkeypatch, caplog):
    port = free_port()
    monkeypatch.setattr(
        background_server, "server_command", lambda p, d: [sys.executable, "-S", "-c", FAKE_SERVER, str(p)]
    )
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.local_server"):
        status = background_server._start(port, tmp_path / "data")
    try:
        recorded = read_pid_file(tmp_path / "data")
        assert (recorded["pid"], recorded["port"]) == (status.pid, port)
        assert status.url == f"http://127.0.0.1:{port}"
        assert f"songbird: started the local songbird server at http://127.0.0.1:{port} (pid {status.pid})" in [
            r.getMessage() for r in caplog.records
        ]
        assert (tmp_path / "data" / LOG_FILE).read_text().strip() == "listening"
        assert background_server._start(port, tmp_path / "data") == status  # already there: not started twice
    finally:
        assert stop_server(settings_for(port, tmp_path / "data")).stopped_pid == status.pid


def test_a_server_that_exits_while_starting_shows_its_log(tmp_path, monkeypatch):
    crash = "import sys; print('a'); print('b'); print('port taken'); sys.exit(3)"
    monkeypatch.setattr(background_server, "server_command", lambda p, d: [sys.executable, "-S", "-c", crash])
    data = tmp_path / "data"
    with pytest.raises(LocalServerError) as caught:
        background_server._start(free_port(), data)
    assert str(caught.value) == (
        "The local songbird server exited with code 3 while starting: a | b | port taken "
        f"(full log: {data / LOG_FILE})."
    )
    assert not (data / PID_FILE).exists()


# -- how the server process is started ---------------------------------------------------------------

#: A stand-in for the server that tells, in its log, how it was started: its stdin, its session,
#: whether a descriptor of its parent's stayed open in it, and its data dir. Like the server it
#: writes a health token into its data dir and tells its pid only to requests that carry it.
TELLING_SERVER = """
import http.server, json, os, secrets, stat, sys
port, data_dir, leaked = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
token = secrets.token_hex(8)
with open(os.path.join(data_dir, "health.token"), "w") as f:
    f.write(token)
stdin, null = os.fstat(0), os.stat(os.devnull)
try:
    os.fstat(leaked)
    leaked_open = True
except OSError:
    leaked_open = False
facts = {
    "stdin_is_null": stat.S_ISCHR(stdin.st_mode) and stdin.st_rdev == null.st_rdev,
    "session_leader": os.getsid(0) == os.getpid(),
    "leaked_open": leaked_open,
    "data_dir": data_dir,
}
print(json.dumps(facts), flush=True)
print("and on stderr", file=sys.stderr, flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"status": "ok", "service": "songbird"}
        if self.headers.get("X-Songbird-Health-Token") == token:
            body["pid"] = os.getpid()
        data = json.dumps(body).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_a_started_server_runs_detached_with_its_output_in_the_log(tmp_path, monkeypatch):
    port, data = free_port(), tmp_path / "data"
    leaked, other_end = os.pipe()
    os.set_inheritable(leaked, True)
    stdin_read, stdin_write = os.pipe()  # the test's own stdin meanwhile: a pipe, not /dev/null
    saved_stdin = os.dup(0)
    command = [sys.executable, "-S", "-c", TELLING_SERVER]
    monkeypatch.setattr(background_server, "server_command", lambda p, d: [*command, str(p), str(d), str(leaked)])
    try:
        os.dup2(stdin_read, 0)
        status = background_server._start(port, data)
    finally:
        os.dup2(saved_stdin, 0)
        for fd in (saved_stdin, leaked, other_end, stdin_read, stdin_write):
            os.close(fd)
    try:
        assert status.pid == read_pid_file(data)["pid"]  # told with the token of its data dir
        assert background_server._PROCESSES[status.pid].pid == status.pid  # kept, so its exit is reaped
        facts, stderr = (data / LOG_FILE).read_text().splitlines()
        assert json.loads(facts) == {
            "stdin_is_null": True,
            "session_leader": True,
            "leaked_open": False,
            "data_dir": str(data),
        }
        assert stderr == "and on stderr"
    finally:
        assert stop_server(settings_for(port, data)).stopped_pid == status.pid


NOT_SONGBIRD = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_started_program_that_is_not_songbird_is_stopped(tmp_path, monkeypatch):
    port, data = free_port(), tmp_path / "data"
    monkeypatch.setattr(
        background_server, "server_command", lambda p, d: [sys.executable, "-S", "-c", NOT_SONGBIRD, str(p)]
    )
    with pytest.raises(LocalServerError) as caught:
        background_server._start(port, data)
    assert str(caught.value) == (
        f"Another program listens on 127.0.0.1:{port} (http://127.0.0.1:{port}/healthz answered 404 without a "
        "songbird health report), so the local songbird server cannot start there. Set another port for it "
        "(SONGBIRD_LOCAL_PORT or local_port=...), or set an endpoint (SONGBIRD_API_ENDPOINT or endpoint=...)."
    )
    pid = read_pid_file(data)["pid"]
    assert not background_server._alive(pid) and pid not in background_server._PROCESSES


def test_a_server_that_never_answers_is_stopped_after_the_start_timeout(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setattr(background_server, "START_TIMEOUT", 0.3)
    monkeypatch.setattr(
        background_server, "server_command", lambda p, d: [sys.executable, "-S", "-c", "import time; time.sleep(60)"]
    )
    with pytest.raises(LocalServerError) as caught:
        background_server._start(free_port(), data)
    assert str(caught.value) == (
        f"The local songbird server did not answer within 0.3 s of starting; see {data / LOG_FILE}."
    )
    pid = read_pid_file(data)["pid"]
    assert not background_server._alive(pid) and pid not in background_server._PROCESSES


def test_a_server_that_exits_after_removing_its_pid_file(tmp_path, monkeypatch):
    data = tmp_path / "data"
    # it waits for its pid file (written once it runs), removes it and exits
    script = (
        "import os, sys, time\n"
        "for _ in range(2000):\n"
        "    if os.path.exists(sys.argv[1]):\n"
        "        break\n"
        "    time.sleep(0.005)\n"
        "os.remove(sys.argv[1]); print('gone'); sys.exit(4)"
    )
    command = [sys.executable, "-S", "-c", script, str(data / PID_FILE)]
    monkeypatch.setattr(background_server, "server_command", lambda p, d: command)
    with pytest.raises(LocalServerError, match=r"^The local songbird server exited with code 4 while starting: gone "):
        background_server._start(free_port(), data)


def test_start_makes_the_data_dir_and_asks_with_its_token(health, tmp_path):
    port, answer = health
    data = tmp_path / "a" / "b"
    assert background_server._start(port, data).url == f"http://127.0.0.1:{port}"  # it answers: nothing started
    assert (data / LOCK_FILE).exists() and not (data / PID_FILE).exists()
    (data / "health.token").write_text("tok-5", encoding="ascii")
    background_server._start(port, data)
    assert answer.tokens == [None, "tok-5"]


def test_a_start_lock_held_too_long_is_a_clear_error(tmp_path, monkeypatch):
    from filelock import FileLock

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr(background_server, "START_TIMEOUT", -9.8)  # the lock is waited for START_TIMEOUT + 10 s
    with FileLock(str(data / LOCK_FILE)), pytest.raises(LocalServerError) as caught:
        background_server._start(free_port(), data)
    assert str(caught.value) == (
        f"Another process held {data / LOCK_FILE} for 0.2 s while starting the local songbird server; try again."
    )


def test_a_log_that_is_not_utf8_is_shown_with_replacements(tmp_path):
    (tmp_path / "a.log").write_bytes("naïve\nbad \xff byte\n".encode().replace(b"\xc3\xbf", b"\xff"))
    assert background_server._tail(tmp_path / "a.log") == "naïve | bad \ufffd byte"


def test_start_refuses_a_program_that_took_the_port_meanwhile(health, tmp_path):
    port, answer = health
    answer.status = 404
    with pytest.raises(LocalServerError) as caught:
        background_server._start(port, tmp_path)
    assert str(caught.value).startswith(
        f"Another program listens on 127.0.0.1:{port} (http://127.0.0.1:{port}/healthz answered 404 without a "
        "songbird health report), so the local songbird server cannot start there."
    )


def test_start_leaves_a_recorded_server_of_the_same_port(tmp_path, monkeypatch):
    """Only a server recorded on another port is moved: one recorded on this port is left running
    (here it does not answer; the new one is started beside it)."""
    ours = sleeper("whylogs_songbird.server")
    port, data = free_port(), tmp_path / "data"
    data.mkdir()
    background_server._write_pid(data, ours.pid, port)
    monkeypatch.setattr(
        background_server, "server_command", lambda p, d: [sys.executable, "-S", "-c", FAKE_SERVER, str(p)]
    )
    try:
        status = background_server._start(port, data)
        assert ours.poll() is None
        assert stop_server(settings_for(port, data)).stopped_pid == status.pid
    finally:
        ours.kill()
        ours.wait()


def test_stop_trusts_the_pid_a_server_tells_with_the_data_dir_s_token(health, tmp_path):
    """The server told its pid to the data dir's token: it is the recorded one, whatever its command line."""
    port, answer = health
    told = sleeper()  # not named like our server
    try:
        (tmp_path / "health.token").write_text("tok-7", encoding="ascii")
        answer.body = {"status": "ok"}  # without the token: no pid
        answer.for_token = {"tok-7": {"status": "ok", "pid": told.pid}}
        background_server._write_pid(tmp_path, told.pid, port)
        report = stop_server(settings_for(port, tmp_path))
        assert report.stopped_pid == told.pid and told.wait(10) is not None
    finally:
        told.kill()
        told.wait()


@pytest.mark.parametrize(
    ("alive", "ours", "stops", "message"),
    [
        (False, None, None, "no local songbird server runs at {url} (removed a stale pid file)."),
        (True, False, None, "no local songbird server runs at {url} (removed a stale pid file)."),
        (True, True, True, "stopped the local songbird server at {url} (pid 4242)."),
    ],
)
def test_a_pid_file_removed_meanwhile_by_another_stop_is_no_error(tmp_path, monkeypatch, alive, ours, stops, message):
    """Two ``songbird server stop`` at once: the other one removes the pid file while this one
    looks at the process (the process checks stand in for the other stop here)."""
    port = free_port()
    background_server._write_pid(tmp_path, 4242, port)

    def meanwhile(answer: bool | None) -> Any:
        def check(pid: int, *args: Any) -> bool | None:
            assert pid == 4242
            (tmp_path / PID_FILE).unlink(missing_ok=True)
            return answer

        return check

    last = {False: "_alive", True: "_looks_like_ours"}[alive] if stops is None else "_terminate"
    monkeypatch.setattr(background_server, "_alive", meanwhile(alive) if last == "_alive" else lambda pid: alive)
    monkeypatch.setattr(
        background_server, "_looks_like_ours", meanwhile(ours) if last == "_looks_like_ours" else lambda pid: ours
    )
    monkeypatch.setattr(background_server, "_terminate", meanwhile(stops))
    report = stop_server(settings_for(port, tmp_path))
    assert report.message == message.format(url=f"http://127.0.0.1:{port}")
    assert not (tmp_path / PID_FILE).exists()


def test_a_probe_waits_two_seconds_by_default(monkeypatch):
    asked: list[Any] = []

    def refused(url: str, **kwargs: Any) -> Any:
        asked.append((url, kwargs["timeout"]))
        raise requests.exceptions.ConnectionError("refused")

    monkeypatch.setattr(background_server.requests, "get", refused)
    assert probe(8737) is None
    assert asked == [("http://127.0.0.1:8737/healthz", 2.0)]


def test_a_port_whose_backlog_is_full_accepts_no_connection():
    """A program that listens but never accepts: once its backlog is full, connecting times out."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        with pytest.raises(NotSongbird) as caught:
            probe(port, timeout=0.2)
        assert str(caught.value) == f"http://127.0.0.1:{port} accepted no connection in 0.2 s"
    finally:
        for sock in (*fillers, listener):
            sock.close()


def test_a_forked_child_does_not_poll_its_parent_s_servers():
    """In a forked child the servers its parent spawned are not its children: it asks the system."""
    process = sleeper()
    background_server._PROCESSES[process.pid] = process
    read_end, write_end = os.pipe()
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover - the forked child
            try:
                os.write(write_end, b"1" if background_server._alive(process.pid) else b"0")
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        assert os.read(read_end, 1) == b"1"
        assert background_server._alive(process.pid) is True
    finally:
        background_server._PROCESSES.pop(process.pid, None)
        process.kill()
        process.wait()
        os.close(read_end)
        os.close(write_end)


def test_the_old_module_name_still_gives_the_documented_functions():
    """``whylogs_songbird.local_server`` (the old name) hands out the same three functions."""
    from whylogs_songbird import local_server

    assert local_server.__all__ == ["ensure_server", "server_command", "stop_server"]
    for name in local_server.__all__:
        assert getattr(local_server, name) is getattr(background_server, name)
