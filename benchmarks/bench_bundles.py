"""Throughput and server memory of exporting and importing a session bundle of at least 500 MB.

Two embedded-store servers run in their own processes (``python -m whylogs_songbird.server``). A
session of N copies (distinct timestamps) of one wide profile is uploaded to the first; then the
bundle is exported from it to a file (``GET /api/v1/sessions/{id}/export``) and imported into the
second (``POST /api/v1/import``). For each step: MB/s (bundle bytes / wall time) and the server's
resident-set growth during it (``VmHWM`` after the step, reset just before through
``/proc/<pid>/clear_refs``, minus ``VmRSS`` before). Bounded memory means that growth stays far
below the bundle's size.

Run: ``python benchmarks/bench_bundles.py`` (``--megabytes 500 --columns 400``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests
import whylogs as why

sys.path.insert(0, str(Path(__file__).parent))
from _server_process import server_process  # noqa: E402

MB = 1024 * 1024


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


def _reset_peak(pid: int) -> int:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid, "VmRSS")


def _profile(columns: int, rows: int) -> bytes:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"c{i}": rng.normal(size=rows) for i in range(columns)})
    return why.log(frame).view().serialize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=500)
    parser.add_argument("--columns", type=int, default=400)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    data = _profile(args.columns, args.rows)
    copies = math.ceil(args.megabytes * MB / len(data))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with server_process(root / "a") as (url_a, proc_a), server_process(root / "b") as (url_b, proc_b):
            sid = requests.post(f"{url_a}/v0/sessions", json={"userId": "bench"}, timeout=30).json()["id"]
            with requests.Session() as http:
                for n in range(copies):
                    slot = http.post(
                        f"{url_a}/v0/sessions/{sid}/upload",
                        json={"datasetTimestamp": 1_700_000_000_000 + n},
                        timeout=30,
                    ).json()
                    http.put(slot["uploadUrl"], data=data, timeout=120).raise_for_status()
            time.sleep(2)
            bundle = root / "bundle.zip"
            before = _reset_peak(proc_a.pid)
            start = time.perf_counter()
            with requests.get(f"{url_a}/api/v1/sessions/{sid}/export", stream=True, timeout=600) as answer:
                answer.raise_for_status()
                with open(bundle, "wb") as out:
                    for chunk in answer.iter_content(MB):
                        out.write(chunk)
            export_s = time.perf_counter() - start
            export_peak = _status(proc_a.pid, "VmHWM") - before
            size = bundle.stat().st_size

            before = _reset_peak(proc_b.pid)
            start = time.perf_counter()
            with open(bundle, "rb") as body:
                answer = requests.post(
                    f"{url_b}/api/v1/import", data=body, headers={"Content-Type": "application/zip"}, timeout=1200
                )
            import_s = time.perf_counter() - start
            import_peak = _status(proc_b.pid, "VmHWM") - before
            assert answer.status_code == 201, answer.text
    result = {
        "bundle_mb": round(size / MB, 1),
        "profiles": copies,
        "profile_mb": round(len(data) / MB, 2),
        "export_mb_per_s": round(size / MB / export_s, 1),
        "export_server_peak_rss_growth_mb": round(export_peak / MB, 1),
        "import_mb_per_s": round(size / MB / import_s, 1),
        "import_server_peak_rss_growth_mb": round(import_peak / MB, 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
