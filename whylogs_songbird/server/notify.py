"""Notifications of failed (and resolved) monitors: the ``[[notify]]`` tables of the monitors file.

- :class:`Notifier` turns each evaluation of a session's monitors (the timeline service runs them
  in its background thread when a batch lands) into notifications, queued in the store under a key
  of (target, event, session, monitor, column, segment, bucket): one per key, ever, whichever
  worker or host finds it first (see ``storage/notifications.py``).
- :class:`NotificationSender` is a thread of its own in every server process: it claims due
  notifications in the store (a lease), POSTs them with short timeouts, and retries failures (5xx,
  408, 429, a refused connection, a timeout) with exponential backoff, from
  ``notify_backoff_seconds`` doubling up to ``notify_backoff_max_seconds``, for
  ``notify_retry_seconds`` (24 h) after the first try. Other 4xx answers are not retried (the
  target is wrong); ``songbird alerts retry`` sends them again. A receiver that hangs only holds
  this thread, never a request or the ingest worker.

The body is JSON (``format = "json"``) or Slack's incoming-webhook ``text`` plus ``blocks``
(``format = "slack"``); with ``secret_env``, the header ``X-Songbird-Signature: sha256=<hex>`` is
the HMAC-SHA256 of the body under the secret in that environment variable.

Webhook URLs often hold a secret (Slack's do): they are never logged; the store keeps them to
send, and shows only ``target`` (scheme and host).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import requests

from whylogs_songbird.monitors import MonitorsError, MonitorsFile, NotifyTarget
from whylogs_songbird.server.config import shared_address
from whylogs_songbird.server.datasets import LINK_TTL_SECONDS, dataset_of, new_link_token, pages_path
from whylogs_songbird.server.signing import UrlSigner
from whylogs_songbird.server.storage.base import now_ms
from whylogs_songbird.server.storage.notifications import NewNotification, NotificationQueueSql, NotificationRecord

if TYPE_CHECKING:
    from fastapi import FastAPI

    from whylogs_songbird.server.config import ServerConfig
    from whylogs_songbird.server.store import Store
    from whylogs_songbird.server.timeline_service import TimelineService

logger = logging.getLogger("whylogs_songbird.server.notify")

SIGNATURE_HEADER = "X-Songbird-Signature"
EVENTS = {"failed": "monitor_failed", "resolved": "monitor_resolved"}
#: Seconds between a sender's looks at the queue when nothing of its own process woke it (the
#: server's ``notify_idle_seconds``).
IDLE_SECONDS = 30.0
#: (connect, read) seconds of one delivery attempt.
TIMEOUT = (3.05, 10.0)
#: How long a claim holds a notification: far longer than one attempt can take.
LEASE_MS = 120_000
#: Answers that are retried; any other non-2xx answer fails the notification until retried by hand.
RETRIED_STATUSES = frozenset({408, 425, 429})


def check_targets(
    monitors: MonitorsFile | None, environ: Mapping[str, str] | None = None, *, smtp_url: str | None = None
) -> None:
    """Raise `MonitorsError` when a ``[[notify]]`` table's ``secret_env`` names an unset variable, or
    one sends email and the server has no ``--smtp-url``."""
    if monitors is None:
        return
    env = os.environ if environ is None else environ
    for index, target in enumerate(monitors.notify, start=1):
        if target.email is not None and not smtp_url:
            raise MonitorsError(
                f"[[notify]] table {index} sends email: start the server with --smtp-url smtp://USER@HOST:PORT "
                "(or $SONGBIRD_SMTP_URL)"
            )
        if target.secret_env and not env.get(target.secret_env):
            raise MonitorsError(
                f"[[notify]] table {index}: secret_env names {target.secret_env}, which is not set in the server's "
                "environment; set it to the shared secret of the receiver, or remove secret_env"
            )


def queue_of(metadata: object) -> NotificationQueueSql:
    """The notification queue of a metadata store (every SQL store has one)."""
    if not isinstance(metadata, NotificationQueueSql):
        raise TypeError(f"{type(metadata).__name__} keeps no notifications")
    return metadata


def target_key(target: NotifyTarget) -> str:
    """A short stable name of a target (a digest: the URL itself may be a secret)."""
    return hashlib.sha256(f"{target.format}\n{destination(target)}".encode()).hexdigest()[:16]


def destination(target: NotifyTarget) -> str:
    """Where a target's notifications go: its URL, or ``mailto:`` its addresses."""
    return target.url if target.url is not None else "mailto:" + ",".join(target.email or ())


def notification_id(target: NotifyTarget, event: str, session_id: str, alert: Mapping[str, Any], segment: str) -> str:
    """The deduplication key of one notification."""
    parts = [target_key(target), event, session_id, alert["monitor"], alert["column"], segment, int(alert["start"])]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def timeline_link(
    base_url: str,
    session_id: str,
    granularity: str,
    segment: str,
    bucket_start: int,
    *,
    dataset: tuple[str, str] | None = None,
    token: str | None = None,
) -> str:
    """The timeline page at a bucket: a guest session's (its id in the path is what opens it), or
    with ``dataset`` (org, dataset) an organization's dataset's, opened by ``token`` (a signed,
    expiring ``datasets.link_token``)."""
    params = {"granularity": granularity}
    if segment:
        params["segment"] = segment
    if dataset is not None:
        if token:
            params["token"] = token
        path = f"{pages_path(*dataset)}/timeline"
    else:
        path = f"/sessions/{session_id}/timeline"
    return f"{base_url.rstrip('/')}{path}?{urlencode(params)}#bucket-{bucket_start}"


def json_payload(
    event: str,
    alert: Mapping[str, Any],
    session_id: str,
    segment: str,
    url: str,
    dataset: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON body: ``{"event", "alert": {...}, "session", "segment", "url"}``; of an organization's
    dataset (``dataset``: org, dataset), ``"org"`` and ``"dataset"`` instead of ``"session"`` (see
    docs/alerts.md)."""
    keys = ("monitor", "column", "metric", "start", "end", "value", "reason")
    target: dict[str, Any] = (
        {"org": dataset[0], "dataset": dataset[1]} if dataset is not None else {"session": session_id}
    )
    return {
        "event": EVENTS[event],
        "alert": {k: alert.get(k) for k in keys},
        **target,
        "segment": segment or None,
        "url": url,
    }


def target_words(payload: Mapping[str, Any]) -> tuple[str, str]:
    """("session", id) or ("dataset", "ORG/DATASET"): what a payload's notification is about."""
    if "dataset" in payload:
        return "dataset", f"{payload['org']}/{payload['dataset']}"
    return "session", str(payload["session"])


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook message of a JSON payload: ``text`` (the notification fallback) and
    ``blocks`` (a header, a section with fields, and a button opening the timeline)."""
    alert = payload["alert"]
    failed = payload["event"] == "monitor_failed"
    verb = "failed" if failed else "resolved"
    title = f"Monitor {verb}: {alert['column']}"[:150]
    when = f"<!date^{int(alert['start']) // 1000}^{{date_short}} {{time}}|{alert['start']}>"
    kind, name = target_words(payload)
    text = f"Monitor {verb} on column {alert['column']} of {kind} {name}: {alert['reason']}"
    fields = [
        f"*Monitor*\n{_mrkdwn(str(alert['monitor']))}",
        f"*Column*\n`{_mrkdwn(str(alert['column']))}`",
        f"*Bucket from*\n{when}",
        f"*{kind.capitalize()}*\n`{_mrkdwn(name)}`",
    ]
    if payload.get("segment"):
        fields.append(f"*Segment*\n{_mrkdwn(str(payload['segment']))}")
    reason = _mrkdwn(str(alert["reason"])) if failed else f"no longer failing (was: {_mrkdwn(str(alert['reason']))})"
    return {
        "text": text[:3000],
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": False}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": reason[:3000]},
                "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the timeline"},
                        "url": payload["url"],
                    }
                ],
            },
        ],
    }


def body_of(target: NotifyTarget, payload: Mapping[str, Any]) -> str:
    shaped = slack_payload(payload) if target.format == "slack" else payload
    return json.dumps(shaped, separators=(",", ":"), allow_nan=False)


def signature(secret: str, body: bytes) -> str:
    """The ``X-Songbird-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _changes(document: Mapping[str, Any], since: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(event, alert) of the buckets of a timeline document from ``since`` (a bucket start; None: the
    latest bucket only): their failures, and the (monitor, column) pairs that failed on the bucket
    before and no longer fail (resolved)."""
    buckets = document.get("buckets") or []
    if not buckets:
        return []
    latest = buckets[-1]["start"]
    first = latest if since is None else min(since, latest)
    by_bucket: dict[int, list[Mapping[str, Any]]] = {}
    for a in document.get("alerts") or []:
        by_bucket.setdefault(a["start"], []).append(a)
    changes: list[tuple[str, dict[str, Any]]] = []
    for index, bucket in enumerate(buckets):
        if bucket["start"] < first:
            continue
        now_failing = by_bucket.get(bucket["start"], [])
        changes += [("failed", dict(a)) for a in now_failing]
        if index == 0:
            continue
        failing = {(a["monitor"], a["column"]) for a in now_failing}
        for a in by_bucket.get(buckets[index - 1]["start"], []):
            if (a["monitor"], a["column"]) not in failing:
                resolved = dict(a)
                resolved.update(start=bucket["start"], end=bucket["end"], value=None)
                resolved["reason"] = f"no longer failing (was: {a['reason']})"
                changes.append(("resolved", resolved))
    return changes


#: Derived-cache key of a session's notification mark: the latest bucket start already looked at.
MARK_KEY = "notify/mark"


class Notifier:
    """Queues the notifications of each evaluation of a session's monitors (see the module docstring)."""

    def __init__(
        self,
        queue: NotificationQueueSql,
        targets: Sequence[NotifyTarget],
        base_url: str | None = None,
        marks: Any = None,
        *,
        dataset_of: Callable[[str], tuple[str, str] | None] | None = None,
        signer: UrlSigner | None = None,
        link_ttl_seconds: int = LINK_TTL_SECONDS,
    ) -> None:
        self.queue = queue
        #: (org, dataset) of a container that holds an organization's dataset, None for a session
        self.dataset_of = dataset_of or (lambda session_id: None)
        #: signs the token a dataset's link carries (valid ``link_ttl_seconds``)
        self.signer = signer
        self.link_ttl_seconds = link_ttl_seconds
        #: where each session's mark is kept (``get_derived``/``put_derived`` of the metadata store)
        self.marks = marks
        self.targets = tuple(targets)
        #: where links point (``--public-url``, or the address the server listens on)
        self.base_url = base_url or "http://127.0.0.1"
        #: called after notifications were queued (wakes this process's sender)
        self.queued: list[Any] = []

    def _mark(self, session_id: str) -> int | None:
        raw = self.marks.get_derived(session_id, MARK_KEY) if self.marks is not None else None
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    def evaluated(self, session_id: str, document: Mapping[str, Any]) -> int:
        """Queue the notifications of ``document``'s buckets from the latest one at the session's
        previous evaluation (several batches may land between two evaluations) to its latest one;
        the first evaluation of a session looks at its latest bucket only (no flood of old failures).
        How many were new."""
        buckets = document.get("buckets") or []
        since = self._mark(session_id)
        changes = _changes(document, since)
        if buckets and self.marks is not None and (since is None or buckets[-1]["start"] > since):
            self.marks.put_derived(session_id, MARK_KEY, str(buckets[-1]["start"]).encode())
        if not changes or not self.targets:
            return 0
        segment = document.get("segment") or ""
        granularity = str(document.get("granularity") or "")
        dataset = self.dataset_of(session_id)
        token = None
        if dataset is not None and self.signer is not None:
            token = new_link_token(self.signer, *dataset, ttl_seconds=self.link_ttl_seconds)
        new: list[NewNotification] = []
        for event, alert in changes:
            start = int(alert["start"])
            url = timeline_link(self.base_url, session_id, granularity, segment, start, dataset=dataset, token=token)
            payload = json_payload(event, alert, session_id, segment, url, dataset)
            for target in self.targets:
                if event not in target.on:
                    continue
                new.append(
                    NewNotification(
                        id=notification_id(target, event, session_id, alert, segment),
                        target=target.display,
                        url=destination(target),
                        format="email" if target.email is not None else target.format,
                        secret_env=target.secret_env,
                        event=event,
                        session_id=session_id,
                        monitor=str(alert["monitor"]),
                        column=str(alert["column"]),
                        segment=segment,
                        bucket_start=int(alert["start"]),
                        body=body_of(target, payload),
                    )
                )
        added = self.queue.enqueue_notifications(new)
        if added:
            kind, name = ("dataset", "/".join(dataset)) if dataset is not None else ("session", session_id)
            logger.info("notifications: %d queued for %s %s", added, kind, name)
            for callback in self.queued:
                callback()
        return added


class NotificationSender:
    """The background thread that delivers queued notifications (see the module docstring)."""

    def __init__(
        self,
        queue: NotificationQueueSql,
        *,
        backoff_seconds: float = 1.0,
        backoff_max_seconds: float = 300.0,
        retry_seconds: float = 86_400.0,
        poll_seconds: float = 1.0,
        idle_seconds: float = IDLE_SECONDS,
        timeout: tuple[float, float] = TIMEOUT,
        lease_ms: int = LEASE_MS,
        environ: Mapping[str, str] | None = None,
        smtp_url: str | None = None,
    ) -> None:
        self.queue = queue
        self.smtp_url = smtp_url
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.retry_seconds = retry_seconds
        self.poll_seconds = poll_seconds
        self.idle_seconds = idle_seconds
        self.timeout = timeout
        self.lease_ms = lease_ms
        self.environ = os.environ if environ is None else environ
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # no proxies from the environment: targets are reached directly

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="songbird-notify", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Look for due notifications now (called when this process queued some)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread; an attempt under way finishes (and is recorded) first."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._http.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.run_once()
            except Exception:
                logger.exception("notifications: the sender failed; trying again")
                wait = self.poll_seconds
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def run_once(self) -> float:
        """Send what is due; the seconds to wait before looking again.

        This process's own notifications wake the thread (``wake``), so an idle look only finds what
        another process queued or made due (another host's leftovers, ``songbird alerts retry``): it
        comes every ``idle_seconds``, not every second."""
        due = self.queue.next_notification_due()
        if due is None:
            return self.idle_seconds
        ahead = (due - now_ms()) / 1000
        if ahead > 0:
            return min(ahead, self.idle_seconds)
        for record in self.queue.claim_notifications(lease_ms=self.lease_ms, limit=10):
            if self._stop.is_set():
                break  # the lease runs out and another sender (or the next start) takes it
            self.deliver(record)
        return 0.0

    def deliver(self, record: NotificationRecord) -> bool:
        """One attempt at ``record``, recorded in the store; whether it was delivered."""
        body = record.body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "songbird-notify"}
        error: str | None = None
        retry = True
        if record.format == "email":
            error, retry = self._email(record)
            if error is None:
                self.queue.notification_sent(record.id)
                logger.info("notification emailed: %s %s/%s", record.event, record.session_id, record.column)
                return True
        elif record.secret_env:
            secret = self.environ.get(record.secret_env)
            if not secret:
                error = f"the environment variable {record.secret_env} (secret_env) is not set"
            else:
                headers[SIGNATURE_HEADER] = signature(secret, body)
        if error is None and record.format != "email":
            try:
                response = self._http.post(
                    record.url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
                )
                response.close()
            except requests.Timeout:
                error = f"no answer within {self.timeout[1]:g} s"
            except requests.ConnectionError:
                error = "the connection failed (refused, reset or unresolvable)"
            except requests.RequestException as exc:
                error = f"the request failed ({type(exc).__name__})"
            else:
                if 200 <= response.status_code < 300:
                    self.queue.notification_sent(record.id)
                    logger.info(
                        "notification sent: %s %s/%s to %s", record.event, record.session_id, record.column,
                        record.target,
                    )  # fmt: skip
                    return True
                error = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in RETRIED_STATUSES:
                    retry = False
                    error += " (not retried: fix the target, then run `songbird alerts retry`)"
        assert error is not None
        now = now_ms()
        retry_at: int | None = None
        if retry and now - record.retry_from < self.retry_seconds * 1000:
            delay = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** min(record.attempts, 30))
            retry_at = now + int(delay * 1000)
        self.queue.notification_failed(record.id, error, retry_at=retry_at)
        logger.warning(
            "notification to %s not delivered (attempt %d): %s; %s",
            record.target,
            record.attempts + 1,
            error,
            "retrying" if retry_at is not None else "given up",
        )
        return False

    def _email(self, record: NotificationRecord) -> tuple[str | None, bool]:
        """Send ``record`` by email through ``smtp_url``: (error or None, whether to retry)."""
        if not self.smtp_url:
            return "this server has no --smtp-url", True
        try:
            send_email(self.smtp_url, email_message(record), timeout=self.timeout[1], environ=self.environ)
        except smtplib.SMTPRecipientsRefused:
            return (
                "SMTP: every recipient refused (not retried: fix the address, then run `songbird alerts retry`)",
                False,
            )
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code >= 500:
                return f"SMTP {exc.smtp_code} (not retried: fix the settings, then run `songbird alerts retry`)", False
            return f"SMTP {exc.smtp_code}", True
        except (OSError, smtplib.SMTPException) as exc:
            return f"SMTP: the connection failed ({type(exc).__name__})", True
        return None, True


#: Environment variable holding the SMTP password, when the URL holds none (keeps it out of ``ps``).
SMTP_PASSWORD_ENV = "SONGBIRD_SMTP_PASSWORD"  # noqa: S105 - a variable name


def email_message(record: NotificationRecord) -> EmailMessage:
    """The email of a queued notification (its stored JSON payload, in words, with the link)."""
    payload = json.loads(record.body)
    alert = payload["alert"]
    failed = payload["event"] == "monitor_failed"
    verb = "failed" if failed else "resolved"
    start = datetime.fromtimestamp(int(alert["start"]) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    message = EmailMessage()
    message["Subject"] = f"[songbird] Monitor {verb}: {alert['column']} ({alert['monitor']})"[:200]
    message["To"] = ", ".join(record.url.removeprefix("mailto:").split(","))
    message["X-Songbird-Notification"] = record.id
    kind, name = target_words(payload)
    lines = [
        f"Monitor {verb} on column {alert['column']} of {kind} {name}.",
        "",
        f"Monitor: {alert['monitor']}",
        f"Why:     {alert['reason']}",
        f"Bucket:  from {start}",
    ]
    if payload.get("segment"):
        lines.append(f"Segment: {payload['segment']}")
    lines += ["", f"Timeline: {payload['url']}", ""]
    message.set_content("\n".join(lines))
    return message


def send_email(url: str, message: EmailMessage, *, timeout: float, environ: Mapping[str, str]) -> None:
    """Send ``message`` through the SMTP server of ``url`` (``smtp://`` with STARTTLS where the server
    offers it, ``smtps://`` for TLS from the start; ``?from=ADDRESS`` sets the sender)."""
    parts = urlsplit(url)
    sender = parse_qs(parts.query).get("from", [f"songbird@{socket.getfqdn() or 'localhost'}"])[0]
    if "From" not in message:
        message["From"] = sender
    host = parts.hostname or "localhost"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else environ.get(SMTP_PASSWORD_ENV)
    client: smtplib.SMTP
    if parts.scheme == "smtps":
        client = smtplib.SMTP_SSL(host, parts.port or 465, timeout=timeout, context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(host, parts.port or 25, timeout=timeout)
    with client:
        client.ehlo()
        if parts.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=ssl.create_default_context())
            client.ehlo()
        if user:
            client.login(user, password or "")
        client.send_message(message, from_addr=sender)


def default_base_url(config: ServerConfig) -> str:
    """Where links in notifications point: ``--public-url``, else the address the server listens on."""
    if config.public_url:
        return config.public_url
    return f"http://{shared_address(config.host)}:{config.port}"


def mount_notifications(
    app: FastAPI, store: Store, config: ServerConfig, monitors: MonitorsFile | None, timeline: TimelineService
) -> NotificationSender | None:
    """With ``[[notify]]`` tables: queue notifications from the timeline's evaluations
    (``app.state.notifier``) and return the sender thread (not started). None without targets."""
    app.state.notifier = None
    if monitors is None or not monitors.notify:
        return None
    queue = store.notification_queue()
    notifier = Notifier(
        queue,
        monitors.notify,
        default_base_url(config),
        marks=store,
        dataset_of=lambda container_id: dataset_of(store, container_id),
        signer=app.state.signer,
    )
    sender = NotificationSender(
        queue,
        backoff_seconds=config.notify_backoff_seconds,
        backoff_max_seconds=config.notify_backoff_max_seconds,
        retry_seconds=config.notify_retry_seconds,
        idle_seconds=config.notify_idle_seconds,
        smtp_url=config.smtp_url,
    )
    notifier.queued.append(sender.wake)
    timeline.evaluated.append(notifier.evaluated)
    app.state.notifier = notifier
    app.state.notification_sender = sender
    return sender


__all__ = [
    "SIGNATURE_HEADER",
    "NotificationSender",
    "Notifier",
    "check_targets",
    "mount_notifications",
    "json_payload",
    "queue_of",
    "signature",
    "slack_payload",
    "timeline_link",
]
