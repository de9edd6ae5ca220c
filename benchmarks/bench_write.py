"""How close the songbird writer gets to the bare minimum, measured in one run.

1. One ready-made profile view on loopback: median latency of a NEW ``view.writer("songbird")`` per
   call, as whylogs code does (``view.writer("songbird").option(...).write()``), for a 5,000-row x
   10-column profile, divided by the bare minimum (serialize + one POST for the upload URL + one PUT
   on a warm ``requests.Session``). Target: <= 1.05.
2. 20 reference profiles over an emulated 50 ms round trip (the local server's ``latency_ms``):
   wall time of ``publish_references`` divided by the sequential bare minimum (one batch call,
   then the PUTs one after another). Target: <= 0.2.

The server runs in a process of its own (``python -m whylogs_songbird.server``), as the embedded
default and a team server do: in this process it would share the client's GIL, and the ratios
would measure the server's CPU as much as the writer's.

Run: ``python benchmarks/bench_write.py`` (add ``--rounds N`` for more samples).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from _server_process import server_process  # noqa: E402

import whylogs_songbird  # noqa: E402,F401  (registers the writer)
from whylogs_songbird import publish_references  # noqa: E402


def frame(rows: int, cols: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"num_{i}": rng.normal(i, 1 + i, rows) for i in range(cols - 3)}
    data.update({f"cat_{i}": rng.choice(list("abcdefgh"), rows) for i in range(3)})
    return pd.DataFrame(data)


def bare_single(http: requests.Session, url: str, session_id: str, view) -> float:
    started = time.perf_counter()
    data = view.serialize()
    slot = http.post(
        f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": int(time.time() * 1000)}, timeout=30
    ).json()
    http.put(slot["uploadUrl"], data=data, timeout=30).raise_for_status()
    return time.perf_counter() - started


def bare_references(http: requests.Session, url: str, session_id: str, views: dict) -> float:
    started = time.perf_counter()
    slots = http.post(
        f"{url}/v0/sessions/{session_id}/references",
        json={"references": [{"alias": name} for name in views]},
        timeout=30,
    ).json()["references"]
    for slot, view in zip(slots, views.values()):
        http.put(slot["uploadUrl"], data=view.serialize(), timeout=30).raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    config_dir = tempfile.mkdtemp(prefix="songbird-bench-")

    view = why.log(frame(5000, 10, seed=1)).view()
    data_dir = Path(tempfile.mkdtemp(prefix="songbird-bench-server-"))
    with server_process(data_dir) as (url, _), requests.Session() as http:
        opts = {"endpoint": url, "config_dir": config_dir}
        assert view.writer("songbird").option(**opts).write()[0]  # warm: session created, connections open
        session_id = whylogs_songbird.current_session(**opts)
        bare_single(http, url, session_id, view)
        ours, bare = [], []
        for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
            started = time.perf_counter()
            # A new writer per call, as whylogs code does. Each write gets its own dataset timestamp, as
            # the bare minimum's slots do: the server would otherwise ignore repeats of the same bytes.
            stamp = int(time.time() * 1000)
            ok, _ = view.writer("songbird").option(**opts, dataset_timestamp=stamp).write()
            ours.append(time.perf_counter() - started)
            assert ok
            bare.append(bare_single(http, url, session_id, view))
        single_ratio = statistics.median(ours) / statistics.median(bare)
        print(
            f"single profile 5000x10: writer median {statistics.median(ours) * 1000:.1f} ms, "
            f"bare minimum median {statistics.median(bare) * 1000:.1f} ms"
        )
        print(f"RATIO single_write / bare_minimum = {single_ratio:.2f}  (target <= 1.05)")

    refs = {f"ref-{i:02d}": why.log(frame(1000, 10, seed=100 + i)).view() for i in range(20)}
    data_dir = Path(tempfile.mkdtemp(prefix="songbird-bench-server-"))
    with server_process(data_dir, "--latency-ms", "50") as (url, _), requests.Session() as http:
        opts = {"endpoint": url, "config_dir": tempfile.mkdtemp(prefix="songbird-bench-")}
        whylogs_songbird.new_session(**opts)
        session_id = whylogs_songbird.current_session(**opts)
        bare_references(http, url, session_id, refs)  # warm
        ours, bare = [], []
        for _ in range(max(3, args.rounds // 3)):
            started = time.perf_counter()
            result = publish_references(refs, **opts)
            ours.append(time.perf_counter() - started)
            assert result.ok
            bare.append(bare_references(http, url, session_id, refs))
        refs_ratio = statistics.median(ours) / statistics.median(bare)
        print(
            f"20 references at 50 ms RTT: publish_references median {statistics.median(ours) * 1000:.0f} ms, "
            f"sequential bare minimum median {statistics.median(bare) * 1000:.0f} ms"
        )
        print(f"RATIO publish_references / sequential_minimum = {refs_ratio:.2f}  (target <= 0.2)")


if __name__ == "__main__":
    main()
