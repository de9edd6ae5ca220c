"""What the profiling engines share (whylogs_songbird/engines/_common.py), as pure logic: segment
columns, profiles of one piece of the data and their merge, the result set ``why.log`` would have
returned, and the data files behind a path.

Expected profiles come from whylogs itself (``why.log`` of the whole frame); file listings and
messages are written out by hand. The Dask and Spark engines are held by tests/test_distributed.py.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import whylogs as why
from whylogs.api.logger.result_set import SegmentedResultSet, ViewResultSet

from whylogs_songbird.engines._common import (
    EngineUnavailableError,
    Source,
    merge_bytes,
    merge_pieces,
    missing_engine,
    partition_for,
    profile_frame,
    profile_frame_bytes,
    resolve_source,
    result_set,
    schema_for,
    segment_columns,
    timestamp_or_now,
)
from whylogs_songbird.errors import ConfigError, ProfileError, SongbirdError

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/engines/_common.py")

FRAME = pd.DataFrame(
    {"n": [1, 2, 3, 4, 5, 6], "g": ["a", "b", "a", "b", "a", "c"], "h": ["x", "x", "y", "x", "y", "y"]}
)


def counts(view) -> dict[str, int]:
    """Rows per column of a profile view, read from whylogs' own metric."""
    return {name: int(col.get_metric("counts").n.value) for name, col in sorted(view.get_columns().items())}


def summary(view) -> dict[str, dict[str, object]]:
    """A comparable digest of a view: per column its count, mean, min and max (from whylogs)."""
    out: dict[str, dict[str, object]] = {}
    for name, col in sorted(view.get_columns().items()):
        d = col.to_summary_dict()
        keys = ("counts/n", "distribution/mean", "distribution/min", "distribution/max")
        out[name] = {k: None if d.get(k) != d.get(k) else d.get(k) for k in keys}  # NaN (no numbers): None
    return out


# -- missing engines -------------------------------------------------------------------------------


def test_a_missing_engine_names_its_extra():
    error = missing_engine("dask", ModuleNotFoundError("No module named 'dask'", name="dask"))
    assert isinstance(error, EngineUnavailableError) and isinstance(error, ImportError)
    assert isinstance(error, SongbirdError)
    assert str(error) == (
        "profiling with dask needs the 'dask' extra (dask is missing): pip install \"whylogs-songbird[dask]\""
    )
    nameless = missing_engine("spark", ImportError("cannot import pyspark.sql"))
    assert str(nameless) == (
        "profiling with spark needs the 'spark' extra (cannot import pyspark.sql is missing): "
        'pip install "whylogs-songbird[spark]"'
    )


# -- segments --------------------------------------------------------------------------------------


def test_no_segment_is_no_segment_columns():
    assert segment_columns(None, ["a"]) == []


@pytest.mark.parametrize(("given", "wanted"), [("g", ["g"]), (["g", "h"], ["g", "h"]), (("h",), ["h"])])
def test_segment_columns_are_names_of_the_data(given, wanted):
    assert segment_columns(given, ["n", "g", "h"]) == wanted


@pytest.mark.parametrize("given", [[], "", [""], ["g", 3], [None]])
def test_segment_by_must_be_names(given):
    with pytest.raises(ConfigError) as caught:
        segment_columns(given, ["g"])
    assert str(caught.value) == f"segment_by must be a column name or a list of column names, not {given!r}."


def test_an_unknown_segment_column_names_the_columns_up_to_twenty():
    with pytest.raises(ConfigError) as caught:
        segment_columns(["x", "g", "y"], ["g", 7])
    assert str(caught.value) == "cannot segment on 'x', 'y': no such column; the columns are g, 7."
    twenty = [f"c{i}" for i in range(20)]
    with pytest.raises(ConfigError) as caught:
        segment_columns("x", twenty)
    assert str(caught.value) == f"cannot segment on 'x': no such column; the columns are {', '.join(twenty)}."
    with pytest.raises(ConfigError) as caught:
        segment_columns("x", [*twenty, "c20"])
    assert str(caught.value) == f"cannot segment on 'x': no such column; the columns are {', '.join(twenty)}, ...."


def test_the_partition_and_schema_segment_on_the_columns():
    partition = partition_for(["g", "h"])
    assert (partition.name, partition.mapper.col_names) == ("g,h", ["g", "h"])
    assert schema_for([]) is None
    schema = schema_for(["g"])
    assert list(schema.segments) == ["g"] and schema.segments["g"].mapper.col_names == ["g"]


# -- timestamps ------------------------------------------------------------------------------------


def test_a_timestamp_is_an_aware_utc_datetime():
    assert timestamp_or_now(1_767_225_600_000) == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert timestamp_or_now(1_767_225_600_123).microsecond == 123_000
    naive = datetime(2026, 2, 28, 23, 59)
    assert timestamp_or_now(naive) == datetime(2026, 2, 28, 23, 59, tzinfo=timezone.utc)
    offset = datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp_or_now(offset) == datetime(2026, 2, 28, 23, 0, tzinfo=timezone.utc)
    assert timestamp_or_now(offset).tzinfo == timezone.utc


def test_no_timestamp_is_now_in_utc():
    before = datetime.now(timezone.utc)
    stamp = timestamp_or_now(None)
    assert before <= stamp <= datetime.now(timezone.utc) and stamp.tzinfo == timezone.utc


def test_a_timestamp_in_seconds_is_refused():
    with pytest.raises(ConfigError, match="looks like epoch seconds"):
        timestamp_or_now(1_767_225_600)


# -- profiles of pieces and their merge ------------------------------------------------------------


def test_an_unsegmented_piece_is_whylogs_profile_of_the_frame():
    pieces = profile_frame(FRAME, [])
    assert list(pieces) == [()]
    assert summary(pieces[()]) == summary(why.log(FRAME).view())


def test_a_segmented_piece_has_a_profile_per_value():
    pieces = profile_frame(FRAME, ["g"])
    assert sorted(pieces) == [("a",), ("b",), ("c",)]
    assert counts(pieces[("a",)])["n"] == 3 and counts(pieces[("c",)])["n"] == 1
    assert summary(pieces[("b",)]) == summary(why.log(FRAME[FRAME.g == "b"]).view())
    two = profile_frame(FRAME, ["g", "h"])
    assert sorted(two) == [("a", "x"), ("a", "y"), ("b", "x"), ("c", "y")]


def test_merged_pieces_equal_the_profile_of_all_rows():
    first, second = FRAME.iloc[:4], FRAME.iloc[4:]
    merged = merge_bytes(profile_frame_bytes(first, ["g"]), profile_frame_bytes(second, ["g"]))
    assert sorted(merged) == [("a",), ("b",), ("c",)]
    from whylogs.core.view.dataset_profile_view import DatasetProfileView

    for key in merged:
        whole = why.log(FRAME[FRAME.g == key[0]]).view()
        assert summary(DatasetProfileView.deserialize(merged[key])) == summary(whole)
    assert merge_bytes() == {}


def test_merge_pieces_merges_in_place_and_keeps_the_rest():
    into = profile_frame(FRAME.iloc[:2], ["g"])  # a, b
    other = profile_frame(FRAME.iloc[2:], ["g"])  # a, b, c
    kept = into
    merged = merge_pieces(into, other)
    assert merged is kept and sorted(merged) == [("a",), ("b",), ("c",)]
    assert [counts(merged[k])["n"] for k in sorted(merged)] == [3, 2, 1]


# -- the result set --------------------------------------------------------------------------------

STAMP = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_the_result_of_an_unsegmented_profile_carries_the_stamp():
    view = profile_frame(FRAME, [])[()]
    view.metadata["k"] = "v"
    results = result_set({(): view}, [], STAMP)
    assert isinstance(results, ViewResultSet)
    out = results.view()
    assert out.dataset_timestamp == STAMP and summary(out) == summary(view)
    assert out.metadata == dict(view.metadata) and out.metadata["k"] == "v"
    assert out.creation_timestamp >= datetime.now(timezone.utc) - timedelta(minutes=5)


def test_no_piece_is_an_empty_data_error():
    with pytest.raises(ProfileError) as caught:
        result_set({}, [], STAMP)
    assert str(caught.value) == "the data produced no profile: is it empty?"


def test_the_result_of_a_segmented_profile_is_whylogs_segmented_set_in_order():
    pieces = profile_frame(FRAME, ["g"])
    results = result_set({k: pieces[k] for k in [("c",), ("a",), ("b",)]}, ["g"], STAMP)
    assert isinstance(results, SegmentedResultSet)
    segments = results.segments()
    assert [s.key for s in segments] == [("a",), ("b",), ("c",)]
    partition = partition_for(["g"])
    assert {s.parent_id for s in segments} == {partition.id}
    assert [p.name for p in results.partitions] == ["g"]
    for segment in segments:
        view = results.view(segment)
        assert view.dataset_timestamp == STAMP and summary(view) == summary(pieces[segment.key])


def test_segment_order_is_by_the_text_of_the_values():
    pieces = profile_frame(pd.DataFrame({"k": [10, 9, 2], "v": [1.0, 2.0, 3.0]}), ["k"])
    results = result_set(pieces, ["k"], STAMP)
    assert [s.key for s in results.segments()] == [("10",), ("2",), ("9",)]


# -- data on disk ----------------------------------------------------------------------------------


def touch(path: Path, text: str = "a\n1\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_csv_file_is_a_source_of_one(tmp_path):
    one = touch(tmp_path / "d.csv")
    assert resolve_source(one) == Source("csv", (one,), ",")
    assert resolve_source(str(one)).files == (one,)


def test_a_glob_takes_its_files_sorted_and_tab_separated_when_all_are_tsv(tmp_path):
    b, a = touch(tmp_path / "b.TSV"), touch(tmp_path / "a.tsv")
    (tmp_path / "dir.tsv").mkdir()
    assert resolve_source(tmp_path / "*.[tT][sS][vV]") == Source("csv", (a, b), "\t")
    c = touch(tmp_path / "c.csv")
    assert resolve_source(tmp_path / "*.?sv") == Source("csv", (a, c), ",")  # one .csv: comma-separated
    deep = touch(tmp_path / "x" / "y" / "d.csv")
    assert resolve_source(f"{tmp_path}/**/*.csv").files == (c, deep)


def test_a_glob_matching_nothing_says_so(tmp_path):
    with pytest.raises(ProfileError) as caught:
        resolve_source(f"{tmp_path}/*.csv")
    assert str(caught.value) == f"{tmp_path}/*.csv: no file matches this pattern."


def test_a_missing_path_says_so(tmp_path):
    with pytest.raises(ProfileError) as caught:
        resolve_source(tmp_path / "none.csv")
    assert str(caught.value) == f"{tmp_path / 'none.csv'}: no such file or directory."


def test_a_directory_is_its_parquet_files_without_hidden_or_underscore_parts(tmp_path):
    keep = [touch(tmp_path / "p" / "a.parquet"), touch(tmp_path / "p" / "k=1" / "b.PQ")]
    for skipped in ("_SUCCESS", "_tmp/c.parquet", ".hidden/d.parquet", "k=1/.e.parquet", "notes.csv", "f.txt"):
        touch(tmp_path / "p" / skipped)
    (tmp_path / "p" / "g.parquet").mkdir()
    source = resolve_source(tmp_path / "p")
    assert source == Source("parquet", tuple(sorted(keep)), ",")
    assert source.size == sum(f.stat().st_size for f in keep) == 8


def test_a_directory_under_an_underscore_parent_still_counts(tmp_path):
    inside = touch(tmp_path / "_work" / "p" / "a.parquet")
    assert resolve_source(tmp_path / "_work" / "p").files == (inside,)


def test_a_directory_without_parquet_says_what_to_give(tmp_path):
    touch(tmp_path / "d" / "a.csv")
    with pytest.raises(ProfileError) as caught:
        resolve_source(tmp_path / "d")
    assert str(caught.value) == (
        f"{tmp_path / 'd'} is a directory with no .parquet files in it: give a parquet directory, "
        "a parquet file or a CSV glob such as 'data/*.csv'."
    )


def test_a_parquet_file_by_itself_is_parquet(tmp_path):
    one = touch(tmp_path / "a.pq")
    assert resolve_source(one) == Source("parquet", (one,), ",")


def test_mixed_kinds_are_refused(tmp_path):
    touch(tmp_path / "a.csv")
    touch(tmp_path / "b.parquet")
    with pytest.raises(ProfileError) as caught:
        resolve_source(f"{tmp_path}/*")
    assert str(caught.value) == f"{tmp_path}/* matches both parquet and CSV files: profile one kind at a time."


@pytest.mark.parametrize(("name", "shown"), [("a.json", ".json"), ("README", "this file")])
def test_other_files_name_what_can_be_read(tmp_path, name, shown):
    other = touch(tmp_path / name)
    with pytest.raises(ProfileError) as caught:
        resolve_source(other)
    assert str(caught.value) == f"{other}: profile reads .parquet, .pq, .csv and .tsv files, not {shown}."


def test_an_unreadable_file_is_named_whoever_runs(tmp_path, monkeypatch):
    readable, locked = touch(tmp_path / "a.csv"), touch(tmp_path / "b.csv")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    with pytest.raises(ProfileError) as caught:
        resolve_source(f"{tmp_path}/*.csv")
    assert str(caught.value) == f"{locked}: cannot read it (permission denied)."
    assert resolve_source(readable).files == (readable,)
