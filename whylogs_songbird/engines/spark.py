"""Profile a Spark DataFrame through whylogs' own Spark integration, ready for the songbird writer.

whylogs (``whylogs.api.pyspark.experimental``) profiles each Arrow batch of each partition on
the executors, merges the column profiles there, and collects one profile per column (per
segment, with ``segment_by``) to the driver. Rows never leave the executors.

Executors run Python: in local mode, and on clusters whose Python is the driver's, they must run
the same interpreter as this process (the one with whylogs installed). So, when ``PYSPARK_PYTHON``
is unset, this module points it at the running interpreter (``sys.executable``), or every task
fails with ``No module named 'whylogs'``. Needs the ``spark`` extra (``pip install
"whylogs-songbird[spark]"``) and a Java runtime (17).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from whylogs.api.logger.result_set import ResultSet, ViewResultSet

from whylogs_songbird.engines._common import (
    ProgressCallback,
    Source,
    missing_engine,
    partition_for,
    segment_columns,
    timestamp_or_now,
)
from whylogs_songbird.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession
else:
    SparkDataFrame = Any

logger = logging.getLogger(__name__)

#: How often the progress of Spark's tasks is read.
PROGRESS_INTERVAL = 0.5


def _require_pyspark() -> None:
    try:
        import pyspark.sql  # noqa: F401
    except ImportError as exc:
        raise missing_engine("spark", exc) from None


def use_this_python() -> None:
    """Point ``PYSPARK_PYTHON`` at the running interpreter when it is unset (before a SparkContext starts)."""
    if not os.environ.get("PYSPARK_PYTHON"):
        os.environ["PYSPARK_PYTHON"] = sys.executable
        logger.debug("PYSPARK_PYTHON set to %s", sys.executable)


def _fix_local_python(spark: SparkSession) -> None:
    """A local context started before `use_this_python` would run 'python3' tasks: give it this interpreter."""
    context = spark.sparkContext
    local = (context.master or "").startswith("local")
    if local and context.pythonExec != sys.executable and os.environ.get("PYSPARK_PYTHON") == sys.executable:
        context.pythonExec = sys.executable


def profile_spark(
    sdf: SparkDataFrame,
    *,
    segment_by: str | Sequence[str] | None = None,
    dataset_timestamp: datetime | int | None = None,
    progress: ProgressCallback | None = None,
) -> ResultSet:
    """Profile a Spark DataFrame on its executors and return what ``why.log`` returns for it.

    Args:
        sdf: the Spark DataFrame.
        segment_by: a column (or columns) to segment on; the result is then segmented.
        dataset_timestamp: the profiles' dataset timestamp (datetime or epoch ms); default now.
        progress: called as ``progress(done, total, "tasks")`` while Spark's tasks run.

    Returns:
        a ``ViewResultSet`` (or a ``SegmentedResultSet``) for ``.writer("songbird")``.
    """
    _require_pyspark()
    use_this_python()
    from pyspark.sql import DataFrame

    if not isinstance(sdf, DataFrame):
        raise ConfigError(
            f"profile_spark takes a pyspark.sql.DataFrame, not {type(sdf).__name__}; "
            "e.g. spark.read.parquet(path) or spark.createDataFrame(pandas_df)."
        )
    columns = segment_columns(segment_by, sdf.columns)
    stamp = timestamp_or_now(dataset_timestamp)
    _fix_local_python(sdf.sparkSession)
    from whylogs.api.pyspark.experimental import collect_dataset_profile_view, collect_segmented_results
    from whylogs.core import DatasetSchema

    with _reporting(sdf.sparkSession, progress):
        if columns:
            partition = partition_for(columns)
            schema = DatasetSchema(segments={partition.name: partition})
            return collect_segmented_results(sdf, schema=schema, dataset_timestamp=stamp)
        return ViewResultSet(collect_dataset_profile_view(sdf, dataset_timestamp=stamp))


@contextlib.contextmanager
def _reporting(spark: SparkSession, progress: ProgressCallback | None) -> Iterator[None]:
    """Call ``progress`` with the tasks done and planned in the running stages, from a thread, until the block ends."""
    if progress is None:
        yield
        return
    tracker = spark.sparkContext.statusTracker()
    stop = threading.Event()

    def watch() -> None:
        stages: dict[int, tuple[int, int]] = {}  # stage -> (tasks done, tasks); finished stages stay counted
        shown = (-1, -1)
        while not stop.wait(PROGRESS_INTERVAL):
            with contextlib.suppress(Exception):  # the context may be stopping
                for stage_id in tracker.getActiveStageIds():
                    info = tracker.getStageInfo(stage_id)
                    if info is not None:
                        stages[stage_id] = (info.numCompletedTasks, info.numTasks)
                now = (sum(d for d, _ in stages.values()), sum(t for _, t in stages.values()))
                if stages and now != shown:
                    shown = now
                    progress(now[0], now[1], "tasks")

    thread = threading.Thread(target=watch, name="songbird-spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@contextlib.contextmanager
def spark_session() -> Iterator[SparkSession]:
    """The active Spark session (e.g. under ``spark-submit``), else a local one on 127.0.0.1, stopped on exit."""
    _require_pyspark()
    use_this_python()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None and SparkContext._active_spark_context is not None:
        active = SparkSession.builder.getOrCreate()  # a running context: its session, not a new one
    if active is not None:
        yield active  # someone else's: left running
        return
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # or Spark looks up this host's address
    spark = (
        SparkSession.builder.master("local[*]")
        .appName("songbird-profile")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(max(2, 2 * (os.cpu_count() or 1))))
        .getOrCreate()
    )
    try:
        yield spark
    finally:
        spark.stop()


def read_source(spark: SparkSession, source: Source) -> SparkDataFrame:
    """A Spark DataFrame over the files of ``source`` (CSV with a header row, types inferred)."""
    files = [str(f) for f in source.files]
    if source.kind == "parquet":
        return spark.read.parquet(*files)
    return spark.read.csv(files, header=True, inferSchema=True, sep=source.sep)


def profile_spark_source(
    source: Source,
    *,
    segment_by: str | Sequence[str] | None = None,
    dataset_timestamp: datetime | int | None = None,
    progress: ProgressCallback | None = None,
) -> ResultSet:
    """Profile files with Spark, on the session from `spark_session`."""
    timestamp_or_now(dataset_timestamp)
    with spark_session() as spark:
        sdf = read_source(spark, source)
        return profile_spark(sdf, segment_by=segment_by, dataset_timestamp=dataset_timestamp, progress=progress)


__all__ = ["profile_spark", "profile_spark_source", "read_source", "spark_session", "use_this_python"]
