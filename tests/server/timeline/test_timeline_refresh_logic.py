"""The background refresh of the server's timeline service (whylogs_songbird/server/timeline_service.py)
as logic: when a landed batch's session is refreshed, how refreshes are spaced by the CPU time the last
one took, what a failed refresh leaves, and what stopping the service does.

The service's `Background` seam is a fake here: the refresh loop runs in the test's own thread, by a
clock of the test's (every wait is recorded and only moves that clock), and a listing of a session's
profiles costs the CPU seconds the test gives it. Nothing sleeps and no wall-clock time is asserted;
the default `Background` (a daemon thread, the process's clocks) is checked on its own.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import whylogs as why
from whylogs.core import DatasetProfileView

from whylogs_songbird.monitors import Monitor, MonitorsFile
from whylogs_songbird.server.timeline_service import (
    MAX_REFRESH_WAIT,
    REFRESH_SPACING,
    WATCHED_KEY,
    Background,
    MemoryArtefacts,
    StoredProfile,
    TimelineService,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/timeline_service.py")

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
#: where the fake clock starts (monotonic seconds: may be as low as this just after a boot)
START = 0.0


@functools.cache
def rows(count: int) -> DatasetProfileView:
    return why.log(pd.DataFrame({"x": [float(i) for i in range(count)]})).view()


#: A scripted step of `FakeBackground.wait`: let the whole timeout pass on the fake clock.
ELAPSE = "elapse"


class FakeBackground:
    """The service's `Background`, run by the test: ``start`` keeps the loop for the test to call;
    each ``wait`` records its timeout and takes the next scripted step, with the lock released as a
    real wait does: `ELAPSE` (the timeout passes on the fake clock), or a call (a batch lands, the
    service is closed). A wait with no step left fails the test."""

    def __init__(self) -> None:
        self.clock = START
        self.cpu = 0.0
        self.started: list[Callable[[], None]] = []
        self.waits: list[float | None] = []
        self.steps: list[Any] = []
        self.joined: list[float | None] = []
        #: the service's lock, which the loop holds while it waits (its condition's)
        self.lock: Any = None

    def start(self, target: Callable[[], None]) -> FakeBackground:
        self.started.append(target)
        return self

    def join(self, timeout: float | None = None) -> None:
        self.joined.append(timeout)

    def now(self) -> float:
        return self.clock

    def cpu_time(self) -> float:
        return self.cpu

    def wait(self, wake: threading.Condition, timeout: float | None) -> None:
        assert self.lock is not None and self.lock.locked(), "waits holding the service's lock"
        self.waits.append(timeout)
        if not self.steps:
            raise AssertionError(f"the refresh loop waits again with nothing scripted: waits {self.waits}")
        step = self.steps.pop(0)
        wake.release()
        try:
            if step == ELAPSE:
                assert timeout is not None, "no timeout to let pass"
                self.clock += timeout
            else:
                step()
        finally:
            wake.acquire()


class Sessions:
    """Sessions of one batch each (``rows[session]`` rows, 3 when not given); listing one costs
    ``cost[session]`` seconds of CPU on the fake background and is recorded with the fake time."""

    def __init__(self, background: FakeBackground) -> None:
        self.background = background
        self.rows: dict[str, int] = {}
        self.cost: dict[str, float] = {}
        self.refreshed: list[tuple[str, float]] = []
        self.idle_while_listing: list[bool] = []
        self.service: TimelineService | None = None
        #: called while a session is listed (in the refresh: e.g. more batches land)
        self.while_listing: Callable[[str], object] = lambda session_id: None

    def list_profiles(self, session_id: str) -> list[StoredProfile]:
        self.refreshed.append((session_id, self.background.clock))
        assert self.service is not None
        self.idle_while_listing.append(self.service.idle())
        self.while_listing(session_id)
        self.background.cpu += self.cost.get(session_id, 0.0)
        if session_id == "broken":
            raise RuntimeError("the store went away")
        return [
            StoredProfile(
                id=f"{session_id}-b",
                kind="batch",
                dataset_timestamp=T0,
                alias=None,
                segment="",
                identity=f"{session_id}-b:sha:1",
                stored_at=0,
            )
        ]

    def load(self, profile: StoredProfile) -> DatasetProfileView:
        return rows(self.rows.get(profile.id[:-2], 3))

    def make(self, **options: Any) -> TimelineService:
        options.setdefault("monitors", at_most_3_rows())
        self.service = TimelineService(
            self.list_profiles,
            self.load,
            options.pop("cache", MemoryArtefacts()),
            background=self.background,
            **options,
        )
        self.background.lock = self.service._lock
        return self.service


def at_most_3_rows() -> MonitorsFile:
    return MonitorsFile(monitors=(Monitor(name="rows", columns=("x",), metric="count", max=3.5),))


def run(service: TimelineService, background: FakeBackground) -> None:
    """Run the refresh loop the service started, in this thread, until it returns."""
    assert len(background.started) == 1, "one refresh loop per service"
    background.started[0]()


def test_the_spacing_constants():
    # a refresh waits six times the CPU its last refresh took, ten seconds at most
    assert (REFRESH_SPACING, MAX_REFRESH_WAIT) == (6.0, 10.0)


def test_a_session_is_refreshed_again_only_after_six_times_its_last_refresh_s_cpu_at_most_ten_seconds():
    background = FakeBackground()
    sessions = Sessions(background)
    sessions.cost = {"large": 2.5, "small": 0.25}  # next due 15 s later, capped at 10; 1.5 s later
    service = sessions.make()
    service.batch_stored("large")
    service.batch_stored("small")
    assert len(background.started) == 1 and not service.idle()
    background.steps = [
        lambda: [service.batch_stored(s) for s in ("large", "small", "large")],  # two of large: one refresh
        ELAPSE,  # small is due at 1.5
        ELAPSE,  # large at 10
        service.close,
    ]
    run(service, background)
    assert sessions.refreshed == [("large", 0.0), ("small", 0.0), ("small", 1.5), ("large", 10.0)]
    assert background.waits == [None, 1.5, 8.5, None]
    assert service.idle() and background.joined == [30]
    assert service.latest_failures == {"large": [], "small": []}


def test_a_refresh_is_due_at_its_time_not_a_moment_later():
    background = FakeBackground()
    sessions = Sessions(background)
    sessions.cost = {"s1": 0.5}  # the next refresh of s1 is due 3 s after the last
    service = sessions.make()
    service.batch_stored("s1")
    background.steps = [lambda: service.batch_stored("s1"), ELAPSE, service.close]
    run(service, background)
    assert sessions.refreshed == [("s1", 0.0), ("s1", 3.0)]
    assert background.waits == [None, 3.0, None]


def test_batches_landing_during_a_refresh_schedule_exactly_one_more_at_its_time():
    background = FakeBackground()
    sessions = Sessions(background)
    sessions.cost = {"s1": 0.5}  # the next refresh of s1 is due 3 s after the last
    service = sessions.make()

    def lands_three(session_id: str) -> None:
        if len(sessions.refreshed) == 1:  # during the first refresh only
            for _ in range(3):
                service.batch_stored(session_id)

    sessions.while_listing = lands_three
    service.batch_stored("s1")
    background.steps = [ELAPSE, service.close]
    run(service, background)
    assert sessions.refreshed == [("s1", 0.0), ("s1", 3.0)]  # one more, not three, and not at once
    assert background.waits == [3.0, None]
    assert service.idle()


def test_the_first_waiting_session_that_is_due_goes_first():
    background = FakeBackground()
    sessions = Sessions(background)
    sessions.cost = {"a": 1.0, "b": 0.5, "c": 0.0}
    service = sessions.make()
    for session_id in ("a", "b", "c"):
        service.batch_stored(session_id)
    # a is next due at 6, b at 3, c at once; all three land again, in the order c, b, a
    background.steps = [lambda: [service.batch_stored(s) for s in "cba"], ELAPSE, ELAPSE, service.close]
    run(service, background)
    assert [s for s, _ in sessions.refreshed] == ["a", "b", "c", "c", "b", "a"]
    assert [t for _, t in sessions.refreshed] == [0.0, 0.0, 0.0, 0.0, 3.0, 6.0]
    assert background.waits == [None, 3.0, 3.0, None]


def test_a_failed_refresh_is_logged_spaced_like_any_other_and_the_loop_goes_on(caplog):
    background = FakeBackground()
    sessions = Sessions(background)
    sessions.cost = {"broken": 1.0}
    sessions.rows = {"busy": 6}
    service = sessions.make()
    service.batch_stored("broken")
    service.batch_stored("busy")
    background.steps = [lambda: service.batch_stored("broken"), ELAPSE, service.close]
    with caplog.at_level(logging.ERROR, logger="whylogs_songbird.server.timeline"):
        run(service, background)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["timeline: evaluating the monitors of session broken failed"] * 2
    assert [str(r.exc_info[1]) if r.exc_info else None for r in errors] == ["the store went away"] * 2
    assert sessions.refreshed == [("broken", 0.0), ("busy", 0.0), ("broken", 6.0)]
    assert background.waits == [None, 6.0, None]
    assert "broken" not in service.latest_failures
    assert [(f.monitor, f.value) for f in service.latest_failures["busy"]] == [("rows", 6)]
    assert service.idle()


def test_the_service_is_busy_while_it_refreshes_and_idle_after():
    background = FakeBackground()
    sessions = Sessions(background)
    service = sessions.make()
    assert service.idle()
    service.batch_stored("s1")
    assert not service.idle()  # waiting
    background.steps = [service.close]
    run(service, background)
    assert sessions.idle_while_listing == [False] and service.idle()


def test_closing_stops_the_loop_even_with_sessions_waiting_and_nothing_starts_after():
    background = FakeBackground()
    sessions = Sessions(background)
    sessions.cost = {"s1": 1.0}
    service = sessions.make()
    service.batch_stored("s1")
    background.steps = [lambda: service.batch_stored("s1"), service.close]
    run(service, background)
    # s1 landed again, due at 6: the service was closed while it waited
    assert sessions.refreshed == [("s1", 0.0)] and background.waits == [None, 6.0]
    assert background.joined == [30]
    assert not service.idle()  # s1 still waits: closed, it is never refreshed
    service.batch_stored("s2")
    run(service, background)  # no second loop; the one there returns at once
    assert sessions.refreshed == [("s1", 0.0)] and background.waits == [None, 6.0]


def test_a_service_closed_before_anything_landed_starts_nothing():
    background = FakeBackground()
    service = Sessions(background).make()
    service.close()
    assert background.joined == []
    service.batch_stored("s1")
    assert background.started == [] and service.idle()


def test_a_loop_started_after_closing_returns_at_once():
    background = FakeBackground()
    sessions = Sessions(background)
    service = sessions.make()
    service.batch_stored("s1")
    service.close()
    run(service, background)
    assert sessions.refreshed == [] and background.waits == []


def test_a_watched_view_is_refreshed_without_monitors_and_an_unwatched_session_not():
    background = FakeBackground()
    sessions = Sessions(background)
    cache = MemoryArtefacts()
    cache.put("seen", WATCHED_KEY, b'{"granularity": "hour"}')
    service = sessions.make(monitors=None, cache=cache)
    service.batch_stored("unseen")
    assert background.started == []
    service.batch_stored("seen")
    background.steps = [service.close]
    run(service, background)
    assert sessions.refreshed == [("seen", 0.0)]
    assert service.latest_failures == {"seen": []} and service.computed["points"] == 1


def test_an_upload_landing_bumps_the_version_and_only_a_batch_is_refreshed():
    background = FakeBackground()
    sessions = Sessions(background)
    sessions.rows = {"s1": 6}
    bumped: list[str] = []
    service = sessions.make(bump=bumped.append)
    service.upload_landed(SimpleNamespace(session_id="s1", kind="reference"))
    service.upload_landed(SimpleNamespace(session_id="s1"))  # a record without a kind: not a batch
    assert bumped == ["s1", "s1"] and background.started == [] and service.idle()
    service.upload_landed(SimpleNamespace(session_id="s1", kind="batch"))
    assert bumped == ["s1", "s1", "s1"] and not service.idle()
    background.steps = [service.close]
    run(service, background)
    assert [f.value for f in service.latest_failures["s1"]] == [6]
    # without a bump hook a landing still queues its batch
    other = Sessions(FakeBackground()).make()
    other.upload_landed(SimpleNamespace(session_id="s1", kind="batch"))
    assert not other.idle()


def test_sessions_refreshed_long_ago_are_forgotten_past_ten_thousand():
    background = FakeBackground()
    sessions = Sessions(background)
    service = sessions.make()
    # 9,998 sessions refreshed long ago, one due exactly now, one not due yet
    service._not_before = {f"old{i}": -50.0 for i in range(9_998)}
    service._not_before |= {"due-now": START, "later": START + 1}
    service.batch_stored("s1")
    background.steps = [lambda: service.batch_stored("s2"), service.close]
    run(service, background)
    # s1's refresh found 10,000 remembered (not more): all kept, s1 added; s2's found 10,001: those
    # due by now went (s1 and due-now too), then s2 was added
    assert service._not_before == {"later": START + 1, "s2": START}


def test_the_default_background_is_a_daemon_thread_on_the_process_clocks():
    background = Background()
    ran = threading.Event()
    thread = background.start(ran.set)
    thread.join(5)
    assert ran.is_set() and thread.name == "songbird-timeline" and thread.daemon
    before = time.monotonic()
    now = background.now()
    assert before <= now <= time.monotonic()
    before = time.thread_time()
    cpu = background.cpu_time()
    assert before <= cpu <= time.thread_time()


def test_the_default_background_waits_until_notified_or_for_its_timeout():
    background = Background()
    wake = threading.Condition()
    done: list[str] = []

    def waits(timeout: float | None) -> None:
        with wake:
            background.wait(wake, timeout)
        done.append(str(timeout))

    at_once = threading.Thread(target=waits, args=(0.0,), daemon=True)
    at_once.start()
    at_once.join(5)
    assert done == ["0.0"]  # a timeout of 0 returns without a notify
    woken = threading.Thread(target=waits, args=(None,), daemon=True)
    woken.start()
    for _ in range(500):  # notified until it returns (it may not be waiting yet)
        with wake:
            wake.notify_all()
        woken.join(0.01)
        if done[1:]:
            break
    assert done == ["0.0", "None"]
