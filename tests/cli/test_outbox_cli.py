"""``songbird outbox`` as a newcomer reads it (issue 22 item 5): a long last error is shortened with
an ellipsis at a word; ``flush --from`` says what still waits for other endpoints; an unknown id
for ``drop`` is bad input (exit 2)."""

import os

import pytest
from typer.testing import CliRunner

from whylogs_songbird.cli import app
from whylogs_songbird.outbox import Outbox

LONG = (
    "Could not reach the songbird server at http://127.0.0.1:9 after 3 retries (ConnectionError); "
    "check that it runs and that the endpoint is right, or set another endpoint with SONGBIRD_API_ENDPOINT "
    "and deliver later with songbird outbox flush"
)


@pytest.fixture
def outbox(tmp_path) -> Outbox:
    return Outbox(tmp_path / "config" / "outbox")


def keep(outbox: Outbox, endpoint: str, data: bytes, n: int = 0, error: str = "down") -> None:
    outbox.save(endpoint=endpoint, kind="batch", data=data, dataset_timestamp=1_700_000_000_000 + n * 86_400_000,
                alias=None, segment_tags=(), error=error)


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"SONGBIRD_CONFIG_DIR": os.environ["SONGBIRD_CONFIG_DIR"]})


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SONGBIRD_CONFIG_DIR", str(tmp_path / "config"))


def test_list_shortens_a_long_error_at_a_word_with_an_ellipsis(outbox, make_profile_bytes):
    keep(outbox, "http://127.0.0.1:9", make_profile_bytes(), error=LONG)
    done = run("outbox", "list")
    assert done.exit_code == 0, done.output
    shown = done.stdout.split("last error: ", 1)[1].strip()
    assert shown.endswith(" …") and len(shown) <= 160
    assert LONG.startswith(shown[:-2]) and LONG[len(shown) - 2] == " ", "cut between words"


def test_flush_from_one_endpoint_says_what_waits_for_others(server, outbox, make_profile_bytes):
    keep(outbox, server.url, make_profile_bytes(), 0)
    keep(outbox, "http://127.0.0.1:9", make_profile_bytes(), 1)
    keep(outbox, "http://127.0.0.1:9", make_profile_bytes(), 2)
    done = run("outbox", "flush", "--from", server.url)
    assert done.exit_code == 0, done.output
    said = " ".join(done.stderr.split())
    assert "delivered 1 profile; 2 profiles saved for other endpoints still wait (`songbird outbox list`" in said
    assert len(outbox.entries()) == 2

    nobody = run("outbox", "flush", "--from", "http://127.0.0.1:8")
    assert nobody.exit_code == 0
    assert "delivered 0 profiles (none was saved for http://127.0.0.1:8); 2 profiles saved for other endpoints" in (
        " ".join(nobody.stderr.split())
    )


def test_drop_of_an_unknown_id_is_bad_input(outbox, make_profile_bytes):
    keep(outbox, "http://127.0.0.1:9", make_profile_bytes())
    done = run("outbox", "drop", "nope")
    assert done.exit_code == 2
    assert done.stderr.startswith("error: No outbox entry 'nope'") and len(done.stderr.strip().splitlines()) == 1
    assert len(outbox.entries()) == 1, "nothing was dropped"
