"""Property-based fuzzing of the local server from its own OpenAPI document: no input gives a 5xx.

schemathesis generates requests for every operation of the document, with valid and with invalid
data, a bounded number of examples each, derandomized so runs repeat. Each operation is fuzzed
twice: with generated ids (which mostly meet "unknown session"), and with a real session id, API
key and signed upload URL put in, so the requests reach validation, storage and profile parsing.

(schemathesis' own pytest plugin does not run under pytest 9, so its strategies are used with
Hypothesis' ``@given`` directly.)
"""

from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import schemathesis
from conftest import ANY_ORG_KEY, ORG_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from whylogs_songbird.server import LocalServer

MAX_EXAMPLES = 25
TIMEOUT = 10

#: The songbird operations the document must describe: the seven of the contract, the PUT, and the
#: WhyLabs log API of organizations' datasets.
OPERATIONS = [
    ("POST", "/v0/sessions"),
    ("GET", "/v0/sessions/{session_id}"),
    ("POST", "/v0/sessions/{session_id}/upload"),
    ("POST", "/v0/sessions/{session_id}/reference"),
    ("POST", "/v0/sessions/{session_id}/references"),
    ("POST", "/v0/sessions/observatory-link/{session_id}"),
    ("POST", "/v0/sessions/{session_id}/claim"),
    ("PUT", "/v0/uploads/{upload_id}"),
    ("POST", "/v0/organizations/{org_id}/log/async/{dataset_id}"),
    ("POST", "/v0/organizations/{org_id}/log/reference/{dataset_id}"),
    ("POST", "/v0/organizations/{org_id}/dataset-profiles/models/{dataset_id}/reference-profile"),
    ("POST", "/v0/organizations/{org_id}/log/observatory-link/{dataset_id}"),
    ("GET", "/v0/organizations/{org_id}/models/{dataset_id}/schema"),
    ("GET", "/v0/organizations/{org_id}/models/{dataset_id}/schema/column/{column_id}"),
    ("PUT", "/v0/organizations/{org_id}/models/{dataset_id}/schema/column/{column_id}"),
    ("PUT", "/v0/organizations/{org_id}/models/{dataset_id}/schema/metric"),
    ("GET", "/v0/organizations/{org_id}/dataset/{dataset_id}/weights"),
    ("PUT", "/v0/organizations/{org_id}/dataset/{dataset_id}/weights"),
    ("POST", "/v1/log/async"),
    ("POST", "/v1/transaction"),
    ("GET", "/v1/transaction"),
    ("POST", "/v1/transaction/log"),
    ("POST", "/v1/transaction/commit"),
    ("POST", "/v1/transaction/abort"),
    # ours: deleting (the session id is the credential)
    ("DELETE", "/v0/sessions/{session_id}"),
    ("DELETE", "/v0/sessions/{session_id}/profiles/{profile_id}"),
    # deleting a dataset of an organization (with a key of that org)
    ("DELETE", "/v0/organizations/{org_id}/datasets/{dataset_id}"),
    ("DELETE", "/v0/organizations/{org_id}/datasets/{dataset_id}/profiles/{profile_id}"),
]


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory, shared_sandbox):
    keys = [ANY_ORG_KEY, ORG_KEY]
    with LocalServer(tmp_path_factory.mktemp("fuzzed"), api_keys=keys, sandbox=shared_sandbox) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzzed_server):
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


def real_ids(server):
    """Fixed parts that reach past the "unknown id" checks: a live session, a key and a signed upload URL."""
    session_id = requests.post(f"{server.url}/v0/sessions", json={"userId": "fuzz"}, timeout=TIMEOUT).json()["id"]
    slot = requests.post(
        f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": 1}, timeout=TIMEOUT
    ).json()
    query = parse_qs(urlsplit(slot["uploadUrl"]).query)
    return {
        "path_parameters": {"session_id": session_id, "upload_id": slot["id"]},
        "query": {"expires": query["expires"][0], "signature": query["signature"][0]},
        "headers": {"X-API-Key": ANY_ORG_KEY},
    }


def test_the_document_describes_every_operation(api_schema):
    found = {
        (result.ok().method.upper(), result.ok().path)
        for result in api_schema.get_all_operations()
        if result.ok().path.startswith(("/v0/", "/v1/"))
    }
    assert found == set(OPERATIONS)


@pytest.mark.parametrize("ids", ["generated ids", "real ids"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_input_makes_the_server_fail(api_schema, fuzzed_server, method, path, mode, ids):
    operation = api_schema[path][method]
    fixed = {}
    if ids == "real ids":
        parts = real_ids(fuzzed_server)
        names = {p.name for p in operation.path_parameters}
        fixed["path_parameters"] = {k: v for k, v in parts["path_parameters"].items() if k in names}
        if method == "PUT":
            fixed["query"] = parts["query"]
        if any(h.name == "X-API-Key" for h in operation.headers):
            # the /v1 routes take the org from the key: a key of an org reaches past that check
            fixed["headers"] = {"X-API-Key": ORG_KEY} if path.startswith("/v1/") else parts["headers"]
    sent = []

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        response = case.call(base_url=fuzzed_server.url, timeout=TIMEOUT)
        sent.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    try:
        fuzz()
    except Unsatisfiable:
        if mode is GenerationMode.NEGATIVE:
            pytest.skip("nothing in this operation's input can be made invalid")
        raise
    print(method, path, mode.value, ids, sorted(Counter(sent).items()))
    assert sent and all(status < 500 for status in sent)


def test_nothing_was_left_half_written(fuzzed_server):
    """After all the fuzzing (same module): no body left in tmp/, nothing outside the data layout."""
    data_dir = Path(fuzzed_server.data_dir)
    assert list((data_dir / "tmp").iterdir()) == []
    for path in data_dir.rglob("*"):
        relative = path.relative_to(data_dir).parts
        assert relative[0] in ("profiles", "tmp") or len(relative) == 1, path
