"""The demo: deterministic data with drift, and ``songbird demo`` end to end (links that open)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import requests

from whylogs_songbird import demo

URL = re.compile(r"https?://\S+")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def songbird_command() -> list[str]:
    """The venv's ``songbird`` script when it is installed next to this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("songbird")
    return [str(script)] if script.exists() else [sys.executable, "-m", "whylogs_songbird"]


def clean_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGBIRD_", "WHYLABS_"))}
    env["WHYLOGS_NO_ANALYTICS"] = "True"
    # If anything ignored --endpoint, it would hit a closed loopback port, never the network.
    env["SONGBIRD_API_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    return env


# -- the data -------------------------------------------------------------------------------


def test_data_is_deterministic():
    pd.testing.assert_frame_equal(
        demo.loan_applications(300, seed=7, drift=0.4), demo.loan_applications(300, seed=7, drift=0.4)
    )
    first = demo.make_demo_data(7, last=date(2024, 5, 7))
    second = demo.make_demo_data(7, last=date(2024, 5, 7))
    pd.testing.assert_frame_equal(first.reference, second.reference)
    for a, b in zip(first.batches, second.batches):
        pd.testing.assert_frame_equal(a.frame, b.frame)
        assert a.column_drift == b.column_drift


def test_data_has_numeric_and_categorical_columns():
    frame = demo.loan_applications(500)
    assert set(demo.NUMERIC_COLUMNS) <= set(frame.select_dtypes("number").columns)
    assert set(frame["employment"]) <= set(demo.EMPLOYMENT)
    assert set(frame["purpose"]) <= set(demo.PURPOSES)
    assert 0 < frame["annual_income"].isna().sum() < 50, "a few missing incomes"


@pytest.mark.parametrize("bad", [{"rows": 0}, {"rows": 10, "drift": 1.5}])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        demo.loan_applications(**bad)


def test_days_are_successive_midnights_utc():
    days = demo.demo_days(7, last=date(2024, 5, 7))
    assert days[0] == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert days[-1] == datetime(2024, 5, 7, tzinfo=timezone.utc)
    assert all(b - a == timedelta(days=1) for a, b in zip(days, days[1:]))
    data = demo.make_demo_data(7, last=date(2024, 5, 7))
    assert data.batches[0].dataset_timestamp == 1714521600000
    default = demo.demo_days(3)
    assert default[-1].date() == datetime.now(timezone.utc).date()


def test_drift_grows_in_the_later_days():
    data = demo.make_demo_data(7, last=date(2024, 5, 7))
    scores = [batch.score for batch in data.batches]
    assert max(scores[:3]) < 0.15, "the first days look like the training data"
    assert min(scores[4:6]) > 0.3, "the incident days do not"
    assert data.most_drifted is data.batches[5]
    assert data.most_drifted.most_drifted_column == "credit_score"


def test_drift_score_of_identical_data_is_zero():
    frame = demo.loan_applications(200)
    assert set(demo.drift_score(frame, frame).values()) == {0.0}


def test_drift_levels_keep_their_shape_for_other_lengths():
    assert demo.drift_levels(7) == list(demo.DRIFT_SHAPE)
    levels = demo.drift_levels(14)
    assert len(levels) == 14 and levels[0] == 0.0 and max(levels) <= 1.0
    assert levels.index(max(levels)) > 7


def test_profile_demo_reports_progress():
    data = demo.make_demo_data(3, last=date(2024, 5, 7))
    seen = []
    items = demo.profile_demo(data, lambda step, done, total: seen.append((step, done, total)))
    assert len(items) == 4 and items[0].alias == "training"
    assert [i.dataset_timestamp for i in items[1:]] == [b.dataset_timestamp for b in data.batches]
    assert items[0].dataset_timestamp < items[1].dataset_timestamp
    assert seen[-1] == ("profile", 4, 4)


# -- the flow, in process -------------------------------------------------------------------


def page_names_profile(page: str, label_or_stamp: list[str]) -> bool:
    return any(text in page for text in label_or_stamp)


def test_run_demo_publishes_and_links(server, tmp_path):
    report = demo.run_demo(3, endpoint=server.url, config_dir=tmp_path / "config", outbox=False)
    assert report.result.ok and len(report.result.profiles) == 4
    links = report.links()
    assert [label for label, _ in links][0] == "reference training"
    assert len(links) == 5
    worst = report.most_drifted
    assert str(worst.dataset_timestamp) in report.comparison_url
    assert report.reference.profile_id in report.comparison_url
    for _, url in links:
        assert requests.get(url, timeout=30).status_code == 200
    assert "songbird demo" in report._repr_html_()
    stats = server.stats()
    assert stats["create_session"] == 1 and stats["put"] == 4 and stats["reference"] == 1


# -- songbird demo, as a user runs it -------------------------------------------------------


def test_demo_no_wait_on_a_fresh_machine(tmp_path):
    data_dir, config_dir = tmp_path / "data", tmp_path / "config"
    started = time.monotonic()
    done = subprocess.run(
        [*songbird_command(), "demo", "--no-wait", "--data-dir", str(data_dir), "--config-dir", str(config_dir)],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    urls = URL.findall(done.stdout)
    assert len(urls) == 1 + 7 + 1 + 1, done.stdout  # reference, 7 days, comparison, the session's page
    assert all("/resources/model-1/profiles?" in url for url in urls[:-1])
    assert "/sessions/session-" in urls[-1]
    assert "most drifted" in done.stdout
    assert (data_dir / "songbird.sqlite3").exists(), "--data-dir keeps the server's data"
    assert (config_dir / "sessions.json").exists(), "--config-dir holds the demo's session"
    assert "Traceback" not in done.stderr
    print(f"songbird demo --no-wait took {elapsed:.1f}s")


def test_demo_against_a_running_server_links_all_open(server, tmp_path):
    done = subprocess.run(
        [*songbird_command(), "demo", "--no-wait", "--endpoint", server.url, "--config-dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    urls = URL.findall(done.stdout)
    assert len(urls) == 9
    assert all(url.startswith(server.url) for url in urls)
    days = [line.split()[0] for line in done.stdout.splitlines() if re.match(r"^\s+\d{4}-\d{2}-\d{2}\s+drift", line)]
    assert len(days) == 7
    reference_page = requests.get(urls[0], timeout=30)
    assert reference_page.status_code == 200 and "training" in reference_page.text
    for day, url in zip(days, urls[1:8]):
        page = requests.get(url, timeout=30)
        assert page.status_code == 200, url
        stamp = str(int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000))
        assert page_names_profile(page.text, [day, stamp]), f"the page of {url} does not name {day}"
    compare = requests.get(urls[-1], timeout=30)
    assert compare.status_code == 200
    worst_day = next(line.split()[0] for line in done.stdout.splitlines() if "most drifted" in line and "drift" in line)
    assert "training" in compare.text and page_names_profile(compare.text, [worst_day])
    assert server.stats().get("put") == 8


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_serves_until_stopped_and_cleans_up(tmp_path, stop):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = clean_env(tmp_path)
    env["TMPDIR"] = str(scratch)  # the embedded server's data and the demo's session go here by default
    proc = subprocess.Popen(
        [*songbird_command(), "demo", "--days", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        urls: list[str] = []
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while len(urls) < 6 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            urls.extend(URL.findall(line))
        assert len(urls) == 6, urls  # reference, 3 days, comparison, the session's page
        time.sleep(0.5)
        assert proc.poll() is None, "the demo keeps serving without --no-wait"
        for url in urls:
            assert requests.get(url, timeout=30).status_code == 200, url
        assert len(list(scratch.iterdir())) == 2, "a data dir for the server, a config dir for the session"
        proc.send_signal(stop)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Ctrl-C" in stderr and "Traceback" not in stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(urls[-1], timeout=5)
    assert list(scratch.iterdir()) == [], "the temporary dirs are removed on exit"


def test_demo_endpoint_with_server_options_is_a_usage_error(tmp_path):
    from typer.testing import CliRunner

    from whylogs_songbird.cli import app

    result = CliRunner().invoke(app, ["demo", "--no-wait", "--endpoint", "http://127.0.0.1:9", "--port", "8000"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --data-dir and --port")


def test_demo_against_an_unreachable_endpoint_fails_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from whylogs_songbird.cli import app

    endpoint = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app,
        ["demo", "--no-wait", "--endpoint", endpoint, "--config-dir", str(tmp_path / "c"), "--max-retries", "0"],
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "could not reach" in errors[0]
    assert result.stdout == ""
    assert not (tmp_path / "c" / "outbox").exists(), "the demo keeps nothing in the outbox"
