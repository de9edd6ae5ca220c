"""The storage seam of the server: a :class:`MetadataStore` (sessions, upload slots, profiles,
ingest state, stored summaries, derived artefacts, counters) and a :class:`BlobStore` (profile
bytes under keys). Implementations are chosen at start by :func:`storage.open_storage`:

============  ==========================================  ====================================
role          embedded (default)                          team
============  ==========================================  ====================================
metadata      ``sqlite.SqliteMetadataStore`` (WAL)        ``postgres`` (psycopg 3)
blobs         ``files.FileBlobStore`` (under the data     ``s3`` (boto3, presigned PUT URLs)
              dir)
============  ==========================================  ====================================

Both SQL stores share their statements (``sql.py``); a dialect adapts placeholders, DDL types
and upserts. Everything several server processes must agree on lives behind this seam: nothing
that matters is kept in one process's memory.

Life of a profile: an *upload slot* is created (``create_uploads``); its bytes land in the blob
store under :func:`profile_key` and the slot is then marked stored (``mark_stored``) with
``ingest_state`` ``pending``. The ingest worker claims pending profiles (``claim_ingest``),
summarises them and stores the summary (``store_summary``, state ``ready``) or marks them
``invalid`` with a reason. A row is only ever marked stored *after* its bytes are durable, so a
crash leaves at worst bytes without a row (reconciled at start), never a row without bytes.

Times are epoch milliseconds, except ``expires_at`` (unix seconds, like an upload URL's ``expires``).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

UploadKind = Literal["batch", "reference"]
#: What a slot's bytes are: one profile (None), or ``zip``: a zip of segment profiles of one batch
#: (whylogs' ``write(zip=True)``), each stored as its own profile once the zip lands.
UploadFormat = Literal["zip"]
#: ``pending``: stored, not summarised yet; ``ready``: summary stored; ``invalid``: the full check failed.
IngestState = Literal["pending", "ready", "invalid"]
#: One write of :meth:`MetadataStore.write_derived`: ``("put", key, data)`` or ``("drop", prefix, keep)``.
DerivedWrite = tuple[Literal["put"], str, bytes] | tuple[Literal["drop"], str, str | None]

#: Failed tries of one profile's summary before it is given up on and marked invalid: a profile
#: whose summarising crashed (or hung) the sandbox process, or whose host died while summarising
#: it alone, that many times is never tried again.
INGEST_MAX_TRIES = 3

#: Every id the server makes: ``session-``, ``ref-`` (reference) or ``log-`` (batch) + random.
ID_PATTERN = re.compile(r"^(session|ref|log)-[A-Za-z0-9_-]{16,64}$")
GUEST_ORG_ID = "guest"

#: The derived value (see :meth:`MetadataStore.put_derived`) naming the version of what a session's
#: timeline shows: replaced by :func:`new_version` whenever that may change. Recording an upload
#: replaces it in the transaction that records it (:meth:`MetadataStore.mark_stored`); the
#: timeline's other changes replace it themselves (``rollups.bump_version``).
TIMELINE_VERSION_KEY = "timeline/version"

#: Operations whose calls are counted (see :meth:`MetadataStore.stats`).
OPERATIONS = (
    "create_session",
    "upload",
    "reference",
    "references",
    "observatory_link",
    "get_session",
    "claim",
    "put",
    "observatory_page",
)


class StoreError(Exception):
    """Base of the store's lookup errors."""


class UnknownUploadError(StoreError):
    """No upload has this id."""


class SessionClaimedError(StoreError):
    """The upload's session was claimed; it takes no more data."""


class SessionGoneError(StoreError):
    """The session (or dataset container) written to was deleted meanwhile: nothing was written.

    A route checks that a session is there before it writes, but a deletion (on any host) may
    come between; the write then finds the session marked deleted, or gone, in its own transaction."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} was deleted")
        self.session_id = session_id


class SlotLimitError(StoreError):
    """Creating the upload slots asked for would pass a per-session limit (nothing was created).

    ``limit`` names which: ``"open"`` (slots not PUT yet) or ``"profiles"`` (stored profiles plus
    open slots); ``held`` is what the session has of it, ``allowed`` the limit."""

    def __init__(self, limit: Literal["open", "profiles"], held: int, allowed: int) -> None:
        super().__init__(f"{limit}: {held} held, {allowed} allowed")
        self.limit, self.held, self.allowed = limit, held, allowed


class UploadAlreadyStoredError(StoreError):
    """The upload was recorded as stored meanwhile (by another process learning the same landed PUT)."""


class BlobChangedError(Exception):
    """The bytes under a key are no longer the version that was read (a presigned PUT replaced them)."""


class StorageConfigError(ValueError):
    """A storage URL (``--database-url``, ``--blob-store``) cannot be used; the message says why."""


class StorageUnavailableError(RuntimeError):
    """The database or the object store could not be reached or refused us; the message says what
    to check and never shows a secret."""


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return int(time.time() * 1000)


def new_id(prefix: Literal["session", "ref", "log"]) -> str:
    """A fresh id with 144 random bits, e.g. ``session-3q2…``."""
    return f"{prefix}-{secrets.token_urlsafe(18)}"


def new_version() -> bytes:
    """A fresh value of a session's :data:`TIMELINE_VERSION_KEY` (64 random bits, as hex)."""
    return secrets.token_hex(8).encode()


def is_valid_id(value: str, prefix: str | None = None) -> bool:
    """Whether ``value`` is shaped like a server-made id (of the given prefix, if any)."""
    match = ID_PATTERN.match(value)
    return match is not None and (prefix is None or match.group(1) == prefix)


def require_id(value: str, prefix: str | None = None) -> None:
    """Raise ValueError unless ``value`` is a server-made id (ids are checked before any use in a key)."""
    if not is_valid_id(value, prefix):
        raise ValueError(f"not a server-made id: {value[:80]!r}")


def profile_key(session_id: str, upload_id: str) -> str:
    """The blob key of a stored profile: ``profiles/<session id>/<upload id>.bin``."""
    require_id(session_id, "session")
    require_id(upload_id)
    return f"profiles/{session_id}/{upload_id}.bin"


@dataclass(frozen=True)
class SessionRecord:
    """One guest session. ``org_id`` is ``"guest"`` until the session is claimed.

    A row with a ``dataset_id`` is not a session but the container of an organization's dataset
    (``org_id`` / ``dataset_id``, written through the log API with an API key): the per-session
    machinery (uploads, ingest, digests, timeline) keys on its id, and no guest route ever finds
    it (see ``Store.guest_session``)."""

    id: str
    user_id: str
    org_id: str
    created_at: int
    claimed_at: int | None = None
    claimed_org: str | None = None
    dataset_id: str | None = None

    @property
    def claimed(self) -> bool:
        return self.claimed_at is not None

    @property
    def is_dataset(self) -> bool:
        """Whether this row holds an organization's dataset, not a guest session."""
        return self.dataset_id is not None


@dataclass(frozen=True)
class UploadRecord:
    """One upload slot; a profile once ``stored_at`` is set.

    ``path`` is the blob key of its bytes. ``duplicate_of`` names the stored upload whose identical
    bytes (same session, kind, timestamp and segment) made this one redundant: a duplicate has no
    bytes of its own and is left out of profile listings.
    """

    id: str
    session_id: str
    kind: UploadKind
    dataset_timestamp: int | None
    alias: str | None
    segment_tags: tuple[tuple[str, str], ...]
    created_at: int
    expires_at: int
    stored_at: int | None = None
    size: int | None = None
    sha256: str | None = None
    path: str | None = None
    ingest_state: IngestState | None = None
    ingest_error: str | None = None
    duplicate_of: str | None = None
    #: When an ingest worker's claim on it ends (epoch ms), if one was taken; not part of equality.
    ingest_lease: int | None = field(default=None, compare=False)
    #: How many tries of its summary failed on it (see :data:`INGEST_MAX_TRIES`).
    ingest_tries: int = 0
    #: ``zip`` for a slot that takes a zip of segment profiles (see :data:`UploadFormat`).
    format: UploadFormat | None = None
    #: When a host's claim to learn its landed presigned PUT ends (epoch ms), and that host (see
    #: :meth:`MetadataStore.claim_landed`); not part of equality.
    learn_lease: int | None = field(default=None, compare=False)
    learn_owner: str | None = field(default=None, compare=False)

    def learned_elsewhere(self, owner: str, now: int) -> bool:
        """Whether another host (not ``owner``) holds a live claim to learn this upload at ``now``."""
        return self.learn_lease is not None and self.learn_lease >= now and self.learn_owner != owner

    @property
    def stored(self) -> bool:
        return self.stored_at is not None

    @property
    def invalid(self) -> bool:
        return self.ingest_state == "invalid"


@dataclass(frozen=True)
class NewUpload:
    """What to create one upload slot for (see :meth:`MetadataStore.create_uploads`)."""

    kind: UploadKind
    dataset_timestamp: int | None = None
    alias: str | None = None
    segment_tags: tuple[tuple[str, str], ...] = ()
    format: UploadFormat | None = None


@dataclass(frozen=True)
class StoredOutcome:
    """What :meth:`MetadataStore.mark_stored` did: the upload as it is now, and the id of the
    stored upload it duplicates (its bytes were then not kept), if any. ``recorded`` is False
    when the call changed nothing (those bytes were recorded already, or bytes are needed)."""

    upload: UploadRecord
    duplicate_of: str | None = None
    recorded: bool = True


@dataclass(frozen=True)
class BlobVersion:
    """One version of the bytes under a key, as :meth:`BlobStore.read_version` found it.

    ``tag`` names exactly this version (S3: the ETag) for :meth:`BlobStore.copy_version`.
    ``data`` is None when the object is larger than the reader's limit: it was not read.
    """

    size: int
    tag: str
    data: bytes | None = field(default=None, repr=False)


@runtime_checkable
class MetadataStore(Protocol):
    """Sessions, upload slots, profiles and everything derived from them.

    Every method is short and blocking (call it from a worker thread, not the event loop) and
    safe to call from several threads and several processes at once. Ids are checked with
    :func:`is_valid_id` before use; malformed ids are "unknown" (None or []), never an error.
    """

    #: Whether other hosts may use the store at the same time (PostgreSQL); then a server's start
    #: leaves their work alone (see ``Store.reconcile``).
    shared: bool
    #: The host the ingest claims of this store are taken for (``StorageSpec.owner``, which
    #: ``Store.open`` names from the data dir of a shared store; "" on others), so a restarting host
    #: releases its own dead claims and no one else's.
    owner: str

    # -- lifecycle --
    def close(self) -> None:
        """Release connections (idempotent)."""

    # -- sessions --
    def create_session(self, user_id: str) -> SessionRecord:
        """Start a new guest session for the installation ``user_id``."""

    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session, or None when the id is unknown or malformed."""

    def claim(self, session_id: str, org_id: str) -> SessionRecord | None:
        """Claim an unclaimed session into ``org_id``; the session as it is afterwards (a session
        claimed earlier is left as it was: compare its ``claimed_org``). Unknown, or a dataset's
        container: None."""

    def recent_sessions(self, limit: int = 20) -> list[SessionRecord]:
        """The newest guest sessions first (never a dataset's container)."""

    def session_count(self) -> int:
        """How many guest sessions there are (datasets' containers not counted)."""

    # -- datasets of organizations --
    def dataset_container(self, org_id: str, dataset_id: str) -> SessionRecord:
        """The container row of dataset ``dataset_id`` of ``org_id``, made on first use (safe when
        several processes make it at once: one row wins, all get it)."""

    def find_dataset(self, org_id: str, dataset_id: str) -> SessionRecord | None:
        """The container row of a dataset, or None when nothing was ever written to it."""

    def add_api_key(self, key_id: str, org_id: str, secret_sha256: str) -> None:
        """Keep a new API key: its id, org and the hex SHA-256 of its secret (never the secret)."""

    def find_api_key(self, key_id: str) -> dict[str, Any] | None:
        """The row of a key id (``key_id``, ``org_id``, ``secret_sha256``, ``created_at``,
        ``revoked_at``), or None."""

    def list_api_keys(self) -> list[dict[str, Any]]:
        """Every key's ``key_id``, ``org_id``, ``created_at`` and ``revoked_at`` (no hashes), oldest first."""

    def revoke_api_key(self, key_id: str) -> bool:
        """Refuse the key from now on; False when no unrevoked key has this id."""

    def move_stored_uploads(self, from_session: str, to_session: str) -> list[str]:
        """Move the stored uploads of one container into another (a transaction's into its dataset, at
        commit), in one write; their ids. Slots without bytes stay behind. :class:`SessionGoneError`
        (nothing moved) when the target was deleted meanwhile."""

    def delete_uploads(self, session_id: str) -> list[str]:
        """Forget every upload of a container and their summaries (an aborted transaction's); the
        blob keys of their bytes, for the caller to delete."""

    def put_setting(self, session_id: str, key: str, value: str) -> None:
        """Keep ``value`` (JSON text) under ``key`` for a dataset's container: what its org says of it
        (column schema, metric schema, weights); replaced by the next put of the same key.
        :class:`SessionGoneError` when the container was deleted meanwhile."""

    def get_setting(self, session_id: str, key: str) -> str | None:
        """The value kept under ``key``, or None."""

    def list_settings(self, session_id: str, prefix: str = "") -> list[tuple[str, str]]:
        """``(key, value)`` of every setting whose key starts with ``prefix``, by key."""

    # -- upload slots and profiles --
    def create_uploads(
        self,
        session_id: str,
        specs: Sequence[NewUpload],
        *,
        ttl_seconds: int,
        max_open: int | None = None,
        max_profiles: int | None = None,
    ) -> list[UploadRecord]:
        """Create upload slots in one transaction, expiring ``ttl_seconds`` from now. A reference
        without an alias is named after its id. Raises :class:`SlotLimitError` (creating nothing)
        when the session would hold more than ``max_open`` open slots (not stored, URL not
        expired), or more than ``max_profiles`` stored profiles and open slots; the count and
        the insert are one transaction, serialized per session. Raises :class:`SessionGoneError`
        (creating nothing) when the session is unknown or was deleted meanwhile."""

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        """The upload (stored or not), or None."""

    def check_upload_open(self, upload_id: str) -> UploadRecord:
        """The upload, if its bytes may be stored now; raises :class:`UnknownUploadError` or
        :class:`SessionClaimedError`."""

    def open_upload_and_duplicate(self, upload_id: str, sha256: str) -> tuple[UploadRecord, UploadRecord | None]:
        """The open upload slot, and the stored batch profile of the same session, timestamp and
        segment tags whose bytes have this sha256 (None: not a duplicate, or not a batch), in one
        read; raises like :meth:`check_upload_open`."""

    def mark_stored(
        self,
        upload_id: str,
        *,
        key: str | None,
        size: int,
        sha256: str,
        if_unstored: bool = False,
        invalid: str | None = None,
        segment_tags: tuple[tuple[str, str], ...] = (),
        stored_at: int | None = None,
    ) -> StoredOutcome:
        """Record that the upload's bytes are durable under blob ``key`` (``ingest_state`` pending).

        Call only after the bytes are durable. If another stored batch upload of the same
        session, timestamp and segment has the same sha256, the upload is recorded as its
        duplicate instead (``key`` unused: the caller deletes those bytes). With ``key`` None
        (no bytes written yet, as an original was seen a moment ago) and no such original any
        more, nothing is recorded: the outcome names no original and the upload is as it was,
        so the caller writes the bytes. Raises :class:`UnknownUploadError` or
        :class:`SessionClaimedError`; with ``if_unstored``, :class:`UploadAlreadyStoredError` when
        the upload is stored already (nothing is then changed: two processes learning one landed
        PUT record it once). Without it, recording bytes an upload is recorded with already (same
        sha256 and size) changes nothing either: the outcome is the upload as it is.
        ``invalid``: the reason bytes failed the cheap check; the profile is
        then recorded ``invalid`` in the same write, so no ingest worker ever claims it.
        ``segment_tags``: the segment the bytes' own header names; recorded as the upload's
        segment (and so counted in the duplicate check) when the slot was given none.
        ``stored_at``: the time recorded as landed (epoch ms; default now), for an import that
        keeps the order its profiles landed in. Everything is read and written in one write
        transaction: the slot (checked again), the original, the row and, when the upload is
        recorded anew as a valid profile (not a duplicate, not invalid, not a repeat: what the
        store's "upload landed" hooks run for), the session's :data:`TIMELINE_VERSION_KEY`.
        """

    def mark_refused(self, upload_id: str, *, size: int, reason: str) -> UploadRecord:
        """Record an open upload whose landed bytes were refused unread (larger than the upload
        limit) as an ``invalid`` profile without bytes: ``path`` None, ``sha256``
        ``unread-<size>``. Raises like :meth:`mark_stored` with ``if_unstored``."""

    def unmark_stored(self, upload_ids: Sequence[str], *, keys: Sequence[str] | None = None) -> int:
        """Forget that these uploads are stored (their bytes are gone); return how many changed.
        ``keys``: the blob key each was seen recorded with; an upload recorded under another key
        since (re-recorded by another process) is left as it is."""

    def list_profiles(self, session_id: str, kind: UploadKind | None = None) -> list[UploadRecord]:
        """The stored (non-duplicate) profiles of a session, oldest first."""

    def find_batch_profiles(self, session_id: str, dataset_timestamp: int) -> list[UploadRecord]:
        """The stored (non-duplicate) batch profiles of a session with this timestamp (all segments)."""

    def batch_profiles_between(self, session_id: str, start: int | None, end: int | None) -> list[UploadRecord]:
        """The stored (non-duplicate) batch profiles of a session whose dataset timestamp is in
        ``[start, end)`` (None: unbounded), oldest first: one walk of the (session, kind, dataset
        timestamp) index, whatever the session holds outside the range."""

    def batch_timestamp_span(self, session_id: str) -> tuple[int, int] | None:
        """The first and last dataset timestamps of a session's stored (non-duplicate, not invalid)
        batch profiles (None: it has none): two index seeks."""

    def batch_segments(self, session_id: str) -> list[tuple[tuple[str, str], ...]]:
        """The distinct segment tags of a session's stored (non-duplicate, not invalid) batch
        profiles with a dataset timestamp (``()`` for whole-dataset profiles)."""

    def batch_bucket_counts(self, session_id: str, size: int, offset: int = 0) -> tuple[int, int]:
        """How many distinct buckets ``floor((dataset timestamp + offset) / size)`` a session's stored
        (non-duplicate, not invalid) batch profiles fall in, all of them and those not pending:
        counted in the database, no row read out."""

    def batch_day_marks(self, session_id: str) -> dict[int, tuple[int, ...]]:
        """Day number (``floor(dataset timestamp / 86,400,000)``) -> a mark of the session's stored
        (non-duplicate) batch profiles of that day, invalid ones too: their count, newest and summed
        stored times, summed sizes, pending and invalid counts, aggregated in the database. A day's
        mark changes whenever a batch of it is stored, stored again, summarised, found invalid or
        deleted, so a reader that kept a day's batches reads them again only when its mark changed."""

    def batch_timestamps(self, session_id: str) -> list[tuple[int, tuple[tuple[str, str], ...], bool]]:
        """The distinct (dataset timestamp, segment tags, pending) of a session's stored
        (non-duplicate, not invalid) batch profiles: pending is true of one not summarised yet."""

    def page_profiles(self, session_id: str, query: Any) -> Any:
        """One page of a session's stored (non-duplicate) profiles: a ``paging.ProfilePage`` for a
        ``paging.ProfileQuery`` (order, filters, cursor), read by keyset (see ``storage/paging.py``)."""

    def profile_counts(self, session_id: str, *, at_most: int | None = None) -> dict[str, int]:
        """How many stored (non-duplicate) profiles a session holds, by kind, without reading its
        rows, each kind counted no further than ``at_most``."""

    def count_profiles(self, session_id: str, *, at_most: int | None = None) -> int:
        """How many stored (non-duplicate) profiles a session holds, counted no further than ``at_most``."""

    def profile_bytes(self, session_id: str) -> int:
        """How many bytes the stored (non-duplicate) profiles of a session take."""

    def get_reference(self, session_id: str, reference_id: str) -> UploadRecord | None:
        """The stored reference profile ``reference_id`` of a session, or None."""

    def duplicates_of(self, upload_ids: Sequence[str]) -> int:
        """How many uploads were recorded as duplicates of these."""

    def unstored_uploads(self, *, session_id: str | None = None, expires_after: int = 0) -> list[UploadRecord]:
        """Upload slots not stored yet whose URL expires at or after ``expires_after`` (unix
        seconds), of one session or all: where presigned PUTs may have landed."""

    def free_turn(self) -> contextlib.AbstractContextManager[bool]:
        """Hold this store while the block runs if no one else (thread or process) is at it now,
        without waiting: yields whether it is held. A store across the network yields False."""

    def claim_landed(self, upload_ids: Sequence[str], *, lease_ms: int) -> set[str]:
        """Claim, for this store's ``owner``, the learning of these upload slots' landed presigned
        PUTs (read, check, copy, record): the ids taken, those still unstored and under no live
        claim (an expired one, of a host that died while learning, is taken over). Several hosts
        claiming the same slots at once take each slot once: rows another transaction is claiming
        are skipped, never waited for (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite has one writer).
        Each claim holds for ``lease_ms``; :meth:`release_landed` ends it sooner."""

    def release_landed(self, upload_ids: Sequence[str]) -> None:
        """End this owner's learn claims on these slots (recorded or not: a slot left unrecorded,
        its bytes gone or replaced, is taken by the next look of any host)."""

    def release_learn_claims(self, *, owner: str | None = None) -> int:
        """End every learn claim on slots not recorded yet (at start, when no look runs: claims of
        a crashed server), or with ``owner`` only those taken for that host (a shared store: another
        host's claims are its live work); return how many. The slots are then learned by the next
        look at once, not after the lease (see :meth:`claim_landed`)."""

    def expired_slots(self, *, expired_before: int, limit: int) -> list[UploadRecord]:
        """Up to ``limit`` upload slots never stored whose URL expired before ``expired_before``
        (unix seconds), oldest first."""

    def delete_expired_slots(self, upload_ids: Sequence[str], *, expired_before: int) -> int:
        """Delete these slots if they are still not stored and expired before ``expired_before``
        (a slot stored meanwhile stays); return how many were deleted. Idempotent: safe when
        several processes sweep at once."""

    def stored_keys(self) -> Iterator[tuple[str, str]]:
        """``(upload id, blob key)`` of every stored profile (for reconciliation at start)."""

    def take_turn(self, name: str, interval_ms: int) -> bool:
        """Whether this caller takes the turn of the periodic job ``name``: True for exactly one of
        the processes (of every host) asking within ``interval_ms`` of the last turn taken."""

    # -- ingest --
    def claim_ingest(
        self, *, lease_ms: int, limit: int = 1, max_tries: int = INGEST_MAX_TRIES, max_bytes: int | None = None
    ) -> list[UploadRecord]:
        """Claim up to ``limit`` pending profiles (of at most ``max_bytes`` together, at least one)
        for summarising: each claim holds for ``lease_ms``, after which another worker (or a
        restarted server) may take the profile again. A profile whose last claim ended without a
        verdict (its host died) is claimed alone; that dead claim counts a try against it only if
        it held that profile alone, so a good profile never pays for its batch-mates. A profile
        with ``max_tries`` failed tries is marked ``invalid`` instead (its last failure, see
        :meth:`release_ingest_claim`, in the reason), so a profile that crashes whatever
        summarises it is never tried forever, across restarts too."""

    def claim_upload_ingest(self, upload_id: str, *, lease_ms: int, max_tries: int = INGEST_MAX_TRIES) -> bool:
        """Claim one pending profile (as :meth:`claim_ingest` does); False when it is not pending,
        another worker holds it, or it was tried ``max_tries`` times (it is then marked invalid)."""

    def release_ingest_claim(
        self, upload_id: str, sha256: str, *, note: str | None = None, counted: bool = True
    ) -> bool:
        """End this worker's claim of a profile still pending (its summarising failed without a
        verdict: the sandbox process crashed, hung or was stopped), so it is tried again. ``note``
        says what happened (kept as the reason should it be given up on); ``counted`` counts a
        failed try against it (False: the server was stopping, the profile is not to blame). Only
        this host's claim is ended."""

    def renew_ingest_claims(self, upload_ids: Sequence[str], *, lease_ms: int) -> set[str]:
        """Extend this host's claims on ``upload_ids`` to ``lease_ms`` from now (the heartbeat of
        work in progress); the ids still held. A claim that ran out and was taken by another host,
        or ended, is not renewed."""

    def announce_ingest(self) -> None:
        """Tell the other processes of a shared store that profiles wait to be summarised (PostgreSQL:
        a NOTIFY, which their :meth:`listen_ingest` hears); a no-op where none can listen."""

    def listen_ingest(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``callback`` (on a thread of the store's) whenever a process announces ingest work
        (:meth:`announce_ingest`), and once when listening starts; the function that stops it, or
        None when this store cannot tell (its workers then rely on their idle poll)."""

    def release_ingest_claims(self, *, owner: str | None = None) -> int:
        """End every claim (at start, when no worker runs: claims of a crashed server), or with
        ``owner`` only the claims taken for that host (a shared store, see ``shared``: another
        host's claims are its live work); return how many. Each ends as a lease that ran out, so
        the next claim treats it as a claim that died (see :meth:`claim_ingest`)."""

    def pending_ingest(self) -> int:
        """How many stored profiles still wait for their summary."""

    def store_summary(self, upload_id: str, sha256: str, data: bytes) -> bool:
        """Store the summary of the upload's bytes with this sha256 and mark it ``ready``; False
        when the upload's bytes changed meanwhile (the summary is then dropped)."""

    def store_summaries(self, summaries: Sequence[tuple[str, str, bytes]]) -> list[bool]:
        """:meth:`store_summary` of several (upload id, sha256, summary) in one transaction; whether
        each was stored."""

    def mark_invalid(self, upload_id: str, sha256: str, reason: str) -> bool:
        """Mark the upload ``invalid`` (the full check failed), if its bytes still have this sha256."""

    def get_summary(self, upload_id: str, sha256: str) -> bytes | None:
        """The stored summary of this version of the upload's bytes, or None."""

    # -- derived artefacts (e.g. timeline results) --
    def put_derived(self, session_id: str, key: str, data: bytes) -> None:
        """Store (or replace) a derived artefact of a session under ``key``."""

    def get_derived(self, session_id: str, key: str) -> bytes | None:
        """A derived artefact, or None."""

    def drop_derived(self, session_id: str, prefix: str = "", keep: str | None = None) -> int:
        """Drop the session's derived artefacts whose key starts with ``prefix`` (but not with
        ``keep``, when given); return how many."""

    def write_derived(self, session_id: str, writes: Sequence[DerivedWrite]) -> None:
        """Several :meth:`put_derived` (``("put", key, data)``) and :meth:`drop_derived`
        (``("drop", prefix, keep)``) in that order, in one transaction, which takes turns with a
        deletion of the session and with other such writes to it (they lock its derived rows in
        other orders: at once they could deadlock)."""

    # -- counters --
    def count(self, operation: str, n: int = 1) -> None:
        """Count ``n`` calls of an operation (kept in the store: every process sees the same counts)."""

    def add_counts(self, counts: dict[str, int]) -> None:
        """Add several operations' counts in one write."""

    def stats(self) -> dict[str, int]:
        """Calls per counted operation since the counters were last reset."""

    def reset_stats(self) -> None:
        """Set every counter to zero (an explicit reset: a server's start never does it, as the
        counters are shared by every host of the store)."""


@runtime_checkable
class BlobStore(Protocol):
    """Profile bytes under string keys (``profiles/<session>/<upload>.bin``).

    A key is built from server-made ids only (:func:`profile_key`). Writes are atomic: a reader
    sees the old bytes, the new bytes or nothing, never a partial object.
    """

    #: Whether clients PUT profiles straight to this store (:meth:`presign_put` gives URLs, as S3
    #: does); False when the API server receives every PUT itself (files).
    presigns_uploads: bool

    def close(self) -> None:
        """Release resources (idempotent)."""

    def put_file(self, key: str, source: Path) -> None:
        """Move the file ``source`` to ``key`` (its bytes fsynced before the rename)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, as durably as :meth:`put_file`."""

    def get_bytes(self, key: str) -> bytes:
        """The bytes under ``key``; FileNotFoundError when there are none."""

    def open(self, key: str) -> BinaryIO:
        """A binary file object reading ``key``; FileNotFoundError when there are none."""

    def size(self, key: str) -> int | None:
        """The size of ``key`` in bytes, or None when it does not exist."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds bytes."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it does not exist)."""

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix`` (for reconciliation)."""

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every key starting with ``prefix``: one listing where many open
        uploads of a session would each need a :meth:`size`."""

    def delete_prefix(self, prefix: str) -> list[str]:
        """Remove every key starting with ``prefix`` (a session's ``profiles/<session>/``, an
        upload's ``profiles/<session>/<upload>.``) and, for a whole directory's prefix, what held
        them (a file store's emptied directory; a write arriving meanwhile keeps it); the keys
        removed. Files not named like a key are never listed, so never removed."""

    def list_stamped(self, prefix: str = "") -> Iterator[tuple[str, int, int]]:
        """``(key, size, last modified in epoch ms)`` of every key starting with ``prefix``: what
        reconciliation lists, so it never touches bytes written while it runs."""

    def read_version(self, key: str, max_bytes: int) -> BlobVersion | None:
        """The bytes under ``key`` with the tag of their version, or None when there are none; an
        object larger than ``max_bytes`` is not read (``data`` None), whatever a listing said."""

    def copy_version(self, source: str, target: str, tag: str) -> bool:
        """Copy ``source`` to ``target`` only if ``source`` still holds the version ``tag``
        (:class:`BlobChangedError` otherwise; FileNotFoundError when it is gone): the copy is
        exactly the bytes that were read and checked. False when the store cannot vouch for that
        (the copy's tag differs, as ETags of encrypted S3 objects do): the caller checks the copy."""

    def presign_put(self, key: str, ttl_seconds: int) -> str | None:
        """A URL the client PUTs the bytes of ``key`` to directly, valid ``ttl_seconds``; None when
        this store has no such URLs (``presigns_uploads`` False): the API server then receives the
        PUT itself and signs its own URL (the embedded store)."""

    def new_temp_file(self) -> tuple[int, Path]:
        """An open descriptor and path of a fresh temporary file to receive a body into (on the
        same file system as the blobs, so :meth:`put_file` is a rename). Stores without local
        files return one in the system temp dir."""

    def reconcile(self) -> list[str]:
        """Remove leftovers of a crash (temporary files); return what was removed."""
