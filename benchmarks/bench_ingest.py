"""Ingest rate of the local server with 1, 2, 4 and 8 concurrent clients, measured in one run.

The server runs in its own process (``python -m whylogs_songbird.server``). Each client is a
separate process with its own ``requests.Session``, uploading the same small profile over and
over: one upload = create the slot (POST .../upload) + PUT the bytes. The clock of a level starts
once every client process is up and connected; it runs for ``--seconds`` (default 5) or until
``--max-uploads`` per client, whichever comes first.
Prints uploads/s per level and its ratio to the 1-client rate (perfect scaling would be 1, 2, 4, 8),
then whether the targets hold: at least 300 uploads/s at the best level, and 8 clients at least as
fast as 1. The PUT only runs the cheap structural check; the ingest worker summarises in the
background meanwhile (its backlog at the end is printed).

Run: ``python benchmarks/bench_ingest.py`` (``--seconds S``, ``--levels 1,2,4,8``, ``--workers N``
for several server processes, ``--server-option=--database-url=...`` to pass any server option).

``--store team`` runs the same table on the team store: a throwaway PostgreSQL cluster and
SeaweedFS as S3 (started here, as the tests do, from ``tests/services.py``). The upload URLs are
then presigned S3 URLs, so the API server handles only the POSTs and the PUTs go to SeaweedFS;
all of them share this machine's CPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import pandas as pd  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from _server_process import cpu_seconds, server_process  # noqa: E402

from whylogs_songbird.server.store import Store  # noqa: E402


def small_profile() -> bytes:
    frame = pd.DataFrame({"n": range(50), "x": [i * 0.5 for i in range(50)], "s": [f"v{i % 5}" for i in range(50)]})
    return why.log(frame).view().serialize()


@contextlib.contextmanager
def team_store() -> Iterator[list[str]]:
    """PostgreSQL + SeaweedFS for the server: yields its storage options (AWS variables set here,
    so the server process inherits them); both are stopped and removed afterwards."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
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


def client(url: str, session_id: str, data: bytes, seconds: float, cap: int, first_stamp: int, ready, go, out) -> None:
    """One client: once every client is ready, upload for ``seconds`` or ``cap`` uploads; report
    (uploads, errors, seconds it ran). Each upload is a new batch (its own dataset timestamp), so
    the server stores, fsyncs and summarises every one (identical bytes of one batch are kept once)."""
    done = errors = 0
    with requests.Session() as http:
        http.get(f"{url}/healthz", timeout=30)  # the connection is open before the clock starts
        ready.put(1)
        go.wait()
        started = time.perf_counter()
        stop_at = started + seconds
        while time.perf_counter() < stop_at and done < cap:
            try:
                slot = http.post(
                    f"{url}/v0/sessions/{session_id}/upload",
                    json={"datasetTimestamp": first_stamp + done + errors},
                    timeout=30,
                )
                slot.raise_for_status()
                http.put(slot.json()["uploadUrl"], data=data, timeout=30).raise_for_status()
                done += 1
            except requests.RequestException:
                errors += 1
                if errors > 100:
                    break
        elapsed = time.perf_counter() - started
    out.put((done, errors, elapsed))


def run_level(url: str, session_id: str, data: bytes, clients: int, seconds: float, cap: int) -> tuple[float, int, int]:
    """Uploads/s, errors and uploads of ``clients`` concurrent clients (processes started and
    connected before the clock starts)."""
    context = multiprocessing.get_context("spawn")
    out, ready, go = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(
            target=client,
            args=(
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
        f"{args.store} store"
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
            rate, errors, uploads = run_level(url, session_id, data, clients, args.seconds, args.max_uploads)
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
        health = requests.get(f"{url}/healthz", timeout=30).json()
        backlog: int | str = "?"
        if not storage:
            store = Store(work / "server")  # the server's own store (SQLite in WAL mode), read alongside it
            try:
                backlog = store.metadata.pending_ingest()
            finally:
                store.close()
        print(f"sessions {health['sessions']}; ingest backlog at the end {backlog} (summarised in the background)")
        stats = requests.get(f"{url}/_local/stats", timeout=30).json()
        print(f"slots made {stats['upload']}; PUTs through the API server {stats['put']}")


if __name__ == "__main__":
    main()
