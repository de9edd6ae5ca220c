"""Publishing: upload slots, parallel PUTs, links. The layer the writer and the CLI stand on.

One publish: ask songbird for upload slots (one call per batch profile; one call for all
references), PUT each profile's bytes to its slot in parallel (bounded by ``max_workers``),
check every PUT, then ask for observatory links, chunked by the 3-profile limit.

A profile that finally fails is kept in the outbox (:mod:`whylogs_songbird.outbox`, whose delivery
asks for upload slots the same way, `whylogs_songbird.session.request_slot`). What is expensive to
build (the HTTP connection pool, the resolved settings, the stored session id) is shared per process
and per settings (`shared_publisher`), so the whylogs idiom of a new writer per call costs nothing
extra; after a fork, the child builds its own.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whylogs_songbird.client import SongbirdClient, request_model
from whylogs_songbird.config import Settings, option_names, resolve_settings, unknown_option_message
from whylogs_songbird.connect import make_client
from whylogs_songbird.errors import ConfigError, PublishError, SongbirdError, is_retryable
from whylogs_songbird.models import MAX_PROFILES_PER_LINK, LogReferenceRequest, SegmentTag
from whylogs_songbird.outbox import Outbox
from whylogs_songbird.outbox import flush_outbox as flush_outbox  # its import path before the outbox package
from whylogs_songbird.profiles import Profileish, ProfileItem, check_alias, format_ms, items_from, reference_items
from whylogs_songbird.session import DatasetTarget, Kind, Target, open_target, request_link, request_slot
from whylogs_songbird.session import GuestSession as GuestSession  # what a Publisher(session=...) takes
from whylogs_songbird.session import SessionStore as SessionStore

logger = logging.getLogger(__name__)


@dataclass
class PublishedProfile:
    """What happened to one profile of a publish."""

    kind: Kind
    dataset_timestamp: int
    alias: str | None = None
    segment_tags: tuple[SegmentTag, ...] = ()
    ok: bool = False
    profile_id: str | None = None
    session_id: str | None = None
    observatory_url: str | None = None
    error: str | None = None
    size: int | None = None
    outbox_entry: str | None = None
    exception: Exception | None = field(default=None, repr=False, compare=False)
    #: The presigned URL of this profile's slot, once one was given (never shown: it is signed).
    upload_url: str | None = field(default=None, repr=False, compare=False)

    #: The id of an earlier upload of the same bytes, when the server kept that one instead.
    duplicate_of: str | None = None

    @property
    def label(self) -> str:
        """A short human name: the alias for a reference, the date (and segment) for a batch."""
        name = (self.alias or "reference") if self.kind == "reference" else f"batch {format_ms(self.dataset_timestamp)}"
        if self.segment_tags and self.kind == "batch":
            name += " [" + ",".join(f"{t.key}={t.value}" for t in self.segment_tags) + "]"
        return name

    @property
    def link_key(self) -> int | str:
        """How the link operation names this profile: reference id, or batch timestamp."""
        return (self.profile_id or "") if self.kind == "reference" else self.dataset_timestamp


@dataclass
class PublishResult:
    """The outcome of a publish: per-profile results and combined observatory links (≤ 3 profiles each)."""

    endpoint: str
    profiles: list[PublishedProfile]
    observatory_urls: list[str] = field(default_factory=list)
    #: Why nothing was published, when the publish failed before any profile was tried.
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.profiles) and all(p.ok for p in self.profiles)

    @property
    def landed(self) -> list[PublishedProfile]:
        return [p for p in self.profiles if p.ok]

    @property
    def failed(self) -> list[PublishedProfile]:
        return [p for p in self.profiles if not p.ok]

    @property
    def session_id(self) -> str | None:
        ids = [p.session_id for p in self.profiles if p.session_id]
        return ids[-1] if ids else None

    @property
    def observatory_url(self) -> str | None:
        """The first combined link (the only one for up to 3 profiles)."""
        if self.observatory_urls:
            return self.observatory_urls[0]
        return next((p.observatory_url for p in self.landed if p.observatory_url), None)

    def compare_with(self, reference: str, **options: Any) -> list[str]:
        """Observatory links comparing this result's batches with the reference named ``reference``.

        The reference is one published in the same session (by this process or another: its id
        is remembered with the stored session), or in this result. One link per 3 profiles, as
        the observatory allows; each link holds the reference and up to 2 batches.
        ``options`` are the settings of the publish (endpoint, config_dir, ...).

        >>> batches = publish(why.log(today_df))                      # doctest: +SKIP
        >>> batches.compare_with("train")                             # doctest: +SKIP
        """
        return comparison_links(self, reference, **options)

    def summary(self) -> str:
        """One line: how many landed, how many failed, and the first failure."""
        if self.error is not None:
            return f"nothing was published to {self.endpoint}: {self.error}"
        text = f"{len(self.landed)} of {len(self.profiles)} profiles published to {self.endpoint}"
        if self.failed:
            first = self.failed[0]
            text += f"; {len(self.failed)} failed ({first.label}: {first.error})"
        return text

    def _repr_html_(self) -> str:
        rows = []
        for p in self.profiles:
            status = "✅" if p.ok else "❌"
            link = (
                f'<a href="{html.escape(p.observatory_url)}" target="_blank">open</a>'
                if p.ok and p.observatory_url
                else html.escape(p.error or "")
            )
            rows.append(
                f"<tr><td>{status}</td><td>{html.escape(p.kind)}</td><td>{html.escape(p.label)}</td><td>{link}</td></tr>"
            )
        combined = "".join(
            f'<li><a href="{html.escape(u)}" target="_blank">{html.escape(u)}</a></li>' for u in self.observatory_urls
        )
        return (
            f"<div><b>songbird</b>: {html.escape(self.summary())}"
            f"<table><tr><th></th><th>kind</th><th>profile</th><th>link</th></tr>{''.join(rows)}</table>"
            + (f"<p>Compare together:</p><ul>{combined}</ul>" if combined else "")
            + "</div>"
        )


ProfileHook = Callable[[PublishedProfile], None]


class Publisher:
    """Publishes upload items to one songbird endpoint, in one guest session or (dataset mode) one dataset.

    Holds one `SongbirdClient` (and so one connection pool) and one target (`GuestSession` or
    `DatasetTarget`, see `open_target`); reuse it
    for many publishes. ``on_profile`` is called (from worker threads) as each profile is done,
    landed or not: a progress bar's hook.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: SongbirdClient | None = None,
        session: Target | None = None,
        on_profile: ProfileHook | None = None,
    ) -> None:
        self.settings = settings or resolve_settings()
        self.client = client or make_client(self.settings)
        self.session: Target = session or open_target(self.client, self.settings)
        self.on_profile = on_profile
        self.outbox = Outbox(self.settings.outbox_path) if self.settings.outbox else None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _threads(self) -> ThreadPoolExecutor:
        """The threads of this publisher's publishes (``max_workers``), started on first use and kept."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.settings.max_workers, thread_name_prefix="songbird")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.client.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(self, items: Sequence[ProfileItem]) -> PublishResult:
        """Upload every item; never raises for a profile that failed: see ``PublishResult.failed``.

        One pipeline, bounded by ``max_workers``: the references' batch call is in flight while
        their profiles serialize, each PUT starts as soon as its bytes and slot are there, and each
        combined link is asked for as soon as its (up to 3) profiles have landed.
        """
        results = [
            PublishedProfile(
                kind="reference" if item.is_reference else "batch",
                dataset_timestamp=item.dataset_timestamp,
                alias=item.alias,
                segment_tags=item.segment_tags,
            )
            for item in items
        ]
        with _Tasks(self.settings.max_workers, self._threads) as tasks:
            links = _Links(self, results, tasks if len(items) > 1 else None)
            references = [i for i, item in enumerate(items) if item.is_reference]
            if references:
                self._submit_references(tasks, items, results, references, links)
            for index, item in enumerate(items):
                if not item.is_reference:
                    tasks.submit(self._batch_task(item, results[index], functools.partial(links.landed, index)))
            tasks.wait()
            for item, result in zip(items, results):
                if result.ok:
                    continue
                # a profile that did not land has its exception (`_fail` sets both)
                if self.outbox is not None and result.exception is not None and is_retryable(result.exception):
                    self._keep(item, result)
            publish_result = PublishResult(endpoint=self.client.endpoint, profiles=results)
            links.add_to(publish_result)
        self._remember_references(publish_result)
        return publish_result

    def _remember_references(self, result: PublishResult) -> None:
        """Keep the ids of landed named references with the stored session, for `compare_with`."""
        by_session: dict[str, dict[str, str]] = {}
        for p in result.landed:
            if p.alias and p.profile_id and p.session_id:  # only references have an alias
                by_session.setdefault(p.session_id, {})[p.alias] = p.profile_id
        for session_id, names in by_session.items():
            try:
                self.session.store.remember_references(self.client.endpoint, session_id, names)
            except (OSError, SongbirdError) as exc:
                logger.debug("songbird: could not remember reference ids: %s", exc)

    # -- tasks --------------------------------------------------------------------------------

    def _batch_task(
        self, item: ProfileItem, result: PublishedProfile, finished: Callable[[], None]
    ) -> Callable[[], None]:
        def task() -> None:
            try:
                data = item.serialize()
                session_id, response = request_slot(
                    self.session, "batch", item.dataset_timestamp, segment_tags=item.segment_tags
                )
                result.session_id, result.profile_id, result.upload_url = session_id, response.id, response.upload_url
                result.duplicate_of = self.client.upload_profile(response.upload_url, data)
                result.observatory_url, result.size, result.ok = response.observatory_url, len(data), True
                _warn_duplicate(result)
            except Exception as exc:
                self._fail(result, exc)
            self._done(result)
            finished()

        return task

    def _submit_references(
        self,
        tasks: _Tasks,
        items: Sequence[ProfileItem],
        results: list[PublishedProfile],
        indexes: list[int],
        links: _Links,
    ) -> None:
        """One slot call for all references and, beside it, one task that serializes them in order
        (both submitted first, so no PUT task waits on one that has not started); each PUT starts
        once its bytes and the slots are there. One serializing thread, not one per profile: they
        would only take turns on the GIL and slow down everything else in flight."""
        slots: Future[tuple[str, list[Any]]] = Future()
        serialized: list[Future[bytes]] = [Future() for _ in indexes]

        def ask() -> None:
            try:
                if isinstance(self.session, DatasetTarget):  # the log API takes references one by one
                    given = [
                        request_slot(
                            self.session,
                            "reference",
                            items[i].dataset_timestamp,
                            alias=items[i].alias,
                            segment_tags=items[i].segment_tags,
                        )
                        for i in indexes
                    ]
                    slots.set_result((self.session.session_id(), [slot for _, slot in given]))
                    return
                if len(indexes) == 1:
                    only = items[indexes[0]]
                    session_id, single = request_slot(
                        self.session,
                        "reference",
                        only.dataset_timestamp,
                        alias=only.alias,
                        segment_tags=only.segment_tags,
                    )
                    slots.set_result((session_id, [single]))
                    return
                requests_ = [
                    request_model(
                        LogReferenceRequest, alias=items[i].alias, dataset_timestamp=items[i].dataset_timestamp
                    )
                    for i in indexes
                ]
                session_id, batch = self.session.call(
                    lambda sid: (sid, self.client.batch_create_reference_profile_upload(sid, requests_))
                )
                slots.set_result((session_id, list(batch.references)))  # the client checked their number
            except Exception as exc:
                slots.set_exception(exc)

        def serialize() -> None:
            for index, data in zip(indexes, serialized):
                try:
                    data.set_result(items[index].serialize())
                except Exception as exc:
                    data.set_exception(exc)

        def put(position: int, index: int) -> Callable[[], None]:
            result = results[index]

            def task() -> None:
                try:
                    data = serialized[position].result()
                    session_id, given = slots.result()
                    slot = given[position]
                    result.session_id, result.profile_id, result.upload_url = session_id, slot.id, slot.upload_url
                    result.duplicate_of = self.client.upload_profile(slot.upload_url, data)
                    result.observatory_url, result.size, result.ok = slot.observatory_url, len(data), True
                    _warn_duplicate(result)
                except Exception as exc:
                    self._fail(result, exc)
                self._done(result)
                links.landed(index)

            return task

        tasks.submit(ask)
        tasks.submit(serialize)
        for position, index in enumerate(indexes):
            tasks.submit(put(position, index))

    def _keep(self, item: ProfileItem, result: PublishedProfile) -> None:
        """Save a profile that finally failed to the outbox, and say so in its error."""
        assert self.outbox is not None
        try:
            entry = self.outbox.save(
                endpoint=self.client.endpoint,
                kind=result.kind,
                data=item.serialize(),
                dataset_timestamp=item.dataset_timestamp,
                alias=item.alias,
                segment_tags=item.segment_tags,
                error=result.error or "",
                pinned_session_id=self.session.pinned_session_id,
                dataset=self.session.dataset if isinstance(self.session, DatasetTarget) else None,
                slot=(result.session_id, result.profile_id, result.upload_url) if result.upload_url else None,
            )
        except OSError as exc:
            result.error = f"{result.error} (and it could not be saved to the outbox {self.outbox.directory}: {exc})"
            return
        result.outbox_entry = entry.id
        result.error = (
            f"{result.error} It was saved to the outbox ({self.outbox.directory}, entry {entry.id}): "
            "run `songbird outbox flush` to deliver it when the server is back."
        )
        logger.debug("songbird: %s kept in the outbox as %s", result.label, entry.id)

    def _done(self, result: PublishedProfile) -> None:
        if self.on_profile is not None:
            self.on_profile(result)

    @staticmethod
    def _fail(result: PublishedProfile, exc: Exception) -> None:
        result.ok = False
        result.exception = exc
        result.error = str(exc) if isinstance(exc, SongbirdError) else f"{type(exc).__name__}: {exc}"
        # The caller reports the failure in one line; the traceback is for DEBUG only.
        logger.debug("songbird: %s was not published: %s", result.label, result.error, exc_info=exc)

    # -- links --------------------------------------------------------------------------------

    def _fetch_link(self, session_id: str, keys: list[int | str], profiles: Sequence[PublishedProfile]) -> str | None:
        """One combined link for ``keys`` (≤ 3 profiles); fills in the per-profile links still missing."""
        stamps = [k for k in keys if isinstance(k, int)]
        ids = [k for k in keys if isinstance(k, str)]
        try:
            answer = request_link(self.session, session_id, stamps, ids)
        except SongbirdError as exc:
            logger.warning("songbird: could not get an observatory link for %s: %s", keys, exc)
            return None
        individual = dict(zip([*stamps, *ids], answer.individual_observatory_urls))
        for profile in profiles:
            if not profile.observatory_url and profile.link_key in individual:
                profile.observatory_url = individual[profile.link_key]
        return answer.observatory_url


class _Tasks:
    """The tasks of one publish: run on the publisher's threads, or inline when there is no
    parallelism to gain (one worker, or a single task so far and nothing else submitted).

    The threads are shared by the publishes of one publisher, in submission order: a task waits
    only on tasks of its own publish submitted before it, so none waits on one still queued."""

    def __init__(self, max_workers: int, pool: Callable[[], ThreadPoolExecutor]) -> None:
        self.max_workers = max_workers
        self._get_pool = pool
        self._pending: list[Callable[[], None]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._pool is not None:
                self._futures.append(self._pool.submit(task))
                return
            self._pending.append(task)
            if self.max_workers > 1 and len(self._pending) > 1:  # in order: the first submitted starts first
                self._pool = self._get_pool()
                queued, self._pending = self._pending, []
                self._futures.extend(self._pool.submit(t) for t in queued)

    def wait(self) -> None:
        """Run or wait for every task submitted so far, and for those they submit in turn."""
        while True:
            with self._lock:
                inline, self._pending = self._pending, []
                futures, self._futures = self._futures, []
            if not inline and not futures:
                return
            for task in inline:
                task()
            for future in futures:
                future.result()

    def __enter__(self) -> _Tasks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wait()


class _Links:
    """The combined links of one publish (≤ 3 profiles each), fetched as early as possible.

    The profiles are split up front, in order, into chunks of up to 3 distinct link keys (a batch
    by its timestamp, a reference on its own). When every profile of a chunk has landed in one
    session, its link is asked for at once (``tasks``), while the other PUTs still run. At the end
    the chunks are made again from what actually landed, exactly as without the head start; a
    chunk asked for early is taken as it is, any other is asked for then.
    """

    def __init__(self, publisher: Publisher, results: list[PublishedProfile], tasks: _Tasks | None) -> None:
        self._publisher = publisher
        self._results = results
        self._tasks = tasks
        self._lock = threading.Lock()
        self._early: dict[tuple[str, tuple[int | str, ...]], list[str | None]] = {}
        identities = [(r.kind, r.dataset_timestamp if r.kind == "batch" else i) for i, r in enumerate(results)]
        distinct = list(dict.fromkeys(identities))
        chunk_of_identity = {identity: n // MAX_PROFILES_PER_LINK for n, identity in enumerate(distinct)}
        self._chunk_of = [chunk_of_identity[identity] for identity in identities]
        self._members: dict[int, list[int]] = {}
        for index, chunk in enumerate(self._chunk_of):
            self._members.setdefault(chunk, []).append(index)
        self._waiting = {chunk: len(members) for chunk, members in self._members.items()}

    def landed(self, index: int) -> None:
        """Profile ``index`` is done (landed or not); ask for its chunk's link if the chunk is complete."""
        if self._tasks is None:
            return
        with self._lock:
            chunk = self._chunk_of[index]
            self._waiting[chunk] -= 1
            if self._waiting[chunk]:
                return
            profiles = [self._results[i] for i in self._members[chunk]]
            sessions = {p.session_id for p in profiles}
            if not all(p.ok for p in profiles) or len(sessions) != 1 or None in sessions:
                return
            session_id = profiles[0].session_id or ""
            keys = list(dict.fromkeys(p.link_key for p in profiles))
            answer: list[str | None] = []
            self._early[(session_id, tuple(keys))] = answer

        def fetch() -> None:
            answer.append(self._publisher._fetch_link(session_id, keys, profiles))

        self._tasks.submit(fetch)

    def add_to(self, publish_result: PublishResult) -> None:
        """Set ``publish_result.observatory_urls``; fill in missing per-profile links."""
        landed = publish_result.landed
        if len(landed) == 1 and landed[0].observatory_url:
            publish_result.observatory_urls = [landed[0].observatory_url]
            return
        by_session: dict[str, list[PublishedProfile]] = {}
        for profile in landed:
            by_session.setdefault(profile.session_id or "", []).append(profile)
        chunks: list[tuple[str, list[int | str], list[PublishedProfile]]] = []
        for session_id, profiles in by_session.items():
            keys = list(dict.fromkeys(p.link_key for p in profiles))
            for start in range(0, len(keys), MAX_PROFILES_PER_LINK):
                chunks.append((session_id, keys[start : start + MAX_PROFILES_PER_LINK], profiles))
        links: list[str | None] = [None] * len(chunks)

        def fetch(n: int, session_id: str, keys: list[int | str], profiles: list[PublishedProfile]) -> None:
            links[n] = self._publisher._fetch_link(session_id, keys, profiles)

        with _Tasks(self._publisher.settings.max_workers, self._publisher._threads) as late:
            for n, (session_id, keys, profiles) in enumerate(chunks):
                early = self._early.get((session_id, tuple(keys)))
                if early:
                    links[n] = early[0]
                else:
                    late.submit(functools.partial(fetch, n, session_id, keys, profiles))
        publish_result.observatory_urls = [link for link in links if link]


def _warn_duplicate(result: PublishedProfile) -> None:
    if result.duplicate_of:
        logger.warning(
            "songbird: %s has the same bytes as upload %s already stored for this session, timestamp and segment; "
            "the server kept one copy and ignored this upload.",
            result.label,
            result.duplicate_of,
        )


# -- one publisher per process and settings ----------------------------------------------------

_SHARED: dict[Settings, Publisher] = {}
_SHARED_PID = os.getpid()
_SHARED_LOCK = threading.Lock()
#: Distinct settings kept at once; the oldest are dropped (and closed when no longer used).
MAX_SHARED_PUBLISHERS = 32


def shared_publisher(settings: Settings) -> Publisher:
    """The publisher of this process for ``settings``: one connection pool and stored session for all writers.

    Safe across threads (the client's pool and the session are thread-safe) and forks (a child
    process notices the new pid and builds its own, never reusing the parent's sockets).
    """
    global _SHARED_PID, _SHARED_LOCK
    if os.getpid() != _SHARED_PID:  # forked: the parent's pools and locks are not ours
        _SHARED_LOCK = threading.Lock()
        _SHARED.clear()
        _SHARED_PID = os.getpid()
    with _SHARED_LOCK:
        publisher = _SHARED.get(settings)
        if publisher is None:
            while len(_SHARED) >= MAX_SHARED_PUBLISHERS:
                _SHARED.pop(next(iter(_SHARED)))
            publisher = _SHARED[settings] = Publisher(settings)
        return publisher


def _check_option_names(options: Mapping[str, Any], *also: str) -> None:
    """An unknown option's error lists every valid name (the call's own too) and suggests the closest."""
    valid = sorted({*option_names(), *also})
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(unknown_option_message(unknown, valid))


def _raise_if_failed(result: PublishResult) -> PublishResult:
    if not result.ok:
        raise PublishError(result.summary(), result)
    return result


def publish(
    profile: Profileish | str | Path,
    *,
    reference_profile_name: str | None = None,
    dataset_timestamp: Any = None,
    **options: Any,
) -> PublishResult:
    """Publish one profile (or every segment of a result set); raise `PublishError` if any failed.

    ``reference_profile_name`` publishes it as a named reference profile. ``options`` are the
    writer's: endpoint, session_id, api_key, timeout, max_retries, max_workers, ...
    """
    _check_option_names(options, "reference_profile_name", "dataset_timestamp")
    settings = resolve_settings(options)
    items = items_from(profile, dataset_timestamp=dataset_timestamp, reference_profile_name=reference_profile_name)
    return _raise_if_failed(shared_publisher(settings).publish(items))


def publish_references(
    references: Mapping[str, Profileish | str | Path] | Iterable[tuple[str, Profileish | str | Path]],
    **options: Any,
) -> PublishResult:
    """Publish many named reference profiles in one batch call, with parallel PUTs.

    >>> publish_references({"train": why.log(train_df), "test": why.log(test_df)})  # doctest: +SKIP

    Raises `PublishError` (with ``.result``) if any of them did not land.
    """
    pairs = list(references.items()) if isinstance(references, Mapping) else list(references)
    if not pairs:
        raise PublishError("publish_references got no references: pass a dict of {name: profile}.")
    settings = resolve_settings(options)
    items = reference_items(pairs)
    return _raise_if_failed(shared_publisher(settings).publish(items))


# -- comparison links --------------------------------------------------------------------------


def comparison_links(
    batches: PublishResult | Sequence[PublishedProfile] | Sequence[int],
    reference: str,
    **options: Any,
) -> list[str]:
    """Observatory links comparing ``batches`` with the reference profile named ``reference``.

    ``batches`` is a `PublishResult` (its landed batch profiles), its profiles, or dataset
    timestamps (epoch ms) of batches in the stored session. The reference must have been
    published into the same session under that name. Each link shows the reference and up to 2
    batches (3 profiles per link, the observatory's limit).
    """
    check_alias(reference)
    settings = resolve_settings({k: v for k, v in options.items() if v is not None})
    session_id: str | None = None
    stamps: list[int] = []
    reference_id: str | None = None
    if isinstance(batches, PublishResult):
        profiles: Sequence[Any] = batches.landed
    else:
        profiles = list(batches)
    for item in profiles:
        if isinstance(item, PublishedProfile):
            if item.kind == "reference":
                if item.alias == reference and item.profile_id:
                    reference_id = item.profile_id
                continue
            stamps.append(item.dataset_timestamp)
            session_id = session_id or item.session_id
        elif isinstance(item, int) and not isinstance(item, bool):
            stamps.append(item)
        else:
            raise ConfigError(f"comparison_links takes published profiles or epoch-ms timestamps, not {item!r}.")
    publisher = shared_publisher(settings)
    store = publisher.session.store
    endpoint = publisher.client.endpoint
    if isinstance(publisher.session, DatasetTarget):
        session_id = publisher.session.session_id()
    session_id = session_id or settings.session_id or store.get(endpoint)
    if session_id is None:
        raise ConfigError(f"There is no stored guest session for {endpoint}: publish the batches first.")
    reference_id = reference_id or store.reference_id(endpoint, session_id, reference)
    if reference_id is None:
        raise ConfigError(
            f"No reference named {reference!r} was published into session {session_id} from this machine: "
            f"publish it first, e.g. publish(why.log(df), reference_profile_name={reference!r})."
        )
    stamps = list(dict.fromkeys(stamps))
    if not stamps:
        raise ConfigError("comparison_links got no batch profiles to compare with the reference.")
    per_link = MAX_PROFILES_PER_LINK - 1
    links = []
    for start in range(0, len(stamps), per_link):
        answer = request_link(publisher.session, session_id, stamps[start : start + per_link], [reference_id])
        links.append(answer.observatory_url)
    return links
