"""Ingest rate of the local server with 1, 2, 4 and 8 concurrent clients, measured in one run.

The server runs in its own process (``python -m whylogs_songbird.server``). Each client is a
separate process with its own keep-alive connection, uploading the same small profile over and
over: one upload = create the slot (POST .../upload) + PUT the bytes. The clock of a level starts
once every client process is up and connected; it runs for ``--seconds`` (default 5) or until
``--max-uploads`` per client, whichever comes first.
Prints uploads/s per level and its ratio to the 1-client rate (perfect scaling would be 1, 2, 4, 8),
then whether the targets hold: at least 300 uploads/s at the best level, and 8 clients at least as
fast as 1. The PUT only runs the cheap structural check; the ingest worker summarises in the
background meanwhile (its backlog at the end is printed).

Run: ``python benchmarks/bench_ingest.py`` (``--seconds S``, ``--levels 1,2,4,8``, ``--workers N``
for several server processes, ``--server-option=--database-url=...`` to pass any server option).

The clients are the load generator, not what is measured, and they share the two cores with the
server: by default each is a bare ``http.client`` connection (about 0.7 ms of CPU per upload here).
``--client requests`` uses ``requests``, as the writer does (about 2.4 ms per upload); that leaves
the server less of the machine, so its rate is lower on the same server.

``--store team`` runs the same table on the team store: a throwaway PostgreSQL cluster and
SeaweedFS as S3 (started here, as the tests do, from ``tests/support/services.py``). The upload URLs are
then presigned S3 URLs, so the API server handles only the POSTs and the PUTs go to SeaweedFS;
all of them share this machine's CPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import pandas as pd  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from _server_process import cpu_seconds, server_process  # noqa: E402

from whylogs_songbird.local_server import health_token  # noqa: E402
from whylogs_songbird.models import HEALTH_TOKEN_HEADER  # noqa: E402
from whylogs_songbird.server.store import Store  # noqa: E402


def small_profile() -> bytes:
    frame = pd.DataFrame({"n": range(50), "x": [i * 0.5 for i in range(50)], "s": [f"v{i % 5}" for i in range(50)]})
    return why.log(frame).view().serialize()


@contextlib.contextmanager
def team_store() -> Iterator[list[str]]:
    """PostgreSQL + SeaweedFS for the server: yields its storage options (AWS variables set here,
    so the server process inherits them); both are stopped and removed afterwards."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
    from services import postgres_cluster, seaweedfs

    with postgres_cluster() as postgres, seaweedfs() as s3:
        os.environ.update(s3.env())
        yield [
            "--database-url",
            postgres.new_database("bench"),
            "--blob-store",
            "s3://songbird-bench/profiles",
            "--s3-endpoint-url",
            s3.endpoint_url,
        ]


class StdlibHttp:
    """A minimal keep-alive HTTP/1.1 client (``http.client``), one connection per host: the load
    generator of the default ``--client stdlib``. Each ``requests`` call costs its caller about
    three times the CPU of this (measured on this machine: 2.4 vs 0.7 ms per upload), and the
    clients share the machine's two cores with the server they measure."""

    def __init__(self) -> None:
        self.connections: dict[str, http.client.HTTPConnection] = {}

    def call(self, method: str, url: str, body: bytes, content_type: str) -> bytes:
        """The answer's body; raises OSError or http.client.HTTPException on a failed call and
        RuntimeError on an answer that is not 2xx."""
        parts = urlsplit(url)
        connection = self.connections.get(parts.netloc)
        if connection is None:
            connection = self.connections[parts.netloc] = http.client.HTTPConnection(parts.netloc, timeout=30)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(method, target, body=body, headers={"Content-Type": content_type})
            answer = connection.getresponse()
            payload = answer.read()
        except (OSError, http.client.HTTPException):
            connection.close()  # reconnects on the next call
            raise
        if not 200 <= answer.status < 300:
            raise RuntimeError(f"{method} answered {answer.status}")
        return payload

    def upload(self, url: str, session_id: str, stamp: int, data: bytes) -> None:
        body = json.dumps({"datasetTimestamp": stamp}).encode()
        slot = json.loads(self.call("POST", f"{url}/v0/sessions/{session_id}/upload", body, "application/json"))
        self.call("PUT", slot["uploadUrl"], data, "application/octet-stream")

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


class RequestsHttp:
    """The load generator of ``--client requests``: what the writer itself uses."""

    def __init__(self) -> None:
        self.session = requests.Session()

    def call(self, method: str, url: str, body: bytes, content_type: str) -> bytes:
        answer = self.session.request(method, url, data=body, headers={"Content-Type": content_type}, timeout=30)
        if not answer.ok:
            raise RuntimeError(f"{method} answered {answer.status_code}")
        return answer.content

    def upload(self, url: str, session_id: str, stamp: int, data: bytes) -> None:
        slot = self.session.post(f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": stamp}, timeout=30)
        slot.raise_for_status()
        self.session.put(slot.json()["uploadUrl"], data=data, timeout=30).raise_for_status()

    def close(self) -> None:
        self.session.close()


CLIENTS = {"stdlib": StdlibHttp, "requests": RequestsHttp}
#: What a failed upload raises with either client.
UPLOAD_ERRORS = (OSError, http.client.HTTPException, RuntimeError, ValueError, KeyError, requests.RequestException)


def client(
    kind: str, url: str, session_id: str, data: bytes, seconds: float, cap: int, first_stamp: int, ready, go, out
) -> None:
    """One client: once every client is ready, upload for ``seconds`` or ``cap`` uploads; report
    (uploads, errors, seconds it ran). Each upload is a new batch (its own dataset timestamp), so
    the server stores, fsyncs and summarises every one (identical bytes of one batch are kept once)."""
    done = errors = 0
    http_client = CLIENTS[kind]()
    try:
        http_client.call("GET", f"{url}/healthz", b"", "text/plain")  # connected before the clock starts
        ready.put(1)
        go.wait()
        started = time.perf_counter()
        stop_at = started + seconds
        while time.perf_counter() < stop_at and done < cap:
            try:
                http_client.upload(url, session_id, first_stamp + done + errors, data)
                done += 1
            except UPLOAD_ERRORS:
                errors += 1
                if errors > 100:
                    break
        elapsed = time.perf_counter() - started
    finally:
        http_client.close()
    out.put((done, errors, elapsed))


def run_level(
    kind: str, url: str, session_id: str, data: bytes, clients: int, seconds: float, cap: int
) -> tuple[float, int, int]:
    """Uploads/s, errors and uploads of ``clients`` concurrent clients (processes started and
    connected before the clock starts)."""
    context = multiprocessing.get_context("spawn")
    out, ready, go = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(
            target=client,
            args=(
                kind,
                url,
                session_id,
                data,
                seconds,
                cap,
                1_700_000_000_000 + (clients * 100 + index) * 10**7,
                ready,
                go,
                out,
            ),
        )
        for index in range(clients)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=300)
    go.set()
    results = [out.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    uploads = sum(done for done, _, _ in results)
    errors = sum(err for _, err, _ in results)
    elapsed = max(took for _, _, took in results)
    return uploads / elapsed, errors, uploads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--max-uploads", type=int, default=20_000, help="per client and level")
    parser.add_argument("--workers", type=int, default=1, help="server processes (--workers of the server)")
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="stdlib",
        help="load generator: stdlib (http.client keep-alive, the default) or requests (what the writer uses)",
    )
    parser.add_argument("--server-option", action="append", default=[], help="another server option, repeatable")
    parser.add_argument(
        "--store",
        choices=["embedded", "team"],
        default="embedded",
        help="embedded: SQLite + files; team: PostgreSQL + SeaweedFS (S3), both started here",
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    data = small_profile()
    work = Path(tempfile.mkdtemp(prefix="songbird-bench-ingest-"))
    print(
        f"profile of {len(data)} bytes; {os.cpu_count()} CPUs; {args.seconds:g} s per level; {args.workers} workers; "
        f"{args.store} store; {args.client} clients"
    )
    with contextlib.ExitStack() as stack:
        storage = stack.enter_context(team_store()) if args.store == "team" else []
        run(args, levels, data, work, storage)


def run(args: argparse.Namespace, levels: list[int], data: bytes, work: Path, storage: list[str]) -> None:
    options = ["--workers", str(args.workers), *storage, *args.server_option]
    with server_process(work / "server", *options) as (url, server):
        session_id = requests.post(f"{url}/v0/sessions", json={"userId": "bench"}, timeout=30).json()["id"]
        rates: dict[int, float] = {}
        cpu_per_upload: dict[int, float] = {}
        for clients in levels:
            cpu_before = cpu_seconds(server.pid)
            rate, errors, uploads = run_level(
                args.client, url, session_id, data, clients, args.seconds, args.max_uploads
            )
            server_cpu = cpu_seconds(server.pid) - cpu_before
            rates[clients] = rate
            base = rates[levels[0]]
            # CPU time per upload does not depend on what else the machine runs, unlike uploads/s
            # (the ingest worker's summarising in the same process is included).
            per_upload = 1000 * server_cpu / uploads if uploads else float("nan")
            cpu_per_upload[clients] = per_upload
            print(
                f"{clients} client(s): {rate:7.1f} uploads/s  "
                f"RATIO rate/rate_{levels[0]}_client = {rate / base:.2f}  "
                f"server CPU {per_upload:.2f} ms/upload "
                f"(busy {server_cpu / args.seconds:.2f} cores; {uploads} uploads; {errors} errors)"
            )
        best = max(rates.values())
        cheapest = min(cpu_per_upload.values())
        print(
            f"server CPU per upload {cheapest:.2f} ms at best: at most {1000 / cheapest:.0f} uploads/s per "
            f"fully busy core, whatever else the machine runs (load average {os.getloadavg()[0]:.1f})"
        )
        print(f"TARGET best rate >= 300 uploads/s: {'met' if best >= 300 else 'MISSED'} ({best:.1f})")
        if 1 in rates and 8 in rates:
            verdict = "met" if rates[8] >= rates[1] else "MISSED"
            print(f"TARGET 8 clients >= 1 client: {verdict} ({rates[8]:.1f} vs {rates[1]:.1f})")
        token = health_token(work / "server") or ""  # /healthz tells its details only to the server's user
        health = requests.get(f"{url}/healthz", headers={HEALTH_TOKEN_HEADER: token}, timeout=30).json()
        backlog: int | str = "?"
        if not storage:
            store = Store(work / "server")  # the server's own store (SQLite in WAL mode), read alongside it
            try:
                backlog = store.metadata.pending_ingest()
            finally:
                store.close()
        sessions = health.get("sessions", "?")
        print(f"sessions {sessions}; ingest backlog at the end {backlog} (summarised in the background)")
        stats = requests.get(f"{url}/_local/stats", timeout=30).json()
        print(f"slots made {stats['upload']}; PUTs through the API server {stats['put']}")


if __name__ == "__main__":
    main()
