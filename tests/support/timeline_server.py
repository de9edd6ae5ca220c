"""What the timeline's HTTP tests share: a monitors file, writing a day's frame through the
songbird writer, and reading the server's monitor log lines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import whylogs as why

from whylogs_songbird.server import LocalServer

MONITORS = """
reference = "training"
granularity = "day"

[[monitor]]
columns = ["*"]
metric = "drift"
fail_on = "drift"

[[monitor]]
columns = ["income"]
metric = "null_fraction"
max = 0.2
"""


def write(server: LocalServer, config: Path, df: pd.DataFrame, timestamp: int, session_id: str | None = None) -> None:
    options = {"endpoint": server.url, "config_dir": str(config), "dataset_timestamp": timestamp}
    if session_id:
        options["session_id"] = session_id
    ok, _ = why.log(df).writer("songbird").option(**options).write()
    assert ok


def evaluations(caplog: pytest.LogCaptureFixture, session_id: str) -> list[str]:
    """The server's log lines of monitor evaluations of ``session_id``, and of failed monitors."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "whylogs_songbird.server.timeline" and session_id in r.getMessage()
    ]
