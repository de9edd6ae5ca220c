"""``songbird check``: evaluate a monitors file against a session's timeline, for CI pipelines.

The check runs on the client: it fetches the session's timeline document from the server's JSON
API (``GET /api/v1/sessions/{id}/timeline``, with the monitors file's reference, granularity and
segment) and evaluates the monitors with :func:`whylogs_songbird.monitors.evaluate`, the same
function the server uses for its alerts. The monitors file stays with the pipeline; the server needs
no configuration for it.

Exit codes: 0 when no monitor fails, 1 when one does, 2 on bad input (an unreadable or invalid
monitors file, an unknown column, reference or segment, an unknown session) or when the server
cannot be reached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from whylogs_songbird.errors import SongbirdError
from whylogs_songbird.monitors import Failure, MonitorsError, evaluate, load_monitors
from whylogs_songbird.timeline import utc_text
from whylogs_songbird.timeline_client import fetch_timeline

logger = logging.getLogger("whylogs_songbird.check")

PASSED = 0
FAILED = 1
BAD_INPUT = 2


@dataclass
class CheckResult:
    """What a check found: the failures, the buckets looked at, and the exit code."""

    exit_code: int
    failures: list[Failure]
    buckets: int = 0
    timeline: dict[str, Any] | None = None
    error: str | None = None


def run_check(
    session_id: str,
    monitors_path: Path,
    *,
    endpoint: str | None = None,
    which: Literal["latest", "all"] = "latest",
    timeout: float | None = None,
    start: str | None = None,
    end: str | None = None,
) -> CheckResult:
    """Evaluate the monitors of ``monitors_path`` on the session's latest bucket (or every bucket),
    of the buckets overlapping ``start``/``end`` when given."""
    try:
        monitors = load_monitors(monitors_path)
    except MonitorsError as exc:
        return CheckResult(BAD_INPUT, [], error=str(exc))
    try:
        timeline = fetch_timeline(
            session_id,
            endpoint=endpoint,
            granularity=monitors.granularity,
            reference=monitors.reference,
            segment=monitors.segment,
            start=start,
            end=end,
            timeout=timeout,
        )
    except SongbirdError as exc:
        return CheckResult(BAD_INPUT, [], error=str(exc))
    try:
        failures = evaluate(monitors, timeline, which=which)
    except MonitorsError as exc:
        return CheckResult(BAD_INPUT, [], timeline=timeline, error=f"{monitors_path}: {exc}")
    checked = len(timeline["buckets"]) if which == "all" else min(1, len(timeline["buckets"]))
    return CheckResult(FAILED if failures else PASSED, failures, buckets=checked, timeline=timeline)


def _when(start: int) -> str:
    return utc_text(start)


def render_result(result: CheckResult, session_id: str) -> Any:
    """A rich renderable of ``result``: the table of failures, or one line saying all passed."""
    from rich.table import Table
    from rich.text import Text

    if result.error is not None:
        return Text(f"error: {result.error}", style="red")
    timeline = result.timeline or {}
    reference = timeline.get("reference") or {}
    against = reference.get("alias") or reference.get("id") or "no reference"
    what = f"{result.buckets} {timeline.get('granularity', '')} bucket{'s' if result.buckets != 1 else ''}"
    if not result.failures:
        return Text(f"OK: no monitor failed on {what} of {session_id} (drift against {against}).", style="green")
    table = Table(title=f"{len(result.failures)} monitor failure(s) in {session_id} (drift against {against})")
    for header in ("bucket", "column", "monitor", "why"):
        table.add_column(header, overflow="fold")
    for failure in result.failures:
        table.add_row(_when(failure.bucket_start), failure.column, failure.monitor, failure.reason)
    return table


__all__ = ["BAD_INPUT", "FAILED", "PASSED", "CheckResult", "render_result", "run_check"]
