"""The store the routes use: one object over the storage seam (``storage/``), a
:class:`~storage.base.MetadataStore` plus a :class:`~storage.base.BlobStore`.

It adds what needs both: storing a received body (bytes durable first, then the row),
reading a profile's bytes, resolving the profiles a link names, and reconciliation at start
(leftover temporary files, bytes without a row, rows without bytes).

Ids are made by the store and checked against :data:`ID_PATTERN` before any use in a key or a
query, so no key is ever built from anything a client chose.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.counters import OperationCounts
from whylogs_songbird.server.profile_check import CheckedProfiles, ProfileCheckError, check_profile_bytes
from whylogs_songbird.server.signing import load_or_create_health_token
from whylogs_songbird.server.storage import DB_FILE, StorageSpec, open_storage
from whylogs_songbird.server.storage.base import (
    GUEST_ORG_ID,
    ID_PATTERN,
    OPERATIONS,
    BlobChangedError,
    BlobStore,
    DerivedWrite,
    MetadataStore,
    NewUpload,
    SessionClaimedError,
    SessionRecord,
    SlotLimitError,
    StoredOutcome,
    StoreError,
    UnknownUploadError,
    UploadAlreadyStoredError,
    UploadFormat,
    UploadKind,
    UploadRecord,
    is_valid_id,
    new_id,
    now_ms,
    require_id,
)
from whylogs_songbird.server.storage.deletion import DeletionSql
from whylogs_songbird.server.storage.notifications import NotificationQueueSql
from whylogs_songbird.server.storage.paging import ProfilePage, ProfileQuery
from whylogs_songbird.server.zipped import ZipUploadError, looks_like_zip, zip_members

logger = logging.getLogger("whylogs_songbird.server")

#: Upload slots whose URL expired less than this long ago are still looked for in the blob
#: store (a presigned PUT begun before its URL expired may finish after).
LANDED_GRACE_SECONDS = 3600
#: The background look for presigned PUTs that landed (:meth:`Store.learn_landed`) looks at a
#: session again this soon after something landed or a slot was made; when nothing lands, each
#: wait doubles up to LANDED_LOOK_MAX_SECONDS (open slots never PUT cost next to nothing). A page
#: view (:meth:`Store.nudge_landed`) brings the next look forward, never nearer than this to the last.
LANDED_LOOK_SECONDS = 1.0
LANDED_LOOK_MAX_SECONDS = 60.0
#: A host claims the landed PUTs it learns (reads, checks, copies, records) in batches of this
#: many, each for LEARN_LEASE_MS: other hosts pass them over, so each is read by one host, and a
#: batch whose host died is taken by the next look of another once its lease ran out.
LEARN_CLAIM_BATCH = 16
LEARN_LEASE_MS = 30_000
#: Upload slots never PUT are deleted this long after their URL expired (a PUT begun in time
#: may still be receiving its body); with presigned URLs, after LANDED_GRACE_SECONDS more.
SWEEP_GRACE_SECONDS = 600
#: Expired slots looked at (and deleted) per transaction by :meth:`Store.sweep_expired_slots`.
SWEEP_BATCH = 200

#: On a store other hosts share, reconciliation at start leaves alone bytes written less than this
#: long before it began (another host may be about to record them; see :meth:`Store.reconcile`).
RECONCILE_GRACE_SECONDS = 600
#: On a shared store the scan for bytes without a row (:meth:`Store.scan_orphans`) runs in one
#: process of the team at most this often, in the background (a crash leaves a few such bytes; a
#: scan lists every object, so it is not repeated at every start).
ORPHAN_SCAN_SECONDS = 6 * 3600

#: Defaults of the limits on uploads (the server's config overrides them, see :meth:`Store.open`).
DEFAULT_MAX_COLUMNS = 20_000
DEFAULT_MAX_UPLOAD_BYTES = 256 * 1024 * 1024
#: Open uploads of one session looked up one by one (HEAD) up to this many; more: one listing.
_HEADS_BEFORE_LISTING = 8

#: A batch timestamp in a link (see :func:`parse_timestamp_selector`); ASCII digits only.
_TIMESTAMP_SELECTOR = re.compile(r"-?[0-9]{1,19}")


def parse_timestamp_selector(selector: str) -> int | None:
    """The batch dataset timestamp a link's ``profile=`` value names, or None when it is not one.

    A timestamp is an optional ``-`` and 1 to 19 ASCII digits, within the signed 64-bit range.
    """
    if _TIMESTAMP_SELECTOR.fullmatch(selector) is None:
        return None
    timestamp = int(selector)
    return timestamp if -(2**63) <= timestamp < 2**63 else None


def host_id(data_dir: Path) -> str:
    """A stable name of the host that serves from ``data_dir``: a hash of its health token (made on
    first start), so claims it takes in a shared store can be told from other hosts'."""
    token = load_or_create_health_token(data_dir)
    return hashlib.sha256(f"songbird-host:{token}".encode()).hexdigest()[:16]


def blob_key(session_id: str, upload_id: str, sha256: str | None = None) -> str:
    """The blob key of a profile's bytes: ``profiles/<session>/<upload>[.<sha256 prefix>].bin``.

    Only the server writes keys with the hash: the embedded store names each version it
    receives by its hash (two PUTs racing on one slot never write the same file), and a team
    server copies the bytes it checked there. The plain name is where a presigned PUT lands
    (the client cannot know the hash): a client may write it until its URL expires, so no
    recorded profile points at it (see :meth:`Store.learn_landed`).
    """
    require_id(session_id, "session")
    require_id(upload_id)
    if sha256 is None:
        return f"profiles/{session_id}/{upload_id}.bin"
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("not a sha256 hex digest")
    return f"profiles/{session_id}/{upload_id}.{sha256[:16]}.bin"


class StoredBytesChangedError(OSError):
    """A profile's stored bytes are not the ones that were checked (size or sha256 differ)."""


def _upload_id_of(key: str) -> str | None:
    """The upload id a blob key names (``profiles/<session>/<upload>[.<sha>].bin``), if valid."""
    upload_id = key.rsplit("/", 1)[-1].split(".", 1)[0]
    return upload_id if is_valid_id(upload_id) else None


class OpenUpload(NamedTuple):
    """An open upload slot, and the stored profile that the bytes about to be stored would repeat."""

    upload: UploadRecord
    original: UploadRecord | None


@dataclass
class ReconcileReport:
    """What :meth:`Store.reconcile` fixed at start."""

    temp_files: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)
    rows_without_bytes: list[str] = field(default_factory=list)
    released_claims: int = 0
    #: claims to learn landed uploads this host left (see ``MetadataStore.release_learn_claims``)
    released_learn_claims: int = 0

    def __bool__(self) -> bool:
        return bool(self.temp_files or self.orphan_blobs or self.rows_without_bytes)


@dataclass
class _Look:
    """When the background look for landed PUTs takes a session next (monotonic seconds), the wait
    after it when nothing lands, and when it last looked."""

    due: float
    wait: float
    looked: float


class Store:
    """Sessions, uploads and profile bytes; safe to share between threads and processes.

    ``Store(data_dir)`` opens the embedded store (SQLite + files in ``data_dir``); pass
    ``metadata`` and ``blobs`` to use others (see :func:`storage.open_storage`). Every method is
    blocking: call it from a worker thread, not the event loop.
    """

    #: Recording an upload replaces its session's timeline version in the same write transaction
    #: (``MetadataStore.mark_stored``), so the timeline's "upload landed" hook need not write it again.
    records_timeline_version = True

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        metadata: MetadataStore | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        if metadata is None or blobs is None:
            if data_dir is None:
                raise ValueError("Store needs a data_dir, or both a metadata store and a blob store")
            opened_metadata, opened_blobs = open_storage(StorageSpec(data_dir=Path(data_dir)))
            metadata = metadata or opened_metadata
            blobs = blobs or opened_blobs
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.metadata = metadata
        self.blobs = blobs
        self._closed = False
        #: This process's operation counts, written to ``metadata`` in batches (whichever it is then).
        self.counts = OperationCounts(lambda pending: self.metadata.add_counts(pending))
        #: Limits applied to uploads the server did not receive itself (presigned PUTs, see
        #: :meth:`learn_landed`); the upload route applies the same ones from the config.
        self.max_columns = DEFAULT_MAX_COLUMNS
        self.max_upload_bytes = DEFAULT_MAX_UPLOAD_BYTES
        #: Session -> when the background look for landed PUTs looks at it next: see :meth:`learn_landed`.
        self._next_look: dict[str, _Look] = {}
        self._look_lock = threading.Lock()
        #: Called when a reader asks for a look at a session (see :meth:`nudge_landed`).
        self._look_wakers: list[Callable[[], None]] = []
        self._recorded_wakers: list[Callable[[], None]] = []
        #: Called with each upload this process records (see :meth:`upload_landed`).
        self._landed_hooks: list[Callable[[UploadRecord], None]] = []
        #: Profile bytes this process's PUTs checked, so their sandbox child skips that check (``ingest.py``).
        self.checked = CheckedProfiles()

    @classmethod
    def open(cls, config: ServerConfig) -> Store:
        """The store a :class:`ServerConfig` asks for (``database_url``, ``blob_store``)."""
        spec = StorageSpec(
            data_dir=Path(config.data_dir),
            database_url=config.database_url,
            blob_store=config.blob_store,
            s3_endpoint_url=config.s3_endpoint_url,
        )
        if spec.shared:  # the claims this host takes, released when it starts again
            spec.owner = host_id(spec.data_dir)
        metadata, blobs = open_storage(spec)
        store = cls(spec.data_dir, metadata=metadata, blobs=blobs)
        store.max_columns = config.max_columns
        store.max_upload_bytes = config.max_upload_bytes
        return store

    def __repr__(self) -> str:
        return f"Store({self.metadata!r}, {self.blobs!r})"

    def close(self) -> None:
        """Close both stores (idempotent)."""
        if not self._closed:
            self._closed = True
            self.counts.close()
            self.metadata.close()
            self.blobs.close()

    def free_turn(self) -> contextlib.AbstractContextManager[bool]:
        """Whether this thread now holds the metadata store without having waited for anyone
        (True while the block runs): the embedded store's SQLite, when neither another thread of
        this process nor another process is at it. A metadata store across the network (PostgreSQL)
        is never free so: False. Under a True turn, a short call of metadata only (no blob I/O) may
        run on the event loop instead of in a worker thread; otherwise hop, as always."""
        return self.metadata.free_turn()

    # -- counters ---------------------------------------------------------------------------

    def count(self, operation: str) -> None:
        """Count one call of an API operation (in the store, shared by every worker process).

        Never blocks on the database, so the event loop may call it: counts are added up in
        memory and written by a background thread in one transaction per batch, within
        :data:`~whylogs_songbird.server.counters.COUNT_FLUSH_SECONDS` (other processes see them
        then); :meth:`stats` and :meth:`close` write this process's counts first.
        """
        self.counts.count(operation)

    def flush_counts(self) -> None:
        """Write the counts made in this process and not yet in the store."""
        self.counts.flush()

    def stats(self) -> dict[str, int]:
        """Calls per operation since the counters were reset: at the server's start on the
        embedded store, never by a start on a shared one (this process's counts written first)."""
        self.flush_counts()
        return self.metadata.stats()

    def reset_stats(self) -> None:
        self.counts.clear()
        self.metadata.reset_stats()

    # -- the "upload landed" hook ------------------------------------------------------------

    def add_landed_hook(self, hook: Callable[[UploadRecord], None]) -> None:
        """Call ``hook(upload)`` for each upload this process records from now on (see :meth:`upload_landed`)."""
        self._landed_hooks.append(hook)

    def remove_landed_hook(self, hook: Callable[[UploadRecord], None]) -> None:
        with contextlib.suppress(ValueError):
            self._landed_hooks.remove(hook)

    def upload_landed(self, outcome: StoredOutcome) -> None:
        """The one place a newly recorded upload is announced, on every store: a PUT this server
        received (embedded store) or a presigned PUT this process learned (team store). Exactly
        one process records each upload (``mark_stored`` with ``if_unstored``), so across hosts
        the hooks run once per upload; an outcome that recorded nothing new (a duplicate, bytes
        recorded already, bytes recorded invalid) runs none. A failing hook is logged, never fails the recording."""
        if not outcome.recorded or outcome.duplicate_of is not None or outcome.upload.invalid:
            return
        for hook in list(self._landed_hooks):
            try:
                hook(outcome.upload)
            except Exception:
                logger.exception("a hook on upload %s failed", outcome.upload.id)

    # -- sessions ---------------------------------------------------------------------------

    def create_session(self, user_id: str) -> SessionRecord:
        return self.metadata.create_session(user_id)

    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session (claimed or not), or None; a dataset's container is no session (None)."""
        session = self.metadata.get_session(session_id)
        return None if session is None or session.is_dataset else session

    def container(self, container_id: str) -> SessionRecord | None:
        """The row of a session or of a dataset's container (an open transaction's included), or None."""
        return self.metadata.get_session(container_id)

    def guest_session(self, session_id: str) -> SessionRecord | None:
        """The session as a request without an API key may see it: None when the id is malformed,
        unknown, or names a session claimed into an organization. Every guest route resolves its
        session here, so a claimed session is gone from all of them at once (only the keyed
        operations, get_session and claim, still find it). A dataset's container row is never a
        guest session: its id opens nothing without the org's key."""
        session = self.metadata.get_session(session_id)  # None for a malformed id too
        return None if session is None or session.claimed or session.is_dataset else session

    def claim(self, session_id: str, org_id: str) -> SessionRecord | None:
        return self.metadata.claim(session_id, org_id)

    # -- datasets of organizations (the log API) ------------------------------------------------

    def dataset_container(self, org_id: str, dataset_id: str) -> SessionRecord:
        """The row holding dataset ``dataset_id`` of ``org_id``, made on its first write. Uploads,
        ingest, digests and the timeline key on its id as on a session's; guest routes never find it.
        A read first: only the first write of a dataset pays a write transaction for its row."""
        return self.metadata.find_dataset(org_id, dataset_id) or self.metadata.dataset_container(org_id, dataset_id)

    def find_dataset(self, org_id: str, dataset_id: str) -> SessionRecord | None:
        """The row holding a dataset, or None when nothing was written to it yet."""
        return self.metadata.find_dataset(org_id, dataset_id)

    def move_stored_uploads(self, from_container: str, to_container: str) -> list[str]:
        """Move a transaction's stored profiles into its dataset (commit); their ids. Presigned PUTs
        that landed are learned first."""
        self.learn_landed(from_container)
        return self.metadata.move_stored_uploads(from_container, to_container)

    def delete_uploads(self, container_id: str) -> int:
        """Delete every profile of a container, bytes and rows (an aborted transaction's); how many."""
        self.learn_landed(container_id)
        keys = self.metadata.delete_uploads(container_id)
        for key in keys:
            self.blobs.delete(key)
        return len(keys)

    def delete_session_bytes(self, session_id: str) -> list[str]:
        """Remove every blob under a session marked deleted (recorded copies, landed presigned PUTs,
        versions being written) and, on the embedded store, its directory; the keys removed. A
        malformed session id removes nothing. Idempotent (a purge may run twice)."""
        if not is_valid_id(session_id, "session"):
            return []
        return self.blobs.delete_prefix(f"profiles/{session_id}/")

    def delete_upload_bytes(self, session_id: str, upload_id: str, path: str | None = None) -> list[str]:
        """Remove every blob of one upload marked deleted: ``<upload>.bin`` (a landed presigned PUT)
        and each ``<upload>.<sha>.bin`` (recorded copies, versions being written), and ``path``, the
        key it was recorded with; the keys found under the upload's prefix. Idempotent."""
        removed = []
        if is_valid_id(session_id, "session") and is_valid_id(upload_id):
            removed = self.blobs.delete_prefix(f"profiles/{session_id}/{upload_id}.")
        if path is not None and path not in removed:
            self.blobs.delete(path)
        return removed

    def put_setting(self, container_id: str, key: str, value: str) -> None:
        """Keep what an org says of its dataset (JSON text under ``key``: column schema, weights)."""
        self.metadata.put_setting(container_id, key, value)

    def get_setting(self, container_id: str, key: str) -> str | None:
        return self.metadata.get_setting(container_id, key)

    def list_settings(self, container_id: str, prefix: str = "") -> list[tuple[str, str]]:
        return self.metadata.list_settings(container_id, prefix)

    def recent_sessions(self, limit: int = 20) -> list[SessionRecord]:
        return self.metadata.recent_sessions(limit)

    def session_count(self) -> int:
        return self.metadata.session_count()

    # -- uploads ----------------------------------------------------------------------------

    def create_upload(
        self,
        session_id: str,
        kind: UploadKind,
        *,
        ttl_seconds: int,
        dataset_timestamp: int | None = None,
        alias: str | None = None,
        segment_tags: Sequence[tuple[str, str]] = (),
        format: UploadFormat | None = None,
    ) -> UploadRecord:
        """Create one upload slot (see :meth:`create_uploads`); ``format="zip"``: it takes a zip of
        segment profiles (:meth:`store_zip`)."""
        spec = NewUpload(
            kind=kind, dataset_timestamp=dataset_timestamp, alias=alias, segment_tags=tuple(segment_tags), format=format
        )
        return self.create_uploads(session_id, [spec], ttl_seconds=ttl_seconds)[0]

    def create_uploads(
        self,
        session_id: str,
        specs: Sequence[NewUpload],
        *,
        ttl_seconds: int,
        max_open: int | None = None,
        max_profiles: int | None = None,
    ) -> list[UploadRecord]:
        """Create upload slots; :class:`SlotLimitError` past a per-session limit (see the metadata store).
        The background look for landed presigned PUTs then looks at the session again soon."""
        created = self.metadata.create_uploads(
            session_id, specs, ttl_seconds=ttl_seconds, max_open=max_open, max_profiles=max_profiles
        )
        with self._look_lock:
            self._next_look.pop(session_id, None)
        return created

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        return self.metadata.get_upload(upload_id)

    # -- presigned uploads (blob stores with their own upload URLs) ---------------------------

    @property
    def shared(self) -> bool:
        """Whether other hosts use this store at the same time (PostgreSQL): a start then resets
        nothing and releases no claim (see :meth:`reconcile`)."""
        return self.metadata.shared

    @property
    def presigns(self) -> bool:
        """Whether clients PUT straight to the blob store (its presigned URLs), not to this server."""
        return bool(self.blobs.presigns_uploads)

    def upload_url(self, upload: UploadRecord, ttl_seconds: int) -> str | None:
        """The blob store's presigned PUT URL for an upload slot, or None when this server
        receives the PUT itself (then it signs its own URL)."""
        return self.blobs.presign_put(blob_key(upload.session_id, upload.id), ttl_seconds)

    # -- profile bytes ----------------------------------------------------------------------

    def new_temp_file(self) -> tuple[int, Path]:
        """An open file descriptor and path of a fresh temporary file to receive a body into."""
        return self.blobs.new_temp_file()

    def open_upload(self, upload_id: str, sha256: str) -> OpenUpload:
        """The open upload slot ``upload_id`` and the stored profile that bytes of digest ``sha256``
        would repeat (see :meth:`store_profile_file`). Raises :class:`UnknownUploadError` or
        :class:`SessionClaimedError`."""
        return OpenUpload(*self.metadata.open_upload_and_duplicate(upload_id, sha256))

    def store_profile_file(
        self,
        upload_id: str,
        source: Path,
        *,
        size: int,
        sha256: str,
        opened: OpenUpload | None = None,
        segment_tags: tuple[tuple[str, str], ...] = (),
        stored_at: int | None = None,
    ) -> StoredOutcome:
        """Keep the (already checked) file ``source`` as the upload's profile.

        Bytes first (fsynced, renamed into place), then the row: a crash in between leaves bytes
        without a row, which :meth:`reconcile` removes. Identical bytes already stored for the
        same session, timestamp and segment are kept once: the outcome then names the original
        and ``source`` is not kept. Raises :class:`UnknownUploadError` or :class:`SessionClaimedError`
        (``source`` is then left alone). ``opened``: what :meth:`open_upload` (or ``check_upload_open``)
        said of this slot a moment ago, to save reading it again (the row is checked again, and
        the original looked for, as it is recorded).
        ``segment_tags``: the segment the profile's own header names (``ProfileShape.segment_tags``),
        kept when the slot was given none. ``stored_at``: the time to record it landed at
        (default now; see :meth:`MetadataStore.mark_stored`).
        """
        return self._store_profile(
            upload_id,
            lambda key: self.blobs.put_file(key, source),
            size=size,
            sha256=sha256,
            opened=opened,
            segment_tags=segment_tags,
            stored_at=stored_at,
        )

    def store_profile_data(
        self,
        upload_id: str,
        data: bytes,
        *,
        sha256: str,
        opened: OpenUpload | None = None,
        segment_tags: tuple[tuple[str, str], ...] = (),
    ) -> StoredOutcome:
        """:meth:`store_profile_file` for (already checked) bytes in memory: a small body is
        written once, straight to its place (fsynced, then renamed), and not at all when it
        repeats a stored profile found as the slot is opened."""
        return self._store_profile(
            upload_id,
            lambda key: self.blobs.put_bytes(key, data),
            size=len(data),
            sha256=sha256,
            opened=opened,
            segment_tags=segment_tags,
        )

    def _store_profile(
        self,
        upload_id: str,
        put: Callable[[str], None],
        *,
        size: int,
        sha256: str,
        opened: OpenUpload | None,
        segment_tags: tuple[tuple[str, str], ...] = (),
        stored_at: int | None = None,
    ) -> StoredOutcome:
        # One write transaction records the bytes (it checks the slot again, looks for an original
        # and replaces the session's timeline version). Unless the caller read the slot itself, an
        # original found first spares writing the bytes; a caller that read only the slot (a PUT)
        # writes them, and bytes that turn out to repeat an original (rare) are removed again.
        upload, original = opened if opened is not None else self.open_upload(upload_id, sha256)
        if original is not None:
            outcome = self.metadata.mark_stored(
                upload_id, key=None, size=size, sha256=sha256, segment_tags=segment_tags, stored_at=stored_at
            )
            if outcome.duplicate_of is not None:
                if upload.path is not None and outcome.recorded:
                    self.blobs.delete(upload.path)
                return outcome
        key = blob_key(upload.session_id, upload_id, sha256)
        put(key)
        try:
            outcome = self.metadata.mark_stored(
                upload_id, key=key, size=size, sha256=sha256, segment_tags=segment_tags, stored_at=stored_at
            )
        except BaseException:
            if self._unrecorded(upload_id, key):
                self.blobs.delete(key)
            raise
        if outcome.duplicate_of is not None:  # an original stored by another PUT, or not looked for
            self.blobs.delete(key)
        if upload.path is not None and upload.path != key:
            self.blobs.delete(upload.path)  # the bytes this PUT replaced
        self.upload_landed(outcome)
        return outcome

    def _unrecorded(self, upload_id: str, key: str) -> bool:
        """Whether no row names ``key`` after a recording of it failed: the same bytes PUT again
        (a client's retry, or two PUTs at once) share the key, and one of them may have recorded it
        meanwhile. When the row cannot be read the bytes stay (reconcile at start removes bytes no
        row names)."""
        try:
            current = self.metadata.get_upload(upload_id)
        except Exception:
            return False
        return current is None or current.path != key

    # -- zipped uploads (whylogs' write(zip=True)) ------------------------------------------

    def unpack_zip(self, data: bytes) -> list[tuple[bytes, tuple[tuple[str, str], ...]]]:
        """The profiles of a zipped upload with the segment each one's header names, every member
        through the cheap check of any upload; :class:`ZipUploadError` (nothing is stored) when the
        zip or one of its members is refused (see ``zipped.py``)."""
        members = []
        for name, content in zip_members(data, max_total_bytes=self.max_upload_bytes):
            try:
                shape = check_profile_bytes(content, max_columns=self.max_columns)
            except ProfileCheckError as exc:
                raise ZipUploadError(f"its member {name[:80]!r} is not a well-formed whylogs profile ({exc})") from None
            members.append((content, shape.segment_tags))
        return members

    def store_zip(
        self, upload: UploadRecord, members: Sequence[tuple[bytes, tuple[tuple[str, str], ...]]]
    ) -> StoredOutcome:
        """Store the (checked, :meth:`unpack_zip`) profiles of a zipped upload as profiles of its
        batch: the first in the zip's own slot, each other in a new slot of the same kind, timestamp
        and tags; each keeps the segment its header names. Identical profiles already stored are kept
        once, as for any upload (so a retried zip adds nothing). The outcome is the zip's own slot's."""
        now_s = int(now_ms() / 1000)
        spec = NewUpload(upload.kind, upload.dataset_timestamp, upload.alias, upload.segment_tags)
        extra = self.create_uploads(
            upload.session_id, [spec] * (len(members) - 1), ttl_seconds=max(60, upload.expires_at - now_s)
        )
        outcome: StoredOutcome | None = None
        for slot_id, (content, tags) in zip([upload.id, *(slot.id for slot in extra)], members):
            stored = self.store_profile_data(
                slot_id, content, sha256=hashlib.sha256(content).hexdigest(), segment_tags=tags
            )
            outcome = outcome or stored
        assert outcome is not None
        logger.debug("stored a zip of %d profiles", len(members))
        return outcome

    def read_profile_bytes(self, upload: UploadRecord) -> bytes:
        """The bytes of a stored profile (of the original, for a duplicate).

        On a store with presigned uploads the bytes are checked against the recorded size and
        sha256 as they are read (an object larger than the recorded size is not read at all):
        bytes that are not the checked ones raise :class:`StoredBytesChangedError` (an OSError),
        never reach a caller. The embedded store wrote its bytes itself and reads them as is.
        """
        if upload.path is None and upload.duplicate_of is not None:
            original = self.get_upload(upload.duplicate_of)
            if original is not None:
                upload = original
        if upload.path is None:
            raise FileNotFoundError(f"upload {upload.id} has no stored bytes")
        if not self.presigns:
            return self.blobs.get_bytes(upload.path)
        if upload.size is None or upload.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", upload.sha256) is None:
            raise StoredBytesChangedError(f"upload {upload.id} was recorded without a checked sha256")  # unread
        version = self.blobs.read_version(upload.path, upload.size)
        if version is None:
            raise FileNotFoundError(f"upload {upload.id} has no stored bytes")
        data = version.data
        if data is None or len(data) != upload.size or hashlib.sha256(data).hexdigest() != upload.sha256:
            logger.warning("the stored bytes of upload %s are not the ones that were checked; not read", upload.id)
            raise StoredBytesChangedError(f"the stored bytes of upload {upload.id} are not the ones that were checked")
        return data

    # -- uploads straight to the blob store (presigned S3 PUT URLs) --------------------------

    def add_look_waker(self, waker: Callable[[], None]) -> None:
        """Call ``waker()`` whenever a reader asks for a look at a session (:meth:`nudge_landed`):
        the ingest worker, which makes the background look, registers its wake-up here."""
        self._look_wakers.append(waker)

    def remove_look_waker(self, waker: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._look_wakers.remove(waker)

    def add_recorded_waker(self, waker: Callable[[], None]) -> None:
        """Call ``waker()`` when a request's look recorded landed uploads (they wait to be
        summarised): the ingest worker registers its wake-up here, so it does not sleep on them."""
        self._recorded_wakers.append(waker)

    def remove_recorded_waker(self, waker: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._recorded_wakers.remove(waker)

    def _recorded(self) -> None:
        for waker in list(self._recorded_wakers):
            waker()

    def nudge_landed(self, session_id: str) -> None:
        """A page or timeline view's word that presigned PUTs of ``session_id`` may have landed:
        the background look (:meth:`learn_landed`, run by the ingest worker) takes the session at its
        next pass, but never sooner than :data:`LANDED_LOOK_SECONDS` after its last look there, and
        starts doubling its waits afresh; the registered wakers are called. Never touches the blob
        store, so a view calls it every time: the upload shows as pending, then summarised, a
        moment later. A no-op for stores without presigned URLs."""
        if not self.presigns:
            return
        with self._look_lock:
            look = self._next_look.get(session_id)
            if look is not None:
                look.due = min(look.due, look.looked + LANDED_LOOK_SECONDS)
                look.wait = 0.0
        for waker in list(self._look_wakers):
            waker()

    def awaits_upload(self, session_id: str, selector: str) -> bool:
        """Whether a link's ``profile=`` value names an upload slot of the session whose presigned
        PUT may still land (not recorded, URL valid or expired less than :data:`LANDED_GRACE_SECONDS`
        ago): a batch timestamp of such a slot, or its id. False for stores without presigned URLs
        (the server records every PUT it receives at once).

        The named slots only are looked at (a HEAD each, never a listing of the session), and those
        whose bytes are there are recorded as :meth:`learn_landed` records them: a link opened right
        after its PUT shows the profile instead of waiting for the ingest worker's next look. Resolve
        the selector again after a True. Like any request's look it takes no learn claim and reads
        a slot another thread or host may be learning too (recording stays conditional): a page
        never waits on the ingest worker's look, nor on a host that died holding the claim."""
        if not self.presigns:
            return False
        timestamp = parse_timestamp_selector(selector)
        expires_after = int(now_ms() / 1000) - LANDED_GRACE_SECONDS
        named = False
        for upload in self.metadata.unstored_uploads(session_id=session_id, expires_after=expires_after):
            if upload.id == selector or (
                timestamp is not None and upload.kind == "batch" and upload.dataset_timestamp == timestamp
            ):
                named = True
                key = blob_key(upload.session_id, upload.id)
                size = self.blobs.size(key)  # a request's look: read now, claimed or not (see learn_landed)
                if size is not None and self._record_landed(upload, key, size) is not None:
                    self._recorded()
        return named

    def learn_landed(
        self,
        session_id: str | None = None,
        *,
        grace_seconds: int = LANDED_GRACE_SECONDS,
        stop: Callable[[], bool] | None = None,
    ) -> list[UploadRecord]:
        """Record the uploads whose bytes a client PUT straight to the blob store (presigned URLs),
        of one session or of all; return them. A no-op for stores without presigned URLs.

        The server is not told when such a PUT lands: the API operations that must see it look
        (given a ``session_id``: always: a link, a transaction's commit or status, an export), and
        the ingest worker does so for every session (no ``session_id``): a session where nothing
        landed is looked at less and less often, from every :data:`LANDED_LOOK_SECONDS` to every
        :data:`LANDED_LOOK_MAX_SECONDS`, and again at once after it gets new slots or bytes are
        found, or soon after a page asks (:meth:`nudge_landed`; pages never look themselves).
        Slots whose URL expired more than ``grace_seconds`` ago are not looked for (a PUT begun
        before expiry may finish after). A slot is recorded only once its bytes are there, so no
        profile exists without bytes. The bytes get the cheap structural check of the upload
        route and are then copied, inside the blob store and only if they are still the version
        read, to a key no presigned URL names
        (:func:`blob_key` with the hash); that key is recorded and the landed object removed, so
        a later PUT to the same URL never changes a recorded profile. Bytes that fail the check
        are recorded as an invalid profile (shown as such, never deserialized); bytes larger than
        the upload limit are refused by their size, never read, and not kept.
        ``stop``: asked before each upload; once it says True the rest is left for the next look
        (a stopping server does not read thousands of landed profiles first).

        Of several hosts looking at once, one learns each upload: a host claims a batch of the
        landed uploads in the store (:data:`LEARN_CLAIM_BATCH`, for :data:`LEARN_LEASE_MS`) before
        reading any, and passes over those under another host's live claim; a claim whose host
        died runs out and is taken by the next look. Recording stays conditional (``if_unstored``).
        A look for one session (a request's: an export, a commit, a link) takes no claim and passes
        nothing over: it must see every profile that landed before it, without waiting for another
        host (which may have died); those looks are rare, and the bulk is the background's.
        """
        if not self.presigns:
            return []
        expires_after = int(now_ms() / 1000) - grace_seconds
        by_session: dict[str, list[UploadRecord]] = {}
        for upload in self.metadata.unstored_uploads(session_id=session_id, expires_after=expires_after):
            by_session.setdefault(upload.session_id, []).append(upload)
        background = session_id is None
        if background:
            with self._look_lock:  # sessions without open slots are forgotten
                self._next_look = {k: v for k, v in self._next_look.items() if k in by_session}
        learned: list[UploadRecord] = []
        owner, now = self.metadata.owner, now_ms()
        stopped = False

        def stopping() -> bool:  # asked before each upload; once True, stays so without asking again
            nonlocal stopped
            stopped = stopped or (stop is not None and stop())
            return stopped

        for session, uploads in by_session.items():
            if background and not self._look_due(session):
                continue
            free = [upload for upload in uploads if not (background and upload.learned_elsewhere(owner, now))]
            sizes = self._landed_sizes(session, free)
            if background or sizes:
                self._looked(session, landed=bool(sizes), held=len(free) < len(uploads))
            landed = [upload for upload in free if blob_key(upload.session_id, upload.id) in sizes]
            if not background:  # a request's look: what it must see is read now, claimed or not
                learned += self._record_each(landed, sizes, stop=stopping)
            else:
                for start in range(0, len(landed), LEARN_CLAIM_BATCH):
                    learned += self._learn_claimed(landed[start : start + LEARN_CLAIM_BATCH], sizes, stop=stopping)
                    if stopped:
                        break
            if stopped:
                return learned
        if learned:
            logger.debug("learned %d uploads that landed in the blob store", len(learned))
            if not background:  # the background's caller is the ingest worker itself
                self._recorded()
        return learned

    def _look_due(self, session_id: str) -> bool:
        with self._look_lock:
            look = self._next_look.get(session_id)
        return look is None or time.monotonic() >= look.due

    def _looked(self, session_id: str, *, landed: bool, held: bool = False) -> None:
        """After a look at a session's open slots: when bytes were there, the next background look
        looks again (whatever became of them); else it waits :data:`LANDED_LOOK_SECONDS`, then
        twice the last wait each time, up to :data:`LANDED_LOOK_MAX_SECONDS`. While another host
        holds learn claims there (``held``) the wait does not grow: a dead host's are taken soon."""
        with self._look_lock:
            if landed:
                self._next_look.pop(session_id, None)
                return
            if held:
                now = time.monotonic()
                self._next_look[session_id] = _Look(due=now + LANDED_LOOK_SECONDS, wait=0.0, looked=now)
                return
            last = self._next_look.get(session_id)
            wait = LANDED_LOOK_SECONDS
            if last is not None and last.wait:
                wait = min(2 * last.wait, LANDED_LOOK_MAX_SECONDS)
            now = time.monotonic()
            self._next_look[session_id] = _Look(due=now + wait, wait=wait, looked=now)

    def sweep_expired_slots(self, *, grace_seconds: int | None = None, stop: Callable[[], bool] | None = None) -> int:
        """Delete upload slots never stored whose URL expired more than ``grace_seconds`` ago
        (default :data:`SWEEP_GRACE_SECONDS`, plus :data:`LANDED_GRACE_SECONDS` with presigned
        URLs); return how many. With presigned URLs a slot whose bytes are in the blob store is
        recorded as :meth:`learn_landed` does, never deleted. Safe in several processes and hosts
        at once: each delete re-checks, in the database, that the slot is still unstored and expired."""
        if grace_seconds is None:
            grace_seconds = SWEEP_GRACE_SECONDS + (LANDED_GRACE_SECONDS if self.presigns else 0)
        expired_before = int(now_ms() / 1000) - grace_seconds
        deleted = 0
        while stop is None or not stop():
            slots = self.metadata.expired_slots(expired_before=expired_before, limit=SWEEP_BATCH)
            doomed = {slot.id for slot in slots}
            if self.presigns:
                by_session: dict[str, list[UploadRecord]] = {}
                for slot in slots:
                    by_session.setdefault(slot.session_id, []).append(slot)
                for session, uploads in by_session.items():
                    sizes = self._landed_sizes(session, uploads)
                    late = [upload for upload in uploads if blob_key(upload.session_id, upload.id) in sizes]
                    doomed.difference_update(upload.id for upload in late)  # kept, and recorded if the session takes it
                    self._learn_claimed(late, sizes)
            gone = self.metadata.delete_expired_slots(sorted(doomed), expired_before=expired_before)
            deleted += gone
            if len(slots) < SWEEP_BATCH or not gone:
                break
        if deleted:
            logger.info("deleted %d upload slots whose URLs expired unused", deleted)
        return deleted

    def _landed_sizes(self, session_id: str, uploads: Sequence[UploadRecord]) -> dict[str, int]:
        """Blob key -> size of the open uploads whose bytes are there: a HEAD each, or one listing
        of the session's keys when there are many."""
        keys = {blob_key(upload.session_id, upload.id) for upload in uploads}
        if len(keys) > _HEADS_BEFORE_LISTING:
            return {key: size for key, size in self.blobs.list_sizes(f"profiles/{session_id}/") if key in keys}
        sizes = {}
        for key in keys:
            size = self.blobs.size(key)
            if size is not None:
                sizes[key] = size
        return sizes

    def _learn_claimed(
        self, uploads: Sequence[UploadRecord], sizes: dict[str, int], *, stop: Callable[[], bool] | None = None
    ) -> list[UploadRecord]:
        """Claim the learning of these landed uploads (``sizes``: blob key -> size), record those
        taken (:meth:`_record_landed`) and return what was recorded; uploads another host claimed
        are passed over. The claims of uploads left unrecorded end here, so the next look takes them."""
        if not uploads:
            return []
        taken = self.metadata.claim_landed([upload.id for upload in uploads], lease_ms=LEARN_LEASE_MS)
        learned: list[UploadRecord] = []
        try:
            learned = self._record_each([upload for upload in uploads if upload.id in taken], sizes, stop=stop)
        finally:
            if left := sorted(taken.difference(upload.id for upload in learned)):
                self.metadata.release_landed(left)
        return learned

    def _record_each(
        self, uploads: Sequence[UploadRecord], sizes: dict[str, int], *, stop: Callable[[], bool] | None = None
    ) -> list[UploadRecord]:
        """:meth:`_record_landed` for each of these landed uploads until ``stop`` says so; what was recorded."""
        learned: list[UploadRecord] = []
        for upload in uploads:
            if stop is not None and stop():
                break
            key = blob_key(upload.session_id, upload.id)
            if (recorded := self._record_landed(upload, key, sizes[key])) is not None:
                learned.append(recorded)
        return learned

    def _record_landed(self, upload: UploadRecord, key: str, size: int) -> UploadRecord | None:
        """Check the bytes a presigned PUT left under ``key`` (``size`` from a HEAD or listing),
        keep a copy of exactly them under a key only the server writes, record it and remove the
        landed object; None when nothing was recorded (the bytes are gone or were replaced since
        they were read: the next look takes them; another process recorded the upload first; the
        session was claimed)."""
        if size > self.max_upload_bytes:
            return self._refuse_landed(upload, key, size)
        version = self.blobs.read_version(key, self.max_upload_bytes)
        if version is None:
            return None
        data = version.data
        if data is None:  # replaced by larger bytes since the listing: refused by the GET's size
            return self._refuse_landed(upload, key, version.size)
        sha256, reason = hashlib.sha256(data).hexdigest(), None
        tags: tuple[tuple[str, str], ...] = ()
        if upload.format == "zip" and looks_like_zip(data):
            return self._record_landed_zip(upload, key, data)
        try:
            tags = check_profile_bytes(data, max_columns=self.max_columns).segment_tags
        except ProfileCheckError as exc:
            reason = f"it is not a well-formed whylogs profile ({exc})"
        checked = blob_key(upload.session_id, upload.id, sha256)
        try:
            vouched = self.blobs.copy_version(key, checked, version.tag)
        except (BlobChangedError, FileNotFoundError):
            return None
        if not vouched and not self._holds(checked, data):
            self.blobs.delete(checked)
            return None
        try:
            outcome = self.metadata.mark_stored(
                upload.id,
                key=checked,
                size=len(data),
                sha256=sha256,
                if_unstored=True,
                invalid=reason,
                segment_tags=tags,
            )
        except UploadAlreadyStoredError:
            current = self.get_upload(upload.id)
            if current is None or current.path != checked:  # the same bytes share the same key
                self.blobs.delete(checked)
            return None
        except StoreError:
            self.blobs.delete(checked)
            return None  # the session was claimed meanwhile: its bytes stay unrecorded
        if outcome.duplicate_of is not None:
            self.blobs.delete(checked)
        self.blobs.delete(key)
        self.upload_landed(outcome)
        return outcome.upload

    def _record_landed_zip(self, upload: UploadRecord, key: str, data: bytes) -> UploadRecord | None:
        """:meth:`_record_landed` for a zip a presigned PUT left under ``key``: its profiles are
        stored as :meth:`store_zip` does (under keys only the server writes) and the zip removed;
        a zip refused is recorded as an invalid profile, with the reason."""
        try:
            members = self.unpack_zip(data)
        except ZipUploadError as exc:
            reason = f"it is not a zip of whylogs profiles this server takes ({exc})"
            sha256 = hashlib.sha256(data).hexdigest()
            checked = blob_key(upload.session_id, upload.id, sha256)
            self.blobs.put_bytes(checked, data)
            try:
                outcome = self.metadata.mark_stored(
                    upload.id,
                    key=checked,
                    size=len(data),
                    sha256=sha256,
                    if_unstored=True,
                    invalid=reason,
                )
            except StoreError:
                self.blobs.delete(checked)
                return None
            self.blobs.delete(key)
            self.upload_landed(outcome)
            return outcome.upload
        try:
            outcome = self.store_zip(upload, members)
        except StoreError:
            return None  # the session was claimed or deleted meanwhile
        self.blobs.delete(key)
        return outcome.upload

    def _holds(self, key: str, data: bytes) -> bool:
        """Whether ``key`` holds exactly ``data`` (read back, never more than its length)."""
        copy = self.blobs.read_version(key, len(data))
        return copy is not None and copy.data == data

    def _refuse_landed(self, upload: UploadRecord, key: str, size: int) -> UploadRecord | None:
        """Record landed bytes larger than the upload limit as an invalid profile without bytes
        (they are never read) and remove them."""
        reason = f"it is larger than this server's upload limit of {self.max_upload_bytes} bytes"
        try:
            refused = self.metadata.mark_refused(upload.id, size=size, reason=reason)
        except StoreError:
            return None  # claimed meanwhile, or recorded by another process
        self.blobs.delete(key)
        return refused

    # -- profile lookups (shared by the link operation and the observatory pages) ------------

    def list_profiles(self, session_id: str, kind: UploadKind | None = None) -> list[UploadRecord]:
        """The stored profiles of a session (of one kind, if given), oldest first; no duplicates."""
        return self.metadata.list_profiles(session_id, kind)

    def batch_profiles_between(self, session_id: str, start: int | None, end: int | None) -> list[UploadRecord]:
        """The stored batch profiles of a session with a dataset timestamp in ``[start, end)`` (None:
        unbounded), oldest first: an index walk of the range, whatever the session holds outside it."""
        return self.metadata.batch_profiles_between(session_id, start, end)

    def batch_timestamp_span(self, session_id: str) -> tuple[int, int] | None:
        """The first and last dataset timestamps of a session's valid stored batch profiles (two index seeks)."""
        return self.metadata.batch_timestamp_span(session_id)

    def batch_segments(self, session_id: str) -> list[tuple[tuple[str, str], ...]]:
        """The distinct segment tags of a session's valid stored batch profiles with a dataset timestamp."""
        return self.metadata.batch_segments(session_id)

    def batch_bucket_counts(self, session_id: str, size: int, offset: int = 0) -> tuple[int, int]:
        """How many distinct buckets of ``size`` ms (shifted by ``offset``) a session's valid stored
        batch profiles fall in: all of them, and those not pending (one aggregate in the database)."""
        return self.metadata.batch_bucket_counts(session_id, size, offset)

    def batch_day_marks(self, session_id: str) -> dict[int, tuple[int, ...]]:
        """Day number -> a mark of a session's stored batch profiles of that day that changes whenever
        one of them does (one aggregate in the database; see ``MetadataStore.batch_day_marks``)."""
        return self.metadata.batch_day_marks(session_id)

    def batch_timestamps(self, session_id: str) -> list[tuple[int, tuple[tuple[str, str], ...], bool]]:
        """The distinct (dataset timestamp, segment tags, pending) of a session's valid stored batch profiles."""
        return self.metadata.batch_timestamps(session_id)

    def page_profiles(self, session_id: str, query: ProfileQuery) -> ProfilePage:
        """One page of a session's stored profiles (order, filters and cursor in ``query``), read by
        keyset from an index: its cost does not grow with the session (see ``storage/paging.py``)."""
        page: ProfilePage = self.metadata.page_profiles(session_id, query)
        return page

    def profile_counts(self, session_id: str, *, at_most: int | None = None) -> dict[str, int]:
        """How many stored profiles a session holds, by kind (``batch``, ``reference``), each counted
        no further than ``at_most``: an index walk of at most that many entries a kind."""
        return self.metadata.profile_counts(session_id, at_most=at_most)

    def count_profiles(self, session_id: str, *, at_most: int | None = None) -> int:
        """How many stored profiles a session holds, counted no further than ``at_most`` (an index walk)."""
        return self.metadata.count_profiles(session_id, at_most=at_most)

    def profile_bytes(self, session_id: str) -> int:
        """How many bytes a session's stored profiles take (one aggregate in the database)."""
        return self.metadata.profile_bytes(session_id)

    def find_batch_profiles(self, session_id: str, dataset_timestamp: int) -> list[UploadRecord]:
        """The stored batch profiles (all segments) of a session with this dataset timestamp."""
        return self.metadata.find_batch_profiles(session_id, dataset_timestamp)

    def get_reference(self, session_id: str, reference_id: str) -> UploadRecord | None:
        """The stored reference profile ``reference_id`` of a session, or None."""
        return self.metadata.get_reference(session_id, reference_id)

    def resolve_profile(self, session_id: str, selector: str) -> list[UploadRecord]:
        """The stored profiles a link's ``profile=`` value names, or [] when it names none.

        A selector is a batch ``datasetTimestamp`` (all segments with it), a reference id
        (``ref-…``) or a batch upload id (``log-…``; a duplicate upload names its original).
        """
        timestamp = parse_timestamp_selector(selector)
        if timestamp is not None:
            return self.find_batch_profiles(session_id, timestamp)
        if is_valid_id(selector, "ref"):
            reference = self.get_reference(session_id, selector)
            return [reference] if reference else []
        if is_valid_id(selector, "log"):
            upload = self.get_upload(selector)
            if upload and upload.duplicate_of is not None:
                upload = self.get_upload(upload.duplicate_of)
            if upload and upload.session_id == session_id and upload.stored:
                return [upload]
        return []

    # -- reconciliation ---------------------------------------------------------------------

    def reconcile(self, *, grace_seconds: float | None = None, scan: bool = True) -> ReconcileReport:
        """Fix what a crash can leave (run at start, before this server serves):

        - temporary files of bodies being received are removed (this host's own, in its data dir);
        - on a store only this host uses, claims of the ingest worker are released (their
          profiles are summarised again), and claims to learn landed uploads (learned at the next
          look, not after their lease); on a shared one (``metadata.shared``) only the claims
          this host took before it stopped or died (``metadata.owner``, the same across restarts
          from one data dir: :func:`host_id`): others are other hosts' live work, and a dead
          host's claim ends with its lease or when it starts again;
        - with ``scan`` (see :meth:`scan_orphans`): bytes no row records are removed and rows whose
          bytes are gone are reset. A team host's start leaves the scan to :meth:`scan_orphans_if_due`
          (its sweeper, one host of the team at a time), so a start costs the same whatever the history.

        Landed presigned uploads are not recorded here: the ingest worker's look
        (:meth:`learn_landed`) and the slot sweep record each one, once, right after the start.
        """
        report = ReconcileReport(temp_files=self.blobs.reconcile())
        if not self.shared:
            report.released_claims = self.metadata.release_ingest_claims()
            report.released_learn_claims = self.metadata.release_learn_claims()
        elif owner := self.metadata.owner:  # this host's own claims, left when it stopped or died
            report.released_claims = self.metadata.release_ingest_claims(owner=owner)
            report.released_learn_claims = self.metadata.release_learn_claims(owner=owner)
        if scan:
            self._scan_orphans(report, grace_seconds)
        self._log_reconciled("at start", report)
        return report

    def scan_orphans(
        self, *, grace_seconds: float | None = None, stop: Callable[[], bool] | None = None
    ) -> ReconcileReport:
        """Remove bytes no row records and reset rows whose bytes are gone (what a crash between
        writing bytes and recording them, or between recording and removing landed bytes, leaves).

        Other hosts may be recording uploads while this runs (a shared store), so it removes only
        what no recording can still need, and re-reads the upload's row right before each removal:

        - bytes whose upload slot does not exist (no row can ever name them), whatever their age;
        - other bytes only once older than ``grace_seconds`` before the scan began (default
          :data:`RECONCILE_GRACE_SECONDS` on a shared store, 0 otherwise) by the blob store's
          last-modified time: anything written while it scans, or just before, may be another
          host's copy about to be recorded;
        - of those, leftovers of a recorded upload (the landed bytes a presigned PUT left, an older
          version), and other copies of a slot not recorded whose URL expired long ago
          (:data:`LANDED_GRACE_SECONDS`). The landed bytes of a slot not recorded yet are never
          removed here: :meth:`learn_landed` records them, or the slot sweep once the slot is gone.

        A row is reset only if it still names the missing key and a second look still finds
        nothing. ``stop``: asked before each removal (a stopping server leaves the rest).
        """
        report = ReconcileReport()
        self._scan_orphans(report, grace_seconds, stop)
        return report

    def scan_orphans_if_due(
        self, *, interval_seconds: float = ORPHAN_SCAN_SECONDS, stop: Callable[[], bool] | None = None
    ) -> ReconcileReport | None:
        """:meth:`scan_orphans` if no process of the store scanned in the last ``interval_seconds``
        (one of them takes the turn, in the database); None when it was not this one's turn."""
        if not self.metadata.take_turn("orphan_scan", int(interval_seconds * 1000)):
            return None
        report = self.scan_orphans(stop=stop)
        self._log_reconciled("in the background", report)
        return report

    @staticmethod
    def _log_reconciled(when: str, report: ReconcileReport) -> None:
        if report:
            logger.warning(
                "reconciled the store %s: %d temporary files and %d profile files without a row removed, "
                "%d rows without bytes reset",
                when,
                len(report.temp_files),
                len(report.orphan_blobs),
                len(report.rows_without_bytes),
            )

    def _scan_orphans(
        self, report: ReconcileReport, grace_seconds: float | None, stop: Callable[[], bool] | None = None
    ) -> None:
        if grace_seconds is None:
            grace_seconds = RECONCILE_GRACE_SECONDS if self.shared else 0
        fresh_after = now_ms() - int(grace_seconds * 1000)
        known = dict(self.metadata.stored_keys())
        # one listing, not a lookup per row (S3); keys listed with when their bytes were written
        modified = {key: stamp for key, _, stamp in self.blobs.list_stamped("profiles/")}
        missing = [(upload_id, key) for upload_id, key in known.items() if key not in modified]
        missing = [(upload_id, key) for upload_id, key in missing if not self.blobs.exists(key)]  # listed late?
        for row_id, row_key in missing:  # only while the row still names the missing key
            if self.metadata.unmark_stored([row_id], keys=[row_key]):
                report.rows_without_bytes.append(row_id)
        gone = {upload_id for upload_id, _ in missing}
        referenced = {key for upload_id, key in known.items() if upload_id not in gone}
        for key in sorted(modified):
            if key in referenced:
                continue
            if stop is not None and stop():
                return
            upload_id = _upload_id_of(key)
            upload = self.get_upload(upload_id) if upload_id else None  # read right before the removal
            if upload is not None and not self._removable(upload, key, modified[key], fresh_after):
                continue
            self.blobs.delete(key)
            report.orphan_blobs.append(key)

    def _removable(self, upload: UploadRecord, key: str, modified: int, fresh_after: int) -> bool:
        """Whether the unreferenced bytes ``key`` of an existing upload slot are a leftover."""
        if upload.path == key:
            return False  # recorded since the listing (another process learned a landed PUT)
        if modified > fresh_after:
            return False  # written while (or just before) this ran: maybe another host's, about to be recorded
        if upload.stored:
            return True  # a recorded upload never takes other bytes of its slot: a leftover
        if self.presigns and key == blob_key(upload.session_id, upload.id):
            return False  # landed, not recorded yet: learn_landed records it (a later PUT may have replaced it)
        # not a checked copy of a slot still open, which another process may be about to record
        open_after = int(now_ms() / 1000) - LANDED_GRACE_SECONDS
        return not (self.presigns and upload.expires_at >= open_after)

    def open_profile(self, upload: UploadRecord) -> BinaryIO:
        """A binary file reading the stored bytes of ``upload``; FileNotFoundError when they are gone."""
        if upload.path is None:
            raise FileNotFoundError(f"upload {upload.id} has no stored bytes")
        return self.blobs.open(upload.path)

    def check_upload_open(self, upload_id: str) -> UploadRecord:
        """The upload slot ``upload_id`` if bytes may still be PUT to it (see ``MetadataStore.check_upload_open``)."""
        return self.metadata.check_upload_open(upload_id)

    def duplicates_of(self, upload_ids: Sequence[str]) -> int:
        """How many uploads repeat the bytes of one of ``upload_ids`` (see ``MetadataStore.duplicates_of``)."""
        return self.metadata.duplicates_of(upload_ids)

    # -- summaries: the ingest worker's claims and verdicts -----------------------------------

    def claim_ingest(self, *, lease_ms: int, limit: int = 1, max_bytes: int | None = None) -> list[UploadRecord]:
        """Claim up to ``limit`` stored profiles still to be summarised (of at most ``max_bytes``
        together), for ``lease_ms``; one whose last claim died comes alone."""
        return self.metadata.claim_ingest(lease_ms=lease_ms, limit=limit, max_bytes=max_bytes)

    def announce_ingest(self) -> None:
        """Tell the other processes of a shared store that profiles wait to be summarised."""
        self.metadata.announce_ingest()

    def listen_ingest(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Have ``callback`` called when another process announces ingest work; the stop function,
        or None when the store cannot tell."""
        return self.metadata.listen_ingest(callback)

    def renew_ingest_claims(self, upload_ids: Sequence[str], *, lease_ms: int) -> set[str]:
        """Renew this host's claims on ``upload_ids`` still held on pending profiles; the ids kept."""
        return self.metadata.renew_ingest_claims(upload_ids, lease_ms=lease_ms)

    def claim_upload_ingest(self, upload_id: str, *, lease_ms: int) -> bool:
        """Claim the profile ``upload_id`` to summarise it now; False when it is not this process's to take."""
        return self.metadata.claim_upload_ingest(upload_id, lease_ms=lease_ms)

    def release_ingest_claim(
        self, upload_id: str, sha256: str, *, note: str | None = None, counted: bool = True
    ) -> bool:
        """End this process's claim of a profile it could not summarise, so it is tried again."""
        return self.metadata.release_ingest_claim(upload_id, sha256, note=note, counted=counted)

    def pending_ingest(self) -> int:
        """How many stored profiles are not summarised yet."""
        return self.metadata.pending_ingest()

    def store_summary(self, upload_id: str, sha256: str, data: bytes) -> bool:
        """Keep the summary of the bytes ``sha256`` of ``upload_id``; False when they were replaced meanwhile."""
        return self.metadata.store_summary(upload_id, sha256, data)

    def store_summaries(self, summaries: Sequence[tuple[str, str, bytes]]) -> list[bool]:
        """:meth:`store_summary` of several (upload id, sha256, summary) at once (one transaction)."""
        return self.metadata.store_summaries(summaries)

    def mark_invalid(self, upload_id: str, sha256: str, reason: str) -> bool:
        """Record that the bytes ``sha256`` of ``upload_id`` are not a readable profile, and why."""
        return self.metadata.mark_invalid(upload_id, sha256, reason)

    def get_summary(self, upload_id: str, sha256: str) -> bytes | None:
        """The stored summary of the bytes ``sha256`` of ``upload_id``, if there is one."""
        return self.metadata.get_summary(upload_id, sha256)

    # -- derived artefacts (shared by every process and the next start) ----------------------

    def get_derived(self, session_id: str, key: str) -> bytes | None:
        return self.metadata.get_derived(session_id, key)

    def put_derived(self, session_id: str, key: str, data: bytes) -> None:
        self.metadata.put_derived(session_id, key, data)

    def drop_derived(self, session_id: str, prefix: str = "", keep: str | None = None) -> int:
        return self.metadata.drop_derived(session_id, prefix, keep)

    def write_derived(self, session_id: str, writes: Sequence[DerivedWrite]) -> None:
        """Derived values stored and dropped in one transaction (``MetadataStore.write_derived``)."""
        self.metadata.write_derived(session_id, writes)

    # -- the parts of the metadata store that services use as they are ----------------------

    def notification_queue(self) -> NotificationQueueSql:
        """The notification queue and metric snapshots (every SQL metadata store keeps them)."""
        if not isinstance(self.metadata, NotificationQueueSql):
            raise TypeError(f"{type(self.metadata).__name__} keeps no notifications")
        return self.metadata

    def deletions(self) -> DeletionSql:
        """The deletion statements: marks, purge claims, retention (every SQL metadata store has them)."""
        if not isinstance(self.metadata, DeletionSql):
            raise TypeError(f"{type(self.metadata).__name__} cannot delete")
        return self.metadata

    # -- API keys (their hashes; see ``api_keys.py``) -------------------------------------------

    def add_api_key(self, key_id: str, org_id: str, secret_sha256: str) -> None:
        self.metadata.add_api_key(key_id, org_id, secret_sha256)

    def find_api_key(self, key_id: str) -> dict[str, Any] | None:
        return self.metadata.find_api_key(key_id)

    def list_api_keys(self) -> list[dict[str, Any]]:
        return self.metadata.list_api_keys()

    def revoke_api_key(self, key_id: str) -> bool:
        return self.metadata.revoke_api_key(key_id)


__all__ = [
    "DB_FILE",
    "GUEST_ORG_ID",
    "ID_PATTERN",
    "OPERATIONS",
    "NewUpload",
    "OpenUpload",
    "ReconcileReport",
    "SessionClaimedError",
    "SessionRecord",
    "SlotLimitError",
    "Store",
    "StoredBytesChangedError",
    "StoreError",
    "StoredOutcome",
    "UnknownUploadError",
    "UploadKind",
    "UploadRecord",
    "blob_key",
    "is_valid_id",
    "new_id",
    "now_ms",
    "parse_timestamp_selector",
]
