"""Talking to one sandbox child directly (``sandbox._Child``), as the pool does, for the tests of
its pipe protocol."""

from __future__ import annotations

from whylogs_songbird.server import sandbox


def ask(child: sandbox._Child, kind: bytes, payload: bytes, wall_seconds: float) -> tuple[bytes, bytes]:
    """Send ``child`` one job; its answer (kind, payload) within ``wall_seconds``, past the ``S``
    frame it sends when it starts on the job. Raises OSError/EOFError/TimeoutError. The deadline is
    read from the clock the child's reads compare it with (``sandbox.time``: a test may set it)."""
    child.send(kind, [payload])
    deadline = sandbox.time.monotonic() + wall_seconds
    answer = child.frame(deadline)
    return child.frame(deadline) if answer == (b"S", b"") else answer
