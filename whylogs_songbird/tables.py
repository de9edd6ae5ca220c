"""Reading data files for profiling: format detection, ``read_table``, timestamps and segments.

The library side of ``songbird profile``, for notebooks and scripts too::

    from whylogs_songbird.tables import read_table, segment_schema
    frame = read_table("data.parquet")                  # format from the extension
    results = why.log(frame, schema=segment_schema(frame, ["region"]))

Every problem with the input is a `DataFileError` that says what is wrong and what to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whylogs_songbird.errors import DataFileError, SongbirdError
from whylogs_songbird.profiles import to_millis

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORMATS",
    "DataFileError",
    "check_readable_file",
    "detect_format",
    "parse_timestamp",
    "read_table",
    "segment_schema",
]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


#: File formats `songbird profile` reads, by file extension.
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSION = {".gz", ".bz2", ".zip", ".xz", ".zst"}


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds from ISO 8601 (``2024-05-01``, ``2024-05-01T12:00:00Z``, ...) or epoch ms."""
    value = text.strip()
    if re.fullmatch(r"[+-]?\d+", value):
        return to_millis(int(value), what="--timestamp")
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise DataFileError(
            f"--timestamp {text!r} is neither ISO 8601 (e.g. 2024-05-01 or 2024-05-01T12:00:00Z; "
            "UTC unless it has an offset) nor epoch milliseconds (e.g. 1714521600000)."
        ) from None
    return to_millis(moment, what="--timestamp")


def detect_format(path: str | os.PathLike[str], given: str | None = None) -> str:
    """The format of ``path``: ``given``, or from its extension (a compression suffix is skipped)."""
    path = Path(path)
    if given:
        if given not in set(FORMATS.values()):
            raise DataFileError(f"--format {given!r} is not one of csv, tsv, parquet, jsonl.")
        return given
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION:
        suffixes.pop()
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise DataFileError(
            f"{path}: cannot tell its format from the name; use a .csv, .tsv, .parquet or .jsonl file, "
            "or pass --format."
        )
    return fmt


def check_readable_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DataFileError(f"{path}: no such file.")
    if path.is_dir():
        raise DataFileError(f"{path} is a directory, not {what}.")
    if not os.access(path, os.R_OK):
        raise DataFileError(f"{path}: cannot read it (permission denied).")


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise SongbirdError(f"reading Parquet needs a working pyarrow (pip install pyarrow): {exc}") from None


def read_table(path: str | os.PathLike[str], fmt: str | None = None) -> pd.DataFrame:
    """Read a data file into a DataFrame, or raise `DataFileError` saying what is wrong with it.

    ``fmt`` is csv, tsv, parquet or jsonl; by default it comes from the file name (`detect_format`).
    """
    import pandas as pd

    path = Path(path)
    fmt = detect_format(path, fmt)
    check_readable_file(path, "a data file")
    try:
        if fmt == "csv":
            frame = pd.read_csv(path)
        elif fmt == "tsv":
            frame = pd.read_csv(path, sep="\t")
        elif fmt == "parquet":
            _require_pyarrow()
            frame = pd.read_parquet(path)
        elif fmt == "jsonl":
            frame = pd.read_json(path, lines=True)
        else:
            raise DataFileError(f"unknown format {fmt!r}: use csv, tsv, parquet or jsonl.")
    except SongbirdError:
        raise
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except pd.errors.EmptyDataError:
        raise DataFileError(f"{path} is empty: there is no header and no data to profile.") from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read it ({exc.strerror or exc}).") from None
    except Exception as exc:  # pandas and pyarrow raise many kinds on malformed input
        detail = _one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise DataFileError(f"{path} is not a readable {fmt} file: {detail}") from None
    if len(frame.columns) == 0 or len(frame) == 0:
        raise DataFileError(f"{path} has no rows to profile.")
    return frame


def segment_schema(frame: pd.DataFrame, columns: Sequence[str]) -> Any:
    """A whylogs schema that segments on ``columns`` (together), after checking they exist in ``frame``."""
    from whylogs.core.schema import DatasetSchema
    from whylogs.core.segmentation_partition import ColumnMapperFunction, SegmentationPartition

    names = [str(c) for c in frame.columns]
    unknown = [c for c in columns if c not in names]
    if unknown:
        shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
        raise DataFileError(f"unknown --segment-by column {', '.join(map(repr, unknown))}; the columns are: {shown}.")
    if len(set(columns)) != len(columns):
        raise DataFileError("a --segment-by column is given twice.")
    name = ",".join(columns)
    partition = SegmentationPartition(name=name, mapper=ColumnMapperFunction(col_names=list(columns)))
    return DatasetSchema(segments={name: partition})
