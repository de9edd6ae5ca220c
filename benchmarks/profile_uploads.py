"""CPU time of the server's upload path, which does not depend on what else the machine runs.

The server (the app under uvicorn, in this process) answers one client process that makes
``--uploads`` uploads one after the other (create the slot + PUT a 3 KB profile, each a new
batch). Prints the server process's CPU milliseconds per upload, with the ingest worker stopped
(``--with-ingest`` keeps it: its summarising then adds to the count); ``--profile`` also prints a
yappi profile of every thread of the server (``pip install yappi``; the profiler inflates the times,
so compare functions with each other, not with the plain run).

Run: ``python benchmarks/profile_uploads.py`` (``--uploads N``, ``--with-ingest``, ``--profile``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import requests  # noqa: E402
import uvicorn  # noqa: E402
from bench_ingest import small_profile  # noqa: E402

from whylogs_songbird.server.app import create_app  # noqa: E402
from whylogs_songbird.server.config import ServerConfig  # noqa: E402
from whylogs_songbird.server.serving import bind_socket, open_store  # noqa: E402

WARM_UPLOADS = 20


def client(url: str, uploads: int, data: bytes, events: Any) -> None:
    """Warm up, say so, wait for the go, then make ``uploads`` uploads and report the seconds taken."""
    with requests.Session() as http:
        session_id = http.post(f"{url}/v0/sessions", json={"userId": "profile"}, timeout=30).json()["id"]
        for i in range(WARM_UPLOADS + uploads):
            if i == WARM_UPLOADS:
                events.put("warm")
                events.get(timeout=60)
                started = time.perf_counter()
            slot = http.post(f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": i}, timeout=30)
            http.put(slot.json()["uploadUrl"], data=data, timeout=30).raise_for_status()
    events.put(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--with-ingest", action="store_true", help="keep the ingest worker running")
    parser.add_argument("--profile", action="store_true", help="print a yappi profile of the server's threads")
    parser.add_argument("--http", default="auto", help="uvicorn's HTTP protocol (auto, h11, httptools)")
    parser.add_argument("--loop", default="auto", help="uvicorn's event loop (auto, asyncio, uvloop)")
    args = parser.parse_args()
    data = small_profile()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ServerConfig(
        port=port,
        data_dir=Path(tempfile.mkdtemp(prefix="songbird-profile-uploads-")),
        session_rate=0,
        slot_rate=0,
    )
    store = open_store(config)
    app = create_app(config, store)
    server = uvicorn.Server(
        uvicorn.Config(app, http=args.http, loop=args.loop, access_log=False, log_level="warning", server_header=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [bind_socket("127.0.0.1", port)]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not args.with_ingest:
        app.state.ingest.stop()
    context = multiprocessing.get_context("spawn")
    to_client, from_client = context.Queue(), context.Queue()
    process = context.Process(target=client, args=(url, args.uploads, data, _Duplex(from_client, to_client)))
    process.start()
    try:
        assert from_client.get(timeout=300) == "warm"
        if args.profile:
            import yappi

            yappi.set_clock_type("cpu")
            yappi.start()
        cpu = time.process_time()
        to_client.put("go")
        took = from_client.get(timeout=600)
        cpu = time.process_time() - cpu
        if args.profile:
            yappi.stop()
        print(
            f"{args.uploads} uploads in {took:.2f} s; server CPU {1000 * cpu / args.uploads:.2f} ms/upload "
            f"(ingest worker {'running' if args.with_ingest else 'stopped'}; http {args.http}, loop {args.loop}; "
            f"load average {os.getloadavg()[0]:.1f})"
        )
        if args.profile:
            stats = yappi.get_func_stats()
            stats.sort("tsub")
            stats.print_all(out=sys.stdout, columns={0: ("name", 90), 1: ("ncall", 8), 2: ("tsub", 8), 3: ("ttot", 8)})
    finally:
        process.join(timeout=30)
        server.should_exit = True
        thread.join(timeout=30)
        store.close()


class _Duplex:
    """The client's ends of the two queues."""

    def __init__(self, out: Any, into: Any) -> None:
        self._out, self._into = out, into

    def put(self, item: Any) -> None:
        self._out.put(item)

    def get(self, timeout: float) -> Any:
        return self._into.get(timeout=timeout)


if __name__ == "__main__":
    main()
