"""``songbird check``: evaluate a monitors file against a session's timeline, for CI pipelines,
or against an organization's dataset's (``--dataset ORG/DATASET`` with an API key).

The check runs on the client: it fetches the timeline document from the server's JSON API
(``GET /api/v1/sessions/{id}/timeline``, or ``/api/v1/organizations/{org}/datasets/{dataset}/timeline``
with ``X-API-Key``; with the monitors file's reference, granularity and segment) and evaluates the
monitors with :func:`whylogs_songbird.monitors.evaluate`, the same function the server uses for its
alerts. The monitors file stays with the pipeline; the server needs no configuration for it.

Exit codes: 0 when no monitor fails, 1 when one does, 2 on bad input (an unreadable or invalid
monitors file, an unknown column, reference or segment, an unknown session) or when the server
cannot be reached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from whylogs_songbird.client import validate_name, validate_session_id
from whylogs_songbird.errors import ConfigError, SongbirdError
from whylogs_songbird.monitors import Failure, MonitorsError, evaluate, load_monitors
from whylogs_songbird.timeline import utc_text
from whylogs_songbird.timeline_client import fetch_dataset_timeline, fetch_timeline

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


@dataclass(frozen=True)
class DatasetTarget:
    """An organization's dataset to check, and the API key to read its timeline with (never shown)."""

    org_id: str
    dataset_id: str
    api_key: str = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.org_id}/{self.dataset_id}"


def resolve_dataset(dataset: str, api_key: str | None) -> DatasetTarget:
    """The target of ``--dataset ORG/DATASET`` with ``--api-key`` (or ``SONGBIRD_API_KEY``, then
    ``WHYLABS_API_KEY``, as the writer reads them). Raises `ConfigError` saying what to pass."""
    import os

    org_id, slash, dataset_id = dataset.strip().partition("/")
    if not slash:
        raise ConfigError(f"--dataset takes ORG/DATASET (for example org-acme/model-1), not {dataset[:80]!r}.")
    key = (api_key or os.environ.get("SONGBIRD_API_KEY") or os.environ.get("WHYLABS_API_KEY") or "").strip()
    if not key:
        raise ConfigError(
            "--dataset needs an API key of the organization: pass --api-key, or set SONGBIRD_API_KEY "
            "(or WHYLABS_API_KEY)."
        )
    return DatasetTarget(validate_name(org_id, "organization"), validate_name(dataset_id, "dataset"), key)


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
    session_id: str | DatasetTarget,
    monitors_path: Path,
    *,
    endpoint: str | None = None,
    which: Literal["latest", "all"] = "latest",
    timeout: float | None = None,
    start: str | None = None,
    end: str | None = None,
) -> CheckResult:
    """Evaluate the monitors of ``monitors_path`` on the latest bucket (or every bucket) of a
    session's timeline, or of a dataset's (a :class:`DatasetTarget`), of the buckets overlapping
    ``start``/``end`` when given."""
    try:
        monitors = load_monitors(monitors_path)
    except MonitorsError as exc:
        return CheckResult(BAD_INPUT, [], error=str(exc))
    try:
        if isinstance(session_id, DatasetTarget):
            timeline = fetch_dataset_timeline(
                session_id.org_id,
                session_id.dataset_id,
                api_key=session_id.api_key,
                endpoint=endpoint,
                granularity=monitors.granularity,
                reference=monitors.reference,
                segment=monitors.segment,
                start=start,
                end=end,
                timeout=timeout,
            )
        else:
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


__all__ = [
    "BAD_INPUT",
    "FAILED",
    "PASSED",
    "CheckResult",
    "DatasetTarget",
    "render_result",
    "resolve_dataset",
    "resolve_target",
    "run_check",
]
