"""Loopback HTTP helpers whose latency and answers a test controls.

`Relay` sits on a free 127.0.0.1 port in front of a real songbird server: every request is
forwarded unchanged (the server builds upload URLs from the ``Host`` header, so they point at the
relay too), counted, and first handed to the test's ``hook``. A hook may wait (a slow server),
or return ``(status, headers, body)`` to answer in the server's place. `wait_until` polls for an
event with a deadline, instead of sleeping a fixed time.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

Answer = tuple[int, dict[str, str], bytes]
Hook = Callable[[str, str], "Answer | None"]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something true; its value, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def send_answer(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    headers: dict[str, str],
    body: bytes,
    *,
    length: int | None = None,
) -> None:
    """Answer a request of ``handler`` with ``status``, ``headers`` and ``body``; Content-Length is
    the body's, or ``length`` (a larger one makes a truncated body)."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)


def operation(method: str, path: str) -> str:
    """A short name for a songbird request: create_session, upload_slot, put, reference, link, claim, ..."""
    path = path.split("?", 1)[0]
    if method == "PUT" and path.startswith("/v0/uploads/"):
        return "put"
    if method == "POST" and path == "/v0/sessions":
        return "create_session"
    if method == "POST" and path.startswith("/v0/sessions/observatory-link/"):
        return "link"
    if method == "POST" and path.startswith("/v0/sessions/"):
        return {"upload": "upload_slot", "reference": "reference", "references": "references", "claim": "claim"}.get(
            path.rsplit("/", 1)[-1], "other"
        )
    return f"{method} {path}"


class Relay:
    """Counts requests per operation and requests in flight; see the module docstring."""

    def __init__(self, upstream_url: str, hook: Hook | None = None, port: int = 0) -> None:
        upstream_host, upstream_port = upstream_url.removeprefix("http://").split(":")
        self.upstream = (upstream_host, int(upstream_port))
        self.hook = hook
        self.port = port
        self.counts: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.peak_in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.url = ""

    def count(self, name: str) -> int:
        with self._lock:
            return self.counts[name]

    def _enter(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1
            self.in_flight[name] += 1
            self.peak_in_flight[name] = max(self.peak_in_flight[name], self.in_flight[name])

    def _leave(self, name: str) -> None:
        with self._lock:
            self.in_flight[name] -= 1

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = operation(self.command, self.path)
                relay._enter(name)
                try:
                    answer = relay.hook(self.command, self.path) if relay.hook else None
                    if answer is None:
                        answer = self._forward(body)
                finally:
                    relay._leave(name)
                send_answer(self, *answer)

            def _forward(self, body: bytes) -> Answer:
                upstream = http.client.HTTPConnection(*relay.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    skip = ("content-length", "connection", "transfer-encoding", "date", "server")
                    return answer.status, {k: v for k, v in answer.getheaders() if k.lower() not in skip}, data
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = _relay

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    @contextlib.contextmanager
    def running(self) -> Iterator[Relay]:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(10)


class Rendezvous:
    """A hook helper: hold each matching request until ``parties`` of them have arrived, or
    ``timeout`` seconds passed. Requests sent together meet at once; requests sent one after the
    other each wait the timeout, so they never overlap."""

    def __init__(self, parties: int, timeout: float) -> None:
        self.parties = parties
        self.timeout = timeout
        self._arrived = 0
        self._cond = threading.Condition()

    def wait(self) -> None:
        with self._cond:
            self._arrived += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._arrived >= self.parties, timeout=self.timeout)
