"""The outbox's storage: profiles whose upload finally failed, kept on disk to deliver later.

An entry is two files in the outbox directory: ``<id>.bin`` (the serialized profile, written
first) and ``<id>.json`` (the upload intent, written atomically last; an entry without it is
incomplete and ignored). This module is the storage only; delivery is
:mod:`whylogs_songbird.outbox.delivery`. A delivered entry is deleted. Only one flush runs at a
time (`OutboxStorage.flush_lock`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from filelock import FileLock, Timeout

from whylogs_songbird.atomic import write_bytes_atomic, write_json_atomic
from whylogs_songbird.errors import ConfigError, SongbirdError
from whylogs_songbird.models import SegmentTag
from whylogs_songbird.profiles import format_ms

logger = logging.getLogger(__name__)

__all__ = ["FlushReport", "OutboxEntry", "OutboxStorage"]


@dataclass
class OutboxEntry:
    """One undelivered profile and where it was going."""

    id: str
    endpoint: str
    kind: str  # "batch" or "reference"
    dataset_timestamp: int
    alias: str | None = None
    segment_tags: list[list[str]] = field(default_factory=list)
    created_at: float = 0.0
    error: str = ""
    size: int = 0
    #: The session the publish was pinned to (``session_id`` option), if any: flush goes there too.
    pinned_session_id: str | None = None
    #: In dataset mode, the organization and dataset the profile was published to: flush delivers
    #: it there, through the log API, with the API key of the flush's settings (never stored here).
    org_id: str | None = None
    dataset_id: str | None = None
    #: Set once a slot was requested: where the bytes go (so a rerun never asks twice).
    session_id: str | None = None
    upload_id: str | None = None
    upload_url: str | None = field(default=None, repr=False)
    observatory_url: str | None = None
    attempts: int = 0
    #: When a flush last tried to deliver it (epoch seconds), if ever.
    last_attempt_at: float | None = None

    @property
    def label(self) -> str:
        return self.alias or f"batch {format_ms(self.dataset_timestamp)}"


@dataclass
class FlushReport:
    """What a flush did: delivered entries (with links) and entries still waiting (with why)."""

    delivered: list[OutboxEntry] = field(default_factory=list)
    failed: list[tuple[OutboxEntry, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class OutboxStorage:
    """The outbox directory (``<config dir>/outbox`` unless configured otherwise): its entries'
    files and the flush lock. :class:`whylogs_songbird.outbox.Outbox` adds delivery."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _paths(self, entry_id: str) -> tuple[Path, Path]:
        return self.directory / f"{entry_id}.bin", self.directory / f"{entry_id}.json"

    def save(
        self,
        *,
        endpoint: str,
        kind: str,
        data: bytes,
        dataset_timestamp: int,
        alias: str | None,
        segment_tags: tuple[SegmentTag, ...],
        error: str,
        pinned_session_id: str | None = None,
        dataset: tuple[str, str] | None = None,
        slot: tuple[str | None, str | None, str] | None = None,
    ) -> OutboxEntry:
        """Keep one profile for later; returns the entry (its files are complete when this returns).

        ``slot`` is ``(session_id, upload_id, upload_url)`` when the failed publish already had an
        upload slot: flush PUTs to it first, so a PUT that did land (its answer lost) is replaced,
        not repeated.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = OutboxEntry(
            id=f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}",
            endpoint=endpoint,
            kind=kind,
            dataset_timestamp=dataset_timestamp,
            alias=alias,
            segment_tags=[[t.key, t.value] for t in segment_tags],
            created_at=time.time(),
            error=error,
            size=len(data),
            pinned_session_id=pinned_session_id,
            org_id=dataset[0] if dataset else None,
            dataset_id=dataset[1] if dataset else None,
        )
        if slot is not None:
            entry.session_id, entry.upload_id, entry.upload_url = slot
        data_path, _ = self._paths(entry.id)
        write_bytes_atomic(data_path, data)
        self._write(entry)
        return entry

    def write(self, entry: OutboxEntry) -> None:
        """Record ``entry``'s state (atomically)."""
        write_json_atomic(self._paths(entry.id)[1], asdict(entry))

    _write = write

    def read_bytes(self, entry: OutboxEntry) -> bytes:
        """The serialized profile of ``entry``."""
        return self._paths(entry.id)[0].read_bytes()

    def entries(self, endpoint: str | None = None) -> list[OutboxEntry]:
        """Complete entries, oldest first (optionally only those for ``endpoint``)."""
        found = []
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []:
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                entry = OutboxEntry(**{k: v for k, v in raw.items() if k in _ENTRY_FIELDS})
            except (ValueError, TypeError, OSError) as exc:
                logger.warning("outbox: skipping unreadable entry %s (%s)", path.name, exc)
                continue
            if not self._paths(entry.id)[0].is_file():
                logger.warning("outbox: entry %s has lost its profile file; skipping it", entry.id)
                continue
            if endpoint is None or entry.endpoint == endpoint:
                found.append(entry)
        return sorted(found, key=lambda e: (e.created_at, e.id))

    def __iter__(self) -> Iterator[OutboxEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def remove(self, entry: OutboxEntry) -> None:
        data_path, json_path = self._paths(entry.id)
        json_path.unlink(missing_ok=True)  # the commit marker goes first: no half-entry is ever listed
        data_path.unlink(missing_ok=True)

    def drop(self, entry_ids: Iterable[str] | None = None) -> list[OutboxEntry]:
        """Delete the entries with these ids (every entry if None); returns those deleted.

        An id that is not in the outbox raises `ConfigError` (bad input) before anything is deleted.
        """
        entries = self.entries()
        if entry_ids is None:
            chosen = entries
        else:
            wanted = list(dict.fromkeys(entry_ids))
            by_id = {e.id: e for e in entries}
            missing = [i for i in wanted if i not in by_id]
            if missing:
                raise ConfigError(
                    f"No outbox entry {', '.join(map(repr, missing))} in {self.directory}: "
                    "`songbird outbox list` shows the ids."
                )
            chosen = [by_id[i] for i in wanted]
        with self.flush_lock(0):
            for entry in chosen:
                self.remove(entry)
        return chosen

    @contextlib.contextmanager
    def flush_lock(self, timeout: float = 0) -> Iterator[None]:
        """Held while entries are delivered or dropped: one flush at a time."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.directory / ".flush.lock"), timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise SongbirdError(
                f"Another flush of {self.directory} is running; wait for it to finish and try again."
            ) from None
        try:
            yield
        finally:
            lock.release()


_ENTRY_FIELDS = frozenset(f.name for f in fields(OutboxEntry))
