"""What the engines share: segment columns, whylogs profiles of one piece of the data and their
merge, the result set ``why.log`` would have returned, and the data files behind a path.

Used by the package face (:mod:`whylogs_songbird.engines`, which also holds the pandas engine) and
by the Dask and Spark engines, none of which the others import back.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from whylogs_songbird.profiles import segment_warning_silenced, to_millis

if TYPE_CHECKING:
    import pandas as pd

#: ``progress(done, total, unit)``: ``unit`` is what is counted ("rows", "partitions", "tasks" or
#: "files"); ``total`` is None while unknown.
ProgressCallback: TypeAlias = Callable[[int, "int | None", str], None]

#: The key of a profile piece: () for the whole dataset, the segment's values otherwise.
PieceKey: TypeAlias = tuple[Any, ...]

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
    with segment_warning_silenced():
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


def merge_pieces(
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
        merge_pieces(merged, {key: DatasetProfileView.deserialize(data) for key, data in part.items()})
    return {key: view.serialize() for key, view in merged.items()}


def result_set(pieces: Mapping[PieceKey, DatasetProfileView], columns: Sequence[str], stamp: datetime) -> ResultSet:
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
