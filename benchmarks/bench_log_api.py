"""Latency per write of whylogs' own ``writer("whylabs")`` (API-key mode) and of our writer in
dataset mode against this server, each as a ratio to the bare minimum of one write; and the upload
throughput of the log API next to the guest session's upload path. All measured in one run.

Latency: one profile (``--rows`` rows x 10 columns) is written ``--writes`` times, each way, the ways
taken in turn, to a server in a separate process (so only the client is measured in this one):

- ``bare``: the bare minimum with ``requests``: serialize the view,
  ``POST /v0/organizations/{org}/log/async/{dataset}``, ``PUT`` the bytes;
- ``whylogs-writer``: ``WhyLabsWriter().write(view)`` as installed (``POST /v1/log/async`` + ``PUT``;
  whylogs prepares the view for upload on every write);
- ``songbird-writer``: our ``SongbirdWriter`` in dataset mode (``org_id``, ``dataset_id``,
  ``api_key``; the outbox off): the log API, a checked PUT and the observatory link;
- ``bare-session``: as ``bare``, through a guest session (``POST /v0/sessions/{id}/upload``).

Throughput: ``--uploads`` profiles (serialized before the clock starts, each with its own timestamp
so none is a duplicate) uploaded by ``--threads`` threads, each with its own connection, through
``log/async`` + ``PUT`` and through the session's ``upload`` + ``PUT``: profiles and MB per second.

Printed: median and p90 milliseconds per write with each way's median as a ratio to ``bare``; the
throughputs with log/async's as a ratio to the session path's. Nothing leaves 127.0.0.1
(``_WHYLABS_SKIP_CONFIG_READ`` stops whylogs' HEAD request to a public bucket).

Run: ``python benchmarks/bench_log_api.py`` (``--writes 30 --rows 1000 --uploads 200 --threads 4``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
os.environ["_WHYLABS_SKIP_CONFIG_READ"] = "1"

ORG, DATASET = "org-bench", "model-1"
KEY = "B3nchK3y01.benchSecretbenchSecret00:" + ORG


def frame(rows: int):  # noqa: ANN201 - pandas is imported late
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    columns = {f"n{i}": rng.normal(i, 1, rows) for i in range(7)}
    columns.update({f"s{i}": rng.choice(["a", "b", "c", "d"], rows) for i in range(3)})
    return pd.DataFrame(columns)


def timed(ways: dict[str, Callable[[int], None]], writes: int) -> dict[str, list[float]]:
    """Milliseconds of each write, the ways taken in turn (so a busy moment of the machine falls on all)."""
    for write in ways.values():
        write(0)  # warm: connections, caches
    times: dict[str, list[float]] = {name: [] for name in ways}
    for index in range(1, writes + 1):
        for name, write in ways.items():
            started = time.perf_counter()
            write(index)
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def stamp(view) -> int:  # noqa: ANN001
    return int(view.dataset_timestamp.timestamp() * 1000)


def throughput(
    upload: Callable[[object, int], None], make_client: Callable[[], object], count: int, threads: int
) -> float:
    """Seconds to run ``upload(client, i)`` for i in 0..count-1 on ``threads`` threads, each thread
    with its own client (one keep-alive connection each)."""
    local = threading.local()

    def one(index: int) -> None:
        if not hasattr(local, "client"):
            local.client = make_client()
        upload(local.client, index)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(min(threads, count))))  # warm: one connection per thread
        started = time.perf_counter()
        list(pool.map(one, range(threads, count + threads)))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=30)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--uploads", type=int, default=200, help="profiles per path in the throughput run")
    parser.add_argument("--threads", type=int, default=4, help="uploading threads in the throughput run")
    args = parser.parse_args()

    import requests
    import whylogs as why
    from _server_process import server_process

    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "keys.txt"
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o600)
        with server_process(Path(tmp) / "data", "--api-key-file", str(key_file)) as (url, _):
            os.environ.update(
                WHYLABS_API_ENDPOINT=url,
                WHYLABS_API_KEY=KEY,
                WHYLABS_DEFAULT_ORG_ID=ORG,
                WHYLABS_DEFAULT_DATASET_ID=DATASET,
                WHYLOGS_CONFIG_PATH=str(Path(tmp) / "whylogs-config"),
                NO_PROXY="127.0.0.1",
            )
            from whylogs.api.writer.whylabs import WhyLabsWriter

            from whylogs_songbird import SongbirdWriter

            # one profile per write, each with its own hour: every write stores new bytes (identical
            # bytes for the same timestamp would be kept once, a cheaper path than a pipeline's)
            profile = why.log(frame(args.rows)).profile()
            total = max(args.writes + 1, args.uploads + 2 * args.threads)
            views = []
            for index in range(total):
                profile.set_dataset_timestamp(
                    datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=index)
                )
                views.append(profile.view())
            view = views[0]
            http = requests.Session()
            writer = WhyLabsWriter()
            ours = SongbirdWriter(
                endpoint=url,
                config_dir=str(Path(tmp) / "songbird-config"),
                org_id=ORG,
                dataset_id="model-3",
                api_key=KEY,
                outbox=False,
            )

            def log_async(client: requests.Session, dataset: str, data: bytes, timestamp: int) -> None:
                slot = client.post(
                    f"{url}/v0/organizations/{ORG}/log/async/{dataset}",
                    json={"datasetTimestamp": timestamp, "segmentTags": []},
                    headers={"X-API-Key": KEY},
                )
                slot.raise_for_status()
                client.put(slot.json()["uploadUrl"], data=data).raise_for_status()

            session_id = http.post(f"{url}/v0/sessions", json={"userId": "bench"}).json()["id"]

            def session_upload(client: requests.Session, data: bytes, timestamp: int) -> None:
                slot = client.post(f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": timestamp})
                slot.raise_for_status()
                client.put(slot.json()["uploadUrl"], data=data).raise_for_status()

            def bare(index: int) -> None:  # a dataset of its own: never the bytes of another way
                log_async(http, "model-2", views[index].serialize(), stamp(views[index]))

            def whylogs_writer(index: int) -> None:
                ok, message = writer.write(views[index])
                assert ok, message

            def songbird_writer(index: int) -> None:
                ok, message = ours.write(views[index])
                assert ok, message

            def bare_session(index: int) -> None:
                session_upload(http, views[index].serialize(), stamp(views[index]))

            ways = {
                "bare": bare,
                "whylogs-writer": whylogs_writer,
                "songbird-writer": songbird_writer,
                "bare-session": bare_session,
            }
            results = timed(ways, args.writes)

            # four rounds, log/async, session, session, log/async, each over half the profiles: what
            # runs in the server's background meanwhile (the ingest of earlier rounds) falls on both
            half = args.uploads // 2
            payloads = [(v.serialize(), stamp(v)) for v in views[: 2 * (half + args.threads)]]
            uploads = {
                "log/async": lambda client, i: log_async(client, "model-4", *payloads[i]),
                "session upload": lambda client, i: session_upload(client, *payloads[i]),
            }
            seconds = {name: 0.0 for name in uploads}
            for name, first in (
                ("log/async", 0),
                ("session upload", 0),
                ("session upload", half + args.threads),
                ("log/async", half + args.threads),
            ):
                seconds[name] += throughput(
                    lambda client, i, name=name, first=first: uploads[name](client, first + i),
                    requests.Session,
                    half,
                    args.threads,
                )
    size = len(view.serialize())
    base = statistics.median(results["bare"])
    print(f"latency: {args.writes} writes of one profile of {args.rows} rows x 10 columns ({size} bytes)")
    for name, times in results.items():
        p90 = statistics.quantiles(times, n=10)[-1]
        median = statistics.median(times)
        print(f"  {name:15s} median {median:7.2f} ms  p90 {p90:7.2f} ms  x{median / base:5.2f} of bare")
    print(f"throughput: {2 * half} uploads of {size} bytes each way on {args.threads} threads")
    for name, spent in seconds.items():
        rate = 2 * half / spent
        print(f"  {name:15s} {rate:7.1f} profiles/s  {rate * size / 1e6:6.2f} MB/s")
    print(
        f"  log/async as a ratio to the session upload path: x{seconds['session upload'] / seconds['log/async']:5.2f}"
    )


if __name__ == "__main__":
    main()
