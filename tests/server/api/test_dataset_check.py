"""``songbird check --dataset ORG/DATASET``: monitors run on an organization's dataset's timeline,
written by whylogs' own ``WhyLabsWriter`` and read with an API key over real HTTP (embedded store:
the check is a client of the timeline route, which test_whylabs_log_api.py runs on both stores)."""

from __future__ import annotations

import pandas as pd
import pytest
import whylogs as why
from log_api import DATASET, DAY_MS, KEY, ORG, OTHER_ORG_KEY, T0, frame, pointing_whylabs, start_log_server
from typer.testing import CliRunner
from whylogs.api.writer.whylabs import WhyLabsWriter

from whylogs_songbird.cli import app as cli_app


@pytest.fixture
def log_server(server_factory):
    return start_log_server(server_factory)


@pytest.fixture
def whylabs_env(monkeypatch, tmp_path):
    yield from pointing_whylabs(monkeypatch, tmp_path)



def test_songbird_check_runs_monitors_on_a_datasets_timeline(log_server, whylabs_env, tmp_path):
    whylabs_env(log_server.url)  # WHYLABS_API_KEY is the org's key: --api-key defaults to it
    writer = WhyLabsWriter()
    monitors = tmp_path / "monitors.toml"
    monitors.write_text('granularity = "day"\n\n[[monitor]]\ncolumns = ["amount"]\nmetric = "max"\nmax = 20\n')
    runner = CliRunner()
    target = ["check", "--dataset", f"{ORG}/{DATASET}", "--monitors", str(monitors), "--endpoint", log_server.url]

    for day, rows in ((0, 12), (1, 30)):
        profile = why.log(frame(rows)).profile()
        profile.set_dataset_timestamp(pd.Timestamp(T0 + day * DAY_MS, unit="ms", tz="UTC").to_pydatetime())
        ok, message = writer.write(profile.view())
        assert ok, message
        result = runner.invoke(cli_app, target)
        if day == 0:
            assert result.exit_code == 0, result.output
            assert f"OK: no monitor failed on 1 day bucket of {ORG}/{DATASET}" in result.output
    assert result.exit_code == 1, result.output
    assert "amount" in result.output and f"in {ORG}/{DATASET}" in result.output
    every = runner.invoke(cli_app, [*target, "--all", "--api-key", KEY])
    assert every.exit_code == 1 and "1 monitor failure(s)" in every.output

    foreign = runner.invoke(cli_app, [*target, "--api-key", OTHER_ORG_KEY])
    assert foreign.exit_code == 2 and "HTTP 403" in foreign.output
    assert OTHER_ORG_KEY.split(".")[1].split(":")[0] not in foreign.output, "no secret in the output"
    for bad, expected in ((["--dataset", "model-7"], "ORG/DATASET"), (["--session", "session-x"], "not both")):
        result = runner.invoke(cli_app, [*target, *bad])
        assert result.exit_code == 2 and expected in result.output, result.output
    no_key = runner.invoke(cli_app, target, env={"WHYLABS_API_KEY": "", "SONGBIRD_API_KEY": ""})
    assert no_key.exit_code == 2 and "needs an API key" in no_key.output
