"""Profile bytes in S3-compatible object storage (AWS S3, SeaweedFS, MinIO, ...), through boto3.

Selected with ``--blob-store s3://BUCKET/PREFIX`` (and ``--s3-endpoint-url URL`` for a store
other than AWS). Credentials and region come from the standard AWS settings: the variables
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), ``AWS_DEFAULT_REGION``
or ``AWS_REGION``, a profile, or an instance role: whatever boto3 finds.

Uploads never pass through the API server: :meth:`S3BlobStore.presign_put` hands the client a
presigned S3 ``PUT`` URL whose expiry is the upload URL's TTL, and the object store itself
refuses a URL that was tampered with or has expired. The server learns that an upload landed by
asking the store (:meth:`S3BlobStore.size`, an S3 ``HEAD``), reads it (:meth:`S3BlobStore.read_version`)
and keeps a copy of exactly the version it checked under a key no URL names
(:meth:`S3BlobStore.copy_version`, a server-side copy conditional on the ETag): the URL stays
valid until it expires, and a later PUT must not change a recorded profile.

Every object lives under ``PREFIX/``; keys are made by the server from ids it made, so no key
comes from a client. Presigned URLs carry a signature: they are secrets and never logged.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from whylogs_songbird.server.storage.base import (
    BlobChangedError,
    BlobVersion,
    StorageConfigError,
    StorageUnavailableError,
)

logger = logging.getLogger("whylogs_songbird.server.storage")

#: Bucket names as S3 accepts them (3-63 chars of lowercase letters, digits, dots and dashes).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: Keys the server makes: path segments of letters, digits and ``._-``.
_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
#: Region used when the AWS settings name none (SeaweedFS and MinIO accept any; AWS's default).
DEFAULT_REGION = "us-east-1"
#: Objects read with :meth:`S3BlobStore.open` stay in memory up to this size, then spill to disk.
_SPOOL_BYTES = 8 * 1024 * 1024
#: Names of the temporary files of bodies received (see :meth:`S3BlobStore.new_temp_file`).
_TEMP_PREFIX, _TEMP_SUFFIX = "songbird-body-", ".part"


class BlobStoreConfigError(StorageConfigError):
    """The ``--blob-store`` / ``--s3-endpoint-url`` settings or the credentials are unusable."""


class BlobStoreUnavailableError(StorageUnavailableError):
    """The object store could not be reached or refused a request (says which, never a secret)."""


class BlobNotFoundError(FileNotFoundError):
    """No object has this key."""


@dataclass(frozen=True)
class S3Location:
    """Where the blobs live: ``s3://BUCKET/PREFIX``."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Parse ``s3://BUCKET`` or ``s3://BUCKET/PREFIX`` (a clear error for anything else)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise BlobStoreConfigError(f"blob store must look like s3://BUCKET/PREFIX, got {url!r}")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise BlobStoreConfigError(f"blob store URL takes no credentials, query or fragment: {url!r}")
        bucket = parts.netloc
        if _BUCKET.match(bucket) is None or ".." in bucket:
            raise BlobStoreConfigError(
                f"{bucket!r} is not a valid bucket name: use 3-63 lowercase letters, digits, dots and dashes"
            )
        prefix = parts.path.strip("/")
        if prefix and _KEY.match(prefix) is None:
            raise BlobStoreConfigError(f"prefix {prefix!r} must be path segments of letters, digits and . _ -")
        return cls(bucket=bucket, prefix=prefix)

    def key(self, name: str) -> str:
        """The object key of the blob ``name`` (checked: server-made names only)."""
        if _KEY.match(name) is None or any(part in (".", "..") for part in name.split("/")):
            raise ValueError(f"not a blob name the server makes: {name[:80]!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


_LOADER_LOCK = threading.Lock()
_LOADER: Any = None


def _botocore_session() -> Any:
    """A fresh botocore session (credentials are looked up anew) sharing one loader of the
    service descriptions, which makes a client in ~0.1 s instead of ~0.5 s."""
    import botocore.session

    global _LOADER
    session = botocore.session.get_session()
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _LOADER)
    return session


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _etag(answer: dict[str, Any]) -> str:
    """An answer's ETag without its quotes (stores differ in quoting it)."""
    return str(answer.get("ETag", "")).strip('"')


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


class S3BlobStore:
    """Blobs (profile bytes, stored summaries) as objects under one bucket and prefix.

    Thread-safe (one boto3 client, which is); each server worker process opens its own.
    Opening checks the credentials and creates the bucket when it does not exist.
    """

    #: The upload URLs this store hands out go to the object store, not the API server.
    presigns_uploads = True

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        max_connections: int = 32,
        create_bucket: bool = True,
        temp_dir: Path | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.location = S3Location.parse(url)
        if endpoint_url is not None:
            endpoint_url = endpoint_url.rstrip("/")
            parts = urlsplit(endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
                raise BlobStoreConfigError(
                    f"S3 endpoint URL must be http(s)://HOST[:PORT] without credentials, got {endpoint_url!r}"
                )
        self.endpoint_url = endpoint_url
        self.temp_dir = temp_dir
        session = boto3.session.Session(botocore_session=_botocore_session())
        self.region = session.region_name or os.environ.get("AWS_REGION") or DEFAULT_REGION
        if session.get_credentials() is None:
            raise BlobStoreConfigError(
                "No S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or an AWS profile or instance role) for the S3 blob store."
            )
        config = Config(
            signature_version="s3v4",
            # Path-style URLs work with every S3-compatible store; AWS picks its own style.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=max_connections,
            connect_timeout=5,
            read_timeout=60,
            tcp_keepalive=True,
        )
        with _LOADER_LOCK:
            self._client: Any = session.client("s3", endpoint_url=endpoint_url, region_name=self.region, config=config)
        if create_bucket:
            self.ensure_bucket()

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3BlobStore({str(self.location)!r}{endpoint})"

    def close(self) -> None:
        """Release the client's connections (idempotent)."""
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    def _fail(self, action: str, exc: Exception) -> BlobStoreUnavailableError:
        code = _error_code(exc) or type(exc).__name__
        return BlobStoreUnavailableError(
            f"The S3 blob store {self.location} refused to {action} ({code}); check the bucket, the "
            "endpoint URL and that the AWS credentials may read and write it."
        )

    # -- the bucket -----------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (several workers may race: that is fine)."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.location.bucket
        try:
            self._client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if _status(exc) not in (404, 400) and _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise self._fail("open the bucket", exc) from None
        except BotoCoreError as exc:
            raise self._fail("answer (is the endpoint URL right and the store running?)", exc) from None
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.endpoint_url is None and self.region != DEFAULT_REGION:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
            logger.info("created the bucket %s", bucket)
        except ClientError as exc:
            if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._fail("create the bucket", exc) from None
        except BotoCoreError as exc:
            raise self._fail("create the bucket", exc) from None

    # -- blobs (the BlobStore protocol of storage/base.py) ----------------------------------------

    def presign_put(self, key: str, ttl_seconds: int) -> str:
        """A presigned ``PUT`` URL for ``key``, valid ``ttl_seconds`` (a secret: never log it).

        It does not bound the size of the body: SigV4 signs a ``Content-Length`` only as one exact
        value (a range exists only in a ``POST`` policy) and the size is not known when the slot is
        made. The server refuses oversize objects by their size before reading them instead.
        """
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        return str(
            self._client.generate_presigned_url(
                "put_object",
                Params={"Bucket": self.location.bucket, "Key": self.location.key(key)},
                ExpiresIn=int(ttl_seconds),
                HttpMethod="PUT",
            )
        )

    def size(self, key: str) -> int | None:
        """The size in bytes of ``key`` (an S3 ``HEAD``), or None when there is no such object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client.head_object(Bucket=self.location.bucket, Key=self.location.key(key))
        except ClientError as exc:
            if _status(exc) == 404 or _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail("look up an object", exc) from None
        except BotoCoreError as exc:
            raise self._fail("look up an object", exc) from None
        return int(answer["ContentLength"])

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds bytes."""
        return self.size(key) is not None

    def _get_object(self, key: str) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client.get_object(Bucket=self.location.bucket, Key=self.location.key(key))
        except ClientError as exc:
            if _status(exc) == 404 or _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise BlobNotFoundError(key) from None
            raise self._fail("read an object", exc) from None
        except BotoCoreError as exc:
            raise self._fail("read an object", exc) from None

    def get_bytes(self, key: str) -> bytes:
        """The bytes of ``key``; :class:`BlobNotFoundError` (a FileNotFoundError) when there are none."""
        from botocore.exceptions import BotoCoreError

        body = self._get_object(key)["Body"]
        try:
            return bytes(body.read())
        except BotoCoreError as exc:
            raise self._fail("read an object", exc) from None
        finally:
            body.close()

    def read_version(self, key: str, max_bytes: int) -> BlobVersion | None:
        """The bytes of ``key`` and their ETag (one GET); None when there is no such object.

        The size is taken from the GET's own answer, not from an earlier HEAD or listing: an
        object replaced in between by a larger one is still not read when it exceeds
        ``max_bytes`` (``data`` None), and at most ``max_bytes + 1`` bytes are ever read.
        """
        from botocore.exceptions import BotoCoreError

        try:
            answer = self._get_object(key)
        except BlobNotFoundError:
            return None
        body = answer["Body"]
        try:
            size, tag = int(answer["ContentLength"]), _etag(answer)
            if size > max_bytes:
                return BlobVersion(size=size, tag=tag)
            data = bytes(body.read(max_bytes + 1))
        except BotoCoreError as exc:
            raise self._fail("read an object", exc) from None
        finally:
            body.close()
        if len(data) > max_bytes:
            return BlobVersion(size=len(data), tag=tag)
        return BlobVersion(size=len(data), tag=tag, data=data)

    def copy_version(self, source: str, target: str, tag: str) -> bool:
        """Copy ``source`` to ``target`` inside the store (no bytes pass through the server), only
        if ``source`` still has the ETag ``tag`` (S3 ``x-amz-copy-source-if-match``).

        :class:`BlobChangedError` when it has another one (a PUT replaced it), :class:`BlobNotFoundError`
        when it is gone. True when the copy's ETag is ``tag`` too; False when it differs (ETags of
        SSE-KMS or SSE-C objects are not their MD5, and a store might ignore the condition): the
        caller then checks the copy's bytes itself.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.location.bucket
        try:
            answer = self._client.copy_object(
                Bucket=bucket,
                Key=self.location.key(target),
                CopySource={"Bucket": bucket, "Key": self.location.key(source)},
                CopySourceIfMatch=f'"{tag}"',
            )
        except ClientError as exc:
            if _status(exc) == 412 or _error_code(exc) == "PreconditionFailed":
                raise BlobChangedError(source) from None
            if _status(exc) == 404 or _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise BlobNotFoundError(source) from None
            raise self._fail("copy an object", exc) from None
        except BotoCoreError as exc:
            raise self._fail("copy an object", exc) from None
        return str(answer.get("CopyObjectResult", {}).get("ETag", "")).strip('"') == tag

    def open(self, key: str) -> BinaryIO:
        """A seekable file holding ``key``'s bytes (in memory up to 8 MiB, then a temporary file)."""
        from botocore.exceptions import BotoCoreError

        answer = self._get_object(key)
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, prefix="songbird-blob-")  # noqa: SIM115
        body = answer["Body"]
        try:
            for chunk in body.iter_chunks(1024 * 1024):
                spool.write(chunk)
        except BotoCoreError as exc:
            spool.close()
            raise self._fail("read an object", exc) from None
        except BaseException:
            spool.close()
            raise
        finally:
            body.close()
        spool.seek(0)
        return cast(BinaryIO, spool)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (replacing it): one PUT, so readers see old or new bytes, never a part."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.location.bucket, Key=self.location.key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("store an object", exc) from None

    def put_file(self, key: str, source: Path) -> None:
        """Upload the file ``source`` to ``key`` and remove the file (a move, like the file store's)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.upload_file(str(source), self.location.bucket, self.location.key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("store an object", exc) from None
        Path(source).unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it does not exist)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.location.bucket, Key=self.location.key(key))
        except ClientError as exc:
            if _status(exc) != 404:
                raise self._fail("delete an object", exc) from None
        except BotoCoreError as exc:
            raise self._fail("delete an object", exc) from None

    def delete_prefix(self, prefix: str) -> list[str]:
        """Remove every object whose key starts with ``prefix`` (one listing, then a delete each;
        S3 has no directories to remove); the keys removed."""
        removed = list(self.list_keys(prefix))
        for key in removed:
            self.delete(key)
        return removed

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key (without the store's own prefix) that starts with ``prefix``."""
        for key, _ in self.list_sizes(prefix):
            yield key

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every object whose key starts with ``prefix``."""
        for key, size, _ in self.list_stamped(prefix):
            yield key, size

    def list_stamped(self, prefix: str = "") -> Iterator[tuple[str, int, int]]:
        """``(key, size, last modified in epoch ms)`` of every object whose key starts with ``prefix``
        (the object store's clock, not this host's)."""
        from botocore.exceptions import BotoCoreError, ClientError

        root = f"{self.location.prefix}/" if self.location.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=root + prefix):
                for item in page.get("Contents", []):
                    modified = int(item["LastModified"].timestamp() * 1000)
                    yield str(item["Key"])[len(root) :], int(item["Size"]), modified
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list objects", exc) from None

    def new_temp_file(self) -> tuple[int, Path]:
        """A fresh temporary file (in ``temp_dir``, else the system's) for a body the server receives."""
        if self.temp_dir is not None:
            self.temp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=self.temp_dir)
        return fd, Path(name)

    def reconcile(self) -> list[str]:
        """Remove the temporary files of bodies this host was receiving when it stopped or died
        (in ``temp_dir``, this host's own data dir; run before it serves). An S3 PUT is atomic, so
        a crash leaves no partial object."""
        removed: list[str] = []
        if self.temp_dir is None or not self.temp_dir.is_dir():
            return removed
        for leftover in sorted(self.temp_dir.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}")):
            try:
                leftover.unlink()
            except OSError:
                continue
            removed.append(f"{self.temp_dir.name}/{leftover.name}")
        return removed


def open_blobs(url: str, *, endpoint_url: str | None = None, data_dir: Path | None = None) -> S3BlobStore:
    """The factory ``storage.open_storage`` calls for ``--blob-store s3://BUCKET/PREFIX``."""
    return S3BlobStore(url, endpoint_url=endpoint_url, temp_dir=Path(data_dir) / "tmp" if data_dir else None)
