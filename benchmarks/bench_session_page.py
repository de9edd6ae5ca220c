"""Cost of the session page as a session grows, and upload throughput into a large watched session.

1. **The session page** of sessions of 1,000, 10,000 and 50,000 profiles (``--sizes``): its first
   page, the next one (through its own Next link), a page from the middle of the list, and two
   filtered pages (references only; an alias text filter). For each: the server's render time
   (``Server-Timing: render``, median of ``--runs``), the client's wall time, and the bytes of the
   HTML. The targets: within 200 ms and 500 kB at 50,000 profiles, and about the same at every size
   (the ratio of the 50,000 to the 1,000 time is printed).
2. **Uploads into a watched session** (``--watched`` profiles, 50,000 by default) against a fresh
   one: both sessions' timelines are viewed first (so the server refreshes them in the background
   as batches land), then one client uploads small batches (create the slot + PUT 3 KB) into each,
   in turns, for ``--seconds`` each. Prints uploads/s of each and the ratio watched ÷ fresh
   (target: at least 0.8).

Rows are seeded straight into the server's SQLite database before it starts (one transaction per
session; the profiles of part 2 with a stored summary each, so no profile is read or summarised, and
merged into the rollups of their hours and days as the ingest worker leaves them; ``--no-rollups``:
without, as data stored before rollups existed, which the first view merges from the profiles),
then the server runs in its own process (``python -m whylogs_songbird.server``) and is measured
over loopback HTTP.

Run: ``python benchmarks/bench_session_page.py`` (``--sizes 1000,10000,50000``, ``--runs N``,
``--watched N``, ``--seconds S``, ``--skip-uploads``, ``--skip-pages``). About 3 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import requests  # noqa: E402
from _server_process import server_process  # noqa: E402
from bench_ingest import StdlibHttp, small_profile  # noqa: E402

from whylogs_songbird.server.config import ServerConfig  # noqa: E402
from whylogs_songbird.server.digest import digest_from_bytes  # noqa: E402
from whylogs_songbird.server.rollups import note_summarised_many  # noqa: E402
from whylogs_songbird.server.storage.base import new_id  # noqa: E402
from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore  # noqa: E402
from whylogs_songbird.server.store import DB_FILE, Store  # noqa: E402

TIMEOUT = 300
T0 = 1_700_000_000_000
MINUTE = 60_000
DAY = 86_400_000
#: One reference profile every this many seeded profiles, with an alias.
REFERENCE_EVERY = 100


def seed(metadata: SqliteMetadataStore, profiles: int, *, summary: bytes | None = None, spread_days: int = 365) -> str:
    """A new session with ``profiles`` stored profiles (batches spread evenly over ``spread_days``, a
    reference every :data:`REFERENCE_EVERY`, a third of the batches segmented), written in one
    transaction; with ``summary``, each gets it as its stored summary (so nothing is summarised)."""
    session = metadata.create_session("bench-session-page")
    step = max(1, spread_days * DAY // max(1, profiles))
    sha = hashlib.sha256(b"seeded").hexdigest()
    uploads, summaries = [], []
    now = int(time.time() * 1000)
    for i in range(profiles):
        reference = i % REFERENCE_EVERY == REFERENCE_EVERY - 1
        upload_id = new_id("ref" if reference else "log")
        tags = [] if reference or i % 3 else [{"key": "region", "value": f"r{i % 7}"}]
        uploads.append(
            (
                upload_id,
                session.id,
                "reference" if reference else "batch",
                None if reference else T0 + i * step,
                f"reference {i}" if reference else None,
                json.dumps(tags),
                now - profiles + i,
                now // 1000 + 3600,
                now - profiles + i,
                3000,
                sha,
                "ready",
            )
        )
        if summary is not None:
            summaries.append((upload_id, sha, summary, now))
    with metadata._transaction() as conn:
        conn.executemany(
            "INSERT INTO uploads (id, session_id, kind, dataset_timestamp, alias, segment_tags, created_at,"
            " expires_at, stored_at, size, sha256, ingest_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            uploads,
        )
        conn.executemany("INSERT INTO summaries (upload_id, sha256, data, created_at) VALUES (?, ?, ?, ?)", summaries)
    return session.id


def roll_up(data_dir: Path, session_id: str, summary: bytes) -> None:
    """Merge a seeded session's batches into the rollups of their hours and days, in time order, as the
    ingest worker would have left them as they landed (a first view then reads buckets, not profiles)."""
    store = Store.open(ServerConfig(data_dir=str(data_dir)))
    try:
        batches = sorted(
            (u for u in store.list_profiles(session_id, "batch") if u.dataset_timestamp is not None),
            key=lambda u: (u.dataset_timestamp, u.id),
        )
        for first in range(0, len(batches), 500):
            note_summarised_many(store, [(upload, summary) for upload in batches[first : first + 500]])
    finally:
        store.close()


def timed(url: str) -> tuple[float, float, int, str]:
    """(server render ms, client wall ms, bytes, text) of one GET."""
    started = time.perf_counter()
    answer = requests.get(url, timeout=TIMEOUT)
    wall = (time.perf_counter() - started) * 1000
    answer.raise_for_status()
    render = float(re.search(r"render;dur=([0-9.]+)", answer.headers.get("Server-Timing", "")).group(1))
    return render, wall, len(answer.content), answer.text


def next_link(text: str) -> str:
    found = re.search(r'<a rel="next" href="([^"]+)"', text)
    assert found, "the page has no Next link"
    return html.unescape(found.group(1))


def bench_pages(url: str, sessions: dict[int, str], runs: int) -> None:
    print("\n== the session page (server render ms median / client wall ms median / bytes)")
    print(f"{'profiles':>9}  {'page':<22} {'render ms':>9} {'wall ms':>8} {'bytes':>8}")
    first_pages: dict[int, float] = {}
    for size, sid in sessions.items():
        base = f"{url}/sessions/{sid}"
        first_text = timed(base)[3]
        seen = 0
        page_url = base + "?limit=100"
        while seen < size // 2:  # the middle of the list, walked 100 at a time through Next links
            text = timed(page_url)[3]
            seen += 100
            page_url = url + next_link(text)
        middle = page_url.replace("limit=100&", "").replace("&limit=100", "")
        pages = {
            "first": base,
            "next (via its link)": url + next_link(first_text),
            "middle": middle,
            "references only": base + "?kind=reference",
            "alias filter q=ence 4": base + "?q=ence%204",
        }
        for name, page in pages.items():
            samples = [timed(page) for _ in range(runs)]
            render = statistics.median(s[0] for s in samples)
            wall = statistics.median(s[1] for s in samples)
            size_bytes = samples[-1][2]
            if name == "first":
                first_pages[size] = render
            print(f"{size:>9,}  {name:<22} {render:>9.1f} {wall:>8.1f} {size_bytes:>8,}")
    sizes = sorted(first_pages)
    if len(sizes) > 1:
        print(
            f"first page render, {sizes[-1]:,} ÷ {sizes[0]:,} profiles: "
            f"{first_pages[sizes[-1]] / max(first_pages[sizes[0]], 0.1):.2f}x"
        )


def upload(http: StdlibHttp, url: str, sid: str, stamp: int, data: bytes) -> None:
    """One upload; once again on a connection the server closed while it was idle."""
    try:
        http.upload(url, sid, stamp, data)
    except OSError:
        http.upload(url, sid, stamp, data)


def upload_rate(http: StdlibHttp, url: str, sid: str, data: bytes, seconds: float, first_stamp: int) -> float:
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        upload(http, url, sid, first_stamp + done * MINUTE, data)
        done += 1
    return done / (time.perf_counter() - started)


def bench_uploads(url: str, watched: str, fresh: str, seconds: float, rounds: int) -> None:
    data = small_profile()
    http = StdlibHttp()
    try:
        for sid in (watched, fresh):  # a view of each: the server now refreshes them as batches land
            upload(http, url, sid, T0 + 40 * DAY, data)
            started = time.perf_counter()
            answer = requests.get(f"{url}/api/v1/sessions/{sid}/timeline?granularity=day", timeout=3600)
            answer.raise_for_status()
            print(f"first timeline view of {sid[:16]}…: {time.perf_counter() - started:.1f} s")
        time.sleep(5.0)  # what the first views left behind (summaries, a refresh) settles first
        rates: dict[str, list[float]] = {"fresh": [], "watched": []}
        stamp = T0 + 41 * DAY
        for _ in range(rounds):  # in turns, so both see the same machine
            for name, sid in (("fresh", fresh), ("watched", watched)):
                rates[name].append(upload_rate(http, url, sid, data, seconds, stamp))
                stamp += 10_000 * MINUTE
                time.sleep(1.0)  # the backlog of refreshes and summaries settles between turns
    finally:
        http.close()
    fresh_rate, watched_rate = statistics.median(rates["fresh"]), statistics.median(rates["watched"])
    print("\n== uploads into a watched session (one client, create + PUT of a 3 KB batch)")
    print(f"fresh session:   {fresh_rate:7.1f} uploads/s  (turns: {', '.join(f'{r:.0f}' for r in rates['fresh'])})")
    print(f"watched session: {watched_rate:7.1f} uploads/s  (turns: {', '.join(f'{r:.0f}' for r in rates['watched'])})")
    print(f"watched ÷ fresh: {watched_rate / fresh_rate:.2f}  (target: at least 0.80)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="profiles per session, comma-separated")
    parser.add_argument("--runs", type=int, default=5, help="requests per page measured")
    parser.add_argument("--watched", type=int, default=50_000, help="profiles of the watched session")
    parser.add_argument("--watched-days", type=int, default=30, help="days the watched session's batches span")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of uploads per turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns of uploads into each session")
    parser.add_argument("--skip-uploads", action="store_true", help="measure the session page only")
    parser.add_argument(
        "--no-rollups", action="store_true", help="seed the watched session without rollups (a first view merges them)"
    )
    parser.add_argument("--skip-pages", action="store_true", help="measure the uploads only")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="songbird-bench-session-page-"))
    try:
        run(args, data_dir)
    finally:  # the seeded store (about 250 MB at 50,000 profiles) is the run's own
        shutil.rmtree(data_dir, ignore_errors=True)


def run(args: argparse.Namespace, data_dir: Path) -> None:
    """Seed the sessions into ``data_dir``, start a server on it and measure."""
    metadata = SqliteMetadataStore(data_dir / DB_FILE)
    started = time.perf_counter()
    sizes = [] if args.skip_pages else [int(size) for size in args.sizes.split(",")]
    sessions = {size: seed(metadata, size) for size in sizes}
    watched = fresh = ""
    if not args.skip_uploads:
        summary = digest_from_bytes(small_profile())
        watched = seed(metadata, args.watched, summary=summary, spread_days=args.watched_days)
        fresh = seed(metadata, 0)
    metadata.close()
    if watched and not args.no_rollups:
        roll_up(data_dir, watched, summary)
    print(f"seeded in {time.perf_counter() - started:.1f} s ({data_dir})")
    with server_process(data_dir) as (url, _):
        if sessions:
            bench_pages(url, sessions, args.runs)
        if not args.skip_uploads:
            bench_uploads(url, watched, fresh, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
