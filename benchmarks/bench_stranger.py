"""What one client without credentials can cost the server, with its default options.

Starts ``python -m whylogs_songbird.server`` (embedded store, every limit at its default) on a free
loopback port, once per attack, and plays one client that does its worst for ``--seconds``
(default 30) from one address:

- ``sessions``: creates sessions as fast as it can;
- ``tags``: asks for upload slots carrying 64 segment tags of the longest keys and values, never
  PUT, opening a new session whenever one is full;
- ``tags4k``: the same with just under 4 KiB of tags per slot (the most bytes one slot token buys);
- ``references``: asks for 1,000-reference batches with the longest aliases, the same way;
- ``connections``: opens 1,100 idle connections from 127.0.0.2, then asks ``/healthz`` from
  127.0.0.1 (another client).

For each it prints what was granted and refused, the rows and database bytes added (SQLite file
and WAL), the server's CPU seconds, and the rate over the second half of the run, once the
bursts are spent: that rate times 3600, plus the burst, is what one client gets per hour. Never-PUT
slots are deleted ``--url-ttl`` (900 s) + 600 s (+ up to a 60 s sweep interval) after they were
made, so at most that many seconds' worth of them is alive at once. Sizes are of the database file
after a WAL checkpoint. Everything is loopback traffic; the run stops by itself.

Run: ``python benchmarks/bench_stranger.py`` (``--seconds S``, ``--attacks sessions,tags``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import resource
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from _server_process import cpu_seconds, server_process

from whylogs_songbird.models import (
    MAX_ALIAS_LENGTH,
    MAX_REFERENCES_PER_BATCH,
    MAX_SEGMENT_TAGS,
    MAX_TAG_KEY_LENGTH,
    MAX_TAG_VALUE_LENGTH,
)
from whylogs_songbird.server.config import DEFAULT_MAX_OPEN_SLOTS

DB_FILE = "songbird.sqlite3"
IDLE_CONNECTIONS = 1100
#: How long a never-PUT slot lives with the defaults: the URL's 900 s, the sweep's 600 s grace, a 60 s sweep.
ALIVE_SECONDS = 900 + 600 + 60


@dataclass
class Outcome:
    """What one attack achieved."""

    requests: int = 0
    granted: int = 0  # rows asked for and created (sessions or slots)
    refused: dict[int, int] = field(default_factory=dict)
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, rows granted)

    def steady_rate(self, seconds: float) -> float:
        """Rows granted per second over the second half of the run."""
        half = seconds / 2
        late = [n for t, n in self.timeline if t >= half]
        return sum(late) / half


class Client:
    """One keep-alive connection to the server, from one address."""

    def __init__(self, url: str, source: str = "127.0.0.1") -> None:
        self.port = urlsplit(url).port or 80
        self.source = source
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30, source_address=(self.source, 0))

    def post(self, path: str, body: object) -> tuple[int, dict]:
        data = json.dumps(body)
        for attempt in range(2):
            try:
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                response = self.conn.getresponse()
                return response.status, json.loads(response.read() or b"{}")
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = self._connect()
                if attempt:
                    raise
        raise AssertionError("unreachable")


def database_bytes(data_dir: Path) -> int:
    """The size of the database file once its write-ahead log is folded in (the WAL is scratch space)."""
    with sqlite3.connect(data_dir / DB_FILE, timeout=30) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return (data_dir / DB_FILE).stat().st_size


def rows(data_dir: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{data_dir / DB_FILE}?mode=ro", uri=True) as conn:
        sessions = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        uploads = conn.execute("SELECT count(*) FROM uploads").fetchone()[0]
    return sessions, uploads


def flood(client: Client, seconds: float, ask: Callable[[Client], tuple[int, int]]) -> Outcome:
    """Call ``ask`` (status, rows it asks for) until ``seconds`` have passed."""
    outcome = Outcome()
    started = time.monotonic()
    while (now := time.monotonic() - started) < seconds:
        status, asked = ask(client)
        outcome.requests += 1
        if status == 200:
            outcome.granted += asked
            outcome.timeline.append((now, asked))
        else:
            outcome.refused[status] = outcome.refused.get(status, 0) + 1
    return outcome


class SlotAttack:
    """Slots in sessions, a new session whenever the open-slot cap (or a quota) refuses."""

    def __init__(self, body: dict, path: str, per_request: int) -> None:
        self.body, self.path, self.per_request = body, path, per_request
        self.session: str | None = None
        self.open = 0  # slots open in the current session

    def __call__(self, client: Client) -> tuple[int, int]:
        if self.session is None or self.open + self.per_request > DEFAULT_MAX_OPEN_SLOTS:
            status, answer = client.post("/v0/sessions", {"userId": "stranger"})  # full: on to a new session
            if status != 200:
                return status, 0
            self.session, self.open = answer["id"], 0
        status, answer = client.post(f"/v0/sessions/{self.session}{self.path}", self.body)
        if status == 200:
            self.open += self.per_request
        return status, self.per_request


def attack_sessions(client: Client, seconds: float) -> Outcome:
    return flood(client, seconds, lambda c: (c.post("/v0/sessions", {"userId": "stranger"})[0], 1))


def attack_tags(client: Client, seconds: float) -> Outcome:
    tags = [
        {"key": f"{i:03d}".ljust(MAX_TAG_KEY_LENGTH, "k"), "value": "v" * MAX_TAG_VALUE_LENGTH}
        for i in range(MAX_SEGMENT_TAGS)
    ]
    return flood(
        client, seconds, SlotAttack({"datasetTimestamp": 1_700_000_000_000, "segmentTags": tags}, "/upload", 1)
    )


def attack_tags4k(client: Client, seconds: float) -> Outcome:
    """Slots of just under 4 KiB of tags each: the most bytes a slot token buys."""
    tags = [{"key": f"k{i}", "value": "v" * 1000} for i in range(4)]
    return flood(
        client, seconds, SlotAttack({"datasetTimestamp": 1_700_000_000_000, "segmentTags": tags}, "/upload", 1)
    )


def attack_references(client: Client, seconds: float) -> Outcome:
    body = {"references": [{"alias": "a" * MAX_ALIAS_LENGTH} for _ in range(MAX_REFERENCES_PER_BATCH)]}
    return flood(client, seconds, SlotAttack(body, "/references", MAX_REFERENCES_PER_BATCH))


def attack_connections(url: str) -> dict[str, object]:
    """Open IDLE_CONNECTIONS idle sockets from 127.0.0.2; is /healthz answered for 127.0.0.1?"""
    port = urlsplit(url).port
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE_CONNECTIONS + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE_CONNECTIONS + 200), hard))
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(IDLE_CONNECTIONS):
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)))
        time.sleep(0.5)
        for sock in held:  # connections over the per-client limit are answered 503 at once
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError, ConnectionError):
                if sock.recv(16).startswith(b"HTTP/1.1 503"):
                    refused += 1
        other = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            other.request("GET", "/healthz")
            healthz = other.getresponse().status
        finally:
            other.close()
    finally:
        for sock in held:
            sock.close()
    return {"opened": len(held), "refused_503": refused, "healthz_for_another_client": healthz}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each attack runs")
    parser.add_argument("--attacks", default="sessions,tags,tags4k,references,connections")
    args = parser.parse_args()
    attacks = {
        "sessions": attack_sessions,
        "tags": attack_tags,
        "tags4k": attack_tags4k,
        "references": attack_references,
    }
    root = Path(tempfile.mkdtemp(prefix="bench-stranger-"))
    print(f"one client, default server options, {args.seconds:g} s per attack (loopback)\n")
    for name in args.attacks.split(","):
        data_dir = root / name
        with server_process(data_dir, client_limits=True) as (url, process):
            if name == "connections":
                print(f"{name:>11}: {attack_connections(url)}")
                continue
            cpu_before, bytes_before, rows_before = cpu_seconds(process.pid), database_bytes(data_dir), rows(data_dir)
            outcome = attacks[name](Client(url), args.seconds)
            time.sleep(1.0)  # let the count flusher and the WAL settle
            cpu = cpu_seconds(process.pid) - cpu_before
            added = database_bytes(data_dir) - bytes_before
            sessions, uploads = (a - b for a, b in zip(rows(data_dir), rows_before))
        steady = outcome.steady_rate(args.seconds)
        per_row = added / max(1, sessions + uploads)
        print(
            f"{name:>11}: {outcome.requests} requests, {outcome.granted} rows granted, refused {outcome.refused}; "
            f"+{sessions} sessions +{uploads} slots, +{added / 1e6:.1f} MB database ({per_row:.0f} B a row), "
            f"server CPU {cpu:.1f} s ({cpu / args.seconds:.0%} of a core)"
        )
        alive = f", at most ~{steady * ALIVE_SECONDS * per_row / 1e6:,.0f} MB of them alive at once" if uploads else ""
        print(
            f"{'':>11}  steady rate {steady:.1f} rows/s -> at most ~{steady * 3600:,.0f} rows "
            f"(~{steady * 3600 * per_row / 1e6:,.0f} MB) an hour after the burst{alive}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
