"""Issue 9's rough edges, over real HTTP on loopback: failures as one line that names the reason,
"session not found" decided by operation and status, duplicate uploads, rolling loggers,
comparison links, outbox management, one name for the reference option, the CLI's help and the
shape of the package (no import-time side effects, old import paths)."""

import http.server
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import http_server_thread
from scripted_transport import scripted_server
from typer.testing import CliRunner

import whylogs_songbird
from whylogs_songbird.client import HOSTED_ENDPOINT, SongbirdClient, connection_reason, is_session_not_found
from whylogs_songbird.errors import SessionNotFoundError, SongbirdApiError, SongbirdConnectionError
from whylogs_songbird.models import LogReferenceRequest


@pytest.fixture
def scripted():
    yield from scripted_server()


def df(seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"a": [seed, seed + 1, seed + 2], "b": ["x", "y", "z"]})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- item 4: expected failures are one line --------------------------------------------------


def test_refused_connection_is_one_error_line_naming_the_reason(caplog, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird"):
        ok, message = why.log(df()).writer("songbird").option(endpoint=endpoint, max_retries=0, outbox=False).write()
    assert ok is False and "connection was refused" in message
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    line = errors[0].getMessage()
    assert "connection was refused" in line and "Check that the server is running" in line
    assert errors[0].exc_info is None, "no traceback at ERROR"
    assert "MaxRetryError" not in line and "NewConnectionError" not in line and ".." not in line
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records), "the traceback is at DEBUG"


def test_tls_to_a_plain_http_port_is_named(server):
    client = SongbirdClient(server.url.replace("http://", "https://"), max_retries=0, timeout=5)
    with pytest.raises(SongbirdConnectionError) as info:
        client.create_session("u")
    assert "TLS (https) was spoken to a port that speaks plain HTTP" in str(info.value)
    assert "Use http:// instead of https://" in str(info.value)


def test_a_server_that_never_answers_is_a_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections (the kernel does) but never answers
        client = SongbirdClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=(2, 0.5), max_retries=0)
        with pytest.raises(SongbirdConnectionError) as info:
            client.create_session("u")
    assert "timed out" in str(info.value) and "MaxRetryError" not in str(info.value)


def test_name_not_resolved_is_named_without_a_lookup():
    # Built by hand: a test never resolves a name (no traffic beyond loopback).
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    cause = NameResolutionError("no-such-host.invalid", None, socket.gaierror(-2, "Name or service not known"))
    error = requests.exceptions.ConnectionError(MaxRetryError(None, "/", cause))
    reason, todo = connection_reason(error)
    assert reason == "the host name was not resolved" and "host name" in todo


def test_501_never_says_retried_and_no_doubled_full_stop(scripted):  # noqa: F811
    handler, url = scripted
    handler.script = [(501, {"Content-Type": "application/json"}, b'{"message": "Not implemented."}')]
    with pytest.raises(SongbirdApiError) as info:
        SongbirdClient(url, max_retries=3, backoff_factor=0.01).create_session("u")
    message = str(info.value)
    assert "retried" not in message and ".." not in message and "Not implemented" in message
    assert len(handler.seen) == 1, "a 501 is not retried"


def test_503_says_how_often_it_was_retried(scripted):  # noqa: F811
    handler, url = scripted
    handler.script = [(503, {"Retry-After": "0"}, b'{"message": "busy."}')]
    with pytest.raises(SongbirdApiError) as info:
        SongbirdClient(url, max_retries=2, backoff_factor=0.01).create_session("u")
    assert "after 2 retries" in str(info.value) and ".." not in str(info.value)


def test_a_failure_against_the_hosted_default_says_so():
    client = SongbirdClient(HOSTED_ENDPOINT, max_retries=0)
    response = requests.Response()
    response.status_code, response._content = 404, b'{"message": "no such route"}'
    error = client._error("create_session", response)
    assert "hosted WhyLabs service" in str(error) and "remove the endpoint setting" in str(error)
    local = SongbirdClient("http://127.0.0.1:1", max_retries=0)._error("create_session", response)
    assert "hosted" not in str(local)


# -- item 11: "session not found" by operation and status ------------------------------------

SESSION = "session-abcdefabcdefabcdef"


def _call(client: SongbirdClient, operation: str) -> None:
    calls = {
        "create_session": lambda: client.create_session("u"),
        "get_session": lambda: client.get_session(SESSION, api_key="k.s"),
        "create_dataset_profile_upload": lambda: client.create_dataset_profile_upload(SESSION, 1_700_000_000_000),
        "create_reference_profile_upload": lambda: client.create_reference_profile_upload(SESSION, "r"),
        "batch_create_reference_profile_upload": lambda: client.batch_create_reference_profile_upload(
            SESSION, [LogReferenceRequest(alias="r")]
        ),
        "get_session_profile_observatory_link": lambda: client.get_session_profile_observatory_link(SESSION, [1]),
        "claim_guest_session": lambda: client.claim_guest_session(SESSION, "org-1", api_key="k.s"),
        "upload_profile": lambda: client.upload_profile(client.endpoint + "/upload/x?sig=1", b"bytes"),
    }
    calls[operation]()


@pytest.mark.parametrize(
    "operation, status, message, gone",
    [
        ("create_dataset_profile_upload", 404, "whatever", True),
        ("create_reference_profile_upload", 410, "", True),
        ("batch_create_reference_profile_upload", 404, "", True),
        ("get_session_profile_observatory_link", 404, "", True),
        ("get_session", 404, "", True),
        ("claim_guest_session", 404, "", True),
        ("create_dataset_profile_upload", 400, "Session expired", True),
        ("create_dataset_profile_upload", 400, "datasetTimestamp must be an integer", False),
        ("create_dataset_profile_upload", 400, "session tags are malformed", False),
        ("upload_profile", 404, "unknown upload", False),
        ("create_session", 404, "session not found", False),
    ],
)
def test_session_not_found_is_decided_by_operation_and_status(scripted, operation, status, message, gone):  # noqa: F811
    handler, url = scripted
    handler.script = [(status, {"Content-Type": "application/json"}, json.dumps({"message": message}).encode())]
    with pytest.raises(SongbirdApiError) as info:
        _call(SongbirdClient(url, max_retries=0), operation)
    assert isinstance(info.value, SessionNotFoundError) is gone
    assert is_session_not_found(operation, status, message) is gone


# -- item 8: a duplicate upload is a warning ----------------------------------------------------


class _DuplicateSaying(http.server.BaseHTTPRequestHandler):
    """Gives upload slots on itself and answers PUTs with X-Songbird-Duplicate-Of (as the local server will)."""

    def _json(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if self.path == "/v0/sessions":
            self._json({"id": "session-dupdupdupdupdupdup"})
        else:
            self._json({"id": "log-new", "uploadUrl": f"{base}/put/log-new?signature=s", "observatoryUrl": f"{base}/o"})

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("X-Songbird-Duplicate-Of", "log-earlier")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_put_answered_as_a_duplicate_logs_one_warning(caplog):
    with http_server_thread(_DuplicateSaying) as url, caplog.at_level(logging.WARNING, logger="whylogs_songbird"):
        writer = why.log(df()).writer("songbird").option(endpoint=url)
        ok, _ = writer.write()
    assert ok
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "log-earlier" in warnings[0] and "ignored" in warnings[0]
    assert writer._writer.last_result.profiles[0].duplicate_of == "log-earlier"


# -- item 5: rolling loggers ----------------------------------------------------------------------


def test_rolling_logger_publishes_each_interval_and_skips_empty_ones_quietly(server, caplog):
    caplog.set_level(logging.DEBUG, logger="whylogs_songbird")
    rolling = why.logger(mode="rolling", interval=1, when="S", base_name="rolling")
    rolling.append_writer("songbird", endpoint=server.url)
    writer = rolling._writers[0]
    try:
        rolling.log(df())
        deadline = time.monotonic() + 60
        while (writer.last_result is None or not writer.last_result.ok) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert writer.last_result is not None and writer.last_result.ok
        link = writer.last_result.observatory_url
        assert requests.get(link, timeout=30).status_code == 200
        while writer.last_result.ok and time.monotonic() < deadline:  # the next interval has no data
            time.sleep(0.1)
        assert writer.last_result.error and "empty" in writer.last_result.error
    finally:
        rolling.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "an empty interval is never an ERROR"
    assert any(r.levelno == logging.DEBUG and "nothing to publish" in r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.INFO and link in r.getMessage() for r in caplog.records), "links at INFO"


def test_last_result_reflects_a_failed_write():
    writer = why.log(df()).writer("songbird").option(endpoint=f"http://127.0.0.1:{closed_port()}", max_retries=0)
    ok, _ = writer.write()
    assert ok is False
    assert writer._writer.last_result is not None and not writer._writer.last_result.ok
    assert "refused" in writer._writer.last_result.summary()


# -- item 6: one name per thing --------------------------------------------------------------------


def test_reference_profile_name_everywhere(server):
    opts = {"endpoint": server.url}
    result = whylogs_songbird.publish(why.log(df()), reference_profile_name="train", **opts)
    assert result.profiles[0].alias == "train"
    ok, _ = why.log(df()).writer("songbird").option(reference_profile_name="test", **opts).write()
    assert ok
    with pytest.raises(whylogs_songbird.ConfigError, match="did you mean 'reference_profile_name'"):
        whylogs_songbird.publish(why.log(df()), reference_name="old", **opts)


# -- item 7: comparison links ------------------------------------------------------------------------


def test_compare_batches_with_a_reference_published_earlier(server):
    opts = {"endpoint": server.url}
    whylogs_songbird.publish(why.log(df(100)), reference_profile_name="train", **opts)
    stamps = [1_714_521_600_000 + day * 86_400_000 for day in range(5)]
    results = [whylogs_songbird.publish(why.log(df(i)), dataset_timestamp=s, **opts) for i, s in enumerate(stamps)]
    combined = whylogs_songbird.PublishResult(
        endpoint=server.url, profiles=[p for r in results for p in r.profiles]
    )
    links = combined.compare_with("train", **opts)
    assert len(links) == 3, "the reference and up to 2 batches per link"
    for link in links:
        assert requests.get(link, timeout=30).status_code == 200
        assert "profile=ref-" in link
    assert all(str(s) in "".join(links) for s in stamps)
    with pytest.raises(whylogs_songbird.ConfigError, match="No reference named 'nope'"):
        combined.compare_with("nope", **opts)


def test_cli_profile_compare_with(server, tmp_path):
    from whylogs_songbird.cli import app

    data = tmp_path / "d.csv"
    df().to_csv(data, index=False)
    runner = CliRunner()
    ref = runner.invoke(app, ["profile", str(data), "--reference", "train", "--endpoint", server.url])
    assert ref.exit_code == 0, ref.output
    batch = runner.invoke(app, ["profile", str(data), "--compare-with", "train", "--endpoint", server.url])
    assert batch.exit_code == 0, batch.output
    compare = [line for line in batch.stdout.splitlines() if line.startswith("compare")]
    assert len(compare) == 1 and "with train" in compare[0]
    assert requests.get(compare[0].split()[-1], timeout=30).status_code == 200


# -- item 3: outbox management -------------------------------------------------------------------------


def test_outbox_drop_and_flush_to_another_endpoint(server, tmp_path):
    from whylogs_songbird.cli import app

    data = tmp_path / "d.csv"
    df().to_csv(data, index=False)
    gone = f"http://127.0.0.1:{closed_port()}"
    runner = CliRunner()
    for _ in range(3):
        assert runner.invoke(app, ["profile", str(data), "--endpoint", gone, "--max-retries", "0"]).exit_code == 1
    listed = runner.invoke(app, ["outbox", "list"])
    ids = [line.split()[0] for line in listed.stdout.splitlines()]
    assert len(ids) == 3 and all(gone in line for line in listed.stdout.splitlines())

    assert runner.invoke(app, ["outbox", "drop"]).exit_code == 2, "ids or --all"
    unknown = runner.invoke(app, ["outbox", "drop", "nope"])
    assert unknown.exit_code == 2 and "No outbox entry 'nope'" in unknown.stderr
    dropped = runner.invoke(app, ["outbox", "drop", ids[0]])
    assert dropped.exit_code == 0 and ids[0] in dropped.stdout

    moved = runner.invoke(app, ["outbox", "flush", "--endpoint", server.url, "--max-retries", "0"])
    assert moved.exit_code == 0, moved.output
    links = [line.split()[-1] for line in moved.stdout.splitlines()]
    assert len(links) == 2 and all(link.startswith(server.url) for link in links)
    assert all(requests.get(link, timeout=30).status_code == 200 for link in links)
    assert runner.invoke(app, ["outbox", "list"]).stdout == ""

    assert runner.invoke(app, ["profile", str(data), "--endpoint", gone, "--max-retries", "0"]).exit_code == 1
    everything = runner.invoke(app, ["outbox", "drop", "--all"])
    assert everything.exit_code == 0 and "dropped 1 profile" in everything.stderr


# -- item 9: CLI polish ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["profile"], ["upload"], ["serve"], ["outbox", "drop"], ["server", "stop"]])
def test_help_has_no_type_placeholders(command):
    from whylogs_songbird.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "100", "TERMINAL_WIDTH": "100"})
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout and "<list" not in result.stdout and "<str>" not in result.stdout


def test_server_module_help_has_no_type_placeholders():
    """``python -m whylogs_songbird.server --help``, in a process of its own, reads like ``songbird serve --help``."""
    shown = subprocess.run(
        [sys.executable, "-m", "whylogs_songbird.server", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "100", "WHYLOGS_NO_ANALYTICS": "True"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "--public-url" in shown.stdout and "--max-columns" in shown.stdout
    assert not re.search(r"<(bool|str|int|int range|float|path|list)", shown.stdout), shown.stdout


def test_session_show_prints_the_session_page(server):
    from whylogs_songbird.cli import app

    assert why.log(df()).writer("songbird").option(endpoint=server.url).write()[0]
    shown = CliRunner().invoke(app, ["session", "show", "--endpoint", server.url])
    page = next(line.split()[-1] for line in shown.stdout.splitlines() if line.startswith("page:"))
    assert page.startswith(f"{server.url}/sessions/session-")
    assert requests.get(page, timeout=30).status_code == 200


def test_batches_are_shown_with_dates_not_epoch_ms(server):
    result = whylogs_songbird.publish(why.log(df()), dataset_timestamp=1_714_521_600_000, endpoint=server.url)
    assert result.profiles[0].label == "batch 2024-05-01"


def test_serve_on_every_interface_names_an_address_teammates_can_use():
    from whylogs_songbird.cli.server import shared_address

    assert shared_address("0.0.0.0") == socket.getfqdn()
    assert shared_address("127.0.0.1") == "127.0.0.1"


# -- item 11: shape --------------------------------------------------------------------------------------


def test_importing_the_package_changes_no_logging_and_starts_nothing():
    script = (
        "import logging, threading\n"
        "before = {n: list(logging.getLogger(n).filters) for n in ('urllib3.connectionpool', 'urllib3.util.retry')}\n"
        "threads = threading.active_count()\n"
        "import whylogs_songbird\n"
        "after = {n: list(logging.getLogger(n).filters) for n in before}\n"
        "assert before == after, after\n"
        "assert threading.active_count() == threads\n"
        "import whylogs.api.writer as w\n"
        "print(type(w.Writers.get('songbird')).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SongbirdWriter"


def test_old_import_paths_still_work():
    from whylogs_songbird.errors import is_retryable
    from whylogs_songbird.outbox import is_retryable as old_is_retryable
    from whylogs_songbird.publish import flush_outbox  # noqa: F401
    from whylogs_songbird.tables import read_table  # noqa: F401

    assert old_is_retryable is is_retryable


def test_read_table_is_a_library_function(tmp_path):
    from whylogs_songbird.errors import DataFileError
    from whylogs_songbird.tables import read_table, segment_schema

    path = tmp_path / "x.tsv"
    df().to_csv(path, sep="\t", index=False)
    frame = read_table(path)
    assert list(frame.columns) == ["a", "b"] and len(frame) == 3
    assert segment_schema(frame, ["b"]) is not None
    with pytest.raises(DataFileError, match="unknown --segment-by column 'zz'"):
        segment_schema(frame, ["zz"])
    with pytest.raises(DataFileError, match="cannot tell its format"):
        read_table(tmp_path / "x.xlsx")


def test_unused_names_stay_importable_for_threads():
    # The redaction filter acts only inside our own requests: a log line of another library's
    # request in another thread keeps its query string.
    from whylogs_songbird.client import _RedactQueries

    record = logging.LogRecord("urllib3.connectionpool", logging.DEBUG, "", 0, "GET /x?token=abc", None, None)
    seen: list = []
    thread = threading.Thread(target=lambda: seen.append(_RedactQueries().filter(record) and record.getMessage()))
    thread.start()
    thread.join()
    assert seen == ["GET /x?token=abc"]


def test_fewer_reference_slots_than_asked_for_fail_every_reference_and_send_nothing(server, tmp_path):
    """A server that answers a batch of 2 references with 1 slot breaks the contract: both
    references fail with a protocol error that says so, and no profile is PUT anywhere."""
    from loopback import Relay

    from whylogs_songbird import PublishError, publish_references

    def one_slot(method, path):
        if method == "POST" and path.endswith("/references"):
            body = {
                "references": [
                    {
                        "id": "ref-only",
                        "modelId": "model-1",
                        "alias": "a",
                        "observatoryUrl": f"{relay.url}/resources/model-1/profiles?profile=ref-only",
                        "uploadUrl": f"{relay.url}/v0/uploads/never",
                    }
                ],
                "observatoryUrl": f"{relay.url}/resources/model-1/profiles",
            }
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        return None

    relay = Relay(server.url, one_slot)
    with relay.running(), pytest.raises(PublishError) as raised:
        publish_references(
            {"a": why.log(df()), "b": why.log(df(1))}, endpoint=relay.url, config_dir=str(tmp_path), outbox=False
        )
    result = raised.value.result
    assert [p.ok for p in result.profiles] == [False, False]
    assert all("asked for 2 upload URLs but the server answered with 1" in (p.error or "") for p in result.profiles)
    assert relay.count("put") == 0


class _BrokenHeaders(http.server.BaseHTTPRequestHandler):
    """Stores the PUT, then answers with a header line urllib3 cannot parse (it warns about it)."""

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\nnot a header\r\n\r\n")
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_urllib3s_header_parsing_warning_shows_the_upload_url_without_its_signature(caplog):
    # urllib3 names the request's full URL when an answer's headers do not parse, in a WARNING of
    # its `urllib3.connection` logger: a presigned upload URL carries its signature in the query.
    caplog.set_level(logging.DEBUG)
    with http_server_thread(_BrokenHeaders) as url:
        SongbirdClient(url, max_retries=0).upload_profile(f"{url}/v0/uploads/log-1?expires=9&signature=SIG", b"x")
    warned = [r for r in caplog.records if r.name == "urllib3.connection"]
    assert warned and "Failed to parse headers" in warned[0].getMessage()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/v0/uploads/log-1?<redacted>" in logged and "SIG" not in logged
