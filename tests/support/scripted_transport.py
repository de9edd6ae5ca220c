"""A scripted HTTP transport for client tests: answers given in order, requests recorded."""

from __future__ import annotations

import http.server

from conftest import http_server_thread
from loopback import send_answer


class _Scripted(http.server.BaseHTTPRequestHandler):
    """A loopback server that answers from a script: a list of (status, headers, body)."""

    script: list = []
    seen: list = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).seen.append(self.path)
        send_answer(self, *(type(self).script.pop(0) if len(type(self).script) > 1 else type(self).script[0]))

    do_POST = do_PUT = do_GET = _answer

    def log_message(self, *args):
        pass


def scripted_server():
    """The ``scripted`` fixture: ``(handler, url)`` of a :class:`_Scripted` server of its own."""
    handler = type("Handler", (_Scripted,), {"script": [], "seen": []})
    with http_server_thread(handler) as url:
        yield handler, url
