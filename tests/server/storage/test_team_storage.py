"""The S3 blob store and the PostgreSQL metadata store against the real components (services.py)."""

import datetime
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import botocore.auth
import pytest
import requests

from whylogs_songbird.server.storage.s3 import (
    BlobStoreConfigError,
    BlobStoreUnavailableError,
    S3BlobStore,
    S3Location,
)


@pytest.fixture
def s3_env(s3_service, monkeypatch):
    for name, value in s3_service.env().items():
        monkeypatch.setenv(name, value)
    return s3_service


@pytest.fixture
def blobs(s3_env):
    store = S3BlobStore(f"s3://{s3_env.new_bucket_name()}/team/profiles", endpoint_url=s3_env.endpoint_url)
    yield store
    store.close()


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


# -- locations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [("s3://songbird", "songbird", ""), ("s3://my.bucket-1/a/b/", "my.bucket-1", "a/b"), ("s3://abc/x", "abc", "x")],
)
def test_location_parses_bucket_and_prefix(url, bucket, prefix):
    location = S3Location.parse(url)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert location.key("s/u.bin") == (f"{prefix}/s/u.bin" if prefix else "s/u.bin")


@pytest.mark.parametrize(
    "url",
    [
        "songbird",
        "file:///tmp/x",
        "s3://",
        "s3://AB",
        "s3://Upper",
        "s3://key:secret@bucket/p",
        "s3://b..b/p",
        "s3://bucket/p?x=1",
        "s3://bucket/a b",
    ],
)
def test_bad_locations_say_what_to_write(url):
    with pytest.raises(BlobStoreConfigError, match="s3://|bucket|prefix|credentials"):
        S3Location.parse(url)


@pytest.mark.parametrize("name", ["../x", "a/../b", "a//b", "/abs", "a b", "", "a/./b"])
def test_keys_are_only_server_made_names(name):
    with pytest.raises(ValueError, match="not a blob name"):
        S3Location("bucket", "p").key(name)


def test_missing_credentials_are_a_clear_error(s3_service):
    with pytest.raises(BlobStoreConfigError, match="AWS_ACCESS_KEY_ID"):
        S3BlobStore("s3://songbird-nocreds/p", endpoint_url=s3_service.endpoint_url)


def test_wrong_credentials_or_endpoint_are_a_clear_error_without_secrets(s3_service, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_service.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    with pytest.raises(BlobStoreUnavailableError, match="credentials") as caught:
        S3BlobStore("s3://songbird-wrong-secret/p", endpoint_url=s3_service.endpoint_url)
    assert "not-the-secret-at-all" not in str(caught.value)
    with pytest.raises(BlobStoreConfigError, match="endpoint"):
        S3BlobStore("s3://songbird-x/p", endpoint_url="ftp://127.0.0.1:1")


# -- blobs ----------------------------------------------------------------------------------------


def test_bucket_is_created_once_and_reopening_is_fine(s3_env):
    url = f"s3://{s3_env.new_bucket_name()}/p"
    first = S3BlobStore(url, endpoint_url=s3_env.endpoint_url)
    first.put_bytes("a.bin", b"1")
    second = S3BlobStore(url, endpoint_url=s3_env.endpoint_url)
    assert second.get_bytes("a.bin") == b"1"
    assert "secret" not in repr(second).lower() and s3_env.secret_key not in repr(second)


def test_put_get_size_delete_and_list(blobs, tmp_path):
    assert blobs.size("s/one.bin") is None and not blobs.exists("s/one.bin")
    blobs.put_bytes("s/one.bin", b"abc")
    source = tmp_path / "body.part"
    source.write_bytes(b"defgh")
    blobs.put_file("s/two.bin", source)
    assert not source.exists()
    blobs.put_bytes("other/three.bin", b"x")
    assert blobs.size("s/one.bin") == 3 and blobs.get_bytes("s/two.bin") == b"defgh"
    with blobs.open("s/two.bin") as f:
        assert f.read() == b"defgh"
    assert sorted(blobs.list_keys("s/")) == ["s/one.bin", "s/two.bin"]
    assert sorted(blobs.list_sizes()) == [("other/three.bin", 1), ("s/one.bin", 3), ("s/two.bin", 5)]
    blobs.put_bytes("s/onex.bin", b"y")
    assert sorted(blobs.delete_prefix("s/one")) == ["s/one.bin", "s/onex.bin"]
    assert sorted(blobs.list_keys()) == ["other/three.bin", "s/two.bin"] and blobs.delete_prefix("s/one") == []
    blobs.delete("s/one.bin")
    blobs.delete("s/never.bin")
    for read in (blobs.get_bytes, blobs.open):
        with pytest.raises(FileNotFoundError):
            read("s/one.bin")
    assert blobs.reconcile() == []


def test_presigned_put_lands_in_the_store_with_the_ttl_as_expiry(blobs):
    url = blobs.presign_put("sess/up.bin", 900)
    assert dict(parse_qsl(urlsplit(url).query))["X-Amz-Expires"] == "900"
    assert requests.put(url, data=b"profile bytes", timeout=10).status_code == 200
    assert blobs.get_bytes("sess/up.bin") == b"profile bytes"
    # A later PUT to the same URL replaces the bytes (a client retrying its upload).
    assert requests.put(url, data=b"again", timeout=10).status_code == 200
    assert blobs.get_bytes("sess/up.bin") == b"again"


def test_the_store_refuses_tampered_urls(blobs):
    url = blobs.presign_put("sess/good.bin", 900)
    query = dict(parse_qsl(urlsplit(url).query))
    signature = query["X-Amz-Signature"]
    tampered = [
        url.replace("sess/good.bin", "sess/evil.bin"),
        with_query(url, **{"X-Amz-Signature": signature[:-1] + ("0" if signature[-1] != "0" else "1")}),
        with_query(url, **{"X-Amz-Expires": "604800"}),
        urlunsplit(urlsplit(url)._replace(query="")),
    ]
    for bad in tampered:
        answer = requests.put(bad, data=b"forged", timeout=10)
        assert answer.status_code == 403, bad.split("?")[0]
    assert blobs.size("sess/evil.bin") is None and blobs.size("sess/good.bin") is None


def test_the_store_refuses_an_expired_url(blobs, monkeypatch):
    # Sign as if it were an hour ago: a 60 s URL that expired 59 minutes ago.
    an_hour_ago = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=1)
    with monkeypatch.context() as patched:
        patched.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: an_hour_ago)
        expired = blobs.presign_put("sess/late.bin", 60)
    answer = requests.put(expired, data=b"late", timeout=10)
    assert answer.status_code == 403 and "expired" in answer.text.lower()
    assert blobs.size("sess/late.bin") is None


def test_a_version_is_read_up_to_a_limit_and_copied_only_while_it_is_there(blobs):
    from whylogs_songbird.server.storage.base import BlobChangedError

    url = blobs.presign_put("sess/landed.bin", 900)
    assert requests.put(url, data=b"checked bytes", timeout=10).status_code == 200
    version = blobs.read_version("sess/landed.bin", 100)
    assert (version.size, version.data) == (13, b"checked bytes") and version.tag
    assert requests.put(url, data=b"swapped in after the check", timeout=10).status_code == 200
    with pytest.raises(BlobChangedError):  # the store refuses the copy (x-amz-copy-source-if-match)
        blobs.copy_version("sess/landed.bin", "sess/checked.bin", version.tag)
    assert blobs.size("sess/checked.bin") is None

    now = blobs.read_version("sess/landed.bin", 100)
    assert blobs.copy_version("sess/landed.bin", "sess/checked.bin", now.tag) is True  # same ETag: vouched
    assert blobs.get_bytes("sess/checked.bin") == b"swapped in after the check"
    too_big = blobs.read_version("sess/landed.bin", 10)  # the GET's own size decides: nothing is read
    assert (too_big.size, too_big.data) == (26, None)
    assert blobs.read_version("sess/never.bin", 10) is None
    with pytest.raises(FileNotFoundError):
        blobs.copy_version("sess/never.bin", "sess/other.bin", now.tag)


def test_a_presigned_put_url_signs_no_content_length(blobs):
    """S3 signs a Content-Length only as an exact value (there is no range for PUT), and a slot
    request does not say how large the profile is: the URL cannot bound it; the server refuses
    an oversize object by its size instead (see Store.learn_landed)."""
    url = blobs.presign_put("sess/any-size.bin", 900)
    assert dict(parse_qsl(urlsplit(url).query))["X-Amz-SignedHeaders"] == "host"


# -- PostgreSQL -----------------------------------------------------------------------------------


def test_hosts_recording_one_landed_upload_at_once_record_it_once(postgres_service):
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    from whylogs_songbird.server.storage.base import NewUpload, UploadAlreadyStoredError
    from whylogs_songbird.server.storage.postgres import PostgresMetadataStore

    url = postgres_service.new_schema()
    store = PostgresMetadataStore(url)
    try:
        session = store.create_session("u")
        [upload] = store.create_uploads(session.id, [NewUpload(kind="batch", dataset_timestamp=1)], ttl_seconds=60)

        def record(n: int) -> str | None:
            try:
                store.mark_stored(upload.id, key=f"k{n}", size=n, sha256=f"{n:064x}", if_unstored=True)
            except UploadAlreadyStoredError:
                return None
            return f"k{n}"

        def waiting_for_the_row(conn) -> int:
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE uploads%'"
            )
            return int(conn.execute(query).fetchone()[0])

        # Hold the row while 8 writers read it unstored and queue for it: each must see, once it
        # gets the row, that the one before stored it.
        with psycopg.connect(url) as holder, ThreadPoolExecutor(8) as pool:
            holder.execute("SELECT id FROM uploads WHERE id = %s FOR UPDATE", (upload.id,))
            results = [pool.submit(record, n) for n in range(8)]
            with psycopg.connect(url, autocommit=True) as watcher:
                deadline = time.monotonic() + 30
                while waiting_for_the_row(watcher) < 8 and time.monotonic() < deadline:
                    time.sleep(0.01)
            holder.commit()
            winners = [key for key in (r.result() for r in results) if key is not None]
        assert len(winners) == 1
        assert store.get_upload(upload.id).path == winners[0]
        with pytest.raises(UploadAlreadyStoredError):
            store.mark_refused(upload.id, size=1, reason="too large")
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///x.db", "postgresql://"),
        ("mysql://u:hunter2@h/db", "postgresql://"),
        ("postgresql://u:hunter2@h:5432", "names no database"),
    ],
)
def test_bad_database_urls_say_what_to_write_and_hide_passwords(url, message):
    from whylogs_songbird.server.storage.base import StorageConfigError
    from whylogs_songbird.server.storage.postgres import check_url

    with pytest.raises(StorageConfigError, match=message) as caught:
        check_url(url)
    assert "hunter2" not in str(caught.value)


def test_unreachable_database_is_a_clear_error_without_the_password():
    from services import free_port

    from whylogs_songbird.server.storage.postgres import DatabaseUnavailableError, PostgresMetadataStore

    url = f"postgresql://songbird:hunter2@127.0.0.1:{free_port()}/songbird"
    with pytest.raises(DatabaseUnavailableError, match="Could not connect") as caught:
        PostgresMetadataStore(url, connect_timeout=1)
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


def test_schema_is_created_once_even_when_many_processes_start_together(postgres_service):
    from concurrent.futures import ThreadPoolExecutor

    from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
    from whylogs_songbird.server.storage.sql import SCHEMA_VERSION

    url = postgres_service.new_database()

    def open_and_close(_: int) -> int:
        store = PostgresMetadataStore(url, max_size=2)
        try:
            return store.schema_version()
        finally:
            store.close()

    with ThreadPoolExecutor(6) as pool:
        assert set(pool.map(open_and_close, range(6))) == {SCHEMA_VERSION}
    store = PostgresMetadataStore(url)
    try:
        session = store.create_session("u")
        assert store.get_session(session.id) == session and store.session_count() == 1
    finally:
        store.close()


def test_a_newer_schema_is_refused_with_what_to_do(postgres_service):
    import psycopg

    from whylogs_songbird.server.storage.base import StorageConfigError
    from whylogs_songbird.server.storage.postgres import PostgresMetadataStore

    url = postgres_service.new_database()
    PostgresMetadataStore(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '999' WHERE name = 'schema_version'")
    with pytest.raises(StorageConfigError, match="upgrade whylogs-songbird"):
        PostgresMetadataStore(url)


# -- `songbird serve` on storage it cannot use: one error line, no traceback (issue 22 item 2) ------


def serve(tmp_path, *args: str, env: dict | None = None):
    import os
    import subprocess
    import sys

    from services import free_port

    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | (env or {})
    environ["AWS_EC2_METADATA_DISABLED"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "whylogs_songbird.server", "--port", str(free_port()), "--data-dir", str(tmp_path),
         *args],
        capture_output=True, text=True, env=environ, timeout=120,
    )


def assert_one_error_line(done, code: int, *needles: str, secret: str = "") -> None:
    assert done.returncode == code, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr and "File \"" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    if secret:
        assert secret not in done.stderr + done.stdout


def test_serve_with_an_unreachable_database_says_what_to_check_in_one_line(tmp_path):
    from services import free_port

    # the URL's connect_timeout is the wait (the default 10 s is the store tests' to check)
    url = f"postgresql://songbird:hunter2@127.0.0.1:{free_port()}/songbird?connect_timeout=1"
    done = serve(tmp_path, "--database-url", url)
    assert_one_error_line(done, 1, "Could not connect to PostgreSQL", "songbird:***@", "within 1 s", secret="hunter2")


def test_serve_with_a_wrong_s3_secret_or_no_credentials_says_what_to_do_in_one_line(s3_service, tmp_path):
    store = ["--blob-store", f"s3://{s3_service.new_bucket_name()}/p", "--s3-endpoint-url", s3_service.endpoint_url]
    wrong = {"AWS_ACCESS_KEY_ID": s3_service.access_key, "AWS_SECRET_ACCESS_KEY": "not-the-secret-at-all"}
    assert_one_error_line(serve(tmp_path, *store, env=wrong), 1, "credentials", secret="not-the-secret-at-all")
    assert_one_error_line(serve(tmp_path, *store), 2, "AWS_ACCESS_KEY_ID")


def test_the_start_banner_names_the_database_and_the_bucket_never_the_password(tmp_path):
    """Issue 22 item 7: a team server's banner says where things go, not only a local directory."""
    from whylogs_songbird.server.cli import config_from_options, storage_description

    team = config_from_options(
        data_dir=tmp_path, database_url="postgresql://songbird:hunter2@db.internal:5432/songbird",
        blob_store="s3://acme/profiles", s3_endpoint_url="https://s3.acme.internal",
    )
    said = storage_description(team)
    assert "postgresql://songbird:***@db.internal:5432/songbird" in said and "hunter2" not in said
    assert "s3://acme/profiles at https://s3.acme.internal" in said
    assert storage_description(config_from_options(data_dir=tmp_path)) == f"data in {tmp_path}"
