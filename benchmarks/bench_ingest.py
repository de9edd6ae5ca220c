"""Ingest rate of the local server with 1, 2, 4 and 8 concurrent clients, measured in one run.

The server runs in its own process (``python -m whylogs_songbird.server``). Each client is a
separate process with its own ``requests.Session``, uploading the same small profile over and
over: one upload = create the slot (POST .../upload) + PUT the bytes. Every level runs for a fixed
time (``--seconds``, default 5) or until ``--max-uploads`` per client, whichever comes first.
Prints uploads/s per level and its ratio to the 1-client rate (perfect scaling would be 1, 2, 4, 8).

Run: ``python benchmarks/bench_ingest.py`` (``--seconds S``, ``--levels 1,2,4,8``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import pandas as pd  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from _server_process import cpu_seconds, server_process  # noqa: E402


def small_profile() -> bytes:
    frame = pd.DataFrame({"n": range(50), "x": [i * 0.5 for i in range(50)], "s": [f"v{i % 5}" for i in range(50)]})
    return why.log(frame).view().serialize()


def client(url: str, session_id: str, data: bytes, start_at: float, stop_at: float, cap: int, out) -> None:
    """One client: upload until ``stop_at`` (wall clock) or ``cap`` uploads; report (uploads, errors)."""
    done = errors = 0
    with requests.Session() as http:
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at and done < cap:
            try:
                slot = http.post(
                    f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": 1_700_000_000_000}, timeout=30
                )
                slot.raise_for_status()
                http.put(slot.json()["uploadUrl"], data=data, timeout=30).raise_for_status()
                done += 1
            except requests.RequestException:
                errors += 1
                if errors > 100:
                    break
    out.put((done, errors))


def run_level(url: str, session_id: str, data: bytes, clients: int, seconds: float, cap: int) -> tuple[float, int]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start_at = time.time() + 2.0  # every client is up and waiting before the clock starts
    stop_at = start_at + seconds
    workers = [
        context.Process(target=client, args=(url, session_id, data, start_at, stop_at, cap, out))
        for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=seconds + 60) for _ in workers]
    finished = time.time()
    for worker in workers:
        worker.join(timeout=10)
    uploads = sum(done for done, _ in results)
    errors = sum(err for _, err in results)
    return uploads / (min(finished, stop_at) - start_at), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--max-uploads", type=int, default=20_000, help="per client and level")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    data = small_profile()
    work = Path(tempfile.mkdtemp(prefix="songbird-bench-ingest-"))
    print(f"profile of {len(data)} bytes; {os.cpu_count()} CPUs; {args.seconds:g} s per level")
    with server_process(work / "server") as (url, server):
        session_id = requests.post(f"{url}/v0/sessions", json={"userId": "bench"}, timeout=30).json()["id"]
        rates = {}
        for clients in levels:
            cpu_before, started = cpu_seconds(server.pid), time.time()
            rate, errors = run_level(url, session_id, data, clients, args.seconds, args.max_uploads)
            server_cores = (cpu_seconds(server.pid) - cpu_before) / (time.time() - started - 2.0)
            rates[clients] = rate
            base = rates[levels[0]]
            print(
                f"{clients} client(s): {rate:7.1f} uploads/s  "
                f"RATIO rate/rate_{levels[0]}_client = {rate / base:.2f}  "
                f"(server busy {server_cores:.2f} CPU cores; {errors} errors)"
            )


if __name__ == "__main__":
    main()
