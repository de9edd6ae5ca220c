"""Profile a Dask DataFrame on its cluster: whylogs on each partition, a merge tree of serialized profiles.

Each partition is profiled with ``why.log`` where it lives and serialized; the serialized
profiles are merged in groups of ``split_every`` on the workers, group after group, until one
is left (one per segment). Rows never leave the workers; only that last profile comes back to
this process, so its memory does not grow with the data.

With a ``distributed.Client`` active, the work runs on its cluster; without one, on Dask's
default scheduler in this process. Workers need ``whylogs-songbird`` installed (the tasks are its
functions). Needs the ``dask`` extra: ``pip install "whylogs-songbird[dask]"``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from whylogs.api.logger.result_set import ResultSet
from whylogs.core.view.dataset_profile_view import DatasetProfileView

from whylogs_songbird.engines._common import (
    PieceKey,
    ProgressCallback,
    Source,
    merge_bytes,
    missing_engine,
    profile_frame_bytes,
    result_set,
    segment_columns,
    timestamp_or_now,
)
from whylogs_songbird.errors import ConfigError

if TYPE_CHECKING:
    from dask.dataframe import DataFrame as DaskDataFrame
    from distributed import Client
else:
    DaskDataFrame = Any

logger = logging.getLogger(__name__)

#: How many profiles one merge task combines.
SPLIT_EVERY = 8
#: Block size of CSV partitions read by `profile_dask_source`.
CSV_BLOCKSIZE = "64MB"


def _require_dask() -> Any:
    try:
        import dask
        import dask.dataframe  # noqa: F401
    except ImportError as exc:
        raise missing_engine("dask", exc) from None
    return dask


def _current_client() -> Client | None:
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # no client in this process
        return None


def profile_dask(
    ddf: DaskDataFrame,
    *,
    segment_by: str | Sequence[str] | None = None,
    dataset_timestamp: datetime | int | None = None,
    split_every: int = SPLIT_EVERY,
    progress: ProgressCallback | None = None,
) -> ResultSet:
    """Profile a Dask DataFrame on the cluster and return what ``why.log`` returns for it.

    Args:
        ddf: the Dask DataFrame.
        segment_by: a column (or columns) to segment on; the result is then segmented, one profile
            per value.
        dataset_timestamp: the profiles' dataset timestamp (datetime or epoch ms); default now.
        split_every: how many profiles one merge task combines.
        progress: called as ``progress(done, total, "partitions")`` while partitions are profiled.

    Returns:
        a ``ViewResultSet`` (or a ``SegmentedResultSet``) for ``.writer("songbird")``.
    """
    dask = _require_dask()
    import dask.dataframe as dd

    if not isinstance(ddf, dd.DataFrame):
        raise ConfigError(
            f"profile_dask takes a dask DataFrame, not {type(ddf).__name__}; "
            "e.g. dask.dataframe.read_parquet(path) or dask.dataframe.from_pandas(df, npartitions=8)."
        )
    if split_every < 2:
        raise ConfigError(f"split_every must be at least 2, not {split_every}.")
    columns = segment_columns(segment_by, ddf.columns)
    stamp = timestamp_or_now(dataset_timestamp)
    partitions = ddf.to_delayed(optimize_graph=True)
    total = len(partitions)
    leaves = [dask.delayed(profile_frame_bytes, pure=True)(part, columns) for part in partitions]
    client = _current_client()
    logger.info(
        "profiling %d partitions on %s", total, f"the cluster at {client.scheduler.address}" if client else "dask"
    )
    if progress:
        progress(0, total, "partitions")
    if client is not None:
        pieces = _on_cluster(client, leaves, split_every, progress)
    else:
        pieces = _in_process(dask, leaves, split_every, progress)
    views = {key: DatasetProfileView.deserialize(data) for key, data in pieces.items()}
    return result_set(views, columns, stamp)


def _on_cluster(
    client: Client, leaves: list[Any], split_every: int, progress: ProgressCallback | None
) -> dict[PieceKey, bytes]:
    from distributed import as_completed

    level = client.compute(leaves)
    leaf_futures = list(level)
    while len(level) > 1:
        level = [
            client.submit(merge_bytes, *level[i : i + split_every], pure=False)
            for i in range(0, len(level), split_every)
        ]
    if progress:
        for done, _ in enumerate(as_completed(leaf_futures), 1):
            progress(done, len(leaf_futures), "partitions")
    del leaf_futures
    result: dict[PieceKey, bytes] = level[0].result()
    return result


def _in_process(
    dask: Any, leaves: list[Any], split_every: int, progress: ProgressCallback | None
) -> dict[PieceKey, bytes]:
    from dask.callbacks import Callback

    level = leaves
    while len(level) > 1:
        level = [
            dask.delayed(merge_bytes, pure=True)(*level[i : i + split_every]) for i in range(0, len(level), split_every)
        ]
    leaf_keys = {leaf.key for leaf in leaves}
    done = 0

    def count(key: Any, *_: Any) -> None:
        nonlocal done
        if key in leaf_keys:
            done += 1
            if progress:
                progress(done, len(leaf_keys), "partitions")

    with Callback(posttask=count):
        (result,) = dask.compute(level[0])
    return dict(result)


@contextlib.contextmanager
def dask_client() -> Iterator[Client]:
    """The cluster at ``DASK_SCHEDULER_ADDRESS`` (dask's ``scheduler-address`` setting) when set.

    Otherwise a local cluster of worker processes on 127.0.0.1 (no dashboard), stopped on exit.
    """
    dask = _require_dask()
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise missing_engine("dask", exc) from None
    address = dask.config.get("scheduler-address", None)
    if address:
        with Client(address) as client:
            yield client
        return
    with (
        LocalCluster(host="127.0.0.1", dashboard_address=None, processes=True, threads_per_worker=1) as cluster,
        Client(cluster) as client,
    ):
        yield client


def read_source(source: Source) -> DaskDataFrame:
    """A Dask DataFrame over the files of ``source`` (CSV in blocks of `CSV_BLOCKSIZE`)."""
    _require_dask()
    import dask.dataframe as dd

    files = [str(f) for f in source.files]
    if source.kind == "parquet":
        return dd.read_parquet(files)
    # Integers read as floats: a block with a missing value would otherwise not match the others.
    return dd.read_csv(files, sep=source.sep, blocksize=CSV_BLOCKSIZE, assume_missing=True)


def profile_dask_source(
    source: Source,
    *,
    segment_by: str | Sequence[str] | None = None,
    dataset_timestamp: datetime | int | None = None,
    progress: ProgressCallback | None = None,
) -> ResultSet:
    """Profile files with Dask: on the current client's cluster, else on one from `dask_client`."""
    timestamp_or_now(dataset_timestamp)
    ddf = read_source(source)
    segment_columns(segment_by, ddf.columns)
    if _current_client() is not None:
        return profile_dask(ddf, segment_by=segment_by, dataset_timestamp=dataset_timestamp, progress=progress)
    with dask_client():
        return profile_dask(ddf, segment_by=segment_by, dataset_timestamp=dataset_timestamp, progress=progress)


__all__ = ["dask_client", "profile_dask", "profile_dask_source", "read_source"]
