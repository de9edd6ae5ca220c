"""What an idle server costs: CPU per minute of a server process with nothing to do, on the
embedded store and as a team host (PostgreSQL + SeaweedFS, started here as the tests do).

Each server is started, given a little history (a session with ``--uploads`` profiles PUT and
``--open-slots`` slots never PUT, its session page viewed), left to finish that work (until a
5-second window costs it under 20 ms of CPU, at most ``--settle`` seconds: on a loaded machine
that work takes a while), then watched for ``--seconds`` with nothing happening: its CPU (the process and its
sandbox children, from ``/proc``) is reported per minute, and for the team host also the scans
of the store's tables PostgreSQL counted meanwhile (``pg_stat_user_tables``: about one per query
the idle host still makes; the statistics reach that view within seconds).

Run: ``python benchmarks/bench_idle.py`` (``--seconds 20`` for a short run; ``--only embedded`` or
``--only team`` for one).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
import requests  # noqa: E402
from _server_process import cpu_seconds, server_process  # noqa: E402

TS = 1_700_000_000_000


def profile_bytes(seed: int) -> bytes:
    import pandas as pd
    import whylogs as why

    return why.log(pd.DataFrame({"a": [seed, seed + 1, seed + 2], "b": ["x", "y", str(seed)]})).view().serialize()


def give_history(url: str, uploads: int, open_slots: int) -> None:
    """A session with ``uploads`` profiles PUT and ``open_slots`` slots never PUT; its page viewed."""
    with requests.Session() as http:
        session_id = http.post(f"{url}/v0/sessions", json={"userId": "idle"}, timeout=30).json()["id"]
        for i in range(uploads + open_slots):
            slot = http.post(
                f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS + i * 3_600_000}, timeout=30
            ).json()
            if i < uploads:
                assert http.put(slot["uploadUrl"], data=profile_bytes(i), timeout=30).status_code == 200
        assert http.get(f"{url}/sessions/{session_id}", timeout=60).status_code == 200


def settle(pid: int, seconds: float) -> None:
    """Wait until the server's work on its history is done: a quiet 5-second window, or ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(5)
        if cpu_seconds(pid) - before < 0.02:
            return


def watch(name: str, pid: int, seconds: float, scans: Callable[[], int] | None) -> None:
    before, committed, started = cpu_seconds(pid), scans() if scans else 0, time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - started
    cpu = cpu_seconds(pid) - before
    line = f"{name}: {cpu * 1000 * 60 / took:.0f} ms CPU per minute idle ({100 * cpu / took:.2f}% of a core)"
    if scans:
        line += f", {(scans() - committed) * 60 / took:.0f} PostgreSQL table scans per minute"
    print(line, flush=True)


def run_embedded(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="songbird-idle-") as work, server_process(Path(work) / "data") as (url, p):
        give_history(url, args.uploads, args.open_slots)
        settle(p.pid, args.settle)
        watch("embedded", p.pid, args.seconds, None)


def run_team(args: argparse.Namespace) -> None:
    from bench_scale import Host, team_services

    with team_services() as team:
        host = Host("idle", team).start()
        try:
            assert host.process is not None
            give_history(host.url, args.uploads, args.open_slots)
            settle(host.process.pid, args.settle)

            def scans() -> int:
                with psycopg.connect(team.database_url, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)) FROM pg_stat_user_tables"
                    ).fetchone()
                    return int(row[0] or 0) if row else 0

            watch("team host", host.process.pid, args.seconds, scans)
        finally:
            if host.process is not None:
                host.process.terminate()
                with contextlib.suppress(Exception):
                    host.process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each server is watched idle")
    parser.add_argument("--settle", type=float, default=120.0, help="at most this long for the history's work first")
    parser.add_argument("--uploads", type=int, default=5)
    parser.add_argument("--open-slots", type=int, default=10)
    parser.add_argument("--only", choices=["embedded", "team"])
    args = parser.parse_args()
    if args.only != "team":
        run_embedded(args)
    if args.only != "embedded":
        run_team(args)


if __name__ == "__main__":
    main()
