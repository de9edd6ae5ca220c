"""The docs site builds with ``mkdocs build --strict`` (offline), and says what the code does."""

import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from whylogs_songbird.config import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("publish_references", "SongbirdWriter", "resolve_settings", "claim_session", "LocalServer"):
        assert 'id="whylogs_songbird.' in api and name in api, f"the API reference lacks {name}"
    for image in ("observatory-profile.png", "observatory-compare.png", "observatory-session.png"):
        assert (tmp_path / "img" / image).exists()


def test_mkdocs_config_fetches_nothing():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+font: false", config, re.MULTILINE), "web fonts would be fetched at build time"
    assert "google_analytics" not in config and "analytics:" not in config
    for plugin in ("social", "privacy", "optimize"):
        assert f"- {plugin}" not in config


def test_configuration_page_lists_every_setting_and_environment_variable():
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for field in fields(Settings):
        assert f"`{field.name}`" in page, f"configuration.md does not list the setting {field.name}"
    for variables in ENV_VARS.values():
        for variable in variables:
            assert f"`{variable}`" in page, f"configuration.md does not list {variable}"
    assert "`SONGBIRD_CONFIG_DIR`" in page
    for writer_option in ("reference_profile_name", "dataset_timestamp"):
        assert f"`{writer_option}`" in page


def test_cli_page_covers_every_command():
    from whylogs_songbird.cli import app, outbox_app, server_app, session_app
    from whylogs_songbird.cli.alerts import alerts_app

    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    for command in app.registered_commands:
        assert f"## `songbird {command.name}`" in page
    groups = (("session", session_app), ("outbox", outbox_app), ("server", server_app), ("alerts", alerts_app))
    for group, sub in groups:
        assert f"## `songbird {group}`" in page
        for command in sub.registered_commands:
            assert f"songbird {group} {command.name}" in page


@pytest.mark.parametrize(
    "fragment",
    [
        "is not an http(s) URL",
        "could not reach",
        "did not answer in time",
        "looks like epoch seconds",
        "is not a serialized whylogs profile",
        "The session is unknown, expired or claimed",
        "The upload URL was refused",
        "is not valid JSON",
        "did you mean",
        "and 64, not",
        "backoff must be from 0 to 60 seconds",
        "is before 1970",
        "is more than a year in the future",
        "A reference profile name must be a non-empty string.",
        "is given twice",
        "check that the endpoint is a songbird API",
        "does not match the songbird contract",
    ],
)
def test_troubleshooting_quotes_the_real_messages(fragment):
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    assert fragment in page
    sources = "".join(
        (ROOT / "whylogs_songbird" / name).read_text(encoding="utf-8")
        for name in ("client.py", "config.py", "profiles.py", "session.py")
    )
    assert fragment in sources, f"{fragment!r} is no longer an error message of the library: update the page"
