"""Functions run in child processes (multiprocessing, spawn) by the cross-process tests.

Each child imports everything first, then for every barrier: waits on it (so all children start
that round's publish at the same moment) and puts ``(round, "ok", session_id)`` or
``(round, "error", text)`` on the result queue.
"""

from __future__ import annotations

import os
from typing import Any


def publish_in_rounds(barriers: list[Any], results: Any, profile_path: str, options: dict[str, Any]) -> None:
    os.environ["WHYLOGS_NO_ANALYTICS"] = "True"
    from whylogs_songbird import publish

    for round_, barrier in enumerate(barriers):
        barrier.wait(timeout=240)
        try:
            results.put((round_, "ok", publish(profile_path, **options).session_id))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results.put((round_, "error", f"{type(exc).__name__}: {exc}"))
