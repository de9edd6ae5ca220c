"""The timeline routes, a thin layer over :mod:`whylogs_songbird.server.timeline_service`:

- ``GET /api/v1/sessions/{session_id}/timeline?granularity=day&reference=ID|ALIAS&segment=k=v,...``
  ``&start=…&end=…`` — the timeline document as JSON (see ``docs/timeline.md``); errors answer ``{"message": ...}``;
- ``GET /sessions/{session_id}/timeline`` (same parameters) — the page: a heatmap of drift by column
  and bucket, whose cells open the comparison of the reference and that bucket, and series charts
  drawn by ``static/timeline.js`` from the JSON above.

Both answer a ``Server-Timing`` header with the time spent building them.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment
from whylogs.core import DatasetProfileView

from whylogs_songbird.column_stats import Profile
from whylogs_songbird.models import TIMELINE_PATH
from whylogs_songbird.monitors import MonitorsFile
from whylogs_songbird.server.common import base_url, segment_label, session_gone
from whylogs_songbird.server.datasets import container_target
from whylogs_songbird.server.digest import DigestError, columns_of, view_from_digest
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.observatory.base import PageError
from whylogs_songbird.server.observatory.cache import LruCache, ProfileCache
from whylogs_songbird.server.observatory.container import PageContainer
from whylogs_songbird.server.observatory.page import make_environment
from whylogs_songbird.server.page_access import AccessRefused, dataset_access, refused_answer
from whylogs_songbird.server.rollups import bump_version, read_version, store_rollups
from whylogs_songbird.server.routes.deps import add_routes
from whylogs_songbird.server.sandbox import Sandbox, SandboxError
from whylogs_songbird.server.store import Store, UploadRecord, is_valid_id
from whylogs_songbird.server.summaries import SummaryError
from whylogs_songbird.server.timeline_service import (
    ArtefactCache,
    StoredProfile,
    TimelineQuery,
    TimelineRequestError,
    TimelineService,
)
from whylogs_songbird.timeline import DAY_MS, GRANULARITIES, HOUR_MS, civil_date, severity

logger = logging.getLogger("whylogs_songbird.server.timeline")

#: Memory for rendered timeline pages (a page larger than this is rendered each time, not kept).
PAGE_CACHE_BYTES = 32 * 1024 * 1024
#: Heatmap cell classes: DRIFT, POSSIBLE_DRIFT, NO_DRIFT, nothing to compare, column absent.
_CELL = {"DRIFT": "hD", "POSSIBLE_DRIFT": "hP", "NO_DRIFT": "hN"}


def page_cache(max_bytes: int | None = None) -> LruCache:
    """A cache of rendered timeline pages bounded by their bytes in memory (:data:`PAGE_CACHE_BYTES`)."""
    return LruCache(max_bytes=PAGE_CACHE_BYTES if max_bytes is None else max_bytes, size_of=sys.getsizeof)


def _stored(upload: UploadRecord) -> StoredProfile:
    return StoredProfile(
        id=upload.id,
        kind=upload.kind,
        dataset_timestamp=upload.dataset_timestamp,
        alias=upload.alias,
        segment=segment_label(upload.segment_tags),
        identity=f"{upload.id}:{upload.sha256}:{upload.size}",
        stored_at=upload.stored_at or 0,
        pending=upload.ingest_state == "pending",
        record=upload,
    )


class StoreArtefacts:
    """The store's derived-artefact cache (``MetadataStore.get_derived``/``put_derived``) as an
    `ArtefactCache`: every server process, and the next start, sees what one computed."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, session_id: str, key: str) -> bytes | None:
        return self.store.get_derived(session_id, key)

    def put(self, session_id: str, key: str, value: bytes) -> None:
        self.store.put_derived(session_id, key, value)

    def drop(self, session_id: str, prefix: str, keep: str | None = None) -> None:
        self.store.drop_derived(session_id, prefix, keep)


def timeline_query(
    granularity: str | None = None,
    reference: str | None = None,
    segment: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> TimelineQuery:
    """A timeline view's query parameters (the same for a session's and a dataset's JSON and page);
    an empty parameter is no parameter."""
    return TimelineQuery(
        granularity=granularity or None,
        reference=reference or None,
        segment=segment or None,
        start=start or None,
        end=end or None,
    )


TimelineQueryDep = Annotated[TimelineQuery, Depends(timeline_query)]


def make_service(
    store: Store,
    *,
    profiles: ProfileCache | None = None,
    cache: ArtefactCache | None = None,
    monitors: MonitorsFile | None = None,
    sandbox: Sandbox | None = None,
) -> TimelineService:
    """The timeline service over ``store``: views through the observatory's view cache when given;
    without it, from a digest made in ``sandbox`` (uploaded bytes are never deserialized here)."""
    own_sandbox = sandbox if sandbox is not None else Sandbox()

    def list_profiles(session_id: str) -> list[StoredProfile]:
        return [_stored(u) for u in store.list_profiles(session_id) if not u.invalid]

    class Outline:
        """The store's reads of a session's batches by dataset timestamp (see `TimelineOutline`)."""

        def batches_between(self, session_id: str, start: int | None, end: int | None) -> list[StoredProfile]:
            return [_stored(u) for u in store.batch_profiles_between(session_id, start, end) if not u.invalid]

        def references(self, session_id: str) -> list[StoredProfile]:
            return [_stored(u) for u in store.list_profiles(session_id, "reference") if not u.invalid]

        def segments(self, session_id: str) -> list[str]:
            return [segment_label(tags) for tags in store.batch_segments(session_id)]

        def span(self, session_id: str) -> tuple[int, int] | None:
            return store.batch_timestamp_span(session_id)

        def bucket_counts(self, session_id: str, size: int, offset: int) -> tuple[int, int]:
            return store.batch_bucket_counts(session_id, size, offset)

        def day_marks(self, session_id: str) -> dict[int, tuple[int, ...]]:
            return store.batch_day_marks(session_id)

        def timestamps(self, session_id: str) -> list[tuple[int, str, bool]]:
            labels: dict[tuple[tuple[str, str], ...], str] = {}  # a session has few segments, and many rows
            found = []
            for timestamp, tags, pending in store.batch_timestamps(session_id):
                label = labels.get(tags)
                if label is None:
                    label = labels[tags] = segment_label(tags)
                found.append((timestamp, label, pending))
            return found

    def load(profile: StoredProfile) -> DatasetProfileView:
        upload = profile.record
        if profiles is not None:
            return profiles.upload_view(upload)
        try:
            return view_from_digest(own_sandbox.digest(store.read_profile_bytes(upload)))
        except (SandboxError, DigestError) as exc:
            raise SummaryError(str(exc)) from None

    def columns(profile: StoredProfile) -> Profile:
        if profiles is None:
            return load(profile)
        try:  # its columns' sketches straight from the stored digest: no whylogs view is built
            return columns_of(profiles.upload_digest(profile.record))
        except DigestError as exc:
            raise SummaryError(str(exc)) from None

    def state(profile: StoredProfile, patient: bool) -> str:
        return profiles.state(profile.record, patient=patient) if profiles is not None else "ready"

    def column_names(profile: StoredProfile) -> list[str]:
        if profiles is not None:  # from the stored digest: no column is rebuilt
            return list(profiles.upload_digest(profile.record))
        return list(load(profile).get_columns())

    @functools.lru_cache(maxsize=4096)  # what a container holds never changes
    def target_of(session_id: str) -> tuple[str, str] | None:
        return container_target(store, session_id)

    artefacts: ArtefactCache = cache if cache is not None else StoreArtefacts(store)
    return TimelineService(
        list_profiles,
        load,
        artefacts,
        monitors,
        column_names=column_names,
        columns=columns,
        state=state,
        # the version and the rollups live in the store whatever the cache: every host and the
        # ingest worker see and change them; a landed upload is no second write when the store
        # replaced the version in the transaction that recorded it
        version=functools.partial(read_version, store),
        bump=None if getattr(store, "records_timeline_version", False) else functools.partial(bump_version, store),
        rollups=store_rollups(store),
        target_of=target_of,
        refresh=store.nudge_landed,
        outline=Outline(),  # presigned PUTs: the ingest worker looks soon, the view never does
    )


def _label(start: int, granularity: str) -> tuple[str, str]:
    """(short label, full title) of a bucket starting at ``start``: any stored timestamp has one
    (integer calendar arithmetic, as for the buckets themselves)."""
    year, month, day = civil_date(start // DAY_MS)
    hour = start % DAY_MS // HOUR_MS
    date = f"{year:04d}-{month:02d}-{day:02d}"
    if granularity == "hour":
        return f"{month:02d}-{day:02d} {hour:02d}h", f"{date} {hour:02d}:00 UTC"
    if granularity == "day":
        return f"{month:02d}-{day:02d}", f"{date} (UTC)"
    if granularity == "week":
        try:
            iso_year, week, _ = dt.date(year, month, day).isocalendar()
        except ValueError:  # a year outside 1..9999: no ISO week number
            return f"{month:02d}-{day:02d}", f"week from {date} (UTC)"
        return f"W{week:02d} {month:02d}-{day:02d}", f"week {iso_year}-W{week:02d} from {date} (UTC)"
    return f"{year:04d}-{month:02d}", f"{calendar.month_name[month]} {year} (UTC)"


def _format_p(value: float | None) -> str:
    return "" if value is None else f" p={value:.3g}"


def page_view(document: dict[str, Any], base: str, container: PageContainer | None = None) -> dict[str, Any]:
    """What the page template shows of a timeline document: bucket headers with their comparison
    links (to ``container``'s profiles page; by default the document's session's), and one heatmap
    row per column (most drifted first) of (cell class, title) pairs."""
    where = container if container is not None else PageContainer.session(document["session_id"])
    granularity = document["granularity"]
    reference = document.get("reference")
    segment = document.get("segment")
    buckets = []
    for bucket, stamps in zip(document["buckets"], document.get("batch_timestamps") or []):
        label, title = _label(bucket["start"], granularity)
        # a comparison page shows at most 3 profiles: the reference and up to 2 batch timestamps
        room = 2 if reference else 3
        chosen = stamps if len(stamps) <= room else stamps[-1:]
        profiles: list[str | int] = ([reference["id"]] if reference else []) + list(chosen)
        link = where.link(base, profiles, [segment] if segment else [])
        if len(chosen) < len(stamps):
            title += f": {bucket['profiles']} profiles, the comparison opens the last one"
        buckets.append({"label": label, "title": title, "link": link, **bucket})
    rows = []
    for name in document["column_order"]:
        series = document["columns"][name]
        cells = []
        for index, bucket in enumerate(buckets):
            category = series["drift_category"][index]
            if series["count"][index] is None:
                cells.append(("hA", f"{name} · {bucket['label']}: absent"))
            elif category is None:
                cells.append(("hX", f"{name} · {bucket['label']}: nothing to compare"))
            else:
                p_value = _format_p(series["drift_p_value"][index])
                cells.append((_CELL.get(category, "hX"), f"{name} · {bucket['label']}: {category}{p_value}"))
        worst = series.get("worst_drift")
        rows.append({"name": name, "worst": worst or "", "cells": cells, "rank": severity(worst)})
    alerts = []
    for alert in document.get("alerts") or []:
        label, _ = _label(alert["start"], granularity)
        alerts.append({**alert, "bucket": label})
    return {
        "granularity": granularity,
        "buckets": buckets,
        "rows": rows,
        "reference": reference,
        "references": document.get("references") or [],
        "segment": segment,
        "segments": document.get("segments") or [],
        "profiles": sum(b["profiles"] for b in document["buckets"]),
        "alerts": alerts,
        "pending": len(document.get("pending") or []),
    }


def container_document(service: TimelineService, container: PageContainer, query: TimelineQuery) -> bytes:
    """The timeline document of a session or a dataset, as bytes; a dataset's names it ``ORG/DATASET``
    (its container id is no name for anything outside). A person asked: the view is kept up to date."""
    data = service.document_bytes(container.id, query, watched=True)
    if not container.is_dataset:
        return data
    document = json.loads(data)
    document["session_id"] = container.name
    return json.dumps(document, separators=(",", ":")).encode()


def _sentence(message: str) -> str:
    """A service's message as an answer says it: capitalised, ending with a full stop."""
    return message[:1].upper() + message[1:] + "."


def server_timing(name: str, started: float, now: float | None = None) -> str:
    """A ``Server-Timing`` value: ``name`` took the milliseconds from ``started`` to ``now`` (both
    ``time.perf_counter()`` readings; ``now`` by default the current one)."""
    elapsed = ((time.perf_counter() if now is None else now) - started) * 1000
    return f"{name};dur={elapsed:.1f}"


def check_session(store: Store, session_id: str) -> None:
    """Refuse (`TimelineRequestError`) an id that is no session's (400) or a session guests cannot see (404)."""
    if not session_id.startswith("session-"):
        raise TimelineRequestError(400, f"{session_id[:80]!r} is not a session id: session ids look like session-…")
    # a session-… id of another shape, an unknown one and a claimed one read alike (see Store.guest_session)
    if not is_valid_id(session_id, "session") or store.guest_session(session_id) is None:
        raise TimelineRequestError(404, f"{session_gone(session_id)}; a claimed session has no timeline here")


def timeline_json_bytes(
    service: TimelineService,
    container: PageContainer,
    query: TimelineQuery,
    check: Callable[[str], None] | None = None,
) -> bytes:
    """:func:`container_document`, its errors answered as `ApiError` (JSON ``{"message"}``); ``check``
    refuses a container first (a session guests cannot see)."""
    try:
        if check is not None:
            check(container.id)
        return container_document(service, container, query)
    except TimelineRequestError as exc:
        message = exc.message.replace(f"session {container.id}", f"{container.kind} {container.name}")
        raise ApiError(exc.status, _sentence(message)) from None
    except SummaryError as exc:
        raise ApiError(422, f"A stored profile of {container.kind} {container.name} cannot be read: {exc}.") from None


@dataclass(frozen=True)
class TimelineSite:
    """What the timeline routes answer from: the store, the service, the page templates, the cache of
    rendered pages and the configured public URL."""

    store: Store
    service: TimelineService
    environment: Environment
    pages: LruCache
    public_url: str | None = None


def session_json(site: TimelineSite, session_id: str, query: TimelineQuery) -> Response:
    """``GET /api/v1/sessions/{session_id}/timeline``: the document, with a ``Server-Timing`` header."""
    started, cpu_started = time.perf_counter(), time.thread_time()
    check = functools.partial(check_session, site.store)
    data = timeline_json_bytes(site.service, PageContainer.session(session_id), query, check)
    cpu = f"timeline-cpu;dur={(time.thread_time() - cpu_started) * 1000:.1f}"  # what the machine's load does not change
    return Response(
        data, media_type="application/json", headers={"Server-Timing": f"{server_timing('timeline', started)}, {cpu}"}
    )


def api_parameters(query: TimelineQuery) -> list[tuple[str, str]]:
    """The query's given parameters, in the order the page's link to its JSON carries them."""
    given = (
        ("granularity", query.granularity),
        ("reference", query.reference),
        ("segment", query.segment),
        ("start", query.start),
        ("end", query.end),
    )
    return [(k, v) for k, v in given if v]


def page_error(exc: TimelineRequestError | SummaryError, container: PageContainer) -> PageError:
    """The error page of a request the service refused, or of a stored profile it cannot read."""
    if isinstance(exc, TimelineRequestError):
        return PageError(exc.status, "Timeline unavailable", _sentence(exc.message))
    return PageError(422, "Profile cannot be read", f"A stored profile of this {container.kind} is unreadable: {exc}.")


def error_links(store: Store, container: PageContainer) -> dict[str, Any]:
    """Where an error page leads back to: a dataset's overview, or a session's pages while guests may see it."""
    if container.is_dataset:
        return {"home_url": container.home_path, "home_label": container.name}
    return {"session_id": container.id if store.guest_session(container.id) is not None else None}


def render_page(
    site: TimelineSite,
    container: PageContainer,
    request: Request,
    query: TimelineQuery,
    check: Callable[[str], None] | None = None,
) -> HTMLResponse:
    """The timeline page of a session or dataset (``check``: refuses a session guests cannot see),
    kept in ``site.pages`` by the document it shows; an error page when the service refuses."""
    started = time.perf_counter()
    try:
        if check is not None:
            check(container.id)
        data = container_document(site.service, container, query)
        api_url = container.timeline_api(api_parameters(query))
        base = base_url(site.public_url, request)

        def render() -> str:
            view = page_view(json.loads(data), base, container)
            return site.environment.get_template("timeline.html").render(
                session_id=container.name,
                container=container,
                view=view,
                granularities=GRANULARITIES,
                api_url=api_url,
                start=query.start or "",
                end=query.end or "",
            )

        html = site.pages.get_or_compute((hashlib.sha256(data).digest(), base, api_url), render)
        response = HTMLResponse(html)
    except (TimelineRequestError, SummaryError) as exc:
        error = page_error(exc, container)
        html = site.environment.get_template("error.html").render(
            title=error.title, message=error.message, status_code=error.status, **error_links(site.store, container)
        )
        response = HTMLResponse(html, status_code=error.status)
    response.headers["Server-Timing"] = server_timing("render", started)
    return response


def session_page(site: TimelineSite, session_id: str, request: Request, query: TimelineQuery) -> HTMLResponse:
    """``GET /sessions/{session_id}/timeline``: the page of a session guests may see."""
    return render_page(
        site, PageContainer.session(session_id), request, query, functools.partial(check_session, site.store)
    )


# -- an organization's dataset: the same page, opened with a link's token, a login or a key --


def find_dataset(store: Store, org_id: str, dataset_id: str) -> PageContainer | None:
    """The container of an organization's dataset, or None when nothing was written to it."""
    record = store.find_dataset(org_id, dataset_id)
    return None if record is None else PageContainer.dataset(record.id, org_id, dataset_id)


def no_dataset(org_id: str, dataset_id: str) -> str:
    return (
        f"Dataset {dataset_id} of organization {org_id} has no profiles on this server (never written, or "
        "deleted); write one with whylogs' writer('whylabs') pointed here."
    )


def dataset_page(site: TimelineSite, org_id: str, dataset_id: str, request: Request, query: TimelineQuery) -> Response:
    """``GET /organizations/{org_id}/datasets/{dataset_id}/timeline``: the page, once a credential opens it."""
    try:
        access = dataset_access(request, org_id, dataset_id)
    except AccessRefused as refused:
        return refused_answer(request, refused, site.environment)
    container = find_dataset(site.store, org_id, dataset_id)
    if container is None:
        html = site.environment.get_template("error.html").render(
            title="Dataset not found", message=no_dataset(org_id, dataset_id), status_code=404
        )
        return access.remember(HTMLResponse(html, status_code=404), request)
    return access.remember(render_page(site, container, request, query), request)


def dataset_data(site: TimelineSite, org_id: str, dataset_id: str, request: Request, query: TimelineQuery) -> Response:
    """``GET /organizations/{org_id}/datasets/{dataset_id}/timeline/data``: the timeline JSON of a
    dataset, for its page (where the page's cookie reaches); 401 JSON without a credential."""
    try:
        access = dataset_access(request, org_id, dataset_id)
    except AccessRefused as refused:
        return refused_answer(request, refused, site.environment, json=True)
    container = find_dataset(site.store, org_id, dataset_id)
    if container is None:
        raise ApiError(404, no_dataset(org_id, dataset_id))
    response = Response(timeline_json_bytes(site.service, container, query), media_type="application/json")
    return access.remember(response, request)


def timeline_router(
    store: Store,
    service: TimelineService,
    *,
    public_url: str | None = None,
    env: Environment | None = None,
    pages: LruCache | None = None,
) -> APIRouter:
    """The routes; ``pages`` caches rendered pages by the document they show (by default a cache of
    :data:`PAGE_CACHE_BYTES`: bounded by bytes, as one page of long labels can take megabytes)."""
    router = APIRouter()
    site = TimelineSite(
        store,
        service,
        env if env is not None else make_environment(),
        pages if pages is not None else page_cache(),
        public_url,
    )

    @router.get(
        TIMELINE_PATH,
        summary="The timeline of a session: per-bucket series and drift of every column",
        tags=["timeline"],
    )
    def timeline_json(session_id: str, query: TimelineQueryDep) -> Response:
        return session_json(site, session_id, query)

    @router.get("/sessions/{session_id}/timeline", response_class=HTMLResponse, include_in_schema=False)
    def timeline_page(session_id: str, request: Request, query: TimelineQueryDep) -> HTMLResponse:
        return session_page(site, session_id, request, query)

    @router.get(
        "/organizations/{org_id}/datasets/{dataset_id}/timeline", response_class=HTMLResponse, include_in_schema=False
    )
    def dataset_timeline_page(org_id: str, dataset_id: str, request: Request, query: TimelineQueryDep) -> Response:
        return dataset_page(site, org_id, dataset_id, request, query)

    @router.get("/organizations/{org_id}/datasets/{dataset_id}/timeline/data", include_in_schema=False)
    def dataset_timeline_data(org_id: str, dataset_id: str, request: Request, query: TimelineQueryDep) -> Response:
        return dataset_data(site, org_id, dataset_id, request, query)

    return router


def mount_timeline(
    app: FastAPI,
    store: Store,
    *,
    public_url: str | None = None,
    monitors: MonitorsFile | None = None,
    cache: ArtefactCache | None = None,
) -> TimelineService:
    """Add the timeline routes to ``app``; the service is ``app.state.timeline``."""
    profiles: ProfileCache | None = getattr(app.state, "observatory_cache", None)
    service = make_service(store, profiles=profiles, cache=cache, monitors=monitors)

    app.state.timeline_pages = page_cache()
    add_routes(app.router, timeline_router(store, service, public_url=public_url, pages=app.state.timeline_pages))
    app.state.timeline = service
    return service


__all__ = ["PAGE_CACHE_BYTES", "make_service", "mount_timeline", "page_cache", "page_view", "timeline_router"]
