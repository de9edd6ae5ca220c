"""profile.writer("songbird").write(), end to end against the local server over real HTTP."""

import logging
import subprocess
import sys
import textwrap
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import STORAGE_NAMES, free_port, make_store_config
from whylogs.api.logger.result_set import ViewResultSet
from whylogs.core import DatasetProfileView
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column

import whylogs_songbird
from whylogs_songbird import PublishError, SongbirdClient, SongbirdWriter, publish_references
from whylogs_songbird.writer import register

ORG_KEY = "testkey.secret:org-test"


@pytest.fixture(params=STORAGE_NAMES)
def storage_config(request, monkeypatch):
    """Every test with a server runs on the embedded store and on PostgreSQL + S3 (SeaweedFS)."""
    return make_store_config(request.param, request, monkeypatch)


@pytest.fixture
def df():
    return pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, None], "n": [1, 2, 3, 4, 5], "city": ["a", "b", "a", "c", "b"]})


@pytest.fixture
def opts(server, tmp_path):
    return {"endpoint": server.url, "config_dir": str(tmp_path / "config")}


def stored_views(server):
    """Every stored profile of every session: (record, deserialized view)."""
    server.store.learn_landed()  # the team store: PUTs went straight to S3 (a no-op otherwise)
    out = []
    for session in server.store.recent_sessions(limit=1000):
        for record in server.store.list_profiles(session.id):
            out.append((record, DatasetProfileView.deserialize(server.store.read_profile_bytes(record))))
    return out


def column_counts(view):
    return {name: col.get_metric("counts").n.value for name, col in view.get_columns().items()}


def test_registration_is_idempotent_and_keeps_builtin_names():
    from whylogs.api.writer import Writers
    from whylogs.api.writer.local import LocalWriter

    register()
    register()
    assert isinstance(Writers.get("songbird"), SongbirdWriter)
    assert isinstance(Writers.get("local"), LocalWriter)
    with pytest.raises(ValueError, match="Unrecognized writer"):
        Writers.get("nope")


@pytest.mark.parametrize("kind", ["result_set", "profile", "view", "view_result_set"])
def test_every_writable_type(server, opts, df, kind):
    results = why.log(df)
    writable = {
        "result_set": results,
        "profile": results.profile(),
        "view": results.view(),
        "view_result_set": ViewResultSet(results.view()),
    }[kind]
    ok, url = writable.writer("songbird").option(**opts).write()
    assert ok is True, url
    parts = urlsplit(url)
    assert parts.path == "/resources/model-1/profiles" and "sessionToken" in parse_qs(parts.query)
    assert requests.get(url, timeout=10).status_code == 200
    ((record, view),) = stored_views(server)
    assert record.kind == "batch"
    assert column_counts(view) == column_counts(results.view())
    assert set(view.get_columns()) == set(df.columns)


def test_segmented_batch_uploads_every_segment_with_tags(server, opts, df):
    results = why.log(df, schema=DatasetSchema(segments=segment_on_column("city")))
    writer = results.writer("songbird").option(**opts)
    ok, pairs = writer.write()
    assert ok is True and len(pairs) == 3 and all(flag for flag, _ in pairs)
    stored = stored_views(server)
    assert sorted(r.segment_tags for r, _ in stored) == [(("city", "a"),), (("city", "b"),), (("city", "c"),)]
    by_city = {r.segment_tags[0][1]: v for r, v in stored}
    assert column_counts(by_city["a"])["x"] == 2 and column_counts(by_city["b"])["x"] == 2
    assert len({r.dataset_timestamp for r, _ in stored}) == 1
    # each segment's link names its segment
    for _, url in pairs:
        assert "segment=city" in url and requests.get(url, timeout=10).status_code == 200


def test_segmented_reference_is_one_batch_call(server, opts, df):
    results = why.log(df, schema=DatasetSchema(segments=segment_on_column("city")))
    ok, pairs = results.writer("songbird").option(reference_profile_name="train", **opts).write()
    assert ok is True and len(pairs) == 3
    stats = server.stats()
    assert stats["references"] == 1 and stats["reference"] == 0 and stats["upload"] == 0
    assert sorted(r.alias for r, _ in stored_views(server)) == ["train[city=a]", "train[city=b]", "train[city=c]"]


def test_reference_by_name(server, opts, df):
    ok, url = why.log(df).writer("songbird").option(reference_profile_name="baseline", **opts).write()
    assert ok is True
    ((record, view),) = stored_views(server)
    assert record.kind == "reference" and record.alias == "baseline"
    assert parse_qs(urlsplit(url).query)["profile"] == [record.id]
    assert server.stats()["reference"] == 1


def test_publish_references_ten_aliases_one_batch_call(server, storage_config, opts, df):
    refs = {f"ref-{i}": why.log(df.assign(n=df.n * i)) for i in range(10)}
    result = publish_references(refs, **opts)
    assert result.ok and len(result.profiles) == 10
    stats = server.stats()
    assert stats["references"] == 1 and stats["reference"] == 0 and stats["create_session"] == 1
    assert stats["put"] == (0 if storage_config else 10)  # team store: the PUTs go straight to S3
    assert sorted(r.alias for r, _ in stored_views(server)) == sorted(refs)
    # combined links chunked by the 3-profile limit: 10 profiles -> 4 links of <= 3 profiles
    assert len(result.observatory_urls) == 4
    for link in result.observatory_urls:
        assert 1 <= len(parse_qs(urlsplit(link).query)["profile"]) <= 3
        assert requests.get(link, timeout=10).status_code == 200
    assert all(p.observatory_url for p in result.profiles)
    html = result._repr_html_()
    assert "<a href=" in html and "10 of 10" in html


def test_session_reused_across_writer_instances(server, opts, df):
    for _ in range(3):
        assert SongbirdWriter(**opts).write(why.log(df))[0]
    assert server.stats()["create_session"] == 1
    sessions = {r.session_id for r, _ in stored_views(server)}
    assert len(sessions) == 1


WRITE_ONCE = textwrap.dedent(
    """
    import os, sys
    os.environ["WHYLOGS_NO_ANALYTICS"] = "True"
    import pandas as pd, whylogs as why, whylogs_songbird
    ok, msg = why.log(pd.DataFrame({"x": [1, 2, 3]})).writer("songbird").option(
        endpoint=sys.argv[1], config_dir=sys.argv[2]).write()
    print(msg)
    sys.exit(0 if ok else 1)
    """
)


def _writers(n, opts):
    return [
        subprocess.Popen(
            [sys.executable, "-c", WRITE_ONCE, opts["endpoint"], opts["config_dir"]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]


# Client-side session locking across processes: the store does not matter, one store is enough.
@pytest.mark.parametrize("storage_config", ["embedded"], indirect=True)
def test_session_reused_across_processes(server, opts):
    for proc in _writers(1, opts) + _writers(1, opts):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert server.stats()["create_session"] == 1


def test_expired_session_is_recovered_once_with_a_warning(server, opts, df, caplog):
    writer = SongbirdWriter(**opts)
    ok, first_url = writer.write(why.log(df))
    assert ok
    old_session = writer.last_result.session_id
    SongbirdClient(server.url).claim_guest_session(old_session, "org-test", api_key=ORG_KEY)
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird"):
        ok, url = SongbirdWriter(**opts).write(why.log(df))
    assert ok, url
    assert server.stats()["create_session"] == 2
    warnings = [r for r in caplog.records if "no longer work" in r.getMessage()]
    assert len(warnings) == 1 and old_session in warnings[0].getMessage()
    assert parse_qs(urlsplit(url).query)["sessionToken"] != [old_session]
    # the new session is stored: the next writer reuses it without creating another
    assert SongbirdWriter(**opts).write(why.log(df))[0]
    assert server.stats()["create_session"] == 2


# The upload size limit is the server's: with S3 the PUT goes to the object store.
@pytest.mark.parametrize("storage_config", ["embedded"], indirect=True)
def test_failing_put_reports_false_and_nothing_landed(server_factory, tmp_path, df):
    srv = server_factory(max_upload_bytes=200)
    opts = {"endpoint": srv.url, "config_dir": str(tmp_path / "cfg"), "max_retries": 0, "outbox": False}
    ok, message = why.log(df).writer("songbird").option(**opts).write()
    assert ok is False and "413" in message and "not published" in message
    results = why.log(df, schema=DatasetSchema(segments=segment_on_column("city")))
    writer = SongbirdWriter(**opts)
    ok, pairs = writer.write(results)
    assert ok is False and all(flag is False for flag, _ in pairs)
    assert writer.last_result is not None and writer.last_result.landed == []
    assert srv.store.list_profiles(writer.last_result.profiles[0].session_id) == []
    with pytest.raises(PublishError) as info:
        publish_references({"a": why.log(df), "b": why.log(df)}, **opts)
    assert info.value.result.landed == [] and "0 of 2" in str(info.value)


def test_bad_input_gives_false_and_a_message(opts, df):
    writer = SongbirdWriter(**opts)
    ok, message = writer.write(df)  # a DataFrame is not a whylogs Writable
    assert ok is False and "Cannot publish a DataFrame" in message
    with pytest.raises(whylogs_songbird.ConfigError):
        writer.option(endpoint="localhost:8787")
    with pytest.raises(whylogs_songbird.ConfigError):
        writer.option(dataset_timestamp=1714608000)


def test_dataset_timestamp_option(server, opts, df):
    ok, url = why.log(df).writer("songbird").option(dataset_timestamp=1714608000000, **opts).write()
    assert ok
    ((record, _),) = stored_views(server)
    assert record.dataset_timestamp == 1714608000000
    assert parse_qs(urlsplit(url).query)["profile"] == ["1714608000000"]


def test_api_key_never_in_writer_repr(opts):
    writer = SongbirdWriter(api_key="id.verysecret:org-1", **opts)
    assert "verysecret" not in repr(writer) and "verysecret" not in repr(writer.settings)


def test_rolling_logger_writes_through_songbird(server, opts, df):
    logger = why.logger(mode="rolling", interval=1, when="H", base_name="rolling", fork=False)
    logger.append_writer("songbird", **opts)
    logger.log(df)
    logger.close()  # flushes the open profile through every writer
    stored = stored_views(server)
    assert len(stored) == 1 and column_counts(stored[0][1])["n"] == 5


def test_write_keywords_apply_to_that_call_only(server, opts, df):
    writer = SongbirdWriter(**opts)
    ok, _ = writer.write(why.log(df), reference_profile_name="one-off")
    assert ok
    ok, _ = writer.write(why.log(df))
    assert ok
    kinds = sorted((r.kind, r.alias) for r, _ in stored_views(server))
    assert kinds == [("batch", None), ("reference", "one-off")]


def test_configuration_mistakes_raise_at_option_and_write_never_raises(df, tmp_path):
    """The writer's contract (issue 22 item 11): a wrong option name or value is a programmer's
    mistake and raises `ConfigError` where it is written (``.option()``, the constructor,
    ``writer("songbird", ...)``); ``write()`` never raises, whatever fails at run time."""
    from whylogs_songbird import ConfigError

    profile = why.log(df)
    for bad in ({"endpiont": "http://127.0.0.1:9"}, {"timeout": -1}, {"endpoint": "localhost:9"}):
        with pytest.raises(ConfigError):
            profile.writer("songbird").option(**bad)
        with pytest.raises(ConfigError):
            SongbirdWriter(**bad)
    assert issubclass(ConfigError, ValueError), "caught by code that expects a ValueError for a bad argument"

    unreachable = f"http://127.0.0.1:{free_port()}"
    writer = SongbirdWriter(endpoint=unreachable, max_retries=0, outbox_dir=str(tmp_path / "outbox"))
    ok, message = writer.write(profile)
    assert ok is False and "could not reach" in message
    ok, message = writer.write(profile, timeout=-1)  # a bad option for one call: reported, not raised
    assert ok is False and "timeout must be more than 0 seconds" in message
    ok, message = writer.write(df)
    assert ok is False and "Cannot publish a DataFrame" in message
