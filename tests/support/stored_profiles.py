"""Profiles put straight into a `Store`, and where the embedded store keeps them: for tests that
arrange stored bytes without a PUT, or lose them on purpose."""

from __future__ import annotations

import hashlib
import time
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


def wait_recorded(store: Store, session_id: str, *, timeout: float = 120.0) -> list[UploadRecord]:
    """The session's profiles once every upload slot of it is recorded: a presigned PUT is recorded
    by the ingest worker's background look a moment after it lands (pages never look at the object
    store). Only for sessions whose slots were all PUT."""
    deadline = time.monotonic() + timeout
    while waiting := store.metadata.unstored_uploads(session_id=session_id):
        assert time.monotonic() < deadline, f"{len(waiting)} uploads were not recorded"
        time.sleep(0.05)
    return store.list_profiles(session_id)


def wait_summarised(store: Store, upload_id: str, *, timeout: float = 120.0) -> UploadRecord:
    """The upload once it is recorded and summarised (or found invalid): the timeline's version has
    then changed for it, whichever thread or host recorded it (see :func:`wait_recorded`)."""
    deadline = time.monotonic() + timeout
    while (upload := store.get_upload(upload_id)) is None or not upload.stored or upload.ingest_state == "pending":
        assert time.monotonic() < deadline, f"upload {upload_id} was not summarised"
        time.sleep(0.05)
    return upload
