"""The local server driven by the official clients: whylabs-client's generated SessionsApi, and
whylogs' own guest-session flow (``why.init(allow_anonymous=True)`` + ``why.log``)."""

import configparser
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import requests
from conftest import ANY_ORG_KEY, ORG_KEY, both_stores, make_profile_bytes
from whylabs_client import ApiClient, ApiException, Configuration
from whylabs_client.api.sessions_api import SessionsApi
from whylabs_client.model.batch_log_reference_request import BatchLogReferenceRequest
from whylabs_client.model.create_session_request import CreateSessionRequest
from whylabs_client.model.get_profile_observatory_link_request import GetProfileObservatoryLinkRequest
from whylabs_client.model.log_async_request import LogAsyncRequest
from whylabs_client.model.log_reference_request import LogReferenceRequest
from whylabs_client.model.segment_tag import SegmentTag
from whylogs.core import DatasetProfileView

TS = 1_700_000_000_000

# Every test here runs on the embedded store and on PostgreSQL + S3 (SeaweedFS).
pytestmark = both_stores


def sessions_api(url: str, api_key: str | None = None) -> SessionsApi:
    configuration = Configuration(host=url)
    if api_key is not None:
        configuration.api_key["ApiKeyAuth"] = api_key
    return SessionsApi(ApiClient(configuration))


def test_generated_sessions_api_all_seven_operations(server):
    api = sessions_api(server.url, ORG_KEY)

    session_id = api.create_session(CreateSessionRequest(user_id="5f1c-install")).id
    meta = sessions_api(server.url, ANY_ORG_KEY).get_session(session_id).session
    assert (meta.session_id, meta.org_id, meta.model_id, meta.user_id) == (
        session_id,
        "guest",
        "model-1",
        "5f1c-install",
    )
    assert api.get_session(session_id).session.user_id == ""  # org-test's key: not the uploader's id

    batch = api.create_dataset_profile_upload(
        session_id, LogAsyncRequest(dataset_timestamp=TS, segment_tags=[SegmentTag(key="k", value="v")])
    )
    assert batch.id.startswith("log-") and batch.dataset_id == "model-1" and "segment=k%3Dv" in batch.observatory_url
    ref = api.create_reference_profile_upload(session_id, LogReferenceRequest(alias="baseline", dataset_timestamp=0))
    assert ref.id.startswith("ref-") and ref.alias == "baseline" and ref.model_id == "model-1"
    refs = api.batch_create_reference_profile_upload(
        session_id,
        BatchLogReferenceRequest(references=[LogReferenceRequest(alias="r1"), LogReferenceRequest(alias="r2")]),
    )
    assert [r.alias for r in refs.references] == ["r1", "r2"]
    assert refs.observatory_url.count("profile=") == 2

    for url in (batch.upload_url, ref.upload_url, refs.references[0].upload_url):
        assert requests.put(url, data=make_profile_bytes(), timeout=10).status_code == 200

    links = api.get_session_profile_observatory_link(
        session_id,
        GetProfileObservatoryLinkRequest(batch_profile_timestamps=[TS], reference_profile_ids=[ref.id]),
    )
    assert len(links.individual_observatory_urls) == 2
    assert f"profile={ref.id}&profile={TS}&sessionToken={session_id}" in links.observatory_url
    assert requests.get(links.observatory_url, timeout=10).status_code == 200

    assert api.claim_guest_session(session_id, org_id="org-test") is None
    assert api.get_session(session_id).session.org_id == "org-test"

    counts = {k: v for k, v in server.stats().items() if not k.startswith("stored_")}  # not the disk used
    assert counts | {"put": 0, "observatory_page": 0} == {
        "create_session": 1,
        "get_session": 3,
        "upload": 1,
        "reference": 1,
        "references": 1,
        "observatory_link": 1,
        "claim": 1,
        "put": 0,
        "observatory_page": 0,
    }


def test_generated_client_sees_errors_as_api_exceptions(server):
    api = sessions_api(server.url, ORG_KEY)
    session_id = api.create_session(CreateSessionRequest(user_id="u")).id

    with pytest.raises(ApiException) as info:
        api.create_dataset_profile_upload("session-" + "Q" * 24, LogAsyncRequest(dataset_timestamp=TS, segment_tags=[]))
    assert info.value.status == 404 and "message" in json.loads(info.value.body)

    with pytest.raises(ApiException) as info:
        api.claim_guest_session(session_id, org_id="org-elsewhere")
    assert info.value.status == 403

    with pytest.raises(ApiException) as info:
        sessions_api(server.url).get_session(session_id)  # no key
    assert info.value.status == 401

    with pytest.raises(ApiException) as info:
        api.get_session_profile_observatory_link(
            session_id,
            GetProfileObservatoryLinkRequest(batch_profile_timestamps=[1, 2, 3, 4], reference_profile_ids=[]),
        )
    assert info.value.status == 400

    assert sessions_api(server.url, ANY_ORG_KEY).claim_guest_session(session_id, org_id="org-elsewhere") is None
    with pytest.raises(ApiException) as info:
        api.create_reference_profile_upload(session_id, LogReferenceRequest(alias="late"))
    assert info.value.status == 404


# whylogs keeps its session in module-level state and reads its config file at init, so the
# guest flow runs in a fresh interpreter with its own config directory.
GUEST_SCRIPT = textwrap.dedent(
    """
    import hashlib, json
    import pandas as pd
    import whylogs as why
    from whylogs.migration.uncompound import _uncompound_dataset_profile

    why.init(allow_anonymous=True, allow_local=False)
    df = pd.DataFrame({"a": [1, 2, 3, 4], "b": ["x", "y", "z", "x"], "c": [0.5, 1.5, None, 2.0]})
    batch = why.log(df)  # a guest session uploads inside why.log
    reference = why.log(df.head(2), name="ref")

    def sent(result_set):
        return hashlib.sha256(_uncompound_dataset_profile(result_set.view()).serialize()).hexdigest()

    print(json.dumps({"batch_sha256": sent(batch), "ref_sha256": sent(reference)}))
    """
)


def run_whylogs_guest(server_url: str, tmp_path) -> dict:
    script = tmp_path / "guest_flow.py"
    script.write_text(GUEST_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k.upper() not in {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}}
    env.update(
        WHYLABS_API_ENDPOINT=server_url,
        WHYLOGS_CONFIG_PATH=str(tmp_path / "whylogs-config"),
        WHYLOGS_NO_ANALYTICS="True",
        NO_PROXY="127.0.0.1",
    )
    for name in ("WHYLABS_API_KEY", "WHYLABS_SESSION_ID", "WHYLABS_DEFAULT_ORG_ID", "WHYLABS_DEFAULT_DATASET_ID"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Failed to upload" not in done.stdout + done.stderr, done.stdout[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_whylogs_guest_flow_uploads_to_the_local_server(server, storage_config, tmp_path):
    sent = run_whylogs_guest(server.url, tmp_path)

    config = configparser.ConfigParser()
    config.read(tmp_path / "whylogs-config" / "config.ini")
    session_id = config["whylabs"]["session_id"]
    assert server.store.get_session(session_id) is not None

    # whylogs: create the session, upload the batch profile, then "validate" the session with a
    # throwaway reference before the real one, PUT twice (straight to S3 on the team store).
    stats = server.stats()
    puts_to_server = 0 if storage_config else 2
    assert (stats["create_session"], stats["upload"], stats["references"], stats["put"]) == (1, 1, 2, puts_to_server)

    server.store.learn_landed(session_id)  # the team store: the PUTs went straight to S3
    [batch] = server.store.list_profiles(session_id, kind="batch")
    [reference] = server.store.list_profiles(session_id, kind="reference")
    assert reference.alias == "ref"
    assert batch.sha256 == sent["batch_sha256"]  # the stored bytes are exactly what whylogs sent
    assert reference.sha256 == sent["ref_sha256"]
    assert hashlib.sha256(server.store.read_profile_bytes(batch)).hexdigest() == batch.sha256

    view = DatasetProfileView.deserialize(server.store.read_profile_bytes(batch))
    assert sorted(view.get_columns()) == ["a", "b", "c"]
    assert view.get_column("a").get_metric("counts").n.value == 4
    ref_view = DatasetProfileView.deserialize(server.store.read_profile_bytes(reference))
    assert ref_view.get_column("b").get_metric("counts").n.value == 2
