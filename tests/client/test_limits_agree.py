"""The client and the server agree on every limit of the API.

The request limits live once, in ``models.py``: the server answers 400 naming the limit, the client
refuses before sending. These tests hold both sides to it against a real server on a loopback
port: for values on either side of each limit (N and N + 1) and values drawn by Hypothesis, the
client (:class:`SongbirdClient`) refuses exactly what the server refuses. The limits only one side
states are checked against the other: every request the client lets through fits in the server's
JSON body limit, the profiles per link of the publisher's chunks are what the server shows, and the
server's own defaults (config, store, command line) are one number each.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from whylogs_songbird import models, profiles
from whylogs_songbird.client import SongbirdClient, reference_batches
from whylogs_songbird.errors import ConfigError, RequestLimitError, SongbirdApiError
from whylogs_songbird.models import (
    MAX_ALIAS_LENGTH,
    MAX_DATASET_TIMESTAMP,
    MAX_ID_LENGTH,
    MAX_PROFILES_PER_LINK,
    MAX_REFERENCES_PER_BATCH,
    MAX_SEGMENT_TAGS,
    MAX_TAG_KEY_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    MAX_TIMESTAMP,
    MIN_DATASET_TIMESTAMP,
    MIN_TIMESTAMP,
    BatchLogReferenceRequest,
    LogAsyncRequest,
    LogReferenceRequest,
    SegmentTag,
)
from whylogs_songbird.server import LocalServer, ingest, store
from whylogs_songbird.server.config import ServerConfig

TS = 1_767_225_600_000


@pytest.fixture(scope="module")
def songbird(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    # the request limits only: no cap on the slots the many probes leave open, no rate limit on them
    server = LocalServer(
        data_dir=tmp_path_factory.mktemp("limits"), max_open_slots=None, slot_rate=0, session_rate=0
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def session(songbird: LocalServer) -> str:
    answer = requests.post(f"{songbird.url}/v0/sessions", json={"userId": "limits"}, timeout=30)
    answer.raise_for_status()
    return answer.json()["id"]


@pytest.fixture(scope="module")
def client(songbird: LocalServer) -> Iterator[SongbirdClient]:
    with SongbirdClient(songbird.url, max_retries=0) as made:
        yield made


def verdicts(call, raw: tuple[str, str, dict[str, Any]], url: str) -> tuple[bool, bool]:
    """(client accepts, server accepts): the client's call, and the same body sent raw to the server."""
    try:
        call()
        client_ok = True
    except RequestLimitError:
        client_ok = False
    except SongbirdApiError as exc:
        assert exc.status == 400, exc
        client_ok = True  # sent: the server refused it (the assertion below says so)
    method, path, body = raw
    answer = requests.request(method, f"{url}{path}", json=body, timeout=30)
    assert answer.status_code in (200, 201, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["message"]
    return client_ok, answer.status_code != 400


# -- each limit at N and N + 1 ------------------------------------------------------------------------


def test_the_limits_are_the_documented_numbers():
    assert (MAX_PROFILES_PER_LINK, MAX_REFERENCES_PER_BATCH, MAX_SEGMENT_TAGS) == (3, 1000, 64)
    assert (MAX_TAG_KEY_LENGTH, MAX_TAG_VALUE_LENGTH, MAX_ALIAS_LENGTH, MAX_ID_LENGTH) == (256, 1024, 256, 256)
    assert (MIN_TIMESTAMP, MAX_TIMESTAMP) == (-(2**63), 2**63 - 1024)


@pytest.mark.parametrize(("length", "accepted"), [(MAX_ID_LENGTH, True), (MAX_ID_LENGTH + 1, False)])
def test_user_id_length(songbird, client, length, accepted):
    user = "u" * length
    found = verdicts(lambda: client.create_session(user), ("POST", "/v0/sessions", {"userId": user}), songbird.url)
    assert found == (accepted, accepted)


def upload_case(client, session, *, tags=(), region=None, timestamp=TS):
    def call():
        client.create_dataset_profile_upload(session, timestamp, segment_tags=list(tags) or None, region=region)

    body: dict[str, Any] = {
        "datasetTimestamp": timestamp,
        "segmentTags": [{"key": t.key, "value": t.value} for t in tags],
    }
    if region is not None:
        body["region"] = region
    return call, ("POST", f"/v0/sessions/{session}/upload", body)


@pytest.mark.parametrize(
    ("tags", "accepted"),
    [
        ([SegmentTag(key=f"k{i}", value="v") for i in range(MAX_SEGMENT_TAGS)], True),
        ([SegmentTag(key=f"k{i}", value="v") for i in range(MAX_SEGMENT_TAGS + 1)], False),
        ([SegmentTag(key="k" * MAX_TAG_KEY_LENGTH, value="v")], True),
        ([SegmentTag(key="k" * (MAX_TAG_KEY_LENGTH + 1), value="v")], False),
        ([SegmentTag(key="k", value="v" * MAX_TAG_VALUE_LENGTH)], True),
        ([SegmentTag(key="k", value="v" * (MAX_TAG_VALUE_LENGTH + 1))], False),
    ],
    ids=["tags-N", "tags-N+1", "key-N", "key-N+1", "value-N", "value-N+1"],
)
def test_segment_tag_limits(songbird, client, session, tags, accepted):
    call, raw = upload_case(client, session, tags=tags)
    assert verdicts(call, raw, songbird.url) == (accepted, accepted)


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        (MIN_DATASET_TIMESTAMP, True),
        (MIN_DATASET_TIMESTAMP - 1, False),
        (MAX_DATASET_TIMESTAMP, True),
        (MAX_DATASET_TIMESTAMP + 1, False),
    ],
)
def test_timestamp_bounds(songbird, client, session, timestamp, accepted):
    call, raw = upload_case(client, session, timestamp=timestamp)
    assert verdicts(call, raw, songbird.url) == (accepted, accepted)


@pytest.mark.parametrize(("length", "accepted"), [(MAX_ID_LENGTH, True), (MAX_ID_LENGTH + 1, False)])
def test_region_length(songbird, client, session, length, accepted):
    call, raw = upload_case(client, session, region="r" * length)
    assert verdicts(call, raw, songbird.url) == (accepted, accepted)


@pytest.mark.parametrize(("length", "accepted"), [(MAX_ALIAS_LENGTH, True), (MAX_ALIAS_LENGTH + 1, False)])
def test_alias_length(songbird, client, session, length, accepted):
    alias = "a" * length
    found = verdicts(
        lambda: client.create_reference_profile_upload(session, alias=alias),
        ("POST", f"/v0/sessions/{session}/reference", {"alias": alias}),
        songbird.url,
    )
    assert found == (accepted, accepted)


@pytest.mark.parametrize(
    ("count", "accepted"),
    [(0, False), (1, True), (MAX_REFERENCES_PER_BATCH, True), (MAX_REFERENCES_PER_BATCH + 1, False)],
)
def test_references_per_batch(songbird, client, session, count, accepted):
    references = [LogReferenceRequest(alias=f"r{i}") for i in range(count)]
    found = verdicts(
        lambda: client.batch_create_reference_profile_upload(session, references),
        ("POST", f"/v0/sessions/{session}/references", {"references": [{"alias": f"r{i}"} for i in range(count)]}),
        songbird.url,
    )
    assert found == (accepted, accepted)


def test_profiles_per_link_the_server_shows_are_the_publisher_s_chunks(songbird, client, session):
    url = f"{songbird.url}/v0/sessions/observatory-link/{session}"
    ids = [client.create_reference_profile_upload(session, alias=f"link{i}").id for i in range(4)]
    # the reference slots exist but hold no bytes: the server first counts, then looks them up
    for count in range(MAX_PROFILES_PER_LINK + 2):
        answer = requests.post(url, json={"referenceProfileIds": ids[:count]}, timeout=30)
        if 1 <= count <= MAX_PROFILES_PER_LINK:
            assert answer.status_code == 404, answer.text  # not uploaded: past the count check
        else:
            assert answer.status_code == 400
            assert f"the observatory shows 1 to {MAX_PROFILES_PER_LINK} profiles at a time" in answer.json()["message"]


# -- Hypothesis: values anywhere around the limits ---------------------------------------------------

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


def around(limit: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, limit + 3), st.integers(limit - 3, limit + 3).filter(lambda n: n >= 0))


@given(
    key=around(MAX_TAG_KEY_LENGTH),
    value=around(MAX_TAG_VALUE_LENGTH),
    tags=around(MAX_SEGMENT_TAGS),
    region=st.one_of(st.none(), around(MAX_ID_LENGTH)),
    fill=st.sampled_from(["x", "é", "😀", "\\", '"']),
)
def test_property_client_and_server_refuse_the_same_uploads(songbird, client, session, key, value, tags, region, fill):
    made = [SegmentTag.model_construct(key=fill * key, value=fill * value) for _ in range(min(tags, 1))]
    made += [SegmentTag.model_construct(key=f"k{i}", value="v") for i in range(tags - len(made))]
    call, raw = upload_case(client, session, tags=made, region=None if region is None else fill * region)
    client_ok, server_ok = verdicts(call, raw, songbird.url)
    assert client_ok == server_ok
    fits = tags <= MAX_SEGMENT_TAGS and (region is None or region <= MAX_ID_LENGTH)
    fits = fits and (tags == 0 or (key <= MAX_TAG_KEY_LENGTH and value <= MAX_TAG_VALUE_LENGTH))
    assert server_ok == fits


@given(alias=st.one_of(st.none(), around(MAX_ALIAS_LENGTH)), region=st.one_of(st.none(), around(MAX_ID_LENGTH)),
       fill=st.sampled_from(["a", "ß", "😀"]))  # fmt: skip
def test_property_client_and_server_refuse_the_same_references(songbird, client, session, alias, region, fill):
    body = {k: fill * n for k, n in (("alias", alias), ("region", region)) if n is not None}
    found = verdicts(
        lambda: client.create_reference_profile_upload(session, **body),
        ("POST", f"/v0/sessions/{session}/reference", body),
        songbird.url,
    )
    assert found[0] == found[1] == ((alias or 0) <= MAX_ALIAS_LENGTH and (region or 0) <= MAX_ID_LENGTH)


# -- limits one side states ----------------------------------------------------------------------------


def sent_bytes(body: dict[str, Any]) -> int:
    """The size of the body the client sends for ``body`` (requests' own JSON encoding)."""
    prepared = requests.Request("POST", "http://127.0.0.1/", json=body).prepare()
    return len(prepared.body)


def test_the_largest_upload_request_fits_the_server_s_json_limit():
    limit = ServerConfig().max_json_bytes
    worst = "😀"  # the longest escape JSON gives a character: 12 bytes
    tags = [SegmentTag(key=worst * MAX_TAG_KEY_LENGTH, value=worst * MAX_TAG_VALUE_LENGTH)] * MAX_SEGMENT_TAGS
    request = LogAsyncRequest(dataset_timestamp=MIN_DATASET_TIMESTAMP, segment_tags=tags, region=worst * MAX_ID_LENGTH)
    assert sent_bytes(request.to_wire()) <= limit


def test_the_largest_reference_batch_is_sent_in_parts_that_each_fit_the_server_s_json_limit():
    # 1000 references with 256-character non-ASCII aliases: about 1.6 MB as requests encodes them
    limit = ServerConfig().max_json_bytes
    reference = LogReferenceRequest(alias="é" * MAX_ALIAS_LENGTH, dataset_timestamp=MIN_DATASET_TIMESTAMP)
    references = [reference] * MAX_REFERENCES_PER_BATCH
    assert sent_bytes(BatchLogReferenceRequest(references=references).to_wire()) > limit
    batches = reference_batches(references)
    assert len(batches) == 2
    assert [r for batch in batches for r in batch] == references
    for batch in batches:
        assert sent_bytes(BatchLogReferenceRequest(references=batch).to_wire()) <= limit


def test_a_reference_batch_is_split_exactly_at_the_limit():
    references = [LogReferenceRequest(alias=f"ref-{i}", dataset_timestamp=TS) for i in range(10)]
    whole = sent_bytes(BatchLogReferenceRequest(references=references).to_wire())
    assert reference_batches(references, limit=whole) == [references]  # N bytes: one request
    split = reference_batches(references, limit=whole - 1)  # one byte less: the last one moves
    assert split == [references[:9], references[9:]]
    first = sent_bytes(BatchLogReferenceRequest(references=references[:1]).to_wire())
    assert reference_batches(references, limit=first) == [[r] for r in references]


def test_the_client_sends_the_largest_reference_batch_to_a_real_server(songbird, client, session):
    reference = LogReferenceRequest(alias="é" * MAX_ALIAS_LENGTH, dataset_timestamp=TS)
    answer = client.batch_create_reference_profile_upload(session, [reference] * MAX_REFERENCES_PER_BATCH)
    assert len(answer.references) == MAX_REFERENCES_PER_BATCH
    assert len({r.id for r in answer.references}) == MAX_REFERENCES_PER_BATCH
    assert {r.alias for r in answer.references} == {"é" * MAX_ALIAS_LENGTH}
    assert answer.observatory_url


def test_a_reference_batch_of_ascii_aliases_at_every_limit_fits_the_json_limit():
    reference = LogReferenceRequest(
        alias="a" * MAX_ALIAS_LENGTH, dataset_timestamp=MIN_DATASET_TIMESTAMP, region="r" * 256
    )
    body = BatchLogReferenceRequest(references=[reference] * MAX_REFERENCES_PER_BATCH).to_wire()
    assert sent_bytes(body) <= ServerConfig().max_json_bytes
    assert json.loads(requests.Request("POST", "http://x/", json=body).prepare().body) == body


def test_the_publisher_s_alias_limit_is_the_api_s():
    assert profiles.check_alias("a" * MAX_ALIAS_LENGTH) == "a" * MAX_ALIAS_LENGTH
    with pytest.raises(ConfigError):
        profiles.check_alias("a" * (MAX_ALIAS_LENGTH + 1))


def test_the_server_s_defaults_are_one_number_each():
    from whylogs_songbird.server import cli as server_cli

    config = ServerConfig()
    options = inspect.signature(server_cli.config_from_options).parameters
    assert config.max_columns == store.DEFAULT_MAX_COLUMNS == options["max_columns"].default
    assert config.max_upload_bytes == store.DEFAULT_MAX_UPLOAD_BYTES
    assert config.claim_lease_seconds * 1000 == ingest.LEASE_MS == options["claim_lease"].default * 1000
    assert models.MAX_PROFILES_PER_LINK == 3
