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


def wait_recorded(
    store: Store, session_id: str, *, summarised: bool = False, timeout: float = 120.0
) -> list[UploadRecord]:
    """The session's profiles once every upload slot of it is recorded (and, with ``summarised``,
    none is still pending): a presigned PUT is recorded by the ingest worker's background look a
    moment after it lands (pages and timeline views never look at the object store). Only for
    sessions whose slots were all PUT."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = len(store.metadata.unstored_uploads(session_id=session_id))
        profiles = store.list_profiles(session_id)
        if summarised:
            waiting += sum(1 for profile in profiles if profile.ingest_state == "pending")
        if not waiting:
            return profiles
        assert time.monotonic() < deadline, f"{waiting} uploads were not recorded or summarised"
        time.sleep(0.05)


def wait_summarised(store: Store, upload_id: str, *, timeout: float = 120.0) -> UploadRecord:
    """The upload once it is recorded and summarised (or found invalid): the timeline's version has
    then changed for it, whichever thread or host recorded it (see :func:`wait_recorded`)."""
    deadline = time.monotonic() + timeout
    while (upload := store.get_upload(upload_id)) is None or not upload.stored or upload.ingest_state == "pending":
        assert time.monotonic() < deadline, f"upload {upload_id} was not summarised"
        time.sleep(0.05)
    return upload
