"""A webhook receiver for notification tests, and the monitors files that point at it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from whylogs_songbird.server import LocalServer
from whylogs_songbird.server.notify import queue_of


class Receiver:
    """A webhook receiver on a free loopback port: records every POST; answers ``status()``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.status: Callable[[], int] = lambda: 200
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.attempts += 1
                    status = receiver.status()
                    if status == 200:
                        receiver.received.append({"body": body, "headers": dict(self.headers)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/XXXX"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(r["body"]) for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def monitors_file(tmp_path: Path, *targets: str, monitors: str | None = None) -> Path:
    path = tmp_path / "monitors.toml"
    default = '[[monitor]]\ncolumns = ["*"]\nmetric = "drift"\nfail_on = "drift"\n'
    path.write_text('reference = "training"\ngranularity = "day"\n\n' + (monitors or default) + "\n".join(targets))
    return path


def notify_table(url: str, **fields: Any) -> str:
    lines = ["[[notify]]", f"url = {json.dumps(url)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def settled(server: LocalServer) -> bool:
    """The monitors of every landed batch evaluated, and no notification waiting to be sent."""
    return server.app.state.timeline.idle() and queue_of(server.store.metadata).notification_counts()["pending"] == 0
