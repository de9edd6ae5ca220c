"""``songbird check``'s judging (whylogs_songbird/check.py) as pure logic: which buckets are judged
with and without ``--all``, the exit status of each outcome, and what the result says.

The module's one seam, ``fetch_timeline`` (the HTTP call), is replaced by a function returning a
hand-written timeline document and recording what it was asked for. Exit statuses are the
documented ones (docs/timeline.md): 0 nothing failed, 1 a monitor failed, 2 bad input.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from whylogs_songbird import check
from whylogs_songbird.check import (
    BAD_INPUT,
    FAILED,
    PASSED,
    CheckResult,
    render_result,
    resolve_target,
    run_check,
)
from whylogs_songbird.config import DEFAULT_LOCAL_PORT, ENV_VARS
from whylogs_songbird.errors import ConfigError, SessionNotFoundError, SongbirdConnectionError
from whylogs_songbird.monitors import Failure
from whylogs_songbird.session import SessionStore

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/check.py")

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
COUNT_AT_MOST_10 = '[[monitor]]\ncolumns = ["a"]\nmetric = "count"\nmax = 10\n'


def document(counts: list[int | None], reference: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "granularity": "day",
        "reference": reference,
        "buckets": [{"start": T0 + i * DAY, "end": T0 + (i + 1) * DAY, "profiles": 1} for i in range(len(counts))],
        "columns": {"a": {"count": counts}},
    }


class FakeServer:
    """Stands in for ``fetch_timeline``: answers ``answer`` (or raises it) and records each call."""

    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((args, kwargs))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def monitors_file(tmp_path: Path):
    def write(text: str = COUNT_AT_MOST_10) -> Path:
        path = tmp_path / "monitors.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch):
    def install(answer: dict[str, Any] | Exception) -> FakeServer:
        fake = FakeServer(answer)
        monkeypatch.setattr(check, "fetch_timeline", fake)
        return fake

    return install


def buckets_of(result: CheckResult) -> list[int]:
    return [f.bucket_start for f in result.failures]


def test_the_exit_statuses_are_the_documented_ones():
    assert (PASSED, FAILED, BAD_INPUT) == (0, 1, 2)


def test_without_all_only_the_latest_bucket_is_judged(serve, monitors_file):
    serve(document([50, 50, 1]))  # earlier buckets fail, the latest passes
    result = run_check("s-1", monitors_file())
    assert (result.exit_code, result.failures, result.buckets, result.error) == (PASSED, [], 1, None)
    serve(document([1, 1, 50]))
    result = run_check("s-1", monitors_file(), which="latest")
    assert (result.exit_code, buckets_of(result), result.buckets) == (FAILED, [T0 + 2 * DAY], 1)


def test_with_all_every_bucket_is_judged(serve, monitors_file):
    serve(document([50, 1, 50, 1]))
    result = run_check("s-1", monitors_file(), which="all")
    assert (result.exit_code, buckets_of(result), result.buckets) == (FAILED, [T0, T0 + 2 * DAY], 4)
    serve(document([1, 2, 3]))
    result = run_check("s-1", monitors_file(), which="all")
    assert (result.exit_code, result.failures, result.buckets) == (PASSED, [], 3)


def test_a_failure_is_reported_whole(serve, monitors_file):
    timeline = document([50])
    serve(timeline)
    result = run_check("s-1", monitors_file())
    assert result.failures == [
        Failure(
            monitor="count <= 10",
            column="a",
            metric="count",
            bucket_start=T0,
            bucket_end=T0 + DAY,
            value=50.0,
            reason="count = 50 is above max 10",
        )
    ]
    assert result.timeline is timeline


@pytest.mark.parametrize("which", ["latest", "all"])
def test_a_session_without_buckets_passes_with_no_bucket_judged(serve, monitors_file, which):
    serve(document([]))
    result = run_check("s-1", monitors_file(), which=which)
    assert (result.exit_code, result.failures, result.buckets) == (PASSED, [], 0)


def test_the_file_s_reference_granularity_and_segment_are_asked_for(serve, monitors_file):
    fake = serve(document([1]))
    text = 'reference = "training"\ngranularity = "week"\nsegment = "region=eu"\n' + COUNT_AT_MOST_10
    run_check("s-9", monitors_file(text), endpoint="http://127.0.0.1:1", timeout=2.5)
    assert fake.calls == [
        (
            ("s-9",),
            {
                "endpoint": "http://127.0.0.1:1",
                "granularity": "week",
                "reference": "training",
                "segment": "region=eu",
                "start": None,
                "end": None,
                "timeout": 2.5,
            },
        )
    ]
    fake.calls.clear()
    run_check("s-9", monitors_file())
    assert fake.calls == [
        (
            ("s-9",),
            {
                "endpoint": None,
                "granularity": None,
                "reference": None,
                "segment": None,
                "start": None,
                "end": None,
                "timeout": None,
            },
        )
    ]


def test_a_bad_monitors_file_is_bad_input_and_nothing_is_fetched(serve, monitors_file, tmp_path):
    fake = serve(document([50]))
    result = run_check("s-1", monitors_file('[[monitor]]\ncolumns = ["a"]\nmetric = "count"\n'))
    assert (result.exit_code, result.failures, result.timeline) == (BAD_INPUT, [], None)
    assert (
        result.error
        == f"{tmp_path / 'monitors.toml'}: monitor 1: a count monitor needs min and/or max (e.g. max = 0.05)"
    )
    missing = run_check("s-1", tmp_path / "none.toml")
    assert (missing.exit_code, missing.error) == (
        BAD_INPUT,
        f"monitors file {str(tmp_path / 'none.toml')!r} does not exist",
    )
    assert fake.calls == []


@pytest.mark.parametrize(
    "error",
    [
        SongbirdConnectionError("cannot reach http://127.0.0.1:1"),
        SessionNotFoundError("no session s-1", status=404, operation="timeline"),
    ],
)
def test_a_server_that_cannot_answer_is_bad_input(serve, monitors_file, error):
    serve(error)
    result = run_check("s-1", monitors_file())
    assert (result.exit_code, result.failures, result.timeline, result.error) == (BAD_INPUT, [], None, str(error))


def test_an_unknown_column_is_bad_input_naming_the_file(serve, monitors_file, tmp_path):
    timeline = document([50])
    serve(timeline)
    path = monitors_file('[[monitor]]\ncolumns = ["b"]\nmetric = "count"\nmax = 10\n')
    result = run_check("s-1", path, which="all")
    assert (result.exit_code, result.failures, result.timeline) == (BAD_INPUT, [], timeline)
    assert result.error == f"{path}: monitor 1 (count <= 10): unknown column 'b'; the session's columns: a"


# -- what the result says ---------------------------------------------------------------------------


def rendered(result: CheckResult, session: str = "s-1") -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render_result(result, session))
    return console.export_text()


def test_a_pass_names_the_buckets_and_the_reference():
    one = CheckResult(PASSED, [], buckets=1, timeline=document([1], {"id": "ref-1", "alias": "training"}))
    assert rendered(one) == "OK: no monitor failed on 1 day bucket of s-1 (drift against training).\n"
    many = CheckResult(PASSED, [], buckets=3, timeline=document([1, 1, 1], {"id": "ref-1", "alias": None}))
    assert rendered(many) == "OK: no monitor failed on 3 day buckets of s-1 (drift against ref-1).\n"
    none = CheckResult(PASSED, [], buckets=0, timeline=document([]))
    assert rendered(none) == "OK: no monitor failed on 0 day buckets of s-1 (drift against no reference).\n"


def test_an_error_is_shown_as_such():
    assert rendered(CheckResult(BAD_INPUT, [], error="monitors file 'x' does not exist")) == (
        "error: monitors file 'x' does not exist\n"
    )


def test_failures_are_a_table_with_the_bucket_in_utc():
    failure = Failure(
        "count <= 10", "a", "count", T0 + DAY + 3_600_000, T0 + 2 * DAY, 50.0, "count = 50 is above max 10"
    )
    text = rendered(CheckResult(FAILED, [failure, failure], buckets=2, timeline=document([50, 50])))
    assert "2 monitor failure(s) in s-1 (drift against no reference)" in text
    assert "2026-01-02 01:00 UTC" in text and "count = 50 is above max 10" in text
    assert text.count("2026-01-02 01:00 UTC") == 2


def test_start_and_end_are_passed_to_the_server(serve, monitors_file):
    fake = serve(document([1]))
    run_check("s-9", monitors_file(), start="2026-01-01", end="2026-02-01")
    assert (fake.calls[0][1]["start"], fake.calls[0][1]["end"]) == ("2026-01-01", "2026-02-01")


def test_failures_table_has_its_columns_in_order_and_each_cell():
    failure = Failure("count <= 10", "col-a", "count", T0, T0 + DAY, 50.0, "count = 50 is above max 10")
    text = rendered(CheckResult(FAILED, [failure], buckets=1, timeline=document([50])))
    header = next(line for line in text.splitlines() if "bucket" in line)
    assert [word for word in header.replace("┃", " ").replace("│", " ").split()] == [
        "bucket",
        "column",
        "monitor",
        "why",
    ]
    row = next(line for line in text.splitlines() if "2026-01-01 00:00 UTC" in line)
    cells = [c.strip() for c in row.replace("┃", "│").split("│") if c.strip()]
    assert cells == ["2026-01-01 00:00 UTC", "col-a", "count <= 10", "count = 50 is above max 10"]


def test_a_long_reason_folds_instead_of_being_cut():
    reason = "w" * 150
    failure = Failure("count <= 10", "a", "count", T0, T0 + DAY, 50.0, reason)
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(render_result(CheckResult(FAILED, [failure], buckets=1, timeline=document([50])), "s-1"))
    text = console.export_text()
    assert "…" not in text
    assert "".join(line.split("│")[-2].strip() for line in text.splitlines() if line.count("│") >= 4) == reason


def styles(result: CheckResult) -> set[str]:
    rendered_text = render_result(result, "s-1")
    return {str(rendered_text.style)}


def test_a_pass_is_green_and_an_error_red():
    assert styles(CheckResult(PASSED, [], buckets=1, timeline=document([1]))) == {"green"}
    assert styles(CheckResult(BAD_INPUT, [], error="nope")) == {"red"}


def test_a_timeline_without_granularity_names_no_granularity():
    result = CheckResult(PASSED, [], buckets=2, timeline={"buckets": []})
    assert rendered(result) == "OK: no monitor failed on 2  buckets of s-1 (drift against no reference).\n"


# -- which session: --session as an id, a pasted link, or the stored one -----------------------------


@pytest.mark.parametrize(
    ("url", "session", "endpoint"),
    [
        ("http://127.0.0.1:9/sessions/session-a", "session-a", "http://127.0.0.1:9"),
        ("http://127.0.0.1:9/sessions/session-a/timeline/", "session-a", "http://127.0.0.1:9"),
        ("  https://127.0.0.1:9/songbird/sessions/session-a  ", "session-a", "https://127.0.0.1:9/songbird"),
        ("http://127.0.0.1:9/sessions/x/sessions/session-b/timeline", "session-b", "http://127.0.0.1:9/sessions/x"),
        ("http://127.0.0.1:9/sessions/session-a?sessionToken=session-q", "session-q", "http://127.0.0.1:9"),
        (
            "http://127.0.0.1:9/api/resources/model-1/profiles?sessionToken=session-q",
            "session-q",
            "http://127.0.0.1:9/api",
        ),
        ("http://127.0.0.1:9/resources/model-1?x=1&sessionToken=session-r", "session-r", "http://127.0.0.1:9"),
        ("http://127.0.0.1:9/a/b?sessionToken=session-s", "session-s", "http://127.0.0.1:9/a/b"),
        ("http://127.0.0.1:9/sessions/session-aX/", "session-aX", "http://127.0.0.1:9"),
    ],
)
def test_a_pasted_link_names_its_session_and_server(url, session, endpoint):
    assert check._session_of_url(url) == (session, endpoint)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/sessions",
        "http://127.0.0.1:9/sessions/",
        "http://127.0.0.1:9/resources/model-1/profiles",
        "ftp://127.0.0.1:9/sessions/session-a",
        "file://127.0.0.1:9/sessions/session-a?sessionToken=session-a",
    ],
)
def test_a_link_without_a_session_says_what_to_give(url):
    with pytest.raises(ConfigError) as caught:
        check._session_of_url(url)
    assert str(caught.value) == (
        f"{url!r} names no session: give a session id (session-…) or a link to a session's page "
        "(…/sessions/session-…, or a profile link with sessionToken=session-…)."
    )


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No endpoint, session or key from the environment; the config (and session file) in a temp dir."""
    for names in ENV_VARS.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SONGBIRD_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


LOCAL = f"http://127.0.0.1:{DEFAULT_LOCAL_PORT}"


def test_a_session_id_is_taken_as_given_with_the_given_endpoint(settings_env):
    assert resolve_target(" session-a\n", None) == ("session-a", None)
    assert resolve_target("session-a", "http://127.0.0.1:9") == ("session-a", "http://127.0.0.1:9")


def test_a_bad_session_id_is_refused(settings_env):
    with pytest.raises(ConfigError, match="is not a valid session id"):
        resolve_target("../session-a", None)


def test_a_link_s_server_is_used_unless_an_endpoint_is_given_or_it_is_the_local_default(settings_env):
    assert resolve_target("http://127.0.0.1:9/sessions/session-a", None) == ("session-a", "http://127.0.0.1:9")
    given = resolve_target("http://127.0.0.1:9/sessions/session-a", "http://127.0.0.1:7")
    assert given == ("session-a", "http://127.0.0.1:7")
    # the local server's own link: no endpoint, so the local server is started if need be
    assert resolve_target(f"{LOCAL}/sessions/session-a/timeline", None) == ("session-a", None)


def test_without_session_the_stored_one_for_the_endpoint_is_used(settings_env):
    SessionStore.for_directory(settings_env).set("http://127.0.0.1:9", "session-stored")
    SessionStore.for_directory(settings_env).set(LOCAL, "session-local")
    assert resolve_target(None, "http://127.0.0.1:9") == ("session-stored", "http://127.0.0.1:9")
    assert resolve_target(None, None) == ("session-local", None)


def test_without_session_a_configured_session_id_wins_over_the_stored_one(settings_env, monkeypatch):
    SessionStore.for_directory(settings_env).set("http://127.0.0.1:9", "session-stored")
    monkeypatch.setenv("SONGBIRD_SESSION_ID", "session-pinned")
    assert resolve_target(None, "http://127.0.0.1:9") == ("session-pinned", "http://127.0.0.1:9")


def test_without_any_session_the_error_says_what_to_pass(settings_env):
    with pytest.raises(ConfigError) as caught:
        resolve_target(None, "http://127.0.0.1:9")
    assert str(caught.value) == (
        "No session is stored for http://127.0.0.1:9: pass --session with a session id or a link "
        "to its observatory page (or publish first)."
    )


# -- --dataset ORG/DATASET with an API key ----------------------------------------------------------


def test_a_dataset_target_takes_org_dataset_and_the_given_key(settings_env, monkeypatch):
    monkeypatch.setenv("SONGBIRD_API_KEY", "env-key")
    target = check.resolve_dataset("  org-acme/model-1\n", " given-key ")
    assert (target.org_id, target.dataset_id, target.api_key, target.name) == (
        "org-acme",
        "model-1",
        "given-key",
        "org-acme/model-1",
    )
    assert "given-key" not in repr(target)


def test_a_dataset_target_s_key_comes_from_songbird_then_whylabs_env(settings_env, monkeypatch):
    monkeypatch.setenv("WHYLABS_API_KEY", "whylabs-key")
    assert check.resolve_dataset("org-1/ds-1", None).api_key == "whylabs-key"
    monkeypatch.setenv("SONGBIRD_API_KEY", "songbird-key")
    assert check.resolve_dataset("org-1/ds-1", None).api_key == "songbird-key"
    assert check.resolve_dataset("org-1/ds-1", "").api_key == "songbird-key"


MISSING_KEY = (
    "--dataset needs an API key of the organization: pass --api-key, or set SONGBIRD_API_KEY (or WHYLABS_API_KEY)."
)


@pytest.mark.parametrize("given", [None, "", "   "])
def test_a_dataset_target_without_a_key_says_what_to_pass(settings_env, monkeypatch, given):
    monkeypatch.setenv("SONGBIRD_API_KEY", " ")
    with pytest.raises(ConfigError) as caught:
        check.resolve_dataset("org-1/ds-1", given)
    assert str(caught.value) == MISSING_KEY


def test_a_dataset_target_with_no_key_anywhere_says_what_to_pass(settings_env, monkeypatch):
    monkeypatch.delenv("SONGBIRD_API_KEY", raising=False)
    monkeypatch.delenv("WHYLABS_API_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        check.resolve_dataset("org-1/ds-1", None)
    assert str(caught.value) == MISSING_KEY


def test_a_dataset_without_a_slash_says_what_to_give(settings_env):
    long = "x" * 100
    with pytest.raises(ConfigError) as caught:
        check.resolve_dataset(long, "key")
    assert str(caught.value) == f"--dataset takes ORG/DATASET (for example org-acme/model-1), not {'x' * 80!r}."


@pytest.mark.parametrize(
    ("dataset", "bad", "what"),
    [
        ("../ds-1", "..", "organization"),
        ("org-1/ds/1", "ds/1", "dataset"),
        ("/ds-1", "", "organization"),
        ("org-1/", "", "dataset"),
    ],
)
def test_a_dataset_target_s_names_are_checked(settings_env, dataset, bad, what):
    with pytest.raises(ConfigError) as caught:
        check.resolve_dataset(dataset, "key")
    assert str(caught.value).startswith(f"{bad!r} is not a valid {what} id: ")


def test_a_dataset_target_is_fetched_with_its_key_and_the_file_s_choices(monkeypatch, monitors_file):
    fake = FakeServer(document([50, 1]))
    monkeypatch.setattr(check, "fetch_dataset_timeline", fake)
    session_fake = serve_nothing(monkeypatch)
    text = 'reference = "training"\ngranularity = "week"\nsegment = "region=eu"\n' + COUNT_AT_MOST_10
    target = check.DatasetTarget("org-1", "ds-1", "the-key")
    result = run_check(
        target, monitors_file(text), endpoint="http://127.0.0.1:1", which="all", timeout=2.5, start="a", end="b"
    )
    assert (result.exit_code, buckets_of(result), result.buckets) == (FAILED, [T0], 2)
    assert fake.calls == [
        (
            ("org-1", "ds-1"),
            {
                "api_key": "the-key",
                "endpoint": "http://127.0.0.1:1",
                "granularity": "week",
                "reference": "training",
                "segment": "region=eu",
                "start": "a",
                "end": "b",
                "timeout": 2.5,
            },
        )
    ]
    assert session_fake.calls == []


def serve_nothing(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer(AssertionError("a dataset target is not a session"))
    monkeypatch.setattr(check, "fetch_timeline", fake)
    return fake
