"""``/metrics`` (whylogs_songbird/server/metrics.py) as logic: snapshots, the collector, the cap, access.

A timeline document's snapshot is computed from hand-written documents. The collector reads
snapshots and counts from the real embedded store (SQLite in a temporary directory); its output
is read with prometheus_client's own registry, so names, labels and values are checked as a
scraper sees them. The request histogram is driven as plain ASGI with the module's clock
replaced; the route is mounted on a FastAPI app and called in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server import metrics
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.metrics import (
    CATEGORY_NUMBERS,
    REQUEST_DURATION,
    RequestDurationMiddleware,
    StoreCollector,
    access_problem,
    mount_metrics,
    request_histogram,
    snapshot,
)
from whylogs_songbird.server.notify import queue_of
from whylogs_songbird.server.store import NewUpload, Store

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/metrics.py")


# -- snapshot ------------------------------------------------------------------------------------


def test_the_drift_categories():
    assert CATEGORY_NUMBERS == {"NO_DRIFT": 0, "POSSIBLE_DRIFT": 1, "DRIFT": 2}


def test_a_snapshot_is_the_latest_bucket_s_numbers_per_column():
    document = {
        "segment": "region=eu",
        "buckets": [{"start": 100}, {"start": 200}],
        "columns": {
            "age": {
                "drift_p_value": [0.5, 0.01],
                "drift_category": ["NO_DRIFT", "DRIFT"],
                "null_fraction": [0.0, 0.25],
                "count": [10, 12],
                "mean": [3.5, 4],
                "max": [9, 9],  # not a metric /metrics shows
            },
            "name": {
                "drift_category": ["NO_DRIFT", "POSSIBLE_DRIFT"],
                "count": [10],  # no value for the latest bucket
                "mean": [None, None],
                "null_fraction": [0.0, True],  # a bool is no number
                "drift_p_value": 0.3,  # not a series
            },
            "empty": {},
        },
        "alerts": [
            {"monitor": "drift", "column": "age", "start": 200},
            {"monitor": "drift", "column": "age", "start": 200},
            {"monitor": "nulls", "column": "age", "start": 200},
            {"monitor": "count", "column": "name", "start": 100},  # an older bucket's
            {"monitor": "a-first", "column": "zeta", "start": 200},
        ],
    }
    assert snapshot(document) == {
        "segment": "region=eu",
        "bucket": 200,
        "columns": {
            "age": {"drift_p_value": 0.01, "drift_category": 2.0, "null_fraction": 0.25, "count": 12.0, "mean": 4.0},
            "name": {"drift_category": 1.0},
            "empty": {},
        },
        "failing": [("a-first", "zeta"), ("drift", "age"), ("nulls", "age")],
    }
    assert all(isinstance(v, float) for v in snapshot(document)["columns"]["age"].values())


@pytest.mark.parametrize("category", ["NO_DRIFT", "SOMETHING_ELSE", 1, None, [1]])
def test_drift_categories_as_numbers(category):
    document = {"buckets": [{"start": 1}], "columns": {"c": {"drift_category": [category]}}}
    expected = {"NO_DRIFT": {"drift_category": 0.0}}.get(category, {}) if isinstance(category, str) else {}
    assert snapshot(document)["columns"]["c"] == expected


def test_a_document_without_buckets_has_no_numbers():
    empty = {"segment": "", "bucket": None, "columns": {}, "failing": []}
    assert snapshot({}) == empty
    assert snapshot({"buckets": None, "segment": None, "columns": {"c": {"count": [1]}}}) == empty
    assert snapshot({"buckets": [], "segment": "s=1"}) == {**empty, "segment": "s=1"}
    one = snapshot({"buckets": [{"start": 5}], "segment": None, "columns": None, "alerts": None})
    assert one == {"segment": "", "bucket": 5, "columns": {}, "failing": []}


# -- the collector -------------------------------------------------------------------------------


def put_snapshot(store: Store, session_id: str, shot: Any, updated_at: int) -> None:
    queue_of(store.metadata).put_metric_snapshot(session_id, shot if isinstance(shot, str) else json.dumps(shot))
    assert store.data_dir is not None
    with contextlib.closing(sqlite3.connect(store.data_dir / "songbird.sqlite3")) as conn, conn:
        conn.execute("UPDATE metric_snapshots SET updated_at = ? WHERE session_id = ?", (updated_at, session_id))


def scrape(store: Store, max_series: int = 10_000) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(queue_of(store.metadata), store, max_series))
    return registry


def column_values(n: int) -> dict[str, float]:
    keys = ["drift_p_value", "drift_category", "null_fraction", "count", "mean"]
    return {key: float(i) for i, key in enumerate(keys[:n])}


def test_the_collector_shows_each_session_s_columns_and_failing_monitors(store):
    put_snapshot(
        store,
        "session-a",
        {
            "segment": "r=1",
            "columns": {"age": {"drift_p_value": 0.01, "count": 12.0, "weird": 1.0}},
            "failing": [["drift", "age"]],
        },
        2000,
    )
    put_snapshot(store, "session-b", {"segment": None, "columns": {"x": {"mean": 2.5}}}, 1000)
    put_snapshot(store, "session-c", "{not json", 3000)
    registry = scrape(store)
    value = registry.get_sample_value
    a = {"session": "session-a", "segment": "r=1", "column": "age"}
    assert value("songbird_column_drift_p_value", a) == 0.01
    assert value("songbird_column_count", a) == 12.0
    assert value("songbird_column_mean", a) is None
    assert value("songbird_column_mean", {"session": "session-b", "segment": "", "column": "x"}) == 2.5
    assert (
        value(
            "songbird_monitor_failing", {"session": "session-a", "segment": "r=1", "monitor": "drift", "column": "age"}
        )
        == 1.0
    )
    assert value("songbird_metrics_series_dropped") == 0.0
    text = generate_latest(registry).decode()
    assert "weird" not in text and "session-c" not in text
    for name, _, _ in metrics.COLUMN_METRICS:
        assert f"# TYPE {name} gauge" in text


def test_the_server_s_counts(store):
    session_id = store.create_session("u").id
    for i, kind in enumerate(["batch", "batch", "reference"]):
        upload = store.create_uploads(
            session_id, [NewUpload(kind, dataset_timestamp=i if kind == "batch" else None)], ttl_seconds=900
        )[0]
        store_profile_bytes(store, upload.id, bytes([i]) * 3)
    store.create_uploads(session_id, [NewUpload("reference")], ttl_seconds=900)  # a slot: not stored
    value = scrape(store).get_sample_value
    assert value("songbird_uploads_total", {"kind": "batch"}) == 2.0
    assert value("songbird_uploads_total", {"kind": "reference"}) == 1.0
    assert value("songbird_ingest_pending") == 3.0
    assert value("songbird_notifications_pending") == 0.0
    assert value("songbird_notifications", {"state": "pending"}) == 0.0
    text = generate_latest(scrape(store)).decode()
    assert "# HELP songbird_ingest_pending stored profiles not yet summarised" in text
    assert "# HELP songbird_uploads_total profiles stored" in text


def test_the_series_cap_at_n_and_n_plus_one(store):
    put_snapshot(
        store,
        "session-new",
        {"columns": {"a": column_values(3), "b": column_values(3), "c": column_values(2)}, "failing": [["m", "a"]]},
        3000,
    )
    put_snapshot(store, "session-old", {"columns": {"z": column_values(1)}}, 1000)
    value = scrape(store, max_series=5).get_sample_value
    labels = {"session": "session-new", "segment": ""}
    assert value("songbird_column_drift_p_value", {**labels, "column": "a"}) == 0.0  # 3: fits
    assert value("songbird_column_drift_p_value", {**labels, "column": "b"}) is None  # 6 > 5: left out whole
    assert value("songbird_column_drift_p_value", {**labels, "column": "c"}) == 0.0  # 5: exactly the cap
    assert value("songbird_monitor_failing", {**labels, "monitor": "m", "column": "a"}) is None
    assert value("songbird_column_drift_p_value", {"session": "session-old", "segment": "", "column": "z"}) is None
    assert value("songbird_metrics_series_dropped") == 3 + 1 + 1
    # a failing monitor takes a series too: it is left out when the columns filled the cap, shown below it
    eight = scrape(store, max_series=8).get_sample_value  # 3 + 3 + 2 = 8 column series
    assert eight("songbird_monitor_failing", {**labels, "monitor": "m", "column": "a"}) is None
    assert eight("songbird_metrics_series_dropped") == 1 + 1  # the monitor, and session-old's column
    nine = scrape(store, max_series=9).get_sample_value
    assert nine("songbird_monitor_failing", {**labels, "monitor": "m", "column": "a"}) == 1.0
    assert nine("songbird_metrics_series_dropped") == 1
    ten = scrape(store, max_series=10).get_sample_value
    assert ten("songbird_metrics_series_dropped") == 0


def test_the_cap_fetches_as_many_sessions_as_series_and_at_least_one(store):
    for i in range(3):
        put_snapshot(store, f"session-{i}", {"columns": {"c": column_values(1)}}, 1000 + i)
    two = scrape(store, max_series=2).get_sample_value
    assert two("songbird_metrics_series_dropped") == 0.0  # the oldest session is not even read
    assert two("songbird_column_drift_p_value", {"session": "session-2", "segment": "", "column": "c"}) == 0.0
    assert two("songbird_column_drift_p_value", {"session": "session-0", "segment": "", "column": "c"}) is None
    none = scrape(store, max_series=0).get_sample_value
    assert none("songbird_metrics_series_dropped") == 1.0  # the newest session read, and left out


# -- the request histogram -----------------------------------------------------------------------


class Clock:
    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


def histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "t_seconds", "test", labelnames=["method", "route", "status"], buckets=(0.5, 1.0), registry=registry
    )


def call(middleware: RequestDurationMiddleware, scope: dict[str, Any]) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def app_answering(status: int, route: Any = None):
    async def app(scope, receive, send):
        if route is not None:
            scope["route"] = route
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def test_a_request_is_observed_by_method_route_template_and_status_class(monkeypatch):
    registry = CollectorRegistry()
    middleware = RequestDurationMiddleware(
        app_answering(204, SimpleNamespace(path="/v0/uploads/{upload_id}")), histogram(registry)
    )
    monkeypatch.setattr(metrics, "perf_counter", Clock(10.0, 10.75))
    sent = call(middleware, {"type": "http", "method": "PUT", "path": "/v0/uploads/log-1"})
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    labels = {"method": "PUT", "route": "/v0/uploads/{upload_id}", "status": "2xx"}
    assert registry.get_sample_value("t_seconds_sum", labels) == 0.75
    assert registry.get_sample_value("t_seconds_bucket", {**labels, "le": "0.5"}) == 0.0
    assert registry.get_sample_value("t_seconds_bucket", {**labels, "le": "1.0"}) == 1.0


@pytest.mark.parametrize(
    ("method", "status", "route", "labels"),
    [
        ("BREW", 404, None, ("OTHER", "unmatched", "4xx")),
        ("GET", 599, SimpleNamespace(path=""), ("GET", "unmatched", "5xx")),
        ("DELETE", 302, SimpleNamespace(), ("DELETE", "unmatched", "3xx")),
        ("OPTIONS", 100, SimpleNamespace(path="/x"), ("OPTIONS", "/x", "1xx")),
    ],
)
def test_labels_stay_bounded(monkeypatch, method, status, route, labels):
    registry = CollectorRegistry()
    middleware = RequestDurationMiddleware(app_answering(status, route), histogram(registry))
    monkeypatch.setattr(metrics, "perf_counter", Clock(1.0, 3.0))
    call(middleware, {"type": "http", "method": method, "path": "/anything/log-123"})
    assert registry.get_sample_value("t_seconds_count", dict(zip(["method", "route", "status"], labels))) == 1.0


def test_the_known_methods():
    assert {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} == metrics.KNOWN_METHODS


def test_a_request_that_raises_is_observed_as_500(monkeypatch):
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    registry = CollectorRegistry()
    middleware = RequestDurationMiddleware(broken, histogram(registry))
    monkeypatch.setattr(metrics, "perf_counter", Clock(1.0, 1.5))
    with pytest.raises(RuntimeError):
        call(middleware, {"type": "http", "method": "GET", "path": "/"})
    assert registry.get_sample_value("t_seconds_sum", {"method": "GET", "route": "unmatched", "status": "5xx"}) == 0.5


def test_labelled_children_are_looked_up_once(monkeypatch):
    registry = CollectorRegistry()
    real = histogram(registry)
    asked: list[tuple] = []

    class Counting:
        def labels(self, *key: str) -> Any:
            asked.append(key)
            return real.labels(*key)

    middleware = RequestDurationMiddleware(app_answering(200), Counting())  # type: ignore[arg-type]
    monkeypatch.setattr(metrics, "perf_counter", Clock(0.0, 0.25, 1.0, 1.5))
    call(middleware, {"type": "http", "method": "GET", "path": "/"})
    call(middleware, {"type": "http", "method": "GET", "path": "/"})
    assert asked == [("GET", "unmatched", "2xx")]
    assert registry.get_sample_value("t_seconds_sum", {"method": "GET", "route": "unmatched", "status": "2xx"}) == 0.75


def test_other_scopes_pass_untimed():
    seen: list[tuple] = []

    async def app(scope, receive, send):
        seen.append((scope["type"], receive, send))

    class Refusing:
        def labels(self, *key: str) -> Any:
            raise AssertionError("a lifespan scope was timed")

    async def receive() -> dict:
        return {}

    async def send(message: dict) -> None:
        pass

    asyncio.run(RequestDurationMiddleware(app, Refusing())({"type": "lifespan"}, receive, send))  # type: ignore[arg-type]
    assert seen == [("lifespan", receive, send)]


def test_the_histogram_in_one_process_and_across_workers(monkeypatch, tmp_path):
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    registry = CollectorRegistry()
    single = request_histogram(registry)
    single.labels("GET", "/x", "2xx").observe(0.003)
    assert (
        registry.get_sample_value(f"{REQUEST_DURATION}_count", {"method": "GET", "route": "/x", "status": "2xx"}) == 1.0
    )
    assert (
        registry.get_sample_value(
            f"{REQUEST_DURATION}_bucket", {"method": "GET", "route": "/x", "status": "2xx", "le": "0.0025"}
        )
        == 0.0
    )
    assert (
        registry.get_sample_value(
            f"{REQUEST_DURATION}_bucket", {"method": "GET", "route": "/x", "status": "2xx", "le": "0.005"}
        )
        == 1.0
    )
    assert metrics.DURATION_BUCKETS[0] == 0.001 and metrics.DURATION_BUCKETS[-1] == float("inf")
    assert metrics.MULTIPROC_ENV == "PROMETHEUS_MULTIPROC_DIR"
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    shared_registry = CollectorRegistry()
    shared = request_histogram(shared_registry)
    shared.labels("GET", "/y", "2xx").observe(0.003)  # not in this registry: read from the workers' files
    assert (
        shared_registry.get_sample_value(f"{REQUEST_DURATION}_count", {"method": "GET", "route": "/y", "status": "2xx"})
        is None
    )
    assert any(type(c).__name__ == "MultiProcessCollector" for c in shared_registry._collector_to_names)


# -- access --------------------------------------------------------------------------------------


def test_access():
    assert access_problem(True, None, None) is None
    assert access_problem(True, "t", "Bearer wrong") is None
    no_token = (404, "/metrics is served on a loopback bind, or with --metrics-token (a bearer token) elsewhere.")
    assert access_problem(False, None, "Bearer x") == no_token
    assert access_problem(False, "", None) == no_token
    refused = (401, "/metrics needs the header Authorization: Bearer <the --metrics-token>.")
    assert access_problem(False, "s3cret", None) == refused
    assert access_problem(False, "s3cret", "Bearer s3cre") == refused
    assert access_problem(False, "s3cret", "bearer s3cret") == refused
    assert access_problem(False, "s3cret", "Bearer s3cret ") == refused
    assert access_problem(False, "s3cret", "Bearer s3cret") is None


# -- the route -----------------------------------------------------------------------------------


class Answer:
    def __init__(self, status_code: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.text = status_code, headers, body.decode()

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    """GETs through the app as plain ASGI, in process."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        sent: list[dict] = []
        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": raw,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8787),
        }

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        asyncio.run(self.app(scope, receive, send))
        start = sent[0]
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return Answer(start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body)


def mounted(store: Store, **config: Any) -> tuple[Client, list]:
    app = FastAPI()
    timeline = SimpleNamespace(evaluated=[])
    mount_metrics(app, store, ServerConfig(**config), timeline)  # type: ignore[arg-type]
    return Client(app), timeline.evaluated


def test_the_route_on_a_loopback_bind_is_open_and_records_evaluations(store, monkeypatch):
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    client, evaluated = mounted(store, host="127.0.0.1")
    (record,) = evaluated
    record("session-1", {"segment": "s=1", "buckets": [{"start": 7}], "columns": {"c": {"count": [3]}}})
    ((session_id, data),) = queue_of(store.metadata).metric_snapshots(limit=5)
    assert session_id == "session-1"
    assert data == '{"segment":"s=1","bucket":7,"columns":{"c":{"count":3.0}},"failing":[]}'
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=")
    assert 'songbird_column_count{column="c",segment="s=1",session="session-1"} 3.0' in answer.text
    assert f'{REQUEST_DURATION}_count{{method="GET",route="/metrics",status="2xx"}} 1.0' in client.get("/metrics").text


@pytest.mark.parametrize("time_requests", [True, False])
def test_the_durations_returned_are_the_ones_the_timing_middleware_observes(store, monkeypatch, time_requests):
    """One RequestDurations per histogram: mount_metrics returns the one its timing middleware
    (added only with ``time_requests``) observes into, not a second one with its own children."""
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    app = FastAPI()
    durations = mount_metrics(
        app, store, ServerConfig(host="127.0.0.1"), SimpleNamespace(evaluated=[]), time_requests=time_requests
    )  # type: ignore[arg-type]
    assert isinstance(durations, metrics.RequestDurations)
    timing = [m for m in app.user_middleware if m.cls is RequestDurationMiddleware]
    assert [m.kwargs["durations"] for m in timing] == ([durations] if time_requests else [])
    layer = app.build_middleware_stack()
    while not isinstance(layer, RequestDurationMiddleware) and hasattr(layer, "app"):
        layer = layer.app
    assert (layer.durations is durations) if time_requests else not isinstance(layer, RequestDurationMiddleware)


def test_the_route_elsewhere_needs_the_token(store, monkeypatch):
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    client, _ = mounted(store, host="0.0.0.0", metrics_token="s3cret")  # noqa: S104 - never bound here
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.json() == {"message": "/metrics needs the header Authorization: Bearer <the --metrics-token>."}
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    hidden, _ = mounted(store, host="0.0.0.0")  # noqa: S104
    assert hidden.get("/metrics").status_code == 404


def test_the_route_honours_the_series_cap(store, monkeypatch):
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    client, _ = mounted(store, host="127.0.0.1", metrics_max_series=1)
    put_snapshot(store, "session-1", {"columns": {"c": column_values(2)}}, 1000)
    assert "songbird_metrics_series_dropped 2.0" in client.get("/metrics").text


def test_every_family_is_described_for_scrapers(store, monkeypatch):
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    registry = scrape(store)
    request_histogram(registry)
    text = generate_latest(registry).decode()
    for help_line in [
        "# HELP songbird_column_drift_p_value p-value of whylogs' drift test against the reference",
        "# HELP songbird_column_drift_category drift against the reference: 0 none, 1 possible, 2 drift",
        "# HELP songbird_column_null_fraction fraction of null values",
        "# HELP songbird_column_count values counted",
        "# HELP songbird_column_mean mean of the numeric values",
        "# HELP songbird_monitor_failing 1 for each monitor failing on the latest bucket",
        "# HELP songbird_metrics_series_dropped per-column series left out by the cap (--metrics-max-series)",
        "# HELP songbird_uploads_total profiles stored",
        "# HELP songbird_ingest_pending stored profiles not yet summarised",
        "# HELP songbird_notifications_pending notifications waiting to be sent",
        "# HELP songbird_notifications notifications by state",
        f"# HELP {REQUEST_DURATION} seconds from a request's arrival to its answer, by method, route template and "
        "status class",
    ]:
        assert help_line in text


def test_failing_monitors_past_the_cap_are_each_counted(store):
    put_snapshot(
        store, "session-1", {"columns": {"a": column_values(2)}, "failing": [["m", "a"], ["n", "a"], ["o", "a"]]}, 1
    )
    value = scrape(store, max_series=3).get_sample_value
    labels = {"session": "session-1", "segment": ""}
    assert value("songbird_monitor_failing", {**labels, "monitor": "m", "column": "a"}) == 1.0
    assert value("songbird_monitor_failing", {**labels, "monitor": "n", "column": "a"}) is None
    assert value("songbird_metrics_series_dropped") == 2.0


def test_the_app_gets_the_original_receive(monkeypatch):
    seen: list[Any] = []

    async def app(scope, receive, send):
        seen.append(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    registry = CollectorRegistry()
    middleware = RequestDurationMiddleware(app, histogram(registry))

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        pass

    asyncio.run(middleware({"type": "http", "method": "GET", "path": "/"}, receive, send))
    assert seen == [receive]


def test_mounting_reads_nothing_from_the_store(store, monkeypatch):
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    queue = queue_of(store.metadata)

    def refuse(limit: int) -> list:
        raise AssertionError("the store was read at mount")

    monkeypatch.setattr(queue, "metric_snapshots", refuse)
    mounted(store, host="127.0.0.1")


def test_a_dataset_is_labelled_org_slash_dataset_never_by_its_container(store, monkeypatch):
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    client, evaluated = mounted(store, host="127.0.0.1")
    (record,) = evaluated
    container = store.dataset_container("org-1", "model-1").id
    document = {"buckets": [{"start": 7}], "columns": {"c": {"count": [3]}}}
    record(container, document)
    guest = store.create_session("u").id
    record(guest, document)
    rows = dict(queue_of(store.metadata).metric_snapshots(limit=5))
    assert json.loads(rows[container])["name"] == "org-1/model-1"
    assert "name" not in json.loads(rows[guest])
    text = client.get("/metrics").text
    assert 'songbird_column_count{column="c",segment="",session="org-1/model-1"} 3.0' in text
    assert f'songbird_column_count{{column="c",segment="",session="{guest}"}} 3.0' in text
    assert container not in text
