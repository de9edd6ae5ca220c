"""Publishing: upload slots, parallel PUTs, links. The layer the writer and the CLI stand on.

This module is the orchestration; what it produces is :mod:`whylogs_songbird.results`
(`PublishResult`, `PublishedProfile`), and the observatory links it asks for are built in
:mod:`whylogs_songbird.links`. Both stay importable from here.

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
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from whylogs_songbird import results as publish_results
from whylogs_songbird.client import SongbirdClient, request_model
from whylogs_songbird.config import Settings, option_names, resolve_settings, unknown_option_message
from whylogs_songbird.connect import make_client
from whylogs_songbird.errors import ConfigError, PublishError, SongbirdError, is_retryable
from whylogs_songbird.links import CombinedLinks, batches_to_compare, comparison_links_in, fetch_link
from whylogs_songbird.models import LogReferenceRequest
from whylogs_songbird.outbox import Outbox
from whylogs_songbird.outbox import flush_outbox as flush_outbox  # its import path before the outbox package
from whylogs_songbird.profiles import Profileish, ProfileItem, check_alias, items_from, reference_items
from whylogs_songbird.results import PublishedProfile as PublishedProfile  # documented and imported from here
from whylogs_songbird.results import PublishResult as PublishResult
from whylogs_songbird.session import DatasetTarget, Target, open_target, request_slot
from whylogs_songbird.session import GuestSession as GuestSession  # what a Publisher(session=...) takes
from whylogs_songbird.session import SessionStore as SessionStore

logger = logging.getLogger(__name__)


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
            links = CombinedLinks(results, self._fetch_link, tasks.submit if len(items) > 1 else None)
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
            links.add_to(publish_result, self._run_all)
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
        links: CombinedLinks,
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

    def _fetch_link(self, session_id: str, keys: list[int | str], profiles: Sequence[PublishedProfile]) -> str | None:
        return fetch_link(self.session, session_id, keys, profiles)

    def _run_all(self, tasks: list[Callable[[], None]]) -> None:
        """Run ``tasks`` on this publisher's threads (inline when that gains nothing); return when all are done."""
        with _Tasks(self.settings.max_workers, self._threads) as running:
            for task in tasks:
                running.submit(task)

    @staticmethod
    def _fail(result: PublishedProfile, exc: Exception) -> None:
        result.ok = False
        result.exception = exc
        result.error = str(exc) if isinstance(exc, SongbirdError) else f"{type(exc).__name__}: {exc}"
        # The caller reports the failure in one line; the traceback is for DEBUG only.
        logger.debug("songbird: %s was not published: %s", result.label, result.error, exc_info=exc)


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
    session_id, stamps, reference_id = batches_to_compare(batches, reference)
    publisher = shared_publisher(settings)
    return comparison_links_in(
        publisher.session,
        stamps,
        reference,
        session_id=session_id,
        pinned_session_id=settings.session_id,
        reference_id=reference_id,
    )


publish_results.comparison_links = comparison_links  # what `PublishResult.compare_with` asks
