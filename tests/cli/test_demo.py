"""The demo: deterministic data with drift, and ``songbird demo`` end to end (links that open)."""

import os
import re
import socket
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import requests
from conftest import health as health_of
from paths import REPO_ROOT

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


def fresh_machine_env(tmp_path: Path, port: int) -> dict:
    """A user with nothing set: fresh HOME and XDG dirs, no SONGBIRD_*/WHYLABS_* variables.

    Only the embedded server's port is moved off the default port (SONGBIRD_LOCAL_PORT), so tests never meet a
    real server there, nor each other.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGBIRD_", "WHYLABS_", "XDG_"))}
    env.update(
        WHYLOGS_NO_ANALYTICS="True",
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
        SONGBIRD_LOCAL_PORT=str(port),
    )
    return env


@pytest.fixture
def background_port(tmp_path):
    """A free port for the embedded default server of a subprocess; the server is stopped afterwards."""
    port = free_port()
    yield port
    subprocess.run(
        [*songbird_command(), "server", "stop"], env=fresh_machine_env(tmp_path, port), capture_output=True, timeout=60
    )


def test_demo_on_a_fresh_machine_leaves_links_that_open_until_server_stop(tmp_path, background_port):
    env = fresh_machine_env(tmp_path, background_port)
    env["PATH"] = "/usr/bin:/bin"  # as after scripts/demo: the venv's songbird is not on PATH (issue 22)
    done = subprocess.run(
        [*songbird_command(), "demo", "--no-wait", "--days", "3"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    urls = URL.findall(done.stdout)
    assert len(urls) == 1 + 1 + 3 + 1 + 1, done.stdout  # timeline, reference, 3 days, comparison, session page
    assert all(url.startswith(f"http://127.0.0.1:{background_port}/") for url in urls)
    stop_line = done.stdout.rstrip().splitlines()[-1]
    venv_script = Path(sys.executable).parent / "songbird"
    if venv_script.exists():  # the script, relative to where the demo ran when it lies below it
        relative = os.path.relpath(venv_script)
        command = relative if not relative.startswith("..") else str(venv_script)
    else:
        command = f"{sys.executable} -m whylogs_songbird"
    assert stop_line == f"Stop it with: {command} server stop --port {background_port}", "a command that runs here"
    data_dir = tmp_path / "xdg-data" / "whylogs-songbird" / "server"
    assert (data_dir / "songbird.sqlite3").exists(), "the server keeps its data in the user data dir"
    for url in urls:  # the demo has exited: the links still open
        assert requests.get(url, timeout=30).status_code == 200, url

    health = health_of(f"http://127.0.0.1:{background_port}", data_dir)
    again = subprocess.run(
        [*songbird_command(), "demo", "--no-wait", "--days", "2"], capture_output=True, text=True, env=env, timeout=300
    )
    assert again.returncode == 0, again.stderr
    after = health_of(f"http://127.0.0.1:{background_port}", data_dir)
    assert after["pid"] == health["pid"], "a second run reuses the running server"
    assert after["sessions"] == health["sessions"] + 1, "each demo run has a session of its own"

    status = subprocess.run(
        [*songbird_command(), "server", "status"], capture_output=True, text=True, env=env, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert f"pid:      {health['pid']}" in status.stdout and str(data_dir) in status.stdout
    assert "sessions: 2" in status.stdout and "uptime:" in status.stdout

    stop = subprocess.run([*songbird_command(), "server", "stop"], capture_output=True, text=True, env=env, timeout=60)
    assert stop.returncode == 0 and "stopped" in stop.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(urls[0], timeout=5)
    again_stop = subprocess.run(
        [*songbird_command(), "server", "stop"], capture_output=True, text=True, env=env, timeout=60
    )
    assert again_stop.returncode == 0 and "no local songbird server runs" in again_stop.stderr


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
    assert len(urls) == 11  # the timeline first, then the reference, 7 days, comparison, the session's page
    assert all(url.startswith(server.url) for url in urls)
    timeline = urls.pop(0)
    assert timeline.endswith("/timeline") and requests.get(timeline, timeout=120).status_code == 200
    session_id = timeline.split("/")[-2]
    document = requests.get(f"{server.url}/api/v1/sessions/{session_id}/timeline", timeout=120).json()
    assert document["granularity"] == "day" and len(document["buckets"]) == 7
    latest = [series["drift_category"][-1] for series in document["columns"].values()]
    assert "DRIFT" in latest, "the demo's week drifts: its last day drifts against the reference"
    assert "/sessions/session-" in urls.pop()
    assert "server stop" not in done.stdout, "a server given by --endpoint is not ours to stop"
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


# -- scripts/demo: no reinstall when nothing changed ------------------------------------------


def _fake_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of scripts/demo and pyproject.toml, with a .venv whose python logs pip calls instead of running them."""
    root = REPO_ROOT
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "demo").write_text((root / "scripts" / "demo").read_text())
    (repo / "scripts" / "demo").chmod(0o755)
    (repo / "pyproject.toml").write_text((root / "pyproject.toml").read_text())
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    (bin_dir / "python").write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "pip $*" >> {log}; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    (bin_dir / "songbird").write_text(f'#!/usr/bin/env bash\necho "songbird $*" >> {log}\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    return repo, log


def test_scripts_demo_installs_once_until_pyproject_changes(tmp_path):
    repo, log = _fake_checkout(tmp_path)

    def run_demo() -> list[str]:
        log.unlink(missing_ok=True)
        done = subprocess.run(
            ["bash", str(repo / "scripts" / "demo"), "--no-wait"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return log.read_text().splitlines()

    first = run_demo()
    assert any("install -qq --disable-pip-version-check -e .[server]" in line for line in first)
    assert first[-1] == "songbird demo --no-wait"
    assert run_demo() == ["songbird demo --no-wait"], "nothing changed: no reinstall"
    (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + "\n# changed\n")
    assert any("install -qq --disable-pip-version-check -e .[server]" in line for line in run_demo()), (
        "pyproject.toml changed: reinstall"
    )
