"""CPU of the first timeline view of a year of hourly batches, this tree against a base tree, in one run.

The year store is one ``bench_views.py`` writes (``session.json`` names its session; about 1.8 GB
for 8,760 hourly batches × 20 columns). Each tree gets its own copy, as that tree's ingest would
have left it: the base's as it is, this tree's with its rollups' merged columns written again by
this tree's ``rollups.pack_columns`` (what its ingest writes). Then, alternating base and new:

- a fresh process drops the copy's stored bucket values and documents (``timeline/b/``,
  ``timeline/view/``; the rollups stay) and builds the first daily view (365 buckets) and the
  first hourly view of the last month (744 buckets) in its main thread, the server started
  in-process as a LocalServer. The CPU time of that thread is what is compared (the load of the
  machine changes the wall time far more);
- the same view again in that process (a stored view).

It prints the medians, the ratio new ÷ base, the load average around each run, and whether the
two trees' documents are byte for byte the same.

Run: ``python benchmarks/bench_first_view.py --year DIR --base /path/to/base/checkout`` (``--runs``,
``--views day,hour``). Needs about 2 × the store's size in the temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC, as bench_views.py writes the year
DAY_MS = 86_400_000
HERE = Path(__file__).resolve().parent.parent


def child(data_dir: Path, granularity: str, out: Path) -> None:
    """In a fresh process (``PYTHONPATH`` = the tree measured): one first view and one stored view."""
    from whylogs_songbird.server import LocalServer, warmup
    from whylogs_songbird.server.store import Store
    from whylogs_songbird.server.timeline_service import TimelineQuery

    session_id = json.loads((data_dir / "session.json").read_text())["session"]
    store = Store(data_dir)
    try:
        for prefix in ("timeline/b/", "timeline/view/"):
            store.metadata.drop_derived(session_id, prefix)
    finally:
        store.close()
    query = TimelineQuery(granularity=granularity)
    if granularity == "hour":  # the last month: a view shows at most 1,000 buckets
        query = TimelineQuery(granularity="hour", start=str(START_MS + 334 * DAY_MS), end=str(START_MS + 365 * DAY_MS))
    with LocalServer(data_dir=data_dir, session_rate=0, slot_rate=0) as server:
        service = server.app.state.timeline
        if warmup._warming is not None:
            warmup._warming.join()
        cpu, wall = time.thread_time(), time.perf_counter()
        document = service.document_bytes(session_id, query)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        stored_cpu = time.thread_time()
        service.document_bytes(session_id, query)
        stored_cpu = time.thread_time() - stored_cpu
    out.write_bytes(document)
    print(json.dumps({"cpu": cpu, "wall": wall, "stored_cpu": stored_cpu, "bytes": len(document)}))


def rewrite_rollups(data_dir: Path) -> int:
    """Write every rollup's merged columns again with this process' ``pack_columns`` (the tree's
    ingest layout); return how many changed."""
    from whylogs_songbird.server import rollups

    known = getattr(rollups, "KNOWN_MAGIC", None)
    if known is None:
        return 0
    connection = sqlite3.connect(data_dir / "songbird.sqlite3")
    changed = 0
    with connection:
        rows = connection.execute("SELECT session_id, key, data FROM derived WHERE key LIKE 'timeline/r/%/%/%/%'")
        for session_id, key, data in rows.fetchall():
            if bytes(data[:4]) == rollups.BINARY_MAGIC:
                packed = rollups.pack_columns(rollups.unpack_columns(bytes(data)), known=True)
                connection.execute(
                    "UPDATE derived SET data = ? WHERE session_id = ? AND key = ?", (packed, session_id, key)
                )
                changed += 1
    connection.close()
    return changed


def run_child(tree: Path, *args: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "_WHYLABS_SKIP_CONFIG_READ": "1"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the run in {tree} failed:\n{done.stderr[-3000:]}")
    found: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--year", type=Path, help="a year store written by bench_views.py")
    parser.add_argument("--base", type=Path, help="a checkout of the base (e.g. a worktree of main)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--views", default="day,hour", help="granularities, comma-separated")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--rewrite", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], Path(args.child[2]))
        return
    if args.rewrite:
        print(rewrite_rollups(args.rewrite))
        return
    if args.year is None or args.base is None:
        parser.error("--year and --base are required")
    root = Path(tempfile.mkdtemp(prefix="bench-first-view-"))
    trees = {"base": args.base.resolve(), "new": HERE}
    try:
        for name, tree in trees.items():
            shutil.copytree(args.year, root / name)
            env = {**os.environ, "PYTHONPATH": str(tree)}
            rewritten = subprocess.run(
                [sys.executable, __file__, "--rewrite", str(root / name)], env=env, capture_output=True, text=True
            )
            print(f"{name}: {tree} (rollups written again in its layout: {rewritten.stdout.strip() or '0'})")
        for granularity in args.views.split(","):
            results: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
            loads: list[float] = []
            for run in range(args.runs):
                for name, tree in trees.items():
                    loads.append(os.getloadavg()[0])
                    out = root / f"doc-{granularity}-{name}.json"
                    results[name].append(run_child(tree, str(root / name), granularity, str(out)))
                    found = results[name][-1]
                    print(
                        f"  {granularity} {name} run {run + 1}: {found['cpu']:.2f} s CPU ({found['wall']:.2f} s wall), "
                        f"stored {found['stored_cpu'] * 1000:.1f} ms CPU, load {loads[-1]:.1f}"
                    )
            same = (root / f"doc-{granularity}-base.json").read_bytes() == (
                root / f"doc-{granularity}-new.json"
            ).read_bytes()
            base = statistics.median(r["cpu"] for r in results["base"])
            new = statistics.median(r["cpu"] for r in results["new"])
            stored = statistics.median(r["stored_cpu"] for r in results["new"])
            print(
                f"first {granularity} view: base {base:.2f} s CPU, new {new:.2f} s CPU (medians of {args.runs}), "
                f"new ÷ base {new / base:.2f}; stored view {stored * 1000:.1f} ms CPU; "
                f"load {min(loads):.1f}-{max(loads):.1f}; documents byte-equal: {same}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
