"""Peak extra memory of uploading one 2,000-column profile through the writer, measured in one run.

The server runs in its own process (``python -m whylogs_songbird.server``), so only the client
is measured, two ways:

1. tracemalloc in this process: the peak of traced allocations during ``writer.write()`` minus
   what was allocated just before (Python objects, bytes and buffers; not C++ sketch memory).
2. RSS in a child process that does nothing but load the profile, warm up, and write it: the
   resident-set high-water mark during the write (``VmHWM``, reset just before through
   ``/proc/self/clear_refs``; where that is unavailable, ``resource.getrusage``'s ``ru_maxrss``)
   minus the resident set just before.

Each is divided by the profile's serialized size. Target: <= 3.

Run: ``python benchmarks/bench_memory.py`` (``--columns N --rows N`` to change the profile).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import whylogs as why  # noqa: E402
from _server_process import server_process  # noqa: E402
from whylogs.core import DatasetProfileView  # noqa: E402

import whylogs_songbird  # noqa: E402,F401  (registers the writer)
from whylogs_songbird import SongbirdWriter  # noqa: E402

TARGET = 3.0


def wide_frame(columns: int, rows: int) -> pd.DataFrame:
    """Three numeric columns for every text column, like a wide feature table."""
    rng = np.random.default_rng(7)
    data = {
        f"col_{i:04d}": rng.choice(list("abcdefghij"), rows) if i % 4 == 3 else rng.normal(i, 1 + i % 10, rows)
        for i in range(columns)
    }
    return pd.DataFrame(data)


def _trim() -> None:
    """Collect garbage and hand freed heap back to the OS, so the resident set starts low."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kib(field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _writer(url: str, config_dir: str) -> SongbirdWriter:
    writer = SongbirdWriter(endpoint=url, config_dir=config_dir, outbox=False, max_retries=0)
    warm = why.log(pd.DataFrame({"x": [1.0, 2.0]})).view()
    assert writer.write(warm)[0]  # session made, modules imported, connection open
    return writer


def tracemalloc_extra(view: DatasetProfileView, url: str, config_dir: str) -> int:
    writer = _writer(url, config_dir)
    _trim()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    ok, message = writer.write(view)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert ok, message
    return peak - before


def child(profile_path: str, url: str, config_dir: str) -> None:
    """In a fresh process: load the profile, warm up, then measure the resident set around one write."""
    view = DatasetProfileView.read(profile_path)
    writer = _writer(url, config_dir)
    _trim()
    before = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        method = "VmHWM after /proc/self/clear_refs"
    except OSError:
        method = "ru_maxrss (not reset: an upper bound)"
    ok, message = writer.write(view)
    assert ok, message
    if method.startswith("VmHWM"):
        peak = _status_kib("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak, "method": method}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--columns", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--child", nargs=3, metavar=("PROFILE", "URL", "CONFIG_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    work = Path(tempfile.mkdtemp(prefix="songbird-bench-memory-"))
    view = why.log(wide_frame(args.columns, args.rows)).view()
    size = len(view.serialize())
    profile_path = work / "wide.bin"
    profile_path.write_bytes(view.serialize())
    print(f"profile: {args.columns} columns x {args.rows} rows, serialized size {size / 1e6:.2f} MB")

    with server_process(work / "server") as (url, _):
        extra = tracemalloc_extra(view, url, str(work / "config-a"))
        print(f"tracemalloc (this process): peak extra during write() {extra / 1e6:.2f} MB")
        print(f"RATIO tracemalloc_peak_extra / serialized_size = {extra / size:.2f}  (target <= {TARGET:g})")

        command = [sys.executable, __file__, "--child", str(profile_path), url, str(work / "config-b")]
        measured = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        rss_extra = (measured["peak_kib"] - measured["before_kib"]) * 1024
        print(f"RSS (child process doing only the write, {measured['method']}): peak extra {rss_extra / 1e6:.2f} MB")
        print(f"RATIO rss_peak_extra / serialized_size = {rss_extra / size:.2f}  (target <= {TARGET:g})")


if __name__ == "__main__":
    main()
