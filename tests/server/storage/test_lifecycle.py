"""Deleting sessions and profiles, on both stores, over real HTTP: everything goes (rows, bytes in
files or S3 objects, summaries, derived artefacts), pages answer 404 at once, and a kill between
the mark and the purge is finished at the next start."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
from conftest import STORAGE_NAMES, make_profile_bytes
from deletion_checks import _keys, _open_store, _rows, _server_process, _summaries, _wait  # noqa: F401
from stored_profiles import store_profile_bytes
from typer.testing import CliRunner

from whylogs_songbird.cli import app as cli_app
from whylogs_songbird.client import SongbirdClient
from whylogs_songbird.errors import SessionNotFoundError, SongbirdApiError
from whylogs_songbird.server.lifecycle import KILL_AFTER_MARK_ENV, deletions
from whylogs_songbird.server.storage.base import new_id
from whylogs_songbird.server.storage.notifications import NewNotification
from whylogs_songbird.session import current_session, new_session

TIMEOUT = 30
TS = 1_700_000_000_000
DAY = 86_400_000

both_stores = pytest.mark.parametrize("storage_config", STORAGE_NAMES, indirect=True)


def _session(url: str) -> str:
    return requests.post(f"{url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]


def _batch(url: str, session_id: str, ts: int, seed: int) -> str:
    slot = requests.post(f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": ts}, timeout=TIMEOUT)
    assert requests.put(slot.json()["uploadUrl"], data=make_profile_bytes(seed=seed), timeout=TIMEOUT).ok
    return slot.json()["id"]


def _reference(url: str, session_id: str, alias: str) -> str:
    slot = requests.post(f"{url}/v0/sessions/{session_id}/reference", json={"alias": alias}, timeout=TIMEOUT)
    assert requests.put(slot.json()["uploadUrl"], data=make_profile_bytes(seed=7), timeout=TIMEOUT).ok
    return slot.json()["id"]


def _link(url: str, session_id: str, timestamps=(), refs=()) -> requests.Response:
    body = {"batchProfileTimestamps": list(timestamps), "referenceProfileIds": list(refs)}
    return requests.post(f"{url}/v0/sessions/observatory-link/{session_id}", json=body, timeout=TIMEOUT)


def _timeline(url: str, session_id: str) -> requests.Response:
    return requests.get(f"{url}/api/v1/sessions/{session_id}/timeline?granularity=day", timeout=TIMEOUT)


@both_stores
def test_deleting_a_session_removes_rows_bytes_summaries_and_derived(server):
    url, store = server.url, server.store
    sid = _session(url)
    _batch(url, sid, TS, 1)
    _batch(url, sid, TS + DAY, 2)
    ref = _reference(url, sid, "baseline")
    assert _link(url, sid, [TS, TS + DAY], [ref]).status_code == 200  # presigned PUTs learned
    late = requests.post(f"{url}/v0/sessions/{sid}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT).json()
    assert requests.put(late["uploadUrl"], data=make_profile_bytes(seed=3), timeout=TIMEOUT).ok  # maybe unlearned
    assert _timeline(url, sid).status_code == 200
    _wait(lambda: _summaries(store, sid) >= 3, "the profiles are summarised")
    assert _rows(store, "derived", "session_id", sid) > 0, "the timeline stored derived artefacts"
    assert len(_keys(store, sid)) >= 3
    other = _session(url)
    kept = _batch(url, other, TS, 9)
    assert _link(url, other, [TS]).status_code == 200

    before = requests.get(f"{url}/_local/stats", timeout=TIMEOUT).json()
    answer = requests.delete(f"{url}/v0/sessions/{sid}", timeout=TIMEOUT)
    assert answer.status_code == 204 and answer.content == b""
    after = requests.get(f"{url}/_local/stats", timeout=TIMEOUT).json()
    assert after["stored_profiles"] == 1 and before["stored_profiles"] >= 4, "the disk used is shown"
    kept_size = store.get_upload(kept).size
    assert after["stored_bytes"] == kept_size < before["stored_bytes"]

    assert requests.get(f"{url}/sessions/{sid}", timeout=TIMEOUT).status_code == 404
    assert _timeline(url, sid).status_code == 404
    assert _link(url, sid, [TS]).status_code == 404
    assert (
        requests.post(f"{url}/v0/sessions/{sid}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT).status_code
        == 404
    )
    again = requests.delete(f"{url}/v0/sessions/{sid}", timeout=TIMEOUT)
    assert again.status_code == 404 and "unknown" in again.json()["message"]
    assert _keys(store, sid) == [], "every byte of the session is gone (files or S3 objects)"
    if store.data_dir is not None and not server.config.database_url:
        assert not (store.data_dir / "profiles" / sid).exists()
    for table, column in (("sessions", "id"), ("uploads", "session_id"), ("derived", "session_id")):
        assert _rows(store, table, column, sid) == 0, table
    assert _summaries(store, sid) == 0
    assert deletions(store).marked_deleted() == 0, "nothing is left half-deleted"
    # the other session is untouched
    assert _link(url, other, [TS]).status_code == 200
    assert store.get_upload(kept) is not None and len(_keys(store, other)) == 1


@both_stores
def test_deleting_one_profile_leaves_the_rest(server):
    url, store = server.url, server.store
    sid = _session(url)
    first = _batch(url, sid, TS, 1)
    _batch(url, sid, TS + DAY, 2)
    ref = _reference(url, sid, "baseline")
    assert _link(url, sid, [TS, TS + DAY], [ref]).status_code == 200
    before = _timeline(url, sid).json()
    first_keys = [k for k in _keys(store, sid) if first in k]
    assert first_keys

    assert requests.delete(f"{url}/v0/sessions/{sid}/profiles/{first}", timeout=TIMEOUT).status_code == 204
    assert _link(url, sid, [TS]).status_code == 404
    assert _link(url, sid, [TS + DAY], [ref]).status_code == 200
    after = _timeline(url, sid).json()
    assert after != before and str(TS) not in str([b.get("start") for b in after.get("buckets", [])])
    assert not [k for k in _keys(store, sid) if first in k], "the profile's bytes are gone"
    assert len(_keys(store, sid)) == 2
    assert _rows(store, "uploads", "id", first) == 0

    assert requests.delete(f"{url}/v0/sessions/{sid}/profiles/{ref}", timeout=TIMEOUT).status_code == 204
    assert _link(url, sid, [], [ref]).status_code == 404
    unknown = requests.delete(f"{url}/v0/sessions/{sid}/profiles/{first}", timeout=TIMEOUT)
    assert unknown.status_code == 404 and first not in unknown.text
    stranger = _session(url)
    theirs = _batch(url, stranger, TS, 5)
    assert requests.delete(f"{url}/v0/sessions/{sid}/profiles/{theirs}", timeout=TIMEOUT).status_code == 404
    assert _link(url, stranger, [TS]).status_code == 200, "another session's profile is not deleted through this one"


def test_claimed_session_cannot_be_deleted_by_a_guest(server):
    from conftest import ANY_ORG_KEY

    sid = _session(server.url)
    _batch(server.url, sid, TS, 1)
    claim = requests.post(
        f"{server.url}/v0/sessions/{sid}/claim",
        params={"org_id": "o"},
        headers={"X-API-Key": ANY_ORG_KEY},
        timeout=TIMEOUT,
    )
    assert claim.status_code == 200
    assert requests.delete(f"{server.url}/v0/sessions/{sid}", timeout=TIMEOUT).status_code == 404
    assert server.store.get_session(sid) is not None


def test_client_and_cli_delete(server, tmp_path):
    client = SongbirdClient(endpoint=server.url, max_retries=0)
    sid = _session(server.url)
    batch = _batch(server.url, sid, TS, 1)
    client.delete_profile(sid, batch)
    with pytest.raises(SongbirdApiError, match="no such profile"):
        client.delete_profile(sid, batch)
    client.delete_session(sid)
    with pytest.raises(SessionNotFoundError):
        client.delete_session(sid)
    client.close()

    config_dir = tmp_path / "config"
    stored = new_session(endpoint=server.url, config_dir=config_dir)
    _batch(server.url, stored, TS, 2)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["session", "delete", "--endpoint", server.url, "--config-dir", str(config_dir)])
    assert result.exit_code == 0, result.output
    assert stored in result.stdout
    assert current_session(endpoint=server.url, config_dir=config_dir) is None, "the stored session is forgotten"
    assert _keys(server.store, stored) == []
    named = _session(server.url)
    result = runner.invoke(
        cli_app, ["session", "delete", named, "--endpoint", server.url, "--config-dir", str(config_dir)]
    )
    assert result.exit_code == 0 and named in result.stdout
    result = runner.invoke(cli_app, ["session", "delete", named, "--endpoint", server.url, "--max-retries", "0"])
    assert result.exit_code != 0 and "unknown" in result.output


# -- a kill between the mark and the purge --------------------------------------------------------


@both_stores
def test_a_kill_after_the_mark_is_finished_at_restart(storage_config, tmp_path):
    env = {**os.environ, "WHYLOGS_NO_ANALYTICS": "True", KILL_AFTER_MARK_ENV: "1"}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with _server_process(data_dir, storage_config, env) as (url, proc):
        sid = _session(url)
        keep = _session(url)
        for n in range(3):
            _batch(url, sid, TS + n * DAY, n)
        _batch(url, keep, TS, 9)
        assert _link(url, sid, [TS]).status_code == 200 and _link(url, keep, [TS]).status_code == 200
        with pytest.raises(requests.ConnectionError):
            requests.delete(f"{url}/v0/sessions/{sid}", timeout=TIMEOUT)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    store = _open_store(data_dir, storage_config)
    try:
        assert store.guest_session(sid) is None, "the mark was committed before the kill"
        assert store.list_profiles(sid) == []
        assert len(_keys(store, sid)) >= 3, "the kill came before the purge: the bytes are still there"
    finally:
        store.close()

    env.pop(KILL_AFTER_MARK_ENV)
    with _server_process(data_dir, storage_config, env) as (url, _):
        assert requests.get(f"{url}/sessions/{sid}", timeout=TIMEOUT).status_code == 404
        store = _open_store(data_dir, storage_config)
        try:
            _wait(lambda: _keys(store, sid) == [] and deletions(store).marked_deleted() == 0, "the restart purges")
            assert _rows(store, "uploads", "session_id", sid) == 0 and _rows(store, "sessions", "id", sid) == 0
            assert len(_keys(store, keep)) == 1
        finally:
            store.close()
        assert _link(url, keep, [TS]).status_code == 200


def test_unknown_ids_answer_404(server):
    assert requests.delete(f"{server.url}/v0/sessions/{new_id('session')}", timeout=TIMEOUT).status_code == 404
    assert requests.delete(f"{server.url}/v0/sessions/not-an-id", timeout=TIMEOUT).status_code == 404
    sid = _session(server.url)
    for bad in ("x", new_id("log"), "..%2F..%2Fetc"):
        assert requests.delete(f"{server.url}/v0/sessions/{sid}/profiles/{bad}", timeout=TIMEOUT).status_code == 404


# -- retention ------------------------------------------------------------------------------------


@both_stores
def test_a_retention_of_seconds_removes_old_profiles_and_keeps_new_ones(server_factory):
    retention = 10
    server = server_factory(retention_seconds=retention)
    url, store = server.url, server.store
    lone = _session(url)
    lone_batch = _batch(url, lone, TS, 1)
    mixed = _session(url)
    old = _batch(url, mixed, TS, 2)
    assert _link(url, lone, [TS]).status_code == 200 and _link(url, mixed, [TS]).status_code == 200
    stored_old = store.metadata.get_upload(old).stored_at
    # a second profile, uploaded once the first is half the retention old
    _wait(lambda: time.time() * 1000 - stored_old > retention * 500, "time passes", seconds=retention)
    new = _batch(url, mixed, TS + DAY, 3)
    assert _link(url, mixed, [TS + DAY]).status_code == 200
    stored_new = store.metadata.get_upload(new).stored_at

    _wait(lambda: store.get_upload(old) is None, "the old profile is deleted", seconds=retention * 4)
    # the new one is half the retention younger: the sweep that took the old one kept it
    assert store.get_upload(new) is not None and store.get_upload(new).stored_at == stored_new
    assert _link(url, mixed, [TS + DAY]).status_code == 200, "the new profile is kept"
    assert [k for k in _keys(store, mixed) if new in k]
    _wait(lambda: not [k for k in _keys(store, mixed) if old in k], "the old one's bytes are removed")
    assert _link(url, mixed, [TS]).status_code == 404
    _wait(lambda: store.guest_session(lone) is None, "a session left with nothing goes too")
    _wait(lambda: _keys(store, lone) == [] and store.metadata.get_upload(lone_batch) is None, "and its bytes")
    assert requests.get(f"{url}/sessions/{lone}", timeout=TIMEOUT).status_code == 404


def test_retention_durations_on_the_command_line():
    from whylogs_songbird.server.cli import parse_args
    from whylogs_songbird.server.durations import parse_duration

    assert [parse_duration(t) for t in ("400d", "12h", "15m", "30s", "2w")] == [
        400 * 86400,
        12 * 3600,
        900,
        30,
        14 * 86400,
    ]
    for bad in ("", "12", "0s", "-1d", "1.5h", "10y", "d"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)
    assert parse_args(["--retention", "12h"]).retention_seconds == 43200
    assert parse_args([]).retention_seconds is None


@both_stores
def test_purge_claims_are_exclusive_until_their_lease_ends_and_purging_twice_is_harmless(storage_config, tmp_path):
    from whylogs_songbird.server.lifecycle import purge

    data_dir = tmp_path / "shared"
    one, two = _open_store(data_dir, storage_config), _open_store(data_dir, storage_config)
    try:
        session = one.create_session("u")
        upload = one.create_upload(session.id, "batch", ttl_seconds=60, dataset_timestamp=TS)
        store_profile_bytes(one, upload.id, make_profile_bytes(seed=1))
        queued = NewNotification(
            id="n1", target="https://hooks.example", url="https://hooks.example/x", format="json", secret_env=None,
            event="fail", session_id=session.id, monitor="m", column="c", segment="", bucket_start=TS, body="{}",
        )  # fmt: skip
        assert one.metadata.enqueue_notifications([queued]) == 1  # type: ignore[attr-defined]
        one.metadata.put_metric_snapshot(session.id, "{}")  # type: ignore[attr-defined]
        assert deletions(one).mark_session_deleted(session.id)
        assert _rows(one, "notifications", "session_id", session.id) == 0, "nothing is sent about a deleted session"
        assert _rows(one, "metric_snapshots", "session_id", session.id) == 0
        assert not deletions(two).mark_session_deleted(session.id), "marked once"
        assert two.guest_session(session.id) is None and two.get_upload(upload.id) is None
        held = deletions(one).claim_purges(lease_ms=60_000)
        assert [(i.kind, i.session_id) for i in held] == [("session", session.id)]
        assert deletions(two).claim_purges(lease_ms=60_000) == [], "another host does not take held work"
        assert deletions(one).claim_purges(lease_ms=60_000) == []
        assert deletions(two).release_purge_claims() == 1  # what a restart does
        taken = deletions(two).claim_purges(lease_ms=1)
        assert [i.session_id for i in taken] == [session.id]
        _wait(lambda: bool(deletions(one).claim_purges(lease_ms=60_000)), "a lease that ran out is taken over")
        purge(two, taken[0])
        purge(one, taken[0])  # the lost holder finishing late changes nothing
        assert deletions(one).marked_deleted() == 0 and _keys(one, session.id) == []
        assert _rows(one, "uploads", "session_id", session.id) == 0
    finally:
        one.close()
        two.close()
