"""The notification queue of the metadata stores (SQLite and PostgreSQL), in the shared SQL of ``sql.py``.

A notification is one message for one target about one monitor on one column, segment and bucket;
its ``id`` is a digest of exactly that (see ``server/notify.py``), so inserting it twice keeps the
first (``ON CONFLICT DO NOTHING``): one notification per target, monitor, column, segment and
bucket, ever, whichever worker or host found it.

A sender claims due notifications with a lease (``lease_until``), inside one write transaction:
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so senders on several hosts pass each other's rows by;
SQLite's write transactions (``BEGIN IMMEDIATE``) are already one at a time. A claimed
notification is sent by that sender alone until the lease runs out; a sender that dies mid-send
leaves it to be claimed again once the lease has passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from whylogs_songbird.server.storage.base import now_ms

#: The table, created with the others by ``sql.py`` (``CREATE TABLE IF NOT EXISTS``).
NOTIFICATIONS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS notifications (
    id           TEXT PRIMARY KEY,
    target       TEXT NOT NULL,
    url          TEXT NOT NULL,
    format       TEXT NOT NULL,
    secret_env   TEXT,
    event        TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    monitor      TEXT NOT NULL,
    column_name  TEXT NOT NULL,
    segment      TEXT NOT NULL,
    bucket_start {BIGINT} NOT NULL,
    body         TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts     {BIGINT} NOT NULL DEFAULT 0,
    created_at   {BIGINT} NOT NULL,
    retry_from   {BIGINT} NOT NULL,
    next_at      {BIGINT} NOT NULL,
    lease_until  {BIGINT},
    sent_at      {BIGINT},
    last_error   TEXT
)""",
    "CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_at)",
    # the latest bucket's numbers of each session, recorded when its monitors are evaluated (for /metrics)
    """CREATE TABLE IF NOT EXISTS metric_snapshots (
    session_id TEXT PRIMARY KEY,
    updated_at {BIGINT} NOT NULL,
    data       TEXT NOT NULL
)""",
)

STATES = ("pending", "sent", "failed")

_CLAIM = (
    "SELECT * FROM notifications WHERE state = 'pending' AND next_at <= ?"
    " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at, id LIMIT ?"
)
#: PostgreSQL: rows another sender is claiming are passed by, not waited for.
_CLAIM_POSTGRES = _CLAIM + " FOR UPDATE SKIP LOCKED"


@dataclass(frozen=True)
class NewNotification:
    """A notification to queue (``id``: its deduplication key). ``url`` may hold a secret (a Slack
    hook's path): it stays out of the repr, ``target`` names it."""

    id: str
    target: str
    url: str = field(repr=False)
    format: str
    secret_env: str | None
    event: str
    session_id: str
    monitor: str
    column: str
    segment: str
    bucket_start: int
    body: str


@dataclass(frozen=True, repr=False)
class NotificationRecord(NewNotification):
    """A queued notification as stored: what was queued, and its delivery so far."""

    state: str
    attempts: int
    created_at: int
    #: when the current retry period started (the first try, or the last ``alerts retry``)
    retry_from: int
    next_at: int
    lease_until: int | None
    sent_at: int | None
    last_error: str | None

    def __repr__(self) -> str:
        return f"NotificationRecord({self.id!r}, {self.target!r}, {self.event!r}, state={self.state!r})"


def _record(row: dict[str, Any]) -> NotificationRecord:
    values = dict(row)
    values["column"] = values.pop("column_name")
    return NotificationRecord(**values)


class NotificationQueueSql:
    """The notification methods of ``SqlMetadataStore`` (mixed into it; it supplies ``_transaction``,
    ``_exec``, ``_rowcount``, ``_query`` and ``dialect``)."""

    # supplied by SqlMetadataStore
    dialect: Any
    _transaction: Any
    _exec: Any
    _rowcount: Any
    _query: Any

    def enqueue_notifications(self, notifications: Sequence[NewNotification]) -> int:
        """Queue ``notifications``, keeping any already queued under the same id; how many were new."""
        if not notifications:
            return 0
        now = now_ms()
        added = 0
        with self._transaction() as conn:
            for n in notifications:
                added += self._rowcount(
                    conn,
                    "INSERT INTO notifications (id, target, url, format, secret_env, event, session_id, monitor,"
                    " column_name, segment, bucket_start, body, state, attempts, created_at, retry_from, next_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (n.id, n.target, n.url, n.format, n.secret_env, n.event, n.session_id, n.monitor, n.column,
                     n.segment, n.bucket_start, n.body, now, now, now),
                )  # fmt: skip
        return added

    def next_notification_due(self) -> int | None:
        """When the earliest pending notification is due (ms), None when none is pending (a read, no lock)."""
        rows = self._query("SELECT MIN(next_at) AS due FROM notifications WHERE state = 'pending'")
        due = rows[0]["due"] if rows else None
        return None if due is None else int(due)

    def claim_notifications(self, *, lease_ms: int, limit: int = 10) -> list[NotificationRecord]:
        """Claim up to ``limit`` due pending notifications for ``lease_ms``: no other sender takes them
        until then (or until :meth:`notification_sent` / :meth:`notification_failed`)."""
        now = now_ms()
        claimed: list[NotificationRecord] = []
        with self._transaction() as conn:
            rows = self._exec(conn, _CLAIM_POSTGRES if self.dialect.name == "postgresql" else _CLAIM, (now, now, limit))
            for row in rows:
                taken = self._rowcount(
                    conn,
                    "UPDATE notifications SET lease_until = ? WHERE id = ? AND state = 'pending'"
                    " AND (lease_until IS NULL OR lease_until < ?)",
                    (now + lease_ms, row["id"], now),
                )
                if taken:
                    row["lease_until"] = now + lease_ms
                    claimed.append(_record(row))
        return claimed

    def notification_sent(self, notification_id: str) -> bool:
        """Record a delivery (the claim ends)."""
        with self._transaction() as conn:
            return bool(
                self._rowcount(
                    conn,
                    "UPDATE notifications SET state = 'sent', sent_at = ?, attempts = attempts + 1, lease_until = NULL,"
                    " last_error = NULL WHERE id = ? AND state = 'pending'",
                    (now_ms(), notification_id),
                )
            )

    def notification_failed(self, notification_id: str, error: str, *, retry_at: int | None) -> bool:
        """Record a failed attempt: tried again at ``retry_at`` (ms), or given up (``failed``) when None."""
        state = "pending" if retry_at is not None else "failed"
        with self._transaction() as conn:
            return bool(
                self._rowcount(
                    conn,
                    "UPDATE notifications SET state = ?, attempts = attempts + 1, last_error = ?, next_at = ?,"
                    " lease_until = NULL WHERE id = ? AND state = 'pending'",
                    (state, error[:500], retry_at if retry_at is not None else now_ms(), notification_id),
                )
            )

    def list_notifications(self, state: str | None = None, *, limit: int = 100) -> list[NotificationRecord]:
        """Queued notifications, newest first (of one state when given)."""
        if state is None:
            rows = self._query("SELECT * FROM notifications ORDER BY created_at DESC, id LIMIT ?", (limit,))
        else:
            rows = self._query(
                "SELECT * FROM notifications WHERE state = ? ORDER BY created_at DESC, id LIMIT ?", (state, limit)
            )
        return [_record(r) for r in rows]

    def retry_notifications(self, ids: Sequence[str] = ()) -> int:
        """Make failed notifications (those of ``ids``, or all) pending and due now, with a fresh retry
        period; pending ones become due now. How many changed. A sent one is never sent again."""
        now = now_ms()
        with self._transaction() as conn:
            if ids:
                changed = 0
                for notification_id in ids:
                    changed += self._rowcount(
                        conn,
                        "UPDATE notifications SET state = 'pending', next_at = ?, retry_from = CASE WHEN state ="
                        " 'failed' THEN ? ELSE retry_from END WHERE id = ? AND state IN ('pending', 'failed')",
                        (now, now, notification_id),
                    )
                return changed
            return int(
                self._rowcount(
                    conn,
                    "UPDATE notifications SET state = 'pending', next_at = ?, retry_from = CASE WHEN state ="
                    " 'failed' THEN ? ELSE retry_from END WHERE state IN ('pending', 'failed')",
                    (now, now),
                )
            )

    # -- what /metrics reads (server/metrics.py) --

    def put_metric_snapshot(self, session_id: str, data: str) -> None:
        """Record the latest numbers of a session (JSON), replacing the previous ones."""
        with self._transaction() as conn:
            self._exec(
                conn,
                "INSERT INTO metric_snapshots (session_id, updated_at, data) VALUES (?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET updated_at = excluded.updated_at, data = excluded.data",
                (session_id, now_ms(), data),
            )

    def metric_snapshots(self, limit: int) -> list[tuple[str, str]]:
        """(session id, JSON) of the ``limit`` most recently updated sessions."""
        rows = self._query(
            "SELECT session_id, data FROM metric_snapshots ORDER BY updated_at DESC, session_id LIMIT ?", (limit,)
        )
        return [(r["session_id"], r["data"]) for r in rows]

    def stored_upload_counts(self) -> dict[str, int]:
        """Stored profiles by kind (batch, reference), over the whole store."""
        rows = self._query("SELECT kind, COUNT(*) AS n FROM uploads WHERE stored_at IS NOT NULL GROUP BY kind")
        counts = {"batch": 0, "reference": 0}
        counts.update({r["kind"]: int(r["n"]) for r in rows})
        return counts

    def notification_counts(self) -> dict[str, int]:
        """How many notifications are in each state (every state present, 0 when none)."""
        rows = self._query("SELECT state, COUNT(*) AS n FROM notifications GROUP BY state")
        counts = dict.fromkeys(STATES, 0)
        counts.update({r["state"]: int(r["n"]) for r in rows})
        return counts


__all__ = ["NOTIFICATIONS_SCHEMA", "STATES", "NewNotification", "NotificationQueueSql", "NotificationRecord"]
