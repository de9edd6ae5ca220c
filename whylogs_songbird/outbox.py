"""The outbox: profiles whose upload finally failed, kept on disk to deliver later.

An entry is two files in the outbox directory: ``<id>.bin`` (the serialized profile, written
first) and ``<id>.json`` (the upload intent, written atomically last; an entry without it is
incomplete and ignored). Flushing is a small state machine recorded in the JSON, so it is
idempotent: the upload slot is requested once and stored in the entry before the PUT, and a
rerun after an interruption PUTs to that same slot again, which replaces rather than adds.
A delivered entry is deleted. Only one flush runs at a time (a file lock).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from whylogs_songbird.config import Settings, make_client
from whylogs_songbird.errors import (
    AuthError,
    SongbirdApiError,
    SongbirdConnectionError,
    SongbirdError,
)
from whylogs_songbird.models import SegmentTag
from whylogs_songbird.session import GuestSession, SessionStore, write_json_atomic

logger = logging.getLogger(__name__)


def is_retryable(exc: BaseException) -> bool:
    """Would sending again later help? Yes for an unreachable or failing server, no for a refused profile."""
    if isinstance(exc, SongbirdConnectionError):
        return True
    if isinstance(exc, SongbirdApiError) and not isinstance(exc, AuthError):
        return exc.status >= 500 or exc.status in (408, 429)
    return False


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
    #: Set once a slot was requested: where the bytes go (so a rerun never asks twice).
    session_id: str | None = None
    upload_id: str | None = None
    upload_url: str | None = field(default=None, repr=False)
    observatory_url: str | None = None
    attempts: int = 0

    @property
    def label(self) -> str:
        return self.alias or f"batch {self.dataset_timestamp}"


@dataclass
class FlushReport:
    """What a flush did: delivered entries (with links) and entries still waiting (with why)."""

    delivered: list[OutboxEntry] = field(default_factory=list)
    failed: list[tuple[OutboxEntry, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class Outbox:
    """The outbox directory (``<config dir>/outbox`` unless configured otherwise)."""

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
        )
        if slot is not None:
            entry.session_id, entry.upload_id, entry.upload_url = slot
        data_path, _ = self._paths(entry.id)
        tmp = data_path.with_suffix(".bin.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, data_path)
        self._write(entry)
        return entry

    def _write(self, entry: OutboxEntry) -> None:
        write_json_atomic(self._paths(entry.id)[1], asdict(entry))

    def entries(self, endpoint: str | None = None) -> list[OutboxEntry]:
        """Complete entries, oldest first (optionally only those for ``endpoint``)."""
        found = []
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []:
            try:
                entry = OutboxEntry(**json.loads(path.read_text(encoding="utf-8")))
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

    def flush(self, settings: Settings, *, endpoint: str | None = None, lock_timeout: float = 0) -> FlushReport:
        """Deliver every entry (only those for ``endpoint`` if given), each to the endpoint and session
        it was meant for, with the transport ``settings`` (timeout, retries). Safe to interrupt and rerun."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.directory / ".flush.lock"), timeout=lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise SongbirdError(
                f"Another flush of {self.directory} is running; wait for it to finish and run flush again."
            ) from None
        report = FlushReport()
        sessions: dict[tuple[str, str | None], GuestSession] = {}
        try:
            for entry in self.entries(endpoint):
                key = (entry.endpoint, entry.pinned_session_id)
                if key not in sessions:
                    store = SessionStore.for_directory(settings.config_dir)
                    sessions[key] = GuestSession(make_client(settings, entry.endpoint), store, entry.pinned_session_id)
                try:
                    self._deliver(entry, sessions[key])
                except SongbirdError as exc:
                    entry.error = str(exc)
                    self._write(entry)
                    report.failed.append((entry, str(exc)))
                    logger.warning("outbox: %s not delivered yet: %s", entry.label, exc)
                    continue
                self.remove(entry)
                report.delivered.append(entry)
        finally:
            for session in sessions.values():
                session.client.close()
            lock.release()
        return report

    def _deliver(self, entry: OutboxEntry, session: GuestSession) -> None:
        data = self._paths(entry.id)[0].read_bytes()
        entry.attempts += 1
        if entry.upload_url:
            try:
                session.client.upload_profile(entry.upload_url, data)
                return
            except AuthError:
                # The slot's URL expired before this rerun: we cannot tell whether the earlier PUT
                # landed, so ask for a new slot (logged, since this is the one at-least-once case).
                logger.warning("outbox: upload URL of %s expired; requesting a new one", entry.label)
        self._request_slot(entry, session)
        self._write(entry)  # the slot is recorded before the PUT: a rerun PUTs to this same slot
        assert entry.upload_url is not None
        session.client.upload_profile(entry.upload_url, data)

    @staticmethod
    def _request_slot(entry: OutboxEntry, session: GuestSession) -> None:
        tags = [SegmentTag(key=k, value=v) for k, v in entry.segment_tags]

        def slot(session_id: str) -> tuple[str, Any]:
            if entry.kind == "reference":
                return session_id, session.client.create_reference_profile_upload(
                    session_id, alias=entry.alias, dataset_timestamp=entry.dataset_timestamp
                )
            return session_id, session.client.create_dataset_profile_upload(session_id, entry.dataset_timestamp, tags)

        session_id, response = session.call(slot)
        entry.session_id, entry.upload_id = session_id, response.id
        entry.upload_url, entry.observatory_url = response.upload_url, response.observatory_url
