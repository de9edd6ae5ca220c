"""Unexpected errors: answered with a 500 JSON message, logged without flooding the log.

The first time an error happens (its type and the line that raised it), its traceback is logged.
When the same error happens again, as it does on every request that reaches the same stored value,
one line says so, at most once a minute per error, with how many times it happened since: a
stranger repeating a failing request cannot fill the disk with tracebacks.

The app's edge (``middleware.EdgeMiddleware``) answers an exception no route handled with a 500
JSON message (:data:`UNEXPECTED_MESSAGE`) and reports it here.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass

#: The message of every 500 answer (the details are in the server's log, never in the answer).
UNEXPECTED_MESSAGE = "The local songbird server failed unexpectedly; see its log for the traceback."


@dataclass
class _Seen:
    last_logged: float
    since: int = 0


class RepeatedErrors:
    """Logs unexpected errors: a traceback the first time, then one line per ``interval`` seconds."""

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0, max_kinds: int = 256) -> None:
        self.logger = logger
        self.interval = interval
        self.max_kinds = max_kinds
        self._seen: OrderedDict[tuple[str, str], _Seen] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def kind(exc: BaseException) -> tuple[str, str]:
        """(exception type, ``file:line`` that raised it): what makes two errors "the same"."""
        frames = traceback.extract_tb(exc.__traceback__)
        place = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        return type(exc).__qualname__, place

    def report(self, exc: BaseException, doing: str = "answering a request") -> None:
        key = self.kind(exc)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                self._seen[key] = _Seen(last_logged=now)
                while len(self._seen) > self.max_kinds:
                    self._seen.popitem(last=False)
            else:
                self._seen.move_to_end(key)
                seen.since += 1
                if now - seen.last_logged < self.interval:
                    return
                times, seen.since, seen.last_logged = seen.since, 0, now
        if seen is None:
            self.logger.error("unexpected error while %s", doing, exc_info=exc)
        else:
            self.logger.error(
                "unexpected error again while %s: %s at %s, %d time(s) since it was last logged "
                "(its traceback was logged the first time)",
                doing,
                key[0],
                key[1],
                times,
            )


__all__ = ["UNEXPECTED_MESSAGE", "RepeatedErrors"]
