"""``GET /metrics`` over real HTTP: Prometheus' own parser reads it, and it carries the drift of the
column that drifted (timeline_data's shifted day), read from the store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
import whylogs as why
from conftest import both_stores
from paths import REPO_ROOT
from prometheus_client.parser import text_string_to_metric_families
from request_metrics import PUT_ROUTE, SLOT_ROUTE, make_uploads, request_counts, samples, wait_for_counts  # noqa: F401
from timeline_data import DAY_MS, SHIFT_DAY, SHIFTED, START_MS, day_frame, reference_frame

import whylogs_songbird
from whylogs_songbird.server import LocalServer
from whylogs_songbird.server.metrics import COLUMN_METRICS, access_problem

MONITORS = """reference = "training"
granularity = "day"

[[monitor]]
columns = ["*"]
metric = "drift"
"""


def of_column(found: dict, name: str, column: str) -> float:
    [value] = [v for labels, v in found[name] if labels["column"] == column]
    return value


@both_stores
def test_metrics_parse_and_carry_the_drift_of_the_drifted_column(server_factory, tmp_path: Path) -> None:
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(MONITORS)
    server = server_factory(monitors=monitors)
    config = tmp_path / "config"
    refs = whylogs_songbird.publish_references(
        {"training": why.log(reference_frame())}, endpoint=server.url, config_dir=str(config)
    )
    for day in (SHIFT_DAY - 1, SHIFT_DAY):
        options = {"endpoint": server.url, "config_dir": str(config), "dataset_timestamp": START_MS + day * DAY_MS}
        ok, _ = why.log(day_frame(day)).writer("songbird").option(session_id=refs.session_id, **options).write()
        assert ok
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        response = requests.get(f"{server.url}/metrics", timeout=30)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        if found.get("songbird_monitor_failing"):
            break
        time.sleep(0.1)
    assert of_column(found, "songbird_column_drift_category", SHIFTED) == 2
    assert of_column(found, "songbird_column_drift_p_value", SHIFTED) < 0.05
    for other in ("age", "income", "color"):
        assert of_column(found, "songbird_column_drift_category", other) == 0, other
    assert of_column(found, "songbird_column_count", SHIFTED) == len(day_frame(SHIFT_DAY))
    assert of_column(found, "songbird_column_null_fraction", "income") == pytest.approx(0.05, abs=0.01)
    assert of_column(found, "songbird_column_mean", SHIFTED) == pytest.approx(650, abs=5)
    [(labels, value)] = found["songbird_monitor_failing"]
    assert labels == {"session": refs.session_id, "segment": "", "monitor": "drift vs reference", "column": SHIFTED}
    assert value == 1
    uploads = {labels["kind"]: v for labels, v in found["songbird_uploads_total"]}
    assert uploads == {"batch": 2, "reference": 1}
    assert found["songbird_notifications_pending"] == [({}, 0)]
    assert [v for _, v in found["songbird_ingest_pending"]] == [
        pytest.approx(v) for _, v in found["songbird_ingest_pending"]
    ]


def test_the_series_cap_and_the_token_off_loopback(tmp_path: Path) -> None:
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(MONITORS)
    with LocalServer(data_dir=tmp_path / "d", monitors=monitors, metrics_max_series=6) as server:
        config = tmp_path / "config"
        refs = whylogs_songbird.publish_references(
            {"training": why.log(reference_frame())}, endpoint=server.url, config_dir=str(config)
        )
        options = {"endpoint": server.url, "config_dir": str(config), "dataset_timestamp": START_MS}
        ok, _ = why.log(day_frame(0)).writer("songbird").option(session_id=refs.session_id, **options).write()
        assert ok
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            found = samples(requests.get(f"{server.url}/metrics", timeout=30).text)
            if found.get("songbird_column_count"):
                break
            time.sleep(0.1)
        kept = sum(len(found.get(name, [])) for name in found if name.startswith("songbird_column_"))
        assert kept <= 6 and found["songbird_metrics_series_dropped"][0][1] > 0


def test_off_loopback_metrics_need_the_token() -> None:
    assert access_problem(True, None, None) is None  # a loopback bind: open
    assert access_problem(False, "t0ken", "Bearer t0ken") is None
    for token, header, status in ((None, None, 404), ("t0ken", None, 401), ("t0ken", "Bearer nope", 401),
                                  ("t0ken", "t0ken", 401)):  # fmt: skip
        problem = access_problem(False, token, header)
        assert problem is not None and problem[0] == status and "--metrics-token" in problem[1]
        assert "t0ken" not in problem[1]


def test_the_grafana_examples_use_metrics_the_server_writes(tmp_path: Path) -> None:
    import json
    import re

    import yaml

    examples = REPO_ROOT / "examples" / "grafana"
    dashboard = json.loads((examples / "dashboard.json").read_text())
    rules = yaml.safe_load((examples / "songbird-rules.yml").read_text())
    scrape = yaml.safe_load((examples / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["metrics_path"] == "/metrics"
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {name for e in expressions for name in re.findall(r"songbird_[a-z_]+", e)}
    with LocalServer(data_dir=tmp_path / "d") as server:
        text = requests.get(f"{server.url}/metrics", timeout=30).text
    families = list(text_string_to_metric_families(text))
    written = {family.name for family in families}
    written |= {f"{f.name}_{part}" for f in families if f.type == "histogram" for part in ("bucket", "count", "sum")}
    written |= {f"{name}_total" for name in written}  # counters are written with _total
    written |= {name for name, _, _ in COLUMN_METRICS} | {"songbird_monitor_failing"}  # (none without monitors)
    assert used and used <= written, used - written


def test_request_durations_are_counted_per_route_template(server) -> None:
    session_id = make_uploads(server.url, 3)
    assert requests.get(f"{server.url}/no/such/{session_id}", timeout=30).status_code == 404
    expected = {
        ("POST", "/v0/sessions", "2xx"): 1,
        ("POST", SLOT_ROUTE, "2xx"): 3,
        ("PUT", PUT_ROUTE, "2xx"): 3,
        ("PUT", PUT_ROUTE, "4xx"): 1,
        ("GET", "unmatched", "4xx"): 1,
    }
    counts = wait_for_counts(server.url, expected)
    assert {key: counts.get(key) for key in expected} == expected
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    assert session_id not in text and "signature" not in text  # templates only, never a raw path
    found = samples(text)
    [inf] = [
        v
        for labels, v in found["songbird_request_duration_seconds_bucket"]
        if labels["route"] == PUT_ROUTE and labels["status"] == "2xx" and labels["le"] == "+Inf"
    ]
    assert inf == 3
