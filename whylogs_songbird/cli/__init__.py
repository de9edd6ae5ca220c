"""The ``songbird`` command: demo, profile, upload, session, outbox, server, serve and alerts.

One module per command group; `whylogs_songbird.cli.reporting` holds the plumbing they share
(the app, shared options, one-line errors and exit codes, progress, library log). Exit codes: 0
success; 1 a failed upload, an unreachable or failing server; 2 a usage error; 130 interrupted.
"""

from __future__ import annotations

from whylogs_songbird.cli import alerts, check, demo, keys, profile, server  # noqa: F401  (registers the commands)
from whylogs_songbird.cli.outbox import outbox_app
from whylogs_songbird.cli.reporting import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageProblem, app, guard_output
from whylogs_songbird.cli.server import server_app
from whylogs_songbird.cli.session import session_app
from whylogs_songbird.tables import detect_format, parse_timestamp, read_table

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageProblem",
    "app",
    "detect_format",
    "main",
    "outbox_app",
    "parse_timestamp",
    "read_table",
    "server_app",
    "session_app",
]


def main() -> None:
    """Entry point of the ``songbird`` console script."""
    guard_output()
    app(prog_name="songbird")
