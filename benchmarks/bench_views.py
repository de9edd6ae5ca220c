"""Cost of a timeline view against the size of a session's history, measured in one run.

Sessions are written straight into an embedded store (SQLite + files) in a temporary directory,
then served by a LocalServer on loopback, whose ``Server-Timing`` header gives each view's time:

- *a year of hourly batches × 20 columns* (8,760 batches and a reference): the first daily view
  (365 buckets), the first hourly view of its last month (``start``/``end``: a view shows at most
  1,000 buckets), a stored view (the same daily view again), the first daily view after one more
  batch, and, each in a freshly started server, the first daily view with only the rollups stored
  and with nothing stored, which merges every profile (what a first view cost before rollups);
- *cost per view against history*: sessions of 1k, 10k and 50k batches spread over one year, so
  that the daily view always has 365 buckets; for each, the first daily view and a stored one, with
  the growth exponent ``log(t_big / t_small) / log(n_big / n_small)`` (0: independent of history;
  1: proportional to it).

How the data is written, so the run takes minutes, not hours: a few distinct profiles are made
with whylogs, serialized, and digested once (``digest_from_bytes``, as the ingest worker's sandbox
does); each batch is then an upload slot (``Store.create_upload``), its bytes
(``Store.store_profile_bytes``), its summary (``store_summary``), and the ingest worker's own
hooks, ``rollups.summary_changing`` and ``rollups.note_summarised``, which merge it into its hour
and day rollups as a served upload would be. Only the sandboxed parse of each upload is skipped.
The time spent in the rollups per batch is printed too (their ingest-side cost).

Most of a first view's time is then whylogs' drift of each bucket against the reference and the
previous bucket (the KS p-value by ``column_stats.ks_pvalues``, the same distribution as whylogs'
scipy call at a cost that does not grow with the sample size). Merging is what rollups remove.

Each view is given as the server's wall time and, beside it, the CPU time of the thread that built
it (``Server-Timing: timeline-cpu``), which the load of the machine does not change: the targets
(first daily view ≤ 3 s, stored view ≤ 100 ms) are judged on CPU time.

Run: ``python benchmarks/bench_views.py`` (``--sizes 1000,10000`` and ``--no-year`` for shorter
runs; the whole run takes about 10-20 minutes on two cores, most of it writing the 50k session).
The year's store is written with a ``session.json`` naming its session: ``--year-from DIR`` measures
a copy of such a store instead of writing one (``--sizes ''`` then skips the growth curves, and
``--no-from-profiles`` the view that merges every profile, about six minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

import pandas as pd  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from timeline_data import wide_frame  # noqa: E402

from whylogs_songbird.server import LocalServer  # noqa: E402
from whylogs_songbird.server.digest import digest_from_bytes  # noqa: E402
from whylogs_songbird.server.rollups import note_summarised, summary_changing  # noqa: E402
from whylogs_songbird.server.store import Store  # noqa: E402

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
YEAR_HOURS = 365 * 24
START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC
COLUMNS = 20
DISTINCT = 24
TIMEOUT = 900


def frame(rows: int, seed: int, shift: float) -> pd.DataFrame:
    return wide_frame(rows, seed, shift, COLUMNS)


def profiles(rows: int) -> list[tuple[bytes, bytes]]:
    """(serialized profile, its digest) of DISTINCT profiles; the second half drifts."""
    made = []
    for seed in range(DISTINCT):
        data = why.log(frame(rows, seed, 1.5 if seed >= DISTINCT // 2 else 0.0)).view().serialize()
        made.append((data, digest_from_bytes(data)))
    return made


def add(store: Store, session_id: str, kind: str, timestamp: int, made: tuple[bytes, bytes]) -> float:
    """One upload written as the server records and summarises it; seconds spent in the rollups hook."""
    data, digest = made
    slot = store.create_upload(session_id, kind, ttl_seconds=3600, dataset_timestamp=timestamp)  # type: ignore[arg-type]
    upload = store.store_profile_data(slot.id, data, sha256=hashlib.sha256(data).hexdigest()).upload
    assert upload.sha256 is not None
    summary_changing(store, upload)
    if not store.metadata.store_summary(upload.id, upload.sha256, digest):
        raise SystemExit(f"the summary of {upload.id} was not stored")
    began = time.perf_counter()
    note_summarised(store, upload, digest)
    return time.perf_counter() - began


def fill(data_dir: Path, stamps: list[int], made: list[tuple[bytes, bytes]]) -> tuple[str, float, float]:
    """A session with a reference and a batch at each of ``stamps``: (its id, seconds, hook seconds)."""
    store = Store(data_dir)
    try:
        session_id = store.create_session("bench").id
        add(store, session_id, "reference", START_MS, made[0])
        began, hooks = time.perf_counter(), 0.0
        for index, stamp in enumerate(stamps):
            hooks += add(store, session_id, "batch", stamp, made[index % len(made)])
        return session_id, time.perf_counter() - began, hooks
    finally:
        store.close()


def server_ms(response: requests.Response, metric: str = "timeline") -> float:
    match = re.search(rf"(?:^|, ){metric};dur=([0-9.]+)", response.headers.get("Server-Timing", ""))
    if response.status_code != 200 or not match:
        raise SystemExit(f"unexpected answer {response.status_code}: {response.text[:300]}")
    return float(match.group(1))


class Timed(NamedTuple):
    """One JSON timeline view: the server's wall ms, the CPU ms of the thread that built it, its bytes."""

    wall: float
    cpu: float
    size: int

    def __str__(self) -> str:
        return f"{self.cpu:.0f} ms CPU ({self.wall:.0f} ms wall)"


def view(server: LocalServer, session_id: str, **params: str) -> Timed:
    """One JSON timeline view, timed by the server (``Server-Timing``)."""
    response = requests.get(f"{server.url}/api/v1/sessions/{session_id}/timeline", params=params, timeout=TIMEOUT)
    return Timed(server_ms(response), server_ms(response, "timeline-cpu"), len(response.content))


def stored_ms(server: LocalServer, session_id: str, runs: int = 5, **params: str) -> Timed:
    """The median (by CPU) of ``runs`` views of a stored document."""
    return sorted((view(server, session_id, **params) for _ in range(runs)), key=lambda t: t.cpu)[runs // 2]


def exponent(small: tuple[int, float], big: tuple[int, float]) -> float:
    return math.log(big[1] / small[1]) / math.log(big[0] / small[0])


def first_view(data_dir: Path, session_id: str, *dropped: str) -> Timed:
    """The first daily view in a freshly started server, once ``dropped`` are deleted."""
    store = Store(data_dir)
    try:
        for prefix in dropped:
            store.metadata.drop_derived(session_id, prefix)
    finally:
        store.close()
    with LocalServer(data_dir=data_dir, session_rate=0, slot_rate=0) as server:
        return view(server, session_id, granularity="day")


def year(
    root: Path, made: list[tuple[bytes, bytes]], hours: int, given: Path | None = None, from_profiles: bool = True
) -> None:
    """The year of hourly batches: written (with a ``session.json`` naming its session), or a copy of
    ``given``, a store written so before."""
    data_dir = root / "year"
    stamps = [START_MS + hour * HOUR_MS + 60_000 for hour in range(hours)]
    if given is None:
        session_id, took, hooks = fill(data_dir, stamps, made)
        (data_dir / "session.json").write_text(json.dumps({"session": session_id}))
        print(
            f"wrote a year of hourly batches × {COLUMNS} columns ({len(stamps):,} batches) in {took:.0f} s; "
            f"rollups at ingest: {hooks / len(stamps) * 1000:.1f} ms per batch"
        )
    else:
        shutil.copytree(given, data_dir)
        session_id = json.loads((data_dir / "session.json").read_text())["session"]
        print(f"a copy of the year of hourly batches in {given}")
    days = -(-hours // 24)
    last_month = {"start": str(START_MS + max(0, days - 31) * DAY_MS), "end": str(START_MS + days * DAY_MS)}
    with LocalServer(data_dir=data_dir, session_rate=0, slot_rate=0) as server:
        first_day = view(server, session_id, granularity="day")
        stored = stored_ms(server, session_id, granularity="day")
        first_hour = view(server, session_id, granularity="hour", **last_month)
        stored_hour = stored_ms(server, session_id, granularity="hour", **last_month)
        week = view(server, session_id, granularity="week")
        add(server.store, session_id, "batch", stamps[-1] + HOUR_MS, made[1])
        after_one = view(server, session_id, granularity="day")
    # fresh processes (nothing kept in memory): with only the rollups stored, then with nothing
    rolled = first_view(data_dir, session_id, "timeline/b/", "timeline/view/")
    print(f"  first daily view ({days} buckets): {first_day} ({first_day.size / 1024:.0f} KiB)")
    print(f"  stored daily view: {stored.cpu:.1f} ms CPU ({stored.wall:.1f} ms wall)")
    print(f"  first hourly view of the last month ({min(days, 31) * 24} buckets): {first_hour}")
    print(f"  the same hourly view again (built in this process): {stored_hour.cpu:.1f} ms CPU")
    print(f"  first weekly view (from the day rollups): {week}")
    print(f"  first daily view after one more batch: {after_one}")
    print(f"  first daily view, fresh server, only the rollups stored: {rolled}")
    ratios = f"  ratios: stored ÷ first daily {stored.cpu / first_day.cpu:.4f}"
    ratios += f"; first hourly (744 buckets) ÷ first daily (365) {first_hour.cpu / first_day.cpu:.2f}"
    if from_profiles:
        merged = first_view(data_dir, session_id, "timeline/")  # rollups, bucket values, documents, version
        print(f"  first daily view, fresh server, nothing stored (every profile merged): {merged}")
        ratios += f"; without ÷ with rollups ×{merged.cpu / rolled.cpu:.2f}"
    print(ratios)
    print(
        f"  targets (CPU): first daily ≤ 3000 ms {'met' if max(first_day.cpu, rolled.cpu) <= 3000 else 'NOT met'}, "
        f"stored ≤ 100 ms {'met' if stored.cpu <= 100 else 'NOT met'}"
    )


def growth(root: Path, made: list[tuple[bytes, bytes]], sizes: list[int]) -> None:
    results: dict[int, tuple[float, float]] = {}
    for size in sizes:
        data_dir = root / f"n{size}"
        step = YEAR_HOURS * HOUR_MS // size
        stamps = [START_MS + i * step for i in range(size)]
        session_id, took, hooks = fill(data_dir, stamps, made)
        with LocalServer(data_dir=data_dir, session_rate=0, slot_rate=0) as server:
            first = view(server, session_id, granularity="day").cpu
            stored = stored_ms(server, session_id, granularity="day").cpu
        results[size] = (first, stored)
        print(
            f"{size:>6,} batches over a year (written in {took:.0f} s, "
            f"rollups {hooks / size * 1000:.1f} ms per batch): "
            f"first daily view {first:.0f} ms CPU, stored {stored:.1f} ms CPU"
        )
    for small, big in zip(sizes, sizes[1:]):
        a, b = results[small], results[big]
        print(
            f"  {small:,} → {big:,} batches (×{big / small:.0f}): first view ×{b[0] / a[0]:.2f} "
            f"(exponent {exponent((small, a[0]), (big, b[0])):.2f}), stored view ×{b[1] / a[1]:.2f} "
            f"(exponent {exponent((small, a[1]), (big, b[1])):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="batches per session, comma-separated")
    parser.add_argument("--rows", type=int, default=500, help="rows per batch profile")
    parser.add_argument("--no-year", action="store_true", help="skip the year of hourly batches")
    parser.add_argument("--hours", type=int, default=YEAR_HOURS, help="hourly batches of the 'year' session")
    parser.add_argument("--year-from", type=Path, help="measure a copy of this year store (written by a run before)")
    parser.add_argument("--no-from-profiles", action="store_true", help="skip the view that merges every profile")
    args = parser.parse_args()
    made = profiles(args.rows)
    root = Path(tempfile.mkdtemp(prefix="bench-views-"))
    if not args.no_year:
        year(root, made, args.hours, args.year_from, not args.no_from_profiles)
    if args.sizes:
        growth(root, made, [int(s) for s in args.sizes.split(",")])


if __name__ == "__main__":
    main()
