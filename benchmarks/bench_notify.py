"""Latency from a batch landing to its notification reaching a webhook.

A LocalServer on loopback with a monitors file (drift of every column against the reference) and
a ``[[notify]]`` table pointing at a receiver on another loopback port. A session gets a
reference and a few clean daily batches; then each of ``--batches`` new days gets a batch whose
first column is shifted, so each gives exactly one ``monitor_failed`` notification. Measured per
batch: from the moment the writer's upload returned (the PUT was answered: the batch landed) to
the moment the receiver read the notification. In between: the background evaluation (the
timeline's new bucket, whylogs' drift of every column), the queue in the store, the sender's POST.

Run: ``python benchmarks/bench_notify.py`` (``--batches 10 --columns 20``; under a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import whylogs as why  # noqa: E402

import whylogs_songbird  # noqa: E402
from whylogs_songbird.server import LocalServer  # noqa: E402

DAY_MS = 86_400_000
START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def frame(columns: int, rows: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({f"c{i:02d}": rng.normal(shift if i == 0 else 0.0, 1.0, rows) for i in range(columns)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()

    arrivals: dict[int, float] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.perf_counter()
            with lock:
                arrivals.setdefault(json.loads(body)["alert"]["start"], now)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        monitors = root / "monitors.toml"
        monitors.write_text(
            'reference = "training"\ngranularity = "day"\n[[monitor]]\ncolumns = ["c00"]\nmetric = "drift"\n'
            f'[[notify]]\nurl = "{hook}"\n'
        )
        with LocalServer(data_dir=root / "data", monitors=monitors) as server:
            config = str(root / "config")
            refs = whylogs_songbird.publish_references(
                {"training": why.log(frame(args.columns, args.rows, 1, 0.0))}, endpoint=server.url, config_dir=config
            )
            views = {day: why.log(frame(args.columns, args.rows, 100 + day, 0.0 if day < 3 else 1.0)) for day in
                     range(3 + args.batches)}  # fmt: skip

            def write(day: int) -> None:
                options = {"endpoint": server.url, "config_dir": config, "dataset_timestamp": START_MS + day * DAY_MS}
                ok, _ = views[day].writer("songbird").option(session_id=refs.session_id, **options).write()
                assert ok

            for day in range(3):
                write(day)
            latencies = []
            for day in range(3, 3 + args.batches):
                write(day)
                landed = time.perf_counter()
                bucket = START_MS + day * DAY_MS
                deadline = landed + 120
                while bucket not in arrivals and time.perf_counter() < deadline:
                    time.sleep(0.001)
                latencies.append((arrivals[bucket] - landed) * 1000)
    receiver.shutdown()
    latencies.sort()
    print(
        f"batch landed -> notification received, {args.batches} batches of {args.columns} columns x {args.rows} rows:"
    )
    print(
        f"  median {statistics.median(latencies):.0f} ms, p90 {latencies[int(0.9 * (len(latencies) - 1))]:.0f} ms, "
        f"max {latencies[-1]:.0f} ms, min {latencies[0]:.0f} ms"
    )


if __name__ == "__main__":
    main()
