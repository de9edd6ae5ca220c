"""Delivering the outbox: each kept profile to the endpoint and session (or dataset) it was meant for.

Delivery is a small state machine recorded in each entry's JSON, so it is idempotent: the upload
slot is requested once and stored in the entry before the PUT, and a rerun after an interruption
PUTs to that same slot again, which replaces rather than adds. A delivered entry is deleted.
Slots are asked for the way a publish asks (:func:`whylogs_songbird.session.request_slot`).
"""

from __future__ import annotations

import logging
import time

from whylogs_songbird.config import Settings
from whylogs_songbird.connect import make_client
from whylogs_songbird.errors import AuthError, SongbirdError
from whylogs_songbird.models import SegmentTag
from whylogs_songbird.outbox.storage import FlushReport, OutboxEntry, OutboxStorage
from whylogs_songbird.session import DatasetTarget, GuestSession, Kind, SessionStore, Target, request_slot

logger = logging.getLogger(__name__)


def flush_outbox(
    outbox: OutboxStorage,
    settings: Settings,
    *,
    only_for: str | None = None,
    retarget: str | None = None,
    lock_timeout: float = 0,
) -> FlushReport:
    """Deliver the outbox's entries, each to the endpoint and session it was meant for; safe to interrupt and rerun.

    ``only_for`` delivers only the entries saved for that endpoint. ``retarget`` sends them to
    another endpoint instead (for entries saved for an endpoint that no longer exists): they get
    new upload slots there, in that endpoint's stored session. The transport ``settings``
    (timeout, retries) apply to every request. An entry saved in dataset mode goes to its dataset,
    with the API key of ``settings`` (the outbox never stores a key).
    """
    outbox.directory.mkdir(parents=True, exist_ok=True)
    report = FlushReport()
    sessions: dict[tuple[str, str | None, str | None, str | None], Target] = {}
    with outbox.flush_lock(lock_timeout):
        try:
            for entry in outbox.entries(only_for):
                if retarget is not None and entry.endpoint != retarget:
                    entry.endpoint, entry.pinned_session_id = retarget, None
                    entry.session_id = entry.upload_id = entry.upload_url = entry.observatory_url = None
                    outbox.write(entry)
                key = (entry.endpoint, entry.pinned_session_id, entry.org_id, entry.dataset_id)
                if key not in sessions:
                    store = SessionStore.for_directory(settings.config_dir)
                    client = make_client(settings, entry.endpoint)
                    sessions[key] = (
                        DatasetTarget(client, store, entry.org_id, entry.dataset_id)
                        if entry.org_id and entry.dataset_id
                        else GuestSession(client, store, entry.pinned_session_id)
                    )
                try:
                    _deliver(outbox, entry, sessions[key])
                except SongbirdError as exc:
                    entry.error = str(exc)
                    outbox.write(entry)
                    report.failed.append((entry, str(exc)))
                    logger.warning("outbox: %s not delivered yet: %s", entry.label, exc)
                    continue
                outbox.remove(entry)
                report.delivered.append(entry)
        finally:
            for session in sessions.values():
                session.client.close()
    return report


def _deliver(outbox: OutboxStorage, entry: OutboxEntry, session: Target) -> None:
    data = outbox.read_bytes(entry)
    entry.attempts += 1
    entry.last_attempt_at = time.time()
    if entry.upload_url:
        try:
            session.client.upload_profile(entry.upload_url, data)
            return
        except AuthError:
            # The slot's URL expired before this rerun: we cannot tell whether the earlier PUT
            # landed, so ask for a new slot (logged, since this is the one at-least-once case).
            logger.warning("outbox: upload URL of %s expired; requesting a new one", entry.label)
    tags = [SegmentTag(key=k, value=v) for k, v in entry.segment_tags]
    kind: Kind = "reference" if entry.kind == "reference" else "batch"
    session_id, response = request_slot(session, kind, entry.dataset_timestamp, segment_tags=tags, alias=entry.alias)
    entry.session_id, entry.upload_id = session_id, response.id
    entry.upload_url, entry.observatory_url = response.upload_url, response.observatory_url
    outbox.write(entry)  # the slot is recorded before the PUT: a rerun PUTs to this same slot
    session.client.upload_profile(entry.upload_url, data)


__all__ = ["flush_outbox"]
