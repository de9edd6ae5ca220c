"""Our writer in dataset mode: ``option(org_id=..., dataset_id=..., api_key=...)`` (or the SONGBIRD_* /
WHYLABS_* variables) publishes through the WhyLabs log API into a dataset of an organization, over real
HTTP to a real server that knows the key; the dataset's timeline counts exactly the rows written."""

from __future__ import annotations

import logging
import socket

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import STORAGE_NAMES
from typer.testing import CliRunner
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column

from whylogs_songbird import SongbirdWriter
from whylogs_songbird.cli import app
from whylogs_songbird.config import resolve_settings
from whylogs_songbird.errors import ConfigError
from whylogs_songbird.outbox import Outbox

TIMEOUT = 30
ORG = "org-dsmode"
DATASET = "model-3"
SECRET = "dAtAsEtM0deS3cret0001"
KEY = f"DsKeyId001.{SECRET}:{ORG}"
OTHER_SECRET = "an0therOrgS3cret0002"
OTHER_ORG_KEY = f"DsKeyId002.{OTHER_SECRET}:org-other"
WRONG_SECRET = "n0tKn0wnHereS3cret03"
DAY_MS = 86_400_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS


def frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"amount": [float(i) for i in range(rows)], "region": ["north" if i % 3 else "south" for i in range(rows)]}
    )


def profile_at(rows: int, ms: int):
    profile = why.log(frame(rows)).profile()
    profile.set_dataset_timestamp(pd.Timestamp(ms, unit="ms", tz="UTC").to_pydatetime())
    return profile.view()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def log_server(server_factory):
    return server_factory(api_keys=[KEY, OTHER_ORG_KEY])


def dataset_opts(server, tmp_path, **more):
    return {
        "endpoint": server.url,
        "config_dir": str(tmp_path / "config"),
        "dataset_id": DATASET,
        "api_key": KEY,
        **more,
    }


def timeline(server, **params) -> dict:
    r = requests.get(
        f"{server.url}/api/v1/organizations/{ORG}/datasets/{DATASET}/timeline",
        params={"granularity": "day", **params},
        headers={"X-API-Key": KEY},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    return r.json()


def amount_counts(document: dict) -> dict[int, int]:
    counts = document["columns"]["amount"]["count"]
    return {b["start"]: n for b, n in zip(document["buckets"], counts) if n}


def dataset_profiles(server, kind: str):
    store = server.app.state.store
    container = store.find_dataset(ORG, DATASET)
    assert container is not None, "the dataset was made on its first write"
    store.learn_landed(container.id)  # the team store: PUTs went straight to S3
    return store.list_profiles(container.id, kind=kind)


@pytest.mark.parametrize("storage_config", STORAGE_NAMES, indirect=True)
def test_batches_and_a_reference_land_in_the_datasets_timeline(log_server, tmp_path):
    opts = dataset_opts(log_server, tmp_path)  # the org comes from the key's ':org' suffix, as in whylogs
    for day, rows in ((0, 12), (1, 30)):
        ok, url = SongbirdWriter(**opts).write(profile_at(rows, T0 + day * DAY_MS))
        assert ok, url
        assert f"/organizations/{ORG}/datasets/{DATASET}/profiles" in url and "token=" in url, url
    writer = SongbirdWriter(**opts, reference_profile_name="baseline")
    ok, url = writer.write(profile_at(7, T0))
    assert ok, url
    assert writer.last_result is not None and writer.last_result.profiles[0].session_id == f"{ORG}/{DATASET}"

    assert amount_counts(timeline(log_server)) == {T0: 12, T0 + DAY_MS: 30}
    document = timeline(log_server, reference="baseline")
    assert document["reference"]["alias"] == "baseline"
    assert log_server.app.state.store.recent_sessions(limit=10) == [], "no guest session was made"


def test_a_segmented_write_lands_with_its_segment_tags(log_server, tmp_path):
    results = why.log(frame(40), schema=DatasetSchema(segments=segment_on_column("region")))
    ok, pairs = SongbirdWriter(**dataset_opts(log_server, tmp_path, org_id=ORG)).write(results)
    assert ok, pairs
    tags = sorted(p.segment_tags for p in dataset_profiles(log_server, "batch"))
    assert tags == [(("region", "north"),), (("region", "south"),)]
    assert sum(amount_counts(timeline(log_server)).values()) == 40

    # a segmented reference: each segment under the reference's own name, with its tags (as whylogs does)
    results = why.log(frame(21), schema=DatasetSchema(segments=segment_on_column("region")))
    ok, pairs = SongbirdWriter(**dataset_opts(log_server, tmp_path), reference_profile_name="by-region").write(results)
    assert ok, pairs
    references = dataset_profiles(log_server, "reference")
    assert sorted((r.alias, r.segment_tags) for r in references) == [
        ("by-region", (("region", "north"),)),
        ("by-region", (("region", "south"),)),
    ]


@pytest.mark.parametrize(
    ("key", "secret", "said"),
    [
        (f"DsKeyId003.{WRONG_SECRET}:{ORG}", WRONG_SECRET, "the API key was refused"),
        (OTHER_ORG_KEY, OTHER_SECRET, "this key belongs to another organization"),
    ],
)
def test_a_refused_key_gives_false_and_a_clear_message(log_server, tmp_path, caplog, key, secret, said):
    caplog.set_level(logging.DEBUG)
    writer = SongbirdWriter(**dataset_opts(log_server, tmp_path, api_key=key, org_id=ORG, outbox=False))
    ok, message = writer.write(profile_at(5, T0))
    assert ok is False and said in message, message
    assert secret not in message and secret not in caplog.text and secret not in repr(writer.last_result)
    assert log_server.app.state.store.find_dataset(ORG, DATASET) is None, "nothing was stored"


def test_whylabs_variables_are_the_fallback(log_server, tmp_path, monkeypatch):
    monkeypatch.setenv("WHYLABS_API_ENDPOINT", log_server.url)
    monkeypatch.setenv("WHYLABS_API_KEY", KEY)
    monkeypatch.setenv("WHYLABS_DEFAULT_ORG_ID", ORG)
    monkeypatch.setenv("WHYLABS_DEFAULT_DATASET_ID", DATASET)
    ok, message = why.log(frame(9)).writer("songbird").write()
    assert ok, message
    assert len(dataset_profiles(log_server, "batch")) == 1


def test_songbird_variables_come_before_whylabs_ones_and_options_before_both(tmp_path):
    env = {
        "SONGBIRD_CONFIG_DIR": str(tmp_path),
        "WHYLABS_API_KEY": "WkeyId0001.whylabs:org-w",
        "WHYLABS_DEFAULT_DATASET_ID": "model-w",
        "SONGBIRD_DATASET_ID": "model-s",
        "SONGBIRD_API_KEY": "SkeyId0001.songbird",
        "SONGBIRD_ORG_ID": "org-s",
    }
    settings = resolve_settings({}, environ=env)
    assert settings.dataset == ("org-s", "model-s") and settings.api_key == "SkeyId0001.songbird"
    settings = resolve_settings({"dataset_id": "model-o", "org_id": "org-o"}, environ=env)
    assert settings.dataset == ("org-o", "model-o")
    only_whylabs = {k: v for k, v in env.items() if not k.startswith("SONGBIRD_") or k == "SONGBIRD_CONFIG_DIR"}
    no_endpoint = resolve_settings({}, environ=only_whylabs)
    assert no_endpoint.embedded and no_endpoint.dataset is None, "WHYLABS_* alone never sends the embedded default"
    only_whylabs["WHYLABS_API_ENDPOINT"] = "http://127.0.0.1:9"
    settings = resolve_settings({}, environ=only_whylabs)
    assert settings.dataset == ("org-w", "model-w"), "the org from the key's ':org' suffix"
    with_whylabs_org = {**only_whylabs, "WHYLABS_DEFAULT_ORG_ID": "org-d"}
    assert resolve_settings({}, environ=with_whylabs_org).org_id == "org-w", "whylogs prefers the key's org"
    unsuffixed = {**with_whylabs_org, "WHYLABS_API_KEY": "WkeyId0001.whylabs"}
    assert resolve_settings({}, environ=unsuffixed).org_id == "org-d"
    assert "whylabs" not in repr(settings)
    assert resolve_settings({}, environ={"SONGBIRD_CONFIG_DIR": str(tmp_path)}).dataset is None, "guest by default"


def test_dataset_mode_without_a_key_or_org_says_what_to_set(tmp_path):
    env = {"SONGBIRD_CONFIG_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="no API key"):
        resolve_settings({"dataset_id": DATASET}, environ=env)
    with pytest.raises(ConfigError, match="no organization"):
        resolve_settings({"dataset_id": DATASET, "api_key": "KeyId00001.secret"}, environ=env)
    with pytest.raises(ConfigError, match="not a valid dataset id"):
        resolve_settings({"dataset_id": "../x", "api_key": KEY}, environ=env)
    with pytest.raises(ConfigError, match="not both"):
        resolve_settings({"dataset_id": DATASET, "api_key": KEY, "session_id": "session-1"}, environ=env)


def test_a_failed_upload_waits_in_the_outbox_and_flush_delivers_to_the_dataset(server_factory, tmp_path, monkeypatch):
    port = free_port()
    config_dir = tmp_path / "config"
    opts = {
        "endpoint": f"http://127.0.0.1:{port}",
        "config_dir": str(config_dir),
        "dataset_id": DATASET,
        "api_key": KEY,
        "timeout": 1,
        "max_retries": 0,
    }
    ok, message = SongbirdWriter(**opts).write(profile_at(11, T0))
    assert ok is False and "saved to the outbox" in message, message
    ok, message = SongbirdWriter(**opts, reference_profile_name="baseline").write(profile_at(4, T0))
    assert ok is False
    entries = Outbox(config_dir / "outbox").entries()
    assert [(e.org_id, e.dataset_id) for e in entries] == [(ORG, DATASET)] * 2
    assert not any(SECRET in path.read_text(errors="replace") for path in (config_dir / "outbox").iterdir()), (
        "the outbox keeps no key"
    )

    listed = CliRunner().invoke(app, ["outbox", "list"], env={"SONGBIRD_CONFIG_DIR": str(config_dir)})
    assert listed.exit_code == 0 and listed.output.count(f"dataset {ORG}/{DATASET}") == 2, listed.output

    server = server_factory(port=port, api_keys=[KEY])
    result = CliRunner().invoke(
        app, ["outbox", "flush"], env={"SONGBIRD_CONFIG_DIR": str(config_dir), "SONGBIRD_API_KEY": KEY}
    )
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert Outbox(config_dir / "outbox").entries() == []
    assert amount_counts(timeline(server)) == {T0: 11}
    assert [p.alias for p in dataset_profiles(server, "reference")] == ["baseline"]
    assert server.app.state.store.recent_sessions(limit=10) == [], "delivered to the dataset, not a session"
