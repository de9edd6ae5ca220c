"""``GET /metrics``: Prometheus' text format, written by the official ``prometheus_client``.

Everything comes from the store at scrape time (a custom collector), so every worker process and
every host on one store answers the same numbers:

- per session (``session``, ``segment``) and column (``column``), from the latest bucket of the
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

Request durations are not measured: timing every request would put a histogram update (and a
lock) on the upload route, which is tuned for throughput, and per-process histograms would differ
between workers, which this endpoint avoids. The reverse proxy or the access log measure them.

On a loopback bind the endpoint is open; on any other, it needs ``Authorization: Bearer <token>``
with ``--metrics-token`` (``$SONGBIRD_METRICS_TOKEN``), and answers 404 when no token is set.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from whylogs_songbird.server.common import error_response, is_loopback_host
from whylogs_songbird.server.notify import queue_of

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
            "songbird_ingest_pending", "stored profiles not yet summarised", value=self.store.metadata.pending_ingest()
        )
        counts = self.queue.notification_counts()
        yield GaugeMetricFamily(
            "songbird_notifications_pending", "notifications waiting to be sent", value=counts["pending"]
        )
        states = GaugeMetricFamily("songbird_notifications", "notifications by state", labels=["state"])
        for state, n in counts.items():
            states.add_metric([state], n)
        yield states


def mount_metrics(app: FastAPI, store: Store, config: ServerConfig, timeline: TimelineService) -> None:
    """Add ``GET /metrics`` and record each session's numbers when its monitors are evaluated."""
    queue = queue_of(store.metadata)

    def record(session_id: str, document: dict[str, Any]) -> None:
        queue.put_metric_snapshot(session_id, json.dumps(snapshot(document), separators=(",", ":")))

    timeline.evaluated.append(record)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(queue, store, config.metrics_max_series))
    open_to_all = is_loopback_host(config.host)
    token = config.metrics_token

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        refused = access_problem(open_to_all, token, request.headers.get("authorization"))
        if refused is not None:
            return error_response(*refused)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def access_problem(open_to_all: bool, token: str | None, authorization: str | None) -> tuple[int, str] | None:
    """(status, message) refusing a scrape, or None to answer it (see the module docstring)."""
    if open_to_all:
        return None
    if not token:
        return 404, "/metrics is served on a loopback bind, or with --metrics-token (a bearer token) elsewhere."
    if not hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode()):
        return 401, "/metrics needs the header Authorization: Bearer <the --metrics-token>."
    return None


__all__ = ["StoreCollector", "access_problem", "mount_metrics", "snapshot"]
