"""The operation counters (whylogs_songbird/server/counters.py) over a recording ``write``: counts kept
in memory, written in one batch, kept when a write fails, dropped by ``clear``, and written by the
background thread and on ``close``."""

from __future__ import annotations

import threading

import pytest

from whylogs_songbird.server.counters import OperationCounts

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/counters.py")


class Writes:
    """The store's side: every batch written, and a failure to give on demand."""

    def __init__(self) -> None:
        self.batches: list[dict[str, int]] = []
        self.fail = False
        self.written = threading.Event()

    def __call__(self, counts: dict[str, int]) -> None:
        if self.fail:
            raise OSError("the store is closed")
        self.batches.append(counts)
        self.written.set()


def test_counts_are_written_in_one_batch_and_kept_when_a_write_fails():
    writes = Writes()
    counts = OperationCounts(writes)
    writes.fail = True  # the background thread's writes fail too: nothing is written before the flush below
    for operation in ("upload", "upload", "timeline"):
        counts.count(operation)
    with pytest.raises(OSError):
        counts.flush()
    counts.count("upload")
    writes.fail = False
    counts.flush()
    assert writes.batches == [{"upload": 3, "timeline": 1}]
    counts.flush()  # nothing left: no empty write
    assert writes.batches == [{"upload": 3, "timeline": 1}]
    counts.close()


def test_cleared_counts_are_never_written_and_close_writes_what_is_left():
    writes = Writes()
    counts = OperationCounts(writes)
    writes.fail = True
    counts.count("upload")
    counts.clear()
    counts.count("page")
    writes.fail = False
    counts.close()
    assert writes.batches == [{"page": 1}]


def test_the_background_thread_writes_what_was_counted():
    writes = Writes()
    counts = OperationCounts(writes)
    counts.count("upload")
    assert writes.written.wait(30)
    assert writes.batches == [{"upload": 1}]
    counts.close()
    assert writes.batches == [{"upload": 1}]


def test_close_waits_for_the_writing_thread_at_most_five_seconds():
    waited: list[float | None] = []

    class Stuck:
        """A writing thread held in a write that does not return."""

        def join(self, timeout: float | None = None) -> None:
            waited.append(timeout)

    counts = OperationCounts(Writes())
    counts._flusher = Stuck()  # type: ignore[assignment]
    counts.close()
    assert waited == [5]
