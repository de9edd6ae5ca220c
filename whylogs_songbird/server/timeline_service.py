"""The timeline of a session on the server: which stored profiles go into it, and what is stored so
that a view does not recompute it. The computing is :mod:`whylogs_songbird.timeline` (pure); the
HTTP layer is ``routes/timeline.py``.

What is stored (in the derived-artefact cache, per session), under the *slot* of a bucket
``timeline/b/<format>/<granularity>/<segment>/<bucket start>/`` and the *version* of its content
``<slot><identity of its uploads>/`` (adding or replacing a batch makes a new version):

- ``<version>points``: the per-column numbers of the bucket;
- ``<version>ref/<reference id>/<its identity>``: whylogs' drift of the bucket against a reference;
- ``<version>prev/<previous bucket's version>``: its drift against the previous bucket;
- ``timeline/view/<query>``: the whole JSON document of one query (granularity, reference,
  segment, and the monitors file) without a start/end range, with the session's timeline version
  it was built at: one per (session, query), replaced when built again. A view of an unchanged
  session reads the version and this, never the list of the session's profiles;
- ``timeline/r/…`` and ``timeline/version``: the hour and day rollups a view merges its buckets
  from, and the version (:mod:`whylogs_songbird.server.rollups`).

A landed batch only adds or changes its own bucket (and the drift of the next one against it):
everything else is read back. When a new version is stored, what it replaces is dropped (the
older versions of its slot, the drift against an older version of the other profile), so the
stored rows of a session stay proportional to its buckets, however often they changed.

Work is bounded: a view of more than :data:`MAX_VIEW_BUCKETS` buckets or :data:`MAX_VIEW_CELLS`
buckets × columns is refused before anything is computed, and each value is computed once however
many requests ask for it at the same time (single flight; :attr:`TimelineService.computed` counts
what was computed).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from whylogs.core import DatasetProfileView

from whylogs_songbird.column_stats import Profile, merge_views
from whylogs_songbird.monitors import Failure, MonitorsError, MonitorsFile, evaluate
from whylogs_songbird.server.observatory.cache import LruCache
from whylogs_songbird.server.rollups import ROLLED, Member, Rollups, family_of
from whylogs_songbird.timeline import (
    DAY_MS,
    GRANULARITIES,
    HOUR_MS,
    Batch,
    Bucket,
    BucketPoints,
    Granularity,
    ReferenceInfo,
    TimelineError,
    TimelineInputs,
    bucket_bounds,
    bucketize,
    choose_granularity,
    civil_date,
    compute_timeline,
    content_key,
    parse_granularity,
    parse_time_bound,
)

logger = logging.getLogger("whylogs_songbird.server.timeline")

#: Bumped when what is stored changes shape, so old entries are never read back.
FORMAT = "v2"
#: Keys of stored bucket values (see the module's docstring) start with this.
BUCKET_PREFIX = "timeline/b/"
#: Where older versions of the server stored bucket values: dropped when a session is next viewed.
OLD_PREFIXES = ("timeline/points/", "timeline/drift/", "timeline/doc/")
#: The most buckets one view shows (a coarser granularity or a start/end range shows fewer).
MAX_VIEW_BUCKETS = 1000
#: The most buckets × columns one view shows: what a first view computes is about proportional to it.
MAX_VIEW_CELLS = 50_000
MiB = 1024 * 1024
#: The bytes of encoded batch timestamps kept in memory (each bucket's JSON, by its start and content
#: key): a refresh encodes those of the buckets that changed, not of every bucket it shows.
STAMPS_BYTES = 16 * MiB
#: Keys of whole stored documents start with this: one per (session, query), holding the session's
#: timeline version it was built at (see :mod:`whylogs_songbird.server.rollups`) and the document.
DOC_PREFIX = "timeline/view/"
#: The query of the last view of a session's timeline, refreshed in the background as batches land.
WATCHED_KEY = "timeline/watched"
#: After a background refresh of a session that took ``t`` seconds of the refreshing thread's CPU, the next
#: one waits ``REFRESH_SPACING * t`` (batches landing meanwhile are taken together): the refresh of a large
#: session takes at most about 1 / (1 + REFRESH_SPACING) of the process while batches stream in; a small one
#: is refreshed at once. CPU time, not wall time: waiting (for a sandbox child to start and summarise a
#: profile, for the database, for the CPU on a busy machine) costs the process nothing and holds nothing back.
REFRESH_SPACING = 6.0
#: ... but never longer than this many seconds (a slow first refresh, e.g. on a busy machine, does not
#: hold the next one back for long: monitors are evaluated soon after a batch lands).
MAX_REFRESH_WAIT = 10.0
#: Sessions whose batches, by day, the service keeps between views (see :meth:`TimelineService.every_batch`).
LISTED_SESSIONS = 8
#: ... and at most this many of their batches in all (the session viewed last is always kept).
LISTED_BATCHES = 200_000


class TimelineRequestError(Exception):
    """A timeline request that cannot be answered: ``status`` and a message that says what to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Background:
    """How the background refresh of watched timelines runs: in a daemon thread, by the process's
    monotonic clock and the refreshing thread's CPU time (a test gives one of its own)."""

    def start(self, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, name="songbird-timeline", daemon=True)
        thread.start()
        return thread

    def now(self) -> float:
        return time.monotonic()

    def cpu_time(self) -> float:
        """Seconds of CPU the calling thread has used."""
        return time.thread_time()

    def wait(self, wake: threading.Condition, timeout: float | None) -> None:
        """Wait on ``wake`` (held) until notified, or ``timeout`` seconds (None: no limit)."""
        wake.wait(timeout)


class ArtefactCache(Protocol):
    """Derived values stored per session under a key (bytes in, bytes out)."""

    def get(self, session_id: str, key: str) -> bytes | None: ...

    def put(self, session_id: str, key: str, value: bytes) -> None: ...

    def drop(self, session_id: str, prefix: str, keep: str | None = None) -> None:
        """Drop the values whose key starts with ``prefix`` (but not with ``keep``, when given)."""


class MemoryArtefacts:
    """An in-process `ArtefactCache`, bounded by total bytes (least recently used go first)."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, session_id: str, key: str) -> bytes | None:
        with self._lock:
            value = self._data.get((session_id, key))
            if value is not None:
                self._data.move_to_end((session_id, key))
            return value

    def put(self, session_id: str, key: str, value: bytes) -> None:
        with self._lock:
            old = self._data.pop((session_id, key), None)
            if old is not None:
                self._size -= len(old)
            self._data[(session_id, key)] = value
            self._size += len(value)
            while self._size > self.max_bytes and len(self._data) > 1:
                _, dropped = self._data.popitem(last=False)
                self._size -= len(dropped)

    def drop(self, session_id: str, prefix: str, keep: str | None = None) -> None:
        with self._lock:
            dropped = [
                k
                for k in self._data
                if k[0] == session_id and k[1].startswith(prefix) and (keep is None or not k[1].startswith(keep))
            ]
            for key in dropped:
                self._size -= len(self._data.pop(key))


class TimelineOutline(Protocol):
    """Narrower reads of a session's stored profiles than ``list_profiles`` (same rules: valid stored
    uploads only), so that a ranged view, or one refused as too large, costs what it shows, not
    what the session holds."""

    def batches_between(self, session_id: str, start: int | None, end: int | None) -> Sequence[StoredProfile]:
        """Its batch profiles with a dataset timestamp in ``[start, end)`` (None: unbounded)."""

    def references(self, session_id: str) -> Sequence[StoredProfile]:
        """Its reference profiles."""

    def segments(self, session_id: str) -> Iterable[str]:
        """The distinct segment labels of its batches with a dataset timestamp ("": none)."""

    def span(self, session_id: str) -> tuple[int, int] | None:
        """The first and last dataset timestamps of its batches (None: none)."""

    def timestamps(self, session_id: str) -> Iterable[tuple[int, str, bool]]:
        """The distinct (dataset timestamp, segment label, listed as pending) of its batches."""

    def bucket_counts(self, session_id: str, size: int, offset: int) -> tuple[int, int]:
        """How many distinct ``floor((timestamp + offset) / size)`` its batches fall in: all, and
        those not listed as pending (counted where they are stored)."""

    def day_marks(self, session_id: str) -> Mapping[int, Any] | None:
        """Day number (``floor(timestamp / DAY_MS)``) -> a mark of that day's stored batches (invalid
        ones too) that changes whenever one of them is stored, summarised, found invalid or deleted;
        None when the outline cannot tell (the whole listing is then read). With marks, the service
        keeps each day's batches and reads again only the days whose mark changed (see
        :meth:`TimelineService.every_batch`)."""


@dataclass(frozen=True)
class StoredProfile:
    """What the timeline needs to know of one stored upload."""

    id: str
    kind: str
    dataset_timestamp: int | None
    alias: str | None
    segment: str
    identity: str
    stored_at: int
    #: stored but not summarised yet when listed (see ``TimelineService.state``)
    pending: bool = False
    #: the store's own record of the upload, for the loader
    record: Any = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def batch(self) -> Batch:
        """It as a timeline's `Batch` (made once: the batches a service keeps are bucketed at each refresh)."""
        return Batch(key=self.identity, timestamp=self.dataset_timestamp or 0, segment=self.segment)


@dataclass
class TimelineQuery:
    """A view as asked for: every value as given (checked by :meth:`TimelineService.resolve`)."""

    granularity: str | None = None
    reference: str | None = None
    segment: str | None = None
    #: the view shows the buckets overlapping [start, end): epoch ms or ISO 8601 (UTC by default)
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True)
class ResolvedView:
    """A checked `TimelineQuery`, with the stored profiles it covers."""

    granularity: Granularity
    batches: list[StoredProfile]
    references: list[StoredProfile]
    reference: StoredProfile | None
    segment: str | None
    #: every segment of the session's batches
    segments: list[str]
    start: int | None = None
    end: int | None = None
    #: profiles left out as an ingest worker still holds them (see ``TimelineService.document_bytes``)
    pending: tuple[str, ...] = ()
    #: the buckets of ``batches`` as kept between views (whole-history views with day marks)
    laid: _Laid | None = field(default=None, compare=False, repr=False)


def _memo_size(points: BucketPoints) -> int:
    """About what one bucket's parsed points take in memory."""
    return 256 + 400 * (len(points.columns) + len(points.drift or ()) + len(points.previous_drift or ()))


def _names_size(names: tuple[str, ...]) -> int:
    return 64 + sum(56 + len(n) for n in names)


def _member(profile: StoredProfile) -> Member:
    sha256 = getattr(profile.record, "sha256", None) or profile.identity.split(":")[1]
    return Member(profile.dataset_timestamp or 0, profile.identity, profile.id, sha256)


def _timed_batches(profiles: Iterable[StoredProfile]) -> list[StoredProfile]:
    """The batch profiles with a dataset timestamp: what a timeline buckets."""
    return [p for p in profiles if p.kind == "batch" and p.dataset_timestamp is not None]


_Batches = tuple[StoredProfile, ...]
#: One day's batches as last read: (the day's mark, its batches).
_Day = tuple[Any, _Batches]


@dataclass(frozen=True)
class _Laid:
    """The buckets of a view of the whole history (see :meth:`TimelineService._laid_out`)."""

    buckets: list[Bucket]
    #: the view's batches (those of ``buckets``), by day
    batches: list[StoredProfile]
    #: ... by identity
    by_identity: Mapping[str, StoredProfile]
    #: those listed as pending
    pending: list[StoredProfile]


class _Layout:
    """One view's buckets of a session, by day: the buckets (or, for weeks and months, parts of
    buckets) each day's batches fall in, made again only for a day whose batches changed."""

    def __init__(self) -> None:
        #: day -> (the batches it was made from, those of the view, their buckets or parts of buckets,
        #: those listed as pending)
        self.days: dict[int, tuple[_Batches, _Batches, tuple[Bucket, ...], _Batches]] = {}
        #: a bucket of several days (weeks, months) by start -> (the parts it was made from, it)
        self.joined: dict[int, tuple[tuple[Bucket, ...], Bucket]] = {}
        self.by_identity: dict[str, StoredProfile] = {}

    def update(self, days: Mapping[int, _Day], granularity: Granularity, segment: str | None) -> _Laid:
        gone = [day for day, held in self.days.items() if day not in days or held[0] is not days[day][1]]
        if gone or len(self.days) != len(days):  # a new dict: what was given out is never changed
            self.by_identity = dict(self.by_identity)
        for day in gone:
            for profile in self.days.pop(day)[0]:
                if self.by_identity.get(profile.identity) is profile:
                    del self.by_identity[profile.identity]
        for day, (_, found) in days.items():
            if day in self.days:
                continue
            shown = found if segment is None else tuple(p for p in found if p.segment == segment)
            cut = tuple(bucketize([p.batch for p in shown], granularity))
            self.days[day] = (found, shown, cut, tuple(p for p in shown if p.pending))
            self.by_identity.update((p.identity, p) for p in shown)
        buckets: list[Bucket] = []
        parts: list[Bucket] = []
        joined: dict[int, tuple[tuple[Bucket, ...], Bucket]] = {}

        def close() -> None:
            if len(parts) == 1:
                buckets.append(parts[0])
            elif parts:
                kept = self.joined.get(parts[0].start)
                held = tuple(parts)
                if kept is None or len(kept[0]) != len(held) or any(a is not b for a, b in zip(kept[0], held)):
                    batches = tuple(itertools.chain.from_iterable(part.batches for part in held))
                    kept = (held, Bucket(start=held[0].start, end=held[0].end, batches=batches))
                joined[held[0].start] = kept
                buckets.append(kept[1])
            parts.clear()

        order = sorted(self.days)
        for day in order:
            for part in self.days[day][2]:
                if parts and parts[0].start != part.start:
                    close()
                parts.append(part)
        close()
        self.joined = joined
        batches = list(itertools.chain.from_iterable(self.days[day][1] for day in order))
        pending = list(itertools.chain.from_iterable(self.days[day][3] for day in order))
        return _Laid(buckets, batches, self.by_identity, pending)


#: Where a document's batch timestamps go until they are spliced in (see ``TimelineService._spliced``).
_STAMPS = "\x00batch timestamps\x00"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _stamps_json(bucket: Bucket) -> bytes:
    return _dumps(list(bucket.timestamps))


class TimelineService:
    """Builds timeline documents from a session's stored profiles, storing what it computes.

    ``list_profiles(session_id)`` gives the stored uploads; ``load(profile)`` deserializes one;
    ``column_names(profile)`` gives its column names (by default from ``load``), which the cap on
    buckets × columns counts before anything is computed; ``columns(profile)`` its columns'
    sketches (``ProfileColumns``, by default from ``load``), which a bucket of one batch is read as.
    """

    def __init__(
        self,
        list_profiles: Callable[[str], Sequence[StoredProfile]],
        load: Callable[[StoredProfile], DatasetProfileView],
        cache: ArtefactCache,
        monitors: MonitorsFile | None = None,
        *,
        column_names: Callable[[StoredProfile], Iterable[str]] | None = None,
        columns: Callable[[StoredProfile], Profile] | None = None,
        max_buckets: int = MAX_VIEW_BUCKETS,
        max_cells: int = MAX_VIEW_CELLS,
        memo_bytes: int = 32 * MiB,
        doc_bytes: int = 32 * MiB,
        state: Callable[[StoredProfile, bool], str] | None = None,
        target_of: Callable[[str], tuple[str, str] | None] | None = None,
        version: Callable[[str], str] | None = None,
        bump: Callable[[str], None] | None = None,
        rollups: Rollups | None = None,
        refresh: Callable[[str], object] | None = None,
        outline: TimelineOutline | None = None,
        background: Background | None = None,
    ) -> None:
        self.list_profiles = list_profiles
        #: narrower reads than ``list_profiles`` for ranged views and the bucket cap (see
        #: :meth:`resolve`); None: every view lists the whole session
        self.outline = outline
        #: ``version(session_id)``: the session's timeline version, changed whenever what a view shows
        #: may change (see :mod:`whylogs_songbird.server.rollups`); a stored document of the current
        #: version is answered without listing the session's profiles. None: the stored document's
        #: key is the content of its buckets (every profile listed)
        self.version = version
        #: ``bump(session_id)``: change the version (when this service learns of a landed upload)
        self.bump = bump
        #: the merged views of hour and day buckets, kept as batches land (weeks and months from days)
        self.rollups = rollups
        #: ``refresh(session_id)``: called before a view (e.g. to ask for a look at presigned PUTs that
        #: landed; it must not be slow: views call it every time)
        self.refresh = refresh
        #: what a container is to a monitors file: ("session", its id), ("dataset", "ORG/DATASET"), or
        #: None for one no monitor looks at (an open transaction's profiles). Default: a session
        self.target_of = target_of or (lambda session_id: ("session", session_id))
        self.load = load
        self.column_names = column_names or (lambda profile: list(self.load(profile).get_columns()))
        #: ``columns(profile)``: what the timeline reads of one stored profile (a bucket of one batch):
        #: its columns' sketches, or by default its view (``load``)
        self.columns: Callable[[StoredProfile], Profile] = columns or load
        #: ``state(profile, patient)`` of a profile listed as pending: "ready", "pending" (an
        #: ingest worker, maybe another host's, still holds it) or "invalid"; ``patient``: for
        #: background work, which may wait for that worker. None: every profile is taken as ready
        self.state = state
        self.cache = cache
        self.monitors = monitors
        self.monitors_key = content_key([monitors.model_dump_json()]) if monitors is not None else "none"
        self.max_buckets = max_buckets
        self.max_cells = max_cells
        self._lock = threading.Lock()
        #: parsed bucket points and drift, so a refresh after a new batch only reads the new bucket
        self._memo = LruCache(max_bytes=memo_bytes, size_of=_memo_size)
        #: single flight of each stored value (kept by nothing: memo keeps the parsed points)
        self._inflight = LruCache(max_entries=0)
        #: column names of stored profiles, by identity (for the cap on cells)
        self._names = LruCache(max_bytes=16 * MiB, size_of=_names_size)
        #: column names of a rolled-up bucket, by (session, granularity, family, start, members' content key)
        self._rolled_names = LruCache(max_bytes=16 * MiB, size_of=_names_size)
        #: the JSON of a bucket's batch timestamps, by (start, content key): a refresh encodes the changed buckets'
        self._stamps = LruCache(max_bytes=STAMPS_BYTES, size_of=len)
        #: built documents: parallel requests for one view wait for one build
        self._docs = LruCache(max_bytes=doc_bytes, size_of=len)
        #: session -> day number -> (its mark, its batches) as last read (see :meth:`every_batch`),
        #: for the :data:`LISTED_SESSIONS` sessions viewed last (at most :data:`LISTED_BATCHES` batches)
        self._days: OrderedDict[str, dict[int, _Day]] = OrderedDict()
        #: (session, granularity, segment) -> its buckets by day, for the sessions in ``_days`` (see :meth:`_laid_out`)
        self._layouts: dict[tuple[str, Granularity, str | None], _Layout] = {}
        self._layout_lock = threading.Lock()
        #: sessions whose values stored by older versions of the server were dropped (this process)
        self._current_format: set[str] = set()
        #: what was computed (not read back), by kind: "points" and "drift" of one bucket each
        self.computed: Counter[str] = Counter()
        #: the session's batches read by :meth:`every_batch`: "listing" (all of them) or "day" (one day's)
        self.listed: Counter[str] = Counter()
        #: sessions with a batch landed and monitors not yet evaluated, in arrival order
        self._pending: OrderedDict[str, None] = OrderedDict()
        #: session -> monotonic time before which it is not refreshed again (see :meth:`batch_stored`)
        self._not_before: dict[str, float] = {}
        self._wake = threading.Condition(self._lock)
        #: the thread, clocks and waits of the background refresh (see :meth:`batch_stored`)
        self.background = background or Background()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._busy = False
        #: the failures found on the latest bucket of each session when its last batch landed
        self.latest_failures: dict[str, list[Failure]] = {}
        #: called with (session id, timeline document) after each evaluation of the monitors
        #: (in the background thread; the notifier queues notifications there)
        self.evaluated: list[Callable[[str, dict[str, Any]], object]] = []

    # -- inputs --

    def resolve(self, session_id: str, query: TimelineQuery) -> ResolvedView:
        """What ``query`` asks for, checked: a 400/404 `TimelineRequestError` says what to give.

        With an :attr:`outline`, a ranged view lists only the batches of the buckets it overlaps, and
        a view of the whole history at a given granularity checks :data:`MAX_VIEW_BUCKETS` from the
        span of the session's timestamps (and, past it, their distinct buckets) before listing."""
        try:
            granularity = parse_granularity(query.granularity)
            start = parse_time_bound(query.start, "start")
            end = parse_time_bound(query.end, "end")
        except TimelineError as exc:
            raise TimelineRequestError(400, str(exc)) from None
        if start is not None and end is not None and start >= end:
            given = f"start ({(query.start or '')[:40]}) is not before end ({(query.end or '')[:40]})"
            raise TimelineRequestError(400, f"{given}: give a start before the end")
        ranged = start is not None or end is not None
        outline = self.outline if ranged or granularity is not None else None
        laid: _Laid | None = None
        if outline is None:
            profiles = list(self.list_profiles(session_id))
            batches = _timed_batches(profiles)
            references = [p for p in profiles if p.kind == "reference"]
            segments = sorted({p.segment for p in batches if p.segment})
        else:
            references = list(outline.references(session_id))
            segments = sorted({label for label in outline.segments(session_id) if label})
        segment = query.segment or None
        if segment is not None and segment not in segments:
            known = ", ".join(segments) if segments else "none: its batches are not segmented"
            raise TimelineRequestError(
                404, f"session {session_id} has no segment {segment[:80]!r}; its segments: {known[:400]}"
            )
        wanted = query.reference or (self.monitors.reference if self.monitors is not None else None)
        reference = self._pick_reference(session_id, references, wanted, explicit=bool(query.reference))
        if outline is not None:
            if granularity is None:  # ranged: from the batches in the range, as below
                granularity = choose_granularity(
                    b.dataset_timestamp
                    for b in outline.batches_between(session_id, start, end)
                    if b.dataset_timestamp is not None and (segment is None or b.segment == segment)
                )
            if ranged:  # the batches of every bucket the range overlaps
                lower = None if start is None else bucket_bounds(start, granularity)[0]
                upper = None if end is None else bucket_bounds(end - 1, granularity)[1]
                batches = list(outline.batches_between(session_id, lower, upper))
            else:
                self._check_span(session_id, outline, granularity, segment)
                days = self._batch_days(session_id, outline)
                if days is None:
                    batches = _timed_batches(self.list_profiles(session_id))
                else:
                    laid = self._laid_out(session_id, granularity, segment, days)
                    batches = laid.batches
        if segment is not None and laid is None:
            batches = [b for b in batches if b.segment == segment]
        if granularity is None:
            granularity = choose_granularity(
                b.dataset_timestamp
                for b in batches
                if b.dataset_timestamp is not None
                and (start is None or b.dataset_timestamp >= start)
                and (end is None or b.dataset_timestamp < end)
            )
        return ResolvedView(granularity, batches, references, reference, segment, segments, start, end, laid=laid)

    def every_batch(self, session_id: str, outline: TimelineOutline) -> list[StoredProfile]:
        """The session's batches with a dataset timestamp (those of ``list_profiles``, in another
        order). With the outline's ``day_marks``, only the days whose mark changed since this process
        last read them are read again (``batches_between`` of each such day, or one listing when
        most days changed): a batch landing in a large watched session costs the refresh the read
        of its day, not of the session's history. The marks are read first, so what is kept is
        never older than its mark."""
        days = self._batch_days(session_id, outline)
        if days is None:
            return _timed_batches(self.list_profiles(session_id))
        return list(itertools.chain.from_iterable(days[day][1] for day in sorted(days)))  # by day

    def _batch_days(self, session_id: str, outline: TimelineOutline) -> Mapping[int, _Day] | None:
        """Day number -> (its mark, its batches) of the session (see :meth:`every_batch`); None
        when the outline gives no day marks."""
        marks = outline.day_marks(session_id)
        if marks is None:
            return None
        with self._lock:
            known = self._days.get(session_id, {})
        changed = {day for day, mark in marks.items() if day not in known or known[day][0] != mark}
        days = {day: known[day] for day in marks if day not in changed}
        if len(changed) > max(8, len(marks) // 2):  # most of it: one listing, grouped by day
            self._read_count("listing")
            grouped: dict[int, list[StoredProfile]] = {day: [] for day in changed}
            for batch in _timed_batches(self.list_profiles(session_id)):
                found = grouped.get(int(batch.dataset_timestamp or 0) // DAY_MS)
                if found is not None:
                    found.append(batch)
            days.update({day: (marks[day], tuple(found)) for day, found in grouped.items()})
        else:
            for day in changed:
                self._read_count("day")
                start, end = day * DAY_MS, (day + 1) * DAY_MS  # unbounded past the store's 64 bits
                read = outline.batches_between(
                    session_id, start if start >= -(2**63) else None, end if end < 2**63 else None
                )
                days[day] = (marks[day], tuple(read))
        with self._lock:
            self._days[session_id] = days
            self._days.move_to_end(session_id)
            kept = sum(len(found) for held in self._days.values() for _, found in held.values())
            while len(self._days) > 1 and (len(self._days) > LISTED_SESSIONS or kept > LISTED_BATCHES):
                gone, dropped = self._days.popitem(last=False)
                kept -= sum(len(found) for _, found in dropped.values())
                for layout in [k for k in self._layouts if k[0] == gone]:
                    del self._layouts[layout]
        return days

    def _laid_out(
        self, session_id: str, granularity: Granularity, segment: str | None, days: Mapping[int, _Day]
    ) -> _Laid:
        """The buckets of ``days`` (the session's batches by day, see :meth:`_batch_days`) at
        ``granularity`` (of ``segment``'s batches only, when given), made again only for the days
        whose batches changed since the last call for this view (the others' buckets are the same
        objects, whose content keys are not computed again): what a refresh after a batch landed
        costs grows with its day, not with the session's history. Equal to ``bucketize`` of them."""
        key = (session_id, granularity, segment)
        with self._layout_lock:
            layout = self._layouts.get(key)
            if layout is None:
                layout = self._layouts[key] = _Layout()
            return layout.update(days, granularity, segment)

    def _check_span(
        self, session_id: str, outline: TimelineOutline, granularity: Granularity, segment: str | None
    ) -> None:
        """Refuse a view of the whole history with more than :attr:`max_buckets` buckets, as
        :meth:`document_bytes` would, without listing the session when it can tell: not when the
        span of its timestamps holds no more buckets than that, nor when its pending profiles may
        decide (those an ingest worker still holds are left out of the view): the view then counts."""
        span = outline.span(session_id)
        if span is None:
            return
        first, last = (bucket_bounds(t, granularity)[0] for t in span)
        if granularity == "month":
            (y0, m0, _), (y1, m1, _) = civil_date(first // DAY_MS), civil_date(last // DAY_MS)
            slots = (y1 - y0) * 12 + m1 - m0 + 1
        else:
            slots = (last - first) // (bucket_bounds(first, granularity)[1] - first) + 1
        if slots <= self.max_buckets:
            return
        fixed = {"hour": (HOUR_MS, 0), "day": (DAY_MS, 0), "week": (7 * DAY_MS, 3 * DAY_MS)}  # 1970-01-01: a Thursday
        if segment is None and granularity in fixed and max(abs(t) for t in span) < 2**62:
            counted, counted_settled = outline.bucket_counts(session_id, *fixed[granularity])
            if counted == counted_settled > self.max_buckets:
                raise self._too_big(granularity, f"{counted:,} buckets", f"{self.max_buckets:,} buckets")
            return
        every: set[int] = set()
        settled: set[int] = set()
        for timestamp, label, pending in outline.timestamps(session_id):
            if segment is None or label == segment:
                bucket = bucket_bounds(timestamp, granularity)[0]
                every.add(bucket)
                if not pending:
                    settled.add(bucket)
        if len(settled) == len(every) > self.max_buckets:  # as many whichever pending ones are ready
            raise self._too_big(granularity, f"{len(every):,} buckets", f"{self.max_buckets:,} buckets")

    @staticmethod
    def _pick_reference(
        session_id: str, references: list[StoredProfile], wanted: str | None, *, explicit: bool
    ) -> StoredProfile | None:
        if not references:
            if explicit:
                raise TimelineRequestError(404, f"session {session_id} has no reference profiles yet")
            return None
        newest = max(references, key=lambda r: (r.stored_at, r.id))
        if not wanted:
            return newest
        by_id = [r for r in references if r.id == wanted]
        by_alias = [r for r in references if r.alias == wanted]
        found = by_id or by_alias
        if found:
            return max(found, key=lambda r: (r.stored_at, r.id))
        if not explicit:
            logger.warning(
                "timeline: session %s has no reference %r (monitors file); using the newest", session_id, wanted
            )
            return newest
        known = ", ".join(sorted({r.alias or r.id for r in references}))
        raise TimelineRequestError(
            404, f"session {session_id} has no reference {wanted[:80]!r}; give a ref-… id or an alias: {known[:400]}"
        )

    # -- the document --

    def document(self, session_id: str, query: TimelineQuery, *, watched: bool = False) -> dict[str, Any]:
        return json.loads(self.document_bytes(session_id, query, watched=watched))

    def document_bytes(
        self, session_id: str, query: TimelineQuery, *, watched: bool = False, background: bool = False
    ) -> bytes:
        """The timeline document as JSON bytes, read back from the cache when nothing changed.

        ``watched``: a person asked (a page or API view): this query is then kept up to date in the
        background as batches land (see :meth:`batch_stored`). A view larger than the caps
        (:data:`MAX_VIEW_BUCKETS`, :data:`MAX_VIEW_CELLS`) is refused with a 400 that says how to
        narrow it, before anything is computed. Profiles not summarised yet that an ingest worker
        holds are left out and listed under ``pending`` (a request waits only for this process's
        worker and for young claims, never out another host's lease; ``background`` work waits up
        to two minutes for any worker); such a document is not stored."""
        if self.refresh is not None:
            self.refresh(session_id)
        ranged = bool((query.start or "").strip() or (query.end or "").strip())
        query_key = DOC_PREFIX + content_key(
            [FORMAT, self.monitors_key]
            + [f"{name}:{value}" for name, value in dataclasses.asdict(query).items() if name not in ("start", "end")]
        )
        # read before the profiles are listed: a document stored at this version holds at least them
        version = self.version(session_id) if self.version is not None else None
        if version is not None:
            # a stored document (unranged), or one built in this process at this version (any range,
            # without pending profiles: one with pending ones is keyed by them, see below)
            found = (
                self._stored_document(session_id, query_key, version)
                if not ranged
                else self._built_document(session_id, query_key, version, query)
            )
            if found is not None:
                if watched:
                    self._watch(session_id, query)
                return found
        view = self.resolve(session_id, query)
        listed = view.batches if view.laid is None else view.laid.pending  # those listed as pending, at least
        unready = self._unready([*listed, *([view.reference] if view.reference else [])], background)
        if unready:
            view = dataclasses.replace(
                view,
                batches=[b for b in view.batches if b.id not in unready],
                reference=None if view.reference is not None and view.reference.id in unready else view.reference,
                pending=tuple(sorted(k for k, v in unready.items() if v == "pending")),
                laid=None,
            )
        if watched:
            self._watch(session_id, query)
        self._forget_old_format(session_id)
        if view.laid is not None:  # kept between views: made again only where batches changed
            every = view.laid.buckets
        else:
            every = bucketize([b.batch for b in view.batches if b.dataset_timestamp is not None], view.granularity)
        shown = [
            i
            for i, bucket in enumerate(every)
            if (view.start is None or bucket.end > view.start) and (view.end is None or bucket.start < view.end)
        ]
        buckets = every[shown[0] : shown[-1] + 1] if shown else []
        if len(buckets) > self.max_buckets:
            raise self._too_big(view.granularity, f"{len(buckets):,} buckets", f"{self.max_buckets:,} buckets")
        ranged = ranged or bool(view.pending)  # not stored either
        if version is None:  # no version: the document's tag is everything it shows
            reference = view.reference
            parts = [FORMAT, view.granularity, view.segment or "", reference.identity if reference else ""]
            parts += [self.monitors_key, *(f"segment:{s}" for s in view.segments)]
            parts += [f"{r.id}:{r.alias}" for r in view.references]
            tag = content_key([*parts, *(f"{b.start}:{b.key}" for b in buckets)])
            if not ranged:
                found = self._stored_document(session_id, query_key, tag)
                if found is not None:
                    return found
        else:
            tag = version

        def build() -> bytes:
            by_identity = {b.identity: b for b in view.batches} if view.laid is None else view.laid.by_identity
            self._check_cells(session_id, view, buckets, by_identity)
            data = self._build(session_id, view, buckets, by_identity)
            if not ranged:  # a ranged view is not stored: there are as many as there are ranges (its parts are)
                self.cache.put(session_id, query_key, tag.encode() + b"\n" + data)
            return data

        # single flight: parallel requests for one view wait for one build; keyed by the profiles it
        # leaves out as pending, so that a document with none is answered early (above) and one with
        # some only while those very ones are still pending
        key = (session_id, query_key, tag, view.pending, view.start, view.end)
        data: bytes = self._docs.get_or_compute(key, build)
        return data

    def _built_document(self, session_id: str, query_key: str, version: str, query: TimelineQuery) -> bytes | None:
        """The document of ``query`` built in this process at ``version`` with no pending profile,
        if it is still in memory: read before anything is listed (None when its range does not parse:
        :meth:`resolve` then says why)."""
        try:
            start = parse_time_bound(query.start, "start")
            end = parse_time_bound(query.end, "end")
        except TimelineError:
            return None
        found: bytes | None = self._docs.get((session_id, query_key, version, (), start, end))
        return found

    def _watch(self, session_id: str, query: TimelineQuery) -> None:
        """Remember ``query`` as the session's last view (refreshed in the background as batches land)."""
        remembered = _dumps(dataclasses.asdict(query))
        if self.cache.get(session_id, WATCHED_KEY) != remembered:
            self.cache.put(session_id, WATCHED_KEY, remembered)

    def _stored_document(self, session_id: str, key: str, tag: str) -> bytes | None:
        """The stored document under ``key`` when it was stored with ``tag`` (the version it shows)."""
        stored = self.cache.get(session_id, key)
        if stored is None:
            return None
        stored_tag, _, data = stored.partition(b"\n")
        return data if stored_tag == tag.encode() and data else None

    def _too_big(self, granularity: Granularity, size: str, cap: str) -> TimelineRequestError:
        coarser = GRANULARITIES[GRANULARITIES.index(granularity) + 1 :]
        hint = f"a coarser granularity ({', '.join(coarser)}) or " if coarser else ""
        return TimelineRequestError(
            400,
            f"this {granularity} view has {size}; a timeline view shows at most {cap}: "
            f"ask for {hint}a shorter start/end range (e.g. start=2024-01-01&end=2024-02-01)",
        )

    def _check_cells(
        self,
        session_id: str,
        view: ResolvedView,
        buckets: Sequence[Bucket],
        by_identity: Mapping[str, StoredProfile],
    ) -> None:
        """Refuse a view of more than :attr:`max_cells` buckets × columns (from the column names of
        its buckets' rollups, or of its batches where a bucket has none, read until the cap is passed)."""
        if not buckets:
            return
        names: set[str] = set()
        family = family_of(view.segment)
        for bucket in buckets:
            for granularity, part in self._rolled_parts(view.granularity, bucket):
                # a part's names are those of exactly its members: kept by their content key, so a
                # refresh reads the rollup headers (which name every member) of changed buckets only
                rolled = (session_id, granularity, family, part.start, part.key)
                kept: tuple[str, ...] | None = self._rolled_names.get(rolled)
                if kept is None:
                    found = (
                        None
                        if self.rollups is None
                        else self.rollups.read(session_id, granularity, part.start, family, merged=False)
                    )
                    if found is not None and found.key == part.key:
                        kept = tuple(found.names)
                    else:
                        kept = tuple(
                            dict.fromkeys(n for b in part.batches for n in self._column_names(by_identity[b.key]))
                        )
                    self._rolled_names.get_or_compute(rolled, functools.partial(tuple, kept))
                names.update(kept)
                if len(buckets) * len(names) > self.max_cells:
                    raise self._too_big(
                        view.granularity,
                        f"{len(buckets):,} buckets × {len(names):,}+ columns",
                        f"{self.max_cells:,} cells (buckets × columns)",
                    )

    @staticmethod
    def _rolled_parts(granularity: Granularity, bucket: Bucket) -> list[tuple[str, Bucket]]:
        """The rolled-up buckets a bucket is merged from: itself (an hour or a day), or its days."""
        if granularity in ROLLED:
            return [(granularity, bucket)]
        return [("day", day) for day in bucketize(bucket.batches, "day")]

    def _merged(
        self, session_id: str, view: ResolvedView, bucket: Bucket, by_identity: Mapping[str, StoredProfile]
    ) -> Profile:
        """The merged view of ``bucket``, from the rollups of its hour, day or days (each merged from
        its profiles and stored when it has no rollup of exactly its batches); a bucket of one stored
        rollup is read as its columns' sketches (``rollups.decode_columns``), no view built."""
        assert self.rollups is not None
        rollups = self.rollups
        family = family_of(view.segment)

        def load(member: Member) -> DatasetProfileView:
            return self.load(by_identity[member.identity])

        parts = self._rolled_parts(view.granularity, bucket)
        views = []
        for granularity, part in parts:
            members = [_member(by_identity[b.key]) for b in part.batches]
            rollup, merged = rollups.bucket_rollup(session_id, granularity, family, part, members, load)
            if merged is None and len(parts) == 1:  # read straight from the stored rollup
                if rollup.digest is None:  # one batch: its own summary is the merge
                    return self.columns(by_identity[rollup.members[0].identity])
                return rollups.columns(rollup, load)
            views.append(merged if merged is not None else rollups.view(rollup, load))
        return merge_views(views)

    def _column_names(self, profile: StoredProfile) -> tuple[str, ...]:
        found: tuple[str, ...] = self._names.get_or_compute(
            (profile.identity,), lambda: tuple(self.column_names(profile))
        )
        return found

    def _count(self, what: str) -> None:
        with self._lock:
            self.computed[what] += 1

    def _read_count(self, what: str) -> None:
        with self._lock:
            self.listed[what] += 1

    def _forget_old_format(self, session_id: str) -> None:
        """Drop what an older version of the server stored for ``session_id`` under other keys."""
        with self._lock:
            if session_id in self._current_format:
                return
            if len(self._current_format) > 100_000:
                self._current_format.clear()
            self._current_format.add(session_id)
        for prefix in OLD_PREFIXES:
            self.cache.drop(session_id, prefix)

    def _stored(
        self, session_id: str, key: str, compute: Callable[[], Any], what: str, drop: tuple[str, str | None] | None
    ) -> Any:
        """The value stored under ``key``, or computed, stored, and what it replaces dropped: the
        stored values under ``drop[0]`` (except under ``drop[1]``), older versions of this one
        (None: it replaces nothing)."""
        stored = self.cache.get(session_id, key)
        if stored is not None:
            try:
                return json.loads(stored)
            except ValueError:  # not what this server stores: computed again, and replaced
                logger.warning("timeline: a stored value of session %s cannot be read; computing it again", session_id)
        value = compute()
        self._count(what)
        if drop is not None:
            self.cache.drop(session_id, *drop)
        self.cache.put(session_id, key, _dumps(value))
        return value

    def _unready(self, profiles: Sequence[StoredProfile], background: bool) -> dict[str, str]:
        """Id -> state of the profiles listed as pending that are still not ready (see :attr:`state`)."""
        if self.state is None:
            return {}
        states = {p.id: self.state(p, background) for p in profiles if p.pending}
        return {key: value for key, value in states.items() if value != "ready"}

    def _build(
        self,
        session_id: str,
        view: ResolvedView,
        buckets: Sequence[Bucket],
        by_identity: Mapping[str, StoredProfile],
    ) -> bytes:
        """The document of ``buckets`` by :func:`compute_timeline`, whose hooks keep what it computes:
        each bucket's points, drift against the reference and drift against the previous bucket are
        read back (memory, then the store) or computed once, however many requests ask for them at
        the same time (single flight per value, so views with other references share the rest)."""
        reference = view.reference
        segment_key = content_key([view.segment or ""])[:16]
        starts = {bucket.key: bucket.start for bucket in buckets}
        reference_key = reference.identity if reference else ""
        reference_dir = f"ref/{content_key([reference.id])[:16]}/" if reference else ""

        def stored_key(key: str) -> tuple[str, str, tuple[str, str | None], str]:
            """Where a value of compute_timeline (``points/<bucket>``, ``drift/<bucket>/<other>``) is
            stored, what it is, the stored values it replaces (see the module's docstring), and the
            version of the bucket it is stored under."""
            kind, _, rest = key.partition("/")
            bucket_key, _, other = rest.partition("/")
            slot = f"{BUCKET_PREFIX}{FORMAT}/{view.granularity}/{segment_key}/{starts[bucket_key]}/"
            version = f"{slot}{bucket_key}/"
            if kind == "points":  # a new version of the bucket: the stored values of older ones go
                return f"{version}points", "points", (slot, version), version
            if reference is not None and other == reference_key:  # and of older versions of the other side
                where = f"{version}{reference_dir}{content_key([other])}"
                return where, "drift", (f"{version}{reference_dir}", None), version
            return f"{version}prev/{other}", "drift", (f"{version}prev/", None), version

        #: versions whose points this build computed: nothing of theirs was stored (a bucket's points
        #: are stored before its drift), so a drift stored under one replaces nothing: not dropped
        fresh: set[str] = set()

        def cached(key: str, compute: Callable[[], Any]) -> Any:
            where, what, replaced, version = stored_key(key)

            def run() -> Any:
                if what == "points":
                    fresh.add(version)
                return compute()

            drop = None if what == "drift" and version in fresh else replaced
            return self._inflight.get_or_compute(
                (session_id, where), lambda: self._stored(session_id, where, run, what, drop)
            )

        def memo(key: tuple[str, str, str], compute: Callable[[], BucketPoints]) -> BucketPoints:
            # parsed; by granularity too: buckets of one content at two granularities differ in start and end
            found: BucketPoints = self._memo.get_or_compute((session_id, view.granularity, *key), compute)
            return found

        extra: dict[str, Any] = {
            "session_id": session_id,
            "references": [
                {"id": r.id, "alias": r.alias, "timestamp": r.dataset_timestamp}
                for r in sorted(view.references, key=lambda r: (r.stored_at, r.id), reverse=True)
            ],
            "segments": view.segments,
            "start": view.start,
            "end": view.end,
            **({"pending": list(view.pending)} if view.pending else {}),
            "batch_timestamps": _STAMPS,  # spliced in below, each bucket's encoded once
        }
        info = (
            ReferenceInfo(id=reference.id, alias=reference.alias, timestamp=reference.dataset_timestamp)
            if reference
            else None
        )
        inputs = TimelineInputs(
            batches=(),
            buckets=buckets,
            load=lambda batch: self.load(by_identity[batch.key]),
            reference=None if reference is None else functools.partial(self.load, reference),
            reference_key=reference_key,
            reference_info=info,
            granularity=view.granularity,
            segment=view.segment,
            extra=extra,
            merged=None
            if self.rollups is None
            else functools.partial(self._merged, session_id, view, by_identity=by_identity),
        )
        document = compute_timeline(inputs, cached=cached, memo=memo)
        document["alerts"] = [f.to_json() for f in self.alerts(document)]
        return self._spliced(document, buckets)

    def _spliced(self, document: dict[str, Any], buckets: Sequence[Bucket]) -> bytes:
        """``document`` as JSON, with the batch timestamps of ``buckets`` in place of its `_STAMPS`
        (the same bytes as encoding them in it: a bucket's are encoded once, not at every refresh)."""
        data = _dumps(document)
        marker = _dumps(_STAMPS)
        if data.count(marker) != 1:  # a column named like the marker: encoded as they are
            document["batch_timestamps"] = [list(bucket.timestamps) for bucket in buckets]
            return _dumps(document)
        stamps = b",".join(
            self._stamps.get_or_compute((bucket.start, bucket.key), functools.partial(_stamps_json, bucket))
            for bucket in buckets
        )
        return data.replace(marker, b"[" + stamps + b"]")  # its one place (counted above)

    def alerts(self, document: dict[str, Any]) -> list[Failure]:
        """Failures of the server's monitors on every bucket of ``document`` (none without monitors)."""
        if self.monitors is None or not self._monitored(str(document.get("session_id"))):
            return []
        try:
            return evaluate(self.monitors, document, which="all")
        except MonitorsError as exc:
            logger.warning("timeline: the monitors file does not fit session %s: %s", document.get("session_id"), exc)
            return []

    # -- monitors, evaluated in the background when a batch lands --

    def _monitored(self, session_id: str) -> bool:
        """Whether the monitors file applies to this container (see :attr:`target_of`)."""
        if self.monitors is None:
            return False
        target = self.target_of(session_id)
        return target is not None and self.monitors.applies_to(*target)

    def upload_landed(self, upload: Any) -> None:
        """The store's "upload landed" hook (``Store.add_landed_hook``): a recorded batch runs
        :meth:`batch_stored`, on whichever store and host recorded it."""
        if self.bump is not None:
            self.bump(upload.session_id)
        if getattr(upload, "kind", None) == "batch":
            self.batch_stored(upload.session_id)

    def batch_stored(self, session_id: str) -> None:
        """Note that a batch of ``session_id`` landed. With monitors loaded, or when someone looked at
        the session's timeline, one background thread brings it up to date (the last view asked for,
        and the monitors' view, whose monitors it then evaluates): requests never wait for it, and
        the next view finds everything stored.

        Nothing is deleted here: a stored document is answered only for the session's current
        version (or, without a version, when the content of every bucket it shows is unchanged),
        and storing a view's new document replaces its older one (see :meth:`document_bytes`); the
        stored points and drift of the other buckets are used again. Landing costs the same in a
        session of any size.

        Refreshes are coalesced: batches landing while a session waits for its refresh are taken
        in that one refresh, and a session is refreshed again only :data:`REFRESH_SPACING` times
        as long after its last refresh as that refresh took of CPU (at most :data:`MAX_REFRESH_WAIT`
        seconds), so refreshing a large session while batches stream in takes a bounded share of
        the process (uploads keep their pace)."""
        if self.monitors is None and self.cache.get(session_id, WATCHED_KEY) is None:
            return
        with self._wake:
            if self._closed:
                return
            self._pending[session_id] = None
            if self._worker is None:
                self._worker = self.background.start(self._run)
            self._wake.notify()

    def _next_due(self) -> tuple[str | None, float]:
        """The first waiting session whose refresh is due, or None and how long until one is (under the lock)."""
        now = self.background.now()
        soonest = math.inf
        for session_id in self._pending:
            due = self._not_before.get(session_id, 0.0)
            if due <= now:
                return session_id, 0.0
            soonest = min(soonest, due - now)
        return None, soonest

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    if self._closed:
                        return
                    session_id, wait = self._next_due()
                    if session_id is not None:
                        break
                    self.background.wait(self._wake, None if math.isinf(wait) else wait)
                del self._pending[session_id]
                self._busy = True
            started = self.background.cpu_time()
            try:
                self.latest_failures[session_id] = self.batch_landed(session_id)
            except Exception:
                logger.exception("timeline: evaluating the monitors of session %s failed", session_id)
            finally:
                took = self.background.cpu_time() - started
                with self._lock:
                    self._busy = False
                    if len(self._not_before) > 10_000:  # forget the sessions refreshed long ago
                        now = self.background.now()
                        self._not_before = {k: v for k, v in self._not_before.items() if v > now}
                    self._not_before[session_id] = self.background.now() + min(REFRESH_SPACING * took, MAX_REFRESH_WAIT)

    def idle(self) -> bool:
        """Whether no landed batch is waiting for its monitors (for tests and benchmarks to poll)."""
        with self._lock:
            return not self._pending and not self._busy

    def close(self) -> None:
        """Stop the background thread (it finishes the evaluation under way)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout=30)

    def batch_landed(self, session_id: str) -> list[Failure]:
        """Bring the timeline of ``session_id`` up to date (so views find it stored) and return the
        failures of the monitors on its latest bucket, logged as warnings."""
        watched = self.cache.get(session_id, WATCHED_KEY)
        if watched is not None:
            try:
                self.document_bytes(session_id, TimelineQuery(**json.loads(watched)), background=True)
            except TimelineRequestError as exc:
                logger.info("timeline: the last view of session %s cannot be refreshed: %s", session_id, exc.message)
        if not self._monitored(session_id):
            return []
        query = TimelineQuery(
            granularity=self.monitors.granularity if self.monitors else None,
            segment=self.monitors.segment if self.monitors else None,
        )
        try:
            document = json.loads(self.document_bytes(session_id, query, background=True))
        except TimelineRequestError as exc:
            logger.warning("timeline: session %s: %s", session_id, exc.message)
            return []
        if self.monitors is None or not document["buckets"]:
            return []
        latest = document["buckets"][-1]["start"]
        kind, name = self.target_of(session_id) or ("session", session_id)
        for listener in self.evaluated:
            try:
                listener(session_id, document)
            except Exception:
                logger.exception("timeline: a listener of the monitors of session %s failed", session_id)
        logger.info(
            "monitors evaluated: %s %s, bucket from %d: %d failure(s)",
            kind,
            name,
            latest,
            sum(1 for a in document.get("alerts", []) if a["start"] == latest),
        )
        failures = [
            Failure(
                monitor=a["monitor"],
                column=a["column"],
                metric=a["metric"],
                bucket_start=a["start"],
                bucket_end=a["end"],
                value=a["value"],
                reason=a["reason"],
            )
            for a in document.get("alerts", [])
            if a["start"] == latest
        ]
        for failure in failures:
            logger.warning(
                "monitor failed: %s %s, column %s: %s (%s)",
                kind,
                name,
                failure.column,
                failure.reason,
                failure.monitor,
            )
        return failures


__all__ = [
    "MAX_VIEW_BUCKETS",
    "MAX_VIEW_CELLS",
    "ArtefactCache",
    "Background",
    "MemoryArtefacts",
    "ResolvedView",
    "StoredProfile",
    "TimelineOutline",
    "TimelineQuery",
    "TimelineRequestError",
    "TimelineService",
]
