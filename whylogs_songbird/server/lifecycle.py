"""Deleting sessions, datasets and profiles: mark, then purge (see ``storage/deletion.py``).

:func:`delete_session`, :func:`delete_dataset` and their ``…_profile`` siblings mark in one
transaction (from then on every route reads the data as gone) and then purge what they marked: the
bytes first (every key under the session, or under the profile's upload ids: the recorded copies,
landed presigned PUTs and versions being written), then the rows. A purge that fails or is cut short
(a crash, a kill, a blob store that is down) is finished by :class:`PurgeWorker`, which every server
process runs: at start, and then every :data:`POLL_SECONDS`, it claims marked rows nobody holds (a
lease, so hosts sharing a store never purge the same session at once; a lost holder's lease runs
out) and purges them. Every step may be repeated, so finishing twice is harmless.

``SONGBIRD_TEST_KILL_AFTER_MARK=1`` in the server's environment makes the process kill itself
(SIGKILL) right after a mark is committed: the seam a crash-recovery test cuts at. Nothing else
reads it.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

from whylogs_songbird.server.background import PeriodicWorker
from whylogs_songbird.server.rollups import bump_version
from whylogs_songbird.server.storage.deletion import DeletionSql, PurgeItem
from whylogs_songbird.server.store import Store, now_ms

logger = logging.getLogger("whylogs_songbird.server.lifecycle")

#: How long a purge claim holds before another process may take the work over.
LEASE_MS = 5 * 60 * 1000
#: How often each process looks for marked data nobody is purging.
POLL_SECONDS = 30.0
#: Marked sessions or profiles claimed at a time.
BATCH = 10
#: Profiles or sessions marked per transaction by retention.
RETENTION_BATCH = 200
#: The test seam (see the module docstring).
KILL_AFTER_MARK_ENV = "SONGBIRD_TEST_KILL_AFTER_MARK"


def deletions(store: Store) -> DeletionSql:
    """The store's deletion statements (every metadata store of this server has them)."""
    return store.deletions()


def disk_usage(store: Store) -> dict[str, int]:
    """``{"stored_profiles": n, "stored_bytes": b}``: the profiles the store keeps bytes of."""
    profiles, total = deletions(store).stored_totals()
    return {"stored_profiles": profiles, "stored_bytes": total}


def _after_mark() -> None:
    if os.environ.get(KILL_AFTER_MARK_ENV) == "1":
        logger.warning("%s is set: killing this process after the mark", KILL_AFTER_MARK_ENV)
        os.kill(os.getpid(), signal.SIGKILL)


def delete_session(store: Store, session_id: str) -> bool:
    """Delete a guest session with everything it holds; False when it is unknown, claimed or
    already deleted (nothing is done). The mark is committed before this returns; the purge is
    done here too, and finished later by :class:`PurgeWorker` if it fails."""
    if not deletions(store).mark_session_deleted(session_id):
        return False
    logger.info("deleted a session")
    _after_mark()
    _purge_soon(store)
    return True


def delete_profile(store: Store, session_id: str, upload_id: str) -> bool:
    """Delete one profile (batch or reference, with the uploads that duplicate it) or one open
    upload slot of a guest session; False when the session or the upload is unknown, claimed or
    already deleted."""
    if not deletions(store).mark_upload_deleted(session_id, upload_id):
        return False
    bump_version(store, session_id)  # its stored timelines are out of date
    logger.info("deleted a profile")
    _after_mark()
    _purge_soon(store)
    return True


def delete_dataset(store: Store, org_id: str, dataset_id: str) -> bool:
    """Delete an organization's dataset (with its transactions) and everything it holds, as
    :func:`delete_session` does a session; False when it is unknown or already deleted. A later
    write to the same dataset id makes a new, empty dataset."""
    if not deletions(store).mark_dataset_deleted(org_id, dataset_id):
        return False
    logger.info("deleted a dataset of org %s", org_id)
    _after_mark()
    _purge_soon(store)
    return True


def delete_dataset_profile(store: Store, container_id: str, upload_id: str) -> bool:
    """Delete one profile (or open upload slot) of a dataset, by its container's id, as
    :func:`delete_profile` does a session's; False when it is unknown or already deleted."""
    if not deletions(store).mark_upload_deleted(container_id, upload_id, dataset=True):
        return False
    bump_version(store, container_id)  # its stored timelines are out of date
    logger.info("deleted a profile of a dataset")
    _after_mark()
    _purge_soon(store)
    return True


def _purge_soon(store: Store) -> None:
    try:
        finish_deletions(store)
    except Exception:  # the blob store may be down: the marks stand, the worker finishes later
        logger.warning("purging deleted data failed; it is retried in the background", exc_info=True)


def finish_deletions(store: Store, *, stop: Callable[[], bool] | None = None, lease_ms: int = LEASE_MS) -> int:
    """Purge every marked session and profile this process can claim; how many were purged."""
    done = 0
    while not (stop is not None and stop()):
        items = deletions(store).claim_purges(lease_ms=lease_ms, limit=BATCH)
        if not items:
            break
        for item in items:
            purge(store, item)
            done += 1
    return done


def purge(store: Store, item: PurgeItem) -> None:
    """Remove the bytes, then the rows, of one claimed item (idempotent)."""
    if item.kind == "session":
        store.delete_session_bytes(item.session_id)
        deletions(store).purge_session_rows(item.session_id)
        return
    for upload_id, path in item.uploads:
        store.delete_upload_bytes(item.session_id, upload_id, path)
    deletions(store).purge_upload_rows([upload_id for upload_id, _ in item.uploads])


def apply_retention(store: Store, retention_seconds: float, *, stop: Callable[[], bool] | None = None) -> int:
    """Mark deleted, in batches of :data:`RETENTION_BATCH`, every profile stored more than
    ``retention_seconds`` ago, then every session created before that which holds nothing any
    more (no profile, no valid upload URL); how many were marked. The purge is
    :func:`finish_deletions`'s."""
    cutoff = now_ms() - int(retention_seconds * 1000)
    marked = 0
    while not (stop is not None and stop()):
        batch = deletions(store).mark_expired(stored_before=cutoff, limit=RETENTION_BATCH)
        marked += batch
        if batch == 0:
            break
    while not (stop is not None and stop()):
        batch = deletions(store).mark_emptied_sessions(
            created_before=cutoff, open_after=now_ms() // 1000, limit=RETENTION_BATCH
        )
        marked += batch
        if batch < RETENTION_BATCH:
            break
    if marked:
        logger.info(
            "retention: marked %d profiles and sessions older than %g s for deletion", marked, retention_seconds
        )
    return marked


class PurgeWorker(PeriodicWorker):
    """A background thread finishing deletions left over by a crash or a failed purge (see the
    module docstring), and, with ``retention_seconds``, deleting what is older than that
    (:func:`apply_retention`); one per server process. Each pass marks and purges in short
    batches, each its own transaction, so requests are never held up."""

    name = "songbird-purge"
    failure = "finishing deletions failed; retrying later"

    def __init__(
        self, store: Store, *, poll_seconds: float = POLL_SECONDS, retention_seconds: float | None = None
    ) -> None:
        # a retention of seconds is swept about four times per retention period
        super().__init__(
            poll_seconds if retention_seconds is None else min(poll_seconds, max(0.5, retention_seconds / 4)),
            run_first=True,
        )
        self.store = store
        self.retention_seconds = retention_seconds

    def run_once(self) -> None:
        if self.retention_seconds is not None:
            apply_retention(self.store, self.retention_seconds, stop=self.stopping)
        finish_deletions(self.store, stop=self.stopping)
