"""Deletion in the SQL metadata stores: a tombstone first, then the rows.

Guest sessions are deleted by their id; an organization's dataset (a container row with a
``dataset_id``, which guests cannot reach) by its org and dataset id
(:meth:`DeletionSql.mark_dataset_deleted`), or one profile of it. Only guest sessions' profiles
expire (retention never touches a dataset).

A marked dataset row gets a tombstone name (``<dataset>/deleted/<row id>``, which no dataset id can
be, since none holds a ``/``), so the unique ``(org_id, dataset_id)`` index lets a later write make
the dataset afresh while the old row waits for its purge.

Deleting is two steps, so nothing half-deleted is ever shown:

1. **Mark** (:meth:`DeletionSql.mark_session_deleted`, :meth:`DeletionSql.mark_upload_deleted`): one
   transaction sets ``deleted_at`` on the session and all its uploads (or on one profile and the
   uploads that duplicate it). Every read of the stores (``get_session``, listings, lookups, the
   ingest claims, the landed-PUT look) skips rows with ``deleted_at``, so from this commit on the
   data is gone for every route and process.
2. **Purge**: a process claims marked rows for a while (:meth:`DeletionSql.claim_purges`, a lease
   in ``purge_lease``, so several hosts never work on the same one at once), removes their bytes
   from the blob store, then their rows (:meth:`DeletionSql.purge_session_rows`,
   :meth:`DeletionSql.purge_upload_rows`), each in one transaction. Every step may run again: a
   crash anywhere leaves marked rows, which the next claim (at the next start, or on any host once
   the lease has run out) finishes.

Removing rows never races the ingest worker into an error: every removal of upload rows locks
them first (:meth:`DeletionSql._lock_for_removal`, which says why), and the ingest stores no
summary for an upload marked deleted.

A mixin of :class:`~whylogs_songbird.server.storage.sql.SqlMetadataStore`: it uses its
``_transaction``, ``_exec``, ``_rowcount``, ``_query`` and ``dialect``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from whylogs_songbird.server.storage.base import SessionGoneError, is_valid_id, now_ms


@dataclass(frozen=True)
class PurgeItem:
    """A marked session (all of it) or a marked profile, claimed for purging."""

    kind: Literal["session", "upload"]
    session_id: str
    #: ``(upload id, blob key or None)`` of the marked uploads: every upload of a session, or the
    #: profile and its duplicates.
    uploads: tuple[tuple[str, str | None], ...] = ()


class DeletionSql:
    """The deletion statements (see the module docstring)."""

    dialect: Any  # provided by SqlMetadataStore

    if TYPE_CHECKING:  # provided by SqlMetadataStore

        def _transaction(self) -> contextlib.AbstractContextManager[Any]: ...
        def _exec(self, conn: Any, statement: str, params: Sequence[object] = ()) -> list[dict[str, Any]]: ...
        def _rowcount(self, conn: Any, statement: str, params: Sequence[object] = ()) -> int: ...
        def _query(self, statement: str, params: Sequence[object] = ()) -> list[dict[str, Any]]: ...

    def _lock_for_removal(self, conn: Any, *, session_id: str | None = None, upload_ids: Sequence[str] = ()) -> None:
        """Lock, until ``conn``'s transaction ends, the rows a removal is about to delete with their
        summaries: the session's row and all its uploads (``session_id``), or the uploads
        ``upload_ids``, each in id order.

        The ingest worker's write (``store_summaries``) updates an upload's row, which locks it,
        then inserts its summary, in one transaction. On PostgreSQL a removal interleaves with it:
        its DELETE of summaries does not see the summary not committed yet, its DELETE of the
        upload waits for the ingest's row lock, and once the ingest commits it breaks
        ``summaries_upload_id_fkey``. Locking the uploads first makes either order well defined:
        the removal waits for the ingest's commit, and its next statement (a new snapshot, READ
        COMMITTED) sees and deletes the summary; or it holds the rows first, and the ingest's
        UPDATE then finds no row and stores nothing. The session's row is locked before its
        uploads: FOR UPDATE conflicts with the key-share lock an insert referencing it takes, so
        an upload or setting being added to the session is waited for, and none is added until
        the removal commits (what is deleted is what was locked).

        Every transaction that writes several uploads takes them in id order: the ingest's claims
        and summaries, the heartbeat, the marks of a deletion (which lock with this first) and the
        removals, so no two of them deadlock (PostgreSQL would end one with an error). On SQLite
        ``BEGIN IMMEDIATE`` already keeps every other writer out; these are plain reads."""
        lock = self.dialect.for_update
        if session_id is not None:
            self._exec(conn, "SELECT id FROM sessions WHERE id = ?" + lock, (session_id,))  # noqa: S608 - a constant
            of_session = "SELECT id FROM uploads WHERE session_id = ? ORDER BY id" + lock  # noqa: S608 - a constant
            self._exec(conn, of_session, (session_id,))
        if upload_ids:
            marks = ", ".join("?" for _ in upload_ids)
            statement = f"SELECT id FROM uploads WHERE id IN ({marks}) ORDER BY id{lock}"  # noqa: S608 - placeholders only
            self._exec(conn, statement, tuple(upload_ids))

    def _require_live_session(self, conn: Any, session_id: str, *, exclusive: bool = False) -> None:
        """Before a write of rows referencing the session (uploads, settings): raise
        :class:`SessionGoneError` when it is marked deleted or gone, else keep it from being
        removed until ``conn``'s transaction ends (a key-share lock, which a removal's lock waits
        for, see :meth:`_lock_for_removal`); without it an insert after a purge broke the foreign
        key (an error, not an answer). A deletion marked meanwhile still goes on: what is written
        now is marked or removed with the rest. ``exclusive``: the transaction locks the session's
        row FOR UPDATE later (counting its slots), so it takes that lock now: two transactions
        holding key-share locks and each waiting to upgrade would deadlock."""
        lock = self.dialect.for_update if exclusive else self.dialect.key_share
        statement = "SELECT id FROM sessions WHERE id = ? AND deleted_at IS NULL" + lock  # noqa: S608 - a constant
        if not self._exec(conn, statement, (session_id,)):
            raise SessionGoneError(session_id)

    def _live_session(self, conn: Any, session_id: str) -> bool:
        """Whether the session exists and is not marked deleted (read inside ``conn``'s transaction)."""
        rows = self._exec(conn, "SELECT 1 AS one FROM sessions WHERE id = ? AND deleted_at IS NULL", (session_id,))
        return bool(rows)

    def mark_session_deleted(self, session_id: str) -> bool:
        """Mark a live guest session and all its uploads deleted, in one transaction; False when the
        session is unknown, claimed, or marked already."""
        if not is_valid_id(session_id, "session"):
            return False
        now = now_ms()
        with self._transaction() as conn:
            changed = self._rowcount(
                conn,
                "UPDATE sessions SET deleted_at = ?, purge_lease = NULL"
                " WHERE id = ? AND deleted_at IS NULL AND claimed_at IS NULL AND dataset_id IS NULL",
                (now, session_id),
            )
            if not changed:
                return False
            self._lock_for_removal(conn, session_id=session_id)  # in id order, as the ingest writes them
            self._exec(
                conn, "UPDATE uploads SET deleted_at = ? WHERE session_id = ? AND deleted_at IS NULL", (now, session_id)
            )
            self._exec(conn, "DELETE FROM derived WHERE session_id = ?", (session_id,))
            self._drop_notifications(conn, session_id)  # none is sent about a deleted session
        return True

    def mark_dataset_deleted(self, org_id: str, dataset_id: str) -> bool:
        """Mark an organization's dataset deleted, in one transaction: its container row (renamed to
        a tombstone name, freeing the dataset id), the containers of its transactions, all their
        uploads, derived artefacts, settings (schema, weights), notifications and metric snapshots.
        False when the dataset is unknown or marked already (nothing is done)."""
        prefix = f"{dataset_id}/transaction/"
        now = now_ms()
        with self._transaction() as conn:
            rows = self._exec(
                conn,
                "SELECT id, dataset_id FROM sessions WHERE org_id = ? AND deleted_at IS NULL"
                " AND (dataset_id = ? OR substr(dataset_id, 1, ?) = ?) ORDER BY id",
                (org_id, dataset_id, len(prefix), prefix),
            )
            if not any(row["dataset_id"] == dataset_id for row in rows):
                return False
            for row in rows:
                self._exec(
                    conn,
                    "UPDATE sessions SET deleted_at = ?, purge_lease = NULL, dataset_id = ? WHERE id = ?",
                    (now, f"{row['dataset_id']}/deleted/{row['id']}", row["id"]),
                )
                self._lock_for_removal(conn, session_id=row["id"])  # in id order, as the ingest writes them
                self._exec(
                    conn,
                    "UPDATE uploads SET deleted_at = ? WHERE session_id = ? AND deleted_at IS NULL",
                    (now, row["id"]),
                )
                self._exec(conn, "DELETE FROM derived WHERE session_id = ?", (row["id"],))
                self._exec(conn, "DELETE FROM dataset_settings WHERE session_id = ?", (row["id"],))
                self._drop_notifications(conn, row["id"])
        return True

    def _drop_notifications(self, conn: Any, session_id: str) -> None:
        """Remove the session's notifications (queued, failed and sent) and metric snapshots."""
        self._exec(conn, "DELETE FROM notifications WHERE session_id = ?", (session_id,))
        self._exec(conn, "DELETE FROM metric_snapshots WHERE session_id = ?", (session_id,))

    def mark_upload_deleted(self, session_id: str, upload_id: str, *, dataset: bool = False) -> bool:
        """Mark one profile (or open upload slot) of a live guest session deleted, with every
        upload that duplicates it (they are the same profile), and drop the session's derived
        artefacts, in one transaction. A duplicate's id names its original. False when the
        session or the upload is unknown, claimed, or marked already. With ``dataset``,
        ``session_id`` is a dataset's container (and only a container is accepted)."""
        upload_ok = is_valid_id(upload_id, "log") or is_valid_id(upload_id, "ref")
        if not (is_valid_id(session_id, "session") and upload_ok):
            return False
        now = now_ms()
        with self._transaction() as conn:
            rows = self._exec(
                conn,
                "SELECT uploads.id, uploads.duplicate_of FROM uploads JOIN sessions ON sessions.id = uploads.session_id"  # noqa: S608 - constants
                " WHERE uploads.id = ? AND uploads.session_id = ? AND uploads.deleted_at IS NULL"
                " AND sessions.deleted_at IS NULL AND sessions.claimed_at IS NULL AND "
                + ("sessions.dataset_id IS NOT NULL" if dataset else "sessions.dataset_id IS NULL"),
                (upload_id, session_id),
            )
            if not rows:
                return False
            target = rows[0]["duplicate_of"] or rows[0]["id"]
            stamps = self._exec(
                conn,
                "SELECT DISTINCT dataset_timestamp FROM uploads WHERE session_id = ? AND (id = ? OR duplicate_of = ?)"
                " AND deleted_at IS NULL AND dataset_timestamp IS NOT NULL",
                (session_id, target, target),
            )
            changed = self._rowcount(
                conn,
                "UPDATE uploads SET deleted_at = ?, purge_lease = NULL"
                " WHERE session_id = ? AND (id = ? OR duplicate_of = ?) AND deleted_at IS NULL",
                (now, session_id, target, target),
            )
            self._drop_derived_of(conn, session_id, [int(row["dataset_timestamp"]) for row in stamps])
        return bool(changed)

    def _drop_derived_of(self, conn: Any, session_id: str, timestamps: Sequence[int]) -> None:
        """Drop what the session's derived artefacts hold of profiles of ``timestamps``: everything but
        the rollups of other hours and days (``rollups.py``), which stay, so the next view merges only
        the deleted profiles' buckets again."""
        from whylogs_songbird.server.rollups import ROLLUP_PREFIX, bucket_prefixes  # the key format's home

        self._exec(
            conn,
            "DELETE FROM derived WHERE session_id = ? AND key NOT LIKE ?",
            (session_id, ROLLUP_PREFIX + "%"),
        )
        for timestamp in timestamps:
            for prefix in bucket_prefixes(timestamp):  # digits and slashes only: no LIKE wildcard in them
                self._exec(conn, "DELETE FROM derived WHERE session_id = ? AND key LIKE ?", (session_id, prefix + "%"))

    def mark_expired(self, *, stored_before: int, limit: int) -> int:
        """Retention: mark deleted up to ``limit`` profiles stored before ``stored_before`` (epoch
        ms), each with the uploads that duplicate it, in one transaction; how many were marked.
        Several processes may run it at once: a row is marked once (``deleted_at IS NULL``)."""
        now = now_ms()
        with self._transaction() as conn:
            rows = self._exec(
                conn,
                "SELECT uploads.id, uploads.session_id FROM uploads JOIN sessions ON sessions.id = uploads.session_id"
                " WHERE uploads.stored_at IS NOT NULL AND uploads.stored_at < ? AND uploads.duplicate_of IS NULL"
                " AND uploads.deleted_at IS NULL AND sessions.deleted_at IS NULL AND sessions.claimed_at IS NULL"
                " AND sessions.dataset_id IS NULL ORDER BY uploads.stored_at, uploads.id LIMIT ?",
                (stored_before, limit),
            )
            # the profiles the ingest may be writing, locked in its order (their duplicates it never writes)
            self._lock_for_removal(conn, upload_ids=[row["id"] for row in rows])
            marked = 0
            for row in rows:
                marked += self._rowcount(
                    conn,
                    "UPDATE uploads SET deleted_at = ?, purge_lease = NULL"
                    " WHERE session_id = ? AND (id = ? OR duplicate_of = ?) AND deleted_at IS NULL",
                    (now, row["session_id"], row["id"], row["id"]),
                )
            for session_id in sorted({row["session_id"] for row in rows}):
                self._exec(conn, "DELETE FROM derived WHERE session_id = ?", (session_id,))
        return marked

    def mark_emptied_sessions(self, *, created_before: int, open_after: int, limit: int) -> int:
        """Retention: mark deleted up to ``limit`` guest sessions created before ``created_before``
        (epoch ms) that hold nothing any more: no profile, and no upload slot whose URL is still
        valid after ``open_after`` (unix seconds). How many were marked."""
        now = now_ms()
        with self._transaction() as conn:
            rows = self._exec(
                conn,
                "SELECT id FROM sessions WHERE deleted_at IS NULL AND claimed_at IS NULL AND dataset_id IS NULL"
                " AND created_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM uploads WHERE uploads.session_id = sessions.id"
                " AND uploads.deleted_at IS NULL AND (uploads.stored_at IS NOT NULL OR uploads.expires_at >= ?))"
                " ORDER BY created_at, id LIMIT ?",
                (created_before, open_after, limit),
            )
            for row in rows:
                self._exec(
                    conn,
                    "UPDATE sessions SET deleted_at = ?, purge_lease = NULL WHERE id = ? AND deleted_at IS NULL",
                    (now, row["id"]),
                )
                self._exec(
                    conn,
                    "UPDATE uploads SET deleted_at = ? WHERE session_id = ? AND deleted_at IS NULL",
                    (now, row["id"]),
                )
                self._drop_notifications(conn, row["id"])
        return len(rows)

    def stored_totals(self) -> tuple[int, int]:
        """``(profiles, bytes)`` the store holds: profiles with bytes of their own, not deleted
        (what retention keeps bounded)."""
        rows = self._query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS total FROM uploads"
            " WHERE stored_at IS NOT NULL AND path IS NOT NULL AND deleted_at IS NULL"
        )
        return int(rows[0]["n"]), int(rows[0]["total"])

    def claim_purges(self, *, lease_ms: int, limit: int = 10) -> list[PurgeItem]:
        """Claim up to ``limit`` marked sessions and profiles nobody holds (or whose holder's lease
        ran out) for ``lease_ms``: what this process is to purge now."""
        now = now_ms()
        items: list[PurgeItem] = []
        with self._transaction() as conn:
            sessions = self._exec(
                conn,
                "SELECT id FROM sessions WHERE deleted_at IS NOT NULL AND (purge_lease IS NULL OR purge_lease < ?)"
                " ORDER BY deleted_at, id LIMIT ?",
                (now, limit),
            )
            for row in sessions:
                if self._rowcount(
                    conn,
                    "UPDATE sessions SET purge_lease = ? WHERE id = ? AND (purge_lease IS NULL OR purge_lease < ?)",
                    (now + lease_ms, row["id"], now),
                ):
                    uploads = self._exec(
                        conn, "SELECT id, path FROM uploads WHERE session_id = ? ORDER BY id", (row["id"],)
                    )
                    items.append(PurgeItem("session", row["id"], tuple((u["id"], u["path"]) for u in uploads)))
            left = limit - len(items)
            if left > 0:
                # profiles marked in a live session (a marked session's are purged with it)
                uploads = self._exec(
                    conn,
                    "SELECT uploads.* FROM uploads JOIN sessions ON sessions.id = uploads.session_id"
                    " WHERE uploads.deleted_at IS NOT NULL AND sessions.deleted_at IS NULL"
                    " AND (uploads.purge_lease IS NULL OR uploads.purge_lease < ?)"
                    " ORDER BY uploads.deleted_at, uploads.id LIMIT ?",
                    (now, left),
                )
                for upload in uploads:
                    if self._rowcount(
                        conn,
                        "UPDATE uploads SET purge_lease = ? WHERE id = ? AND (purge_lease IS NULL OR purge_lease < ?)",
                        (now + lease_ms, upload["id"], now),
                    ):
                        items.append(PurgeItem("upload", upload["session_id"], ((upload["id"], upload["path"]),)))
        return items

    def release_purge_claims(self) -> int:
        """End every purge claim (at start, when no purge runs: claims of a crashed server)."""
        with self._transaction() as conn:
            return self._rowcount(
                conn, "UPDATE sessions SET purge_lease = NULL WHERE deleted_at IS NOT NULL AND purge_lease IS NOT NULL"
            ) + self._rowcount(
                conn, "UPDATE uploads SET purge_lease = NULL WHERE deleted_at IS NOT NULL AND purge_lease IS NOT NULL"
            )

    def marked_deleted(self) -> int:
        """How many sessions and profiles are marked deleted and not purged yet."""
        rows = self._query(
            "SELECT (SELECT COUNT(*) FROM sessions WHERE deleted_at IS NOT NULL)"
            " + (SELECT COUNT(*) FROM uploads WHERE deleted_at IS NOT NULL) AS n"
        )
        return int(rows[0]["n"])

    def purge_session_rows(self, session_id: str) -> bool:
        """Remove every row of a marked session or dataset (summaries, derived artefacts, settings,
        notifications, uploads, the row itself), in one transaction; False when it is not marked
        (nothing is removed)."""
        with self._transaction() as conn:
            marked = "SELECT 1 AS one FROM sessions WHERE id = ? AND deleted_at IS NOT NULL"
            if not self._exec(conn, marked, (session_id,)):
                return False
            self._lock_for_removal(conn, session_id=session_id)
            self._exec(
                conn,
                "DELETE FROM summaries WHERE upload_id IN (SELECT id FROM uploads WHERE session_id = ?)",
                (session_id,),
            )
            self._exec(conn, "DELETE FROM derived WHERE session_id = ?", (session_id,))
            self._exec(conn, "DELETE FROM dataset_settings WHERE session_id = ?", (session_id,))
            self._drop_notifications(conn, session_id)
            self._exec(conn, "DELETE FROM uploads WHERE session_id = ?", (session_id,))
            self._exec(conn, "DELETE FROM sessions WHERE id = ?", (session_id,))
        return True

    def purge_upload_rows(self, upload_ids: Sequence[str]) -> int:
        """Remove the rows (and summaries) of these marked uploads in one transaction; how many."""
        removed = 0
        with self._transaction() as conn:
            self._lock_for_removal(conn, upload_ids=upload_ids)
            for upload_id in upload_ids:
                self._exec(
                    conn,
                    "DELETE FROM summaries WHERE upload_id IN"
                    " (SELECT id FROM uploads WHERE id = ? AND deleted_at IS NOT NULL)",
                    (upload_id,),
                )
                removed += self._rowcount(
                    conn, "DELETE FROM uploads WHERE id = ? AND deleted_at IS NOT NULL", (upload_id,)
                )
        return removed
