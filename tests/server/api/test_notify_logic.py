"""Notifications (whylogs_songbird/server/notify.py) as logic, on the real embedded store's queue.

Payloads, links, signatures and the failed/resolved changes of a timeline document are checked
against hand-written values. The notifier and the sender work on a real SQLite queue; the sender's
seams are replaced: its HTTP session (a fake that answers a status or raises what requests
raises), its clock (``now_ms``) and ``send_email`` / ``smtplib`` for email. Backoff is checked at
its first steps, its cap and the end of the retry period. test_notify.py checks the same over
real HTTP with a real receiver.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
from email.message import EmailMessage
from time import time as time_now
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from whylogs_songbird.monitors import MonitorsError, MonitorsFile, NotifyTarget
from whylogs_songbird.server import notify
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.notify import (
    MARK_KEY,
    SIGNATURE_HEADER,
    NotificationSender,
    Notifier,
    body_of,
    check_targets,
    default_base_url,
    destination,
    email_message,
    json_payload,
    mount_notifications,
    notification_id,
    queue_of,
    signature,
    slack_payload,
    target_key,
    timeline_link,
)
from whylogs_songbird.server.storage.notifications import NewNotification
from whylogs_songbird.server.store import Store

# hang_bound: a broken loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not at mutmut's timeout
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/server/notify.py"), pytest.mark.hang_bound]

HOOK = NotifyTarget(url="http://127.0.0.1:9/hook/secret-path")
ALERT = {
    "monitor": "age-drift",
    "column": "age",
    "metric": "drift_p_value",
    "start": 1_700_000_000_000,
    "end": 1_700_086_400_000,
    "value": 0.001,
    "reason": "p-value 0.001 < 0.05",
}


def test_the_constants():
    assert SIGNATURE_HEADER == "X-Songbird-Signature"
    assert notify.EVENTS == {"failed": "monitor_failed", "resolved": "monitor_resolved"}
    assert notify.TIMEOUT == (3.05, 10.0) and notify.LEASE_MS == 120_000
    assert {408, 425, 429} == notify.RETRIED_STATUSES
    assert MARK_KEY == "notify/mark" and notify.SMTP_PASSWORD_ENV == "SONGBIRD_SMTP_PASSWORD"


# -- checking targets ----------------------------------------------------------------------------


def monitors_file(*targets: dict[str, Any]) -> MonitorsFile:
    return MonitorsFile.model_validate({"monitors": [], "notify": list(targets)})


def test_targets_are_checked_against_the_environment_and_the_smtp_url(monkeypatch):
    check_targets(None)
    signed = monitors_file({"url": "http://127.0.0.1:9/a"}, {"url": "http://127.0.0.1:9/b", "secret_env": "HOOK_KEY"})
    with pytest.raises(MonitorsError) as unset:
        check_targets(signed, {})
    assert str(unset.value) == (
        "[[notify]] table 2: secret_env names HOOK_KEY, which is not set in the server's environment; set it to the "
        "shared secret of the receiver, or remove secret_env"
    )
    with pytest.raises(MonitorsError, match="table 2"):
        check_targets(signed, {"HOOK_KEY": ""})
    check_targets(signed, {"HOOK_KEY": "k"})
    monkeypatch.setenv("HOOK_KEY", "from-the-process")
    check_targets(signed)  # the process's environment by default
    monkeypatch.delenv("HOOK_KEY")
    with pytest.raises(MonitorsError):
        check_targets(signed)
    mail = monitors_file({"email": "ops@example.com"})
    with pytest.raises(MonitorsError) as no_smtp:
        check_targets(mail, {})
    assert str(no_smtp.value) == (
        "[[notify]] table 1 sends email: start the server with --smtp-url smtp://USER@HOST:PORT (or $SONGBIRD_SMTP_URL)"
    )
    check_targets(mail, {}, smtp_url="smtp://127.0.0.1:25")


def test_queue_of_names_a_store_without_a_queue():
    with pytest.raises(TypeError, match="^object keeps no notifications$"):
        queue_of(object())


# -- keys, links and payloads --------------------------------------------------------------------


def test_destinations_and_keys():
    assert destination(HOOK) == "http://127.0.0.1:9/hook/secret-path"
    mail = NotifyTarget(email=("a@example.com", "b@example.com"))
    assert destination(mail) == "mailto:a@example.com,b@example.com"
    key = target_key(HOOK)
    assert len(key) == 16 and int(key, 16) >= 0
    assert target_key(NotifyTarget(url=HOOK.url)) == key  # stable
    assert target_key(NotifyTarget(url=HOOK.url, format="slack")) != key
    assert target_key(NotifyTarget(url="http://127.0.0.1:9/hook/other")) != key
    assert "secret-path" not in key


def test_a_notification_id_is_one_per_target_event_session_monitor_column_segment_and_bucket():
    first = notification_id(HOOK, "failed", "session-1", ALERT, "")
    assert len(first) == 64 and notification_id(HOOK, "failed", "session-1", dict(ALERT), "") == first
    others = {
        notification_id(NotifyTarget(url=HOOK.url, format="slack"), "failed", "session-1", ALERT, ""),
        notification_id(HOOK, "resolved", "session-1", ALERT, ""),
        notification_id(HOOK, "failed", "session-2", ALERT, ""),
        notification_id(HOOK, "failed", "session-1", {**ALERT, "monitor": "m2"}, ""),
        notification_id(HOOK, "failed", "session-1", {**ALERT, "column": "c2"}, ""),
        notification_id(HOOK, "failed", "session-1", ALERT, "r=1"),
        notification_id(HOOK, "failed", "session-1", {**ALERT, "start": ALERT["start"] + 1}, ""),
    }
    assert len(others) == 7 and first not in others
    assert notification_id(HOOK, "failed", "session-1", {**ALERT, "start": float(ALERT["start"])}, "") == first


def test_timeline_links():
    assert timeline_link("http://h:1", "session-1", "daily", "", 5) == (
        "http://h:1/sessions/session-1/timeline?granularity=daily#bucket-5"
    )
    assert timeline_link("http://h:1//", "session-1", "hourly", "a=1&b=2", 7) == (
        "http://h:1/sessions/session-1/timeline?granularity=hourly&segment=a%3D1%26b%3D2#bucket-7"
    )


def test_the_json_payload():
    assert json_payload("failed", {**ALERT, "extra": 1}, "session-1", "", "http://u") == {
        "event": "monitor_failed",
        "alert": {k: ALERT[k] for k in ("monitor", "column", "metric", "start", "end", "value", "reason")},
        "session": "session-1",
        "segment": None,
        "url": "http://u",
    }
    resolved = json_payload("resolved", {"monitor": "m"}, "session-1", "r=1", "http://u")
    assert resolved["event"] == "monitor_resolved" and resolved["segment"] == "r=1"
    assert resolved["alert"] == {"monitor": "m", "column": None, "metric": None, "start": None, "end": None,
                                 "value": None, "reason": None}  # fmt: skip


def test_the_slack_message_of_a_failure():
    payload = json_payload("failed", {**ALERT, "reason": "x < 1 & y > 2"}, "session-1", "", "http://u/t")
    assert slack_payload(payload) == {
        "text": "Monitor failed on column age of session session-1: x < 1 & y > 2",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Monitor failed: age", "emoji": False}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "x &lt; 1 &amp; y &gt; 2"},
                "fields": [
                    {"type": "mrkdwn", "text": "*Monitor*\nage-drift"},
                    {"type": "mrkdwn", "text": "*Column*\n`age`"},
                    {"type": "mrkdwn", "text": "*Bucket from*\n<!date^1700000000^{date_short} {time}|1700000000000>"},
                    {"type": "mrkdwn", "text": "*Session*\n`session-1`"},
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open the timeline"}, "url": "http://u/t"}
                ],
            },
        ],
    }


def test_the_slack_message_of_a_resolution_with_a_segment_and_long_texts():
    alert = {**ALERT, "column": "c<" + "x" * 200, "monitor": "m>", "reason": "r" * 3500}
    message = slack_payload(json_payload("resolved", alert, "session-1", "a=<1>", "http://u"))
    assert message["blocks"][0]["text"]["text"] == ("Monitor resolved: " + alert["column"])[:150]
    assert len(message["text"]) == 3000 and message["text"].startswith("Monitor resolved on column c<")
    section = message["blocks"][1]
    assert section["text"]["text"] == ("no longer failing (was: " + "r" * 3500)[:3000]
    texts = [f["text"] for f in section["fields"]]
    assert texts[0] == "*Monitor*\nm&gt;"
    assert texts[1] == "*Column*\n`c&lt;" + "x" * 200 + "`"
    assert texts[4] == "*Segment*\na=&lt;1&gt;"
    long_column = slack_payload(json_payload("failed", {**ALERT, "column": "c" * 2500}, "session-1", "", "http://u"))
    assert len(long_column["blocks"][1]["fields"][1]["text"]) == 2000


def test_bodies_and_signatures():
    payload = json_payload("failed", ALERT, "session-1", "", "http://u")
    assert body_of(HOOK, payload) == json.dumps(payload, separators=(",", ":"))
    assert body_of(NotifyTarget(url=HOOK.url, format="slack"), payload) == json.dumps(
        slack_payload(payload), separators=(",", ":")
    )
    with pytest.raises(ValueError):
        body_of(HOOK, {**payload, "alert": {**payload["alert"], "value": float("nan")}})
    # RFC 4231-style check: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
    assert signature("key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


# -- what changed --------------------------------------------------------------------------------


def alert(monitor: str, column: str, start: int, reason: str = "bad") -> dict[str, Any]:
    return {"monitor": monitor, "column": column, "start": start, "end": start + 10, "value": 1.0, "reason": reason}


DOCUMENT = {
    "buckets": [{"start": 0, "end": 10}, {"start": 10, "end": 20}, {"start": 20, "end": 30}],
    "alerts": [alert("m", "a", 0), alert("m", "b", 0), alert("m", "a", 10), alert("n", "a", 20, "worse")],
}


def test_changes_of_the_latest_bucket_only():
    assert notify._changes({"buckets": []}) == [] and notify._changes({}) == []
    assert notify._changes(DOCUMENT) == [
        ("failed", alert("n", "a", 20, "worse")),
        ("resolved", {**alert("m", "a", 20), "end": 30, "value": None, "reason": "no longer failing (was: bad)"}),
    ]


def test_changes_since_a_bucket():
    assert [(e, a["monitor"], a["column"], a["start"]) for e, a in notify._changes(DOCUMENT, since=10)] == [
        ("failed", "m", "a", 10),
        ("resolved", "m", "b", 10),
        ("failed", "n", "a", 20),
        ("resolved", "m", "a", 20),
    ]
    from_start = notify._changes(DOCUMENT, since=0)
    assert [(e, a["start"]) for e, a in from_start][:2] == [("failed", 0), ("failed", 0)]  # nothing resolved before
    assert len(from_start) == 6
    assert notify._changes(DOCUMENT, since=99) == notify._changes(DOCUMENT)  # a mark past the end: the latest
    assert notify._changes({"buckets": [{"start": 5, "end": 6}], "alerts": None}) == []


# -- the notifier --------------------------------------------------------------------------------


def queued(store: Store) -> list[Any]:
    return sorted(queue_of(store.metadata).list_notifications(), key=lambda r: (r.bucket_start, r.event, r.column))


def test_a_first_evaluation_queues_the_latest_bucket_only_and_marks_it(store, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.notify")
    session_id = store.create_session("u").id
    woken: list[int] = []
    notifier = Notifier(queue_of(store.metadata), [HOOK], "http://songbird:8787/", marks=store.metadata)
    notifier.queued.append(lambda: woken.append(1))
    document = {**DOCUMENT, "segment": "r=1", "granularity": "daily"}
    assert notifier.evaluated(session_id, document) == 1  # the failure; HOOK is not told of resolutions
    (record,) = queued(store)
    assert (record.event, record.monitor, record.column, record.segment, record.bucket_start) == (
        "failed",
        "n",
        "a",
        "r=1",
        20,
    )
    assert (record.target, record.url, record.format, record.secret_env) == (
        "http://127.0.0.1:9/…",
        HOOK.url,
        "json",
        None,
    )
    body = json.loads(record.body)
    assert (
        body["url"]
        == "http://songbird:8787/sessions/" + session_id + "/timeline?granularity=daily&segment=r%3D1#bucket-20"
    )
    assert store.metadata.get_derived(session_id, MARK_KEY) == b"20"
    assert woken == [1]
    assert [r.getMessage() for r in caplog.records] == [f"notifications: 1 queued for session {session_id}"]
    assert notifier.evaluated(session_id, document) == 0  # the same again: nothing new, nobody woken
    assert woken == [1]


def test_later_evaluations_start_from_the_mark(store):
    session_id = store.create_session("u").id
    both = NotifyTarget(url=HOOK.url, on=("failed", "resolved"))
    notifier = Notifier(queue_of(store.metadata), [both], marks=store.metadata)
    first = {"buckets": DOCUMENT["buckets"][:1], "alerts": DOCUMENT["alerts"][:2]}
    assert notifier.evaluated(session_id, first) == 2
    assert store.metadata.get_derived(session_id, MARK_KEY) == b"0"
    assert notifier.evaluated(session_id, DOCUMENT) == 4  # buckets 10 and 20; bucket 0's were queued already
    assert store.metadata.get_derived(session_id, MARK_KEY) == b"20"
    assert notifier.evaluated(session_id, first) == 0  # an older document does not move the mark back
    assert store.metadata.get_derived(session_id, MARK_KEY) == b"20"
    links = {json.loads(r.body)["url"] for r in queued(store)}
    assert all(link.startswith(f"http://127.0.0.1/sessions/{session_id}/timeline?granularity=#") for link in links)


def test_a_mark_that_is_no_number_is_no_mark(store):
    session_id = store.create_session("u").id
    store.metadata.put_derived(session_id, MARK_KEY, b"garbage")
    notifier = Notifier(queue_of(store.metadata), [HOOK], marks=store.metadata)
    assert notifier.evaluated(session_id, DOCUMENT) == 1
    assert store.metadata.get_derived(session_id, MARK_KEY) == b"20"


def test_without_marks_or_targets(store):
    session_id = store.create_session("u").id
    unmarked = Notifier(queue_of(store.metadata), [HOOK])
    assert unmarked.evaluated(session_id, DOCUMENT) == 1
    assert unmarked.evaluated(session_id, DOCUMENT) == 0  # deduplicated by the queue
    silent = Notifier(queue_of(store.metadata), [], marks=store.metadata)
    other = store.create_session("u").id
    assert silent.evaluated(other, DOCUMENT) == 0
    assert store.metadata.get_derived(other, MARK_KEY) == b"20"  # marked all the same
    assert Notifier(queue_of(store.metadata), [HOOK], marks=store.metadata).evaluated(other, {"buckets": []}) == 0


def test_each_target_gets_its_events_in_its_format(store):
    session_id = store.create_session("u").id
    targets = [
        NotifyTarget(url="http://127.0.0.1:9/slack", format="slack", on=("resolved",)),
        NotifyTarget(email=("ops@example.com",), on=("failed", "resolved")),
        NotifyTarget(url="http://127.0.0.1:9/signed", secret_env="HOOK_KEY"),
    ]
    assert Notifier(queue_of(store.metadata), targets, marks=store.metadata).evaluated(session_id, DOCUMENT) == 4
    seen = {(r.format, r.event, r.url, r.secret_env) for r in queued(store)}
    assert seen == {
        ("slack", "resolved", "http://127.0.0.1:9/slack", None),
        ("email", "failed", "mailto:ops@example.com", None),
        ("email", "resolved", "mailto:ops@example.com", None),
        ("json", "failed", "http://127.0.0.1:9/signed", "HOOK_KEY"),
    }
    slack = next(r for r in queued(store) if r.format == "slack")
    assert "blocks" in json.loads(slack.body)


# -- the sender ----------------------------------------------------------------------------------


class Answer:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeHttp:
    """The sender's requests session: answers each POST with the next outcome (a status or an exception)."""

    def __init__(self, *outcomes: int | Exception) -> None:
        self.outcomes = list(outcomes)
        self.posts: list[dict[str, Any]] = []
        self.answers: list[Answer] = []
        self.closed = False

    def post(self, url: str, **kwargs: Any) -> Answer:
        self.posts.append({"url": url, **kwargs})
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        self.answers.append(Answer(outcome))
        return self.answers[-1]

    def close(self) -> None:
        self.closed = True


def enqueue(
    store: Store, *, format: str = "json", secret_env: str | None = None, url: str = HOOK.url, n: int = 1
) -> list[str]:
    queue = queue_of(store.metadata)
    ids = [f"n{i}" for i in range(n)]
    queue.enqueue_notifications(
        [
            NewNotification(
                id=i, target="http://127.0.0.1:9/…", url=url, format=format, secret_env=secret_env, event="failed",
                session_id="session-1", monitor="m", column="age", segment="", bucket_start=5,
                body=json.dumps(json_payload("failed", ALERT, "session-1", "", "http://u/t")),
            )
            for i in ids
        ]
    )  # fmt: skip
    return ids


def sender_of(store: Store, http: FakeHttp, **options: Any) -> NotificationSender:
    sender = NotificationSender(queue_of(store.metadata), **options)
    sender._http = http  # type: ignore[assignment]
    return sender


def record(store: Store, notification_id: str = "n0") -> Any:
    (found,) = [r for r in queue_of(store.metadata).list_notifications() if r.id == notification_id]
    return found


def claimed(store: Store) -> Any:
    (one,) = queue_of(store.metadata).claim_notifications(lease_ms=60_000, limit=1)
    return one


def test_the_sender_s_defaults(store):
    sender = NotificationSender(queue_of(store.metadata))
    assert (sender.backoff_seconds, sender.backoff_max_seconds, sender.retry_seconds, sender.poll_seconds) == (
        1.0, 300.0, 86_400.0, 1.0,
    )  # fmt: skip
    assert (sender.timeout, sender.lease_ms, sender.smtp_url) == ((3.05, 10.0), 120_000, None)
    assert sender.idle_seconds == 30.0
    assert sender._http.trust_env is False  # no proxies from the environment
    sender.stop()


def test_a_delivery_posts_the_body_and_records_it(store, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.notify")
    enqueue(store)
    http = FakeHttp(204)
    sender = sender_of(store, http, timeout=(1.5, 2.5))
    assert sender.deliver(claimed(store)) is True
    (post,) = http.posts
    assert post["url"] == HOOK.url and post["timeout"] == (1.5, 2.5) and post["allow_redirects"] is False
    assert post["headers"] == {"Content-Type": "application/json", "User-Agent": "songbird-notify"}
    assert post["data"] == record(store).body.encode()
    assert http.answers[0].closed
    assert (record(store).state, record(store).attempts) == ("sent", 1)
    assert [r.getMessage() for r in caplog.records] == [
        "notification sent: failed session-1/age to http://127.0.0.1:9/…"
    ]
    assert "secret-path" not in caplog.text


def test_a_signed_delivery(store):
    enqueue(store, secret_env="HOOK_KEY")
    http = FakeHttp(200)
    sender = sender_of(store, http, environ={"HOOK_KEY": "s3cret"})
    assert sender.deliver(claimed(store)) is True
    body = http.posts[0]["data"]
    assert http.posts[0]["headers"][SIGNATURE_HEADER] == signature("s3cret", body)


def test_a_signed_delivery_without_its_secret_is_not_sent(store, monkeypatch):
    monkeypatch.setattr(notify, "now_ms", lambda: 1_000_000_000_000)
    enqueue(store, secret_env="HOOK_KEY")
    http = FakeHttp()
    sender = sender_of(store, http, environ={"HOOK_KEY": ""})
    assert sender.deliver(claimed(store)) is False
    assert http.posts == []
    assert record(store).last_error == "the environment variable HOOK_KEY (secret_env) is not set"
    assert record(store).state == "pending"


@pytest.mark.parametrize(
    ("outcome", "error", "retried"),
    [
        (500, "HTTP 500", True),
        (503, "HTTP 503", True),
        (599, "HTTP 599", True),
        (408, "HTTP 408", True),
        (425, "HTTP 425", True),
        (429, "HTTP 429", True),
        (404, "HTTP 404 (not retried: fix the target, then run `songbird alerts retry`)", False),
        (499, "HTTP 499 (not retried: fix the target, then run `songbird alerts retry`)", False),
        (302, "HTTP 302 (not retried: fix the target, then run `songbird alerts retry`)", False),
        (199, "HTTP 199 (not retried: fix the target, then run `songbird alerts retry`)", False),
        (300, "HTTP 300 (not retried: fix the target, then run `songbird alerts retry`)", False),
        (requests.Timeout(), "no answer within 2.5 s", True),
        (requests.ConnectionError(), "the connection failed (refused, reset or unresolvable)", True),
        (requests.TooManyRedirects(), "the request failed (TooManyRedirects)", True),
    ],
)
def test_failed_deliveries(store, monkeypatch, caplog, outcome, error, retried):
    now = 1_000_000_000_000
    monkeypatch.setattr(notify, "now_ms", lambda: now)
    enqueue(store)
    sender = sender_of(store, FakeHttp(outcome), timeout=(1.0, 2.5), backoff_seconds=3.0)
    assert sender.deliver(claimed(store)) is False
    failed = record(store)
    assert failed.last_error == error
    assert (failed.state, failed.attempts) == (("pending", 1) if retried else ("failed", 1))
    if retried:
        assert failed.next_at == now + 3000
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"notification to http://127.0.0.1:9/… not delivered (attempt 1): {error}; "
        + ("retrying" if retried else "given up")
    ]


def test_a_2xx_at_its_edges(store):
    enqueue(store, n=2)
    sender = sender_of(store, FakeHttp(200, 299))
    for record_ in queue_of(store.metadata).claim_notifications(lease_ms=60_000, limit=2):
        assert sender.deliver(record_) is True


@pytest.mark.parametrize(
    ("attempts", "delay_ms"),
    [(0, 2000), (1, 4000), (2, 8000), (5, 64_000), (6, 100_000), (40, 100_000)],
)
def test_backoff_doubles_up_to_its_cap(store, monkeypatch, attempts, delay_ms):
    now = 1_000_000_000_000
    monkeypatch.setattr(notify, "now_ms", lambda: now)
    enqueue(store)
    sender = sender_of(store, FakeHttp(500), backoff_seconds=2.0, backoff_max_seconds=100.0)
    sender.deliver(_with(claimed(store), attempts=attempts, retry_from=now))
    assert record(store).next_at == now + delay_ms


def test_backoff_exponent_is_capped_at_30(store, monkeypatch):
    now = 1_000_000_000_000
    monkeypatch.setattr(notify, "now_ms", lambda: now)
    enqueue(store)
    sender = sender_of(store, FakeHttp(500), backoff_seconds=0.001, backoff_max_seconds=1e12)
    sender.deliver(_with(claimed(store), attempts=31, retry_from=now))
    assert record(store).next_at == now + int(0.001 * 2**30 * 1000)


def _with(found: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(found, **changes)


def test_retries_end_with_the_retry_period(store, monkeypatch):
    now = 1_000_000_000_000
    monkeypatch.setattr(notify, "now_ms", lambda: now)
    enqueue(store, n=2)
    sender = sender_of(store, FakeHttp(500, 500), retry_seconds=60.0)
    first, second = queue_of(store.metadata).claim_notifications(lease_ms=60_000, limit=2)
    sender.deliver(_with(first, retry_from=now - 59_999))
    sender.deliver(_with(second, retry_from=now - 60_000))
    assert record(store, first.id).state == "pending"
    assert record(store, second.id).state == "failed"


def test_run_once_waits_for_what_is_due(store, monkeypatch):
    http = FakeHttp(200, 200)
    sender = sender_of(store, http, poll_seconds=0.5, idle_seconds=4.0)
    assert sender.run_once() == 4.0  # nothing queued: the next look after the idle wait
    enqueue(store, n=2)
    due = queue_of(store.metadata).next_notification_due()
    assert due is not None
    monkeypatch.setattr(notify, "now_ms", lambda: due - 2500)
    assert sender.run_once() == 2.5  # due in 2.5 s
    monkeypatch.setattr(notify, "now_ms", lambda: due - 60_000)
    assert sender.run_once() == 4.0  # due later than the idle wait: look again after it
    monkeypatch.setattr(notify, "now_ms", lambda: due)
    assert sender.run_once() == 0.0
    assert len(http.posts) == 2 and {r.state for r in queue_of(store.metadata).list_notifications()} == {"sent"}


def test_run_once_claims_with_the_lease_and_stops_between_deliveries(store):
    enqueue(store, n=2)
    http = FakeHttp(200, 200)
    sender = sender_of(store, http, lease_ms=-1)
    sender._stop.set()
    assert sender.run_once() == 0.0
    assert http.posts == []  # claimed (with a lease that already ended) and left for later
    sender._stop.clear()
    sender.run_once()
    assert len(http.posts) == 2


def test_the_thread_starts_once_wakes_and_stops(store, monkeypatch):
    http = FakeHttp()
    sender = sender_of(store, http, poll_seconds=60)
    sender.start()
    thread = sender._thread
    assert thread is not None and thread.name == "songbird-notify" and thread.daemon and thread.is_alive()
    sender.start()
    assert sender._thread is thread
    sender.stop(timeout=20)
    assert sender._thread is None and not thread.is_alive() and http.closed


def test_a_failing_pass_is_logged_and_the_thread_waits_a_poll(store, monkeypatch, caplog):
    sender = sender_of(store, FakeHttp(), poll_seconds=0.25)
    waits: list[float] = []

    def broken() -> float:
        if waits:
            sender._stop.set()
        raise RuntimeError("database is locked")

    class Recording:
        def wait(self, timeout: float) -> bool:
            waits.append(timeout)
            return False

        def clear(self) -> None:
            pass

        def set(self) -> None:
            pass

    monkeypatch.setattr(sender, "run_once", broken)
    sender._wake = Recording()  # type: ignore[assignment]
    sender._run()
    assert waits == [0.25, 0.25]  # after each failure one poll, then the stop is seen
    assert [r.getMessage() for r in caplog.records] == ["notifications: the sender failed; trying again"] * 2


def test_no_wait_after_a_pass_that_sent(store, monkeypatch):
    sender = sender_of(store, FakeHttp())
    results = iter([0.0, 1.5])
    waits: list[float] = []

    def pass_() -> float:
        value = next(results)
        if value:
            sender._stop.set()
        return value

    class Recording:
        def wait(self, timeout: float) -> bool:
            waits.append(timeout)
            return True

        def clear(self) -> None:
            pass

    monkeypatch.setattr(sender, "run_once", pass_)
    sender._wake = Recording()  # type: ignore[assignment]
    sender._run()
    assert waits == [1.5]


# -- email ---------------------------------------------------------------------------------------


def mail_record(store: Store) -> Any:
    enqueue(store, format="email", url="mailto:a@example.com,b@example.com")
    return claimed(store)


def test_the_email_of_a_notification(store):
    message = email_message(mail_record(store))
    assert message["Subject"] == "[songbird] Monitor failed: age (age-drift)"
    assert message["To"] == "a@example.com, b@example.com"
    assert message["X-Songbird-Notification"] == "n0"
    assert message.get_content() == (
        "Monitor failed on column age of session session-1.\n\nMonitor: age-drift\nWhy:     p-value 0.001 < 0.05\n"
        "Bucket:  from 2023-11-14 22:13 UTC\n\nTimeline: http://u/t\n"
    )


def test_the_email_of_a_resolution_in_a_segment(store):
    found = _with(
        mail_record(store),
        body=json.dumps(json_payload("resolved", {**ALERT, "column": "c" * 300}, "session-1", "r=1", "http://u")),
    )
    message = email_message(found)
    assert message["Subject"] == f"[songbird] Monitor resolved: {'c' * 300} (age-drift)"[:200]
    assert "Segment: r=1\n" in message.get_content()


@pytest.mark.parametrize(
    ("raised", "error", "retried"),
    [
        (None, None, None),
        (
            smtplib.SMTPRecipientsRefused({}),
            "SMTP: every recipient refused (not retried: fix the address, then run `songbird alerts retry`)",
            False,
        ),
        (
            smtplib.SMTPResponseException(550, b"no"),
            "SMTP 550 (not retried: fix the settings, then run `songbird alerts retry`)",
            False,
        ),
        (
            smtplib.SMTPResponseException(500, b"no"),
            "SMTP 500 (not retried: fix the settings, then run `songbird alerts retry`)",
            False,
        ),
        (smtplib.SMTPResponseException(499, b"busy"), "SMTP 499", True),
        (smtplib.SMTPResponseException(451, b"busy"), "SMTP 451", True),
        (ConnectionRefusedError(), "SMTP: the connection failed (ConnectionRefusedError)", True),
        (smtplib.SMTPServerDisconnected(), "SMTP: the connection failed (SMTPServerDisconnected)", True),
    ],
)
def test_email_deliveries(store, monkeypatch, caplog, raised, error, retried):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.notify")
    sent: list[tuple] = []

    def send_email(url: str, message: EmailMessage, *, timeout: float, environ: Any) -> None:
        sent.append((url, message["To"], timeout, environ))
        if raised is not None:
            raise raised

    monkeypatch.setattr(notify, "send_email", send_email)
    http = FakeHttp()
    environ = {"X": "1"}
    sender = sender_of(store, http, smtp_url="smtp://127.0.0.1:2525", timeout=(1.0, 7.0), environ=environ)
    assert sender.deliver(mail_record(store)) is (error is None)
    assert sent == [("smtp://127.0.0.1:2525", "a@example.com, b@example.com", 7.0, environ)]
    assert http.posts == []
    found = record(store)
    if error is None:
        assert found.state == "sent"
        assert [r.getMessage() for r in caplog.records] == ["notification emailed: failed session-1/age"]
    else:
        assert (found.state, found.last_error) == ("pending" if retried else "failed", error)


def test_email_without_an_smtp_url_waits_for_one(store, monkeypatch):
    monkeypatch.setattr(notify, "send_email", lambda *a, **k: pytest.fail("sent without an smtp url"))
    sender = sender_of(store, FakeHttp())
    assert sender.deliver(mail_record(store)) is False
    assert (record(store).state, record(store).last_error) == ("pending", "this server has no --smtp-url")


class FakeSmtp:
    """smtplib.SMTP / SMTP_SSL as send_email uses them; every instance is kept in ``made``."""

    made: list[FakeSmtp] = []
    starttls_offered = True

    def __init__(self, host: str, port: int, *, timeout: float, context: Any = None) -> None:
        self.host, self.port, self.timeout, self.context = host, port, timeout, context
        self.calls: list[Any] = []
        FakeSmtp.made.append(self)

    def __enter__(self) -> FakeSmtp:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.calls.append("quit")

    def ehlo(self) -> None:
        self.calls.append("ehlo")

    def has_extn(self, name: str) -> bool:
        return name == "starttls" and self.starttls_offered

    def starttls(self, *, context: Any) -> None:
        self.calls.append("starttls")
        self.tls_context = context

    def login(self, user: str, password: str) -> None:
        self.calls.append(("login", user, password))

    def send_message(self, message: EmailMessage, *, from_addr: str) -> None:
        self.calls.append(("send", message["From"], from_addr))


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> type[FakeSmtp]:
    FakeSmtp.made = []
    FakeSmtp.starttls_offered = True
    fake = SimpleNamespace(SMTP=FakeSmtp, SMTP_SSL=type("FakeSmtpSsl", (FakeSmtp,), {}))
    monkeypatch.setattr(notify, "smtplib", fake)
    monkeypatch.setattr(notify.socket, "getfqdn", lambda: "box.example")
    return FakeSmtp


def test_send_email_over_smtp_with_starttls_and_login(smtp):
    message = EmailMessage()
    notify.send_email("smtp://ops%40x:p%40ss@mail.example:2525?from=songbird%40x.org", message, timeout=4.0, environ={})
    (client,) = smtp.made
    assert (type(client).__name__, client.host, client.port, client.timeout) == ("FakeSmtp", "mail.example", 2525, 4.0)
    assert client.calls == [
        "ehlo",
        "starttls",
        "ehlo",
        ("login", "ops@x", "p@ss"),
        ("send", "songbird@x.org", "songbird@x.org"),
        "quit",
    ]


def test_send_email_defaults(smtp):
    smtp.starttls_offered = False
    message = EmailMessage()
    notify.send_email("smtp://", message, timeout=1.0, environ={"SONGBIRD_SMTP_PASSWORD": "unused"})
    (client,) = smtp.made
    assert (client.host, client.port) == ("localhost", 25)
    assert client.calls == ["ehlo", ("send", "songbird@box.example", "songbird@box.example"), "quit"]


def test_send_email_over_tls_with_the_password_from_the_environment(smtp):
    message = EmailMessage()
    message["From"] = "Ops <ops@x.org>"
    notify.send_email("smtps://ops@mail.example", message, timeout=2.0, environ={"SONGBIRD_SMTP_PASSWORD": "pw"})
    (client,) = smtp.made
    assert (type(client).__name__, client.port, client.context is not None) == ("FakeSmtpSsl", 465, True)
    assert client.calls == ["ehlo", ("login", "ops", "pw"), ("send", "Ops <ops@x.org>", "songbird@box.example"), "quit"]
    smtp.made.clear()
    notify.send_email("smtps://ops@mail.example:2465", EmailMessage(), timeout=2.0, environ={})
    assert smtp.made[0].port == 2465 and ("login", "ops", "") in smtp.made[0].calls


# -- mounting ------------------------------------------------------------------------------------


def test_the_base_url_of_links():
    assert (
        default_base_url(ServerConfig(public_url="https://songbird.example.com/x")) == "https://songbird.example.com/x"
    )
    assert default_base_url(ServerConfig(host="127.0.0.1", port=8787)) == "http://127.0.0.1:8787"
    assert default_base_url(ServerConfig(host="::1", port=9)) == "http://[::1]:9"


def test_mounting_without_targets_does_nothing(store):
    app = SimpleNamespace(state=SimpleNamespace())
    timeline = SimpleNamespace(evaluated=[])
    assert mount_notifications(app, store, ServerConfig(), None, timeline) is None  # type: ignore[arg-type]
    assert app.state.notifier is None and timeline.evaluated == []
    assert mount_notifications(app, store, ServerConfig(), monitors_file(), timeline) is None  # type: ignore[arg-type]


def test_mounting_with_targets_wires_the_notifier_and_the_sender(store):
    signer = object()
    app = SimpleNamespace(state=SimpleNamespace(signer=signer))
    timeline = SimpleNamespace(evaluated=[])
    config = ServerConfig(
        host="127.0.0.1", port=8787, notify_backoff_seconds=2.0, notify_backoff_max_seconds=50.0,
        notify_retry_seconds=600.0, notify_idle_seconds=7.0, smtp_url="smtp://127.0.0.1:2525",
    )  # fmt: skip
    sender = mount_notifications(app, store, config, monitors_file({"url": HOOK.url}), timeline)  # type: ignore[arg-type]
    assert sender is not None and sender._thread is None  # not started
    assert (sender.backoff_seconds, sender.backoff_max_seconds, sender.retry_seconds) == (2.0, 50.0, 600.0)
    assert sender.idle_seconds == 7.0
    assert sender.smtp_url == "smtp://127.0.0.1:2525" and sender.queue is store.metadata
    notifier = app.state.notifier
    assert app.state.notification_sender is sender
    assert notifier.targets == (HOOK,) and notifier.base_url == "http://127.0.0.1:8787"
    assert notifier.marks is store and notifier.queue is store.metadata and notifier.signer is signer
    assert timeline.evaluated == [notifier.evaluated] and notifier.queued == [sender.wake]
    sender.stop()


# -- edges found by scripts/mutation -------------------------------------------------------------


def test_a_base_url_is_cut_at_slashes_only():
    assert timeline_link("http://songbirdX/", "session-1", "daily", "", 5).startswith("http://songbirdX/sessions/")


def test_a_bucket_after_one_without_failures_resolves_nothing():
    document = {"buckets": [{"start": 0, "end": 10}, {"start": 10, "end": 20}], "alerts": [alert("m", "a", 10)]}
    assert notify._changes(document, since=0) == [("failed", alert("m", "a", 10))]


def test_the_payload_names_the_session_and_segment_and_ids_keep_them_apart(store):
    first, second = store.create_session("u").id, store.create_session("u").id
    notifier = Notifier(queue_of(store.metadata), [HOOK], marks=store.metadata)
    document = {**DOCUMENT, "segment": "r=1"}
    assert notifier.evaluated(first, document) == 1
    assert notifier.evaluated(second, document) == 1  # the same alert in another session: its own
    other = Notifier(queue_of(store.metadata), [HOOK])
    assert other.evaluated(first, {**DOCUMENT, "segment": "r=2"}) == 1  # another segment: its own
    body = json.loads(next(r for r in queued(store) if r.session_id == second).body)
    assert (body["session"], body["segment"]) == (second, "r=1")


def test_the_process_environment_holds_secrets_by_default(store, monkeypatch):
    monkeypatch.setenv("HOOK_KEY", "from-env")
    enqueue(store, secret_env="HOOK_KEY")
    http = FakeHttp(200)
    assert sender_of(store, http).deliver(claimed(store)) is True
    assert http.posts[0]["headers"][SIGNATURE_HEADER] == signature("from-env", http.posts[0]["data"])


def test_a_notification_due_within_a_second_is_waited_for(store, monkeypatch):
    enqueue(store)
    due = queue_of(store.metadata).next_notification_due()
    assert due is not None
    monkeypatch.setattr(notify, "now_ms", lambda: due - 500)
    http = FakeHttp()
    assert sender_of(store, http, poll_seconds=4.0).run_once() == 0.5
    assert http.posts == []


def test_one_pass_claims_ten(store, monkeypatch):
    enqueue(store, n=11)
    http = FakeHttp(*[200] * 11)
    sender = sender_of(store, http)
    monkeypatch.setattr(notify, "now_ms", lambda: 10**15)
    assert sender.run_once() == 0.0
    assert len(http.posts) == 10


def test_the_sender_without_a_host_name(smtp, monkeypatch):
    monkeypatch.setattr(notify.socket, "getfqdn", lambda: "")
    notify.send_email("smtps://mail.example", EmailMessage(), timeout=3.0, environ={})
    (client,) = smtp.made
    assert (client.host, client.timeout) == ("mail.example", 3.0)
    assert client.calls[-2] == ("send", "songbird@localhost", "songbird@localhost")


# -- an organization's dataset, and what does not change what is sent ------------------------------

ORG_DATASET = ("org 1", "model-a")


def dataset_payload(event: str = "failed", segment: str = "") -> dict[str, Any]:
    return json_payload(event, ALERT, "container-1", segment, "http://u/t", ORG_DATASET)


def test_a_dataset_s_timeline_link_carries_its_token():
    assert timeline_link("http://h:1/", "container-1", "daily", "r=1", 5, dataset=ORG_DATASET, token="9.abc") == (
        "http://h:1/organizations/org%201/datasets/model-a/timeline?granularity=daily&segment=r%3D1&token=9.abc"
        "#bucket-5"
    )
    assert timeline_link("http://h:1", "container-1", "daily", "", 5, dataset=ORG_DATASET) == (
        "http://h:1/organizations/org%201/datasets/model-a/timeline?granularity=daily#bucket-5"
    )


def test_a_dataset_s_payload_names_the_org_and_dataset_instead_of_a_session():
    assert dataset_payload() == {
        "event": "monitor_failed",
        "alert": ALERT,
        "org": "org 1",
        "dataset": "model-a",
        "segment": None,
        "url": "http://u/t",
    }


def test_a_dataset_s_slack_message_and_email_name_the_dataset(store):
    message = slack_payload(dataset_payload())
    assert message["text"] == "Monitor failed on column age of dataset org 1/model-a: p-value 0.001 < 0.05"
    assert message["blocks"][1]["fields"][3] == {"type": "mrkdwn", "text": "*Dataset*\n`org 1/model-a`"}
    email = email_message(_with(mail_record(store), body=json.dumps(dataset_payload())))
    assert email.get_content().startswith("Monitor failed on column age of dataset org 1/model-a.\n")


def test_the_email_s_bucket_is_in_utc_whatever_the_server_s_time_zone(store, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        content = email_message(mail_record(store)).get_content()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert "Bucket:  from 2023-11-14 22:13 UTC\n" in content


def test_starttls_verifies_the_server_s_certificate(smtp):
    notify.send_email("smtp://mail.example", EmailMessage(), timeout=1.0, environ={})
    (client,) = smtp.made
    context = client.tls_context
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_a_dataset_s_notifications_link_with_a_token_and_name_it(store, caplog):
    from whylogs_songbird.server.datasets import check_link_token
    from whylogs_songbird.server.signing import UrlSigner

    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.notify")
    signer = UrlSigner(b"k" * 32)
    datasets = {"container-1": ORG_DATASET}
    notifier = Notifier(
        queue_of(store.metadata), [HOOK], "http://sb:1", dataset_of=datasets.get, signer=signer, link_ttl_seconds=600
    )
    before = int(time_now())
    assert notifier.evaluated("container-1", {**DOCUMENT, "granularity": "daily"}) == 1
    after = int(time_now()) + 1
    (queued_one,) = queued(store)
    body = json.loads(queued_one.body)
    assert (body["org"], body["dataset"], "session" in body) == ("org 1", "model-a", False)
    prefix = "http://sb:1/organizations/org%201/datasets/model-a/timeline?granularity=daily&token="
    assert body["url"].startswith(prefix) and body["url"].endswith("#bucket-20")
    token = body["url"][len(prefix) : -len("#bucket-20")]
    expires = check_link_token(signer, *ORG_DATASET, token)
    assert expires is not None and before + 600 <= expires <= after + 600
    assert check_link_token(UrlSigner(b"other"), *ORG_DATASET, token) is None
    assert [r.getMessage() for r in caplog.records] == ["notifications: 1 queued for dataset org 1/model-a"]


def test_a_dataset_without_a_signer_links_without_a_token_and_a_session_with_one_links_to_itself(store):
    from whylogs_songbird.server.signing import UrlSigner

    datasets = {"container-1": ORG_DATASET}
    unsigned = Notifier(queue_of(store.metadata), [HOOK], "http://sb:1", dataset_of=datasets.get)
    assert unsigned.evaluated("container-1", DOCUMENT) == 1
    session_id = store.create_session("u").id
    signed = Notifier(
        queue_of(store.metadata), [HOOK], "http://sb:1", dataset_of=datasets.get, signer=UrlSigner(b"k" * 32)
    )
    assert signed.evaluated(session_id, DOCUMENT) == 1
    urls = {r.session_id: json.loads(r.body)["url"] for r in queued(store)}
    assert urls == {
        "container-1": "http://sb:1/organizations/org%201/datasets/model-a/timeline?granularity=#bucket-20",
        session_id: f"http://sb:1/sessions/{session_id}/timeline?granularity=#bucket-20",
    }


def test_without_targets_or_changes_no_dataset_is_looked_up(store):
    def dataset_of(container_id: str) -> None:
        raise AssertionError("a dataset was looked up with nothing to send")

    session_id = store.create_session("u").id
    assert Notifier(queue_of(store.metadata), [], dataset_of=dataset_of).evaluated(session_id, DOCUMENT) == 0
    quiet = {"buckets": DOCUMENT["buckets"], "alerts": []}
    assert Notifier(queue_of(store.metadata), [HOOK], dataset_of=dataset_of).evaluated(session_id, quiet) == 0


class RecordingMarks:
    """The store's marks, with every mark written recorded."""

    def __init__(self, store: Store) -> None:
        self.store, self.written = store, []

    def get_derived(self, session_id: str, key: str) -> bytes | None:
        return self.store.metadata.get_derived(session_id, key)

    def put_derived(self, session_id: str, key: str, value: bytes) -> None:
        self.written.append(value)
        self.store.metadata.put_derived(session_id, key, value)


def test_the_mark_is_written_only_when_a_later_bucket_arrives(store):
    session_id = store.create_session("u").id
    marks = RecordingMarks(store)
    notifier = Notifier(queue_of(store.metadata), [HOOK], marks=marks)
    notifier.evaluated(session_id, DOCUMENT)
    notifier.evaluated(session_id, DOCUMENT)  # the same latest bucket: nothing to write
    assert marks.written == [b"20"]


def test_a_bucket_that_failed_after_its_resolution_was_sent_is_notified_again(store):
    session_id = store.create_session("u").id
    both = NotifyTarget(url=HOOK.url, on=("failed", "resolved"))
    notifier = Notifier(queue_of(store.metadata), [both])
    buckets = [{"start": 10, "end": 20}, {"start": 20, "end": 30}]
    assert notifier.evaluated(session_id, {"buckets": buckets, "alerts": [alert("m", "a", 10)]}) == 1  # resolved
    later = {"buckets": buckets, "alerts": [alert("m", "a", 10), alert("m", "a", 20)]}  # a later batch: fails
    assert notifier.evaluated(session_id, later) == 1
    assert [(r.event, r.bucket_start) for r in queued(store)] == [("failed", 20), ("resolved", 20)]


def test_mounting_looks_up_datasets_in_the_store(store):
    app = SimpleNamespace(state=SimpleNamespace(signer=None))
    timeline = SimpleNamespace(evaluated=[])
    sender = mount_notifications(app, store, ServerConfig(), monitors_file({"url": HOOK.url}), timeline)  # type: ignore[arg-type]
    assert sender is not None
    container = store.dataset_container("org-1", "model-a")
    session_id = store.create_session("u").id
    assert app.state.notifier.dataset_of(container.id) == ("org-1", "model-a")
    assert app.state.notifier.dataset_of(session_id) is None
    sender.stop()


def test_stop_waits_for_the_thread_no_longer_than_its_timeout(store):
    import threading

    release = threading.Event()
    stuck = threading.Thread(target=release.wait, args=(5.0,), daemon=True)  # a bound: a join without one fails
    stuck.start()
    sender = NotificationSender(queue_of(store.metadata))
    sender._thread = stuck
    try:
        sender.stop(timeout=0.01)  # a receiver that hangs does not hold the server's shutdown
        assert stuck.is_alive() and sender._thread is None
    finally:
        release.set()
