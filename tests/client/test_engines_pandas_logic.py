"""The package face of the engines (whylogs_songbird/engines/__init__.py), fast: the pandas engine
streaming parquet and CSV files in batches, ``profile_path`` and its dispatch to Dask and Spark.

Files are written in tmp_path; expected profiles come from ``why.log`` of the same rows, counts,
batches and messages are written out by hand. The Dask and Spark engines themselves are replaced by
recorders at this module's seam (the engine modules' entry points): tests/client/test_distributed.py
runs them for real.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from types import SimpleNamespace

import pandas as pd
import pytest
import whylogs as why
from whylogs.api.logger.result_set import SegmentedResultSet, ViewResultSet

from whylogs_songbird import engines
from whylogs_songbird.engines import ENGINES, profile_pandas_source, profile_path, resolve_source
from whylogs_songbird.errors import ConfigError, ProfileError

# hang_bound: a broken loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not at mutmut's timeout
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/engines/__init__.py"), pytest.mark.hang_bound]

FRAME = pd.DataFrame({"n": [1, 2, 3, 4, 5], "g": ["a", "b", "a", "b", "a"]})
STAMP_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STAMP = datetime(2026, 1, 1, tzinfo=timezone.utc)


def summary(view) -> dict[str, dict[str, object]]:
    """Per column: count, nulls, mean, min and max, as whylogs reports them (NaN as None)."""
    out: dict[str, dict[str, object]] = {}
    for name, col in sorted(view.get_columns().items()):
        d = col.to_summary_dict()
        keys = ("counts/n", "counts/null", "distribution/mean", "distribution/min", "distribution/max")
        out[name] = {k: None if d.get(k) != d.get(k) else d.get(k) for k in keys}
    return out


def rows(view) -> dict[str, int]:
    return {name: int(col.get_metric("counts").n.value) for name, col in sorted(view.get_columns().items())}


def segments(results: SegmentedResultSet) -> dict[tuple[str, ...], dict[str, int]]:
    return {tuple(s.key): rows(results.view(s)) for s in results.segments()}


@pytest.fixture
def parquet_dir(tmp_path):
    """FRAME in two parquet parts (3 and 2 rows) under a directory."""
    where = tmp_path / "data"
    where.mkdir()
    FRAME.iloc[:3].to_parquet(where / "part-0.parquet", index=False)
    FRAME.iloc[3:].to_parquet(where / "part-1.parquet", index=False)
    return where


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(engines, "PANDAS_BATCH_ROWS", 2)


# -- the pandas engine: parquet --------------------------------------------------------------------


def test_a_parquet_directory_is_streamed_in_batches_and_profiled_like_why_log(parquet_dir, small_batches):
    seen = []
    results = profile_path(parquet_dir, dataset_timestamp=STAMP_MS, progress=lambda *a: seen.append(a))
    assert isinstance(results, ViewResultSet)
    view = results.view()
    assert summary(view) == summary(why.log(FRAME).view())
    assert summary(view)["n"] == {
        "counts/n": 5,
        "counts/null": 0,
        "distribution/mean": 3.0,
        "distribution/min": 1.0,
        "distribution/max": 5.0,
    }
    assert view.dataset_timestamp == STAMP
    # batches of 2 rows: the 3-row part gives 2 + 1, the 2-row part 2
    assert seen == [(0, 5, "rows"), (2, 5, "rows"), (3, 5, "rows"), (5, 5, "rows")]


def test_a_segmented_parquet_profile_has_one_profile_per_value(parquet_dir, small_batches):
    results = profile_path(parquet_dir, segment_by="g", dataset_timestamp=STAMP_MS)
    assert isinstance(results, SegmentedResultSet)
    assert segments(results) == {("a",): {"g": 3, "n": 3}, ("b",): {"g": 2, "n": 2}}
    for segment in results.segments():
        expected = why.log(FRAME[FRAME.g == segment.key[0]]).view()
        assert summary(results.view(segment)) == summary(expected)
        assert results.view(segment).dataset_timestamp == STAMP


def test_segments_by_two_columns(tmp_path):
    frame = pd.DataFrame({"n": [1, 2, 3], "g": ["a", "a", "b"], "h": ["x", "y", "x"]})
    frame.to_parquet(tmp_path / "one.pq", index=False)
    results = profile_path(tmp_path / "one.pq", segment_by=["g", "h"], dataset_timestamp=STAMP_MS)
    assert sorted(segments(results)) == [("a", "x"), ("a", "y"), ("b", "x")]


def test_no_progress_callback_is_fine(parquet_dir, small_batches, tmp_path):
    assert rows(profile_path(parquet_dir).view()) == {"g": 5, "n": 5}
    FRAME.to_csv(tmp_path / "f.csv", index=False)
    assert rows(profile_path(tmp_path / "f.csv").view()) == {"g": 5, "n": 5}


def test_a_parquet_file_without_rows_is_refused(tmp_path):
    pd.DataFrame({"n": pd.Series([], dtype="int64")}).to_parquet(tmp_path / "empty.parquet", index=False)
    seen = []
    with pytest.raises(ProfileError) as caught:
        profile_path(tmp_path / "empty.parquet", progress=lambda *a: seen.append(a))
    assert str(caught.value) == f"{tmp_path / 'empty.parquet'} holds no rows to profile."
    assert seen == [(0, 0, "rows")]


def test_no_timestamp_is_now(parquet_dir):
    before = datetime.now(timezone.utc)
    stamp = profile_path(parquet_dir).view().dataset_timestamp
    assert before <= stamp <= datetime.now(timezone.utc)


# -- the pandas engine: CSV ------------------------------------------------------------------------


def test_a_csv_glob_is_read_file_by_file_in_batches(tmp_path, small_batches):
    FRAME.iloc[:3].to_csv(tmp_path / "a.csv", index=False)
    FRAME.iloc[3:].to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame({"n": [9], "g": ["z"]}).to_csv(tmp_path / "c.csv", index=False)
    seen = []
    results = profile_path(str(tmp_path / "*.csv"), segment_by="g", progress=lambda *a: seen.append(a))
    assert segments(results) == {("a",): {"g": 3, "n": 3}, ("b",): {"g": 2, "n": 2}, ("z",): {"g": 1, "n": 1}}
    assert seen == [(0, 3, "files"), (1, 3, "files"), (2, 3, "files"), (3, 3, "files")]


def test_a_tsv_file_is_split_on_tabs(tmp_path, small_batches):
    FRAME.to_csv(tmp_path / "f.tsv", sep="\t", index=False)
    view = profile_path(tmp_path / "f.tsv").view()
    assert summary(view) == summary(why.log(FRAME).view())


def test_the_csv_batches_are_of_the_batch_size(tmp_path, small_batches, monkeypatch):
    FRAME.to_csv(tmp_path / "f.csv", index=False)
    sizes = []
    real = engines.profile_frame

    def recording(frame, columns):
        sizes.append(len(frame))
        return real(frame, columns)

    monkeypatch.setattr(engines, "profile_frame", recording)
    assert rows(profile_path(tmp_path / "f.csv").view()) == {"g": 5, "n": 5}
    assert sizes == [2, 2, 1]


def test_an_empty_csv_file_is_refused_by_name(tmp_path):
    FRAME.to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "b.csv").write_text("")
    seen = []
    with pytest.raises(ProfileError) as caught:
        profile_path(str(tmp_path / "*.csv"), progress=lambda *a: seen.append(a))
    assert str(caught.value) == f"{tmp_path / 'b.csv'} is empty: there is no header and no data to profile."
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert seen == [(0, 2, "files"), (1, 2, "files")]


def test_a_csv_with_only_a_header_profiles_no_rows(tmp_path):
    (tmp_path / "h.csv").write_text("n,g\n")
    assert rows(profile_path(tmp_path / "h.csv").view()) == {"g": 0, "n": 0}


def test_profile_pandas_source_takes_a_source(parquet_dir):
    results = profile_pandas_source(resolve_source(parquet_dir), segment_by="g", dataset_timestamp=STAMP_MS)
    assert segments(results) == {("a",): {"g": 3, "n": 3}, ("b",): {"g": 2, "n": 2}}


# -- profile_path: checks, logging and dispatch ----------------------------------------------------


def test_an_unknown_engine_is_refused_by_name(parquet_dir):
    assert ENGINES == ("pandas", "dask", "spark")
    with pytest.raises(ConfigError) as caught:
        profile_path(parquet_dir, engine="ray")
    assert str(caught.value) == "unknown engine 'ray': use one of pandas, dask, spark."


def test_a_glob_matching_nothing_is_refused(tmp_path):
    with pytest.raises(ProfileError) as caught:
        profile_path(str(tmp_path / "*.csv"))
    assert str(caught.value) == f"{tmp_path / '*.csv'}: no file matches this pattern."


def test_an_unknown_segment_column_is_refused(parquet_dir):
    with pytest.raises(ConfigError, match="cannot segment on 'nope': no such column"):
        profile_path(parquet_dir, segment_by="nope")


def test_profiling_is_logged_with_its_files_engine_and_time(parquet_dir, caplog, monkeypatch):
    size = sum(f.stat().st_size for f in parquet_dir.iterdir())
    readings = iter([100.0, 102.5])  # the module's clock, read at the start and at the end
    monkeypatch.setattr(engines, "time", SimpleNamespace(monotonic=lambda: next(readings)))
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.engines"):
        profile_path(parquet_dir)
    messages = [r.getMessage() for r in caplog.records if r.name == "whylogs_songbird.engines"]
    assert messages == [
        f"profiling 2 parquet file(s) ({size} bytes) with pandas",
        f"profiled {parquet_dir} with pandas in 2.5s",
    ]


class Recorder:
    """Stands in for an engine module's entry point: records its calls, returns a marker."""

    def __init__(self):
        self.calls = []
        self.result = object()

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


@pytest.mark.parametrize(
    ("engine", "module", "name"), [("dask", "dask", "profile_dask_source"), ("spark", "spark", "profile_spark_source")]
)
def test_profile_path_hands_the_source_to_the_engine(parquet_dir, monkeypatch, caplog, engine, module, name):
    import importlib

    recorder = Recorder()
    monkeypatch.setattr(importlib.import_module(f"whylogs_songbird.engines.{module}"), name, recorder)
    progress = Recorder()
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.engines"):
        got = profile_path(parquet_dir, engine=engine, segment_by="g", dataset_timestamp=STAMP_MS, progress=progress)
    assert got is recorder.result
    assert recorder.calls == [
        (
            (resolve_source(parquet_dir),),
            {"segment_by": "g", "dataset_timestamp": STAMP_MS, "progress": progress},
        )
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == "whylogs_songbird.engines"]
    assert messages[0].endswith(f"with {engine}") and messages[1].startswith(
        f"profiled {parquet_dir} with {engine} in "
    )


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_a_bad_timestamp_is_refused_before_any_engine_starts(parquet_dir, monkeypatch, engine):
    import importlib

    recorder = Recorder()
    monkeypatch.setattr(
        importlib.import_module(f"whylogs_songbird.engines.{engine}"), f"profile_{engine}_source", recorder
    )
    with pytest.raises(ConfigError, match="looks like epoch seconds"):
        profile_path(parquet_dir, engine=engine, dataset_timestamp=1_767_225_600)
    assert recorder.calls == []


def test_profile_dask_and_profile_spark_pass_their_arguments_on(monkeypatch):
    from whylogs_songbird.engines import dask as dask_engine
    from whylogs_songbird.engines import spark as spark_engine

    for module, name, face in (
        (dask_engine, "profile_dask", engines.profile_dask),
        (spark_engine, "profile_spark", engines.profile_spark),
    ):
        recorder = Recorder()
        monkeypatch.setattr(module, name, recorder)
        frame = object()
        assert face(frame, segment_by=["g"], dataset_timestamp=STAMP_MS) is recorder.result
        assert recorder.calls == [((frame,), {"segment_by": ["g"], "dataset_timestamp": STAMP_MS})]
