"""The outbox: profiles whose upload finally failed, kept on disk to deliver later.

:mod:`~whylogs_songbird.outbox.storage` keeps the entries (two files each, the JSON written
last); :mod:`~whylogs_songbird.outbox.delivery` delivers them (`flush_outbox`). :class:`Outbox`
is both: the directory, with :meth:`Outbox.flush`.
"""

from __future__ import annotations

from whylogs_songbird.config import Settings

# ``is_retryable`` moved to ``whylogs_songbird.errors``; importing it from here keeps working for one release.
from whylogs_songbird.errors import is_retryable
from whylogs_songbird.outbox.delivery import flush_outbox
from whylogs_songbird.outbox.storage import FlushReport, OutboxEntry, OutboxStorage


class Outbox(OutboxStorage):
    """The outbox directory (``<config dir>/outbox`` unless configured otherwise): its entries and their delivery."""

    def flush(self, settings: Settings, *, endpoint: str | None = None, lock_timeout: float = 0) -> FlushReport:
        """Deliver the entries (only those for ``endpoint`` if given); see :func:`flush_outbox`."""
        return flush_outbox(self, settings, only_for=endpoint, lock_timeout=lock_timeout)


__all__ = ["FlushReport", "Outbox", "OutboxEntry", "OutboxStorage", "flush_outbox", "is_retryable"]
