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
from urllib.parse import parse_qs, urlsplit

from whylogs_songbird.client import validate_session_id
from whylogs_songbird.errors import ConfigError, SongbirdError
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


def resolve_target(session: str | None, endpoint: str | None) -> tuple[str, str | None]:
    """The (session id, endpoint) of ``--session`` and ``--endpoint``.

    ``session`` may be a session id, an observatory or timeline URL pasted from the browser (its
    session is taken, and its server when no endpoint is given), or None: the session stored for
    the endpoint (the one the next publish uses). Raises `ConfigError` saying what to pass.
    """
    from whylogs_songbird.config import resolve_settings

    if session is not None and "://" in session:
        session, from_url = _session_of_url(session)
        if endpoint is None and from_url != resolve_settings().endpoint:  # the local server's link: started if need be
            endpoint = from_url
    if session is None:
        from whylogs_songbird.session import store_for

        settings = resolve_settings({"endpoint": endpoint})
        session = settings.session_id or store_for(settings).get(settings.endpoint)
        if session is None:
            raise ConfigError(
                f"No session is stored for {settings.endpoint}: pass --session with a session id or a link "
                "to its observatory page (or publish first)."
            )
    return validate_session_id(session.strip()), endpoint


def _session_of_url(url: str) -> tuple[str, str]:
    """(session id, endpoint) of an observatory link: ``.../sessions/<id>[/timeline]`` or ``...?sessionToken=<id>``."""
    parts = urlsplit(url.strip())
    token = parse_qs(parts.query).get("sessionToken", [None])[0]
    path = parts.path.rstrip("/").split("/")
    base = path
    if "sessions" in path[:-1]:
        at = len(path) - 1 - path[::-1].index("sessions")
        token = token or (path[at + 1] if at + 1 < len(path) else None)
        base = path[:at]
    elif "resources" in path:
        base = path[: path.index("resources")]
    if parts.scheme not in ("http", "https") or not token:
        raise ConfigError(
            f"{url!r} names no session: give a session id (session-…) or a link to a session's page "
            "(…/sessions/session-…, or a profile link with sessionToken=session-…)."
        )
    return token, f"{parts.scheme}://{parts.netloc}{'/'.join(base)}"


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


__all__ = ["BAD_INPUT", "FAILED", "PASSED", "CheckResult", "render_result", "resolve_target", "run_check"]
