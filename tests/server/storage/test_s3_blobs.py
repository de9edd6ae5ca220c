"""The S3 blob store (whylogs_songbird/server/storage/s3.py): locations and keys, the client it
configures, and what each answer of the object store becomes.

What the store does with objects runs against a real SeaweedFS (the session's, tests/services.py).
The refusals an object store can answer (403, 412, a dropped connection...) are played by a fake
boto3 client at the module's seam, ``S3BlobStore._client``, raising botocore's own exceptions;
such a store is opened with ``create_bucket=False`` against a closed port, so it sends nothing.
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from whylogs_songbird.server.storage import s3 as s3_module
from whylogs_songbird.server.storage.base import BlobChangedError, BlobVersion
from whylogs_songbird.server.storage.s3 import (
    _SPOOL_BYTES,
    DEFAULT_REGION,
    BlobNotFoundError,
    BlobStoreConfigError,
    BlobStoreUnavailableError,
    S3BlobStore,
    S3Location,
    _error_code,
    _etag,
    _status,
    open_blobs,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/storage/s3.py")

REFUSED_HINT = "check the bucket, the endpoint URL and that the AWS credentials may read and write it."


# -- locations and keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "text"),
    [
        ("s3://abc", "abc", "", "s3://abc"),
        ("s3://abc/", "abc", "", "s3://abc"),
        ("s3://a" + "b" * 61 + "c/x", "a" + "b" * 61 + "c", "x", "s3://a" + "b" * 61 + "c/x"),
        ("s3://my.bucket-1//a/b.c/_d-/", "my.bucket-1", "a/b.c/_d-", "s3://my.bucket-1/a/b.c/_d-"),
        ("s3://0a9/P", "0a9", "P", "s3://0a9/P"),
        ("s3://abc/team/X/", "abc", "team/X", "s3://abc/team/X"),  # only slashes leave its ends
    ],
)
def test_a_location_is_a_bucket_and_a_prefix(url, bucket, prefix, text):
    location = S3Location.parse(url)
    assert (location.bucket, location.prefix, str(location)) == (bucket, prefix, text)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("abc/x", "blob store must look like s3://BUCKET/PREFIX, got 'abc/x'"),
        ("s3:///x", "blob store must look like s3://BUCKET/PREFIX, got 's3:///x'"),
        ("s3a://abc/x", "blob store must look like s3://BUCKET/PREFIX, got 's3a://abc/x'"),
        ("s3://abc/x?v=1", "blob store URL takes no credentials, query or fragment: 's3://abc/x?v=1'"),
        ("s3://abc/x#f", "blob store URL takes no credentials, query or fragment: 's3://abc/x#f'"),
        ("s3://k:s@abc/x", "blob store URL takes no credentials, query or fragment: 's3://k:s@abc/x'"),
        ("s3://ab", "'ab' is not a valid bucket name: use 3-63 lowercase letters, digits, dots and dashes"),
        (
            "s3://" + "a" * 64,
            f"{'a' * 64!r} is not a valid bucket name: use 3-63 lowercase letters, digits, dots and dashes",
        ),
        ("s3://-abc", "'-abc' is not a valid bucket name: use 3-63 lowercase letters, digits, dots and dashes"),
        ("s3://abc-", "'abc-' is not a valid bucket name: use 3-63 lowercase letters, digits, dots and dashes"),
        ("s3://a_c", "'a_c' is not a valid bucket name: use 3-63 lowercase letters, digits, dots and dashes"),
        ("s3://a..c", "'a..c' is not a valid bucket name: use 3-63 lowercase letters, digits, dots and dashes"),
        ("s3://abc/a b", "prefix 'a b' must be path segments of letters, digits and . _ -"),
        ("s3://abc/a//b", "prefix 'a//b' must be path segments of letters, digits and . _ -"),
    ],
)
def test_a_bad_location_says_what_to_write(url, message):
    with pytest.raises(BlobStoreConfigError) as caught:
        S3Location.parse(url)
    assert str(caught.value) == message


def test_a_long_valid_bucket_at_63_is_taken_and_64_refused():
    assert S3Location.parse("s3://" + "a" * 63).bucket == "a" * 63
    with pytest.raises(BlobStoreConfigError):
        S3Location.parse("s3://" + "a" * 64)


@pytest.mark.parametrize(
    ("prefix", "name", "key"),
    [("", "s/u.bin", "s/u.bin"), ("team/p", "s/u.bin", "team/p/s/u.bin"), ("p", "a.b_c-D9", "p/a.b_c-D9")],
)
def test_a_key_is_the_name_under_the_prefix(prefix, name, key):
    assert S3Location("bucket", prefix).key(name) == key


@pytest.mark.parametrize("name", ["..", ".", "a/..", "./a", "a/./b", "a b", "a//b", "/a", "a/", "", "a\nb"])
def test_only_names_the_server_makes_are_keys(name):
    with pytest.raises(ValueError) as caught:
        S3Location("bucket", "p").key(name)
    assert str(caught.value) == f"not a blob name the server makes: {name!r}"


def test_a_refused_name_is_shown_cut_at_80_characters():
    with pytest.raises(ValueError) as caught:
        S3Location("bucket", "p").key("x" * 80 + " tail")
    assert str(caught.value) == f"not a blob name the server makes: {'x' * 80!r}"


# -- reading botocore's answers --------------------------------------------------------------------


def client_error(code: str = "", status: int | None = None, operation: str = "HeadObject") -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": "m"}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, operation)  # type: ignore[arg-type]


def test_error_codes_and_statuses_are_read_from_the_response():
    assert (_error_code(client_error("NoSuchKey", 404)), _status(client_error("NoSuchKey", 404))) == ("NoSuchKey", 404)
    assert (_error_code(client_error("", None)), _status(client_error("", None))) == ("", None)
    error = ClientError({}, "HeadObject")  # type: ignore[typeddict-item]
    assert (_error_code(error), _status(error)) == ("", None)
    other = ValueError("no response")
    assert (_error_code(other), _status(other)) == ("", None)
    odd = ValueError()
    odd.response = "not a dict"  # type: ignore[attr-defined]
    assert (_error_code(odd), _status(odd)) == ("", None)
    as_text = ValueError()
    as_text.response = {"ResponseMetadata": {"HTTPStatusCode": "503"}}  # type: ignore[attr-defined]
    assert _status(as_text) == 503


@pytest.mark.parametrize(
    ("answer", "tag"), [({"ETag": '"abc"'}, "abc"), ({"ETag": "abc"}, "abc"), ({"ETag": '"X1X"'}, "X1X"), ({}, "")]
)
def test_an_etag_is_read_without_its_quotes(answer, tag):
    assert _etag(answer) == tag


# -- opening ---------------------------------------------------------------------------------------


@pytest.fixture
def fake_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def offline(url: str = "s3://bucket/team/p", **kwargs: Any) -> S3BlobStore:
    """A store that sends nothing (no bucket check, a closed port) for tests that fake its client."""
    return S3BlobStore(url, endpoint_url="http://127.0.0.1:1", create_bucket=False, **kwargs)


def test_the_client_is_configured_for_any_s3_compatible_store(fake_credentials):
    store = offline(max_connections=7)
    config = store._client.meta.config
    assert (config.signature_version, config.s3, config.retries) == (
        "s3v4",
        {"addressing_style": "path"},
        {"mode": "standard", "total_max_attempts": 5},  # botocore counts the first try: 4 retries
    )
    assert (config.max_pool_connections, config.connect_timeout, config.read_timeout, config.tcp_keepalive) == (
        7,
        5,
        60,
        True,
    )
    assert offline()._client.meta.config.max_pool_connections == 32
    assert (store._client.meta.region_name, store._client.meta.endpoint_url) == ("us-east-1", "http://127.0.0.1:1")


def test_without_an_endpoint_aws_chooses_its_addressing_style(fake_credentials):
    store = S3BlobStore("s3://bucket/p", create_bucket=False)
    assert (store.endpoint_url, store._client.meta.config.s3) == (None, {"addressing_style": "auto"})
    assert repr(store) == "S3BlobStore('s3://bucket/p')"


def test_an_endpoint_loses_its_trailing_slash_and_shows_in_the_repr(fake_credentials):
    store = S3BlobStore("s3://bucket/p", endpoint_url="http://127.0.0.1:1/", create_bucket=False)
    assert store.endpoint_url == "http://127.0.0.1:1"
    assert repr(store) == "S3BlobStore('s3://bucket/p', endpoint_url='http://127.0.0.1:1')"
    assert "fake-secret" not in repr(store)


@pytest.mark.parametrize(
    "endpoint", ["ftp://127.0.0.1:1", "127.0.0.1:9000", "http://", "http://key:secret@127.0.0.1:1", "https:///x"]
)
def test_a_bad_endpoint_says_what_to_write(fake_credentials, endpoint):
    with pytest.raises(BlobStoreConfigError) as caught:
        S3BlobStore("s3://bucket/p", endpoint_url=endpoint, create_bucket=False)
    assert str(caught.value) == (
        f"S3 endpoint URL must be http(s)://HOST[:PORT] without credentials, got {endpoint.rstrip('/')!r}"
    )


def test_only_trailing_slashes_leave_an_endpoint(fake_credentials):
    """A path prefix of a store behind a proxy keeps its letters: only the slashes after it go."""
    store = S3BlobStore("s3://bucket/p", endpoint_url="http://127.0.0.1:1/BOX//", create_bucket=False)
    assert store.endpoint_url == "http://127.0.0.1:1/BOX"


def test_every_botocore_session_shares_the_first_ones_service_loader(monkeypatch):
    """Each store gets a fresh botocore session (credentials looked up anew), but the service
    descriptions are loaded once per process: the second session is handed the first one's loader."""
    monkeypatch.setattr(s3_module, "_LOADER", None)
    first = s3_module._botocore_session()
    loader = first.get_component("data_loader")
    assert loader is not None and s3_module._LOADER is loader
    second = s3_module._botocore_session()
    assert second is not first
    assert second.get_component("data_loader") is loader
    assert s3_module._LOADER is loader


def test_a_stores_client_reads_the_service_descriptions_of_the_process_wide_loader(fake_credentials):
    first, second = offline(), offline()
    assert first._client._loader is second._client._loader is s3_module._LOADER


def test_https_endpoints_are_taken(fake_credentials):
    assert S3BlobStore("s3://b-1/p", endpoint_url="https://127.0.0.1:1", create_bucket=False).endpoint_url == (
        "https://127.0.0.1:1"
    )


def test_without_credentials_the_error_says_which_variables_to_set(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(BlobStoreConfigError) as caught:
        offline()
    assert str(caught.value) == (
        "No S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(or an AWS profile or instance role) for the S3 blob store."
    )


def test_the_region_comes_from_the_aws_settings_else_us_east_1(fake_credentials, monkeypatch):
    assert DEFAULT_REGION == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert offline().region == "eu-west-3"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    store = offline()
    assert (store.region, store._client.meta.region_name) == ("ap-south-1", "ap-south-1")  # the client's too
    monkeypatch.delenv("AWS_REGION")
    store = offline()
    assert (store.region, store._client.meta.region_name) == ("us-east-1", "us-east-1")


# -- a fake client for the refusals ----------------------------------------------------------------


class FakeBody:
    def __init__(self, data: bytes, fail: Exception | None = None) -> None:
        self.stream = io.BytesIO(data)
        self.fail = fail
        self.closed = False
        self.asked: list[int | None] = []

    def read(self, size: int | None = None) -> bytes:
        self.asked.append(size)
        if self.fail is not None:
            raise self.fail
        return self.stream.read() if size is None else self.stream.read(size)

    def iter_chunks(self, size: int):
        self.asked.append(size)
        while chunk := self.stream.read(size):
            yield chunk
            if self.fail is not None:
                raise self.fail

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """Answers each S3 call with what ``answers`` holds for it (an exception is raised) and records the call."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, operation: str) -> Any:
        if operation not in self.answers:
            raise AttributeError(operation)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((operation, kwargs if not args else {"args": args, **kwargs}))
            answer = self.answers[operation]
            if isinstance(answer, BaseException):
                raise answer
            return answer(*args, **kwargs) if callable(answer) else answer

        return call


@pytest.fixture
def faked(fake_credentials):
    def make(**answers: Any) -> tuple[S3BlobStore, FakeClient]:
        store = offline()
        store._client = FakeClient(**answers)
        return store, store._client

    return make


def refused(action: str, code: str) -> str:
    return f"The S3 blob store s3://bucket/team/p refused to {action} ({code}); {REFUSED_HINT}"


DROPPED = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


def test_an_existing_bucket_is_not_created(faked):
    store, client = faked(head_bucket={})
    store.ensure_bucket()
    assert client.calls == [("head_bucket", {"Bucket": "bucket"})]


@pytest.mark.parametrize(
    "missing",
    [
        client_error("", 404),
        client_error("", 400),
        client_error("NoSuchBucket"),
        client_error("404"),
        client_error("NotFound"),
    ],
)
def test_a_missing_bucket_is_created(faked, missing, caplog):
    store, client = faked(head_bucket=missing, create_bucket={})
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.storage"):
        store.ensure_bucket()
    assert [r.getMessage() for r in caplog.records] == ["created the bucket bucket"]
    assert client.calls == [("head_bucket", {"Bucket": "bucket"}), ("create_bucket", {"Bucket": "bucket"})]


@pytest.mark.parametrize("code", ["BucketAlreadyOwnedByYou", "BucketAlreadyExists"])
def test_a_bucket_another_worker_created_meanwhile_is_fine(faked, code):
    store, _ = faked(head_bucket=client_error("", 404), create_bucket=client_error(code, 409))
    store.ensure_bucket()


def test_a_bucket_that_cannot_be_opened_or_created_says_so(faked):
    store, client = faked(head_bucket=client_error("AccessDenied", 403))
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.ensure_bucket()
    assert str(caught.value) == refused("open the bucket", "AccessDenied")
    assert [name for name, _ in client.calls] == ["head_bucket"]
    store, _ = faked(head_bucket=DROPPED)
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.ensure_bucket()
    assert str(caught.value) == refused(
        "answer (is the endpoint URL right and the store running?)", "EndpointConnectionError"
    )
    store, _ = faked(head_bucket=client_error("", 404), create_bucket=client_error("TooManyBuckets", 400))
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.ensure_bucket()
    assert str(caught.value) == refused("create the bucket", "TooManyBuckets")
    store, _ = faked(head_bucket=client_error("", 404), create_bucket=DROPPED)
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.ensure_bucket()
    assert str(caught.value) == refused("create the bucket", "EndpointConnectionError")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_code_less_refusal_is_named_by_its_exception(faked):
    store, _ = faked(head_bucket=client_error("", 500))
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.ensure_bucket()
    assert str(caught.value) == refused("open the bucket", "ClientError")


def test_on_aws_outside_us_east_1_the_bucket_is_made_in_the_region(fake_credentials, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    store = S3BlobStore("s3://bucket/p", create_bucket=False)
    store._client = client = FakeClient(head_bucket=client_error("", 404), create_bucket={})
    store.ensure_bucket()
    assert client.calls[1] == (
        "create_bucket",
        {"Bucket": "bucket", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-3"}},
    )
    for endpoint, region in (("http://127.0.0.1:1", "eu-west-3"), (None, "us-east-1")):
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
        store = S3BlobStore("s3://bucket/p", endpoint_url=endpoint, create_bucket=False)
        store._client = client = FakeClient(head_bucket=client_error("", 404), create_bucket={})
        store.ensure_bucket()
        assert client.calls[1] == ("create_bucket", {"Bucket": "bucket"})


def test_a_presigned_url_needs_a_positive_ttl(faked):
    store, _ = faked(generate_presigned_url="http://signed")
    for ttl in (0, -5):
        with pytest.raises(ValueError) as caught:
            store.presign_put("a.bin", ttl)
        assert str(caught.value) == "ttl_seconds must be positive"
    assert store.presign_put("a.bin", 1) == "http://signed"


def test_a_presigned_url_is_a_put_of_the_key_for_whole_seconds(faked):
    store, client = faked(generate_presigned_url="http://signed")
    store.presign_put("s/a.bin", 90.7)  # type: ignore[arg-type]
    assert client.calls == [
        (
            "generate_presigned_url",
            {
                "args": ("put_object",),
                "Params": {"Bucket": "bucket", "Key": "team/p/s/a.bin"},
                "ExpiresIn": 90,
                "HttpMethod": "PUT",
            },
        )
    ]


@pytest.mark.parametrize(
    "missing",
    [client_error("", 404), client_error("404", 400), client_error("NoSuchKey", 400), client_error("NotFound")],
)
def test_a_missing_object_has_no_size(faked, missing):
    store, client = faked(head_object=missing)
    assert store.size("s/a.bin") is None and store.exists("s/a.bin") is False
    assert client.calls[0] == ("head_object", {"Bucket": "bucket", "Key": "team/p/s/a.bin"})


def test_a_size_is_the_head_s_content_length(faked):
    store, _ = faked(head_object={"ContentLength": 12})
    assert (store.size("a"), store.exists("a")) == (12, True)
    store, _ = faked(head_object={"ContentLength": 0})
    assert (store.size("a"), store.exists("a")) == (0, True)


@pytest.mark.parametrize(
    ("error", "code"), [(client_error("AccessDenied", 403), "AccessDenied"), (DROPPED, "EndpointConnectionError")]
)
def test_a_refused_head_says_so(faked, error, code):
    store, _ = faked(head_object=error)
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.size("a")
    assert str(caught.value) == refused("look up an object", code)


@pytest.mark.parametrize(
    "missing", [client_error("", 404), client_error("NoSuchKey", 400), client_error("404"), client_error("NotFound")]
)
def test_reading_a_missing_object_is_file_not_found(faked, missing):
    store, _ = faked(get_object=missing)
    for read in (store.get_bytes, store.open):
        with pytest.raises(BlobNotFoundError) as caught:
            read("s/a.bin")
        assert isinstance(caught.value, FileNotFoundError) and str(caught.value) == "s/a.bin"
    assert store.read_version("s/a.bin", 10) is None


@pytest.mark.parametrize(
    ("error", "code"), [(client_error("AccessDenied", 403), "AccessDenied"), (DROPPED, "EndpointConnectionError")]
)
def test_a_refused_read_says_so(faked, error, code):
    store, _ = faked(get_object=error)
    for read in (store.get_bytes, store.open, lambda key: store.read_version(key, 10)):
        with pytest.raises(BlobStoreUnavailableError) as caught:
            read("a")
        assert str(caught.value) == refused("read an object", code)


def test_bytes_are_read_whole_and_the_body_closed(faked):
    body = FakeBody(b"abc")
    store, client = faked(get_object={"Body": body})
    assert store.get_bytes("a") == b"abc" and body.closed
    assert client.calls == [("get_object", {"Bucket": "bucket", "Key": "team/p/a"})]


def test_a_read_cut_off_says_so_and_closes_the_body(faked):
    cut = ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
    body = FakeBody(b"abc", fail=cut)
    store, _ = faked(get_object={"Body": body})
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.get_bytes("a")
    assert str(caught.value) == refused("read an object", "ReadTimeoutError") and body.closed
    body = FakeBody(b"abc", fail=cut)
    store, _ = faked(get_object={"Body": body, "ContentLength": 3, "ETag": '"t"'})
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.read_version("a", 10)
    assert str(caught.value) == refused("read an object", "ReadTimeoutError") and body.closed


def version_of(data: bytes, length: int, limit: int) -> tuple[BlobVersion | None, FakeBody]:
    body = FakeBody(data)
    store = offline()
    store._client = FakeClient(get_object={"Body": body, "ContentLength": length, "ETag": '"tag-1"'})
    return store.read_version("a", limit), body


def test_a_version_is_read_up_to_its_limit_inclusive(fake_credentials):
    version, body = version_of(b"12345", 5, 5)
    assert version == BlobVersion(size=5, tag="tag-1", data=b"12345")
    assert (version.data, body.asked, body.closed) == (b"12345", [6], True)
    version, body = version_of(b"123456", 6, 5)  # one byte over: not read at all
    assert (version, version.data, body.asked, body.closed) == (BlobVersion(6, "tag-1"), None, [], True)


def test_a_body_longer_than_its_length_is_not_taken(fake_credentials):
    version, body = version_of(b"1234567", 3, 5)  # the store said 3 bytes, sent more
    assert (version, version.data, body.asked) == (BlobVersion(6, "tag-1"), None, [6])


def test_a_copy_is_conditional_on_the_tag_and_vouched_only_for_the_same_tag(faked):
    store, client = faked(copy_object={"CopyObjectResult": {"ETag": '"tag-1"'}})
    assert store.copy_version("s/a.bin", "s/b.bin", "tag-1") is True
    assert client.calls == [
        (
            "copy_object",
            {
                "Bucket": "bucket",
                "Key": "team/p/s/b.bin",
                "CopySource": {"Bucket": "bucket", "Key": "team/p/s/a.bin"},
                "CopySourceIfMatch": '"tag-1"',
            },
        )
    ]
    store, _ = faked(copy_object={"CopyObjectResult": {"ETag": '"other"'}})
    assert store.copy_version("a", "b", "tag-1") is False
    store, _ = faked(copy_object={})
    assert store.copy_version("a", "b", "tag-1") is False
    for odd in ("None", "XXXX"):  # no ETag in the answer is no match, whatever the tag
        assert store.copy_version("a", "b", odd) is False
    store, _ = faked(copy_object={"CopyObjectResult": {"ETag": '"Xt"'}})
    assert store.copy_version("a", "b", "Xt") is True


@pytest.mark.parametrize("changed", [client_error("", 412), client_error("PreconditionFailed", 400)])
def test_a_copy_of_a_replaced_object_is_refused(faked, changed):
    store, _ = faked(copy_object=changed)
    with pytest.raises(BlobChangedError) as caught:
        store.copy_version("a", "b", "t")
    assert str(caught.value) == "a"


@pytest.mark.parametrize(
    "missing", [client_error("", 404), client_error("NoSuchKey", 400), client_error("404"), client_error("NotFound")]
)
def test_a_copy_of_a_missing_object_is_file_not_found(faked, missing):
    store, _ = faked(copy_object=missing)
    with pytest.raises(BlobNotFoundError) as caught:
        store.copy_version("a", "b", "t")
    assert str(caught.value) == "a"


@pytest.mark.parametrize(
    ("error", "code"), [(client_error("AccessDenied", 403), "AccessDenied"), (DROPPED, "EndpointConnectionError")]
)
def test_a_refused_copy_says_so(faked, error, code):
    store, _ = faked(copy_object=error)
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.copy_version("a", "b", "t")
    assert str(caught.value) == refused("copy an object", code)


def test_an_opened_object_is_a_seekable_file_read_in_mebibyte_chunks(faked):
    assert _SPOOL_BYTES == 8 * 1024 * 1024
    data = bytes(range(256)) * 5000  # over one chunk
    body = FakeBody(data)
    store, _ = faked(get_object={"Body": body})
    with store.open("a") as opened:
        assert opened.tell() == 0 and opened.read() == data
        assert opened._max_size == _SPOOL_BYTES  # type: ignore[attr-defined]
        assert not opened._rolled  # type: ignore[attr-defined]
    assert body.asked == [1024 * 1024] and body.closed


def test_an_opened_object_over_8_mib_spills_to_disk(faked):
    body = FakeBody(b"x" * (_SPOOL_BYTES + 1))
    store, _ = faked(get_object={"Body": body})
    with store.open("a") as opened:
        assert opened._rolled  # type: ignore[attr-defined]
        assert len(opened.read()) == _SPOOL_BYTES + 1


def test_an_open_cut_off_says_so_and_closes_everything(faked):
    body = FakeBody(b"x" * (3 * 1024 * 1024), fail=ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    store, _ = faked(get_object={"Body": body})
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.open("a")
    assert str(caught.value) == refused("read an object", "ReadTimeoutError") and body.closed
    body = FakeBody(b"x" * (3 * 1024 * 1024), fail=KeyboardInterrupt())
    store, _ = faked(get_object={"Body": body})
    with pytest.raises(KeyboardInterrupt):
        store.open("a")
    assert body.closed


@pytest.mark.parametrize(
    ("error", "code"), [(client_error("AccessDenied", 403), "AccessDenied"), (DROPPED, "EndpointConnectionError")]
)
def test_a_refused_write_says_so_and_keeps_the_file(faked, tmp_path, error, code):
    store, _ = faked(put_object=error, upload_file=error)
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.put_bytes("a", b"1")
    assert str(caught.value) == refused("store an object", code)
    source = tmp_path / "body.part"
    source.write_bytes(b"1")
    with pytest.raises(BlobStoreUnavailableError) as caught:
        store.put_file("a", source)
    assert str(caught.value) == refused("store an object", code) and source.read_bytes() == b"1"


def test_a_file_the_upload_already_moved_away_is_fine(faked, tmp_path):
    source = tmp_path / "body.part"
    source.write_bytes(b"1")
    store, _ = faked(upload_file=lambda path, *_: Path(path).unlink())
    store.put_file("a", source)
    assert not source.exists()


def test_writes_name_the_key_under_the_prefix(faked, tmp_path):
    store, client = faked(put_object={}, upload_file=None)
    store.put_bytes("s/a", b"1")
    source = tmp_path / "body.part"
    source.write_bytes(b"2")
    store.put_file("s/b", source)
    assert client.calls == [
        ("put_object", {"Bucket": "bucket", "Key": "team/p/s/a", "Body": b"1"}),
        ("upload_file", {"args": (str(source), "bucket", "team/p/s/b")}),
    ]
    assert not source.exists()


def test_deleting_a_missing_object_is_fine_and_a_refusal_is_not(faked):
    store, client = faked(delete_object=client_error("NoSuchKey", 404))
    store.delete("s/a")
    assert client.calls == [("delete_object", {"Bucket": "bucket", "Key": "team/p/s/a"})]
    for error, code in ((client_error("AccessDenied", 403), "AccessDenied"), (DROPPED, "EndpointConnectionError")):
        store, _ = faked(delete_object=error)
        with pytest.raises(BlobStoreUnavailableError) as caught:
            store.delete("a")
        assert str(caught.value) == refused("delete an object", code)


class FakePaginator:
    def __init__(self, pages: list[dict[str, Any]] | Exception) -> None:
        self.pages = pages
        self.asked: list[dict[str, Any]] = []

    def paginate(self, **kwargs: Any):
        self.asked.append(kwargs)
        if isinstance(self.pages, Exception):
            raise self.pages
        yield from self.pages


def at(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


def test_listing_walks_every_page_without_the_store_s_prefix(faked):
    pages = [
        {"Contents": [{"Key": "team/p/s/a", "Size": 3, "LastModified": at(1_767_225_600_123)}]},
        {},
        {"Contents": [{"Key": "team/p/s/b", "Size": 0, "LastModified": at(1_767_225_601_000)}]},
    ]
    paginator = FakePaginator(pages)
    store, client = faked(get_paginator=paginator)
    assert list(store.list_stamped("s/")) == [("s/a", 3, 1_767_225_600_123), ("s/b", 0, 1_767_225_601_000)]
    assert paginator.asked == [{"Bucket": "bucket", "Prefix": "team/p/s/"}]
    assert client.calls == [("get_paginator", {"args": ("list_objects_v2",)})]
    assert list(store.list_sizes("s/")) == [("s/a", 3), ("s/b", 0)]
    assert list(store.list_sizes()) == [("s/a", 3), ("s/b", 0)]
    assert paginator.asked[-1] == {"Bucket": "bucket", "Prefix": "team/p/"}
    assert list(store.list_keys()) == ["s/a", "s/b"]
    assert paginator.asked[-1] == {"Bucket": "bucket", "Prefix": "team/p/"}


def test_deleting_a_prefix_deletes_each_listed_key_and_returns_them(faked):
    listed = [{"Key": f"team/p/s/{n}", "Size": 1, "LastModified": at(1)} for n in "ab"]
    paginator = FakePaginator([{"Contents": listed}])
    store, client = faked(get_paginator=paginator, delete_object=None)
    assert store.delete_prefix("s/") == ["s/a", "s/b"]
    assert paginator.asked == [{"Bucket": "bucket", "Prefix": "team/p/s/"}]
    assert client.calls[1:] == [
        ("delete_object", {"Bucket": "bucket", "Key": "team/p/s/a"}),
        ("delete_object", {"Bucket": "bucket", "Key": "team/p/s/b"}),
    ]
    empty = FakePaginator([{}])
    store, client = faked(get_paginator=empty, delete_object=None)
    assert store.delete_prefix("x/") == [] and [c[0] for c in client.calls] == ["get_paginator"]


def test_listing_a_store_without_prefix_lists_the_bucket(fake_credentials):
    store = offline("s3://bucket")
    paginator = FakePaginator([{"Contents": [{"Key": "s/a", "Size": 1, "LastModified": at(1000)}]}])
    store._client = FakeClient(get_paginator=paginator)
    assert list(store.list_stamped()) == [("s/a", 1, 1000)]
    assert paginator.asked == [{"Bucket": "bucket", "Prefix": ""}]


def test_a_refused_listing_says_so(faked):
    for error, code in ((client_error("AccessDenied", 403), "AccessDenied"), (DROPPED, "EndpointConnectionError")):
        store, _ = faked(get_paginator=FakePaginator(error))
        with pytest.raises(BlobStoreUnavailableError) as caught:
            list(store.list_stamped())
        assert str(caught.value) == refused("list objects", code)


def test_close_closes_the_client_and_tolerates_one_without_close(faked):
    store, client = faked(close=None)
    store.close()
    assert client.calls == [("close", {})]
    store._client = object()  # a client without close()
    store.close()


def test_temp_files_go_to_the_temp_dir_made_on_demand(fake_credentials, tmp_path):
    store = offline(temp_dir=tmp_path / "data" / "tmp")
    fd, path = store.new_temp_file()
    os.close(fd)
    fd, second = store.new_temp_file()  # the dir exists now: fine
    os.close(fd)
    assert path.parent == second.parent == tmp_path / "data" / "tmp" and path != second
    assert path.name.startswith("songbird-body-") and path.name.endswith(".part")
    fd, path = offline().new_temp_file()
    os.close(fd)
    assert path.parent == Path(tempfile.gettempdir())
    path.unlink()
    assert offline().reconcile() == []


def test_a_start_removes_the_bodies_its_host_was_receiving_and_nothing_else(fake_credentials, tmp_path):
    store = offline(temp_dir=tmp_path / "data" / "tmp")
    assert store.reconcile() == []  # no temp dir yet
    fd, leftover = store.new_temp_file()  # a body being received when the host died
    os.close(fd)
    other = tmp_path / "data" / "tmp" / "notes.txt"
    other.write_text("not a body")
    assert store.reconcile() == [f"tmp/{leftover.name}"]
    assert not leftover.exists() and other.exists()
    assert store.reconcile() == []


def test_a_leftover_that_cannot_be_removed_does_not_stop_the_others(fake_credentials, tmp_path):
    store = offline(temp_dir=tmp_path / "tmp")
    (tmp_path / "tmp" / "songbird-body-a.part").mkdir(parents=True)  # unlink() refuses a directory
    (tmp_path / "tmp" / "songbird-body-b.part").write_bytes(b"part")
    assert store.reconcile() == ["tmp/songbird-body-b.part"]
    assert (tmp_path / "tmp" / "songbird-body-a.part").is_dir()


# -- against SeaweedFS -----------------------------------------------------------------------------


@pytest.fixture
def s3_env(s3_service, monkeypatch):
    for name, value in s3_service.env().items():
        monkeypatch.setenv(name, value)
    return s3_service


def test_opening_creates_the_bucket_unless_asked_not_to(s3_env, tmp_path):
    name = s3_env.new_bucket_name()
    raw = s3_env.client()
    untouched = S3BlobStore(f"s3://{name}/p", endpoint_url=s3_env.endpoint_url, create_bucket=False)
    with pytest.raises(ClientError):
        raw.head_bucket(Bucket=name)
    opened = open_blobs(f"s3://{name}/p", endpoint_url=s3_env.endpoint_url + "/", data_dir=tmp_path)
    raw.head_bucket(Bucket=name)  # now there
    assert opened.temp_dir == tmp_path / "tmp" and opened.presigns_uploads is True
    assert open_blobs(f"s3://{name}/p", endpoint_url=s3_env.endpoint_url).temp_dir is None
    untouched.close()
    opened.close()
    opened.close()


def test_objects_round_trip_with_their_etag_and_time(s3_env):
    store = S3BlobStore(f"s3://{s3_env.new_bucket_name()}/team/p", endpoint_url=s3_env.endpoint_url)
    before = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000) - 60_000
    store.put_bytes("s/a.bin", b"hello")
    assert s3_env.client().get_object(Bucket=store.location.bucket, Key="team/p/s/a.bin")["Body"].read() == b"hello"
    version = store.read_version("s/a.bin", 5)
    assert version == BlobVersion(size=5, tag="5d41402abc4b2a76b9719d911017c592", data=b"hello")  # md5("hello")
    assert store.copy_version("s/a.bin", "s/b.bin", version.tag) is True
    [(key, size, modified)] = [row for row in store.list_stamped("s/b")]
    assert (key, size) == ("s/b.bin", 5) and modified > before
    url = store.presign_put("s/c.bin", 60)
    assert urlsplit(url).path == f"/{store.location.bucket}/team/p/s/c.bin"
    assert dict(parse_qsl(urlsplit(url).query))["X-Amz-Expires"] == "60"
    assert requests.put(url, data=b"put", timeout=10).status_code == 200
    assert store.get_bytes("s/c.bin") == b"put"
    store.delete("s/c.bin")
    assert store.size("s/c.bin") is None
    store.close()
