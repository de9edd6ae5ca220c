"""``songbird check`` as a newcomer runs it (issue 22 item 3): with no endpoint it starts the local
server like every other command; ``--session`` defaults to the stored session, takes a pasted
observatory link, and an unknown ``session-…`` id is "no such session", not "not a session id".
"""

import os
import subprocess
import sys

import pandas as pd
import pytest
import whylogs as why

import whylogs_songbird
from whylogs_songbird.config import resolve_settings
from whylogs_songbird.local_server import probe, stop_server

MONITORS = '[[monitor]]\ncolumns = ["amount"]\nmetric = "count"\nmin = 1\n'


def songbird(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The command with this test's settings (conftest: a free local port, temporary dirs)."""
    return subprocess.run(
        [sys.executable, "-m", "whylogs_songbird", *args], capture_output=True, text=True, timeout=180,
        env={**os.environ, "WHYLOGS_NO_ANALYTICS": "True", **env},
    )


@pytest.fixture
def published(tmp_path):
    """A batch published with nothing configured (the embedded default); the local server runs."""
    ok, url = why.log(pd.DataFrame({"amount": [1.0, 2.0, 3.0]})).writer("songbird").write()
    assert ok, url
    settings = resolve_settings()
    session = whylogs_songbird.current_session()
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(MONITORS)
    return settings, session, monitors


def test_check_starts_the_local_server_and_uses_the_stored_session(published):
    settings, session, monitors = published
    stop_server(settings)
    assert probe(settings.local_port) is None
    done = songbird("check", "--monitors", str(monitors))
    assert done.returncode == 0, done.stderr
    assert f"OK: no monitor failed on 1 month bucket of {session}" in " ".join(done.stdout.split())
    assert probe(settings.local_port) is not None, "the local server was started for the check"


def test_check_takes_a_pasted_link_and_says_which_session_is_unknown(published, tmp_path):
    settings, session, monitors = published
    for link in (f"{settings.endpoint}/sessions/{session}/timeline", f"{settings.endpoint}/sessions/{session}"):
        done = songbird("check", "--session", link, "--monitors", str(monitors))
        assert done.returncode == 0, done.stderr
        assert session in done.stdout

    unknown = songbird("check", "--session", "session-doesnotexist", "--monitors", str(monitors))
    assert unknown.returncode == 2
    said = " ".join(unknown.stderr.lower().split())
    assert "session session-doesnotexist is unknown to this server" in said and "not a session id" not in said

    nothing = songbird("check", "--session", f"{settings.endpoint}/", "--monitors", str(monitors))
    assert nothing.returncode == 2 and "names no session" in nothing.stderr

    fresh = songbird("check", "--monitors", str(monitors), SONGBIRD_CONFIG_DIR=str(tmp_path / "fresh"))
    assert fresh.returncode == 2
    assert f"No session is stored for {settings.endpoint}: pass --session" in " ".join(fresh.stderr.split())
