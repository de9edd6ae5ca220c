"""Server time of the timeline (JSON API and page) of sessions of 30, 90 and 365 daily batches of
50 columns, measured in one run.

Each session holds a reference and N daily batch profiles (40 numeric and 10 categorical columns,
a few columns drifting late in the series), uploaded with the songbird writer to a LocalServer on
loopback. For each session, from the server's own ``Server-Timing`` header:

- *cold*: the first JSON request, which reads and deserializes every profile, merges each bucket,
  reads its series and runs whylogs' drift against the reference and the previous bucket, and
  stores all of it in the store's derived-artefact cache;
- *warm*: the same JSON again (the stored document);
- *one more batch*: the first JSON request after one new daily batch landed. The server refreshes a
  viewed timeline in the background when a batch lands (only the new bucket is computed; every
  other bucket's points and drift are read back from the store); a request arriving meanwhile waits
  for that refresh, so this is the worst case a viewer sees;
- *page*: the HTML page (heatmap of columns × buckets), warm, and its size.

Ratios, measured in the same run: growth of each time and size from 30 to 90 to 365 batches, and
warm ÷ cold. Target: warm JSON and page at most 500 ms for 90 batches × 50 columns.

Run: ``python benchmarks/bench_timeline.py`` (``--sizes 30,90`` for a shorter run; a few minutes).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

import pandas as pd  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from timeline_data import wide_frame  # noqa: E402
from whylogs.core import DatasetProfileView  # noqa: E402

import whylogs_songbird  # noqa: E402
from whylogs_songbird.server import LocalServer  # noqa: E402

DAY_MS = 86_400_000
START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC
COLUMNS = 50
TIMEOUT = 600
#: Distinct profiles per session: batches cycle through them (profiling 365 frames would dominate the run).
DISTINCT = 12


def frame(rows: int, seed: int, shift: float) -> pd.DataFrame:
    return wide_frame(rows, seed, shift, COLUMNS)


def server_ms(response: requests.Response, name: str) -> float:
    match = re.search(rf"{name};dur=([0-9.]+)", response.headers.get("Server-Timing", ""))
    if response.status_code != 200 or not match:
        raise SystemExit(f"unexpected answer {response.status_code}: {response.text[:300]}")
    return float(match.group(1))


def timed(url: str, name: str, runs: int = 1) -> tuple[float, int]:
    """(median server ms, bytes) of ``runs`` GETs."""
    times, size = [], 0
    for _ in range(runs):
        response = requests.get(url, timeout=TIMEOUT)
        times.append(server_ms(response, name))
        size = len(response.content)
    return statistics.median(times), size


def publish_session(server: LocalServer, config: Path, batches: int, profiles: list[bytes]) -> str:
    refs = whylogs_songbird.publish_references(
        {"training": DatasetProfileView.deserialize(profiles[0])}, endpoint=server.url, config_dir=str(config)
    )
    for day in range(batches):
        add_batch(server, config, refs.session_id, day, profiles, batches)
    return refs.session_id


def add_batch(
    server: LocalServer, config: Path, session_id: str, day: int, profiles: list[bytes], batches: int
) -> None:
    late = day >= batches * 2 // 3  # the last third drifts
    view = DatasetProfileView.deserialize(profiles[(DISTINCT if late else 0) + day % DISTINCT])
    whylogs_songbird.publish(
        view,
        dataset_timestamp=START_MS + day * DAY_MS,
        endpoint=server.url,
        config_dir=str(config),
        session_id=session_id,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="30,90,365", help="daily batches per session, comma-separated")
    parser.add_argument("--rows", type=int, default=300, help="rows per batch profile")
    parser.add_argument("--warm", type=int, default=5, help="warm requests per measurement")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    started = time.perf_counter()
    profiles = [why.log(frame(args.rows, seed, 0.0)).view().serialize() for seed in range(DISTINCT)]
    profiles += [why.log(frame(args.rows, 100 + seed, 1.5)).view().serialize() for seed in range(DISTINCT)]
    print(f"profiled {len(profiles)} distinct {COLUMNS}-column profiles in {time.perf_counter() - started:.1f} s")

    root = Path(tempfile.mkdtemp(prefix="bench-timeline-"))
    results = {}
    with LocalServer(data_dir=root / "data", session_rate=0, slot_rate=0) as server:
        for size in sizes:
            config = root / f"config-{size}"
            began = time.perf_counter()
            sid = publish_session(server, config, size, profiles)
            uploaded = time.perf_counter() - began
            api = f"{server.url}/api/v1/sessions/{sid}/timeline?granularity=day"
            page = f"{server.url}/sessions/{sid}/timeline?granularity=day"
            cold, json_bytes = timed(api, "timeline")
            warm, _ = timed(api, "timeline", args.warm)
            page_ms, html_bytes = timed(page, "render", args.warm)
            add_batch(server, config, sid, size, profiles, size)
            incremental, _ = timed(api, "timeline")
            page_after, _ = timed(page, "render")
            results[size] = {
                "cold": cold,
                "warm": warm,
                "incremental": incremental,
                "page": page_ms,
                "page_after": page_after,
                "json": json_bytes,
                "html": html_bytes,
            }
            print(
                f"{size:>4} batches × {COLUMNS} columns (uploaded in {uploaded:.1f} s): JSON cold {cold:.0f} ms, "
                f"warm {warm:.1f} ms, after one more batch {incremental:.0f} ms; page warm {page_ms:.1f} ms "
                f"(first after the new batch {page_after:.0f} ms); JSON {json_bytes / 1024:.0f} KiB, "
                f"HTML {html_bytes / 1024:.0f} KiB"
            )

    print("\nratios (same run):")
    for size in sizes:
        r = results[size]
        warm_ratio, more_ratio = r["warm"] / r["cold"], r["incremental"] / r["cold"]
        print(f"  {size:>4} batches: warm ÷ cold JSON {warm_ratio:.4f}, one more batch ÷ cold {more_ratio:.3f}")
    for small, big in zip(sizes, sizes[1:]):
        a, b = results[small], results[big]
        print(
            f"  {small} → {big} batches (×{big / small:.1f}): cold ×{b['cold'] / a['cold']:.2f}, "
            f"warm JSON ×{b['warm'] / a['warm']:.2f}, one more batch ×{b['incremental'] / a['incremental']:.2f}, "
            f"page ×{b['page'] / a['page']:.2f}, JSON size ×{b['json'] / a['json']:.2f}, "
            f"HTML size ×{b['html'] / a['html']:.2f}"
        )
    if 90 in results:
        r = results[90]
        verdict = "met" if max(r["warm"], r["page"]) <= 500 else "NOT met"
        print(
            f"\ntarget (≤ 500 ms for 90 daily batches × {COLUMNS} columns once stored): {verdict} "
            f"(JSON {r['warm']:.1f} ms, page {r['page']:.1f} ms); the first view while a new batch is being "
            f"added waits for it: {r['incremental']:.0f} ms"
        )


if __name__ == "__main__":
    main()
