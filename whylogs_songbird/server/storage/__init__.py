"""Storage of the server, behind one seam (see ``base.py``): :func:`open_storage` picks the
metadata store and the blob store from one :class:`StorageSpec` (``Store.open`` makes it from the
server's configuration).

- ``--database-url``: None or ``sqlite:///PATH`` (SQLite, the default: ``<data dir>/songbird.sqlite3``),
  ``postgresql://...`` (module ``storage.postgres``, the ``team`` extra);
- ``--blob-store``: None or ``file:///DIR`` (files, the default: the data dir), ``s3://BUCKET/PREFIX``
  (module ``storage.s3``, the ``team`` extra).

Team implementations are imported lazily, only when their URL scheme is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from whylogs_songbird.server.storage.base import BlobStore, MetadataStore, StorageConfigError

DB_FILE = "songbird.sqlite3"


_SHARED_SCHEMES = ("postgresql", "postgres")


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


@dataclass
class StorageSpec:
    """Where things are kept: the data dir (secret, temp files, defaults) and the two URLs; on a
    shared metadata store, also the host its ingest claims are taken for (``owner``, see
    ``MetadataStore.owner``; a store only one host uses ignores it)."""

    data_dir: Path
    database_url: str | None = None
    blob_store: str | None = None
    s3_endpoint_url: str | None = None
    owner: str = ""

    @property
    def shared(self) -> bool:
        """Whether the metadata store it names may be used by other hosts at once (PostgreSQL)."""
        return self.database_url is not None and _scheme(self.database_url) in _SHARED_SCHEMES


def _team_module(name: str, what: str) -> Any:
    try:
        return importlib.import_module(f"whylogs_songbird.server.storage.{name}")
    except ImportError as exc:
        missing = exc.name or name
        raise StorageConfigError(
            f"{what} needs the module whylogs_songbird.server.storage.{name} and its dependencies "
            f"({missing} is missing): install the team extra, pip install 'whylogs-songbird[team]'."
        ) from None


def _file_path(url: str, scheme: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise StorageConfigError(f"{scheme}: URLs name a local path ({scheme}:///absolute/path), got {url!r}")
    return Path(unquote(parts.path))


def open_metadata(spec: StorageSpec) -> MetadataStore:
    """The metadata store of ``spec.database_url``."""
    url = spec.database_url
    if url is None:
        from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore

        return SqliteMetadataStore(spec.data_dir / DB_FILE)
    scheme = _scheme(url)
    if scheme == "sqlite":
        from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore

        return SqliteMetadataStore(_file_path(url, "sqlite"))
    if scheme in _SHARED_SCHEMES:
        module = _team_module("postgres", "--database-url postgresql://...")
        store: MetadataStore = module.open_metadata(url, owner=spec.owner)
        return store
    raise StorageConfigError(
        f"--database-url must start with sqlite:/// or postgresql://, got a {scheme or 'scheme-less'} URL."
    )


def open_blobs(spec: StorageSpec) -> BlobStore:
    """The blob store of ``spec.blob_store``."""
    url = spec.blob_store
    from whylogs_songbird.server.storage.files import FileBlobStore

    if url is None:
        return FileBlobStore(spec.data_dir)
    scheme = _scheme(url)
    if scheme == "file":
        return FileBlobStore(_file_path(url, "file"))
    if scheme == "s3":
        module = _team_module("s3", "--blob-store s3://...")
        blobs: BlobStore = module.open_blobs(url, endpoint_url=spec.s3_endpoint_url, data_dir=spec.data_dir)
        return blobs
    raise StorageConfigError(f"--blob-store must start with file:/// or s3://, got a {scheme or 'scheme-less'} URL.")


def open_storage(spec: StorageSpec) -> tuple[MetadataStore, BlobStore]:
    """The metadata and blob stores ``spec`` asks for (the metadata closed again if the blobs fail)."""
    metadata = open_metadata(spec)
    try:
        blobs = open_blobs(spec)
    except BaseException:
        metadata.close()
        raise
    return metadata, blobs


__all__ = ["DB_FILE", "BlobStore", "MetadataStore", "StorageConfigError", "StorageSpec", "open_storage"]
