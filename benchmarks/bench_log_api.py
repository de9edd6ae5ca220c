"""Latency per write of whylogs' own ``writer("whylabs")`` (API-key mode) against this server, next
to the bare minimum of one write and to the guest session's upload path.

One profile (``--rows`` rows x 10 columns) is written ``--writes`` times, each way, to a server in
a separate process (so only the client is measured in this one):

- ``whylogs-writer``: ``WhyLabsWriter().write(view)`` as installed (``POST /v1/log/async`` + ``PUT``;
  whylogs prepares the view for upload on every write);
- ``bare-log-api``: serialize the view, ``POST /v0/organizations/{org}/log/async/{dataset}``, ``PUT``;
- ``bare-session``: serialize the view, ``POST /v0/sessions/{id}/upload``, ``PUT``.

Printed: median and p90 milliseconds per write, and each way's median as a ratio to
``bare-log-api``. Nothing leaves 127.0.0.1 (``_WHYLABS_SKIP_CONFIG_READ`` stops whylogs' HEAD
request to a public bucket).

Run: ``python benchmarks/bench_log_api.py`` (``--writes 50 --rows 1000``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=30)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()

    import urllib3
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

            # one profile per write, each with its own hour: every write stores new bytes (identical
            # bytes for the same timestamp would be kept once, a cheaper path than a pipeline's)
            profile = why.log(frame(args.rows)).profile()
            views = []
            for index in range(args.writes + 1):
                profile.set_dataset_timestamp(
                    datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=index)
                )
                views.append(profile.view())
            view = views[0]
            http = urllib3.PoolManager()  # what whylabs-client speaks: the least overhead per request
            json_headers = {"Content-Type": "application/json"}
            writer = WhyLabsWriter()

            def whylogs_writer(index: int) -> None:
                ok, message = writer.write(views[index])
                assert ok, message

            def bare_log_api(index: int) -> None:  # another dataset: not the writer's bytes again
                data = views[index].serialize()
                slot = http.request(
                    "POST",
                    f"{url}/v0/organizations/{ORG}/log/async/model-2",
                    body=json.dumps({"datasetTimestamp": stamp(views[index]), "segmentTags": []}),
                    headers={**json_headers, "X-API-Key": KEY},
                ).json()
                assert http.request("PUT", slot["uploadUrl"], body=data).status == 200

            session_id = http.request(
                "POST", f"{url}/v0/sessions", body=json.dumps({"userId": "bench"}), headers=json_headers
            ).json()["id"]

            def bare_session(index: int) -> None:
                data = views[index].serialize()
                slot = http.request(
                    "POST",
                    f"{url}/v0/sessions/{session_id}/upload",
                    body=json.dumps({"datasetTimestamp": stamp(views[index])}),
                    headers=json_headers,
                ).json()
                assert http.request("PUT", slot["uploadUrl"], body=data).status == 200

            ways = {"whylogs-writer": whylogs_writer, "bare-log-api": bare_log_api, "bare-session": bare_session}
            results = timed(ways, args.writes)
    base = statistics.median(results["bare-log-api"])
    print(f"{args.writes} writes of one profile of {args.rows} rows x 10 columns ({len(view.serialize())} bytes)")
    for name, times in results.items():
        p90 = statistics.quantiles(times, n=10)[-1]
        median = statistics.median(times)
        print(f"{name:15s} median {median:7.2f} ms  p90 {p90:7.2f} ms  x{median / base:5.2f} of bare-log-api")


if __name__ == "__main__":
    main()
