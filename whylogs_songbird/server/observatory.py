"""The local observatory: HTML pages over the stored profiles, rendered with Jinja2 and plotly.js.

Routes (see :func:`observatory_router`):

- ``GET /`` — landing page: how to point the writer here, and the recent sessions (only when the
  server listens on loopback: a session id is what opens its profiles, see ``list_sessions``);
- ``GET /sessions/{session_id}`` — every profile of a session, newest first, pick up to 3;
- ``GET /resources/{model_id}/profiles?profile=…&sessionToken=…[&segment=…]`` — 1 to 3
  profiles side by side: headers, per-column summaries, charts and (2+ profiles) drift;
- ``GET /static/{name}`` — the pages' CSS and JS, and plotly.js from the installed ``plotly``.

Pages are built in worker threads (sync routes). Deserialized views, summaries, drift scores
and chart data are cached in memory, keyed by upload id + sha256 + size, so a profile replaced
by a new PUT is never served stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from whylogs.core import DatasetProfileView

from whylogs_songbird.models import GUEST_MODEL_ID, MAX_PROFILES_PER_LINK
from whylogs_songbird.server.common import observatory_link, segment_label
from whylogs_songbird.server.display import user_text, visible_text
from whylogs_songbird.server.store import Store, UploadRecord, is_valid_id, parse_timestamp_selector
from whylogs_songbird.server.summaries import (
    DRIFT_CATEGORIES,
    DriftScore,
    ProfileSummary,
    SummaryError,
    chart_data,
    drift_scores,
    merge_views,
    read_view,
    summarize_profile,
)

logger = logging.getLogger("whylogs_songbird.server.observatory")

_HERE = Path(__file__).parent
TEMPLATES_DIR = _HERE / "templates"
STATIC_DIR = _HERE / "static"
#: Colors of profile 1, 2 and 3 in headers and charts.
PROFILE_COLORS = ("#3b6fb6", "#e07b24", "#3a9a5b")
#: Frequent items listed in a column's table.
TABLE_ITEMS = 5
#: Sessions listed on the landing page.
RECENT_SESSIONS = 20
_MAX_SELECTOR_SHOWN = 80

#: The statistic rows of a column's table: (ColumnSummary attribute, label, format).
STAT_ROWS = (
    ("count", "Count", "number"),
    ("null_count", "Nulls", "number"),
    ("null_fraction", "Null fraction", "percent"),
    ("distinct", "Distinct (est.)", "number"),
    ("mean", "Mean", "number"),
    ("stddev", "Std dev", "number"),
    ("min", "Min", "number"),
    ("p25", "25th percentile", "number"),
    ("median", "Median", "number"),
    ("p75", "75th percentile", "number"),
    ("max", "Max", "number"),
)

CacheKey = tuple[Hashable, ...]
T = TypeVar("T")


def _plotly_js() -> Path | None:
    try:
        import plotly
    except ImportError:  # pragma: no cover - plotly is a dependency of the server extra
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


# -- errors ----------------------------------------------------------------------------------


class PageError(Exception):
    """A request the pages cannot answer; rendered as an HTML error page with this status."""

    def __init__(self, status: int, title: str, message: str, *, session_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.session_id = session_id


def _shown(value: str) -> str:
    """A user-supplied value, shortened for an error message (the template escapes it)."""
    return value if len(value) <= _MAX_SELECTOR_SHOWN else value[:_MAX_SELECTOR_SHOWN] + "…"


# -- cache -----------------------------------------------------------------------------------


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


# -- selections ------------------------------------------------------------------------------


def format_timestamp(millis: int | None) -> str:
    if millis is None:
        return "—"
    try:
        moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(millis)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Selection:
    """One profile shown on a page: one upload, or every upload of a batch timestamp merged."""

    index: int
    selector: str
    kind: str
    uploads: list[UploadRecord]
    segment: str | None = None
    #: The segments of a merged batch: (label, link) pairs.
    segments: list[tuple[str, str]] = field(default_factory=list)
    summary: ProfileSummary | None = None
    single_url: str = ""

    @property
    def key(self) -> CacheKey:
        return (tuple(upload_key(u) for u in self.uploads), self.segment)

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def color(self) -> str:
        return PROFILE_COLORS[self.index % len(PROFILE_COLORS)]

    @property
    def alias(self) -> str | None:
        aliases = {u.alias for u in self.uploads if u.alias}
        return ", ".join(sorted(aliases)) if aliases else None

    @property
    def dataset_timestamp(self) -> int | None:
        stamps = [u.dataset_timestamp for u in self.uploads if u.dataset_timestamp is not None]
        return min(stamps) if stamps else None

    @property
    def size(self) -> int:
        """Bytes stored for this profile (all merged uploads together)."""
        return sum(u.size or 0 for u in self.uploads)

    @property
    def timestamp_text(self) -> str:
        return format_timestamp(self.dataset_timestamp)

    @property
    def segment_text(self) -> str:
        if len(self.uploads) == 1:
            return segment_label(self.uploads[0].segment_tags) or "—"
        if self.segments:
            return f"all {len(self.segments)} segments merged"
        return f"{len(self.uploads)} uploads merged"

    @property
    def title(self) -> str:
        if self.kind == "reference":
            return self.alias or self.selector
        return f"batch {self.timestamp_text}"


def _parse_segments(raw: list[str], selectors: list[str]) -> list[str | None]:
    """The segment asked for each selector: one ``segment`` applies to every batch timestamp;
    one per profile applies positionally (an empty value means the whole batch)."""
    if not raw:
        return [None] * len(selectors)
    if len(raw) == 1:
        return [raw[0] or None if _is_timestamp(s) else None for s in selectors]
    if len(raw) == len(selectors):
        result: list[str | None] = []
        for selector, segment in zip(selectors, raw):
            if segment and not _is_timestamp(selector):
                raise PageError(
                    400,
                    "Segment on a profile id",
                    f"The segment {_shown(segment)!r} is given for {_shown(selector)!r}, which is not a batch "
                    "timestamp: a segment narrows a batch timestamp, and an upload id already names one segment.",
                )
            result.append(segment or None)
        return result
    raise PageError(
        400,
        "Too many segments",
        f"The link gives {len(raw)} segment parameters for {len(selectors)} profiles: give one segment for "
        "every batch timestamp, or one per profile in the same order (empty for the whole batch).",
    )


def _is_timestamp(selector: str) -> bool:
    return parse_timestamp_selector(selector) is not None


def _check_selector(selector: str) -> None:
    if _is_timestamp(selector) or is_valid_id(selector, "ref") or is_valid_id(selector, "log"):
        return
    raise PageError(
        400,
        "Malformed profile",
        f"{_shown(selector)!r} is not a profile: give a batch dataset timestamp in epoch milliseconds "
        "(e.g. 1700000000000), a reference profile id (ref-…) or a batch upload id (log-…).",
    )


# -- the router ------------------------------------------------------------------------------


def _number(value: Any, digits: int = 6) -> str:
    """A number for a table cell: integers with thousands separators, floats to ``digits`` significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    if number == int(number) and abs(number) < 1e15:
        return f"{int(number):,}"
    return f"{number:.{digits}g}"


def _percent(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.2f}%" if value else "0%"


def _raw(value: Any) -> str:
    """The exact value for a ``data-value`` attribute."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_for_script(data: Any) -> Markup:
    """JSON safe to embed in ``<script type="application/json">`` (no ``</script>`` breakout)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 - escaped above for a script element


def _round_floats(values: Sequence[float], digits: int = 8) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values]


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = _number
    env.filters["percent"] = _percent
    env.filters["raw"] = _raw
    env.filters["user"] = user_text  # every user-supplied value: escaped, in <bdi>, controls visible
    env.filters["plain"] = visible_text  # the same where no markup goes (the page title)
    env.globals["MAX_PROFILES"] = MAX_PROFILES_PER_LINK
    return env


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
    profiles_cache = cache if cache is not None else ProfileCache(store)
    plotly_js = _plotly_js()

    def base_url(request: Request) -> str:
        return public_url.rstrip("/") if public_url else str(request.base_url).rstrip("/")

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        template = env.get_template(name)
        return HTMLResponse(template.render(**context), status_code=status)

    def error_page(error: PageError) -> HTMLResponse:
        return render(
            "error.html",
            status=error.status,
            title=error.title,
            message=error.message,
            status_code=error.status,
            session_id=error.session_id,
        )

    def guarded(build: Callable[[], HTMLResponse], what: str) -> HTMLResponse:
        try:
            return build()
        except PageError as error:
            return error_page(error)
        except Exception:
            logger.exception("observatory: rendering %s failed", what)
            return error_page(
                PageError(
                    500,
                    "The page could not be rendered",
                    f"Rendering {what} failed unexpectedly; the server log has the traceback.",
                )
            )

    def known_session(session_id: str | None) -> str | None:
        """The id, if it names a session of this server (for links on error pages)."""
        if not session_id:
            return None
        record = store.get_session(session_id)
        return session_id if record is not None and not record.claimed else None

    def open_session(session_id: str | None) -> str:
        if not session_id:
            raise PageError(
                404,
                "Session not found",
                "The link names no session (its sessionToken parameter is missing): open it as the writer "
                "printed it, or pick a session on the home page.",
            )
        if not is_valid_id(session_id, "session"):
            raise PageError(
                400,
                "Malformed session id",
                f"{_shown(session_id)!r} is not a session id: session ids look like session-… .",
            )
        record = store.get_session(session_id)
        if record is None:
            raise PageError(
                404,
                "Session not found",
                f"There is no session {session_id} on this server: it may belong to another server or data directory.",
            )
        if record.claimed:  # like the API: a claimed guest session is gone from the guest side
            raise PageError(
                404,
                "Session not found",
                f"The session {session_id} was claimed into an organization; its profiles are no longer shown here.",
            )
        return session_id

    # -- static files --

    @router.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name == "plotly.min.js" and plotly_js is not None:
            path: Path | None = plotly_js
        elif name in ("observatory.css", "observatory.js"):
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
                profiles = store.list_profiles(record.id)
                sessions.append(
                    {
                        "id": record.id,
                        "created": format_timestamp(record.created_at),
                        "claimed": record.claimed,
                        "batches": sum(1 for p in profiles if p.kind == "batch"),
                        "references": sum(1 for p in profiles if p.kind == "reference"),
                    }
                )
            return render("landing.html", base=base_url(request), sessions=sessions, list_sessions=list_sessions)

        return guarded(build, "the home page")

    # -- session --

    @router.get("/sessions/{session_id}", response_class=HTMLResponse)
    def session_page(session_id: str, request: Request) -> HTMLResponse:
        def build() -> HTMLResponse:
            sid = open_session(session_id)
            base = base_url(request)
            uploads = sorted(store.list_profiles(sid), key=lambda u: (u.stored_at or 0, u.created_at), reverse=True)
            rows = []
            for upload in uploads:
                tags = segment_label(upload.segment_tags)
                batch_link = None
                if upload.kind == "batch" and upload.dataset_timestamp is not None:
                    batch_link = observatory_link(base, sid, [str(upload.dataset_timestamp)])
                rows.append(
                    {
                        "upload": upload,
                        "segment": tags,
                        "timestamp": format_timestamp(upload.dataset_timestamp),
                        "uploaded": format_timestamp(upload.stored_at),
                        "link": observatory_link(base, sid, [upload.id]),
                        "batch_link": batch_link if tags else None,
                    }
                )
            return render("session.html", session_id=sid, rows=rows, base=base)

        return guarded(build, f"session {session_id[:_MAX_SELECTOR_SHOWN]}")

    # -- profiles --

    @router.get("/resources/{model_id}/profiles", response_class=HTMLResponse)
    def profiles_page(model_id: str, request: Request) -> HTMLResponse:
        store.count("observatory_page")
        started = time.perf_counter()
        response = guarded(lambda: render_profiles(model_id, request), "the profiles page")
        # how long the page took to build, for the browser's dev tools and benchmarks/bench_observatory.py
        response.headers["Server-Timing"] = f"render;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    def resolve(request: Request, model_id: str) -> tuple[str, list[Selection]]:
        query = request.query_params
        selectors = query.getlist("profile")
        session_id = query.get("sessionToken")
        if not selectors:
            raise PageError(
                400,
                "No profile",
                "The link names no profile: add profile=<batch timestamp | ref-… | log-…>, up to "
                f"{MAX_PROFILES_PER_LINK} times.",
                session_id=known_session(session_id),
            )
        if len(selectors) > MAX_PROFILES_PER_LINK:
            raise PageError(
                400,
                "Too many profiles",
                f"The link asks for {len(selectors)} profiles, but the observatory shows 1 to "
                f"{MAX_PROFILES_PER_LINK} profiles at a time. Open a link with at most {MAX_PROFILES_PER_LINK} "
                "profiles, or pick them on the session page.",
                session_id=known_session(session_id),
            )
        for selector in selectors:
            _check_selector(selector)
        segments = _parse_segments(query.getlist("segment"), selectors)
        if model_id != GUEST_MODEL_ID:
            raise PageError(
                404,
                "Model not found",
                f"There is no model {_shown(model_id)!r}: a guest session holds one model, {GUEST_MODEL_ID}.",
                session_id=known_session(session_id),
            )
        sid = open_session(session_id)
        base = base_url(request)
        selections = []
        for index, (selector, segment) in enumerate(zip(selectors, segments)):
            uploads = store.resolve_profile(sid, selector)
            if not uploads:
                timestamp = parse_timestamp_selector(selector)
                if timestamp is not None:
                    what = f"batch profile with dataset timestamp {selector} ({format_timestamp(timestamp)})"
                else:
                    what = f"profile {selector}"
                raise PageError(
                    404,
                    "Profile not found",
                    f"Session {sid} has no {what}. It may not be uploaded yet, or belong to another session.",
                    session_id=sid,
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
                        f"The batch {selector} of session {sid} has no segment {_shown(segment)!r}. Its segments: "
                        f"{_shown(known)}.",
                        session_id=sid,
                    )
                selection.uploads = chosen
                selection.segment = segment
            elif len(uploads) > 1 and labels:
                selection.segments = [(label, observatory_link(base, sid, [selector], [label])) for label in labels]
            if len(selectors) > 1 or segment is not None:
                selection.single_url = observatory_link(base, sid, [selector], [segment] if segment else [])
            selections.append(selection)
        return sid, selections

    def render_profiles(model_id: str, request: Request) -> HTMLResponse:
        sid, selections = resolve(request, model_id)
        views: list[DatasetProfileView] = []
        for selection in selections:
            with _profile_errors(sid, selection):
                selection.summary = profiles_cache.summary(selection.key, selection.uploads)

        def build() -> PageModel:
            for selection in selections:
                with _profile_errors(sid, selection):
                    views.append(profiles_cache.view(selection.key, selection.uploads))
            drift: list[dict[str, DriftScore]] = []
            errors: list[str | None] = []
            for selection, view in zip(selections[1:], views[1:]):
                try:
                    drift.append(profiles_cache.drift_between(selection.key, view, selections[0].key, views[0]))
                    errors.append(None)
                except Exception as exc:
                    logger.warning("observatory: drift of %s could not be computed: %r", selection.selector, exc)
                    drift.append({})
                    errors.append(f"{type(exc).__name__}: {exc}")
            return build_page_model(selections, views, drift, errors, env)

        model = profiles_cache.pages.get_or_compute(tuple(s.key for s in selections), build)
        return render(
            "profiles.html",
            session_id=sid,
            selections=selections,
            page=model,
            session_url=f"{base_url(request)}/sessions/{sid}",
        )

    return router


@contextlib.contextmanager
def _profile_errors(session_id: str, selection: Selection) -> Iterator[None]:
    """Turn failures to read or summarize a stored profile into a 422 page naming it."""
    try:
        yield
    except SummaryError as exc:
        raise PageError(
            422,
            "Profile cannot be read",
            f"Profile {_shown(selection.selector)} of session {session_id} could not be read: {exc}. Upload it "
            'again, e.g. why.log(df).writer("songbird").write().',
            session_id=session_id,
        ) from None
    except PageError:
        raise
    except Exception as exc:
        logger.exception("observatory: summarizing %s failed", selection.selector)
        raise PageError(
            422,
            "Profile cannot be summarized",
            f"Profile {_shown(selection.selector)} of session {session_id} could not be summarized "
            f"({type(exc).__name__}); it may hold metrics this observatory does not know.",
            session_id=session_id,
        ) from None


#: One table cell: (profile number, exact value for data-value, text shown, CSS class).
Cell = tuple[int, str, str, str]


@dataclass(frozen=True)
class ColumnCard:
    """Everything the page shows about one column, formatted once and cached."""

    index: int
    name: str
    types: tuple[str, ...]
    drift: str
    #: (profile number, category, algorithm) per comparison with a score
    badges: tuple[tuple[int, str, str], ...]
    #: (stat, label, cells) for each statistic some profile has
    rows: tuple[tuple[str, str, tuple[Cell, ...]], ...]
    #: per profile: (value, count text) pairs of its top items; empty when no profile has any
    items: tuple[tuple[int, tuple[tuple[str, str], ...]], ...]
    #: shown instead of the chart when the column's chart cannot be drawn (e.g. its range is too wide)
    chart_note: str = ""


@dataclass(frozen=True)
class DriftRow:
    column: str
    index: int
    drift: str
    #: per comparison: (profile number, category, algorithm, statistic raw, statistic text, measure raw,
    #: measure text) or None when the column could not be compared
    scores: tuple[tuple[int, str, str, str, str, str, str] | None, ...]


@dataclass(frozen=True)
class PageModel:
    """The cached, formatted content of a profiles page (everything but the request's links)."""

    cards: tuple[ColumnCard, ...]
    drift_rows: tuple[DriftRow, ...]
    drift_counts: tuple[dict[str, int], ...]
    drift_errors: tuple[str | None, ...]
    chart_json: Markup
    #: the drift table and the column cards, rendered once from ``_drift.html`` and ``_columns.html``
    drift_html: Markup = Markup("")
    columns_html: Markup = Markup("")

    @property
    def column_count(self) -> int:
        return len(self.cards)


def _worst_category(scores: Sequence[DriftScore | None]) -> str:
    categories = {s.category for s in scores if s is not None}
    for category in DRIFT_CATEGORIES:
        if category in categories:
            return category
    return ""


def _category_label(category: str | None) -> str:
    return (category or "n/a").replace("_", " ").lower()


def build_page_model(
    selections: Sequence[Selection],
    views: Sequence[DatasetProfileView],
    drift: Sequence[dict[str, DriftScore]],
    drift_errors: Sequence[str | None],
    env: Environment | None = None,
) -> PageModel:
    """Format the columns, drift table and chart data of a profiles page; with ``env``, also render
    the drift table and column cards (they depend only on the profiles, so they are cached)."""
    summaries = [s.summary or ProfileSummary() for s in selections]
    numbers = [s.number for s in selections]
    columns: list[str] = []  # the first profile's order, then columns only the others have
    seen: set[str] = set()
    for summary in summaries:
        for name in summary.columns:
            if name not in seen:
                seen.add(name)
                columns.append(name)

    cards = []
    charts: dict[str, Any] = {}
    for index, name in enumerate(columns):
        found = [summary.columns.get(name) for summary in summaries]
        scores = [d.get(name) for d in drift]
        rows: list[tuple[str, str, tuple[Cell, ...]]] = [
            (
                "inferred_type",
                "Inferred type",
                tuple(
                    (n, c.inferred_type if c else "", c.inferred_type if c else "absent", "" if c else "muted")
                    for n, c in zip(numbers, found)
                ),
            )
        ]
        for stat, label, fmt in STAT_ROWS:
            values = [getattr(c, stat) if c is not None else None for c in found]
            if all(v is None for v in values):
                continue
            cells = tuple(
                (n, _raw(v), _percent(v) if fmt == "percent" else _number(v), "" if v is not None else "muted")
                for n, v in zip(numbers, values)
            )
            rows.append((stat, label, cells))
        items: tuple[tuple[int, tuple[tuple[str, str], ...]], ...] = ()
        if any(c is not None and c.frequent_items for c in found):
            items = tuple(
                (n, tuple((i.value, _number(i.estimate)) for i in c.frequent_items[:TABLE_ITEMS]) if c else ())
                for n, c in zip(numbers, found)
            )
        data = chart_data(name, views, summaries)
        chart_note = ""
        if data is not None:
            if data["kind"] == "note":
                chart_note = data["note"]
            else:
                if data["kind"] == "histogram":
                    data["edges"] = _round_floats(data["edges"])
                else:
                    data["totals"] = [c.count if c is not None else None for c in found]
                charts[str(index)] = data
        cards.append(
            ColumnCard(
                index=index,
                name=name,
                types=tuple(dict.fromkeys(c.inferred_type for c in found if c is not None)),
                drift=_worst_category(scores),
                badges=tuple(
                    (n, score.category or "", score.algorithm)
                    for n, score in zip(numbers[1:], scores)
                    if score is not None
                ),
                rows=tuple(rows),
                items=items,
                chart_note=chart_note,
            )
        )

    drift_rows = []
    for card in cards:
        scores = [d.get(card.name) for d in drift]
        present = [s for s in scores if s is not None]
        if not present:
            continue
        worst = min(s.severity for s in present)
        formatted = tuple(
            None
            if s is None
            else (
                n,
                s.category or "",
                s.algorithm,
                _raw(s.statistic),
                _number(s.statistic, 4),
                _raw(s.pvalue if s.pvalue is not None else s.statistic),
                f"p = {_number(s.pvalue, 3)}" if s.pvalue is not None else f"d = {_number(s.statistic, 4)}",
            )
            for n, s in zip(numbers[1:], scores)
        )
        drift_rows.append((worst, card.name, DriftRow(card.name, card.index, card.drift, formatted)))
    drift_rows.sort(key=lambda row: (row[0], row[1]))

    payload = {
        "profiles": [{"label": f"{s.number}. {s.title}", "color": s.color} for s in selections],
        "charts": charts,
    }
    counts = tuple(
        {category: sum(1 for score in d.values() if score.category == category) for category in DRIFT_CATEGORIES}
        for d in drift
    )
    model = PageModel(
        cards=tuple(cards),
        drift_rows=tuple(row for _, _, row in drift_rows),
        drift_counts=counts,
        drift_errors=tuple(drift_errors),
        chart_json=_json_for_script(payload),
    )
    if env is None:
        return model
    context = {"selections": selections, "page": model}
    return dataclasses.replace(
        model,
        drift_html=Markup(env.get_template("_drift.html").render(context)),  # noqa: S704 - autoescaped template
        columns_html=Markup(env.get_template("_columns.html").render(context)),  # noqa: S704 - autoescaped template
    )


def mount_observatory(
    app: FastAPI, store: Store, *, public_url: str | None = None, list_sessions: bool = True
) -> ProfileCache:
    """Add the observatory pages to ``app``; returns their cache (``app.state.observatory_cache``)."""
    cache = ProfileCache(store)
    app.include_router(observatory_router(store, public_url=public_url, cache=cache, list_sessions=list_sessions))
    app.state.observatory_cache = cache
    return cache


__all__ = [
    "LruCache",
    "PageError",
    "ProfileCache",
    "PageModel",
    "Selection",
    "build_page_model",
    "mount_observatory",
    "observatory_link",
    "observatory_router",
    "segment_label",
]
