"""The outbox: a write that finally fails is kept on disk and delivered later, exactly once."""

import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import whylogs as why
from conftest import http_server_thread
from loopback import Relay, wait_until
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column

import whylogs_songbird  # noqa: F401
from whylogs_songbird import SongbirdWriter, publish_references
from whylogs_songbird.config import resolve_settings
from whylogs_songbird.outbox import Outbox

# Not in the outbox modules' mutation set (each test here starts a server): test_outbox_store.py and
# test_outbox_delivery.py hold storage.py and delivery.py for scripts/mutation.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def df():
    return pd.DataFrame({"x": [1.0, 2.0, 3.0], "city": ["a", "b", "a"]})


def all_profiles(server):
    return [p for s in server.store.recent_sessions(limit=100) for p in server.store.list_profiles(s.id)]


def test_server_down_then_up_then_flush_delivers_each_profile_once(server_factory, tmp_path, df):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    config_dir = tmp_path / "config"
    opts = {"endpoint": endpoint, "config_dir": str(config_dir), "timeout": 1, "max_retries": 1}

    ok, message = why.log(df).writer("songbird").option(**opts).write()
    assert ok is False and "saved to the outbox" in message and "songbird outbox flush" in message
    segmented = why.log(df, schema=DatasetSchema(segments=segment_on_column("city")))
    assert SongbirdWriter(**opts).write(segmented)[0] is False
    with pytest.raises(whylogs_songbird.PublishError):
        publish_references({"train": why.log(df), "test": why.log(df)}, **opts)

    outbox = Outbox(config_dir / "outbox")
    entries = outbox.entries()
    assert len(entries) == 5
    assert sorted(e.alias or "" for e in entries) == ["", "", "", "test", "train"]

    server = server_factory(port=port)
    report = outbox.flush(resolve_settings({"config_dir": config_dir, "timeout": 5, "max_retries": 1}))
    assert report.ok and len(report.delivered) == 5
    assert outbox.entries() == [] and files_in(config_dir / "outbox") == []
    stored = all_profiles(server)
    assert len(stored) == 5
    assert sorted(p.alias or "" for p in stored) == ["", "", "", "test", "train"]
    assert sorted(p.segment_tags for p in stored if p.kind == "batch") == [(), (("city", "a"),), (("city", "b"),)]

    # flushing again sends nothing more
    assert outbox.flush(resolve_settings({"config_dir": config_dir})).delivered == []
    assert len(all_profiles(server)) == 5


def test_interrupted_flush_rerun_sends_nothing_twice(server_factory, tmp_path, df, monkeypatch):
    port = free_port()
    config_dir = tmp_path / "config"
    opts = {"endpoint": f"http://127.0.0.1:{port}", "config_dir": str(config_dir), "timeout": 1, "max_retries": 0}
    for _ in range(3):
        assert why.log(df).writer("songbird").option(**opts).write()[0] is False
    server = server_factory(port=port)
    outbox = Outbox(config_dir / "outbox")

    real_remove = Outbox.remove
    calls = {"n": 0}

    def crash_after_first_put(self, entry):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash after the PUT, before the entry was removed")
        real_remove(self, entry)

    monkeypatch.setattr(Outbox, "remove", crash_after_first_put)
    with pytest.raises(KeyboardInterrupt):
        outbox.flush(resolve_settings({"config_dir": config_dir}))
    monkeypatch.setattr(Outbox, "remove", real_remove)
    assert len(outbox.entries()) == 2  # one delivered and removed, one delivered but not removed, one not sent
    assert len(all_profiles(server)) == 2

    report = outbox.flush(resolve_settings({"config_dir": config_dir}))
    assert report.ok and outbox.entries() == []
    assert len(all_profiles(server)) == 3, "the interrupted entry was re-PUT to its own slot, not sent twice"
    assert server.stats()["upload"] == 3


def test_outbox_off_keeps_nothing(tmp_path, df):
    config_dir = tmp_path / "config"
    opts = {
        "endpoint": f"http://127.0.0.1:{free_port()}",
        "config_dir": str(config_dir),
        "timeout": 1,
        "max_retries": 0,
        "outbox": False,
    }
    ok, message = why.log(df).writer("songbird").option(**opts).write()
    assert ok is False and "outbox" not in message
    assert Outbox(config_dir / "outbox").entries() == []


def test_refused_profiles_are_not_kept(server_factory, tmp_path, df):
    srv = server_factory(max_upload_bytes=100)
    config_dir = tmp_path / "config"
    ok, message = why.log(df).writer("songbird").option(endpoint=srv.url, config_dir=str(config_dir)).write()
    assert ok is False and "413" in message and "outbox" not in message
    assert Outbox(config_dir / "outbox").entries() == []


def test_flush_delivers_into_the_pinned_session(server_factory, tmp_path, df):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    config_dir = tmp_path / "config"
    server = server_factory(port=port)
    pinned = whylogs_songbird.SongbirdClient(endpoint).create_session("someone").id
    server.stop()
    opts = {"endpoint": endpoint, "config_dir": str(config_dir), "timeout": 1, "max_retries": 0, "session_id": pinned}
    assert why.log(df).writer("songbird").option(**opts).write()[0] is False
    server = server_factory(port=port, data_dir=server.data_dir)
    outbox = Outbox(config_dir / "outbox")
    (entry,) = outbox.entries()
    assert entry.pinned_session_id == pinned
    assert outbox.flush(resolve_settings({"config_dir": config_dir})).ok
    assert [p.session_id for p in all_profiles(server)] == [pinned]
    assert server.stats()["create_session"] == 0


def test_a_session_lock_held_too_long_is_a_retryable_typed_error(tmp_path, df):
    from filelock import FileLock

    from whylogs_songbird.errors import SessionBusyError
    from whylogs_songbird.outbox import is_retryable
    from whylogs_songbird.session import SessionStore

    config_dir = tmp_path / "config"
    store = SessionStore(config_dir)
    store._file_lock.timeout = 0.2
    other_process = FileLock(str(config_dir / "sessions.json.lock"), thread_local=False)
    config_dir.mkdir(parents=True)
    with other_process, pytest.raises(SessionBusyError, match="try again") as info:
        store.user_id()
    assert is_retryable(info.value)
    assert store.user_id()  # the lock is usable again afterwards


class AnswerDroppingProxy:
    """A loopback HTTP proxy in front of a real server that, while ``drop_put_answers`` is set,
    forwards each PUT (so the server stores it) but closes the connection instead of answering."""

    def __init__(self, upstream_port: int) -> None:
        import http.client
        import http.server

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                if self.command == "PUT" and proxy.drop_put_answers:
                    proxy.dropped += 1
                    self.close_connection = True
                    return  # stored upstream; the client never hears back
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _relay

            def log_message(self, *args):
                pass

        self.drop_put_answers = True
        self.dropped = 0
        self.handler = Handler


def test_a_put_whose_answer_was_lost_is_not_stored_twice(server, tmp_path, df):
    proxy = AnswerDroppingProxy(int(server.url.rsplit(":", 1)[1]))
    with http_server_thread(proxy.handler) as proxy_url:
        config_dir = tmp_path / "config"
        opts = {"endpoint": proxy_url, "config_dir": str(config_dir), "timeout": 5, "max_retries": 1, "backoff": 0}
        ok, message = why.log(df).writer("songbird").option(**opts).write()
        assert ok is False and "outbox" in message
        assert proxy.dropped == 2  # the PUT and its retry both reached the server
        assert len(all_profiles(server)) == 1, "stored by the server, though the writer never heard"
        proxy.drop_put_answers = False
        report = Outbox(config_dir / "outbox").flush(resolve_settings({"config_dir": config_dir}))
        assert report.ok and len(report.delivered) == 1
        assert len(all_profiles(server)) == 1, "the flush replaced the bytes in the same slot"
        assert server.stats()["upload"] == 1


# -- what a flush leaves behind, its lock, and expired upload URLs --------------------------


def flush_outbox(config_dir, **options):
    """Flush the outbox of ``config_dir`` as `songbird outbox flush` does; the FlushReport."""
    return Outbox(config_dir / "outbox").flush(resolve_settings({"config_dir": config_dir, **options}))


def files_in(directory):
    """Entry files (``.json`` intents and ``.bin`` profiles) in ``directory``, by name."""
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".json", ".bin", ".tmp"))


def keep_one(tmp_path, df):
    """A profile written while nothing listens: one outbox entry. Returns (port, config_dir)."""
    port = free_port()
    config_dir = tmp_path / "config"
    opts = {"endpoint": f"http://127.0.0.1:{port}", "config_dir": str(config_dir), "timeout": 1, "max_retries": 0}
    assert why.log(df).writer("songbird").option(**opts).write()[0] is False
    assert len(files_in(config_dir / "outbox")) == 2
    return port, config_dir


def test_a_delivered_entry_leaves_no_file_behind(server_factory, tmp_path, df):
    port, config_dir = keep_one(tmp_path, df)
    server = server_factory(port=port)
    report = flush_outbox(config_dir)
    assert report.ok and len(report.delivered) == 1 and len(all_profiles(server)) == 1
    assert files_in(config_dir / "outbox") == [], "neither the .json intent nor the .bin profile is left"


def test_remove_deletes_both_files_of_an_entry(tmp_path, make_profile_bytes):
    outbox = Outbox(tmp_path / "outbox")
    kept = [
        outbox.save(
            endpoint="http://127.0.0.1:1",
            kind="batch",
            data=make_profile_bytes(),
            dataset_timestamp=1_700_000_000_000 + i,
            alias=None,
            segment_tags=(),
            error="down",
        )
        for i in range(2)
    ]
    outbox.remove(kept[0])
    assert files_in(tmp_path / "outbox") == [f"{kept[1].id}.bin", f"{kept[1].id}.json"]
    assert [e.id for e in outbox.entries()] == [kept[1].id]


def test_only_one_flush_runs_at_a_time(server_factory, tmp_path, df):
    port, config_dir = keep_one(tmp_path, df)
    server = server_factory()
    release = threading.Event()

    def hold_first_put(method, path):
        if method == "PUT" and relay.count("put") == 1:
            release.wait(timeout=30)
        return None

    relay = Relay(server.url, hold_first_put, port=port)  # where the entry was meant to go
    with relay.running():
        reports = []
        first = threading.Thread(target=lambda: reports.append(flush_outbox(config_dir)))
        first.start()
        try:
            assert wait_until(lambda: relay.in_flight["put"] == 1), "the first flush is in its PUT"
            with pytest.raises(whylogs_songbird.SongbirdError, match="Another flush .* is running"):
                flush_outbox(config_dir)
        finally:
            release.set()
            first.join(30)
    assert reports[0].ok and len(reports[0].delivered) == 1
    assert relay.count("put") == 1 and len(all_profiles(server)) == 1
    assert flush_outbox(config_dir).delivered == [], "the lock is free again, and nothing is left"


def test_a_flush_after_the_upload_url_expired_asks_for_a_new_slot(server_factory, tmp_path, make_profile_bytes):
    server = server_factory(url_ttl_seconds=1)
    client = whylogs_songbird.SongbirdClient(server.url)
    session_id = client.create_session("me").id
    old = client.create_dataset_profile_upload(session_id, 1_700_000_000_000)
    config_dir = tmp_path / "config"
    Outbox(config_dir / "outbox").save(
        endpoint=server.url,
        kind="batch",
        data=make_profile_bytes(),
        dataset_timestamp=1_700_000_000_000,
        alias=None,
        segment_tags=(),
        error="the PUT's answer was lost",
        pinned_session_id=session_id,
        slot=(session_id, old.id, old.upload_url),
    )
    expires = int(parse_qs(urlsplit(old.upload_url).query)["expires"][0])
    assert wait_until(lambda: time.time() > expires, timeout=5), "the slot's URL has expired"
    report = flush_outbox(config_dir)
    assert report.ok, report.failed
    (stored,) = server.store.list_profiles(session_id)
    assert stored.id != old.id, "delivered through a new slot"
    assert files_in(config_dir / "outbox") == []
