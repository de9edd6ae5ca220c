"""The embedded default (issue 9 items 1 and 12): with nothing configured, profiles go to a local
songbird server started in the background; one per port even when many processes start at once;
`songbird server status|stop`; clear errors for a foreign program on the port or a missing extra;
and a writer per call costs nothing extra (shared publisher per process and settings).

Every server a test starts runs on a free port (SONGBIRD_LOCAL_PORT), never 8787, and is stopped
by the fixture that made its environment.
"""

import concurrent.futures
import http.server
import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import free_port, http_server_thread

import whylogs_songbird  # noqa: F401
from whylogs_songbird.config import resolve_settings
from whylogs_songbird.local_server import probe, read_pid_file, server_command

WRITE = (
    "import json, whylogs as why, whylogs_songbird, pandas as pd\n"
    "from whylogs_songbird.local_server import probe\n"
    "from whylogs_songbird.config import resolve_settings\n"
    "ok, url = why.log(pd.DataFrame({'a': [1, 2]})).writer('songbird').write()\n"
    "s = resolve_settings()\n"
    "print(json.dumps({'ok': ok, 'url': url, 'pid': probe(s.local_port, data_dir=s.server_data_dir).pid,\n"
    "                  'session': whylogs_songbird.current_session()}))\n"
)


def fresh_env(tmp_path: Path, port: int) -> dict:
    """Nothing set: fresh HOME and XDG dirs, no SONGBIRD_*/WHYLABS_* variables (but a test port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGBIRD_", "WHYLABS_", "XDG_"))}
    env.update(
        WHYLOGS_NO_ANALYTICS="True",
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
        SONGBIRD_LOCAL_PORT=str(port),
    )
    return env


def songbird(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whylogs_songbird", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def machine(tmp_path):
    """A fresh user's environment on a free port; the background server is stopped afterwards."""
    env = fresh_env(tmp_path, free_port())
    yield env
    songbird("server", "stop", env=env)
    pid_file = tmp_path / "xdg-data" / "whylogs-songbird" / "server" / "server.pid"
    assert not pid_file.exists(), "songbird server stop removes the pid file"


def write_in_a_new_process(env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", WRITE], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_write_with_nothing_configured_starts_a_local_server_and_a_second_process_reuses_it(machine, tmp_path):
    port = int(machine["SONGBIRD_LOCAL_PORT"])
    first = write_in_a_new_process(machine)
    assert first["ok"] is True and first["url"].startswith(f"http://127.0.0.1:{port}/")
    assert requests.get(first["url"], timeout=30).status_code == 200, "the link opens after the writer's process ended"
    home = requests.get(f"http://127.0.0.1:{port}/", timeout=30)
    assert f'href="/sessions/{first["session"]}"' in home.text, "the local default server lists its sessions"
    data_dir = tmp_path / "xdg-data" / "whylogs-songbird" / "server"
    assert read_pid_file(data_dir)["pid"] == first["pid"]
    assert (data_dir / "server.log").exists()

    second = write_in_a_new_process(machine)
    assert second["ok"] is True
    assert second["pid"] == first["pid"], "the second process reuses the running server"
    assert second["session"] == first["session"], "... and the stored session"

    status = songbird("server", "status", env=machine)
    assert status.returncode == 0, status.stderr
    assert f"address:  http://127.0.0.1:{port}" in status.stdout
    assert f"pid:      {first['pid']}" in status.stdout and f"data dir: {data_dir}" in status.stdout
    assert "sessions: 1" in status.stdout and "uptime:" in status.stdout
    assert re.search(r"stored:   [12] profiles, [0-9]+\.[0-9] MB", status.stdout), "the disk used is shown"

    stop = songbird("server", "stop", env=machine)
    assert stop.returncode == 0 and f"pid {first['pid']}" in stop.stderr
    assert probe(port) is None
    with pytest.raises(requests.ConnectionError):
        requests.get(first["url"], timeout=5)
    assert songbird("server", "stop", env=machine).returncode == 0, "stop with none running is fine"
    not_running = songbird("server", "status", env=machine)
    assert not_running.returncode == 1 and "not running" in not_running.stdout


def test_many_processes_starting_at_once_end_with_exactly_one_server(machine, tmp_path):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: write_in_a_new_process(machine), range(4)))
    assert all(a["ok"] for a in answers)
    assert len({a["pid"] for a in answers}) == 1, answers
    assert len({a["session"] for a in answers}) == 1, "one stored session for the endpoint"
    port = machine["SONGBIRD_LOCAL_PORT"]
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    running = [line for line in ps.splitlines() if "whylogs_songbird.server" in line and f"--port {port}" in line]
    assert len(running) == 1, running


def test_the_spawn_command_is_built_in_one_place(tmp_path):
    command = server_command(18787, tmp_path)
    assert command[:3] == [sys.executable, "-m", "whylogs_songbird.server"]
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "18787"
    assert command[command.index("--data-dir") + 1] == str(tmp_path)
    assert "--list-sessions" in command  # only this loopback server for one user lists sessions by default


def test_another_program_on_the_port_is_a_clear_error_naming_the_setting(caplog):
    class NotSongbird(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><title>something else</title></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with http_server_thread(NotSongbird) as url:
        port = int(url.rsplit(":", 1)[1])
        with caplog.at_level(logging.ERROR, logger="whylogs_songbird"):
            ok, message = why.log(pd.DataFrame({"a": [1]})).writer("songbird").option(local_port=port).write()
    assert ok is False
    assert f"127.0.0.1:{port}" in message and "SONGBIRD_LOCAL_PORT" in message and "SONGBIRD_API_ENDPOINT" in message
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None


def test_without_the_server_extra_the_error_says_how_to_install_it(tmp_path):
    script = "import sys\nsys.modules['fastapi'] = None  # as if the server extra were not installed\n" + WRITE.replace(
        "'pid': probe(s.local_port, data_dir=s.server_data_dir).pid,", ""
    )
    env = fresh_env(tmp_path, free_port())
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["ok"] is False
    assert 'pip install "whylogs-songbird[server]"' in answer["url"] and "SONGBIRD_API_ENDPOINT" in answer["url"]
    assert not (tmp_path / "xdg-data" / "whylogs-songbird" / "server" / "server.pid").exists()


def test_in_process_write_logs_once_where_profiles_go_and_how_to_stop(caplog):
    settings = resolve_settings()
    assert settings.embedded
    with caplog.at_level(logging.INFO, logger="whylogs_songbird"):
        for _ in range(2):
            ok, url = why.log(pd.DataFrame({"a": [1, 2]})).writer("songbird").write()
            assert ok, url
    said = [r.getMessage() for r in caplog.records if "no endpoint is set" in r.getMessage()]
    assert len(said) == 1 and "songbird server stop" in said[0] and str(settings.server_data_dir) in said[0]
    links = [r.getMessage() for r in caplog.records if r.getMessage().startswith("songbird: published")]
    assert len(links) == 2 and all(settings.endpoint in line for line in links)


# -- item 12: a new writer per call shares what is expensive ------------------------------------


def test_new_writers_share_one_publisher_per_settings(server):
    from whylogs_songbird.publish import shared_publisher

    view = why.log(pd.DataFrame({"a": [1, 2]})).view()
    writers = [view.writer("songbird").option(endpoint=server.url) for _ in range(3)]
    for writer in writers:
        assert writer.write()[0]
    publishers = {id(w._writer._get_publisher()) for w in writers}
    assert len(publishers) == 1
    assert shared_publisher(resolve_settings({"endpoint": server.url})) is writers[0]._writer._get_publisher()
    other = view.writer("songbird").option(endpoint=server.url, timeout=7)
    assert other._writer._get_publisher() is not writers[0]._writer._get_publisher(), "other settings, other pool"
    assert server.stats()["create_session"] == 1


def test_new_writers_in_many_threads_make_one_session(server):
    view = why.log(pd.DataFrame({"a": [1, 2]})).view()

    def write(_):
        return view.writer("songbird").option(endpoint=server.url).write()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(write, range(16)))
    assert all(ok for ok, _ in answers), answers
    stats = server.stats()
    assert stats["create_session"] == 1 and stats["put"] == 16


def _write_in_child(endpoint: str, queue) -> None:
    view = why.log(pd.DataFrame({"a": [3, 4]})).view()
    queue.put(view.writer("songbird").option(endpoint=endpoint).write())


def test_a_forked_child_builds_its_own_pool_and_publishes(server):
    view = why.log(pd.DataFrame({"a": [1, 2]})).view()
    assert view.writer("songbird").option(endpoint=server.url).write()[0]  # the parent's pool is open
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_write_in_child, args=(server.url, queue))
    child.start()
    ok, url = queue.get(timeout=120)
    child.join(60)
    assert child.exitcode == 0 and ok, url
    assert view.writer("songbird").option(endpoint=server.url).write()[0], "the parent still publishes after the fork"
    assert server.stats()["put"] == 3 and server.stats()["create_session"] == 1
