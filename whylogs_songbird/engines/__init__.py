"""Profiling data that outgrows one machine: pandas (streamed), Dask and Spark, behind one call.

Each engine profiles pieces of the data where they are and merges the pieces' whylogs profiles,
which merge exactly (counts, null counts, min, max, mean, quantile sketches, frequent items).
Only profiles travel, never rows:

- `whylogs_songbird.engines.dask.profile_dask` profiles each partition of a Dask DataFrame on the
  workers and merges the serialized profiles in a tree on the cluster;
- `whylogs_songbird.engines.spark.profile_spark` goes through whylogs' own Spark integration;
- `profile_path` reads a parquet file, a parquet directory or a CSV glob with any of the two, or
  with plain pandas, streamed in batches so that a file larger than memory still fits.

All of them return what ``why.log`` returns (a ``ResultSet``; a ``SegmentedResultSet`` with
``segment_by``), so the usual ``.writer("songbird").option(...).write()`` publishes the result.
Neither Dask nor Spark is needed by the base install: each engine module imports its engine when
called and, when it is missing, raises `EngineUnavailableError` naming the extra to install.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Literal, TypeAlias

from whylogs.api.logger.result_set import ResultSet
from whylogs.core.view.dataset_profile_view import DatasetProfileView

from whylogs_songbird.engines._common import (
    EngineUnavailableError,
    PieceKey,
    ProgressCallback,
    Source,
    merge_pieces,
    profile_frame,
    resolve_source,
    result_set,
    segment_columns,
    timestamp_or_now,
)
from whylogs_songbird.errors import ConfigError, ProfileError

if TYPE_CHECKING:
    import pandas as pd

    from whylogs_songbird.engines.dask import DaskDataFrame
    from whylogs_songbird.engines.spark import SparkDataFrame

logger = logging.getLogger(__name__)

Engine: TypeAlias = Literal["pandas", "dask", "spark"]
ENGINES: tuple[Engine, ...] = ("pandas", "dask", "spark")

#: Rows per batch when the pandas engine streams a file.
PANDAS_BATCH_ROWS = 200_000


# -- the pandas engine ----------------------------------------------------------------------------


def _pandas_batches(source: Source, progress: ProgressCallback | None) -> Iterator[pd.DataFrame]:
    """The source's rows in frames of at most `PANDAS_BATCH_ROWS`, reporting rows (parquet) or files (CSV)."""
    import pandas as pd

    if source.kind == "parquet":
        import pyarrow.parquet as pq

        handles = [pq.ParquetFile(f) for f in source.files]
        total = sum(h.metadata.num_rows for h in handles)
        done = 0
        if progress:
            progress(0, total, "rows")
        for handle in handles:
            for batch in handle.iter_batches(batch_size=PANDAS_BATCH_ROWS):
                yield batch.to_pandas()
                done += batch.num_rows
                if progress:
                    progress(done, total, "rows")
        return
    if progress:
        progress(0, len(source.files), "files")
    for number, f in enumerate(source.files, 1):
        try:
            yield from pd.read_csv(f, sep=source.sep, chunksize=PANDAS_BATCH_ROWS)
        except pd.errors.EmptyDataError:
            raise ProfileError(f"{f} is empty: there is no header and no data to profile.") from None
        if progress:
            progress(number, len(source.files), "files")


def profile_pandas_source(
    source: Source,
    *,
    segment_by: str | Sequence[str] | None = None,
    dataset_timestamp: datetime | int | None = None,
    progress: ProgressCallback | None = None,
) -> ResultSet:
    """Profile the source in this process with pandas, a batch at a time (memory stays about one batch)."""
    stamp = timestamp_or_now(dataset_timestamp)
    pieces: dict[PieceKey, DatasetProfileView] = {}
    columns: list[str] | None = None
    for frame in _pandas_batches(source, progress):
        if columns is None:
            columns = segment_columns(segment_by, frame.columns)
        merge_pieces(pieces, profile_frame(frame, columns))
    if columns is None:
        raise ProfileError(f"{source.files[0]} holds no rows to profile.")
    return result_set(pieces, columns, stamp)


def profile_path(
    path: str | os.PathLike[str],
    *,
    engine: Engine = "pandas",
    segment_by: str | Sequence[str] | None = None,
    dataset_timestamp: datetime | int | None = None,
    progress: ProgressCallback | None = None,
) -> ResultSet:
    """Profile a parquet file, a parquet directory or a CSV glob with ``engine``.

    - ``pandas``: in this process, streamed in batches;
    - ``dask``: on the cluster at ``DASK_SCHEDULER_ADDRESS`` (dask's own setting) when set, else on
      a local cluster of worker processes started for this call and stopped after it;
    - ``spark``: on the active Spark session (e.g. under ``spark-submit``), else on a local one
      (``local[*]``, bound to 127.0.0.1) started for this call and stopped after it.

    ``progress(done, total, unit)`` is called as the work goes on. Returns a whylogs result set
    (segmented with ``segment_by``) whose profiles carry ``dataset_timestamp`` (default: now).
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}.")
    source = resolve_source(path)
    timestamp_or_now(dataset_timestamp)  # check it before starting anything
    started = time.monotonic()
    logger.info("profiling %d %s file(s) (%d bytes) with %s", len(source.files), source.kind, source.size, engine)
    if engine == "pandas":
        result = profile_pandas_source(
            source, segment_by=segment_by, dataset_timestamp=dataset_timestamp, progress=progress
        )
    elif engine == "dask":
        from whylogs_songbird.engines import dask as dask_engine

        result = dask_engine.profile_dask_source(
            source, segment_by=segment_by, dataset_timestamp=dataset_timestamp, progress=progress
        )
    else:
        from whylogs_songbird.engines import spark as spark_engine

        result = spark_engine.profile_spark_source(
            source, segment_by=segment_by, dataset_timestamp=dataset_timestamp, progress=progress
        )
    logger.info("profiled %s with %s in %.1fs", path, engine, time.monotonic() - started)
    return result


def profile_dask(
    ddf: DaskDataFrame,
    *,
    segment_by: str | Sequence[str] | None = None,
    dataset_timestamp: datetime | int | None = None,
) -> ResultSet:
    """`whylogs_songbird.engines.dask.profile_dask` (imported on first use)."""
    from whylogs_songbird.engines.dask import profile_dask as run

    return run(ddf, segment_by=segment_by, dataset_timestamp=dataset_timestamp)


def profile_spark(
    sdf: SparkDataFrame,
    *,
    segment_by: str | Sequence[str] | None = None,
    dataset_timestamp: datetime | int | None = None,
) -> ResultSet:
    """`whylogs_songbird.engines.spark.profile_spark` (imported on first use)."""
    from whylogs_songbird.engines.spark import profile_spark as run

    return run(sdf, segment_by=segment_by, dataset_timestamp=dataset_timestamp)


__all__ = [
    "ENGINES",
    "Engine",
    "EngineUnavailableError",
    "ProgressCallback",
    "Source",
    "profile_dask",
    "profile_path",
    "profile_spark",
    "resolve_source",
]
