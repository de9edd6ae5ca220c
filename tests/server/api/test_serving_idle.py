"""An idle server's event loop wakes once a second, not ten times (issue 27: idle servers use no
CPU), and still answers with a current ``Date`` header and stops when told. A real server on a
loopback port."""

from __future__ import annotations

import email.utils
import time

import requests

from whylogs_songbird.server.in_process import LocalServer
from whylogs_songbird.server.serving import Server


def test_an_idle_server_ticks_once_a_second_and_stops_when_told(tmp_path):
    server = LocalServer(data_dir=tmp_path / "data").start()
    try:
        running, thread = server._server, server._thread
        assert isinstance(running, Server) and thread is not None
        ticks: list[int] = []
        real_tick = running.on_tick

        async def counted(counter: int) -> bool:
            ticks.append(counter)
            return await real_tick(counter)

        running.on_tick = counted  # type: ignore[method-assign]
        started = time.monotonic()
        time.sleep(2.5)
        watched = time.monotonic() - started
        assert len(ticks) <= watched + 2, ticks  # uvicorn's own loop ticks ten times a second
        assert all(counter % 10 == 0 for counter in ticks), "each tick refreshes the Date header"
        answer = requests.get(f"{server.url}/healthz", timeout=10)
        date = email.utils.parsedate_to_datetime(answer.headers["date"])
        assert abs(date.timestamp() - time.time()) < 60
    finally:
        server.stop()
    assert running.should_exit and not thread.is_alive()
