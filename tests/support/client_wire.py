"""Fakes at SongbirdClient's seams, shared by its fast test files (scripts/mutation runs them per mutant).

`FakeHttp` stands in for the client's ``requests.Session``: it records (method, url, kwargs) of
each call and answers from a script, so URLs, bodies, headers and timeouts are checked exactly.
`scripted_loopback` is a small HTTP server on 127.0.0.1 that answers from a script and records
each request, for what only the wire shows (urllib3's retries, streamed bodies, a fresh session).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import requests
from conftest import serving
from loopback import send_answer

from whylogs_songbird.client import SongbirdClient

#: Where the fake transport pretends to send (nothing ever connects to it).
ENDPOINT = "http://127.0.0.1:9"


class FakeHttp:
    """Stands in for the client's requests.Session: records (method, url, kwargs) of each call and
    answers with the next scripted response, or raises it if it is an exception."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.closed = False

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.calls.append((method, url, kwargs))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


def response(status: int = 200, body: Any = b"", headers: dict[str, str] | None = None) -> requests.Response:
    """A requests.Response as the transport would return it; a non-bytes body is sent as JSON."""
    answer = requests.Response()
    answer.status_code = status
    answer._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer.encoding = "utf-8"
    answer.headers.update(headers or {})
    return answer


def faked(*answers: Any, endpoint: str = ENDPOINT, **options: Any) -> tuple[SongbirdClient, FakeHttp]:
    """A client whose session is a `FakeHttp` answering ``answers`` in order."""
    client = SongbirdClient(endpoint, **options)
    client._http.close()
    fake = FakeHttp(list(answers))
    client._http = fake  # type: ignore[assignment]
    return client, fake


def sent(**extra: Any) -> dict[str, Any]:
    """The keyword arguments of a request with the default timeouts and no proxy settings."""
    return {"timeout": (5.0, 60.0), "allow_redirects": False, "proxies": {}, "verify": True, "cert": None, **extra}


def accept(**extra: str) -> dict[str, str]:
    """The headers of a JSON operation, plus ``extra``."""
    return {"Accept": "application/json", **extra}


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next answer of the script (the last one repeats) and records
    (method, path, headers, body). An answer is ``(status, headers, body)``, or with a fourth item,
    a Content-Length larger than the body (the answer breaks off); "drop" closes the connection
    without an answer; "hold" waits until the test sets ``release`` (at most 1 s), then drops."""

    def _answer(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        state.seen.append((self.command, self.path, dict(self.headers), body))
        answer = state.script.pop(0) if len(state.script) > 1 else state.script[0]
        if answer in ("drop", "hold"):
            if answer == "hold":
                state.release.wait(1)
            self.close_connection = True
            return
        status, headers, content, *declared = answer
        send_answer(self, status, headers, content, length=declared[0] if declared else None)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


class CountingServer(http.server.ThreadingHTTPServer):
    """Counts the connections it accepts (``state.connections``)."""

    daemon_threads = True

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.state.connections += 1  # type: ignore[attr-defined]
        return True


@contextlib.contextmanager
def scripted_loopback() -> Iterator[CountingServer]:
    """A `CountingServer` answering with `Scripted` on a free loopback port, served in a thread."""
    httpd = CountingServer(("127.0.0.1", 0), Scripted)
    httpd.state = SimpleNamespace(script=[], seen=[], connections=0)  # type: ignore[attr-defined]
    with serving(httpd):
        yield httpd


def reset(httpd: CountingServer) -> SimpleNamespace:
    """The server's state, emptied: ``script``, ``seen`` requests, ``connections``, ``release``,
    and its ``port`` and ``url``."""
    state = httpd.state  # type: ignore[attr-defined]
    state.script, state.seen, state.connections = [], [], 0
    state.release = threading.Event()
    state.port = httpd.server_address[1]
    state.url = f"http://127.0.0.1:{state.port}"
    return state
