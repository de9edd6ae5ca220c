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

import glob
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from whylogs.api.logger.result_set import ResultSet, SegmentedResultSet, ViewResultSet
from whylogs.core import DatasetProfile, DatasetSchema
from whylogs.core.segment import Segment
from whylogs.core.segmentation_partition import ColumnMapperFunction, SegmentationPartition
from whylogs.core.view.dataset_profile_view import DatasetProfileView

from whylogs_songbird.errors import ConfigError, ProfileError, SongbirdError
from whylogs_songbird.profiles import to_millis

if TYPE_CHECKING:
    import pandas as pd

    from whylogs_songbird.engines.dask import DaskDataFrame
    from whylogs_songbird.engines.spark import SparkDataFrame

logger = logging.getLogger(__name__)

Engine: TypeAlias = Literal["pandas", "dask", "spark"]
ENGINES: tuple[Engine, ...] = ("pandas", "dask", "spark")

#: ``progress(done, total, unit)``: ``unit`` is what is counted ("rows", "partitions", "tasks" or
#: "files"); ``total`` is None while unknown.
ProgressCallback: TypeAlias = Callable[[int, "int | None", str], None]

#: The key of a profile piece: () for the whole dataset, the segment's values otherwise.
PieceKey: TypeAlias = tuple[Any, ...]

#: Rows per batch when the pandas engine streams a file.
PANDAS_BATCH_ROWS = 200_000
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".tsv")


class EngineUnavailableError(SongbirdError, ImportError):
    """The engine asked for (Dask, Spark) is not installed: install the extra this names."""


def missing_engine(engine: str, exc: ImportError) -> EngineUnavailableError:
    """The error for a missing engine, naming the extra that brings it."""
    return EngineUnavailableError(
        f"profiling with {engine} needs the '{engine}' extra ({exc.name or exc} is missing): "
        f'pip install "whylogs-songbird[{engine}]"'
    )


# -- what the engines share -------------------------------------------------------------------


def segment_columns(segment_by: str | Sequence[str] | None, columns: Iterable[str]) -> list[str]:
    """The columns to segment on (empty: no segments), checked against the data's ``columns``."""
    if segment_by is None:
        return []
    wanted = [segment_by] if isinstance(segment_by, str) else list(segment_by)
    if not wanted or not all(isinstance(c, str) and c for c in wanted):
        raise ConfigError(f"segment_by must be a column name or a list of column names, not {segment_by!r}.")
    present = [str(c) for c in columns]
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ConfigError(
            f"cannot segment on {', '.join(map(repr, missing))}: no such column; the columns are "
            f"{', '.join(present[:20])}{', ...' if len(present) > 20 else ''}."
        )
    return wanted


def partition_for(columns: Sequence[str]) -> SegmentationPartition:
    """The whylogs partition that segments on the values of ``columns`` (as ``segment_on_column`` does for one)."""
    return SegmentationPartition(name=",".join(columns), mapper=ColumnMapperFunction(col_names=list(columns)))


def schema_for(columns: Sequence[str]) -> DatasetSchema | None:
    if not columns:
        return None
    partition = partition_for(columns)
    return DatasetSchema(segments={partition.name: partition})


def timestamp_or_now(dataset_timestamp: datetime | int | None) -> datetime:
    """The dataset timestamp as an aware UTC datetime (checked like the writer's), now when None."""
    if dataset_timestamp is None:
        return datetime.now(timezone.utc)
    millis = to_millis(dataset_timestamp)
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc)


def profile_frame(frame: pd.DataFrame, columns: Sequence[str]) -> dict[PieceKey, DatasetProfileView]:
    """whylogs profiles of one piece of the data: ``{(): view}``, or one view per segment's values."""
    import whylogs as why

    schema = schema_for(columns)
    if schema is None:
        return {(): why.log(frame).view()}
    results = why.log(frame, schema=schema)
    assert isinstance(results, SegmentedResultSet)
    pieces: dict[PieceKey, DatasetProfileView] = {}
    for segment in results.segments():
        view = results.view(segment)
        if view is not None:
            pieces[tuple(segment.key)] = view
    return pieces


def profile_frame_bytes(frame: pd.DataFrame, columns: Sequence[str]) -> dict[PieceKey, bytes]:
    """`profile_frame`, serialized: what a worker sends back instead of its rows."""
    return {key: view.serialize() for key, view in profile_frame(frame, columns).items()}


def merge_views(
    into: dict[PieceKey, DatasetProfileView], other: Mapping[PieceKey, DatasetProfileView]
) -> dict[PieceKey, DatasetProfileView]:
    """Merge the pieces of ``other`` into ``into`` (in place) and return it."""
    for key, view in other.items():
        into[key] = into[key].merge(view) if key in into else view
    return into


def merge_bytes(*parts: Mapping[PieceKey, bytes]) -> dict[PieceKey, bytes]:
    """Merge serialized pieces (from `profile_frame_bytes` or an earlier merge) into serialized pieces."""
    merged: dict[PieceKey, DatasetProfileView] = {}
    for part in parts:
        merge_views(merged, {key: DatasetProfileView.deserialize(data) for key, data in part.items()})
    return {key: view.serialize() for key, view in merged.items()}


def result_set(
    pieces: Mapping[PieceKey, DatasetProfileView], columns: Sequence[str], stamp: datetime
) -> ResultSet:
    """What ``why.log`` would have returned for the whole data: a view result set, or a segmented one.

    Every profile gets ``stamp`` as its dataset timestamp.
    """
    now = datetime.now(timezone.utc)

    def stamped(view: DatasetProfileView) -> DatasetProfileView:
        return DatasetProfileView(
            columns=view.get_columns(), dataset_timestamp=stamp, creation_timestamp=now, metadata=dict(view.metadata)
        )

    if not columns:
        if () not in pieces:
            raise ProfileError("the data produced no profile: is it empty?")
        return ViewResultSet(stamped(pieces[()]))
    partition = partition_for(columns)
    segments: dict[Segment, DatasetProfileView | DatasetProfile] = {
        Segment(key=key, parent_id=partition.id): stamped(view) for key, view in sorted(pieces.items(), key=_order)
    }
    return SegmentedResultSet(segments={partition.id: segments}, partitions=[partition])


def _order(item: tuple[PieceKey, Any]) -> tuple[str, ...]:
    return tuple(str(v) for v in item[0])


# -- data on disk -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Data files to profile: all parquet or all CSV (``sep`` is the CSV delimiter)."""

    kind: Literal["parquet", "csv"]
    files: tuple[Path, ...]
    sep: str = ","

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def resolve_source(path: str | os.PathLike[str]) -> Source:
    """The files behind ``path``: a parquet file, a parquet directory (searched recursively) or a CSV glob.

    A CSV (or TSV) file by itself is a glob with one match. Raises `ProfileError` saying what is wrong.
    """
    text = os.fspath(path)
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise ProfileError(f"{text}: no file matches this pattern.")
    else:
        where = Path(text)
        if not where.exists():
            raise ProfileError(f"{where}: no such file or directory.")
        if where.is_dir():
            files = sorted(
                p
                for p in where.rglob("*")
                if p.is_file()
                and p.suffix.lower() in _PARQUET_SUFFIXES
                and not any(part.startswith(("_", ".")) for part in p.relative_to(where).parts)
            )
            if not files:
                raise ProfileError(
                    f"{where} is a directory with no .parquet files in it: give a parquet directory, "
                    "a parquet file or a CSV glob such as 'data/*.csv'."
                )
            return Source("parquet", tuple(files))
        files = [where]
    kinds = {_kind_of(f) for f in files}
    if len(kinds) != 1:
        raise ProfileError(f"{text} matches both parquet and CSV files: profile one kind at a time.")
    kind = kinds.pop()
    sep = "\t" if kind == "csv" and all(f.suffix.lower() == ".tsv" for f in files) else ","
    for f in files:
        if not os.access(f, os.R_OK):
            raise ProfileError(f"{f}: cannot read it (permission denied).")
    return Source(kind, tuple(files), sep)


def _kind_of(path: Path) -> Literal["parquet", "csv"]:
    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    raise ProfileError(f"{path}: profile reads .parquet, .pq, .csv and .tsv files, not {suffix or 'this file'}.")


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
        merge_views(pieces, profile_frame(frame, columns))
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
