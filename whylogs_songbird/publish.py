"""Publishing: upload slots, parallel PUTs, links. The layer the writer and the CLI stand on.

One publish: ask songbird for upload slots (one call per batch profile; one call for all
references), PUT each profile's bytes to its slot in parallel (bounded by ``max_workers``),
check every PUT, then ask for observatory links, chunked by the 3-profile limit.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from whylogs_songbird.client import SongbirdClient, request_model
from whylogs_songbird.config import Settings, make_client, resolve_settings
from whylogs_songbird.errors import PublishError, SongbirdError
from whylogs_songbird.models import MAX_PROFILES_PER_LINK, LogReferenceRequest, SegmentTag
from whylogs_songbird.outbox import Outbox, is_retryable
from whylogs_songbird.profiles import Profileish, ProfileItem, items_from, reference_items
from whylogs_songbird.session import GuestSession, SessionStore

logger = logging.getLogger(__name__)

Kind = Literal["batch", "reference"]


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

    @property
    def label(self) -> str:
        """A short human name: the alias for a reference, the timestamp (and segment) for a batch."""
        name = (self.alias or "reference") if self.kind == "reference" else f"batch {self.dataset_timestamp}"
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

    @property
    def ok(self) -> bool:
        return bool(self.profiles) and all(p.ok for p in self.profiles)

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

    def summary(self) -> str:
        """One line: how many landed, how many failed, and the first failure."""
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
    """Publishes upload items to one songbird endpoint, in one guest session.

    Holds one `SongbirdClient` (and so one connection pool) and one `GuestSession`; reuse it
    for many publishes. ``on_profile`` is called (from worker threads) as each profile is done,
    landed or not: a progress bar's hook.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: SongbirdClient | None = None,
        session: GuestSession | None = None,
        on_profile: ProfileHook | None = None,
    ) -> None:
        self.settings = settings or resolve_settings()
        self.client = client or make_client(self.settings)
        self.session = session or GuestSession(
            self.client, SessionStore.for_directory(self.settings.config_dir), self.settings.session_id
        )
        self.on_profile = on_profile
        self.outbox = Outbox(self.settings.outbox_path) if self.settings.outbox else None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(self, items: Sequence[ProfileItem]) -> PublishResult:
        """Upload every item; never raises for a profile that failed: see ``PublishResult.failed``."""
        results = [
            PublishedProfile(
                kind="reference" if item.is_reference else "batch",
                dataset_timestamp=item.dataset_timestamp,
                alias=item.alias,
                segment_tags=item.segment_tags,
            )
            for item in items
        ]
        tasks: list[Callable[[], None]] = []
        references = [i for i, item in enumerate(items) if item.is_reference]
        if references:
            tasks.extend(self._reference_tasks(items, results, references))
        for index, item in enumerate(items):
            if not item.is_reference:
                tasks.append(self._batch_task(item, results[index]))
        self._run(tasks)
        for item, result in zip(items, results):
            if result.ok:
                continue
            exc = result.exception or RuntimeError(result.error or "failed")
            if self.outbox is not None and is_retryable(exc):
                self._keep(item, result)
        publish_result = PublishResult(endpoint=self.client.endpoint, profiles=results)
        self._add_links(publish_result)
        return publish_result

    # -- tasks --------------------------------------------------------------------------------

    def _run(self, tasks: list[Callable[[], None]]) -> None:
        if len(tasks) <= 1 or self.settings.max_workers == 1:
            for task in tasks:
                task()
            return
        with ThreadPoolExecutor(max_workers=min(self.settings.max_workers, len(tasks))) as pool:
            for future in [pool.submit(task) for task in tasks]:
                future.result()

    def _batch_task(self, item: ProfileItem, result: PublishedProfile) -> Callable[[], None]:
        def task() -> None:
            try:
                data = item.serialize()

                def slot(session_id: str) -> tuple[str, Any]:
                    return session_id, self.client.create_dataset_profile_upload(
                        session_id, item.dataset_timestamp, list(item.segment_tags)
                    )

                session_id, response = self.session.call(slot)
                result.session_id, result.profile_id, result.upload_url = session_id, response.id, response.upload_url
                self.client.upload_profile(response.upload_url, data)
                result.observatory_url, result.size, result.ok = response.observatory_url, len(data), True
            except Exception as exc:
                self._fail(result, exc)
            self._done(result)

        return task

    def _reference_tasks(
        self, items: Sequence[ProfileItem], results: list[PublishedProfile], indexes: list[int]
    ) -> list[Callable[[], None]]:
        try:
            requests_ = [
                request_model(LogReferenceRequest, alias=items[i].alias, dataset_timestamp=items[i].dataset_timestamp)
                for i in indexes
            ]
            if len(indexes) == 1:
                only = items[indexes[0]]
                session_id, single = self.session.call(
                    lambda sid: (
                        sid,
                        self.client.create_reference_profile_upload(sid, only.alias, only.dataset_timestamp),
                    )
                )
                slots = [single]
            else:
                session_id, batch = self.session.call(
                    lambda sid: (sid, self.client.batch_create_reference_profile_upload(sid, requests_))
                )
                slots = list(batch.references)
        except Exception as exc:
            for i in indexes:
                self._fail(results[i], exc)
                self._done(results[i])
            return []

        def put(item: ProfileItem, result: PublishedProfile, slot: Any) -> Callable[[], None]:
            def task() -> None:
                try:
                    data = item.serialize()
                    self.client.upload_profile(slot.upload_url, data)
                    result.observatory_url, result.size, result.ok = slot.observatory_url, len(data), True
                except Exception as exc:
                    self._fail(result, exc)
                self._done(result)

            return task

        tasks = []
        for i, slot in zip(indexes, slots):
            results[i].session_id, results[i].profile_id, results[i].upload_url = session_id, slot.id, slot.upload_url
            tasks.append(put(items[i], results[i], slot))
        return tasks

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
        logger.warning("songbird: %s kept in the outbox as %s", result.label, entry.id)

    def _done(self, result: PublishedProfile) -> None:
        if self.on_profile is not None:
            self.on_profile(result)

    @staticmethod
    def _fail(result: PublishedProfile, exc: Exception) -> None:
        result.ok = False
        result.exception = exc
        result.error = str(exc) if isinstance(exc, SongbirdError) else f"{type(exc).__name__}: {exc}"
        logger.error("songbird: %s was not published: %s", result.label, result.error, exc_info=exc)

    # -- links --------------------------------------------------------------------------------

    def _add_links(self, publish_result: PublishResult) -> None:
        """Combined links, ≤ 3 profiles each (fetched in parallel); fill in missing per-profile links."""
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

        def fetch(index: int) -> Callable[[], None]:
            def task() -> None:
                session_id, chunk, profiles = chunks[index]
                stamps = [k for k in chunk if isinstance(k, int)]
                ids = [k for k in chunk if isinstance(k, str)]
                try:
                    answer = self.client.get_session_profile_observatory_link(session_id, stamps, ids)
                except SongbirdError as exc:
                    logger.warning("songbird: could not get an observatory link for %s: %s", chunk, exc)
                    return
                links[index] = answer.observatory_url
                individual = dict(zip([*stamps, *ids], answer.individual_observatory_urls))
                for profile in profiles:
                    if not profile.observatory_url and profile.link_key in individual:
                        profile.observatory_url = individual[profile.link_key]

            return task

        self._run([fetch(i) for i in range(len(chunks))])
        publish_result.observatory_urls = [link for link in links if link]


def _raise_if_failed(result: PublishResult) -> PublishResult:
    if not result.ok:
        raise PublishError(result.summary(), result)
    return result


def publish(
    profile: Profileish | str | Path,
    *,
    reference_name: str | None = None,
    dataset_timestamp: Any = None,
    **options: Any,
) -> PublishResult:
    """Publish one profile (or every segment of a result set); raise `PublishError` if any failed.

    ``options`` are the writer's: endpoint, session_id, api_key, timeout, max_retries, max_workers, ...
    """
    settings = resolve_settings(options)
    items = items_from(profile, dataset_timestamp=dataset_timestamp, reference_name=reference_name)
    with Publisher(settings) as publisher:
        return _raise_if_failed(publisher.publish(items))


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
    with Publisher(settings) as publisher:
        return _raise_if_failed(publisher.publish(items))
