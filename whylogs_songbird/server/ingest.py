"""The ingest worker: the full check and the digest of every stored profile, off the request path.

A PUT only runs the cheap structural check (``profile_check.py``) and stores the bytes with
``ingest_state`` ``pending``. This worker, one per server process, claims pending profiles from
the store (a claim is a short lease, :data:`LEASE_MS`, renewed by a heartbeat while the work runs,
:class:`ClaimHeartbeat`: a profile claimed by a process that died is claimed again by any host
once the lease ends, so work left by a crashed server is picked up within seconds), checks each in full in a sandbox
child process (``sandbox.py``: whylogs' default metrics read from their messages, anything else
deserialized by whylogs: ``sandbox.summarise_bytes``), and stores its digest (``digest.py``) or marks it
``invalid`` with the reason. A failed try is counted in the store: a profile whose child crashes
or hangs is tried again, and marked invalid after ``INGEST_MAX_TRIES`` tries, so neither a crash
nor a restart loops on it. A host that dies (``kill -9``) while summarising a batch charges no one:
each profile of the dead claim is then claimed alone, and a host that dies on it alone counts a
try against it (``MetadataStore.claim_ingest``), so good profiles never pay for a batch-mate.

It is driven by store state, not memory, and sleeps while there is nothing to do: a PUT in the
same process wakes it at once; on PostgreSQL a host with more work than it can take at once
announces it (``Store.announce_ingest``, a NOTIFY) and the idle workers of the other hosts wake
(``Store.listen_ingest``). Otherwise an idle worker looks at the store after
:data:`POLL_SECONDS`, then twice as long each time, up to a third of the claim lease (at most
:data:`IDLE_POLL_MAX_SECONDS`), for work of a host that died or that no one announced. With
presigned uploads it also makes the background look for PUTs that landed in the blob store
(``Store.learn_landed``) at those times, when it has nothing to summarise; when a page asks for a look
(``Store.nudge_landed``: pages never look at the blob store themselves), its look thread makes it
at once, whatever profile is being summarised meanwhile (see :meth:`IngestWorker.look_soon`).
``concurrency`` threads at most (default 1) summarise at once, so its memory is bounded by that
many profiles (each at most the upload limit). While the process answers
requests it yields, so uploads and pages come first and the backlog is summarised as load allows.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence

from whylogs_songbird.server.config import DEFAULT_CLAIM_LEASE_SECONDS
from whylogs_songbird.server.rollups import note_summarised, note_summarised_many, summary_changing
from whylogs_songbird.server.sandbox import Sandbox, SandboxError, SandboxRefused, SandboxStopped
from whylogs_songbird.server.storage.base import INGEST_MAX_TRIES
from whylogs_songbird.server.store import LANDED_LOOK_SECONDS, Store, UploadRecord

logger = logging.getLogger("whylogs_songbird.server.ingest")

#: How long a claim holds without a heartbeat before another worker may take the profile again
#: (``--claim-lease``); the heartbeat renews it every third of that while the work runs.
LEASE_MS = round(DEFAULT_CLAIM_LEASE_SECONDS * 1000)
#: How soon an idle worker first looks for work left by other processes or a crash; each later
#: look waits twice as long, up to :data:`IDLE_POLL_MAX_SECONDS` or a third of the claim lease.
POLL_SECONDS = 1.0
IDLE_POLL_MAX_SECONDS = 10.0
#: A worker announces work to the other hosts at most this often (see :meth:`IngestWorker.wake`).
ANNOUNCE_SECONDS = 0.2
#: How long stopping waits for the profiles being summarised before it kills their sandbox children.
STOP_GRACE_SECONDS = 5.0
#: While requests are being answered, the worker summarises at most this share of the time.
BUSY_SHARE = 0.25
#: An idle worker woken by a PUT waits this long before it claims, so that the uploads of a
#: stream arriving meanwhile are summarised and rolled up together: each trip to the sandbox, claim
#: and rollup costs about as much as a small profile's own work.
GATHER_SECONDS = 0.01
#: The worker merges summarised batches into their hour and day rollups once this many wait, or
#: when no profile is left pending (a burst of uploads into one hour then costs one merge per
#: bucket for many of them; a view merges from the profiles whatever is not rolled up yet).
ROLLUP_BATCH = 32
#: The worker claims up to this many pending profiles at once and sends those that together hold at
#: most :data:`BATCH_BYTES` to one sandbox child in one round trip (the others are left for the
#: next claim, so a page waiting for a large profile does not wait behind others).
INGEST_BATCH = 8
BATCH_BYTES = 256 * 1024


class ClaimHeartbeat:
    """Keeps this process's ingest claims on ``store`` alive while their work runs.

    A claim is a lease of ``lease_ms``; while a profile is held (:meth:`hold`), one daemon thread
    renews the leases of everything held, every third of the lease, in one statement. It ends a
    lease after nothing is held, so an idle server runs no heartbeat. A host that dies stops
    renewing: its claims run out within one lease and another host takes the work over."""

    def __init__(self, store: Store, lease_ms: int = LEASE_MS) -> None:
        self.store = store
        self.lease_ms = lease_ms
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"ClaimHeartbeat(lease_ms={self.lease_ms}, held={len(self._held)})"

    @contextlib.contextmanager
    def hold(self, upload_id: str) -> Iterator[None]:
        """Renew this process's claim on ``upload_id`` until the block ends."""
        with self._lock:
            self._held[upload_id] = self._held.get(upload_id, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="songbird-claim-heartbeat", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                left = self._held.pop(upload_id) - 1
                if left:
                    self._held[upload_id] = left

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def _beat(self) -> None:
        while True:
            time.sleep(self.lease_ms / 3000)
            with self._lock:
                held = list(self._held)
                if not held:
                    self._thread = None
                    return
            try:
                kept = self.store.renew_ingest_claims(held, lease_ms=self.lease_ms)
            except Exception as exc:  # the next beat tries again; the lease has two more beats' room
                logger.warning("ingest: renewing %d claim(s) failed (%s)", len(held), type(exc).__name__)
                continue
            lost = set(held) - kept
            if lost := lost.intersection(self.held()):
                logger.info("ingest: the claim on %d profile(s) ran out or ended while summarising", len(lost))


_heartbeats: weakref.WeakKeyDictionary[Store, ClaimHeartbeat] = weakref.WeakKeyDictionary()
_heartbeats_lock = threading.Lock()


def heartbeat_of(store: Store) -> ClaimHeartbeat:
    """The one :class:`ClaimHeartbeat` of ``store`` in this process (its ``lease_ms`` is every
    claim's lease: the app sets it from ``--claim-lease``)."""
    with _heartbeats_lock:
        heartbeat = _heartbeats.get(store)
        if heartbeat is None:
            heartbeat = _heartbeats[store] = ClaimHeartbeat(store)
        return heartbeat


def ingest_one(store: Store, upload: UploadRecord, sandbox: Sandbox) -> bytes | None:
    """Fully check one stored (and claimed) profile in the sandbox and store its digest (or mark it
    invalid); the digest when it is stored, None otherwise. The claim is renewed while it runs
    (:class:`ClaimHeartbeat`)."""
    with heartbeat_of(store).hold(upload.id):
        return _ingest_claimed(store, upload, sandbox)


def ingest_many(store: Store, uploads: Sequence[UploadRecord], sandbox: Sandbox) -> list[bytes | None]:
    """:func:`ingest_one` for several claimed profiles, their bytes sent to one sandbox child in one
    round trip (``Sandbox.digest_many``), without rollups (the caller merges the digests into their
    rollups); the digest of each, or None. Only the profile the child was on when it died is
    charged the crash (the child says when it starts each one); the answers it gave before count,
    and the profiles it did not finish otherwise are summarised alone, so a crash is only ever
    counted against its own profile. When the sandbox is stopped meanwhile, the profiles not
    answered are given back with their tries."""
    heartbeat = heartbeat_of(store)
    with contextlib.ExitStack() as held:
        for upload in uploads:
            held.enter_context(heartbeat.hold(upload.id))
        readable = [(upload, data) for upload in uploads if (data := _read_claimed(store, upload)) is not None]
        outcomes: list[bytes | SandboxError | None] = [None] * len(readable)
        if len(readable) > 1:
            try:
                profiles = [data for _, data in readable]
                checked = [_checked_here(store, sandbox, upload) for upload, _ in readable]
                outcomes = sandbox.digest_many(profiles, checked)
            except Exception:
                logger.exception("ingest: summarising %d uploads together failed; each goes alone", len(readable))
        verdicts: list[tuple[UploadRecord, bytes | SandboxError]] = []
        for (upload, data), outcome in zip(readable, outcomes):
            try:
                if outcome is None:
                    outcome = _digest_alone(sandbox, data, _checked_here(store, sandbox, upload))
                verdicts.append((upload, outcome))
            except Exception:  # one profile's failure is not the others'
                logger.exception("ingest: upload %s failed", upload.id)
        del readable
        # each session's timeline version changes once, before any of these summaries or verdicts shows
        changing = {upload.session_id: upload for upload, verdict in verdicts if _shows(verdict)}
        for upload in changing.values():
            summary_changing(store, upload)
        for upload, verdict in verdicts:
            if isinstance(verdict, bytes):
                continue  # stored together, below
            try:
                _record(store, upload, verdict, changing_noted=True)
            except Exception:  # one profile's failure is not the others'
                logger.exception("ingest: upload %s failed", upload.id)
        summarised = [(upload, verdict) for upload, verdict in verdicts if isinstance(verdict, bytes)]
        try:  # one transaction for the batch's summaries (each is stored only if its bytes are the same)
            kept = (
                store.store_summaries([(u.id, u.sha256 or "", digest) for u, digest in summarised])
                if summarised
                else []
            )
        except Exception:
            logger.exception("ingest: storing %d summaries failed", len(summarised))
            kept = [False] * len(summarised)
        digests = {upload.id: digest for (upload, digest), ok in zip(summarised, kept) if ok}
    return [digests.get(upload.id) for upload in uploads]


def _ingest_claimed(store: Store, upload: UploadRecord, sandbox: Sandbox) -> bytes | None:
    """:func:`ingest_one`, its claim held.

    The bytes go to a ``sandbox`` child, which gives them the cheap check before whylogs reads them
    (profiles stored before a check existed get it too), unless a PUT of this process checked
    these very bytes (:func:`_checked_here`; the child makes sure of their digest). When the
    child crashes or hangs the claim is released with what happened, and the profile is tried
    again until the store gives up on it (``MetadataStore.claim_ingest``)."""
    data = _read_claimed(store, upload)
    if data is None:
        return None
    try:
        outcome = _digest_alone(sandbox, data, _checked_here(store, sandbox, upload))
    finally:
        del data
    digest = _record(store, upload, outcome)
    if digest is not None:
        note_summarised(store, upload, digest)  # its hour and day rollups
    return digest


def _read_claimed(store: Store, upload: UploadRecord) -> bytes | None:
    """The stored bytes of a claimed profile; None (and the profile marked invalid when they cannot
    be read) when there are none to summarise."""
    if upload.sha256 is None:
        return None
    try:
        return store.read_profile_bytes(upload)
    except OSError as exc:
        summary_changing(store, upload)
        store.mark_invalid(upload.id, upload.sha256, f"its stored bytes cannot be read ({type(exc).__name__})")
        return None


def _checked_here(store: Store, sandbox: Sandbox, upload: UploadRecord) -> str | None:
    """The recorded sha256 of a claimed profile when a PUT of this process checked bytes of that
    digest under a column cap no larger than the sandbox's (``Store.checked``): its child skips
    the structural check if the bytes it is sent have that digest. None otherwise."""
    limits = getattr(sandbox, "limits", None)
    if limits is not None and store.checked.vouches(upload.sha256, limits.max_columns):
        return upload.sha256
    return None


def _digest_alone(sandbox: Sandbox, data: bytes, checked: str | None = None) -> bytes | SandboxError:
    """The digest of one profile from its own trip to the sandbox, or the sandbox's verdict on it
    (``checked``: see ``Sandbox.digest``)."""
    try:
        return sandbox.digest(data, checked)
    except SandboxError as exc:
        return exc


def _shows(outcome: bytes | SandboxError) -> bool:
    """Whether recording this outcome changes what views show (a summary, or the profile invalid)."""
    return isinstance(outcome, (bytes, SandboxRefused))


def _record(
    store: Store, upload: UploadRecord, outcome: bytes | SandboxError, *, changing_noted: bool = False
) -> bytes | None:
    """Store what the sandbox made of a claimed profile: its summary (the digest is returned), or
    invalid with the reason, or its claim released (a crash counts a try; a stop does not).
    ``changing_noted``: the caller changed the session's timeline version already
    (``summary_changing``), after the sandbox's verdict and before this record."""
    assert upload.sha256 is not None  # a profile without bytes is never read
    if _shows(outcome) and not changing_noted:
        summary_changing(store, upload)
    if isinstance(outcome, SandboxRefused):
        store.mark_invalid(upload.id, upload.sha256, str(outcome))
        logger.info("ingest: upload %s is not a readable profile: %s", upload.id, outcome)
        return None
    if isinstance(outcome, SandboxStopped):
        store.release_ingest_claim(upload.id, upload.sha256, counted=False)
        return None
    if isinstance(outcome, SandboxError):
        store.release_ingest_claim(upload.id, upload.sha256, note=str(outcome))
        logger.warning(
            "ingest: upload %s: %s (try %d of %d)", upload.id, outcome, upload.ingest_tries + 1, INGEST_MAX_TRIES
        )
        return None
    if not store.store_summary(upload.id, upload.sha256, outcome):  # after the version changed
        return None
    return outcome


class IngestWorker:
    """Background threads summarising pending profiles of ``store`` (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        sandbox: Sandbox,
        concurrency: int = 1,
        poll_seconds: float = POLL_SECONDS,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.sandbox = sandbox
        #: Whether requests are being answered; the worker then yields (see :data:`BUSY_SHARE`).
        self.busy = busy
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: a page asked for a look at landed PUTs (see :meth:`look_soon`)
        self._look_wanted = threading.Event()
        #: held while a thread looks for landed PUTs (one look at a time)
        self._looking = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._look_thread: threading.Thread | None = None
        #: threads summarising now (when all are, a wake is announced to the other hosts)
        self._working = 0
        self._working_lock = threading.Lock()
        #: when the last announcement went out (monotonic); none yet: the first one always goes
        self._announced = float("-inf")
        self._unlisten: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"IngestWorker(concurrency={self.concurrency}, running={bool(self._threads)})"

    def start(self) -> IngestWorker:
        if not self._threads:
            self._stop.clear()
            self._look_wanted.clear()
            self._look_thread = threading.Thread(target=self._look_when_asked, name="songbird-ingest-look", daemon=True)
            self._look_thread.start()
            self.store.add_look_waker(self.look_soon)
            self.store.add_recorded_waker(self.wake)
            try:  # other hosts' announcements of work wake this worker (PostgreSQL)
                self._unlisten = self.store.listen_ingest(self._wake.set)
            except Exception:
                logger.exception("ingest: listening for other hosts' work failed; polling instead")
            for index in range(self.concurrency):
                thread = threading.Thread(target=self._run, name=f"songbird-ingest-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def wake(self) -> None:
        """Look for work now (a PUT just stored a profile, or a look learned landed uploads). When
        every thread is busy summarising, the other hosts are told instead (:meth:`announce`)."""
        self._wake.set()
        if self._unlisten is None:
            return  # no other process listens (the embedded store)
        with self._working_lock:
            busy = self._working >= self.concurrency
        if busy:  # on a thread of its own: an upload route calls this on the event loop
            self.announce(in_thread=True)

    def announce(self, *, in_thread: bool = False) -> None:
        """Tell the other hosts' idle workers that profiles wait (at most every :data:`ANNOUNCE_SECONDS`)."""
        now = time.monotonic()
        if now - self._announced < ANNOUNCE_SECONDS:
            return
        self._announced = now
        if in_thread:
            threading.Thread(target=self._announce_now, name="songbird-ingest-announce", daemon=True).start()
        else:
            self._announce_now()

    def _announce_now(self) -> None:
        try:
            self.store.announce_ingest()
        except Exception as exc:  # they find the work at their next poll
            logger.warning("ingest: announcing work failed (%s)", type(exc).__name__)

    def look_soon(self) -> None:
        """Look for landed presigned PUTs now (a page asked, ``Store.nudge_landed``). The look
        thread makes the look, so it never waits for a profile being summarised (a profile of
        10,000 columns takes seconds); it sleeps until asked, so an idle server spends nothing."""
        self._look_wanted.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the profiles being summarised (their claims end with them); one still being
        summarised after :data:`STOP_GRACE_SECONDS` is given up (its try is not counted)."""
        self._stop.set()
        self._wake.set()
        self._look_wanted.set()  # the look thread ends too
        self.store.remove_look_waker(self.look_soon)
        self.store.remove_recorded_waker(self.wake)
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(min(STOP_GRACE_SECONDS, max(0.0, deadline - time.monotonic())))
        if any(thread.is_alive() for thread in self._threads):
            self.sandbox.close()  # a profile still being summarised is left for the next start
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._look_thread is not None:
            self._look_thread.join(max(0.0, deadline - time.monotonic()))
        self._threads, self._look_thread = [], None

    def _learn_landed(self) -> bool:
        """The background look for presigned PUTs that landed (no-op: embedded store); whether any did."""
        try:
            with self._looking:
                return bool(self.store.learn_landed(stop=self._stop.is_set))
        except Exception:
            logger.exception("ingest: checking the blob store for landed uploads failed")
            return False

    def _look_when_asked(self) -> None:
        """The look thread: a look each time a page asks (:meth:`look_soon`), asks that come during
        a look taken together, at most one look every :data:`LANDED_LOOK_SECONDS` while they keep
        coming, and one more look that long after the last (the store skips a session looked at
        less than that long before, and takes it then). What it learns wakes the worker."""
        while True:
            self._look_wanted.wait()
            while self._look_wanted.is_set():
                if self._stop.is_set():
                    return
                self._look_wanted.clear()
                if self._learn_landed():
                    self.wake()
                if self._stop.wait(LANDED_LOOK_SECONDS):
                    return
            if self._learn_landed():
                self.wake()

    def _run(self) -> None:
        summarised: list[tuple[UploadRecord, bytes]] = []  # not merged into their rollups yet
        try:
            self._summarise(summarised)
        finally:
            _roll_up(self.store, summarised)

    def _idle_poll_max(self) -> float:
        """The longest an idle worker sleeps unwoken: dead hosts' claims are taken over soon after
        their lease ends."""
        lease_seconds = heartbeat_of(self.store).lease_ms / 1000
        return max(self.poll_seconds, min(IDLE_POLL_MAX_SECONDS, lease_seconds / 3))

    def _summarise(self, summarised: list[tuple[UploadRecord, bytes]]) -> None:
        idle_wait = self.poll_seconds
        while not self._stop.is_set():
            try:
                claimed = self._claim()
            except Exception:
                if self._stop.is_set():
                    return
                logger.exception("ingest: claiming work failed")
                claimed = []
            if not claimed:
                _roll_up(self.store, summarised)  # nothing else pending: the rollups catch up now
                if self._learn_landed():
                    continue
                woken = self._wake.wait(idle_wait)
                if self._stop.is_set():
                    return  # the wake stays set for the other threads: each stops at once
                self._wake.clear()
                if woken and self._stop.wait(GATHER_SECONDS):
                    return
                idle_wait = self.poll_seconds if woken else min(2 * idle_wait, self._idle_poll_max())
                continue
            idle_wait = self.poll_seconds
            if self._stop.is_set():
                self._give_back(claimed)
                return
            if len(claimed) >= INGEST_BATCH:
                self.announce()  # maybe more than this host takes soon: idle hosts help
            started = time.perf_counter()
            with self._working_lock:
                self._working += 1
            try:
                digests = ingest_many(self.store, claimed, self.sandbox)
            except Exception:
                logger.exception("ingest: uploads %s failed", ", ".join(upload.id for upload in claimed))
                digests = []
            finally:
                with self._working_lock:
                    self._working -= 1
            summarised.extend((upload, digest) for upload, digest in zip(claimed, digests) if digest is not None)
            if len(summarised) >= ROLLUP_BATCH:
                _roll_up(self.store, summarised)
            if self.busy is not None and self.busy():
                # requests first: under load, summarising takes at most BUSY_SHARE of the time
                took = time.perf_counter() - started
                self._stop.wait(took * (1 - BUSY_SHARE) / BUSY_SHARE)

    def _claim(self) -> list[UploadRecord]:
        """Claim pending profiles: up to :data:`INGEST_BATCH`, within :data:`BATCH_BYTES` together
        (at least one); a profile whose last claim died comes alone."""
        lease_ms = heartbeat_of(self.store).lease_ms
        return self.store.claim_ingest(lease_ms=lease_ms, limit=INGEST_BATCH, max_bytes=BATCH_BYTES)

    def _give_back(self, uploads: Sequence[UploadRecord]) -> None:
        for upload in uploads:
            if upload.sha256 is not None:
                self.store.release_ingest_claim(upload.id, upload.sha256, counted=False)


def _roll_up(store: Store, summarised: list[tuple[UploadRecord, bytes]]) -> None:
    """Merge the summarised batches waiting in ``summarised`` into their rollups, and empty it."""
    if summarised:
        note_summarised_many(store, summarised)
        summarised.clear()


__all__ = ["ClaimHeartbeat", "IngestWorker", "heartbeat_of", "ingest_many", "ingest_one"]
