"""The embedded default (issue 9 items 1 and 12): with nothing configured, profiles go to a local
songbird server started in the background; one per port even when many processes start at once;
`songbird server status|stop`; clear errors for a foreign program on the port or a missing extra;
and a writer per call costs nothing extra (shared publisher per process and settings).

Every server a test starts runs on a free port (SONGBIRD_LOCAL_PORT), never the default port, and is stopped
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
from whylogs_songbird.config import DEFAULT_LOCAL_PORT, LEGACY_LOCAL_PORT, resolve_settings
from whylogs_songbird.local_server import ensure_server, probe, read_pid_file, server_command, stop_server
from whylogs_songbird.outbox import Outbox
from whylogs_songbird.publish import flush_outbox
from whylogs_songbird.session import store_for

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

    # issue 22 item 1: the profile was not lost, it waits in the outbox; once the port is free, a flush
    # starts the local server there and delivers it
    assert "saved to the outbox" in message
    settings = resolve_settings({"local_port": port})
    outbox = Outbox(settings.outbox_path)
    [entry] = outbox.entries()
    assert entry.endpoint == f"http://127.0.0.1:{port}" and "Another program listens" in entry.error
    report = flush_outbox(outbox, settings)
    try:
        assert [e.id for e in report.delivered] == [entry.id] and not report.failed
        assert outbox.entries() == []
        assert requests.get(report.delivered[0].observatory_url, timeout=30).status_code == 200
    finally:
        stop_server(settings)


def test_the_default_port_is_no_common_data_tools_default():
    """Dask's dashboard took 8787 first (issue 22): the default is nobody's well-known port."""
    taken = {
        8787: "Dask dashboard, RStudio Server", 8786: "Dask scheduler", 8888: "Jupyter", 5000: "MLflow, Flask",
        8265: "Ray dashboard", 6379: "Ray GCS, Redis", 10001: "Ray client", 4040: "Spark UI", 18080: "Spark history",
        7077: "Spark master", 6006: "TensorBoard", 8501: "Streamlit", 8080: "Airflow, Spark worker UI",
        7860: "Gradio", 8050: "Dash", 5006: "Bokeh, Panel", 8000: "uvicorn, Django, Ray Serve",
        3000: "Grafana, Dagster",
        4200: "Prefect", 8088: "Superset, YARN", 9090: "Prometheus", 9000: "MinIO", 5432: "PostgreSQL",
        8866: "Voila", 5555: "Flower", 8793: "Airflow logs", 2718: "marimo",
    }
    assert DEFAULT_LOCAL_PORT not in taken
    assert resolve_settings({}, environ={}).endpoint == f"http://127.0.0.1:{DEFAULT_LOCAL_PORT}"
    assert DEFAULT_LOCAL_PORT not in range(32768, 61000), "outside Linux's range of outgoing ports"


def test_a_session_stored_for_the_old_default_port_is_carried_over(tmp_path):
    old = f"http://127.0.0.1:{LEGACY_LOCAL_PORT}"
    (tmp_path / "sessions.json").write_text(json.dumps({
        "userId": "u-1",
        "sessions": {old: {"sessionId": "session-old", "createdAt": 1, "references": {"train": "ref-1"}}},
    }))
    settings = resolve_settings({"config_dir": tmp_path}, environ={})
    assert settings.embedded and settings.local_port == DEFAULT_LOCAL_PORT
    store = store_for(settings)
    assert store.get(settings.endpoint) == "session-old"
    assert store.reference_id(settings.endpoint, "session-old", "train") == "ref-1"
    assert store.get(old) == "session-old", "the old entry stays (for outbox entries saved for it)"
    store.set(settings.endpoint, "session-new")
    store_for(settings)
    assert store.get(settings.endpoint) == "session-new", "carried over once, never over a newer session"
    explicit = resolve_settings({"config_dir": tmp_path, "endpoint": "http://127.0.0.1:9"}, environ={})
    assert store_for(explicit).get("http://127.0.0.1:9") is None


def test_a_server_left_on_another_port_moves_to_the_new_one_with_its_data(tmp_path):
    """One background server per data dir: after an upgrade, the one on the old port is stopped."""
    data_dir = tmp_path / "server"
    old = resolve_settings({"local_port": free_port(), "local_data_dir": data_dir})
    new = resolve_settings({"local_port": free_port(), "local_data_dir": data_dir})
    try:
        ok, url = why.log(pd.DataFrame({"a": [1]})).writer("songbird").option(local_port=old.local_port,
                                                                              local_data_dir=data_dir).write()
        assert ok, url
        first = probe(old.local_port)
        second = ensure_server(new)
        assert second.pid != first.pid and probe(old.local_port) is None
        assert read_pid_file(data_dir)["port"] == new.local_port
        moved = url.replace(f":{old.local_port}/", f":{new.local_port}/")
        assert requests.get(moved, timeout=30).status_code == 200, "the same data, at the new port"
    finally:
        stop_server(new)
        stop_server(old)


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
    assert "saved to the outbox" in answer["url"], "nothing is lost because the local server could not start"
    assert len(list((tmp_path / "xdg-config" / "whylogs-songbird" / "outbox").glob("*.json"))) == 1
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
