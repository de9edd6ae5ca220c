"""Publish a reference profile of a parquet dataset from a Spark job or a Dask script.

The data is profiled where it lives (Spark executors or Dask workers); only whylogs profiles
come back to this process, which publishes them to songbird as one reference profile (one per
segment with --segment-by) and prints their observatory links.

Under spark-submit (the master and the cluster come from spark-submit's own options)::

    spark-submit --master spark://head:7077 examples/publish_reference_job.py s3a://lake/train/ \\
        --reference train --endpoint http://songbird.internal:8737

As a plain Dask script, on an existing cluster or on a local one of worker processes::

    python examples/publish_reference_job.py data/train/ --reference train --scheduler tcp://head:8786
    python examples/publish_reference_job.py data/train/ --reference train --workers 4

The endpoint defaults to ``SONGBIRD_API_ENDPOINT`` (then the songbird config file); the engine is
Spark when started by spark-submit, Dask otherwise (``--engine`` overrides).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Profile a parquet dataset on Spark or Dask; publish a reference.")
    parser.add_argument("path", help="a parquet file or directory (any path the engine can read: s3a://, hdfs://...)")
    parser.add_argument("--reference", default="train", help="name of the reference profile (default: train)")
    parser.add_argument("--segment-by", metavar="COLUMN", help="publish one reference per value of this column")
    parser.add_argument("--endpoint", help="songbird API endpoint (default: $SONGBIRD_API_ENDPOINT)")
    parser.add_argument(
        "--engine",
        choices=["spark", "dask"],
        default="spark" if os.environ.get("PYSPARK_GATEWAY_PORT") else "dask",
        help="spark when run by spark-submit, dask otherwise",
    )
    parser.add_argument("--scheduler", metavar="ADDRESS", help="Dask: the scheduler of an existing cluster")
    parser.add_argument("--workers", type=int, default=2, help="Dask: worker processes of the local cluster")
    return parser.parse_args(argv)


def profile_with_spark(args: argparse.Namespace) -> Any:
    from pyspark.sql import SparkSession

    from whylogs_songbird.engines.spark import profile_spark

    spark = SparkSession.builder.appName("songbird-reference").getOrCreate()
    try:
        return profile_spark(spark.read.parquet(args.path), segment_by=args.segment_by)
    finally:
        spark.stop()


def profile_with_dask(args: argparse.Namespace) -> Any:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from whylogs_songbird.engines.dask import profile_dask

    if args.scheduler:
        with Client(args.scheduler):
            return profile_dask(dd.read_parquet(args.path), segment_by=args.segment_by)
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster),
    ):
        return profile_dask(dd.read_parquet(args.path), segment_by=args.segment_by)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import whylogs_songbird  # noqa: F401  (registers the "songbird" writer)

    results = profile_with_spark(args) if args.engine == "spark" else profile_with_dask(args)
    options: dict[str, Any] = {"reference_profile_name": args.reference}
    if args.endpoint:
        options["endpoint"] = args.endpoint
    ok, links = results.writer("songbird").option(**options).write()
    for link in [links] if isinstance(links, str) else [url for _, url in links]:
        print(link)
    return 0 if ok else 1


# The guard matters: a Dask LocalCluster starts its worker processes by re-importing this file.
if __name__ == "__main__":
    sys.exit(main())
