"""The observatory's in-memory caches of computed values (see :class:`ProfileCache`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from whylogs.core import DatasetProfileView

from whylogs_songbird.server.observatory.base import CacheKey, T
from whylogs_songbird.server.store import Store, UploadRecord
from whylogs_songbird.server.summaries import (
    DriftScore,
    ProfileSummary,
    SummaryError,
    drift_scores,
    merge_views,
    read_view,
    summarize_profile,
)


class LruCache:
    """A small thread-safe LRU of computed values; values are computed outside the lock."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[CacheKey, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get_or_compute(self, key: CacheKey, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                cached: T = self._data[key]
                return cached
            self.misses += 1
        value = compute()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def upload_key(upload: UploadRecord) -> CacheKey:
    """Identifies one stored version of an upload: a replacing PUT changes sha256 or size."""
    return (upload.id, upload.sha256, upload.size, upload.stored_at)


@dataclass
class ProfileCache:
    """Views, summaries, drift scores and rendered page parts of stored profiles, cached in memory.

    Deserialized views are big (about 50 MB for 1,000 columns) and only needed to build a page
    the first time, so few are kept; summaries, drift scores and page parts are small and many are.
    """

    store: Store
    max_views: int = 8
    max_summaries: int = 128
    max_pages: int = 16
    views: LruCache = field(init=False)
    summaries: LruCache = field(init=False)
    drift: LruCache = field(init=False)
    pages: LruCache = field(init=False)

    def __post_init__(self) -> None:
        self.views = LruCache(self.max_views)
        self.summaries = LruCache(self.max_summaries)
        self.drift = LruCache(self.max_summaries)
        self.pages = LruCache(self.max_pages)

    def clear(self) -> None:
        for cache in (self.views, self.summaries, self.drift, self.pages):
            cache.clear()

    def upload_view(self, upload: UploadRecord) -> DatasetProfileView:
        def load() -> DatasetProfileView:
            try:
                data = self.store.read_profile_bytes(upload)
            except OSError as exc:
                raise SummaryError(f"its stored file cannot be read ({exc.strerror or type(exc).__name__})") from None
            return read_view(data)

        return self.views.get_or_compute(upload_key(upload), load)

    def view(self, key: CacheKey, uploads: Sequence[UploadRecord]) -> DatasetProfileView:
        if len(uploads) == 1:
            return self.upload_view(uploads[0])
        return self.views.get_or_compute(key, lambda: merge_views([self.upload_view(u) for u in uploads]))

    def summary(self, key: CacheKey, uploads: Sequence[UploadRecord]) -> ProfileSummary:
        return self.summaries.get_or_compute(key, lambda: summarize_profile(self.view(key, uploads)))

    def drift_between(
        self, target_key: CacheKey, target: DatasetProfileView, reference_key: CacheKey, reference: DatasetProfileView
    ) -> dict[str, DriftScore]:
        return self.drift.get_or_compute(
            (target_key, reference_key), lambda: drift_scores(target=target, reference=reference)
        )
