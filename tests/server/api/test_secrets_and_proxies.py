"""API keys kept off the command line, forwarded headers believed only from configured proxies, and
``/healthz`` details only for the server's own user; over real HTTP on loopback."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import ANY_ORG_KEY, STORAGE_NAMES, free_port, health

from whylogs_songbird.server.cli import main, parse_args

TIMEOUT = 10
TS = 1_700_000_000_000
#: A forged client address (TEST-NET-3: documentation only; nothing is ever sent to it).
FORGED = "203.0.113.77"
FORGING = {"X-Forwarded-For": FORGED, "X-Forwarded-Proto": "https"}
FILE_KEY = "filekey.s3cr3t-from-file:org-file"
ENV_KEY = "envkey.s3cr3t-from-env"


def write_key_file(path: Path) -> Path:
    path.write_text(f"# keys of the team server\n\n  {FILE_KEY}  \n# retired: old.key\n{ANY_ORG_KEY}\n")
    path.chmod(0o600)
    return path


# -- API keys from a file or the environment ----------------------------------------------------


def test_api_keys_from_a_file_are_accepted_and_comments_are_not(server_factory, tmp_path):
    server = server_factory(api_keys=[], api_key_file=write_key_file(tmp_path / "keys"))
    session_id = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
    url = f"{server.url}/v0/sessions/{session_id}"
    for key, status in ((ANY_ORG_KEY, 200), ("# retired: old.key", 401), ("old.key", 401), ("", 401)):
        assert requests.get(url, headers={"X-API-Key": key}, timeout=TIMEOUT).status_code == status, key
    claim = requests.post(f"{url}/claim", params={"org_id": "org-file"}, headers={"X-API-Key": FILE_KEY}, timeout=10)
    assert claim.status_code == 200, claim.text
    assert FILE_KEY not in repr(server.config)


def test_a_key_file_adds_to_the_keys_given_and_the_environment_fills_in_for_neither(tmp_path, monkeypatch):
    monkeypatch.setenv("SONGBIRD_SERVER_API_KEYS", ENV_KEY)
    keys = write_key_file(tmp_path / "keys")
    assert parse_args(["--api-key", "one.k", "--api-key-file", str(keys)]).api_keys == ["one.k", FILE_KEY, ANY_ORG_KEY]
    assert parse_args(["--api-key-file", str(keys)]).api_keys == [FILE_KEY, ANY_ORG_KEY]
    assert parse_args([]).api_keys == [ENV_KEY]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "cannot read the API key file"), ("# only a comment: secret.value\n\n", "holds no key")],
)
def test_a_bad_key_file_stops_the_start_naming_the_file_not_its_content(tmp_path, capsys, content, fragment):
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    assert main(["--api-key-file", str(path), "--port", str(free_port()), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and str(path) in err and "secret.value" not in err
    assert not (tmp_path / "d").exists(), "nothing started"


# -- a real server process: the command line and the access log -----------------------------------


class ServerProcess:
    """``python -m whylogs_songbird.server`` with its access log on; ``stop()`` returns its log."""

    def __init__(self, tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / f"data-{self.port}"
        command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), *extra]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # uvicorn's access log goes to stdout
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # refused, or accepted before the app is ready
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not come up: {self.stop()}")
            time.sleep(0.1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[0]


def _access_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if '"GET /v0/sessions/' in line]


def test_keys_from_a_file_or_the_environment_stay_out_of_ps_and_forged_addresses_out_of_the_log(tmp_path):
    keys = write_key_file(tmp_path / "keys")
    server = ServerProcess(tmp_path, "--api-key-file", str(keys), env={"SONGBIRD_SERVER_API_KEYS": ""})
    try:
        command_line = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode()
        assert str(keys) in command_line and "s3cr3t" not in command_line
        session_id = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
        headers = {"X-API-Key": FILE_KEY, **FORGING}
        got = requests.get(f"{server.url}/v0/sessions/{session_id}", headers=headers, timeout=TIMEOUT)
        assert got.status_code == 200, got.text
    finally:
        log = server.stop()
    [line] = _access_lines(log)
    assert "127.0.0.1:" in line and FORGED not in log, line
    assert "s3cr3t" not in log and "chmod 600" not in log, "a private key file draws no warning"

    env_server = ServerProcess(tmp_path, env={"SONGBIRD_SERVER_API_KEYS": ENV_KEY})
    try:
        assert "s3cr3t" not in Path(f"/proc/{env_server.proc.pid}/cmdline").read_bytes().decode()
        session_id = requests.post(f"{env_server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
        got = requests.get(f"{env_server.url}/v0/sessions/{session_id}", headers={"X-API-Key": ENV_KEY}, timeout=10)
        assert got.status_code == 200, got.text
    finally:
        env_server.stop()


def test_a_configured_proxy_sets_the_logged_address(tmp_path):
    keys = write_key_file(tmp_path / "keys")
    keys.chmod(0o644)  # readable by everyone: the server warns
    server = ServerProcess(tmp_path, "--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.1", "--api-key-file", str(keys))
    try:
        session_id = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
        assert requests.get(f"{server.url}/v0/sessions/{session_id}", headers=FORGING, timeout=10).status_code == 401
    finally:
        log = server.stop()
    [line] = _access_lines(log)
    assert FORGED in line, line
    assert f"{keys} holds API keys and other users may read it: chmod 600 it." in log


# -- forwarded headers and the links the server hands out ---------------------------------------


@pytest.mark.parametrize("storage_config", STORAGE_NAMES, indirect=True)
@pytest.mark.parametrize("trusted", [False, True])
def test_forwarded_proto_changes_links_only_from_a_configured_proxy(server_factory, trusted):
    server = server_factory(forwarded_allow_ips=["127.0.0.1"] if trusted else [])
    session_id = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, headers=FORGING, timeout=10)
    slot = requests.post(
        f"{server.url}/v0/sessions/{session_id.json()['id']}/upload",
        json={"datasetTimestamp": TS},
        headers=FORGING,
        timeout=TIMEOUT,
    ).json()
    scheme = "https://" if trusted else "http://"
    assert slot["observatoryUrl"].startswith(scheme + "127.0.0.1:"), slot["observatoryUrl"]
    if (
        slot["uploadUrl"].startswith(("http://127.0.0.1:", "https://127.0.0.1:"))
        and "/v0/uploads/" in slot["uploadUrl"]
    ):
        assert slot["uploadUrl"].startswith(scheme), slot["uploadUrl"]  # this server's own URL (embedded store)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("10.0.0.1/8", "10.0.0.1/8"), ("proxy.example", "proxy.example"), ("127.0.0.1,,999.1.1.1", "999.1.1.1")],
)
def test_forwarded_allow_ips_must_be_addresses_or_networks(value, fragment):
    with pytest.raises(ValueError, match="forwarded_allow_ips") as caught:
        parse_args(["--forwarded-allow-ips", value])
    assert fragment in str(caught.value)


def test_forwarded_allow_ips_default_to_none():
    assert parse_args([]).forwarded_allow_ips == []
    assert parse_args(["--forwarded-allow-ips", " 10.0.0.0/8 ,::1,*"]).forwarded_allow_ips == ["10.0.0.0/8", "::1", "*"]


# -- /healthz ---------------------------------------------------------------------------------------


def test_healthz_tells_strangers_ok_and_its_own_user_the_rest(tmp_path):
    server = ServerProcess(tmp_path, "--workers", "2")
    try:
        stranger = requests.get(f"{server.url}/healthz", timeout=TIMEOUT)
        assert stranger.status_code == 200 and stranger.json() == {"status": "ok"}
        own = health(server.url, server.data_dir)  # every worker process knows the one token
        assert own["data_dir"] == str(server.data_dir) and isinstance(own["pid"], int) and own["sessions"] == 0
    finally:
        server.stop()
