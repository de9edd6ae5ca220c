"""The ``songbird`` command: normal use of each command, and every kind of bad input.

Most tests run the command in-process with typer's CliRunner against a real local server
(fixture ``server``); a few run it as a subprocess, as a user would. Every test points the CLI
at a loopback endpoint and at its own config dir.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
from conftest import ANY_ORG_KEY, ORG_KEY, make_profile_bytes
from typer.testing import CliRunner

from whylogs_songbird.cli import app, detect_format, parse_timestamp
from whylogs_songbird.errors import ConfigError
from whylogs_songbird.session import current_session


def _pyarrow_works() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


#: pandas reads Parquet through pyarrow; pyarrow 26+ needs numpy 2, and whylogs 1.6 needs numpy < 2.
needs_pyarrow = pytest.mark.skipif(
    not _pyarrow_works(), reason="pyarrow cannot be imported (pyarrow>=26 needs numpy 2)"
)

#: Calls that write anything to a server (a session, an upload slot or profile bytes).
WRITES = ("create_session", "upload", "reference", "references", "put", "claim")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No stray settings; a closed loopback port as the default endpoint, so nothing ever leaves the machine."""
    for name in (
        "SONGBIRD_API_KEY",
        "SONGBIRD_ORG_ID",
        "SONGBIRD_SESSION_ID",
        "WHYLABS_API_ENDPOINT",
        "SONGBIRD_TIMEOUT",
        "SONGBIRD_MAX_RETRIES",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SONGBIRD_API_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SONGBIRD_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def config_dir(tmp_path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def run(runner):
    def invoke(*args, input=None, env=None):
        return runner.invoke(app, [str(a) for a in args], input=input, env=env)

    return invoke


@pytest.fixture
def csv_file(tmp_path) -> Path:
    path = tmp_path / "loans.csv"
    pd.DataFrame(
        {
            "amount": [100.0, 250.5, 80.0, 1200.0, 310.0, 55.0],
            "term": [12, 24, 12, 60, 36, 12],
            "city": ["paris", "oslo", "paris", "rome", "oslo", "paris"],
        }
    ).to_csv(path, index=False)
    return path


def writes(server) -> dict:
    """The server's write calls so far, from its ``/_local/stats``."""
    stats = requests.get(f"{server.url}/_local/stats", timeout=10).json()
    return {op: stats.get(op, 0) for op in WRITES if stats.get(op, 0)}


def assert_one_error_line(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    return lines[0]


def urls_in(text: str) -> list[str]:
    return [word for word in text.split() if word.startswith("http://")]


# -- the command itself ---------------------------------------------------------------------


def test_no_arguments_shows_help(run):
    result = run()
    assert result.exit_code == 0
    for command in ("serve", "demo", "profile", "upload", "session"):
        assert command in result.stdout


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0 and "0.1.0" in result.stdout


def test_unknown_option_is_one_line_usage_error(run, csv_file):
    result = run("profile", csv_file, "--bogus")
    assert_one_error_line(result, 2, "--bogus", "songbird profile --help")


def test_bad_option_value_is_usage_error(run, csv_file):
    assert_one_error_line(run("profile", csv_file, "--timeout", "soon"), 2, "--timeout")
    assert_one_error_line(run("profile", csv_file, "--timeout", "-1"), 2, "timeout")
    assert_one_error_line(run("profile", csv_file, "--endpoint", "localhost:8787"), 2, "not an http(s) URL")
    assert_one_error_line(run("profile", csv_file, "--max-retries", "100"), 2, "max_retries")


# -- songbird profile -----------------------------------------------------------------------


def test_profile_csv_publishes_a_batch_and_prints_its_link(run, server, csv_file, config_dir):
    result = run("profile", csv_file, "--endpoint", server.url)
    assert result.exit_code == 0, result.output
    (url,) = urls_in(result.stdout)
    assert url.startswith(server.url + "/resources/model-1/profiles?profile=")
    assert requests.get(url, timeout=10).status_code == 200
    assert writes(server) == {"create_session": 1, "upload": 1, "put": 1}
    session_id = current_session(endpoint=server.url, config_dir=config_dir)
    assert session_id and session_id in url
    assert result.stderr.startswith("published 1 profile (6 rows, 3 columns of loans.csv)")


def test_profile_reuses_the_stored_session(run, server, csv_file):
    for _ in range(2):
        assert run("profile", csv_file, "--endpoint", server.url).exit_code == 0
    assert writes(server) == {"create_session": 1, "upload": 2, "put": 2}


def test_profile_as_reference_with_segments(run, server, csv_file, config_dir):
    result = run("profile", csv_file, "--reference", "train", "--segment-by", "city", "--endpoint", server.url)
    assert result.exit_code == 0, result.output
    session_id = current_session(endpoint=server.url, config_dir=config_dir)
    stored = server.store.list_profiles(session_id, "reference")
    assert sorted(p.alias for p in stored) == ["train[city=oslo]", "train[city=paris]", "train[city=rome]"]
    assert server.stats().get("references") == 1, "several references go up in one batch call"
    assert len(urls_in(result.stdout)) >= 3


def test_profile_segmented_on_two_columns(run, server, csv_file, config_dir):
    result = run("profile", csv_file, "-s", "city", "-s", "term", "--endpoint", server.url)
    assert result.exit_code == 0, result.output
    session_id = current_session(endpoint=server.url, config_dir=config_dir)
    tags = {p.segment_tags for p in server.store.list_profiles(session_id, "batch")}
    assert (("city", "paris"), ("term", "12")) in tags
    assert len(tags) == 4


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2024-05-01", 1714521600000),
        ("2024-05-01T12:00:00Z", 1714564800000),
        ("2024-05-01T14:00:00+02:00", 1714564800000),
        ("1714521600000", 1714521600000),
    ],
)
def test_profile_timestamp_iso_or_epoch_ms(run, server, csv_file, config_dir, given, expected):
    result = run("profile", csv_file, "--timestamp", given, "--endpoint", server.url)
    assert result.exit_code == 0, result.output
    session_id = current_session(endpoint=server.url, config_dir=config_dir)
    (stored,) = server.store.list_profiles(session_id, "batch")
    assert stored.dataset_timestamp == expected
    assert str(expected) in result.stdout


@pytest.mark.parametrize("suffix", [pytest.param(".parquet", marks=needs_pyarrow), ".jsonl", ".tsv", ".csv.gz"])
def test_profile_reads_other_formats(run, server, tmp_path, suffix):
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5], "kind": ["a", "b", "a"]})
    path = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    else:
        frame.to_csv(path, index=False)
    result = run("profile", path, "--endpoint", server.url)
    assert result.exit_code == 0, result.output
    assert writes(server)["put"] == 1


def _bad_inputs(tmp_path: Path) -> dict:
    """name -> (path, extra args, a fragment of the error line)."""
    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,x\n2,y\n")
    not_utf8 = tmp_path / "latin1.csv"
    not_utf8.write_bytes("name,city\nJosé,Málaga\n".encode("latin-1"))
    malformed = tmp_path / "malformed.csv"
    malformed.write_text("a,b\n1,2\n3,4,5,6\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    corrupt_parquet = tmp_path / "corrupt.parquet"
    corrupt_parquet.write_bytes(b"PAR1 this is not really parquet")
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"a": 1}\n{"a": \n')
    unknown_ext = tmp_path / "data.xlsx"
    unknown_ext.write_text("whatever")
    a_dir = tmp_path / "a-directory.csv"
    a_dir.mkdir()
    return {
        "missing file": (tmp_path / "nope.csv", [], "no such file"),
        # Tests run as root, for whom chmod 000 does not make a file unreadable: a directory
        # and undecodable bytes stand in for "unreadable".
        "directory": (a_dir, [], "is a directory"),
        "invalid encoding": (not_utf8, [], "not UTF-8"),
        "malformed csv": (malformed, [], "Expected 2 fields"),
        "empty csv": (empty, [], "is empty"),
        "header only": (header_only, [], "no rows"),
        "corrupt parquet": (corrupt_parquet, [], "not a readable parquet file"),
        "bad json lines": (bad_jsonl, [], "not a readable jsonl file"),
        "unknown format": (unknown_ext, [], "cannot tell its format"),
        "bad --format": (good, ["--format", "xls"], "--format"),
        "unknown segment column": (good, ["--segment-by", "nope"], "unknown --segment-by column 'nope'"),
        "repeated segment column": (good, ["-s", "a", "-s", "a"], "given twice"),
        "garbage timestamp": (good, ["--timestamp", "yesterday"], "--timestamp 'yesterday'"),
        "timestamp in seconds": (good, ["--timestamp", "1714521600"], "looks like epoch seconds"),
        "timestamp before 1970": (good, ["--timestamp", "1960-01-01"], "before 1970"),
        "empty reference name": (good, ["--reference", " "], "reference profile name"),
    }


BAD_INPUT_NAMES = [
    "missing file",
    "directory",
    "invalid encoding",
    "malformed csv",
    "empty csv",
    "header only",
    pytest.param("corrupt parquet", marks=needs_pyarrow),
    "bad json lines",
    "unknown format",
    "bad --format",
    "unknown segment column",
    "repeated segment column",
    "garbage timestamp",
    "timestamp in seconds",
    "timestamp before 1970",
    "empty reference name",
]


@pytest.mark.parametrize("case", BAD_INPUT_NAMES)
def test_profile_bad_input_is_one_line_exit_2_and_touches_nothing(run, server, tmp_path, config_dir, case):
    path, extra, fragment = _bad_inputs(tmp_path)[case]
    result = run("profile", path, *extra, "--endpoint", server.url)
    assert_one_error_line(result, 2, fragment)
    assert writes(server) == {}, "nothing may reach the server on bad input"
    assert not (config_dir / "sessions.json").exists(), "nothing may be written to the session on bad input"


def test_verbose_adds_the_traceback(run, tmp_path):
    result = run("profile", tmp_path / "nope.csv", "--verbose")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_unreachable_endpoint_exits_1_and_stores_no_session(run, csv_file, config_dir):
    closed = f"http://127.0.0.1:{free_port()}"
    result = run("profile", csv_file, "--endpoint", closed, "--max-retries", "0")
    line = assert_one_error_line(result, 1, "could not reach", "127.0.0.1", "songbird outbox flush")
    assert "Traceback" not in result.stderr and "create_session" in line
    assert current_session(endpoint=closed, config_dir=config_dir) is None


def test_outbox_keeps_what_an_unreachable_server_missed_and_flush_delivers_it(run, server_factory, csv_file, tmp_path):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    down = run("profile", csv_file, "--endpoint", endpoint, "--max-retries", "0", "--timestamp", "2024-05-01")
    assert down.exit_code == 1

    listed = run("outbox", "list")
    assert listed.exit_code == 0 and "1 profile waiting" in listed.stderr
    (line,) = listed.stdout.splitlines()
    assert "batch 2024-05-01" in line and endpoint in line and "age " in line
    assert "last error:" in line and "connection was refused" in line

    still_down = run("outbox", "flush", "--max-retries", "0")
    assert_one_error_line(still_down, 1, "still waiting in the outbox")
    assert "tries 1" in run("outbox", "list").stdout

    server = server_factory(port=port, data_dir=tmp_path / "late-server")
    flushed = run("outbox", "flush", "--from", endpoint)
    assert flushed.exit_code == 0, flushed.output
    (url,) = urls_in(flushed.stdout)
    assert requests.get(url, timeout=10).status_code == 200
    assert writes(server)["put"] == 1
    assert run("outbox", "list").stdout == ""
    assert run("outbox", "flush").exit_code == 0, "flushing an empty outbox is fine"


def test_failed_upload_exits_1_with_the_reason(run, server_factory, csv_file, config_dir):
    from starlette.responses import JSONResponse

    async def refuse_puts(request):
        if request.method == "PUT":
            return JSONResponse({"message": "disk full"}, status_code=507)
        return None

    server = server_factory(request_hooks=[refuse_puts])
    result = run("profile", csv_file, "--endpoint", server.url, "--max-retries", "0")
    assert result.exit_code == 1, result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "0 of 1 profiles published" in error_lines[0] and "disk full" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# -- songbird upload ------------------------------------------------------------------------


@pytest.fixture
def profile_files(tmp_path) -> list[Path]:
    paths = []
    for seed in range(3):
        path = tmp_path / f"profile-{seed}.bin"
        path.write_bytes(make_profile_bytes(n_rows=5 + seed, seed=seed))
        paths.append(path)
    return paths


def test_upload_batch_profiles(run, server, profile_files):
    result = run("upload", *profile_files, "--endpoint", server.url, "--timestamp", "2024-05-02")
    assert result.exit_code == 0, result.output
    assert writes(server) == {"create_session": 1, "upload": 3, "put": 3}
    assert len(urls_in(result.stdout)) >= 3
    assert result.stderr.startswith("published 3 profiles")


def test_upload_references_in_one_batch_call(run, server, profile_files, config_dir):
    names = ["train", "test", "holdout"]
    args = [a for name in names for a in ("--reference", name)]
    result = run("upload", *profile_files, *args, "--endpoint", server.url)
    assert result.exit_code == 0, result.output
    assert writes(server) == {"create_session": 1, "references": 1, "put": 3}
    session_id = current_session(endpoint=server.url, config_dir=config_dir)
    stored = {p.alias: p.size for p in server.store.list_profiles(session_id, "reference")}
    assert set(stored) == set(names)
    for name in names:
        assert name in result.stdout
    for url in urls_in(result.stdout):
        assert requests.get(url, timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("missing", "no such file"),
        ("corrupt", "not a serialized whylogs profile"),
        ("directory", "is a directory"),
        ("too few names", "give one name per file"),
        ("duplicate names", "given twice"),
    ],
)
def test_upload_bad_input(run, server, profile_files, tmp_path, config_dir, case, fragment):
    files = list(profile_files)
    extra: list = []
    if case == "missing":
        files.append(tmp_path / "gone.bin")
    elif case == "corrupt":
        bad = tmp_path / "corrupt.bin"
        bad.write_bytes(b"\x00\x01 not a profile")
        files.append(bad)
    elif case == "directory":
        files.append(tmp_path)
    elif case == "too few names":
        extra = ["--reference", "only-one"]
    else:
        extra = ["-r", "a", "-r", "b", "-r", "a"]
    result = run("upload", *files, *extra, "--endpoint", server.url)
    assert_one_error_line(result, 2, fragment)
    assert writes(server) == {}
    assert not (config_dir / "sessions.json").exists()


def test_upload_without_files_is_usage_error(run):
    result = run("upload")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")


# -- songbird session -----------------------------------------------------------------------


def test_session_show_new_forget(run, server, config_dir):
    shown = run("session", "show", "--endpoint", server.url)
    assert shown.exit_code == 0 and "none stored" in shown.stdout
    assert writes(server) == {}, "show makes no network call"

    created = run("session", "new", "--endpoint", server.url)
    assert created.exit_code == 0, created.output
    session_id = created.stdout.strip()
    assert session_id.startswith("session-")
    assert current_session(endpoint=server.url, config_dir=config_dir) == session_id

    shown = run("session", "show", "--endpoint", server.url)
    assert session_id in shown.stdout and str(config_dir) in shown.stdout

    forgotten = run("session", "forget", "--endpoint", server.url)
    assert forgotten.exit_code == 0 and session_id in forgotten.stdout
    assert current_session(endpoint=server.url, config_dir=config_dir) is None
    again = run("session", "forget", "--endpoint", server.url)
    assert again.exit_code == 0 and "no session" in again.stdout


def test_session_new_against_unreachable_endpoint(run):
    result = run("session", "new", "--endpoint", f"http://127.0.0.1:{free_port()}", "--max-retries", "0")
    assert_one_error_line(result, 1, "could not reach")


def test_session_claim_with_key_from_env(run, server, config_dir):
    session_id = run("session", "new", "--endpoint", server.url).stdout.strip()
    result = run(
        "session", "claim", "--org-id", "org-test", "--endpoint", server.url, env={"SONGBIRD_API_KEY": ORG_KEY}
    )
    assert result.exit_code == 0, result.output
    assert session_id in result.stdout and "org-test" in result.stdout
    assert ORG_KEY not in result.output
    assert server.store.get_session(session_id).claimed_org == "org-test"
    assert current_session(endpoint=server.url, config_dir=config_dir) is None


def test_session_claim_prompts_for_the_key_without_echoing_it(run, server):
    session_id = run("session", "new", "--endpoint", server.url).stdout.strip()
    result = run("session", "claim", "--org-id", "org-any", "--endpoint", server.url, input=ANY_ORG_KEY + "\n")
    assert result.exit_code == 0, result.output
    assert "API key" in result.stderr
    assert ANY_ORG_KEY not in result.output
    assert server.store.get_session(session_id).claimed_org == "org-any"


def test_session_claim_org_from_env(run, server):
    run("session", "new", "--endpoint", server.url)
    result = run(
        "session", "claim", "--endpoint", server.url, env={"SONGBIRD_API_KEY": ORG_KEY, "SONGBIRD_ORG_ID": "org-test"}
    )
    assert result.exit_code == 0, result.output


def test_session_claim_with_a_wrong_key_exits_1(run, server, config_dir):
    session_id = run("session", "new", "--endpoint", server.url).stdout.strip()
    result = run(
        "session", "claim", "--org-id", "org-test", "--endpoint", server.url, env={"SONGBIRD_API_KEY": "wrong.key"}
    )
    line = assert_one_error_line(result, 1, "401")
    assert "wrong.key" not in result.output and "wrong.key" not in line
    assert current_session(endpoint=server.url, config_dir=config_dir) == session_id, "a failed claim forgets nothing"


def test_session_claim_into_another_org_than_the_keys(run, server):
    run("session", "new", "--endpoint", server.url)
    result = run(
        "session", "claim", "--org-id", "org-other", "--endpoint", server.url, env={"SONGBIRD_API_KEY": ORG_KEY}
    )
    assert_one_error_line(result, 1, "403")


@pytest.mark.parametrize(
    ("setup", "args", "input", "fragment"),
    [
        (True, [], None, "--org-id"),
        (False, ["--org-id", "org-test"], None, "nothing to claim"),
        (True, ["--org-id", "org-test"], "", "needs an API key"),
        (True, ["--org-id", "org-test"], "   \n", "needs an API key"),
    ],
    ids=["no org", "no stored session", "no key (EOF)", "blank key"],
)
def test_session_claim_usage_errors(run, server, setup, args, input, fragment):
    if setup:
        run("session", "new", "--endpoint", server.url)
    before = writes(server)
    result = run("session", "claim", *args, "--endpoint", server.url, input=input)
    assert result.exit_code == 2, result.output
    assert "error: " in result.stderr.strip().splitlines()[-1]  # after the prompt, when there was one
    assert fragment in result.stderr
    assert writes(server) == before


def test_session_show_honours_session_id_env(run, server):
    result = run("session", "show", "--endpoint", server.url, env={"SONGBIRD_SESSION_ID": "session-pinned"})
    assert result.exit_code == 0 and "session-pinned" in result.stdout


# -- helpers --------------------------------------------------------------------------------


def test_parse_timestamp():
    assert parse_timestamp("2024-05-01") == 1714521600000
    assert parse_timestamp("2024-05-01T00:00:00z") == 1714521600000
    assert parse_timestamp(" 1714521600000 ") == 1714521600000
    with pytest.raises(ConfigError):
        parse_timestamp("1714521600")
    with pytest.raises(ValueError):
        parse_timestamp("May 1st")


def test_detect_format():
    assert detect_format(Path("a.CSV")) == "csv"
    assert detect_format(Path("a.jsonl.gz")) == "jsonl"
    assert detect_format(Path("a.pq")) == "parquet"
    assert detect_format(Path("a.txt"), "tsv") == "tsv"
    with pytest.raises(ValueError):
        detect_format(Path("noext"))


# -- as a user runs it: subprocesses --------------------------------------------------------


def subprocess_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGBIRD_", "WHYLABS_"))}
    env.update({"WHYLOGS_NO_ANALYTICS": "True", "SONGBIRD_CONFIG_DIR": str(tmp_path / "config"), **extra})
    return env


def test_python_dash_m_profile_and_missing_file(server, csv_file, tmp_path):
    env = subprocess_env(tmp_path, SONGBIRD_API_ENDPOINT=server.url)
    ok = subprocess.run(
        [sys.executable, "-m", "whylogs_songbird", "profile", str(csv_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert urls_in(ok.stdout)
    missing = subprocess.run(
        [sys.executable, "-m", "whylogs_songbird", "profile", str(tmp_path / "nope.csv")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.csv'}: no such file."]
    assert missing.stdout == ""


class Serving:
    """``songbird serve`` in a subprocess, up and answering /healthz; Ctrl-C (SIGINT) on stop()."""

    def __init__(self, tmp_path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "server-data"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "whylogs_songbird",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(tmp_path),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not come up: {self.proc.communicate()}")
            time.sleep(0.2)

    def stop(self) -> str:
        """Send Ctrl-C; return what the server wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[1]


def test_serve_runs_until_ctrl_c(tmp_path):
    serving = Serving(tmp_path)
    try:
        created = requests.post(f"{serving.url}/v0/sessions", json={"userId": "u"}, timeout=10)
        assert created.status_code == 200
    finally:
        stderr = serving.stop()
    assert serving.proc.returncode == 0, stderr
    assert serving.url in stderr and "stopped" in stderr
    assert "Traceback" not in stderr
    assert (serving.data_dir / "songbird.sqlite3").exists()


def test_serve_with_faults_answers_some_requests_with_errors(tmp_path):
    serving = Serving(tmp_path, "--fault-rate", "1", "--fault-seed", "7")
    try:
        answers = []
        for _ in range(5):
            try:
                answers.append(
                    requests.post(f"{serving.url}/v0/sessions", json={"userId": "u"}, timeout=10).status_code
                )
            except requests.ConnectionError:
                answers.append("dropped")
        assert all(a in (500, 503, 429, "dropped") for a in answers), answers
        stats = requests.get(f"{serving.url}/_local/stats", timeout=10).json()
        assert sum(v for k, v in stats.items() if k.startswith("fault_")) == 5
    finally:
        serving.stop()


def test_serve_bad_fault_rate_is_usage_error(run):
    result = run("serve", "--fault-rate", "1.5")
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_serve_on_a_busy_port_fails_with_one_line(run, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--port", port, "--data-dir", tmp_path / "d")
    assert_one_error_line(result, 1, f"cannot listen on 127.0.0.1:{port}")


def test_serve_bad_port_is_usage_error(run):
    result = run("serve", "--port", "70000")
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_session_file_is_json_with_user_id(run, server, csv_file, config_dir):
    assert run("profile", csv_file, "--endpoint", server.url).exit_code == 0
    data = json.loads((config_dir / "sessions.json").read_text())
    assert data["userId"] and server.url in data["sessions"]


def test_an_expired_session_is_renewed_with_a_one_line_warning(run, server, csv_file, config_dir):
    config_dir.mkdir(parents=True)
    stale = "session-" + "A" * 24
    (config_dir / "sessions.json").write_text(
        json.dumps({"userId": "u-1", "sessions": {server.url: {"sessionId": stale, "createdAt": 0}}})
    )
    result = run("profile", csv_file, "--endpoint", server.url)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and stale in warnings[0] and "unknown or expired" in warnings[0]
    fresh = current_session(endpoint=server.url, config_dir=config_dir)
    assert fresh != stale and fresh in result.stdout


def test_the_cli_leaves_the_library_logging_as_it_found_it(run, tmp_path):
    import logging

    package = logging.getLogger("whylogs_songbird")
    before = (package.level, package.propagate, list(package.handlers))
    run("profile", tmp_path / "nope.csv", "--verbose")
    run("session", "show")
    assert (package.level, package.propagate, list(package.handlers)) == before
