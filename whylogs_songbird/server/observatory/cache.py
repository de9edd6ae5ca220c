"""The observatory's in-memory caches: single flight, bounded by bytes (see :class:`LruCache`).

Profile views come from the digests the ingest worker stored (``digest.py``), never from
deserializing the uploaded bytes again; a profile not summarised yet is summarised on the spot
(once, however many requests ask) in the sandbox (``sandbox.py``) and its digest stored for every
process.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from whylogs.core import DatasetProfileView

from whylogs_songbird.column_stats import DriftScore, drift_scores, merge_views
from whylogs_songbird.server.digest import DigestError, digest_columns, digested_count, view_of
from whylogs_songbird.server.ingest import heartbeat_of, ingest_one
from whylogs_songbird.server.observatory.base import CacheKey, T
from whylogs_songbird.server.sandbox import Sandbox
from whylogs_songbird.server.store import Store, UploadRecord, now_ms
from whylogs_songbird.server.summaries import ProfileSummary, SummaryError, summarize_profile

MiB = 1024 * 1024
#: How long background work (the timeline's refresh when a batch lands) waits for another
#: process's ingest worker to summarise a profile; pages never wait (:class:`ProfilePendingError`).
WAIT_FOR_INGEST_SECONDS = 120.0


#: A page waits for another process's ingest worker to summarise a profile only while its claim is
#: younger than this (a live worker takes milliseconds for a usual profile; an older claim may be
#: a host that died holding it); then the page says "pending" at once.
PAGE_WAIT_SECONDS = 10.0


class ProfilePendingError(SummaryError):
    """A profile is not summarised yet and another process's ingest worker holds it: a page says
    so at once instead of waiting for that worker (which may have died, holding its claim)."""


def _default_size(value: Any) -> int:
    return sys.getsizeof(value)


class LruCache:
    """A thread-safe LRU of computed values, bounded by entries and/or by bytes.

    Values are computed outside the lock, and only once per key however many threads ask at the
    same time (single flight: the others wait for the first one's result, or its exception).
    ``size_of`` estimates a value's bytes; a value larger than ``max_bytes`` is returned but not kept.
    """

    def __init__(
        self,
        max_entries: int | None = None,
        *,
        max_bytes: int | None = None,
        size_of: Callable[[Any], int] = _default_size,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size_of = size_of
        self._data: OrderedDict[CacheKey, tuple[Any, int]] = OrderedDict()
        self._inflight: dict[CacheKey, Future[Any]] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get_or_compute(self, key: CacheKey, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                cached: T = self._data[key][0]
                return cached
            pending = self._inflight.get(key)
            if pending is None:
                self.misses += 1
                future: Future[Any] = Future()
                self._inflight[key] = future
        if pending is not None:
            self.hits += 1
            waited: T = pending.result()
            return waited
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._inflight[key]
            future.set_exception(exc)
            raise
        size = self.size_of(value) if self.max_bytes is not None else 0
        with self._lock:
            del self._inflight[key]
            if self.max_bytes is None or size <= self.max_bytes:
                self._data[key] = (value, size)
                self.bytes += size
                self._evict()
        future.set_result(value)
        return value

    def get(self, key: CacheKey) -> Any | None:
        """The value kept under ``key``, or None (nothing is computed, nothing waited for)."""
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return self._data[key][0]

    def _evict(self) -> None:
        while self._data and (
            (self.max_entries is not None and len(self._data) > self.max_entries)
            or (self.max_bytes is not None and self.bytes > self.max_bytes)
        ):
            _, (_, size) = self._data.popitem(last=False)
            self.bytes -= size

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0


def _view_of(columns: dict[str, Any], names: tuple[str, ...] | None = None) -> DatasetProfileView:
    """:func:`digest.view_of`, a digest holding a sketch that fails its check answered as `SummaryError`."""
    try:
        return view_of(columns, names)
    except DigestError as exc:
        raise SummaryError(str(exc)) from None


def upload_key(upload: UploadRecord) -> CacheKey:
    """Identifies one stored version of an upload: a replacing PUT changes sha256 or size."""
    return (upload.id, upload.sha256, upload.size, upload.stored_at)


def view_size(view: DatasetProfileView) -> int:
    """A rough size of a rebuilt view in memory: about 16 KB per column (sketches and objects)."""
    return 16 * 1024 * max(1, len(view.get_columns()))


def digest_size(columns: dict[str, Any]) -> int:
    """A rough size of a parsed digest in memory: about 4 KB per column (its sketches as text)."""
    return 4096 * max(1, len(columns))


@dataclass(frozen=True)
class ProfileOutline:
    """What a page needs of a whole profile without rebuilding any column: the column names (the
    first upload's order, then columns only later uploads have) and the number of rows."""

    names: tuple[str, ...] = ()
    #: Rows logged: the largest count of values of any column (whylogs keeps no dataset row count).
    row_count: int = 0

    @property
    def column_count(self) -> int:
        return len(self.names)


def outline_size(outline: ProfileOutline) -> int:
    return 64 * max(1, outline.column_count) + 256


def summary_size(summary: ProfileSummary) -> int:
    return 2048 * max(1, summary.column_count)


def drift_size(scores: dict[str, DriftScore]) -> int:
    return 512 * max(1, len(scores))


def page_size(model: Any) -> int:
    """The bytes of a page model's rendered HTML and chart JSON."""
    total = 0
    for name in ("drift_html", "columns_html", "chart_json"):
        total += len(str(getattr(model, name, "")))
    return 2 * total + 4096


@dataclass
class ProfileCache:
    """Views, summaries, drift scores and rendered page parts of stored profiles, bounded by bytes.

    Views are rebuilt from stored digests; summaries, drift scores and page parts are computed from
    them once per key (single flight).
    """

    store: Store
    #: Where a profile not summarised yet is summarised (its own sandbox unless given the app's).
    sandbox: Sandbox = field(default_factory=Sandbox)
    max_view_bytes: int = 256 * MiB
    max_digest_bytes: int = 128 * MiB
    max_summary_bytes: int = 64 * MiB
    max_page_bytes: int = 128 * MiB
    digests: LruCache = field(init=False)
    views: LruCache = field(init=False)
    outlines: LruCache = field(init=False)
    summaries: LruCache = field(init=False)
    drift: LruCache = field(init=False)
    pages: LruCache = field(init=False)

    def __post_init__(self) -> None:
        self.digests = LruCache(max_bytes=self.max_digest_bytes, size_of=digest_size)
        self.views = LruCache(max_bytes=self.max_view_bytes, size_of=view_size)
        self.outlines = LruCache(max_bytes=self.max_summary_bytes, size_of=outline_size)
        self.summaries = LruCache(max_bytes=self.max_summary_bytes, size_of=summary_size)
        self.drift = LruCache(max_bytes=self.max_summary_bytes, size_of=drift_size)
        self.pages = LruCache(max_bytes=self.max_page_bytes, size_of=page_size)

    def clear(self) -> None:
        for cache in (self.digests, self.views, self.outlines, self.summaries, self.drift, self.pages):
            cache.clear()

    def _load_digest(self, upload: UploadRecord) -> dict[str, Any]:
        """The digested columns of a stored profile; a profile not summarised yet is summarised
        here, so the bytes are read once. Never waits: when another process's ingest worker is at
        it, :class:`ProfilePendingError` says so at once (see :meth:`await_summary`)."""
        if upload.sha256 is None:
            raise SummaryError("it has no stored bytes")
        while True:
            digest = self.store.get_summary(upload.id, upload.sha256)
            if digest is not None:
                try:
                    return digest_columns(digest)
                except DigestError as exc:
                    raise SummaryError(f"its stored summary cannot be read ({exc})") from None
            current = self.store.get_upload(upload.id) or upload
            if current.invalid:
                raise SummaryError(current.ingest_error or "it is not a readable whylogs profile")
            if current.sha256 != upload.sha256:
                raise SummaryError("it was replaced while the page was being built; reload the page")
            if not self.store.claim_upload_ingest(upload.id, lease_ms=heartbeat_of(self.store).lease_ms):
                raise ProfilePendingError("it is still being summarised; reload the page in a moment")
            stored = ingest_one(self.store, current, self.sandbox)
            if stored is not None:
                return digest_columns(stored)
            # marked invalid (or replaced): the loop says which

    def upload_digest(self, upload: UploadRecord) -> dict[str, Any]:
        return self.digests.get_or_compute(upload_key(upload), lambda: self._load_digest(upload))

    def state(self, upload: UploadRecord, *, patient: bool = False) -> str:
        """``"ready"`` (its digest is at hand, summarised here if no process was at it),
        ``"pending"`` (an ingest worker holds it, maybe another host's) or ``"invalid"``.

        A page waits while this process's own ingest worker holds the profile (it is alive: it is
        this process), up to :data:`WAIT_FOR_INGEST_SECONDS`. Another process's claim may be a host
        that died holding it until its lease runs out: a page waits for it only while the profile
        was stored less than :data:`PAGE_WAIT_SECONDS` ago, then says "pending". ``patient``
        (background work, such as the timeline's refresh when a batch lands) waits for any worker
        up to :data:`WAIT_FOR_INGEST_SECONDS`."""
        give_up = time.monotonic() + WAIT_FOR_INGEST_SECONDS
        while True:
            try:
                self.upload_digest(upload)
                return "ready"
            except ProfilePendingError:
                if time.monotonic() >= give_up:
                    return "pending"
                if not patient and upload.id not in heartbeat_of(self.store).held():
                    current = self.store.get_upload(upload.id) or upload
                    # a claim that ended meanwhile (the summary just landed, or a try failed) is
                    # looked at again at once: only a claim still held by another process counts
                    if current.ingest_state == "pending" and (current.ingest_lease or 0) > now_ms():
                        stored_ms_ago = now_ms() - (current.stored_at or 0)
                        if stored_ms_ago >= PAGE_WAIT_SECONDS * 1000:
                            return "pending"
                time.sleep(0.05)
            except SummaryError:
                return "invalid"

    def upload_view(self, upload: UploadRecord) -> DatasetProfileView:
        """The whole view of one stored profile."""
        return self.views.get_or_compute(upload_key(upload), lambda: _view_of(self.upload_digest(upload)))

    def view(
        self, key: CacheKey, uploads: Sequence[UploadRecord], names: tuple[str, ...] | None = None
    ) -> DatasetProfileView:
        """The view of a selection (its uploads merged); with ``names``, of those columns only
        (what a page shows: only they are rebuilt)."""
        if names is None and len(uploads) == 1:
            return self.upload_view(uploads[0])

        def build() -> DatasetProfileView:
            return merge_views([_view_of(self.upload_digest(u), names) for u in uploads])

        return self.views.get_or_compute(key if names is None else (key, names), build)

    def outline(self, key: CacheKey, uploads: Sequence[UploadRecord]) -> ProfileOutline:
        """Column names and row count of a selection, from its digests (no column is rebuilt)."""

        def build() -> ProfileOutline:
            counts: dict[str, int] = {}
            for upload in uploads:
                for name, data in self.upload_digest(upload).items():
                    counts[name] = counts.get(name, 0) + (digested_count(data) or 0)
            return ProfileOutline(names=tuple(counts), row_count=max(counts.values(), default=0))

        return self.outlines.get_or_compute(key, build)

    def summary(
        self, key: CacheKey, uploads: Sequence[UploadRecord], names: tuple[str, ...] | None = None
    ) -> ProfileSummary:
        """Summaries of a selection's columns (with ``names``, of those only)."""
        return self.summaries.get_or_compute(
            key if names is None else (key, names), lambda: summarize_profile(self.view(key, uploads, names))
        )

    def drift_between(
        self, target_key: CacheKey, target: DatasetProfileView, reference_key: CacheKey, reference: DatasetProfileView
    ) -> dict[str, DriftScore]:
        return self.drift.get_or_compute(
            (target_key, reference_key), lambda: drift_scores(target=target, reference=reference)
        )
