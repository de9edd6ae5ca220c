"""Unchanged whylogs pipelines land here: whylogs' own ``WhyLabsWriter`` (as installed) in API-key mode,
``WHYLABS_API_ENDPOINT`` pointing at a real server on loopback, on both stores.

whylogs keeps its session and API clients in module-level caches: :func:`whylabs_env` resets them and
points every setting at the test's server, so nothing leaves 127.0.0.1 (no proxy, no private S3
endpoint, and no HEAD request to WhyLabs' public bucket: ``_WHYLABS_SKIP_CONFIG_READ``).
"""

from __future__ import annotations

import io
import json
import logging
import zipfile

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import STORAGE_NAMES
from log_api import DATASET, DAY_MS, KEY, ORG, OTHER_ORG_KEY, T0, frame, pointing_whylabs, start_log_server
from stored_profiles import wait_recorded
from test_claimed_sessions import WALKS, Seeded, _normalized
from whylabs_client.api.log_api import LogApi
from whylabs_client.exceptions import ApiException
from whylabs_client.model.get_profile_observatory_link_request import GetProfileObservatoryLinkRequest
from whylogs.api.writer.whylabs import WhyLabsWriter
from whylogs.api.writer.whylabs_client import TransactionAbortedException
from whylogs.core.feature_weights import FeatureWeights
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column

from whylogs_songbird.server.storage.base import new_id


@pytest.fixture
def log_server(server_factory):
    return start_log_server(server_factory)


@pytest.fixture
def whylabs_env(monkeypatch, tmp_path):
    yield from pointing_whylabs(monkeypatch, tmp_path)

pytestmark = pytest.mark.parametrize("storage_config", STORAGE_NAMES, indirect=True)

TIMEOUT = 30
UNKNOWN_KEY = "K3yId0003C.n0tAKeyOfThisServer:" + ORG


def container(server):
    return server.app.state.store.find_dataset(ORG, DATASET)


def landed(server) -> None:
    """Wait for the dataset's presigned PUTs to be recorded and summarised (on a team store the
    ingest worker learns them in the background; a view never looks)."""
    wait_recorded(server.app.state.store, container(server).id, summarised=True)


def timeline(server, key: str = KEY, **params) -> requests.Response:
    return requests.get(
        f"{server.url}/api/v1/organizations/{ORG}/datasets/{DATASET}/timeline",
        params={"granularity": "day", **params},
        headers={"X-API-Key": key},
        timeout=TIMEOUT,
    )


def amount_counts(document: dict) -> dict[int, int]:
    """Rows per bucket start, as the timeline counts them (the ``amount`` column's count series)."""
    counts = document["columns"]["amount"]["count"]
    return {b["start"]: n for b, n in zip(document["buckets"], counts) if n}


def test_a_batch_write_lands_in_the_datasets_timeline(log_server, whylabs_env):
    """Profiles of one dataset, segment and bucket add up, as WhyLabs merges them: two different
    profiles with the same timestamp both count; a re-sent profile (the same bytes: a retry) once."""
    whylabs_env(log_server.url)
    writer = WhyLabsWriter()
    views = []
    for day, rows, offset in ((0, 12, 0), (1, 30, 0), (0, 7, 100)):
        profile = why.log(frame(rows, offset)).profile()
        profile.set_dataset_timestamp(pd.Timestamp(T0 + day * DAY_MS, unit="ms", tz="UTC").to_pydatetime())
        views.append(profile.view())
    for view in (*views, views[0]):
        ok, message = writer.write(view)
        assert ok, message
    landed(log_server)

    r = timeline(log_server)
    assert r.status_code == 200, r.text
    document = r.json()
    assert document["session_id"] == f"{ORG}/{DATASET}"
    assert amount_counts(document) == {T0: 12 + 7, T0 + DAY_MS: 30}
    assert document["columns"]["amount"]["max"][0] == 106.0, "the bucket merges both profiles"
    store = log_server.app.state.store
    assert len(store.list_profiles(container(log_server).id, kind="batch")) == 3, "the re-sent bytes are kept once"
    assert container(log_server).id not in r.text, "the container's id is no name outside the server"


def test_a_segmented_batch_is_one_call_per_segment(log_server, whylabs_env):
    whylabs_env(log_server.url)
    df = frame(40)
    results = why.log(df, schema=DatasetSchema(segments=segment_on_column("region")))
    ok, message = WhyLabsWriter().write(results)
    assert ok, message
    store = log_server.app.state.store
    store.learn_landed(container(log_server).id)
    batches = store.list_profiles(container(log_server).id, kind="batch")
    assert len(batches) == 2, "one profile per segment"
    # whylogs names no segment in log/async: each profile's own header does
    assert sorted(b.segment_tags for b in batches) == [(("region", "north"),), (("region", "south"),)]
    document = timeline(log_server).json()
    assert document["segments"] == ["region=north", "region=south"]
    assert sum(amount_counts(document).values()) == 40
    north = timeline(log_server, segment="region=north").json()
    assert sum(amount_counts(north).values()) == sum(df["region"] == "north")


def test_a_segmented_batch_written_as_one_zip(log_server, whylabs_env):
    whylabs_env(log_server.url)
    df = frame(40)
    results = why.log(df, schema=DatasetSchema(segments=segment_on_column("region")))
    ok, message = WhyLabsWriter().write(results, zip=True)
    assert ok, message
    store = log_server.app.state.store
    cid = container(log_server).id
    store.learn_landed(cid)
    batches = store.list_profiles(cid, kind="batch")
    assert sorted(b.segment_tags for b in batches) == [(("region", "north"),), (("region", "south"),)], (
        "each member of the zip is a profile of the batch, its segment read from its own header"
    )
    assert len({b.dataset_timestamp for b in batches}) == 1
    document = timeline(log_server).json()
    assert document["segments"] == ["region=north", "region=south"]
    assert sum(amount_counts(document).values()) == 40
    south = timeline(log_server, segment="region=south").json()
    assert sum(amount_counts(south).values()) == sum(df["region"] == "south")


def _zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_refused_zip_stores_nothing(server_factory, make_profile_bytes):
    """A zip slot refuses a zip with a member that is no profile, a path in a name, or a bomb; nothing is kept."""
    log_server = server_factory(api_keys=[KEY], max_upload_bytes=1024 * 1024)
    profile = make_profile_bytes(n_rows=5)
    bomb = _zip_of({"a.bin": profile, "b.bin": bytes(2 * 1024 * 1024)})  # 2 MiB of zeros in a few KB
    assert len(bomb) < 64 * 1024
    refused = {
        "not a well-formed whylogs profile": _zip_of({"a.bin": profile, "b.bin": b"WHY1 not really"}),
        "not a plain file name": _zip_of({"../a.bin": profile}),
        "upload limit": bomb,
    }
    store = log_server.app.state.store
    for expected, body in refused.items():
        r = requests.post(
            f"{log_server.url}/v0/organizations/{ORG}/log/async/{DATASET}",
            json={"datasetTimestamp": T0},
            headers={"X-API-Key": KEY, "X-WhyLabs-File-Extension": "ZIP"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 200, r.text
        put = requests.put(r.json()["uploadUrl"], data=body, timeout=TIMEOUT)
        cid = container(log_server).id
        store.learn_landed(cid)
        profiles = store.list_profiles(cid)
        if store.presigns:  # the PUT went to the blob store: the zip is recorded invalid, with the reason
            assert put.status_code == 200, put.text
            assert [(p.id, p.invalid) for p in profiles if p.id == r.json()["id"]] == [(r.json()["id"], True)]
            assert expected in store.get_upload(r.json()["id"]).ingest_error
            assert [p for p in profiles if not p.invalid] == []
        else:
            assert put.status_code == 400, put.text
            message = put.json()["message"]
            assert (
                message.startswith("The body is not a zip of whylogs profiles this server takes")
                and expected in message
            )
            assert profiles == []


def test_v0_profiles_are_read_with_whylogs_own_v0_reader(log_server, whylabs_env):
    """whylogs writes v0 profiles for model-performance metrics and with use_v0=True: both are kept,
    a segment's tags read from the v0 message, its counts on the timeline."""
    whylabs_env(log_server.url)
    writer = WhyLabsWriter()
    stamp = pd.Timestamp(T0, unit="ms", tz="UTC").to_pydatetime()
    df = frame(30)
    segments = why.log(df, schema=DatasetSchema(segments=segment_on_column("region")))
    for view in segments.get_writables():  # one at a time: whylogs passes use_v0 on for single views only
        ok, message = writer.write(view, use_v0=True)
        assert ok, message
    scored = pd.DataFrame({"pred": [1, 0, 1, 1, 0], "target": [1, 0, 0, 1, 0], "score": [0.9, 0.1, 0.6, 0.8, 0.3]})
    performance = why.log_classification_metrics(
        scored, target_column="target", prediction_column="pred", score_column="score", log_full_data=True
    )
    performance.set_dataset_timestamp(stamp + pd.Timedelta(days=1))
    ok, message = writer.write(performance)
    assert ok, message

    store = log_server.app.state.store
    cid = container(log_server).id
    store.learn_landed(cid)
    batches = store.list_profiles(cid, kind="batch")
    assert all(not store.read_profile_bytes(b).startswith(b"WHY1") for b in batches), "whylogs wrote v0 bytes"
    assert sorted(b.segment_tags for b in batches) == [(), (("region", "north"),), (("region", "south"),)]
    document = timeline(log_server).json()
    assert document["segments"] == ["region=north", "region=south"]
    assert sum(amount_counts(document).values()) == 30
    assert sum(n or 0 for n in document["columns"]["score"]["count"]) == 5
    assert all(store.get_upload(b.id).ingest_state == "ready" for b in batches)


def test_references_unsegmented_and_segmented(log_server, whylabs_env):
    whylabs_env(log_server.url)
    ok, message = WhyLabsWriter().option(reference_profile_name="baseline").write(why.log(frame(10)).profile().view())
    assert ok, message
    segmented = why.log(frame(21), schema=DatasetSchema(segments=segment_on_column("region")))
    ok, message = WhyLabsWriter().option(reference_profile_name="by-region").write(segmented)
    assert ok, message

    store = log_server.app.state.store
    cid = container(log_server).id
    store.learn_landed(cid)
    references = store.list_profiles(cid, kind="reference")
    assert sorted(r.alias for r in references) == ["baseline", "by-region", "by-region"]
    by_region = sorted(r.segment_tags for r in references if r.alias == "by-region")
    assert by_region == [(("region", "north"),), (("region", "south"),)], "each URL took its own segment"
    r = timeline(log_server, reference="baseline")
    assert r.status_code == 200, r.text
    assert (r.json()["reference"]["alias"], r.json()["buckets"]) == ("baseline", []), "references only: no batch"
    r = timeline(log_server, reference="no-such-alias")
    assert r.status_code == 404 and r.json()["message"].startswith(f"Dataset {ORG}/{DATASET} has no reference")
    assert cid not in r.text


def test_the_observatory_link_of_a_dataset(log_server, whylabs_env):
    whylabs_env(log_server.url)
    writer = WhyLabsWriter()
    profile = why.log(frame(5)).profile()
    profile.set_dataset_timestamp(pd.Timestamp(T0, unit="ms", tz="UTC").to_pydatetime())
    ok, _ = writer.write(profile.view())
    assert ok
    ok, ref_id = WhyLabsWriter().option(reference_profile_name="ref").write(why.log(frame(3)).profile().view())
    assert ok
    client = writer._whylabs_client
    client._refresh_client()
    api = LogApi(client._api_client)
    request = GetProfileObservatoryLinkRequest(batch_profile_timestamps=[T0], reference_profile_ids=[ref_id])
    links = api.get_profile_observatory_link(
        org_id=ORG, dataset_id=DATASET, get_profile_observatory_link_request=request
    )
    assert links.observatory_url.startswith(f"{log_server.url}/organizations/{ORG}/datasets/{DATASET}/profiles?")
    assert len(links.individual_observatory_urls) == 2
    assert "token=" in links.observatory_url and KEY.split(".")[1].split(":")[0] not in links.observatory_url


def test_column_schema_metric_schema_and_weights_are_kept(log_server, whylabs_env):
    """The calls whylogs makes when columns are tagged or weights written: stored, read back by whylogs."""
    whylabs_env(log_server.url)
    writer = WhyLabsWriter()
    ok, message = writer.tag_output_columns(["prediction", "score/raw"])
    assert ok, message
    ok, message = writer.tag_input_columns(["amount"])
    assert ok, message
    ok, message = writer.tag_output_columns(["prediction"])
    assert ok and "already classified output" in message, "whylogs read back the kept classifier"
    ok, message = writer.tag_custom_performance_column("revenue", label="Revenue", default_metric="median")
    assert ok, message
    ok, message = writer.write_feature_weights(FeatureWeights({"amount": 0.75, "region": 0.25}))
    assert ok, message
    ok, message = writer.write_feature_weights(FeatureWeights({"amount": 0.5}))
    assert ok, message
    weights = writer.get_feature_weights()
    assert weights.weights == {"amount": 0.5}, "the newest weights replace the earlier ones"

    r = requests.get(
        f"{log_server.url}/v0/organizations/{ORG}/models/{DATASET}/schema", headers={"X-API-Key": KEY}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    schema = r.json()
    assert {name: c["classifier"] for name, c in schema["columns"].items()} == {
        "amount": "input",
        "prediction": "output",
        "score/raw": "output",
    }
    assert schema["metrics"]["Revenue"] == {
        "label": "Revenue",
        "column": "revenue",
        "defaultMetric": "median",
        "builtinMetric": None,
    }
    headers = {"X-API-Key": KEY}
    put = requests.put(
        f"{log_server.url}/v0/organizations/{ORG}/models/{DATASET}/schema/column/amount",
        json={"classifier": "output", "dataType": "fractional", "discreteness": "continuous", "extra": 1},
        headers=headers,
        timeout=TIMEOUT,
    )
    assert put.status_code == 200, put.text
    after = requests.get(
        f"{log_server.url}/v0/organizations/{ORG}/models/{DATASET}/schema", headers=headers, timeout=TIMEOUT
    )
    assert after.json()["metadata"]["version"] == schema["metadata"]["version"] + 1, "each put is a new version"
    assert after.json()["columns"]["amount"]["dataType"] == "fractional"
    other = requests.get(
        f"{log_server.url}/v0/organizations/{ORG}/dataset/{DATASET}/weights",
        headers={"X-API-Key": OTHER_ORG_KEY},
        timeout=TIMEOUT,
    )
    assert other.status_code == 403 and "amount" not in other.text


def dated(rows: int, day: int = 0):
    profile = why.log(frame(rows, day)).profile()
    profile.set_dataset_timestamp(pd.Timestamp(T0 + day * DAY_MS, unit="ms", tz="UTC").to_pydatetime())
    return profile.view()


def test_a_transactions_profiles_appear_at_commit(log_server, whylabs_env):
    whylabs_env(log_server.url)
    ok, _ = WhyLabsWriter().write(dated(4))
    assert ok
    landed(log_server)
    writer = WhyLabsWriter()
    transaction_id = writer.start_transaction()
    for day, rows in ((0, 6), (1, 8)):
        ok, message = writer.write(dated(rows, day))
        assert ok, message
    status = writer._whylabs_client.transaction_status(transaction_id)
    assert len(status["files"]) == 2
    assert amount_counts(timeline(log_server).json()) == {T0: 4}, "invisible until commit"
    writer.commit_transaction()
    landed(log_server)
    assert amount_counts(timeline(log_server).json()) == {T0: 10, T0 + DAY_MS: 8}


def test_an_aborted_transaction_is_deleted_and_cannot_be_committed(log_server, whylabs_env):
    whylabs_env(log_server.url)
    ok, _ = WhyLabsWriter().write(dated(4))
    assert ok
    landed(log_server)
    store = log_server.app.state.store
    writer = WhyLabsWriter()
    transaction_id = writer.start_transaction()
    ok, message = writer.write(dated(6))
    assert ok, message
    [held] = writer._whylabs_client.transaction_status(transaction_id)["files"]
    assert store.get_upload(held) is not None
    writer.abort_transaction()
    with pytest.raises(TransactionAbortedException):
        writer.commit_transaction()
    assert amount_counts(timeline(log_server).json()) == {T0: 4}
    assert store.get_upload(held) is None
    assert not [key for key in store.blobs.list_keys("profiles/") if held in key], "its bytes are gone"
    r = requests.post(
        f"{log_server.url}/v1/transaction/log",
        params={"transaction_id": transaction_id},
        json={"datasetTimestamp": T0},
        headers={"X-API-Key": KEY},
        timeout=TIMEOUT,
    )
    assert r.status_code == 404 and "Transaction has been aborted" in r.text
    other = requests.get(
        f"{log_server.url}/v1/transaction",
        params={"transaction_id": transaction_id},
        headers={"X-API-Key": OTHER_ORG_KEY},
        timeout=TIMEOUT,
    )
    assert other.status_code == 404, "another org's key does not find the transaction"


def test_no_secret_of_a_key_reaches_a_log(log_server, whylabs_env, caplog):
    """Writes with a good key, a wrong one and another org's, logged at DEBUG by every logger in this
    process (the server's included): the secrets never appear."""
    secrets_ = [key.split(".", 1)[1].split(":")[0] for key in (KEY, UNKNOWN_KEY, OTHER_ORG_KEY)]
    with caplog.at_level(logging.DEBUG):
        for key in (KEY, UNKNOWN_KEY, OTHER_ORG_KEY.rsplit(":", 1)[0]):
            whylabs_env(log_server.url, key=key)
            try:
                WhyLabsWriter().option(reference_profile_name="r").write(dated(3))
                WhyLabsWriter().write(dated(3))
            except ApiException:
                pass
    assert caplog.records, "the writes were logged"
    for secret in secrets_:
        assert secret not in caplog.text


def test_an_unknown_key_is_refused_with_nothing_stored(log_server, whylabs_env):
    whylabs_env(log_server.url, key=UNKNOWN_KEY)
    with pytest.raises(ApiException) as refused:
        WhyLabsWriter().write(why.log(frame(5)).profile().view())
    assert refused.value.status == 401
    assert UNKNOWN_KEY.split(".")[1] not in str(refused.value), "no answer repeats the key"
    with pytest.raises(ApiException) as refused:
        WhyLabsWriter().option(reference_profile_name="r").write(why.log(frame(5)).profile().view())
    assert refused.value.status == 401
    assert container(log_server) is None, "nothing made"
    for key in (UNKNOWN_KEY, None):
        r = requests.post(
            f"{log_server.url}/v0/organizations/{ORG}/log/async/{DATASET}",
            json={"datasetTimestamp": T0, "segmentTags": []},
            headers={"X-API-Key": key} if key else {},
            timeout=TIMEOUT,
        )
        assert r.status_code == 401 and UNKNOWN_KEY.split(".")[1] not in r.text
    assert container(log_server) is None
    assert timeline(log_server, key=UNKNOWN_KEY).status_code == 401


def test_a_key_of_another_org_is_refused_with_nothing_stored(log_server, whylabs_env):
    """whylogs takes the org from a key's ``:org-id`` suffix; sent without it, the key of org-other and
    WHYLABS_DEFAULT_ORG_ID of our org meet on the server, which refuses them (403)."""
    bare = OTHER_ORG_KEY.rsplit(":", 1)[0]
    whylabs_env(log_server.url, key=bare)
    with pytest.raises(ApiException) as refused:
        WhyLabsWriter().option(reference_profile_name="r").write(why.log(frame(5)).profile().view())
    assert refused.value.status == 403
    assert bare.split(".")[1] not in str(refused.value), "no answer repeats the key"
    assert container(log_server) is None, "nothing made"
    assert timeline(log_server, key=OTHER_ORG_KEY).status_code == 403
    # a batch goes to POST /v1/log/async, which takes the org from the key: org-other's own dataset
    ok, _ = WhyLabsWriter().write(why.log(frame(5)).profile().view())
    assert ok
    assert container(log_server) is None
    assert log_server.app.state.store.find_dataset("org-other", DATASET) is not None


def test_the_raw_log_api_answers_what_whylabs_client_reads(log_server):
    headers = {"X-API-Key": KEY}
    url = f"{log_server.url}/v0/organizations/{ORG}"
    r = requests.post(
        f"{url}/log/async/{DATASET}",
        json={"datasetTimestamp": T0, "segmentTags": [{"key": "k", "value": "v"}], "region": "x", "extra": 1},
        headers=headers,
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "modelId", "uploadTimestamp", "uploadUrl", "tags"}
    assert (body["modelId"], body["tags"]) == (DATASET, {"tags": [{"key": "k", "value": "v"}]})
    r = requests.post(
        f"{url}/dataset-profiles/models/{DATASET}/reference-profile",
        json={
            "alias": "a",
            "datasetTimestamp": T0,
            "segments": [{"tags": [{"key": "k", "value": str(i)}]} for i in range(3)],
        },
        headers=headers,
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["alias"], body["datasetId"], body["segments"]) == ("a", DATASET, ["k=0", "k=1", "k=2"])
    assert len(body["uploadUrls"]) == 3 and len(set(body["uploadUrls"])) == 3
    for bad, status in (
        (f"{url}/log/async/bad%20id", 400),
        (f"{log_server.url}/v0/organizations/org-other/log/async/{DATASET}", 403),
    ):
        r = requests.post(bad, json={"datasetTimestamp": T0}, headers=headers, timeout=TIMEOUT)
        assert r.status_code == status, r.text
    r = requests.post(
        f"{url}/log/async/{DATASET}",
        json={"datasetTimestamp": T0},
        headers={**headers, "X-WhyLabs-File-Extension": "ZIP"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200 and log_server.app.state.store.get_upload(r.json()["id"]).format == "zip"
    r = requests.post(
        f"{url}/dataset-profiles/models/{DATASET}/reference-profile",
        json={"alias": "z", "datasetTimestamp": T0, "segments": [{"tags": [{"key": "k", "value": "1"}]}]},
        headers={**headers, "X-WhyLabs-File-Extension": "ZIP"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 400 and "for batch profiles only" in r.json()["message"]
    v1 = f"{log_server.url}/v1/log/async"
    r = requests.post(v1, json={"datasetTimestamp": T0}, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 400 and "X-WhyLabs-Resource" in r.json()["message"]
    r = requests.post(
        v1, json={"datasetTimestamp": T0}, headers={**headers, "X-WhyLabs-Resource": "a b"}, timeout=TIMEOUT
    )
    assert r.status_code == 400 and "not a valid dataset id" in r.json()["message"]
    r = requests.post(v1, json={"nothing": 1}, timeout=TIMEOUT)
    assert r.status_code == 401, "the key is checked before the body"


def test_a_datasets_container_is_unknown_to_every_guest_route(log_server, whylabs_env, make_profile_bytes):
    """Every session-scoped guest route answers for a dataset's container exactly as for an unknown session."""
    whylabs_env(log_server.url)
    profile = why.log(frame(8)).profile()
    profile.set_dataset_timestamp(pd.Timestamp(T0, unit="ms", tz="UTC").to_pydatetime())
    ok, _ = WhyLabsWriter().write(profile.view())
    assert ok
    cid = container(log_server).id
    guest = requests.post(f"{log_server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
    spare = requests.post(
        f"{log_server.url}/v0/sessions/{guest}/upload", json={"datasetTimestamp": T0}, timeout=TIMEOUT
    ).json()["uploadUrl"]
    seeded = Seeded(log_server.url, guest, "ref-" + "Q" * 24, "log-" + "Q" * 24, spare)
    unknown = new_id("session")
    for key, walk in WALKS.items():
        if not walk.like_unknown:
            continue
        answers = walk.send(seeded, cid)
        assert answers and all(r.status_code in (401, 404) for r in answers), key
        assert not any("amount" in r.text for r in answers), key
        strangers = walk.send(seeded, unknown)
        assert [_normalized(r, unknown) for r in strangers] == [_normalized(r, cid) for r in answers], key
    assert cid not in requests.get(f"{log_server.url}/", timeout=TIMEOUT).text
    stats = json.loads(requests.get(f"{log_server.url}/_local/stats", timeout=TIMEOUT).text)
    assert cid not in json.dumps(stats)


def test_a_key_made_with_songbird_keys_create_writes_until_revoked(log_server, whylabs_env, storage_config):
    from typer.testing import CliRunner

    from whylogs_songbird.cli import app

    where = ["--data-dir", str(log_server.data_dir)]
    if storage_config.get("database_url"):
        where += ["--database-url", storage_config["database_url"]]
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--org", "org-new", *where])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    key_id, secret = key[:10], key[11:].split(":")[0]
    assert key[10] == "." and key.endswith(":org-new")
    row = log_server.app.state.store.metadata.find_api_key(key_id)
    assert secret not in str(row), "the store keeps a hash of the secret, not the secret"

    whylabs_env(log_server.url, key=key)
    ok, message = WhyLabsWriter().write(dated(5))
    assert ok, message
    assert log_server.app.state.store.find_dataset("org-new", DATASET) is not None
    forged = requests.post(
        f"{log_server.url}/v0/organizations/org-other/log/async/{DATASET}",
        json={"datasetTimestamp": T0},
        headers={"X-API-Key": f"{key_id}.{secret}:org-other"},
        timeout=TIMEOUT,
    )
    assert forged.status_code == 401, "a stored key's suffix must name its own org"

    listed = runner.invoke(app, ["keys", "list", *where])
    assert listed.exit_code == 0 and key_id in listed.stdout and "org-new" in listed.stdout
    assert secret not in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", key_id, *where])
    assert revoked.exit_code == 0, revoked.output
    with pytest.raises(ApiException) as refused:
        WhyLabsWriter().write(dated(5, 1))
    assert refused.value.status == 401
    again = runner.invoke(app, ["keys", "revoke", key_id, *where])
    assert again.exit_code != 0 and "no key" in again.output
