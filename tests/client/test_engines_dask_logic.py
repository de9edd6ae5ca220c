"""The Dask engine (whylogs_songbird/engines/dask.py), fast: partitions profiled and merged in a tree,
in this process (Dask's default scheduler) or on a ``distributed`` cluster.

Real dask.dataframe frames; the cluster, where one is needed, is an in-process
``distributed.Client(processes=False)`` (no socket) started and closed inside each test, since a
mutant's tests run in a forked process where a cluster made earlier would not exist. Expected
profiles come from ``why.log`` of the same rows; counts, progress and messages are written by hand.
The worker-process cluster of `dask_client` is replaced by recorders: tests/client/test_distributed.py
starts real ones.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import dask
import dask.dataframe as dd
import pandas as pd
import pytest
import whylogs as why
from whylogs.api.logger.result_set import SegmentedResultSet, ViewResultSet

from whylogs_songbird.engines import dask as engine
from whylogs_songbird.engines._common import EngineUnavailableError, resolve_source
from whylogs_songbird.errors import ConfigError

# hang_bound: a broken loop or wait ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not at mutmut's timeout
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/engines/dask.py"), pytest.mark.hang_bound]

FRAME = pd.DataFrame({"n": list(range(1, 11)), "g": ["a", "b"] * 5})
STAMP_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STAMP = datetime(2026, 1, 1, tzinfo=timezone.utc)


def summary(view) -> dict[str, dict[str, object]]:
    """Per column: count, nulls, mean, min and max, as whylogs reports them (NaN as None; rounded, as
    merges in another order can move a mean's last bit)."""
    out: dict[str, dict[str, object]] = {}
    for name, col in sorted(view.get_columns().items()):
        d = col.to_summary_dict()
        keys = ("counts/n", "counts/null", "distribution/mean", "distribution/min", "distribution/max")
        out[name] = {k: None if d.get(k) != d.get(k) else round(d.get(k), 9) for k in keys}
    return out


def rows(view) -> dict[str, int]:
    return {name: int(col.get_metric("counts").n.value) for name, col in sorted(view.get_columns().items())}


@pytest.fixture(autouse=True)
def own_threads(monkeypatch):
    """Thread pools made for this test: Dask's default pool and distributed's offload executor are made
    once per process, and a mutant's tests run in a fork of a process that used them, where their
    threads are gone (work given to them would wait forever)."""
    import distributed.utils

    with ThreadPoolExecutor(2) as pool, ThreadPoolExecutor(1) as offload, dask.config.set(pool=pool):
        monkeypatch.setattr(distributed.utils, "_offload_executor", offload)
        yield


@contextlib.contextmanager
def in_process_client():
    """A distributed client on an in-process cluster (inproc transport, no dashboard), closed on exit."""
    from distributed import Client

    with Client(processes=False, dashboard_address=None, n_workers=1, threads_per_worker=2) as client:
        yield client


# -- in this process -------------------------------------------------------------------------------


def test_without_a_client_the_partitions_are_profiled_and_merged_here():
    seen = []
    ddf = dd.from_pandas(FRAME, npartitions=5)
    assert engine._current_client() is None
    results = engine.profile_dask(ddf, dataset_timestamp=STAMP_MS, split_every=2, progress=lambda *a: seen.append(a))
    assert isinstance(results, ViewResultSet)
    view = results.view()
    assert summary(view) == summary(why.log(FRAME).view())
    assert summary(view)["n"] == {
        "counts/n": 10, "counts/null": 0, "distribution/mean": 5.5, "distribution/min": 1.0, "distribution/max": 10.0
    }  # fmt: skip
    assert view.dataset_timestamp == STAMP
    # only the 5 partitions are counted, not the 4 merge tasks above them
    assert seen == [(0, 5, "partitions"), *[(i, 5, "partitions") for i in range(1, 6)]]


@pytest.mark.parametrize(("npartitions", "split_every"), [(9, 2), (9, 3), (7, 8), (1, 8)])
def test_every_partition_is_merged_whatever_the_tree(npartitions, split_every):
    ddf = dd.from_pandas(FRAME, npartitions=npartitions)
    assert ddf.npartitions == npartitions
    view = engine.profile_dask(ddf, split_every=split_every).view()
    assert summary(view) == summary(why.log(FRAME).view())


def test_the_default_merge_combines_eight_profiles():
    assert engine.SPLIT_EVERY == 8
    view = engine.profile_dask(dd.from_pandas(FRAME, npartitions=10)).view()
    assert rows(view) == {"g": 10, "n": 10}


def test_segments_come_back_one_profile_per_value():
    ddf = dd.from_pandas(FRAME, npartitions=3)
    results = engine.profile_dask(ddf, segment_by="g", dataset_timestamp=STAMP_MS)
    assert isinstance(results, SegmentedResultSet)
    got = {tuple(s.key): results.view(s) for s in results.segments()}
    assert sorted(got) == [("a",), ("b",)]
    for (value,), view in got.items():
        assert summary(view) == summary(why.log(FRAME[FRAME.g == value]).view())
        assert view.dataset_timestamp == STAMP
    assert {key: rows(view)["n"] for key, view in got.items()} == {("a",): 5, ("b",): 5}


def test_no_timestamp_is_now():
    before = datetime.now(timezone.utc)
    stamp = engine.profile_dask(dd.from_pandas(FRAME, npartitions=2)).view().dataset_timestamp
    assert before <= stamp <= datetime.now(timezone.utc)


def test_the_work_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.engines.dask"):
        engine.profile_dask(dd.from_pandas(FRAME, npartitions=3))
    assert [r.getMessage() for r in caplog.records if r.name == engine.__name__] == ["profiling 3 partitions on dask"]


# -- bad input -------------------------------------------------------------------------------------


def test_a_pandas_frame_is_refused_with_what_to_do():
    with pytest.raises(ConfigError) as caught:
        engine.profile_dask(FRAME)
    assert str(caught.value) == (
        "profile_dask takes a dask DataFrame, not DataFrame; "
        "e.g. dask.dataframe.read_parquet(path) or dask.dataframe.from_pandas(df, npartitions=8)."
    )


def test_a_merge_of_fewer_than_two_is_refused():
    ddf = dd.from_pandas(FRAME, npartitions=3)
    with pytest.raises(ConfigError) as caught:
        engine.profile_dask(ddf, split_every=1)
    assert str(caught.value) == "split_every must be at least 2, not 1."
    assert rows(engine.profile_dask(ddf, split_every=2).view()) == {"g": 10, "n": 10}


def test_bad_segments_and_timestamps_are_refused_before_any_work():
    ddf = dd.from_pandas(FRAME, npartitions=3)
    with pytest.raises(ConfigError, match="cannot segment on 'nope': no such column"):
        engine.profile_dask(ddf, segment_by="nope")
    with pytest.raises(ConfigError, match="looks like epoch seconds"):
        engine.profile_dask(ddf, dataset_timestamp=1_767_225_600)


def test_without_dask_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.dataframe", None)
    with pytest.raises(EngineUnavailableError) as caught:
        engine.profile_dask(object())
    assert str(caught.value).endswith('pip install "whylogs-songbird[dask]"')
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_dask_is_what_require_gives():
    assert engine._require_dask() is dask


def test_without_distributed_there_is_no_client(monkeypatch):
    with in_process_client():
        monkeypatch.setitem(sys.modules, "distributed", None)
        assert engine._current_client() is None


# -- on a distributed cluster ----------------------------------------------------------------------


def test_with_a_client_the_partitions_are_profiled_and_merged_on_its_cluster(caplog):
    seen = []
    ddf = dd.from_pandas(FRAME, npartitions=9)
    with in_process_client() as client, caplog.at_level(logging.INFO, logger=engine.__name__):
        assert engine._current_client() is client
        results = engine.profile_dask(
            ddf, segment_by="g", dataset_timestamp=STAMP_MS, split_every=2, progress=lambda *a: seen.append(a)
        )
        address = client.scheduler.address
    got = {tuple(s.key): results.view(s) for s in results.segments()}
    assert sorted(got) == [("a",), ("b",)]
    for (value,), view in got.items():
        assert summary(view) == summary(why.log(FRAME[FRAME.g == value]).view())
        assert view.dataset_timestamp == STAMP
    assert seen == [(0, 9, "partitions"), *[(i, 9, "partitions") for i in range(1, 10)]]
    messages = [r.getMessage() for r in caplog.records if r.name == engine.__name__]
    assert messages == [f"profiling 9 partitions on the cluster at {address}"]


@pytest.mark.parametrize(("npartitions", "split_every"), [(9, 3), (1, 2)])
def test_the_cluster_merges_every_partition(npartitions, split_every):
    ddf = dd.from_pandas(FRAME, npartitions=npartitions)
    with in_process_client():
        view = engine.profile_dask(ddf, split_every=split_every).view()
    assert summary(view) == summary(why.log(FRAME).view())


def test_the_cluster_without_progress():
    with in_process_client():
        assert rows(engine.profile_dask(dd.from_pandas(FRAME, npartitions=4)).view()) == {"g": 10, "n": 10}


# -- files -----------------------------------------------------------------------------------------


def test_parquet_files_are_read_as_one_frame(tmp_path):
    FRAME.iloc[:4].to_parquet(tmp_path / "a.parquet", index=False)
    FRAME.iloc[4:].to_parquet(tmp_path / "b.parquet", index=False)
    ddf = engine.read_source(resolve_source(tmp_path))
    assert isinstance(ddf, dd.DataFrame)
    got = ddf.compute().reset_index(drop=True)
    assert list(got.columns) == ["n", "g"] and str(got["n"].dtype) == "int64"
    assert got["n"].tolist() == FRAME["n"].tolist() and got["g"].tolist() == FRAME["g"].tolist()


def test_csv_integers_are_read_as_floats_and_tsv_on_tabs(tmp_path):
    FRAME.iloc[:4].to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    FRAME.iloc[4:].to_csv(tmp_path / "b.tsv", sep="\t", index=False)
    got = engine.read_source(resolve_source(str(tmp_path / "*.tsv"))).compute().reset_index(drop=True)
    assert list(got.columns) == ["n", "g"] and str(got["n"].dtype) == "float64"
    assert got["n"].tolist() == [float(i) for i in range(1, 11)] and got["g"].tolist() == FRAME["g"].tolist()
    assert engine.CSV_BLOCKSIZE == "64MB"


def test_a_csv_file_is_read_in_blocks_of_the_block_size(tmp_path, monkeypatch):
    pd.DataFrame({"n": range(200)}).to_csv(tmp_path / "one.csv", index=False)  # one column: no delimiter to guess
    assert 600 < (tmp_path / "one.csv").stat().st_size < 800
    monkeypatch.setattr(engine, "CSV_BLOCKSIZE", "300B")
    ddf = engine.read_source(resolve_source(tmp_path / "one.csv"))
    assert ddf.npartitions > 1  # the default block size (and none) would give one
    assert ddf.compute()["n"].tolist() == [float(i) for i in range(200)]


def test_a_source_is_profiled_on_the_current_client(tmp_path, monkeypatch):
    FRAME.to_csv(tmp_path / "f.csv", index=False)
    started = []
    monkeypatch.setattr(engine, "dask_client", lambda: started.append(1))
    seen = []
    with in_process_client():
        results = engine.profile_dask_source(
            resolve_source(tmp_path / "f.csv"),
            segment_by="g",
            dataset_timestamp=STAMP_MS,
            progress=lambda *a: seen.append(a),
        )
    assert started == []
    got = {tuple(s.key): rows(results.view(s)) for s in results.segments()}
    assert got == {("a",): {"g": 5, "n": 5}, ("b",): {"g": 5, "n": 5}}
    assert results.view(next(iter(results.segments()))).dataset_timestamp == STAMP
    assert seen == [(0, 1, "partitions"), (1, 1, "partitions")]


def test_without_a_client_a_source_is_profiled_on_a_cluster_started_for_it(tmp_path, monkeypatch):
    FRAME.to_parquet(tmp_path / "f.parquet", index=False)
    entered = []

    @contextlib.contextmanager
    def started():
        with in_process_client() as client:
            entered.append(client)
            yield client

    monkeypatch.setattr(engine, "dask_client", started)
    seen = []
    source = resolve_source(tmp_path / "f.parquet")
    results = engine.profile_dask_source(source, dataset_timestamp=STAMP_MS, progress=lambda *a: seen.append(a))
    assert len(entered) == 1
    assert summary(results.view()) == summary(why.log(FRAME).view())
    assert results.view().dataset_timestamp == STAMP
    assert seen == [(0, 1, "partitions"), (1, 1, "partitions")]
    segmented = engine.profile_dask_source(source, segment_by="g")
    assert len(entered) == 2
    assert sorted(tuple(s.key) for s in segmented.segments()) == [("a",), ("b",)]


def test_a_source_with_bad_arguments_starts_no_cluster(tmp_path, monkeypatch):
    FRAME.to_parquet(tmp_path / "f.parquet", index=False)
    started = []
    monkeypatch.setattr(engine, "dask_client", lambda: started.append(1))
    source = resolve_source(tmp_path / "f.parquet")
    with pytest.raises(ConfigError, match="cannot segment on 'nope'"):
        engine.profile_dask_source(source, segment_by="nope")
    with pytest.raises(ConfigError, match="looks like epoch seconds"):
        engine.profile_dask_source(source, dataset_timestamp=1_767_225_600)
    assert started == []


# -- the cluster dask_client gives -----------------------------------------------------------------


class Recorded:
    """Stands in for distributed's LocalCluster and Client: records how it was made, entered and left."""

    log: list[tuple[str, object]] = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        Recorded.log.append(("made", self))

    def __enter__(self):
        Recorded.log.append(("entered", self))
        return self

    def __exit__(self, *exc):
        Recorded.log.append(("left", self))


def test_the_cluster_started_for_a_call_is_local_processes_without_a_dashboard(monkeypatch):
    import distributed

    Recorded.log = []
    monkeypatch.setattr(distributed, "LocalCluster", type("Cluster", (Recorded,), {}))
    monkeypatch.setattr(distributed, "Client", type("Client", (Recorded,), {}))
    with dask.config.set({"scheduler-address": None}), engine.dask_client() as client:
        cluster = Recorded.log[0][1]
        assert cluster.args == () and cluster.kwargs == {
            "host": "127.0.0.1", "dashboard_address": None, "processes": True, "threads_per_worker": 1
        }  # fmt: skip
        assert type(client).__name__ == "Client" and client.args == (cluster,) and client.kwargs == {}
        assert [step for step, _ in Recorded.log] == ["made", "entered", "made", "entered"]
    assert Recorded.log[4:] == [("left", client), ("left", cluster)]


def test_a_scheduler_address_is_used_as_it_is(monkeypatch):
    import distributed

    Recorded.log = []
    monkeypatch.setattr(distributed, "LocalCluster", type("Cluster", (Recorded,), {}))
    monkeypatch.setattr(distributed, "Client", type("Client", (Recorded,), {}))
    with dask.config.set({"scheduler-address": "tcp://127.0.0.1:8786"}), engine.dask_client() as client:
        assert type(client).__name__ == "Client" and client.args == ("tcp://127.0.0.1:8786",) and client.kwargs == {}
    assert Recorded.log == [("made", client), ("entered", client), ("left", client)]


def test_dask_client_without_distributed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(EngineUnavailableError) as caught, engine.dask_client():
        pass
    assert "needs the 'dask' extra" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_dask_client_without_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.dataframe", None)
    with pytest.raises(EngineUnavailableError), engine.dask_client():
        pass
