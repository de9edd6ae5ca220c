"""The timeline over real HTTP: profiles go through the songbird writer to a LocalServer on a free
loopback port; the JSON API, the page, the server's monitors and `songbird check` are checked."""

from __future__ import annotations

import functools
import html
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
import whylogs as why
from timeline_data import DAY_MS, DAYS, SHIFT_DAY, SHIFTED, START_MS, day_frame, reference_frame, rows_of_day
from timeline_server import MONITORS, evaluations, write
from whylogs.core import DatasetProfileView

import whylogs_songbird
from whylogs_songbird.server import LocalServer
from whylogs_songbird.server.common import observatory_link
from whylogs_songbird.timeline import column_points
from whylogs_songbird.timeline_client import fetch_timeline, timeline_frame

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def daily(tmp_path_factory: pytest.TempPathFactory, shared_sandbox):
    """A server with a session holding the reference and 30 daily batches (one column shifts from day 20)."""
    root = tmp_path_factory.mktemp("timeline")
    with LocalServer(data_dir=root / "data", list_sessions=True, sandbox=shared_sandbox) as server:
        config = root / "config"
        refs = whylogs_songbird.publish_references(
            {"training": why.log(reference_frame())}, endpoint=server.url, config_dir=str(config)
        )
        for day in range(DAYS):
            write(server, config, day_frame(day), START_MS + day * DAY_MS + 9 * HOUR_MS)
        yield {"server": server, "session_id": refs.session_id, "ref_id": refs.profiles[0].profile_id, "root": root}


def get_json(server: LocalServer, session_id: str, **params: str) -> requests.Response:
    return requests.get(f"{server.url}/api/v1/sessions/{session_id}/timeline", params=params, timeout=120)


def test_json_marks_the_shifted_column_drifted_from_day_20(daily) -> None:
    response = get_json(daily["server"], daily["session_id"], granularity="day")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert re.fullmatch(r"timeline;dur=\d+\.\d, timeline-cpu;dur=\d+\.\d", response.headers["server-timing"])
    doc = response.json()
    assert doc["granularity"] == "day"
    assert doc["reference"]["id"] == daily["ref_id"] and doc["reference"]["alias"] == "training"
    categories = doc["columns"][SHIFTED]["drift_category"]
    assert categories[SHIFT_DAY:] == ["DRIFT"] * (DAYS - SHIFT_DAY)
    assert "DRIFT" not in categories[:SHIFT_DAY]
    assert doc["column_order"][0] == SHIFTED
    for other in ("age", "income", "color"):
        assert "DRIFT" not in doc["columns"][other]["drift_category"], other
    assert doc["alerts"] == []  # no monitors loaded on this server


def test_counts_per_bucket_equal_rows_logged(daily) -> None:
    doc = get_json(daily["server"], daily["session_id"]).json()
    assert doc["granularity"] == "day"  # the default: 30 days give 30 daily points, 5 weekly ones
    assert [b["start"] for b in doc["buckets"]] == [START_MS + d * DAY_MS for d in range(DAYS)]
    assert [b["end"] - b["start"] for b in doc["buckets"]] == [DAY_MS] * DAYS
    assert [b["profiles"] for b in doc["buckets"]] == [1] * DAYS
    for name in ("score", "age", "income", "color"):
        assert doc["columns"][name]["count"] == [rows_of_day(d) for d in range(DAYS)], name
    weekly = get_json(daily["server"], daily["session_id"], granularity="week").json()
    assert sum(b["profiles"] for b in weekly["buckets"]) == DAYS
    assert sum(weekly["columns"]["age"]["count"]) == sum(rows_of_day(d) for d in range(DAYS))


def test_the_stored_timeline_is_served_again_unchanged(daily) -> None:
    first = get_json(daily["server"], daily["session_id"], granularity="day")
    second = get_json(daily["server"], daily["session_id"], granularity="day")
    assert first.content == second.content


def test_reference_by_alias_or_id_and_bad_parameters(daily) -> None:
    server, sid = daily["server"], daily["session_id"]
    by_alias = get_json(server, sid, reference="training").json()
    assert by_alias["reference"]["id"] == daily["ref_id"]
    cases = [
        ({"granularity": "fortnight"}, 400, "hour, day, week, month"),
        ({"reference": "nope"}, 404, "alias: training"),
        ({"segment": "region=eu"}, 404, "its batches are not segmented"),
    ]
    for params, status, message in cases:
        response = get_json(server, sid, **params)
        assert response.status_code == status, params
        assert message in response.json()["message"], response.json()
    unknown = get_json(server, "session-AAAAAAAAAAAAAAAAAAAAAAAA")
    assert unknown.status_code == 404 and "is unknown to this server" in unknown.json()["message"]
    assert get_json(server, "not-a-session").status_code == 400


def test_notebook_helper_gives_a_frame(daily) -> None:
    frame = timeline_frame(daily["server"].url, daily["session_id"], granularity="day")
    drifted = frame[(frame.column == SHIFTED) & (frame.drift_category == "DRIFT")]
    assert len(drifted) == DAYS - SHIFT_DAY
    assert drifted.start.min() == pd.Timestamp(START_MS + SHIFT_DAY * DAY_MS, unit="ms", tz="UTC")
    with pytest.raises(whylogs_songbird.SongbirdApiError, match="HTTP 404"):
        fetch_timeline("session-AAAAAAAAAAAAAAAAAAAAAAAA", endpoint=daily["server"].url)


def test_page_links_and_heatmap(daily) -> None:
    server, sid = daily["server"], daily["session_id"]
    page = requests.get(f"{server.url}/sessions/{sid}/timeline", timeout=120)
    assert page.status_code == 200
    assert "render;dur=" in page.headers["server-timing"]
    html = page.text
    assert html.count('<tr data-column="') == 4
    assert html.index('data-column="score"') < html.index('data-column="age"')  # most drifted first
    assert html.count('class="hD"') == DAYS - SHIFT_DAY
    assert "<script>" not in html and "onclick" not in html  # scripts only from /static (strict CSP)
    first = f"profile={daily['ref_id']}&amp;profile={START_MS + 9 * HOUR_MS}&amp;sessionToken={sid}"
    assert first in html
    session_page = requests.get(f"{server.url}/sessions/{sid}", timeout=30).text
    assert f'href="/sessions/{sid}/timeline"' in session_page
    landing = requests.get(f"{server.url}/", timeout=30).text
    assert f'href="/sessions/{sid}/timeline"' in landing
    for name in ("timeline.js", "timeline.css"):
        assert requests.get(f"{server.url}/static/{name}", timeout=30).status_code == 200
    missing = requests.get(f"{server.url}/sessions/session-AAAAAAAAAAAAAAAAAAAAAAAA/timeline", timeout=30)
    assert missing.status_code == 404 and "is unknown to this server" in missing.text


def test_hourly_uploads_merge_into_daily_buckets_like_whylogs(tmp_path: Path, shared_sandbox) -> None:
    frames = {(d, h): day_frame(d * 24 + h)[: 60 + h] for d in range(2) for h in range(0, 24, 4)}
    with LocalServer(data_dir=tmp_path / "data", sandbox=shared_sandbox) as server:
        config = tmp_path / "config"
        session_id = None
        for (day, hour), df in frames.items():
            write(server, config, df, START_MS + day * DAY_MS + hour * HOUR_MS, session_id)
            session_id = whylogs_songbird.current_session(endpoint=server.url, config_dir=str(config))
        assert session_id is not None
        daily_doc = get_json(server, session_id, granularity="day").json()
        hourly_doc = get_json(server, session_id, granularity="hour").json()
    assert [b["profiles"] for b in daily_doc["buckets"]] == [6, 6]
    assert len(hourly_doc["buckets"]) == 12
    for day in range(2):
        # whylogs' own merge of the profiles as uploaded (serialized), in time order
        views = [why.log(frames[(day, h)]).view() for h in range(0, 24, 4)]
        uploaded = [DatasetProfileView.deserialize(view.serialize()) for view in views]
        merged = functools.reduce(lambda a, b: a.merge(b), uploaded)
        for name, point in column_points(merged).items():
            series = daily_doc["columns"][name]
            assert series["count"][day] == point.count == sum(len(frames[(day, h)]) for h in range(0, 24, 4))
            assert series["null_count"][day] == point.null_count
            for stat in ("mean", "p5", "p50", "p95", "distinct", "top_share"):
                value = point.value(stat)
                # the server rebuilds views from its stored digests: the distinct-count (HLL) estimate of
                # their merge differs from that of merged deserialized views, within HLL's error (~1.6%)
                tolerance = 0.02 if stat == "distinct" else 1e-9
                expected = None if value is None else pytest.approx(value, rel=tolerance)
                assert series[stat][day] == expected, (name, stat)


# -- monitors: on the server, and `songbird check` -------------------------------------------


def songbird(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGBIRD_")}
    env["WHYLOGS_NO_ANALYTICS"] = "True"
    return subprocess.run(
        [sys.executable, "-m", "whylogs_songbird", *args], capture_output=True, text=True, timeout=120, env=env
    )


def wait_until(condition, what: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_monitors_alert_on_the_server_and_check_exits_1_on_the_drifted_day(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shared_sandbox
) -> None:
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.timeline")
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(MONITORS)
    with LocalServer(data_dir=tmp_path / "data", monitors=monitors, sandbox=shared_sandbox) as server:
        config = tmp_path / "config"
        refs = whylogs_songbird.publish_references(
            {"training": why.log(reference_frame())}, endpoint=server.url, config_dir=str(config)
        )
        sid = refs.session_id
        for day in (SHIFT_DAY - 2, SHIFT_DAY - 1):
            write(server, config, day_frame(day), START_MS + day * DAY_MS, sid)
        clean_bucket = f"bucket from {START_MS + (SHIFT_DAY - 1) * DAY_MS}: 0 failure(s)"
        wait_until(lambda: any(clean_bucket in m for m in evaluations(caplog, sid)), "the monitors of the clean day")
        assert not any(m.startswith("monitor failed") for m in evaluations(caplog, sid))
        clean = songbird("check", "--session", sid, "--monitors", str(monitors), "--endpoint", server.url)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "OK: no monitor failed on 1 day bucket" in clean.stdout

        write(server, config, day_frame(SHIFT_DAY), START_MS + SHIFT_DAY * DAY_MS, sid)
        drifted_bucket = f"bucket from {START_MS + SHIFT_DAY * DAY_MS}: 1 failure(s)"
        wait_until(lambda: any(drifted_bucket in m for m in evaluations(caplog, sid)), "the drifted day's monitors")
        failed = [m for m in evaluations(caplog, sid) if m.startswith("monitor failed")]
        assert len(failed) == 1 and f"column {SHIFTED}: DRIFT against the reference" in failed[0]
        doc = get_json(server, sid).json()
        assert [(a["column"], a["start"]) for a in doc["alerts"]] == [(SHIFTED, START_MS + SHIFT_DAY * DAY_MS)]
        page = requests.get(f"{server.url}/sessions/{sid}/timeline", timeout=60).text
        assert 'id="alerts"' in page and 'data-alert-column="score"' in page

        drifted = songbird("check", "--session", sid, "--monitors", str(monitors), "--endpoint", server.url)
        assert drifted.returncode == 1, drifted.stdout + drifted.stderr
        assert "score" in drifted.stdout and "DRIFT against the reference" in drifted.stdout
        every = songbird("check", "--session", sid, "--monitors", str(monitors), "--endpoint", server.url, "--all")
        assert every.returncode == 1 and "1 monitor failure(s)" in every.stdout

        bad_column = tmp_path / "bad.toml"
        bad_column.write_text('[[monitor]]\ncolumns = ["scroe"]\nmetric = "mean"\nmax = 1\n')
        bad = songbird("check", "--session", sid, "--monitors", str(bad_column), "--endpoint", server.url)
        assert bad.returncode == 2
        expected = "unknown column 'scroe'; the session's columns: age, color, income, score"
        assert expected in " ".join(bad.stderr.split())
        bad_metric = tmp_path / "metric.toml"
        bad_metric.write_text('[[monitor]]\ncolumns = ["score"]\nmetric = "avg"\nmax = 1\n')
        bad = songbird("check", "--session", sid, "--monitors", str(bad_metric), "--endpoint", server.url)
        assert bad.returncode == 2 and "valid metrics: drift, count" in " ".join(bad.stderr.split())
        nobody = "session-BBBBBBBBBBBBBBBBBBBBBBBB"
        unknown = songbird("check", "--session", nobody, "--monitors", str(monitors), "--endpoint", server.url)
        assert unknown.returncode == 2 and "HTTP 404" in unknown.stderr


def test_serve_refuses_a_bad_monitors_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the serve command's entry point in this process (tests/server/api/test_notify.py runs
    a refused monitors file in a process of its own)."""
    from whylogs_songbird.server.cli import main as serve_main

    bad = tmp_path / "m.toml"
    bad.write_text('[[monitor]]\ncolumns = ["*"]\nmetric = "drift"\nmax = 1\n')
    assert serve_main(["--port", "0", "--data-dir", str(tmp_path / "d"), "--monitors", str(bad)]) == 2
    assert "not min/max" in capsys.readouterr().err


def test_page_view_links_a_bucket_of_many_batches_to_its_last_one() -> None:
    from whylogs_songbird.server.routes.timeline import page_view

    document = {
        "session_id": "session-AAAAAAAAAAAAAAAAAAAAAAAA",
        "granularity": "week",
        "reference": {"id": "ref-AAAAAAAAAAAAAAAAAAAAAAAA", "alias": "training", "timestamp": None},
        "segment": "plan=basic",
        "buckets": [{"start": START_MS, "end": START_MS + 7 * DAY_MS, "profiles": 3}],
        "batch_timestamps": [[START_MS, START_MS + DAY_MS, START_MS + 2 * DAY_MS]],
        "columns": {
            "a": {"drift_category": ["DRIFT"], "drift_p_value": [0.001], "count": [10], "worst_drift": "DRIFT"},
            "b": {"drift_category": [None], "drift_p_value": [None], "count": [None], "worst_drift": None},
        },
        "column_order": ["a", "b"],
    }
    view = page_view(document, "http://127.0.0.1:1")
    (bucket,) = view["buckets"]
    assert bucket["link"] == (
        "http://127.0.0.1:1/resources/model-1/profiles?profile=ref-AAAAAAAAAAAAAAAAAAAAAAAA"
        f"&profile={START_MS + 2 * DAY_MS}&sessionToken=session-AAAAAAAAAAAAAAAAAAAAAAAA&segment=plan%3Dbasic"
    )
    assert "3 profiles, the comparison opens the last one" in bucket["title"]
    assert [row["cells"][0][0] for row in view["rows"]] == ["hD", "hA"]


def test_songbird_serve_refuses_a_bad_monitors_file(tmp_path: Path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text('[[monitor]]\ncolumns = ["nope"]\nmetric = "mean"\n')
    result = songbird("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--monitors", str(bad))
    assert result.returncode == 2
    assert "a mean monitor needs min and/or max" in result.stderr


def _shown_types(page: str) -> dict[str, str]:
    """The type each column card of an observatory page shows, by column name."""
    found = re.findall(
        r'<article class="column-card"[^>]*data-column="([^"]*)".*?<span class="type">([^<]*)</span>', page, re.S
    )
    return {html.unescape(name): html.unescape(types) for name, types in found}


def test_a_mixed_column_has_one_type_in_the_timeline_and_on_the_pages(tmp_path: Path, shared_sandbox) -> None:
    """600 strings and 400 integers, or 50% integers, 10% floats and 40% strings, is "mixed" in the
    timeline JSON, on the profile page and on the comparison page alike."""
    mixed = pd.DataFrame(
        {
            "strings_and_ints": pd.Series([*range(400), *(f"s{i}" for i in range(600))], dtype=object),
            "ints_floats_strings": pd.Series(
                [*range(500), *(i + 0.5 for i in range(100)), *(f"s{i}" for i in range(400))], dtype=object
            ),
            "amount": [i / 4 for i in range(1000)],
        }
    )
    with LocalServer(data_dir=tmp_path / "data", sandbox=shared_sandbox) as server:
        config = tmp_path / "config"
        refs = whylogs_songbird.publish_references(
            {"training": why.log(mixed)}, endpoint=server.url, config_dir=str(config)
        )
        ok, profile_url = (
            why.log(mixed)
            .writer("songbird")
            .option(endpoint=server.url, config_dir=str(config), dataset_timestamp=START_MS)
        ).write()
        assert ok
        timeline = get_json(server, refs.session_id)
        assert timeline.status_code == 200, timeline.text
        profile_page = requests.get(profile_url, timeout=60)
        comparison_url = observatory_link(server.url, refs.session_id, [refs.profiles[0].profile_id, START_MS])
        comparison_page = requests.get(comparison_url, timeout=60)
    assert profile_page.status_code == comparison_page.status_code == 200
    on_profile, on_comparison = _shown_types(profile_page.text), _shown_types(comparison_page.text)
    expected = {"strings_and_ints": "mixed", "ints_floats_strings": "mixed", "amount": "fractional"}
    for name, wanted in expected.items():
        assert timeline.json()["columns"][name]["type"] == on_profile[name] == on_comparison[name] == wanted, name
