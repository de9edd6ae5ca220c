"""The observatory's routes (see the package docstring); pages are built in worker threads."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from whylogs.core import DatasetProfileView

from whylogs_songbird.column_stats import DriftScore
from whylogs_songbird.models import GUEST_MODEL_ID, MAX_PROFILES_PER_LINK
from whylogs_songbird.server.common import base_url, segment_label, session_gone
from whylogs_songbird.server.datasets import read_settings
from whylogs_songbird.server.observatory.base import MAX_COLUMN_FILTER, RECENT_SESSIONS, STATIC_DIR, PageError, shown
from whylogs_songbird.server.observatory.cache import ProfileCache, ProfilePendingError
from whylogs_songbird.server.observatory.container import PageContainer
from whylogs_songbird.server.observatory.listing import (
    MAX_ROWS,
    SHOWN_CHARS,
    SORT_LABELS,
    ProfileCounts,
    encode_cursor,
    read_params,
    shortened,
)
from whylogs_songbird.server.observatory.page import (
    ColumnWindow,
    PageModel,
    all_columns,
    build_page_model,
    make_environment,
)
from whylogs_songbird.server.observatory.selection import (
    Selection,
    check_selector,
    format_timestamp,
    parse_segments,
)
from whylogs_songbird.server.page_access import AccessRefused, dataset_access, login_router, refused_answer
from whylogs_songbird.server.routes.deps import add_routes
from whylogs_songbird.server.sandbox import Sandbox
from whylogs_songbird.server.store import Store, is_valid_id, parse_timestamp_selector
from whylogs_songbird.server.summaries import SummaryError
from whylogs_songbird.server.unexpected import RepeatedErrors

logger = logging.getLogger("whylogs_songbird.server.observatory")

_MAX_SELECTOR_SHOWN = 80
#: How soon a page of profiles still being summarised asks to be loaded again (``Retry-After``).
PENDING_RETRY_SECONDS = 2


def _plotly_js() -> Path | None:
    try:
        import plotly
    except ImportError:  # pragma: no cover - plotly is a dependency of the server extra
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def observatory_router(
    store: Store,
    *,
    public_url: str | None = None,
    cache: ProfileCache | None = None,
    list_sessions: bool = True,
) -> APIRouter:
    """The observatory pages over ``store``. ``public_url`` is the base URL shown in links and
    snippets (default: the request's own base URL). ``list_sessions`` False leaves the recent
    sessions off the landing page: a session id is the token that opens its profiles, so it is only
    listed when nobody but this machine can reach the server."""
    router = APIRouter(include_in_schema=False)
    env = make_environment()
    add_routes(router, login_router(env))  # the login that opens an organization's dataset pages
    failures = RepeatedErrors(logger)  # a page failing on every request logs one traceback
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)  # compiled at start, not by the first page (a cold profiles page paid ~100 ms)
    profiles_cache = cache if cache is not None else ProfileCache(store)
    plotly_js = _plotly_js()

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        template = env.get_template(name)
        return HTMLResponse(template.render(**context), status_code=status)

    def error_page(error: PageError) -> HTMLResponse:
        response = render(
            "error.html",
            status=error.status,
            title=error.title,
            message=error.message,
            status_code=error.status,
            session_id=error.session_id,
            home_url=error.home[0] if error.home else None,
            home_label=error.home[1] if error.home else None,
            retry_after=error.retry_after,
        )
        if error.retry_after:  # a page that is not ready yet (202): said, and reloaded by itself
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    def guarded(build: Callable[[], HTMLResponse], what: str) -> HTMLResponse:
        try:
            return build()
        except PageError as error:
            return error_page(error)
        except Exception as exc:
            failures.report(exc, f"rendering {what}")
            return error_page(
                PageError(
                    500,
                    "The page could not be rendered",
                    f"Rendering {what} failed unexpectedly; the server log has the traceback.",
                )
            )

    def known_session(session_id: str | None) -> str | None:
        """The id, if it names a session a guest may open (for links on error pages)."""
        return session_id if session_id and store.guest_session(session_id) is not None else None

    back_to = _back  # the error pages' way back to a container's profiles

    def where_word(where: dict[str, Any]) -> str:
        return "dataset" if where.get("home") else "session"

    def open_session(session_id: str | None) -> str:
        if not session_id:
            raise PageError(
                404,
                "Session not found",
                "The link names no session (its sessionToken parameter is missing): open it as the writer "
                "printed it, or pick a session on the home page.",
            )
        if not session_id.startswith("session-"):
            raise PageError(
                400,
                "Malformed session id",
                f"{shown(session_id)!r} is not a session id: session ids look like session-… .",
            )
        # a session-… id of another shape, an unknown one and a claimed one read alike (see Store.guest_session)
        if not is_valid_id(session_id, "session") or store.guest_session(session_id) is None:
            raise PageError(
                404,
                "Session not found",
                f"{session_gone(session_id)}: a claimed session's profiles are no longer shown here. It may also "
                "belong to another server or data directory.",
            )
        return session_id

    # -- static files --

    @router.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name == "plotly.min.js" and plotly_js is not None:
            path: Path | None = plotly_js
        elif name in ("observatory.css", "observatory.js", "timeline.css", "timeline.js"):
            path = STATIC_DIR / name
        else:
            path = None
        if path is None:
            return Response(f"There is no static file {name[:80]!r}.", status_code=404, media_type="text/plain")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    # -- landing --

    @router.get("/", response_class=HTMLResponse)
    def landing(request: Request) -> HTMLResponse:
        def build() -> HTMLResponse:
            sessions = []
            for record in store.recent_sessions(RECENT_SESSIONS) if list_sessions else []:
                if record.claimed:
                    continue
                # from an index, no further than a bound: no session's rows are read
                counts = ProfileCounts.of(store, record.id)
                sessions.append(
                    {
                        "id": record.id,
                        "created": format_timestamp(record.created_at),
                        "claimed": record.claimed,
                        "batches": counts.shown("batch"),
                        "references": counts.shown("reference"),
                    }
                )
            return render(
                "landing.html", base=base_url(public_url, request), sessions=sessions, list_sessions=list_sessions
            )

        return guarded(build, "the home page")

    # -- session --

    def container_page(container: PageContainer, request: Request, **extra: Any) -> HTMLResponse:
        """One page of a session's or dataset's profiles, sorted and filtered, to pick 1 to 3 of."""
        sid, home = container.id, container.home_path
        params, query = read_params(_back(container), request.query_params)
        base = base_url(public_url, request)
        store.nudge_landed(sid)  # presigned PUTs are learned by the ingest worker, never here
        # one page by keyset from an index, and the counts from the index up to a bound: never every row
        page = store.page_profiles(sid, query)
        counts = ProfileCounts.of(store, sid)
        rows = []
        for upload in page.uploads:
            tags = segment_label(upload.segment_tags)
            batch_link = None
            if upload.kind == "batch" and upload.dataset_timestamp is not None:
                batch_link = container.link(base, [str(upload.dataset_timestamp)])
            rows.append(
                {
                    "upload": upload,
                    "segment": shortened(tags),
                    # a long label is shown cut, and filtered by through the form (a page stays small)
                    "segment_filter": (
                        params.link(home, segment=tags, after="", before="")
                        if tags and len(tags) <= SHOWN_CHARS
                        else None
                    ),
                    "alias": shortened(upload.alias or "—"),
                    "timestamp": format_timestamp(upload.dataset_timestamp),
                    "uploaded": format_timestamp(upload.stored_at),
                    "link": container.link(base, [upload.id]),
                    "batch_link": batch_link if tags else None,
                }
            )
        pager = {
            "first": params.link(home, after="", before="") if page.has_previous else None,
            "previous": (
                params.link(home, after="", before=encode_cursor(params.sort, page.first))
                if page.has_previous and page.first is not None
                else None
            ),
            "next": (
                params.link(home, before="", after=encode_cursor(params.sort, page.last))
                if page.has_next and page.last is not None
                else None
            ),
        }
        return render(
            "session.html",
            session_id=container.name,
            container=container,
            rows=rows,
            base=base,
            params=params,
            counts=counts,
            pager=pager,
            sort_labels=SORT_LABELS,
            sorted_by=lambda sort: params.sorted_by(home, sort),
            max_rows=MAX_ROWS,
            **extra,
        )

    @router.get("/sessions/{session_id}", response_class=HTMLResponse)
    def session_page(session_id: str, request: Request) -> HTMLResponse:
        started, cpu_started = time.perf_counter(), time.thread_time()

        def build() -> HTMLResponse:
            return container_page(PageContainer.session(open_session(session_id)), request)

        response = guarded(build, f"session {session_id[:_MAX_SELECTOR_SHOWN]}")
        response.headers["Server-Timing"] = (
            f"render;dur={(time.perf_counter() - started) * 1000:.1f}, "
            f"render-cpu;dur={(time.thread_time() - cpu_started) * 1000:.1f}"
        )
        return response

    # -- profiles --

    @router.get("/resources/{model_id}/profiles", response_class=HTMLResponse)
    def profiles_page(model_id: str, request: Request) -> HTMLResponse:
        return timed(lambda: guarded(lambda: render_profiles(resolve(request, model_id), request), "the profiles page"))

    def timed(page: Callable[[], HTMLResponse]) -> HTMLResponse:
        store.count("observatory_page")
        started, cpu_started = time.perf_counter(), time.thread_time()
        response = page()
        # how long the page took to build (wall, and CPU of the thread that built it, which the load
        # of the machine does not change), for the browser's dev tools and benchmarks/bench_observatory.py
        response.headers["Server-Timing"] = (
            f"render;dur={(time.perf_counter() - started) * 1000:.1f}, "
            f"render-cpu;dur={(time.thread_time() - cpu_started) * 1000:.1f}"
        )
        return response

    def asked_profiles(request: Request, where: dict[str, Any]) -> tuple[list[str], list[str | None]]:
        """The link's profiles and segments, checked (``where``: the error pages' way back)."""
        query = request.query_params
        selectors = query.getlist("profile")
        if not selectors:
            raise PageError(
                400,
                "No profile",
                "The link names no profile: add profile=<batch timestamp | ref-… | log-…>, up to "
                f"{MAX_PROFILES_PER_LINK} times.",
                **where,
            )
        if len(selectors) > MAX_PROFILES_PER_LINK:
            raise PageError(
                400,
                "Too many profiles",
                f"The link asks for {len(selectors)} profiles, but the observatory shows 1 to "
                f"{MAX_PROFILES_PER_LINK} profiles at a time. Open a link with at most {MAX_PROFILES_PER_LINK} "
                f"profiles, or pick them on the {where_word(where)} page.",
                **where,
            )
        for selector in selectors:
            check_selector(selector)
        return selectors, parse_segments(query.getlist("segment"), selectors)

    def resolve(request: Request, model_id: str) -> tuple[PageContainer, list[Selection]]:
        session_id = request.query_params.get("sessionToken")
        selectors, segments = asked_profiles(request, {"session_id": known_session(session_id)})
        if model_id != GUEST_MODEL_ID:
            raise PageError(
                404,
                "Model not found",
                f"There is no model {shown(model_id)!r}: a guest session holds one model, {GUEST_MODEL_ID}.",
                session_id=known_session(session_id),
            )
        container = PageContainer.session(open_session(session_id))
        return container, select(request, container, selectors, segments)

    def select(
        request: Request, container: PageContainer, selectors: list[str], segments: list[str | None]
    ) -> list[Selection]:
        """The profiles a link names, of ``container``."""
        sid = container.id
        where = back_to(container)
        store.nudge_landed(sid)  # presigned PUTs: the ingest worker looks; a page only HEADs a profile it names
        base = base_url(public_url, request)
        selections = []
        for index, (selector, segment) in enumerate(zip(selectors, segments)):
            uploads = store.resolve_profile(sid, selector)
            if not uploads and store.presigns:
                awaited = store.awaits_upload(sid, selector)  # records the named slot if it landed
                # again: recorded by that look, or by the ingest worker's (the nudge above) meanwhile
                uploads = store.resolve_profile(sid, selector)
                if not uploads and awaited:
                    raise _awaited(container, selector)
            if not uploads:
                timestamp = parse_timestamp_selector(selector)
                if timestamp is not None:
                    what = f"batch profile with dataset timestamp {selector} ({format_timestamp(timestamp)})"
                else:
                    what = f"profile {selector}"
                raise PageError(
                    404,
                    "Profile not found",
                    f"{container.described} has no {what}. It may not be uploaded yet, or belong to another "
                    f"{container.kind}.",
                    **where,
                )
            kind = uploads[0].kind
            selection = Selection(index=index, selector=selector, kind=kind, uploads=uploads)
            labels = sorted({segment_label(u.segment_tags) for u in uploads if u.segment_tags})
            if segment is not None:
                chosen = [u for u in uploads if segment_label(u.segment_tags) == segment]
                if not chosen:
                    known = ", ".join(labels) if labels else "none: it is not segmented"
                    raise PageError(
                        404,
                        "Segment not found",
                        f"The batch {selector} of {container.kind} {container.name} has no segment "
                        f"{shown(segment)!r}. Its segments: {shown(known)}.",
                        **where,
                    )
                selection.uploads = chosen
                selection.segment = segment
            elif len(uploads) > 1 and labels:
                selection.segments = [(label, container.link(base, [selector], [label])) for label in labels]
            selection.duplicates = store.duplicates_of([u.id for u in selection.uploads])
            if len(selectors) > 1 or segment is not None:
                selection.single_url = container.link(base, [selector], [segment] if segment else [])
            selections.append(selection)
        return selections

    def column_window(request: Request) -> ColumnWindow:
        text = request.query_params.get("column", "")[:MAX_COLUMN_FILTER]
        raw_page = request.query_params.get("page", "1")
        page = int(raw_page) if raw_page.isascii() and raw_page.isdigit() and len(raw_page) < 9 else 1
        return ColumnWindow(filter=text.strip(), page=page)

    def render_profiles(resolved: tuple[PageContainer, list[Selection]], request: Request) -> HTMLResponse:
        container, selections = resolved
        sid = container
        window = column_window(request)
        # never waits out the lease of a host that died holding a claim; a comparison with a profile
        # still pending is not shown in part: the whole page answers 202, naming every such profile
        pending = [
            selection
            for selection in selections
            if any(u.ingest_state == "pending" and profiles_cache.state(u) == "pending" for u in selection.uploads)
        ]
        if pending:
            raise _pending(sid, *pending)
        views: list[DatasetProfileView] = []
        for selection in selections:
            with _profile_errors(sid, selection):
                selection.outline = profiles_cache.outline(selection.key, selection.uploads)
        # only the columns shown are rebuilt from the digests, summarised, charted and scored
        shown = tuple(window.apply(all_columns(selections))[0])
        for selection in selections:
            with _profile_errors(sid, selection):
                selection.summary = profiles_cache.summary(selection.key, selection.uploads, shown)

        def build() -> PageModel:
            for selection in selections:
                with _profile_errors(sid, selection):
                    views.append(profiles_cache.view(selection.key, selection.uploads, shown))
            drift: list[dict[str, DriftScore]] = []
            errors: list[str | None] = []
            for selection, view in zip(selections[1:], views[1:]):
                try:
                    drift.append(
                        profiles_cache.drift_between((selection.key, shown), view, (selections[0].key, shown), views[0])
                    )
                    errors.append(None)
                except Exception as exc:
                    logger.warning("observatory: drift of %s could not be computed: %r", selection.selector, exc)
                    drift.append({})
                    errors.append(f"{type(exc).__name__}: {exc}")
            return build_page_model(selections, views, drift, errors, env, window)

        model = profiles_cache.pages.get_or_compute((tuple(s.key for s in selections), window), build)
        base = base_url(public_url, request)
        # a dataset's links carry no token: the cookie the first page set opens the next one
        params = [(k, v) for k, v in request.query_params.multi_items() if k in ("profile", "sessionToken", "segment")]
        params = [(k, v) for k, v in params if k != "sessionToken"] + container.link_params

        def page_link(number: int) -> str:
            extra = [("column", window.filter)] if window.filter else []
            return f"{base}{request.url.path}?{urlencode([*params, *extra, ('page', str(number))])}"

        return render(
            "profiles.html",
            session_id=container.name,
            container=container,
            selections=selections,
            page=model,
            session_url=f"{base}{container.home_path}",
            page_link=page_link,
            link_params=params,
        )

    # -- an organization's dataset: the same pages, opened with a link's token, a login or a key --

    def dataset_page(
        org_id: str, dataset_id: str, request: Request, build: Callable[[PageContainer], HTMLResponse], what: str
    ) -> Response:
        try:
            access = dataset_access(request, org_id, dataset_id)
        except AccessRefused as refused:
            return refused_answer(request, refused, env)
        record = store.find_dataset(org_id, dataset_id)
        if record is None:
            response: Response = error_page(
                PageError(
                    404,
                    "Dataset not found",
                    f"Dataset {dataset_id} of organization {org_id} has no profiles on this server (never written, "
                    "or deleted); write one with whylogs' writer('whylabs') pointed here.",
                )
            )
        else:
            container = PageContainer.dataset(record.id, org_id, dataset_id)
            response = guarded(lambda: build(container), what)
        return access.remember(response, request)

    @router.get("/organizations/{org_id}/datasets/{dataset_id}", response_class=HTMLResponse)
    def dataset_overview(org_id: str, dataset_id: str, request: Request) -> Response:
        def build(container: PageContainer) -> HTMLResponse:
            return container_page(container, request, settings=read_settings(store, container.id))

        return dataset_page(org_id, dataset_id, request, build, f"dataset {dataset_id[:_MAX_SELECTOR_SHOWN]}")

    @router.get("/organizations/{org_id}/datasets/{dataset_id}/profiles", response_class=HTMLResponse)
    def dataset_profiles(org_id: str, dataset_id: str, request: Request) -> Response:
        def build(container: PageContainer) -> HTMLResponse:
            selectors, segments = asked_profiles(request, back_to(container))
            return render_profiles((container, select(request, container, selectors, segments)), request)

        return dataset_page(org_id, dataset_id, request, lambda c: timed(lambda: build(c)), "the profiles page")

    return router


def _back(container: PageContainer) -> dict[str, Any]:
    if container.is_dataset:
        return {"home": (container.home_path, container.name)}
    return {"session_id": container.id}


@contextlib.contextmanager
def _profile_errors(container: PageContainer, selection: Selection) -> Iterator[None]:
    """Turn failures to read or summarize a stored profile into a 422 page naming it."""
    try:
        yield
    except ProfilePendingError:
        raise _pending(container, selection) from None
    except SummaryError as exc:
        raise PageError(
            422,
            "Profile cannot be read",
            f"Profile {shown(selection.selector)} of {container.kind} {container.name} could not be read: {exc}. "
            'Upload it again, e.g. why.log(df).writer("songbird").write().',
            **_back(container),
        ) from None
    except PageError:
        raise
    except Exception as exc:
        logger.exception("observatory: summarizing %s failed", selection.selector)
        raise PageError(
            422,
            "Profile cannot be summarized",
            f"Profile {shown(selection.selector)} of {container.kind} {container.name} could not be summarized "
            f"({type(exc).__name__}); it may hold metrics this observatory does not know.",
            **_back(container),
        ) from None


def _pending(container: PageContainer, *selections: Selection) -> PageError:
    """The page of profiles an ingest worker (maybe another host's) is still summarising: said at
    once, with 202, ``Retry-After`` and a page that reloads itself, rather than waiting for that
    worker or showing the others alone."""
    names = ", ".join(shown(s.selector) for s in selections)
    several = len(selections) > 1
    return PageError(
        202,
        "Profiles still being summarised" if several else "Profile still being summarised",
        f"Profile{'s' if several else ''} {names} of {container.kind} {container.name} {'are' if several else 'is'} "
        "stored and still being summarised; this page reloads in a moment.",
        retry_after=PENDING_RETRY_SECONDS,
        **_back(container),
    )


def _awaited(container: PageContainer, selector: str) -> PageError:
    """The page of a profile whose upload URL was given out and whose bytes are not recorded yet
    (a presigned PUT the ingest worker has not seen land): pending, like one being summarised."""
    return PageError(
        202,
        "Profile not received yet",
        f"Profile {shown(selector)} of {container.kind} {container.name} has an upload URL but its bytes have not "
        "been received yet; this page reloads in a moment and shows it once it has landed and been summarised.",
        retry_after=PENDING_RETRY_SECONDS,
        **_back(container),
    )


#: One table cell: (profile number, exact value for data-value, text shown, CSS class).
Cell = tuple[int, str, str, str]


def mount_observatory(
    app: FastAPI,
    store: Store,
    *,
    public_url: str | None = None,
    list_sessions: bool = True,
    sandbox: Sandbox | None = None,
) -> ProfileCache:
    """Add the observatory pages to ``app``; returns their cache (``app.state.observatory_cache``).
    ``sandbox``: where profiles not summarised yet are summarised (default: a sandbox of its own)."""
    cache = ProfileCache(store) if sandbox is None else ProfileCache(store, sandbox=sandbox)
    add_routes(app.router, observatory_router(store, public_url=public_url, cache=cache, list_sessions=list_sessions))
    app.state.observatory_cache = cache
    return cache
