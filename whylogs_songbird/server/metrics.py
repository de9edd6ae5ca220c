"""``GET /metrics``: Prometheus' text format, written by the official ``prometheus_client``.

Everything comes from the store at scrape time (a custom collector), so every worker process and
every host on one store answers the same numbers:

- per session (``session``: its id, or ``ORG/DATASET`` for an organization's dataset; ``segment``)
  and column (``column``), from the latest bucket of the
  timeline the monitors evaluate: ``songbird_column_drift_p_value``,
  ``songbird_column_drift_category`` (0 no drift, 1 possible drift, 2 drift),
  ``songbird_column_null_fraction``, ``songbird_column_count``, ``songbird_column_mean``, and
  ``songbird_monitor_failing{monitor, column, ...}`` (1 for each failing monitor). These are
  recorded each time a session's monitors are evaluated (a batch landed on a server with
  ``--monitors``);
- for the server: ``songbird_uploads_total{kind}`` (profiles stored), ``songbird_ingest_pending``,
  ``songbird_notifications_pending`` and ``songbird_notifications{state}``.

Label cardinality is capped: at most ``metrics_max_series`` per-column series (``--metrics-max-series``,
default 10 000) are written, sessions most recently updated first; what is left out is counted in
``songbird_metrics_series_dropped``.

Request durations: ``songbird_request_duration_seconds{method, route, status}``, a histogram of
the seconds from a request's arrival at the app to its last answer byte, labelled by method, the
matched route's path template (``/v0/uploads/{upload_id}``, never the raw path, which carries ids
and signatures; ``unmatched`` when no route matched) and status class (``2xx``, ``4xx``, ...), so
its series stay bounded. Each request costs a ``perf_counter`` pair and one ``observe``
(:class:`RequestDurations`). These are the one set of numbers kept in memory: with
``--workers N`` the launcher points every worker at a fresh directory of prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, ``<data-dir>/metrics-<pid>-<start>``), so the
histogram a scrape shows adds up every worker's requests whichever worker answers. With several
hosts on one store, each host's ``/metrics`` shows its own requests.

On a loopback bind the endpoint is open; on any other, it needs ``Authorization: Bearer <token>``
with ``--metrics-token`` (``$SONGBIRD_METRICS_TOKEN``), and answers 404 when no token is set.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Iterator, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whylogs_songbird.server.common import error_response, is_loopback_host
from whylogs_songbird.server.datasets import dataset_of

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from whylogs_songbird.server.config import ServerConfig
    from whylogs_songbird.server.storage.notifications import NotificationQueueSql
    from whylogs_songbird.server.store import Store
    from whylogs_songbird.server.timeline_service import TimelineService

logger = logging.getLogger("whylogs_songbird.server.metrics")

#: Drift categories as numbers (a gauge per column).
CATEGORY_NUMBERS = {"NO_DRIFT": 0, "POSSIBLE_DRIFT": 1, "DRIFT": 2}
#: Per-column metrics: (metric name, document series, help).
COLUMN_METRICS = (
    ("songbird_column_drift_p_value", "drift_p_value", "p-value of whylogs' drift test against the reference"),
    ("songbird_column_drift_category", "drift_category", "drift against the reference: 0 none, 1 possible, 2 drift"),
    ("songbird_column_null_fraction", "null_fraction", "fraction of null values"),
    ("songbird_column_count", "count", "values counted"),
    ("songbird_column_mean", "mean", "mean of the numeric values"),
)


def snapshot(document: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers /metrics shows of a timeline document: its latest bucket's, per column."""
    buckets = document.get("buckets") or []
    if not buckets:
        return {"segment": document.get("segment") or "", "bucket": None, "columns": {}, "failing": []}
    index = len(buckets) - 1
    start = buckets[index]["start"]
    columns: dict[str, dict[str, float]] = {}
    for name, series in (document.get("columns") or {}).items():
        values: dict[str, float] = {}
        for _, key, _ in COLUMN_METRICS:
            raw = series.get(key)
            value = raw[index] if isinstance(raw, list) and index < len(raw) else None
            if key == "drift_category":
                value = CATEGORY_NUMBERS.get(value) if isinstance(value, str) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[key] = float(value)
        columns[name] = values
    failing = sorted({(a["monitor"], a["column"]) for a in document.get("alerts") or [] if a["start"] == start})
    return {"segment": document.get("segment") or "", "bucket": start, "columns": columns, "failing": failing}


class StoreCollector:
    """A ``prometheus_client`` collector over the store (see the module docstring)."""

    def __init__(self, queue: NotificationQueueSql, store: Store, max_series: int) -> None:
        self.queue = queue
        self.store = store
        self.max_series = max_series

    def collect(self) -> Iterator[Metric]:
        labels = ["session", "segment", "column"]
        families = {
            key: GaugeMetricFamily(name, description, labels=labels) for name, key, description in COLUMN_METRICS
        }
        failing = GaugeMetricFamily(
            "songbird_monitor_failing",
            "1 for each monitor failing on the latest bucket",
            labels=["session", "segment", "monitor", "column"],
        )
        series = dropped = 0
        for session_id, data in self.queue.metric_snapshots(limit=max(1, self.max_series)):
            try:
                shot = json.loads(data)
            except ValueError:
                continue
            segment = shot.get("segment") or ""
            session_id = shot.get("name") or session_id
            for column, values in (shot.get("columns") or {}).items():
                if series + len(values) > self.max_series:
                    dropped += len(values)
                    continue
                series += len(values)
                for key, value in values.items():
                    if key in families:
                        families[key].add_metric([session_id, segment, column], value)
            for monitor, column in shot.get("failing") or []:
                if series >= self.max_series:
                    dropped += 1
                    continue
                series += 1
                failing.add_metric([session_id, segment, monitor, column], 1.0)
        yield from families.values()
        yield failing
        yield GaugeMetricFamily(
            "songbird_metrics_series_dropped",
            "per-column series left out by the cap (--metrics-max-series)",
            value=dropped,
        )
        uploads = CounterMetricFamily("songbird_uploads", "profiles stored", labels=["kind"])
        for kind, n in self.queue.stored_upload_counts().items():
            uploads.add_metric([kind], n)
        yield uploads
        yield GaugeMetricFamily(
            "songbird_ingest_pending", "stored profiles not yet summarised", value=self.store.pending_ingest()
        )
        counts = self.queue.notification_counts()
        yield GaugeMetricFamily(
            "songbird_notifications_pending", "notifications waiting to be sent", value=counts["pending"]
        )
        states = GaugeMetricFamily("songbird_notifications", "notifications by state", labels=["state"])
        for state, n in counts.items():
            states.add_metric([state], n)
        yield states


#: The environment variable of prometheus_client's multiprocess mode (set by the launcher).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_DURATION = "songbird_request_duration_seconds"
#: Upper bounds (seconds) of the duration buckets: a small upload answers in about a millisecond.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
#: Methods labelled as themselves; any other is ``OTHER`` (a client chooses the method).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestDurations:
    """Observes request durations in ``histogram`` (see the module docstring).

    The route template is read from the scope after the app answered (FastAPI's routes put
    themselves at ``scope["route"]``); the labelled child of each (method, route, status class)
    is looked up once and kept, so a request costs a dict lookup and one ``observe``.
    """

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.children: dict[tuple[str, str, str], Any] = {}

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """One answered HTTP request: its scope, status and duration."""
        method = scope["method"]
        template = getattr(scope.get("route"), "path", None) or "unmatched"
        key = (method if method in KNOWN_METHODS else "OTHER", template, f"{status // 100}xx")
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self.histogram.labels(*key)
        child.observe(seconds)


class RequestDurationMiddleware:
    """Observes each HTTP request's duration (:class:`RequestDurations`), as an ASGI middleware of
    its own (the server's app times requests within its edge, ``middleware.EdgeMiddleware``)."""

    def __init__(self, app: ASGIApp, histogram: Histogram, durations: RequestDurations | None = None) -> None:
        self.app = app
        self.durations = durations if durations is not None else RequestDurations(histogram)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception that escapes unanswered

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.durations.observe(scope, status, perf_counter() - start)


def request_histogram(registry: CollectorRegistry) -> Histogram:
    """The duration histogram, read by ``registry``: directly in one process, or through the
    multiprocess directory of ``$PROMETHEUS_MULTIPROC_DIR`` (every worker's files) when set."""
    shared = os.environ.get(MULTIPROC_ENV)
    histogram = Histogram(
        REQUEST_DURATION,
        "seconds from a request's arrival to its answer, by method, route template and status class",
        labelnames=["method", "route", "status"],
        buckets=DURATION_BUCKETS,
        registry=None if shared else registry,
    )
    if shared:
        MultiProcessCollector(registry, path=shared)
    return histogram


def mount_metrics(
    app: FastAPI, store: Store, config: ServerConfig, timeline: TimelineService, *, time_requests: bool = True
) -> RequestDurations:
    """Add ``GET /metrics`` and record each session's numbers when its monitors are evaluated.

    Returns the request durations of the histogram; ``time_requests`` adds a
    :class:`RequestDurationMiddleware` that observes them (off for an app whose own middleware does)."""
    queue = store.notification_queue()

    def record(session_id: str, document: dict[str, Any]) -> None:
        shot = snapshot(document)
        dataset = dataset_of(store, session_id)
        if dataset is not None:  # an organization's dataset is labelled ORG/DATASET, never by its container id
            shot["name"] = "/".join(dataset)
        queue.put_metric_snapshot(session_id, json.dumps(shot, separators=(",", ":")))

    timeline.evaluated.append(record)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(queue, store, config.metrics_max_series))
    histogram = request_histogram(registry)
    durations = RequestDurations(histogram)
    if time_requests:
        app.add_middleware(RequestDurationMiddleware, histogram=histogram, durations=durations)  # outermost
    open_to_all = is_loopback_host(config.host)
    token = config.metrics_token

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        refused = access_problem(open_to_all, token, request.headers.get("authorization"))
        if refused is not None:
            return error_response(*refused)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return durations


def access_problem(open_to_all: bool, token: str | None, authorization: str | None) -> tuple[int, str] | None:
    """(status, message) refusing a scrape, or None to answer it (see the module docstring)."""
    if open_to_all:
        return None
    if not token:
        return 404, "/metrics is served on a loopback bind, or with --metrics-token (a bearer token) elsewhere."
    if not hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode()):
        return 401, "/metrics needs the header Authorization: Bearer <the --metrics-token>."
    return None


__all__ = [
    "REQUEST_DURATION",
    "RequestDurationMiddleware",
    "RequestDurations",
    "StoreCollector",
    "access_problem",
    "mount_metrics",
    "request_histogram",
    "snapshot",
]
