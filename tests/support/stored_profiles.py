"""Profiles put straight into a `Store`, and where the embedded store keeps them: for tests that
arrange stored bytes without a PUT, or lose them on purpose."""

from __future__ import annotations

import hashlib
from pathlib import Path

from whylogs_songbird.server.storage.files import FileBlobStore
from whylogs_songbird.server.store import Store, UploadRecord


def store_profile_bytes(store: Store, upload_id: str, data: bytes) -> UploadRecord:
    """Store ``data`` as the upload's profile (no check: the test chose the bytes)."""
    return store.store_profile_data(upload_id, data, sha256=hashlib.sha256(data).hexdigest()).upload


def profile_path(store: Store, upload: UploadRecord) -> Path:
    """The file of a stored profile (embedded blob store only)."""
    if upload.path is None:
        raise ValueError(f"upload {upload.id} has no stored profile")
    if not isinstance(store.blobs, FileBlobStore):
        raise ValueError("this blob store keeps no local files")
    return store.blobs.path(upload.path)
