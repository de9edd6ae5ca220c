"""The timeline of a session on the server: which stored profiles go into it, and what is stored so
that a view does not recompute it. The computing is :mod:`whylogs_songbird.timeline` (pure); the
HTTP layer is ``timeline_routes.py``.

What is stored (in the derived-artefact cache, per session, keyed by what each value depends on):

- ``timeline/points/<bucket>``: the per-column numbers of one bucket, keyed by the identity of its
  uploads (id, sha256, size of each), so adding or replacing a batch changes the key;
- ``timeline/drift/<bucket>/<other>``: whylogs' drift of a bucket against the reference or the
  previous bucket, keyed by both identities;
- ``timeline/doc/<everything>``: the whole JSON document of one (granularity, reference, segment)
  view, keyed by all of the above and the monitors file.

A landed batch only adds or changes its own bucket (and the drift of the next one against it):
everything else is read back from the cache.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from whylogs.core import DatasetProfileView

from whylogs_songbird.monitors import Failure, MonitorsError, MonitorsFile, evaluate
from whylogs_songbird.server.observatory.cache import LruCache
from whylogs_songbird.timeline import (
    Batch,
    Bucket,
    BucketPoints,
    Granularity,
    ReferenceInfo,
    TimelineError,
    TimelineInputs,
    bucketize,
    choose_granularity,
    compute_timeline,
    content_key,
    parse_granularity,
)

logger = logging.getLogger("whylogs_songbird.server.timeline")

#: Bumped when what is stored changes shape, so old entries are never read back.
FORMAT = "v2"
#: Keys of whole stored documents start with this.
DOC_PREFIX = "timeline/doc/"
#: The query of the last view of a session's timeline, refreshed in the background as batches land.
WATCHED_KEY = "timeline/watched"


class TimelineRequestError(Exception):
    """A timeline request that cannot be answered: ``status`` and a message that says what to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ArtefactCache(Protocol):
    """Derived values stored per session under a key (bytes in, bytes out)."""

    def get(self, session_id: str, key: str) -> bytes | None: ...

    def put(self, session_id: str, key: str, value: bytes) -> None: ...

    def drop(self, session_id: str, prefix: str) -> None: ...


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

    def drop(self, session_id: str, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k[0] == session_id and k[1].startswith(prefix)]:
                self._size -= len(self._data.pop(key))


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


@dataclass
class TimelineQuery:
    granularity: str | None = None
    reference: str | None = None
    segment: str | None = None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


class TimelineService:
    """Builds timeline documents from a session's stored profiles, storing what it computes.

    ``list_profiles(session_id)`` gives the stored uploads; ``load(profile)`` deserializes one.
    """

    def __init__(
        self,
        list_profiles: Callable[[str], Sequence[StoredProfile]],
        load: Callable[[StoredProfile], DatasetProfileView],
        cache: ArtefactCache,
        monitors: MonitorsFile | None = None,
        *,
        memo_entries: int = 1024,
        state: Callable[[StoredProfile, bool], str] | None = None,
    ) -> None:
        self.list_profiles = list_profiles
        self.load = load
        #: ``state(profile, patient)`` of a profile listed as pending: "ready", "pending" (an
        #: ingest worker, maybe another host's, still holds it) or "invalid"; ``patient``: for
        #: background work, which may wait for that worker. None: every profile is taken as ready
        self.state = state
        self.cache = cache
        self.monitors = monitors
        self.monitors_key = content_key([monitors.model_dump_json()]) if monitors is not None else "none"
        self._lock = threading.Lock()
        #: parsed bucket points, so a refresh after a new batch only parses the new bucket
        self._memo = LruCache(max_entries=memo_entries)
        #: (session id, doc key) of documents being built, so concurrent views wait for one build
        self._building: dict[tuple[str, str], threading.Event] = {}
        #: sessions with a batch landed and monitors not yet evaluated, in arrival order
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._closed = False
        self._busy = False
        #: the failures found on the latest bucket of each session when its last batch landed
        self.latest_failures: dict[str, list[Failure]] = {}

    # -- inputs --

    def resolve(
        self, session_id: str, query: TimelineQuery
    ) -> tuple[Granularity, list[StoredProfile], list[StoredProfile], StoredProfile | None, str | None]:
        profiles = list(self.list_profiles(session_id))
        batches = [p for p in profiles if p.kind == "batch" and p.dataset_timestamp is not None]
        references = [p for p in profiles if p.kind == "reference"]
        try:
            granularity = parse_granularity(query.granularity)
        except TimelineError as exc:
            raise TimelineRequestError(400, str(exc)) from None
        segments = sorted({p.segment for p in batches if p.segment})
        segment = query.segment or None
        if segment is not None and segment not in segments:
            known = ", ".join(segments) if segments else "none: its batches are not segmented"
            raise TimelineRequestError(
                404, f"session {session_id} has no segment {segment[:80]!r}; its segments: {known[:400]}"
            )
        wanted = query.reference or (self.monitors.reference if self.monitors is not None else None)
        reference = self._pick_reference(session_id, references, wanted, explicit=bool(query.reference))
        if segment is not None:
            batches = [b for b in batches if b.segment == segment]
        if granularity is None:
            granularity = choose_granularity(b.dataset_timestamp for b in batches if b.dataset_timestamp is not None)
        return granularity, batches, references, reference, segment

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
        background as batches land (see :meth:`batch_stored`). Profiles not summarised yet that an
        ingest worker holds are left out and listed under ``pending`` (a request waits only for
        this process's worker and for young claims, never out another host's lease; ``background``
        work waits up to two minutes for any worker); such a document is not stored."""
        granularity, batches, references, reference, segment = self.resolve(session_id, query)
        unready = self._unready([*batches, *([reference] if reference else [])], background)
        if unready:
            batches = [b for b in batches if b.id not in unready]
            if reference is not None and reference.id in unready:
                reference = None
            stamped = [
                Batch(key=b.identity, timestamp=b.dataset_timestamp, segment=b.segment)
                for b in batches
                if b.dataset_timestamp is not None
            ]
            extra = {"pending": sorted(k for k, v in unready.items() if v == "pending")}
            return self._build(
                session_id, granularity, bucketize(stamped, granularity), batches, references, reference, segment, extra
            )
        if watched:
            remembered = _dumps(dataclasses.asdict(query))
            if self.cache.get(session_id, WATCHED_KEY) != remembered:
                self.cache.put(session_id, WATCHED_KEY, remembered)
        stamped = [
            Batch(key=b.identity, timestamp=b.dataset_timestamp, segment=b.segment)
            for b in batches
            if b.dataset_timestamp is not None
        ]
        buckets = bucketize(stamped, granularity)
        parts = [FORMAT, granularity, segment or "", reference.identity if reference else "", self.monitors_key]
        parts += [f"{r.id}:{r.alias}" for r in references]
        doc_key = DOC_PREFIX + content_key([*parts, *(f"{b.start}:{b.key}" for b in buckets)])
        cached = self.cache.get(session_id, doc_key)
        if cached is not None:
            return cached
        with self._lock:
            event = self._building.get((session_id, doc_key))
            owner = event is None
            if owner:
                event = threading.Event()
                self._building[(session_id, doc_key)] = event
        assert event is not None
        if not owner:
            event.wait(timeout=600)
            cached = self.cache.get(session_id, doc_key)
            if cached is not None:
                return cached
        try:
            data = self._build(session_id, granularity, buckets, batches, references, reference, segment)
            self.cache.put(session_id, doc_key, data)
            return data
        finally:
            if owner:
                with self._lock:
                    self._building.pop((session_id, doc_key), None)
                event.set()

    def _unready(self, profiles: Sequence[StoredProfile], background: bool) -> dict[str, str]:
        """Id -> state of the profiles listed as pending that are still not ready (see :attr:`state`)."""
        if self.state is None:
            return {}
        states = {p.id: self.state(p, background) for p in profiles if p.pending}
        return {key: value for key, value in states.items() if value != "ready"}

    def _build(
        self,
        session_id: str,
        granularity: Granularity,
        buckets: Sequence[Bucket],
        batches: Sequence[StoredProfile],
        references: Sequence[StoredProfile],
        reference: StoredProfile | None,
        segment: str | None,
        more: dict[str, Any] | None = None,
    ) -> bytes:
        by_identity = {b.identity: b for b in batches}
        segments = sorted({b.segment for b in self.list_profiles(session_id) if b.kind == "batch" and b.segment})
        extra: dict[str, Any] = {
            "session_id": session_id,
            "references": [
                {"id": r.id, "alias": r.alias, "timestamp": r.dataset_timestamp}
                for r in sorted(references, key=lambda r: (r.stored_at, r.id), reverse=True)
            ],
            "segments": segments,
            "batch_timestamps": [
                sorted({by_identity[b.key].dataset_timestamp or 0 for b in k.batches}) for k in buckets
            ],
            **(more or {}),
        }
        info = (
            ReferenceInfo(id=reference.id, alias=reference.alias, timestamp=reference.dataset_timestamp)
            if reference
            else None
        )
        inputs = TimelineInputs(
            batches=[batch for bucket in buckets for batch in bucket.batches],
            load=lambda batch: self.load(by_identity[batch.key]),
            reference=None if reference is None else functools.partial(self.load, reference),
            reference_key=reference.identity if reference else "",
            reference_info=info,
            granularity=granularity,
            segment=segment,
            extra=extra,
        )

        def cached(key: str, compute: Callable[[], Any]) -> Any:
            kind, _, rest = key.partition("/")  # "points/<bucket>" is kept as "timeline/points/<FORMAT>/<bucket>"
            return self._cached(session_id, f"timeline/{kind}/{FORMAT}/{rest}", compute)

        def memo(key: tuple[str, str, str], compute: Callable[[], BucketPoints]) -> BucketPoints:
            return self._memo.get_or_compute((session_id, *key), compute)  # kept parsed, by all it depends on

        document = compute_timeline(inputs, cached=cached, memo=memo)
        document["alerts"] = [f.to_json() for f in self.alerts(document)]
        return _dumps(document)

    def _cached(self, session_id: str, key: str, compute: Callable[[], Any]) -> Any:
        stored = self.cache.get(session_id, key)
        if stored is not None:
            return json.loads(stored)
        value = compute()
        self.cache.put(session_id, key, _dumps(value))
        return value

    def alerts(self, document: dict[str, Any]) -> list[Failure]:
        """Failures of the server's monitors on every bucket of ``document`` (none without monitors)."""
        if self.monitors is None:
            return []
        try:
            return evaluate(self.monitors, document, which="all")
        except MonitorsError as exc:
            logger.warning("timeline: the monitors file does not fit session %s: %s", document.get("session_id"), exc)
            return []

    # -- monitors, evaluated in the background when a batch lands --

    def upload_landed(self, upload: Any) -> None:
        """The store's "upload landed" hook (``Store.add_landed_hook``): a recorded batch runs
        :meth:`batch_stored`, on whichever store and host recorded it."""
        if getattr(upload, "kind", None) == "batch":
            self.batch_stored(upload.session_id)

    def batch_stored(self, session_id: str) -> None:
        """Note that a batch of ``session_id`` landed. With monitors loaded, or when someone looked at
        the session's timeline, one background thread brings it up to date (the last view asked for,
        and the monitors' view, whose monitors it then evaluates): requests never wait for it, and
        the next view finds everything stored.

        The session's stored documents are dropped (they are out of date, and would pile up); the
        stored points and drift of its other buckets stay and are used again."""
        self.cache.drop(session_id, DOC_PREFIX)
        if self.monitors is None and self.cache.get(session_id, WATCHED_KEY) is None:
            return
        with self._wake:
            if self._closed:
                return
            self._pending[session_id] = None
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="songbird-timeline", daemon=True)
                self._worker.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                session_id, _ = self._pending.popitem(last=False)
                self._busy = True
            try:
                self.latest_failures[session_id] = self.batch_landed(session_id)
            except Exception:
                logger.exception("timeline: evaluating the monitors of session %s failed", session_id)
            finally:
                with self._lock:
                    self._busy = False

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
        if self.monitors is None:
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
        logger.info(
            "monitors evaluated: session %s, bucket from %d: %d failure(s)",
            session_id,
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
                "monitor failed: session %s, column %s: %s (%s)",
                session_id,
                failure.column,
                failure.reason,
                failure.monitor,
            )
        return failures


__all__ = [
    "ArtefactCache",
    "MemoryArtefacts",
    "StoredProfile",
    "TimelineQuery",
    "TimelineRequestError",
    "TimelineService",
]
