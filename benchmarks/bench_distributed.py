"""Profiling parquet data with Dask (2 workers) and Spark (local[2]) against pandas ``why.log``, measured in one run.

For each row count (default 1M and 10M rows x 10 columns: 7 numeric, 3 text), a parquet
directory is generated once (files of 500k rows, in a temporary dir), then each engine profiles it
in a child process of its own:

- ``pandas``: ``why.log(pd.read_parquet(dir))``, the whole frame in memory (skipped when the
  frame would not fit comfortably in the memory available);
- ``pandas-streamed``: `profile_path` with the pandas engine (batches of 200k rows, one process);
- ``dask``: `profile_dask` on a ``LocalCluster`` of 2 worker processes (1 thread each);
- ``spark``: `profile_spark` on a ``local[2]`` session.

Printed per run: the wall time of profiling (cluster or session start-up excluded and shown
apart), its ratio to pandas ``why.log``, and the driver's peak resident memory (the Python
process that calls the profiler; Dask's workers and Spark's JVM are other processes). Only
profiles come back to the driver, so its peak should stay flat as the rows grow.

Run: ``python benchmarks/bench_distributed.py`` (``--rows 1000000`` for one size,
``--engines dask spark`` for some engines).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

ENGINES = ("pandas", "pandas-streamed", "dask", "spark")
FILE_ROWS = 500_000


def generate(directory: Path, rows: int, seed: int = 3) -> None:
    """``rows`` x 10 columns as parquet files of at most `FILE_ROWS` rows, made a file at a time."""
    import numpy as np
    import pandas as pd

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    start = 0
    while start < rows:
        n = min(FILE_ROWS, rows - start)
        frame = pd.DataFrame(
            {
                "id": np.arange(start, start + n, dtype="int64"),
                "amount": np.where(rng.random(n) < 0.05, np.nan, rng.lognormal(3, 1, n)),
                "score": rng.normal(0.5, 0.2, n),
                "clicks": rng.poisson(3, n).astype("int64"),
                "age": rng.integers(18, 90, n),
                "balance": rng.normal(1_000, 300, n),
                "ratio": rng.random(n),
                "region": rng.choice(["north", "south", "east", "west"], n),
                "plan": rng.choice(["free", "pro", "team"], n),
                "device": rng.choice([f"d{i}" for i in range(50)], n),
            }
        )
        frame.to_parquet(directory / f"part-{start // FILE_ROWS:05d}.parquet", index=False)
        start += n


def _peak_rss_mb() -> float:
    """This process's resident-set high-water mark (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: that survives ``exec`` and so starts at the parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(engine: str, directory: Path) -> dict[str, float]:
    """Profile ``directory`` with ``engine`` in this process; the numbers as a dict."""
    import whylogs as why

    from whylogs_songbird.engines import profile_path

    started = time.perf_counter()
    if engine == "pandas":
        import pandas as pd

        setup = 0.0
        before = _rss_mb()
        t0 = time.perf_counter()
        view = why.log(pd.read_parquet(directory)).view()
        seconds = time.perf_counter() - t0
    elif engine == "pandas-streamed":
        setup = 0.0
        before = _rss_mb()
        t0 = time.perf_counter()
        view = profile_path(directory, engine="pandas").view()
        seconds = time.perf_counter() - t0
    elif engine == "dask":
        import dask.dataframe as dd
        from distributed import Client, LocalCluster

        from whylogs_songbird.engines.dask import profile_dask

        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster),
        ):
            setup = time.perf_counter() - started
            before = _rss_mb()
            t0 = time.perf_counter()
            view = profile_dask(dd.read_parquet(str(directory))).view()
            seconds = time.perf_counter() - t0
    elif engine == "spark":
        from pyspark.sql import SparkSession

        from whylogs_songbird.engines.spark import profile_spark, use_this_python

        use_this_python()
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        spark = (
            SparkSession.builder.master("local[2]")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.driver.memory", "2g")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        try:
            setup = time.perf_counter() - started
            before = _rss_mb()
            t0 = time.perf_counter()
            view = profile_spark(spark.read.parquet(str(directory))).view()
            seconds = time.perf_counter() - t0
        finally:
            spark.stop()
    else:
        raise SystemExit(f"unknown engine {engine}")
    rows = view.get_column("id").get_metric("counts").n.value
    return {"seconds": seconds, "setup": setup, "rss_before_mb": before, "peak_rss_mb": _peak_rss_mb(), "rows": rows}


def _available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def run(engine: str, directory: Path) -> dict[str, float] | None:
    done = subprocess.run(
        [sys.executable, __file__, "--child", engine, str(directory)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"  {engine}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    print(f"{'rows':>11} {'engine':<16} {'profile s':>10} {'vs pandas':>10} {'start-up s':>11} {'driver peak MB':>15}")
    with tempfile.TemporaryDirectory(prefix="songbird-bench-") as tmp:
        for rows in args.rows:
            directory = Path(tmp) / f"rows-{rows}"
            generate(directory, rows)
            in_memory_mb = rows * 10 * 40 / 2**20  # about 40 bytes a cell once in pandas, text included
            baseline = None
            for engine in args.engines:
                if engine == "pandas" and in_memory_mb * 4 > _available_mb():
                    print(f"{rows:>11,} {engine:<16} {'skipped: does not fit in memory':>48}")
                    continue
                result = run(engine, directory)
                if result is None:
                    continue
                assert result["rows"] == rows, result
                if engine == "pandas":
                    baseline = result["seconds"]
                ratio = f"{result['seconds'] / baseline:.2f}x" if baseline else "-"
                print(
                    f"{rows:>11,} {engine:<16} {result['seconds']:>10.1f} {ratio:>10} {result['setup']:>11.1f} "
                    f"{result['peak_rss_mb']:>15.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
