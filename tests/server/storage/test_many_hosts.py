"""Several server processes ("hosts") on one PostgreSQL and one S3 bucket (SeaweedFS), restarted
and killed under load: nothing acknowledged is lost, each upload is recorded and summarised once,
shared counters survive a start, monitors run on the host that records a batch, and a page never
waits out another host's claim."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import threading
import time

import psycopg
import pytest
import requests
from conftest import make_profile_bytes
from team_server import TS, link, new_session, new_slot, server_process

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.ingest import LEASE_MS, ClaimHeartbeat, ingest_one
from whylogs_songbird.server.sandbox import Sandbox
from whylogs_songbird.server.serving import open_store
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.storage.s3 import S3BlobStore
from whylogs_songbird.server.store import Store, blob_key, host_id, now_ms

#: Every change of these in the database is logged by a trigger the test installs: how many times
#: each upload was recorded (stored_at set) and summarised (a summary written).
EVENT_LOG = """
CREATE TABLE events (n SERIAL PRIMARY KEY, upload_id TEXT NOT NULL, what TEXT NOT NULL);
CREATE FUNCTION log_recorded() RETURNS trigger AS $$
BEGIN
  IF NEW.stored_at IS DISTINCT FROM OLD.stored_at THEN
    INSERT INTO events (upload_id, what)
      VALUES (NEW.id, CASE WHEN NEW.stored_at IS NULL THEN 'unrecorded' ELSE 'recorded' END);
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE FUNCTION log_summarised() RETURNS trigger AS $$
BEGIN INSERT INTO events (upload_id, what) VALUES (NEW.upload_id, 'summarised'); RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER uploads_recorded AFTER UPDATE ON uploads FOR EACH ROW EXECUTE FUNCTION log_recorded();
CREATE TRIGGER summaries_written AFTER INSERT OR UPDATE ON summaries FOR EACH ROW EXECUTE FUNCTION log_summarised();
"""


@pytest.fixture
def storage_config(request, monkeypatch):
    from conftest import make_store_config

    return make_store_config("team", request, monkeypatch)


@pytest.fixture
def env(s3_service):
    return {**os.environ, **s3_service.env(), "WHYLOGS_NO_ANALYTICS": "True"}


@pytest.fixture
def team_store(storage_config):
    """A Store on the test's PostgreSQL schema and S3 prefix (its tables made), as another host."""
    metadata = PostgresMetadataStore(storage_config["database_url"])
    blobs = S3BlobStore(storage_config["blob_store"], endpoint_url=storage_config["s3_endpoint_url"])
    store = Store(metadata=metadata, blobs=blobs)
    yield store
    store.close()


def events(database_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return [tuple(row) for row in conn.execute("SELECT upload_id, what FROM events ORDER BY n").fetchall()]


#: How long a test waits for what a server process does in the background (a takeover summarises in
#: a sandbox child the server starts: tens of seconds on a loaded machine, about one when idle).
PATIENCE = 240.0


def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_restarts_and_a_kill_under_load_lose_nothing_and_record_and_summarise_each_upload_once(
    storage_config, env, team_store, tmp_path
):
    database_url = storage_config["database_url"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(EVENT_LOG)
    for name in "abc":
        (tmp_path / name).mkdir()
    acknowledged: dict[str, bytes] = {}  # upload id -> the bytes S3 accepted (a 200 to the client)
    stop = threading.Event()
    with (
        server_process(tmp_path / "a", storage_config, env) as (first, _),
        server_process(tmp_path / "b", storage_config, env) as (second, _),
    ):
        session_id = new_session(first)
        variants = [make_profile_bytes(n_rows=3, seed=n) for n in range(4)]

        def load() -> None:
            with requests.Session() as http:
                for i in range(150):
                    if stop.is_set():
                        return
                    url = (first, second)[i % 2]
                    slot = http.post(
                        f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS + i}, timeout=10
                    ).json()
                    if http.put(slot["uploadUrl"], data=variants[i % 4], timeout=10).status_code == 200:
                        acknowledged[slot["id"]] = variants[i % 4]
                    if i % 5 == 0:  # hosts learn what landed as links ask (and their ingest workers look)
                        link(url, session_id, [TS + i])

        loader = threading.Thread(target=load)
        loader.start()
        try:
            # a third host starts (reconciling), is killed, starts again (reconciling) and is stopped
            for ending in (signal.SIGKILL, signal.SIGTERM):
                with server_process(tmp_path / "c", storage_config, env) as (third, proc):
                    seen = len(acknowledged)
                    wait_for(lambda seen=seen: len(acknowledged) >= seen + 25 or not loader.is_alive(), "more uploads")
                    link(third, session_id, [TS])
                    proc.send_signal(ending)
                    proc.wait(timeout=30)
        finally:
            stop.set()
            loader.join(timeout=30)
        assert len(acknowledged) >= 50

        # every acknowledged upload becomes a profile with exactly its bytes, through any host
        for url in (first, second):
            link(url, session_id, [TS])

        def all_ready() -> bool:
            profiles = team_store.list_profiles(session_id)
            return {p.id for p in profiles} >= set(acknowledged) and all(p.ingest_state == "ready" for p in profiles)

        wait_for(all_ready, "every acknowledged upload is recorded and summarised", timeout=120)
        profiles = {p.id: p for p in team_store.list_profiles(session_id)}
        assert set(profiles) == set(acknowledged)
        for upload_id, data in acknowledged.items():
            profile = profiles[upload_id]
            assert profile.sha256 == hashlib.sha256(data).hexdigest()
            assert team_store.read_profile_bytes(profile) == data
        logged = events(database_url)
        for upload_id in acknowledged:
            assert [what for u, what in logged if u == upload_id] == ["recorded", "summarised"], upload_id


def test_shared_counters_survive_a_start_of_any_host(server_factory):
    first = server_factory()
    session_id = new_session(first.url)
    for ts in range(5):
        new_slot(first.url, session_id, ts=TS + ts)

    def stats(server) -> dict:
        return requests.get(f"{server.url}/_local/stats", timeout=10).json()

    wait_for(lambda: stats(first)["upload"] == 5, "the counts reach the store")
    second = server_factory()  # another host starts on the same store (reconciling)
    assert (stats(second)["create_session"], stats(second)["upload"]) == (1, 5)
    new_slot(second.url, session_id)
    wait_for(lambda: stats(first)["upload"] == 6, "both hosts count into one store")
    first.stop()
    again = server_factory(data_dir=first.config.data_dir)  # and the first one restarts
    assert (stats(again)["create_session"], stats(again)["upload"]) == (1, 6)


def test_monitors_run_on_the_team_host_that_records_the_drifted_batch(server_factory, tmp_path, caplog):
    import whylogs as why
    from timeline_data import DAY_MS, SHIFT_DAY, SHIFTED, START_MS, day_frame, reference_frame
    from timeline_server import MONITORS, evaluations, write

    import whylogs_songbird

    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.timeline")
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(MONITORS)
    server = server_factory(monitors=monitors)  # PostgreSQL + S3: clients PUT to S3, the host learns them
    config = tmp_path / "config"
    refs = whylogs_songbird.publish_references(
        {"training": why.log(reference_frame())}, endpoint=server.url, config_dir=str(config)
    )
    sid = refs.session_id
    write(server, config, day_frame(SHIFT_DAY - 1), START_MS + (SHIFT_DAY - 1) * DAY_MS, sid)
    clean = f"bucket from {START_MS + (SHIFT_DAY - 1) * DAY_MS}: 0 failure(s)"
    wait_for(lambda: any(clean in m for m in evaluations(caplog, sid)), "the clean day's monitors", timeout=25)
    write(server, config, day_frame(SHIFT_DAY), START_MS + SHIFT_DAY * DAY_MS, sid)
    drifted = f"bucket from {START_MS + SHIFT_DAY * DAY_MS}: 1 failure(s)"
    wait_for(lambda: any(drifted in m for m in evaluations(caplog, sid)), "the drifted day's monitors", timeout=25)
    failed = [m for m in evaluations(caplog, sid) if m.startswith("monitor failed")]
    assert len(failed) == 1 and f"column {SHIFTED}: DRIFT against the reference" in failed[0]


def test_other_hosts_claims_a_page_answers_at_once_a_dead_ones_is_taken_over_and_a_live_ones_is_not(
    storage_config, env, team_store, tmp_path
):
    database_url = storage_config["database_url"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(EVENT_LOG)
    session = team_store.create_session("other-host")
    ready_slot = team_store.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS)
    pending_slot = team_store.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS + 86_400_000)
    others = team_store.create_session("other-hosts")
    slots = [team_store.create_upload(others.id, "batch", ttl_seconds=600, dataset_timestamp=TS + n) for n in (0, 1)]
    for upload, seed in ((ready_slot, 1), (pending_slot, 2), (slots[0], 3), (slots[1], 4)):
        assert requests.put(team_store.upload_url(upload, 600), data=make_profile_bytes(seed=seed), timeout=10).ok
    # another host records both, summarises one and holds a claim on the other (then, say, dies: its
    # lease, long here so that it outlasts the test on a slow machine, has not run out yet)
    assert {u.id for u in team_store.learn_landed(session.id)} == {ready_slot.id, pending_slot.id}
    assert team_store.metadata.claim_upload_ingest(pending_slot.id, lease_ms=20 * LEASE_MS)
    ready = team_store.get_upload(ready_slot.id)
    assert team_store.metadata.claim_upload_ingest(ready.id, lease_ms=LEASE_MS)
    sandbox = Sandbox()
    try:
        assert ingest_one(team_store, ready, sandbox) is not None
    finally:
        sandbox.close()
    # in the other session one host is summarising `live` for a long time (its heartbeat renews a
    # short lease), and another claimed `stuck` just after, with the same lease, and died (no heartbeat)
    assert {u.id for u in team_store.learn_landed(others.id)} == {u.id for u in slots}
    # a claim pass takes expired claims in this order, one at a time: `live`, were it expired, would
    # be taken before `stuck`, so taking `stuck` over shows a pass found the renewed `live` unexpired
    live, stuck = sorted((team_store.get_upload(u.id) for u in slots), key=lambda u: (u.stored_at, u.id))
    # short, with room for a heartbeat (every third of it) delayed by seconds on a loaded machine
    lease_ms = 6000
    team_store.metadata.owner = "a-live-host"
    assert team_store.metadata.claim_upload_ingest(live.id, lease_ms=lease_ms)
    heartbeat = ClaimHeartbeat(team_store, lease_ms=lease_ms)
    (tmp_path / "a").mkdir()
    with contextlib.ExitStack() as live_host:
        live_host.enter_context(heartbeat.hold(live.id))  # before the start: the short lease would run out
        team_store.metadata.owner = "a-host-that-died"  # after `live`'s claim: its lease ends after that one's
        assert team_store.metadata.claim_upload_ingest(stuck.id, lease_ms=lease_ms)
        team_store.metadata.owner = "a-live-host"  # whose claims the heartbeat renews
        with server_process(tmp_path / "a", storage_config, env, "--claim-lease", "3") as (url, _):
            # a start releases no live claim, and a page does not wait for one
            answer = requests.get(f"{url}/api/v1/sessions/{session.id}/timeline", timeout=PATIENCE)
            assert answer.status_code == 200, answer.text
            document = answer.json()
            assert document["pending"] == [pending_slot.id]
            assert [b["profiles"] for b in document["buckets"]] == [1]  # the summarised batch is shown
            page = requests.get(f"{url}/sessions/{session.id}/timeline", timeout=PATIENCE)
            assert page.status_code == 200 and "still being summarised" in page.text
            answer = link(url, session.id, [TS + 86_400_000])
            assert answer.status_code == 200
            profile_page = requests.get(answer.json()["observatoryUrl"], timeout=PATIENCE)
            assert profile_page.status_code == 202 and "still being summarised" in profile_page.text
            shown = requests.get(link(url, session.id, [TS]).json()["observatoryUrl"], timeout=PATIENCE)
            assert shown.status_code == 200
            assert team_store.get_upload(pending_slot.id).ingest_state == "pending", "the claim was left to its holder"

            # taken over once its lease ran out: by then `live`'s first lease had run out too, so
            # only the heartbeat kept the new host from taking it (in that pass or the one before)
            wait_for(
                lambda: team_store.get_upload(stuck.id).ingest_state == "ready",
                "the dead host's claim is taken over",
                timeout=PATIENCE,
            )
            held = team_store.get_upload(live.id)
            assert (held.ingest_state, held.ingest_tries) == ("pending", 0), "a live host's claim was taken"
            assert held.ingest_lease > now_ms(), "the heartbeat keeps renewing the live claim"
            live_host.close()
            # the live host stops without a verdict (killed just now, say): its work is taken over too
            wait_for(
                lambda: team_store.get_upload(live.id).ingest_state == "ready",
                "the ended claim is taken over",
                timeout=PATIENCE,
            )
    logged = events(database_url)
    for upload in slots:
        assert [what for u, what in logged if u == upload.id] == ["recorded", "summarised"], upload.id


def test_a_team_host_start_records_and_removes_nothing_another_host_may_use_and_lists_no_object(
    storage_config, team_store, tmp_path, caplog
):
    session = team_store.create_session("u")
    recorded, landed = (
        team_store.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS + n) for n in range(2)
    )
    urls = {upload.id: team_store.upload_url(upload, 600) for upload in (recorded, landed)}
    data = make_profile_bytes(n_rows=3, seed=1)

    def client_put(upload) -> str:
        assert requests.put(urls[upload.id], data=data, timeout=10).status_code == 200  # acknowledged
        return blob_key(session.id, upload.id)

    client_put(recorded)
    [kept] = team_store.learn_landed(session.id)  # another host records it and removes its landed bytes
    again = client_put(recorded)  # a client's retry lands afterwards: never recorded, a leftover
    waiting = client_put(landed)  # landed; no host has looked yet
    no_slot = f"profiles/{session.id}/log-{'Z' * 24}.bin"  # bytes no row can ever name
    team_store.blobs.put_bytes(no_slot, b"x")
    spill = tmp_path / "a" / "tmp" / "songbird-body-x.part"  # a body this host was receiving when it died
    spill.parent.mkdir(parents=True)
    spill.write_bytes(b"partial")
    config = ServerConfig(data_dir=tmp_path / "a", **storage_config)
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server"):
        starting = open_store(config)
    try:
        assert starting.metadata.owner == host_id(config.data_dir) != "", "its claims are taken for this host"
        assert [r.getMessage() for r in caplog.records if "reconciled" in r.getMessage()] == [
            "reconciled the store at start: 1 temporary files and 0 profile files without a row removed, "
            "0 rows without bytes reset"
        ]
        assert not spill.exists()
        assert starting.get_upload(landed.id).stored_at is None, "a start leaves landed uploads to the landed look"
        keys = set(starting.blobs.list_keys("profiles/"))
        assert keys == {kept.path, again, waiting, no_slot}, "a start lists no object, so removes none"
        # the sweeper of one host scans now and then: only what no host can still use goes, fresh bytes stay
        assert starting.scan_orphans_if_due(interval_seconds=3600).orphan_blobs == [no_slot]
        assert starting.scan_orphans_if_due(interval_seconds=3600) is None, "one scan per interval, team-wide"
        assert team_store.scan_orphans(grace_seconds=0).orphan_blobs == [again], "once old, a leftover goes"
        [learned] = starting.learn_landed(session.id)
        assert learned.id == landed.id and starting.read_profile_bytes(learned) == data
        assert set(starting.blobs.list_keys("profiles/")) == {kept.path, learned.path}
    finally:
        starting.close()
