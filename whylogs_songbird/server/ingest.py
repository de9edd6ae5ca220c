"""The ingest worker: the full check and the digest of every stored profile, off the request path.

A PUT only runs the cheap structural check (``profile_check.py``) and stores the bytes with
``ingest_state`` ``pending``. This worker, one per server process, claims pending profiles from
the store (a claim is a lease: a profile claimed by a process that died is claimed again once the
lease ends, so work left by a crashed server is picked up), checks each in full in a sandbox
child process (``sandbox.py``: whylogs' default metrics read from their messages, anything else
deserialized by whylogs: ``sandbox.summarise_bytes``), and stores its digest (``digest.py``) or marks it
``invalid`` with the reason. Each claim counts a try in the store: a profile whose child crashes
or hangs is tried again, and marked invalid after ``INGEST_MAX_TRIES`` tries, so neither a crash
nor a restart loops on it.

It is driven by store state, not memory: it polls the store, and a PUT in the same process wakes
it at once. ``concurrency`` threads at most (default 1) summarise at once, so its memory is
bounded by that many profiles (each at most the upload limit). While the process answers
requests it yields, so uploads and pages come first and the backlog is summarised as load allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from whylogs_songbird.server.profile_check import ProfileCheckError, check_profile_bytes
from whylogs_songbird.server.rollups import note_summarised, summary_changing
from whylogs_songbird.server.sandbox import Sandbox, SandboxCrash, SandboxRefused, SandboxStopped
from whylogs_songbird.server.storage.base import INGEST_MAX_TRIES
from whylogs_songbird.server.store import Store, UploadRecord

logger = logging.getLogger("whylogs_songbird.server.ingest")

#: How long a claim holds before another worker may take the profile again.
LEASE_MS = 10 * 60 * 1000
#: How often an idle worker looks for work left by other processes or a crash.
POLL_SECONDS = 1.0
#: How long stopping waits for the profiles being summarised before it kills their sandbox children.
STOP_GRACE_SECONDS = 5.0
#: While requests are being answered, the worker summarises at most this share of the time.
BUSY_SHARE = 0.25


def ingest_one(store: Store, upload: UploadRecord, sandbox: Sandbox) -> bytes | None:
    """Fully check one stored (and claimed) profile in the sandbox and store its digest (or mark it
    invalid); the digest when it is stored, None otherwise.

    The bytes get the cheap check first, here (profiles stored before a check existed, or learned
    from the blob store, get it too); whylogs reads them only in a ``sandbox`` child. When the
    child crashes or hangs the claim is released with what happened, and the profile is tried
    again until the store gives up on it (``MetadataStore.claim_ingest``)."""
    if upload.sha256 is None:
        return None
    try:
        data = store.read_profile_bytes(upload)
    except OSError as exc:
        summary_changing(store, upload)
        store.metadata.mark_invalid(upload.id, upload.sha256, f"its stored bytes cannot be read ({type(exc).__name__})")
        return None
    try:
        check_profile_bytes(data, max_columns=store.max_columns)
        digest = sandbox.digest(data)
    except ProfileCheckError as exc:
        summary_changing(store, upload)
        store.metadata.mark_invalid(upload.id, upload.sha256, f"it is not a well-formed whylogs profile ({exc})")
        logger.info("ingest: upload %s is not a well-formed profile: %s", upload.id, exc)
        return None
    except SandboxRefused as exc:
        summary_changing(store, upload)
        store.metadata.mark_invalid(upload.id, upload.sha256, str(exc))
        logger.info("ingest: upload %s is not a readable profile: %s", upload.id, exc)
        return None
    except SandboxStopped:
        store.metadata.release_ingest_claim(upload.id, upload.sha256, counted=False)
        return None
    except SandboxCrash as exc:
        store.metadata.release_ingest_claim(upload.id, upload.sha256, note=str(exc))
        logger.warning("ingest: upload %s: %s (try %d of %d)", upload.id, exc, upload.ingest_tries, INGEST_MAX_TRIES)
        return None
    finally:
        del data
    summary_changing(store, upload)  # the session's timeline version, before the summary shows
    if not store.metadata.store_summary(upload.id, upload.sha256, digest):
        return None
    note_summarised(store, upload, digest)  # its hour and day rollups
    return digest


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
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"IngestWorker(concurrency={self.concurrency}, running={bool(self._threads)})"

    def start(self) -> IngestWorker:
        if not self._threads:
            self._stop.clear()
            for index in range(self.concurrency):
                thread = threading.Thread(target=self._run, name=f"songbird-ingest-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def wake(self) -> None:
        """Look for work now (a PUT just stored a profile)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the profiles being summarised (their claims end with them); one still being
        summarised after :data:`STOP_GRACE_SECONDS` is given up (its try is not counted)."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(min(STOP_GRACE_SECONDS, max(0.0, deadline - time.monotonic())))
        if any(thread.is_alive() for thread in self._threads):
            self.sandbox.close()  # a profile still being summarised is left for the next start
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=1)
            except Exception:
                if self._stop.is_set():
                    return
                logger.exception("ingest: claiming work failed")
                claimed = []
            if not claimed:
                try:
                    learned = self.store.learn_landed(stop=self._stop.is_set)  # presigned PUTs (no-op: embedded store)
                except Exception:
                    logger.exception("ingest: checking the blob store for landed uploads failed")
                    learned = []
                if learned:
                    continue
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            for upload in claimed:
                if self._stop.is_set():
                    return
                started = time.perf_counter()
                try:
                    ingest_one(self.store, upload, self.sandbox)
                except Exception:
                    logger.exception("ingest: upload %s failed", upload.id)
                if self.busy is not None and self.busy():
                    # requests first: under load, summarising takes at most BUSY_SHARE of the time
                    took = time.perf_counter() - started
                    self._stop.wait(took * (1 - BUSY_SHARE) / BUSY_SHARE)


__all__ = ["IngestWorker", "ingest_one"]
