"""Notifications of failed monitors, over real HTTP: a LocalServer with a monitors file whose
``[[notify]]`` tables point at a receiver (a tiny ``http.server`` on a free loopback port) that
records what it gets. Drifting batches are written through the songbird writer."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import whylogs as why
from conftest import both_stores, free_port
from notify_receiver import Receiver, monitors_file, notify_table, settled
from timeline_data import DAY_MS, SHIFT_DAY, SHIFTED, START_MS, day_frame, reference_frame

import whylogs_songbird
from whylogs_songbird.server import LocalServer
from whylogs_songbird.server.notify import queue_of

SECRET = "s3cret-of-the-receiver"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def write(server: LocalServer, config: Path, day: int, session_id: str) -> None:
    options = {"endpoint": server.url, "config_dir": str(config), "dataset_timestamp": START_MS + day * DAY_MS}
    ok, _ = why.log(day_frame(day)).writer("songbird").option(session_id=session_id, **options).write()
    assert ok


def start_session(server: LocalServer, config: Path) -> str:
    refs = whylogs_songbird.publish_references(
        {"training": why.log(reference_frame())}, endpoint=server.url, config_dir=str(config)
    )
    return refs.session_id


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 90.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@both_stores
def test_a_drifted_batch_gives_one_signed_notification_whose_link_opens(
    server_factory, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SONGBIRD_HOOK_SECRET", SECRET)
    path = monitors_file(tmp_path, notify_table(receiver.url, secret_env="SONGBIRD_HOOK_SECRET"))
    server = server_factory(monitors=path)
    config = tmp_path / "config"
    sid = start_session(server, config)
    write(server, config, SHIFT_DAY - 1, sid)
    write(server, config, SHIFT_DAY, sid)
    wait_until(lambda: receiver.received, "the notification")
    write(server, config, SHIFT_DAY, sid)  # the same bucket again: evaluated again, not notified again
    wait_until(lambda: settled(server), "the monitors of the last batch")
    assert len(receiver.received) == 1
    delivery = receiver.received[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), delivery["body"], hashlib.sha256).hexdigest()
    assert delivery["headers"]["X-Songbird-Signature"] == expected
    payload = json.loads(delivery["body"])
    bucket = START_MS + SHIFT_DAY * DAY_MS
    assert payload["event"] == "monitor_failed" and payload["session"] == sid and payload["segment"] is None
    alert = payload["alert"]
    assert (alert["column"], alert["metric"]) == (SHIFTED, "drift")
    assert (alert["start"], alert["end"]) == (bucket, bucket + DAY_MS)
    assert alert["value"] == "DRIFT" and "DRIFT against the reference" in alert["reason"]
    assert payload["url"].startswith(f"{server.url}/sessions/{sid}/timeline?")
    page = requests.get(payload["url"], timeout=60)
    assert page.status_code == 200 and f'id="bucket-{bucket}"' in page.text
    [record] = queue_of(server.store.metadata).list_notifications()
    assert record.state == "sent" and record.attempts == 1 and receiver.url not in repr(record)


def test_a_receiver_answering_500_for_a_while_gets_it_once_afterwards(
    server_factory, receiver: Receiver, tmp_path: Path
) -> None:
    outage = 6  # the receiver answers 500 to its first six attempts (backing off to the cap of 0.2 s)
    receiver.status = lambda: 200 if receiver.attempts > outage else 500
    path = monitors_file(tmp_path, notify_table(receiver.url))
    server = server_factory(monitors=path, notify_backoff_seconds=0.05, notify_backoff_max_seconds=0.2)
    config = tmp_path / "config"
    sid = start_session(server, config)
    write(server, config, SHIFT_DAY, sid)
    wait_until(lambda: receiver.received, "the notification after the outage")
    wait_until(lambda: settled(server), "the queue to empty")
    assert len(receiver.received) == 1 and receiver.attempts == outage + 1
    [record] = queue_of(server.store.metadata).list_notifications()
    assert record.state == "sent" and record.attempts == receiver.attempts


def test_a_restart_sends_nothing_twice_and_a_pending_one_survives_it(
    server_factory, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.status = lambda: 503
    path = monitors_file(tmp_path, notify_table(receiver.url, on=["failed", "resolved"]))
    data_dir = tmp_path / "data"
    options = {"monitors": path, "data_dir": data_dir}
    options.update(notify_backoff_seconds=0.05, notify_backoff_max_seconds=0.2)
    first = server_factory(**options)
    config = tmp_path / "config"
    sid = start_session(first, config)
    write(first, config, SHIFT_DAY, sid)
    queue = queue_of(first.store.metadata)
    wait_until(lambda: any(r.attempts >= 2 for r in queue.list_notifications()), "a failed attempt or two")
    [pending] = queue.list_notifications()
    assert pending.state == "pending" and pending.last_error == "HTTP 503"
    first.stop()

    receiver.status = lambda: 200
    second = server_factory(**options)
    wait_until(lambda: receiver.received, "the notification queued before the restart")
    write(second, config, SHIFT_DAY, sid)  # the drifted day again: already notified
    write(second, config, SHIFT_DAY + 1, sid)  # a failing day after a failing day: only its own failure
    wait_until(lambda: len(receiver.received) >= 2, "the next day's notification")
    wait_until(lambda: settled(second), "the queue to empty")
    events = [(p["event"], p["alert"]["column"], p["alert"]["start"]) for p in receiver.payloads()]
    assert events == [
        ("monitor_failed", SHIFTED, START_MS + SHIFT_DAY * DAY_MS),
        ("monitor_failed", SHIFTED, START_MS + (SHIFT_DAY + 1) * DAY_MS),
    ]


def test_resolved_and_slack_shape(server_factory, receiver: Receiver, tmp_path: Path) -> None:
    path = monitors_file(tmp_path, notify_table(receiver.url, format="slack", on=["failed", "resolved"]))
    server = server_factory(monitors=path)
    config = tmp_path / "config"
    sid = start_session(server, config)
    write(server, config, SHIFT_DAY, sid)
    wait_until(lambda: len(receiver.received) == 1, "the failure")
    # a clean day after the drifted one resolves the monitor (day 0 has no shift)
    after = START_MS + (SHIFT_DAY + 1) * DAY_MS
    options = {"endpoint": server.url, "config_dir": str(config), "dataset_timestamp": after}
    ok, _ = why.log(day_frame(0)).writer("songbird").option(session_id=sid, **options).write()
    assert ok
    wait_until(lambda: len(receiver.received) == 2, "the resolution")
    wait_until(lambda: settled(server), "the queue to empty")
    failed, resolved = receiver.payloads()
    for message in (failed, resolved):
        # Slack's incoming webhooks: a top-level text (the notification fallback) and layout blocks
        assert set(message) == {"text", "blocks"} and isinstance(message["text"], str) and message["text"]
        header, section, actions = message["blocks"]
        assert header["type"] == "header" and header["text"]["type"] == "plain_text"
        assert len(header["text"]["text"]) <= 150
        assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
        assert 1 <= len(section["fields"]) <= 10 and all(f["type"] == "mrkdwn" for f in section["fields"])
        [button] = actions["elements"]
        assert actions["type"] == "actions" and button["type"] == "button" and button["text"]["type"] == "plain_text"
        assert button["url"].startswith(f"{server.url}/sessions/{sid}/timeline?")
        assert requests.get(button["url"], timeout=60).status_code == 200
    assert failed["text"].startswith(f"Monitor failed on column {SHIFTED}")
    assert resolved["text"].startswith(f"Monitor resolved on column {SHIFTED}")
    assert f"#bucket-{START_MS + (SHIFT_DAY + 1) * DAY_MS}" in resolved["blocks"][2]["elements"][0]["url"]


def test_two_workers_on_one_store_send_each_notification_once(receiver: Receiver, tmp_path: Path) -> None:
    receiver.delay = 0.05  # slow enough that both workers' senders are busy at once
    every_column = '[[monitor]]\ncolumns = ["*"]\nmetric = "count"\nmin = 1000000\n'
    path = monitors_file(tmp_path, notify_table(receiver.url), monitors=every_column)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGBIRD_")}
    command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--workers", "2"]
    command += ["--data-dir", str(tmp_path / "data"), "--monitors", str(path), "--no-access-log"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url), "the server to start", 60)
        server = type("Endpoint", (), {"url": url})()
        config = tmp_path / "config"
        refs = whylogs_songbird.publish_references(
            {"training": why.log(reference_frame())}, endpoint=url, config_dir=str(config)
        )
        days = range(6)
        # the first evaluation of a session looks at its latest bucket only; later ones at every bucket since
        write(server, config, 0, refs.session_id)  # type: ignore[arg-type]
        wait_until(lambda: len(receiver.received) == 4, "the first day's notifications")
        for day in days[1:]:
            write(server, config, day, refs.session_id)  # type: ignore[arg-type]
        expected = {(column, START_MS + day * DAY_MS) for day in days for column in ("score", "age", "income", "color")}
        wait_until(lambda: {(p["alert"]["column"], p["alert"]["start"]) for p in receiver.payloads()} >= expected,
                   "every notification")  # fmt: skip
        # the workers have nothing left: every notification is recorded as sent
        listing = subprocess.run(
            [sys.executable, "-m", "whylogs_songbird", "alerts", "list", "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert listing.returncode == 0, listing.stderr
        assert f"{len(expected)} sent, 0 pending, 0 failed" in listing.stdout
    finally:
        process.terminate()
        process.wait(30)
    keys = [(p["alert"]["column"], p["alert"]["start"]) for p in receiver.payloads()]
    assert sorted(keys) == sorted(expected)  # each once


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code < 500
    except requests.RequestException:
        return False


def test_serve_refuses_a_bad_notify_table(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    """The first case through the real command in its own process, the others through the same
    command's entry point in this one (a process start each was most of the test's time)."""
    from whylogs_songbird.server.cli import main as serve_main

    monkeypatch.delenv("SONGBIRD_UNSET", raising=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGBIRD_")}
    arguments = ["--port", "0", "--data-dir", str(tmp_path / "d")]
    cases = [
        (notify_table("ftp://hooks.example/secret-path"), "[[notify]] table 1, url: url must be an http:// or https://"),
        (notify_table("https://hooks.example/x", format="teams"), 'unknown format \'teams\'; give "json" or "slack"'),
        (notify_table("https://hooks.example/x", on=["fixed"]), 'on takes "failed" and/or "resolved"'),
        (notify_table("https://hooks.example/x", email="a@acme.example"), "give url (a webhook) or email (addresses)"),
        ('[[notify]]\nemail = "oncall"\n', "'oncall' is not an email address"),
        (notify_table("https://hooks.example/x", secret_env="SONGBIRD_UNSET"), "SONGBIRD_UNSET, which is not set"),
    ]  # fmt: skip
    for index, (table, message) in enumerate(cases):
        path = tmp_path / f"m{index}.toml"
        path.write_text('[[monitor]]\ncolumns = ["*"]\nmetric = "drift"\n' + table)
        run = [*arguments, "--monitors", str(path)]
        if index == 0:
            command = [sys.executable, "-m", "whylogs_songbird.server", *run]
            result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
            code, stderr = result.returncode, result.stderr
        else:
            code, stderr = serve_main(run), capsys.readouterr().err
        assert code == 2, stderr
        assert message in " ".join(stderr.split()), stderr
        assert "secret-path" not in stderr


def test_alerts_list_shows_a_failed_delivery_and_retry_sends_it(
    server_factory, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.status = lambda: 404  # a wrong target: not retried until asked
    path = monitors_file(tmp_path, notify_table(receiver.url))
    # the retry is made due by another process, which the server's sender sees at its next idle look
    server = server_factory(monitors=path, data_dir=tmp_path / "data", notify_idle_seconds=0.2)
    config = tmp_path / "config"
    sid = start_session(server, config)
    write(server, config, SHIFT_DAY, sid)
    queue = queue_of(server.store.metadata)
    wait_until(lambda: queue.notification_counts()["failed"] == 1, "the failed delivery")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGBIRD_")}

    def alerts(*args: str, data_dir: Path = tmp_path / "data") -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "whylogs_songbird", "alerts", *args, "--data-dir", str(data_dir)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)

    listing = alerts("list", "--state", "failed")
    assert listing.returncode == 0, listing.stderr
    assert "0 sent, 0 pending, 1 failed" in listing.stdout
    assert (
        "last error: HTTP 404 (not retried" in listing.stdout
        and f"{sid}  drift vs reference / {SHIFTED}" in listing.stdout
    )
    assert "/hooks/" not in listing.stdout  # the webhook's path (its secret, for Slack) is never shown
    receiver.status = lambda: 200
    retried = alerts("retry")
    assert retried.returncode == 0 and "1 notification(s) due now" in retried.stdout
    wait_until(lambda: receiver.received, "the retried notification")
    wait_until(lambda: settled(server), "the queue to empty")
    assert len(receiver.received) == 1 and receiver.attempts == 2
    assert "1 sent, 0 pending, 0 failed" in alerts("list").stdout
    assert alerts("retry", "nonexistent").returncode == 2
    missing = alerts("list", data_dir=tmp_path / "nowhere")
    assert missing.returncode == 2 and "no server data in" in missing.stderr


def test_an_email_target_gets_one_mail_through_a_real_smtp_server(server_factory, tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self) -> None:
            self.messages: list[Any] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
            self.messages.append(envelope)
            return "250 OK"

    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        path = monitors_file(tmp_path, '[[notify]]\nemail = "oncall@acme.example"\n')
        smtp_url = f"smtp://127.0.0.1:{smtp.port}?from=songbird@acme.example"
        server = server_factory(monitors=path, smtp_url=smtp_url)
        config = tmp_path / "config"
        sid = start_session(server, config)
        write(server, config, SHIFT_DAY, sid)
        wait_until(lambda: inbox.messages, "the email")
        write(server, config, SHIFT_DAY, sid)  # the same bucket again: no second mail
        wait_until(lambda: settled(server), "the queue to empty")
    finally:
        smtp.stop()
    [envelope] = inbox.messages
    assert envelope.mail_from == "songbird@acme.example" and envelope.rcpt_tos == ["oncall@acme.example"]
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert mail["Subject"] == f"[songbird] Monitor failed: {SHIFTED} (drift vs reference)"
    text = mail.get_content()
    assert "DRIFT against the reference" in text
    [link] = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("Timeline: ")]
    assert link.startswith(f"{server.url}/sessions/{sid}/timeline?")
    assert requests.get(link, timeout=60).status_code == 200


def test_an_email_target_needs_an_smtp_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the serve command's entry point in this process (test_serve_refuses_a_bad_notify_table
    runs a refused monitors file in a process of its own)."""
    from whylogs_songbird.server.cli import main as serve_main

    path = monitors_file(tmp_path, '[[notify]]\nemail = "oncall@acme.example"\n')
    code = serve_main(["--port", "0", "--data-dir", str(tmp_path / "d"), "--monitors", str(path)])
    assert code == 2 and "sends email: start the server with --smtp-url" in capsys.readouterr().err


def test_a_monitors_file_naming_sessions_notifies_only_about_those(
    server_factory, receiver: Receiver, tmp_path: Path
) -> None:
    path = tmp_path / "monitors.toml"
    # the session ids are known only once created: a first server makes them, a second one watches one
    first = server_factory(data_dir=tmp_path / "data")
    watched, ignored = start_session(first, tmp_path / "c1"), start_session(first, tmp_path / "c2")
    first.stop()
    body = monitors_file(tmp_path, notify_table(receiver.url)).read_text()
    path.write_text(f"sessions = [{json.dumps(watched)}]\n" + body)
    server = server_factory(data_dir=tmp_path / "data", monitors=path)
    write(server, tmp_path / "c2", SHIFT_DAY, ignored)
    write(server, tmp_path / "c1", SHIFT_DAY, watched)
    wait_until(lambda: receiver.received, "the watched session's notification")
    wait_until(lambda: settled(server), "the queue to empty")
    assert [p["session"] for p in receiver.payloads()] == [watched]
    ignored_doc = requests.get(f"{server.url}/api/v1/sessions/{ignored}/timeline", timeout=60).json()
    assert ignored_doc["alerts"] == [] and ignored_doc["columns"][SHIFTED]["drift_category"][-1] == "DRIFT"


@pytest.mark.parametrize("storage_config", ["team"], indirect=True)
def test_two_hosts_on_the_team_store_send_each_notification_once(
    server_factory, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.delay = 0.05  # slow enough that both senders are busy at once
    every_column = '[[monitor]]\ncolumns = ["*"]\nmetric = "count"\nmin = 1000000\n'
    path = monitors_file(tmp_path, notify_table(receiver.url), monitors=every_column)
    hosts = [server_factory(monitors=path), server_factory(monitors=path)]  # two data dirs, one PostgreSQL and S3
    config = tmp_path / "config"
    sid = start_session(hosts[0], config)
    days = range(6)
    write(hosts[0], config, 0, sid)
    wait_until(lambda: len(receiver.received) == 4, "the first day's notifications")
    for day in days[1:]:  # batches may land faster than they are evaluated: no bucket is missed
        write(hosts[day % 2], config, day, sid)
    expected = {(column, START_MS + day * DAY_MS) for day in days for column in ("score", "age", "income", "color")}
    received = lambda: {(p["alert"]["column"], p["alert"]["start"]) for p in receiver.payloads()}  # noqa: E731
    wait_until(lambda: received() >= expected, "every notification")
    wait_until(lambda: all(settled(h) for h in hosts), "both queues to empty")
    keys = [(p["alert"]["column"], p["alert"]["start"]) for p in receiver.payloads()]
    assert sorted(keys) == sorted(expected)  # each once
