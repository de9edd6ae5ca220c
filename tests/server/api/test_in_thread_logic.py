"""The hot routes' hand-off to a worker thread (routes/deps.in_thread) as pure logic."""

import asyncio
import contextvars
import threading

import pytest

from whylogs_songbird.server.routes.deps import in_thread

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/routes/deps.py")

CALLER = contextvars.ContextVar("caller", default="none")


def test_the_call_runs_in_another_thread_with_the_caller_s_context():
    async def main() -> tuple[str, str, int]:
        CALLER.set("request 1")
        return await in_thread(lambda a, b: (CALLER.get(), a + b, threading.get_ident()), "x", "y")

    seen, joined, ident = asyncio.run(main())
    assert (seen, joined) == ("request 1", "xy") and ident != threading.get_ident()


def test_a_cancelled_caller_waits_for_its_call_to_end_then_is_cancelled():
    release, ended = threading.Event(), threading.Event()

    def slow() -> str:
        release.wait(20)
        ended.set()
        return "done"

    async def main() -> None:
        try:
            await cancelled_while_running()
        finally:
            release.set()  # a failing check leaves no thread waiting

    async def cancelled_while_running() -> None:
        task = asyncio.ensure_future(in_thread(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done(), "the caller waits while the call runs"
        task.cancel()  # cancelled again: still waiting
        await asyncio.sleep(0.05)
        assert not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended.is_set(), "the call ended before the cancellation went on"

    asyncio.run(main())


def test_an_error_of_the_call_reaches_the_caller():
    def failing() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="^no$"):
        asyncio.run(in_thread(failing))
