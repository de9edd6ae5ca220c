"""Server-side render time of the observatory's profiles page, measured in one run.

Two pages, each served by a LocalServer on loopback and fetched with ``requests``:

1. a 3-profile comparison of 500-column profiles (summaries, overlaid charts and drift of
   profiles 2 and 3 against profile 1);
2. a 1-profile page of a 1,000-column profile.

For each page: the *cold* render (the first request after the server starts, once the ingest
worker has summarised the profiles: views are rebuilt from the stored digests, summarized,
compared and the page rendered) and the *warm*
render (the same page again, served from the per-upload cache). Each number is the median over
several runs; cold runs restart the server. The render time is the server's own
``Server-Timing: render;dur=…`` header; the client wall time (including the transfer of the
HTML over loopback) is printed beside it.

A page shows ``COLUMNS_PER_PAGE`` (100) columns at a time, and only those are rebuilt from the
digests, summarized, charted and scored; the whole profile is read for its column names and row
count only. Ratios, measured in the same run: warm ÷ cold per page, and cold time per shown
column-profile (one column card of one profile), which puts the two pages on one scale.

Cold runs share one process, so the libraries' one-off costs (first use of whylogs' drift module,
scipy's distributions, the sketch library) are paid by the first only. Then, in *fresh server
processes* (``python -m whylogs_songbird.server``, ``--fresh-runs`` each way), once the process is
idle: the first comparison page and, right after, the first view of another comparison (three other
profiles: nothing of it cached), with the server's start-up warm-up (``server/warmup.py``) and
without it; their ratio says what the very first page still pays that a later first view does not.

Run: ``python benchmarks/bench_observatory.py`` (``--runs N`` for more samples; about a minute).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from _server_process import NO_CLIENT_RATE_LIMITS, cpu_seconds  # noqa: E402
from server_processes import wait_healthy  # noqa: E402  (tests/support: on the path once _server_process is imported)
from services import free_port  # noqa: E402

import whylogs_songbird  # noqa: E402,F401  (registers the writer)
from whylogs_songbird.server import LocalServer  # noqa: E402
from whylogs_songbird.server.observatory.base import COLUMNS_PER_PAGE  # noqa: E402

TIMEOUT = 120


def frame(columns: int, rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Four numeric columns for every categorical one."""
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(columns):
        if i % 5 == 4:
            data[f"cat_{i:04d}"] = rng.choice(["alpha", "beta", "gamma", "delta"], rows)
        else:
            data[f"num_{i:04d}"] = rng.normal(shift * (i % 3), 1 + i % 7, rows)
    return pd.DataFrame(data)


def render_ms(response: requests.Response, metric: str = "render") -> float:
    match = re.search(rf"(?:^|, ){metric};dur=([0-9.]+)", response.headers.get("Server-Timing", ""))
    if response.status_code != 200 or not match:
        raise SystemExit(f"unexpected answer {response.status_code}: {response.text[:300]}")
    return float(match.group(1))


def fetch(url: str) -> tuple[float, float, int, float]:
    """(server render ms, client wall ms, bytes, server render CPU ms) of one GET."""
    started = time.perf_counter()
    response = requests.get(url, timeout=TIMEOUT)
    wall = (time.perf_counter() - started) * 1000
    return render_ms(response), wall, len(response.content), render_ms(response, "render-cpu")


#: A server process whose start-up warm-up is turned off (argv: port, data dir), for the comparison.
_UNWARMED = """
import runpy, sys
import whylogs_songbird.server.app as app
app.warm_in_background = lambda: None
sys.argv = ["songbird-server", "--port", sys.argv[1], "--data-dir", sys.argv[2], *sys.argv[3:]]
runpy.run_module("whylogs_songbird.server", run_name="__main__", alter_sys=True)
"""


def fresh_first_pages(data_dir: Path, paths: tuple[str, str], warmed: bool) -> tuple[float, float]:
    """In a fresh server process (with or without its start-up warm-up), once it is idle: the render
    CPU ms of the first page ``paths[0]`` and of the first view of ``paths[1]`` right after."""
    port = str(free_port())
    options = ["--no-access-log", *NO_CLIENT_RATE_LIMITS]
    command = (
        [sys.executable, "-m", "whylogs_songbird.server", "--port", port, "--data-dir", str(data_dir), *options]
        if warmed
        else [sys.executable, "-c", _UNWARMED, port, str(data_dir), *options]
    )
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        before = cpu_seconds(process.pid)
        while True:  # idle: the warm-up (if any) and the ingest worker's start are done
            time.sleep(0.5)
            now = cpu_seconds(process.pid)
            if now - before < 0.02:
                break
            before = now
        first = fetch(url + paths[0])[3]
        later = fetch(url + paths[1])[3]
        return first, later
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="cold runs (server restarts) per page")
    parser.add_argument("--warm", type=int, default=5, help="warm requests per cold run")
    parser.add_argument("--rows", type=int, default=500, help="rows per profile")
    parser.add_argument("--fresh-runs", type=int, default=3, help="fresh server processes, with and without warm-up")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bench-observatory-"))
    config_dir = Path(tempfile.mkdtemp(prefix="bench-observatory-config-"))
    print(f"logging profiles ({args.rows} rows each) and uploading them through the writer ...", flush=True)
    with LocalServer(data_dir=data_dir, session_rate=0, slot_rate=0) as server:

        def write(df: pd.DataFrame, timestamp: int) -> str:
            ok, url = (
                why.log(df)
                .writer("songbird")
                .option(endpoint=server.url, config_dir=str(config_dir), dataset_timestamp=timestamp)
                .write()
            )
            assert ok, url
            return str(url)

        base = 1_700_000_000_000
        day = 86_400_000
        three = [
            write(frame(500, args.rows, seed, shift), base + k * day)
            for k, (seed, shift) in enumerate(((1, 0.0), (2, 0.05), (3, 1.0)))
        ]
        single = write(frame(1000, args.rows, 4), base + 3 * day)
        other = [  # a second comparison, for a later first view in a fresh process
            write(frame(500, args.rows, seed, shift), base + (k + 4) * day)
            for k, (seed, shift) in enumerate(((5, 0.0), (6, 0.05), (7, 1.0)))
        ]
        uploaded = time.perf_counter()
        while server.store.metadata.pending_ingest():  # the ingest worker summarises in the background
            time.sleep(0.05)
        summarised = time.perf_counter() - uploaded
        print(f"the ingest worker finished summarising {summarised:.2f} s after the last upload", flush=True)
        session = re.search(r"sessionToken=([^&]+)", single)
        assert session is not None
        stamps = [re.search(r"profile=(\d+)", u).group(1) for u in three]  # type: ignore[union-attr]
        compare_path = "/resources/model-1/profiles?" + "&".join(f"profile={s}" for s in stamps)
        compare_path += f"&sessionToken={session.group(1)}"
        other_stamps = [re.search(r"profile=(\d+)", u).group(1) for u in other]  # type: ignore[union-attr]
        other_path = "/resources/model-1/profiles?" + "&".join(f"profile={s}" for s in other_stamps)
        other_path += f"&sessionToken={session.group(1)}"
        single_path = single[len(server.url) :]
    # a page builds the columns it shows: the first COLUMNS_PER_PAGE of each profile
    shown = min(500, COLUMNS_PER_PAGE), min(1000, COLUMNS_PER_PAGE)
    pages = {
        "3 profiles x 500 columns": (compare_path, 3 * shown[0]),
        "1 profile x 1,000 columns": (single_path, shown[1]),
    }

    results: dict[str, dict[str, list[float]]] = {
        name: {"cold": [], "cold_wall": [], "cold_cpu": [], "warm": [], "warm_wall": [], "warm_cpu": []}
        for name in pages
    }
    sizes: dict[str, int] = {}
    for run in range(args.runs):
        for name, (path, _) in pages.items():
            # a fresh process state: nothing cached
            with LocalServer(data_dir=data_dir, session_rate=0, slot_rate=0) as server:
                requests.get(server.url + "/healthz", timeout=TIMEOUT)
                render, wall, size, cpu = fetch(server.url + path)
                results[name]["cold"].append(render)
                results[name]["cold_wall"].append(wall)
                results[name]["cold_cpu"].append(cpu)
                sizes[name] = size
                for _ in range(args.warm):
                    render, wall, _size, cpu = fetch(server.url + path)
                    results[name]["warm"].append(render)
                    results[name]["warm_wall"].append(wall)
                    results[name]["warm_cpu"].append(cpu)
        print(f"  run {run + 1}/{args.runs} done", flush=True)

    print()
    print(
        f"{'page':<28}{'cold ms':>10}{'warm ms':>10}{'warm/cold':>11}{'cold µs/card':>13}"
        f"{'wall cold':>11}{'wall warm':>11}{'HTML':>9}{'CPU cold':>10}{'CPU warm':>10}"
    )
    per_column: dict[str, float] = {}
    for name, (_, column_profiles) in pages.items():
        r = results[name]
        cold, warm = statistics.median(r["cold"]), statistics.median(r["warm"])
        per_column[name] = cold * 1000 / column_profiles
        print(
            f"{name:<28}{cold:>10.1f}{warm:>10.1f}{warm / cold:>11.3f}{per_column[name]:>13.0f}"
            f"{statistics.median(r['cold_wall']):>11.1f}{statistics.median(r['warm_wall']):>11.1f}"
            f"{sizes[name] / 1e6:>8.1f}M"
            f"{statistics.median(r['cold_cpu']):>10.1f}{statistics.median(r['warm_cpu']):>10.1f}"
        )
    a, b = per_column.values()
    print()
    print(
        f"cold time per shown column-profile, 3x500 page vs 1x1000 page: {a / b:.2f} "
        "(drift and overlaid charts raise it; the 1,000-column profile's outline, read from its whole digest, "
        "lowers it)"
    )
    print(f"summarising (ingest worker, after the last upload): {summarised:.2f} s")
    compare = results["3 profiles x 500 columns"]
    verdict = "met" if statistics.median(compare["cold"]) <= 300 else "MISSED"
    print(f"TARGET first view of 3 x 500 after summarising <= 300 ms server time: {verdict}")
    cpu_verdict = "met" if statistics.median(compare["cold_cpu"]) <= 300 else "MISSED"
    print(
        f"  the same in CPU time of the rendering thread (what the load of the machine does not change): "
        f"{statistics.median(compare['cold_cpu']):.0f} ms, {cpu_verdict}"
    )
    print(
        f"medians of {args.runs} cold runs (server restarts) and {args.runs * args.warm} warm requests per page; "
        "ms = the server's Server-Timing render time, CPU = its render-cpu time, wall = what requests saw"
    )
    if args.fresh_runs:
        print()
        print("fresh server processes, once idle: first 3 x 500 comparison, then the first view of another one")
        for warmed in (False, True):
            runs = [fresh_first_pages(data_dir, (compare_path, other_path), warmed) for _ in range(args.fresh_runs)]
            first = statistics.median(r[0] for r in runs)
            later = statistics.median(r[1] for r in runs)
            ratio = statistics.median(r[0] / r[1] for r in runs)
            print(
                f"  {'with' if warmed else 'without'} start-up warm-up: first page {first:.0f} ms CPU, "
                f"later first view {later:.0f} ms CPU, first ÷ later {ratio:.2f} (medians of {len(runs)})"
            )


if __name__ == "__main__":
    main()
