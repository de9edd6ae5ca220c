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
from whylogs_songbird.check import BAD_INPUT, FAILED, PASSED, CheckResult, render_result, run_check
from whylogs_songbird.errors import SessionNotFoundError, SongbirdConnectionError
from whylogs_songbird.monitors import Failure

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
