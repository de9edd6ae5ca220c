"""Every ``songbird`` command survives a reader that goes away (``| head -1``), a closed stdout and
Ctrl-C: no traceback, no ``unexpected BrokenPipeError``, and the command's own exit code from the
table in docs/cli.md (issue 22 item 4). Run as subprocesses, as a user runs them.
"""

import http.server
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import http_server_thread


def as_from_a_terminal() -> None:
    """In the child before exec: SIGINT at its default and unblocked, as a shell starts a command
    (the test worker's own signal state, which whatever ran in it before may have changed, is not
    the CLI's to inherit)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def env_for(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGBIRD_", "WHYLABS_"))}
    env.update(
        WHYLOGS_NO_ANALYTICS="True",
        SONGBIRD_CONFIG_DIR=str(tmp_path / "config"),
        SONGBIRD_LOCAL_PORT=os.environ["SONGBIRD_LOCAL_PORT"],  # a free port (conftest): no server there
        SONGBIRD_LOCAL_DATA_DIR=str(tmp_path / "server"),
        **extra,
    )
    return env


def run_with_stdout(args: list[str], stdout: int, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whylogs_songbird", *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
        env=env, timeout=120,
    )


def run_into_a_pipe_nobody_reads(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """stdout is a pipe whose reader is already gone: the first write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run_with_stdout(args, write_end, env)
    finally:
        os.close(write_end)


def assert_clean(done: subprocess.CompletedProcess, code: int) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr


#: Commands that print to stdout without a network call, and their exit codes here.
LOCAL_COMMANDS = [
    (["--version"], 0),
    (["--help"], 0),
    (["session", "show"], 0),
    (["outbox", "list"], 0),
    (["server", "status"], 1),  # none runs: 1 is "not running", not a broken pipe
    (["profile", "no-such-file.csv"], 2),
]


@pytest.mark.parametrize(("args", "code"), LOCAL_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_reader_that_went_away_or_a_closed_stdout_leaves_the_exit_code_alone(tmp_path, args, code):
    env = env_for(tmp_path)
    assert_clean(run_into_a_pipe_nobody_reads(args, env), code)
    closed = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "whylogs_songbird", *args],
        stderr=subprocess.PIPE, text=True, env=env, timeout=120,
    )
    assert_clean(closed, code)


def test_a_publish_into_head_still_publishes_and_exits_0(server, tmp_path):
    data = tmp_path / "loans.csv"
    pd.DataFrame({"amount": [1.0, 2.5, 3.0], "term": [12, 24, 36]}).to_csv(data, index=False)
    env = env_for(tmp_path, SONGBIRD_API_ENDPOINT=server.url)
    done = run_into_a_pipe_nobody_reads(["profile", str(data)], env)
    assert_clean(done, 0)
    assert "published 1 profile" in done.stderr


def test_ctrl_c_while_waiting_on_a_server_is_one_line_and_exit_130(tmp_path):
    asked = threading.Event()
    release = threading.Event()

    class Silent(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            asked.set()
            release.wait(60)

        def log_message(self, *args):
            pass

    with http_server_thread(Silent) as url:
        env = env_for(tmp_path, SONGBIRD_API_ENDPOINT=url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "whylogs_songbird", "session", "new", "--timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            preexec_fn=as_from_a_terminal,
        )
        try:
            assert asked.wait(120), "the command never asked the server"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted."], err
    assert out == ""
