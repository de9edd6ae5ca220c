"""Deleting an organization's dataset, or one of its profiles, with an API key of its org: on both
stores, over real HTTP. Everything goes (rows, bytes in files or S3 objects, summaries, derived
artefacts, schema and weights), the timeline answers 404, and a later write to the same dataset id
starts a new, empty dataset."""

from __future__ import annotations

import os
import signal

import pytest
import requests
from conftest import STORAGE_NAMES, make_profile_bytes
from deletion_checks import _keys, _open_store, _rows, _server_process, _summaries, _wait

from whylogs_songbird.server.config import API_KEYS_ENV
from whylogs_songbird.server.lifecycle import KILL_AFTER_MARK_ENV, deletions

pytestmark = pytest.mark.parametrize("storage_config", STORAGE_NAMES, indirect=True)

TIMEOUT = 30
ORG = "org-deleting"
DATASET = "model-3"
KEY = "K3yId0004D.s3cretD3leteS3cret:" + ORG
OTHER_ORG_KEY = "K3yId0005E.an0therD3lete000:org-other"
UNKNOWN_KEY = "K3yId0006F.n0tAKeyOfThisServer:" + ORG
TS = 1_700_000_000_000
DAY = 86_400_000


@pytest.fixture
def org_server(server_factory):
    return server_factory(api_keys=[KEY, OTHER_ORG_KEY])


def _write(url: str, ts: int, seed: int, dataset: str = DATASET) -> str:
    slot = requests.post(
        f"{url}/v0/organizations/{ORG}/log/async/{dataset}",
        json={"datasetTimestamp": ts, "segmentTags": []},
        headers={"X-API-Key": KEY},
        timeout=TIMEOUT,
    )
    assert slot.status_code == 200, slot.text
    assert requests.put(slot.json()["uploadUrl"], data=make_profile_bytes(seed=seed), timeout=TIMEOUT).ok
    return slot.json()["id"]


def _timeline(url: str, dataset: str = DATASET) -> requests.Response:
    return requests.get(
        f"{url}/api/v1/organizations/{ORG}/datasets/{dataset}/timeline",
        params={"granularity": "day"},
        headers={"X-API-Key": KEY},
        timeout=TIMEOUT,
    )


def _delete(url: str, path: str, key: str | None = KEY) -> requests.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return requests.delete(f"{url}/v0/organizations/{ORG}/datasets/{path}", headers=headers, timeout=TIMEOUT)


def _put_weights(url: str) -> None:
    body = {"segmentWeights": [{"weights": {"amount": 0.5}}]}
    path = f"/v0/organizations/{ORG}/dataset/{DATASET}/weights"
    r = requests.put(f"{url}{path}", json=body, headers={"X-API-Key": KEY}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text


def _weights(url: str) -> list:
    r = requests.get(
        f"{url}/v0/organizations/{ORG}/dataset/{DATASET}/weights", headers={"X-API-Key": KEY}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    return r.json()["segmentWeights"]


def _counts(document: dict) -> list[int]:
    column = next(iter(document["columns"].values()))
    return [n for n in column["count"] if n]


def test_deleting_a_dataset_removes_everything_and_a_later_write_starts_afresh(org_server):
    url, store = org_server.url, org_server.store
    _write(url, TS, 1)
    _write(url, TS + DAY, 2)
    other = _write(url, TS, 9, dataset="model-kept")
    _put_weights(url)
    assert _timeline(url).status_code == 200
    assert _timeline(url, "model-kept").status_code == 200
    container = store.find_dataset(ORG, DATASET)
    assert container is not None
    cid = container.id
    _wait(lambda: _summaries(store, cid) >= 2, "the profiles are summarised")
    assert _rows(store, "derived", "session_id", cid) > 0, "the timeline stored derived artefacts"
    assert _rows(store, "dataset_settings", "session_id", cid) > 0
    assert len(_keys(store, cid)) >= 2

    answer = _delete(url, DATASET)
    assert answer.status_code == 204 and answer.content == b""

    assert _timeline(url).status_code == 404
    assert store.find_dataset(ORG, DATASET) is None
    assert _weights(url) == [], "the settings went with the dataset"
    again = _delete(url, DATASET)
    assert again.status_code == 404 and "unknown" in again.json()["message"]
    _wait(lambda: deletions(store).marked_deleted() == 0, "the purge finishes")
    assert _keys(store, cid) == [], "every byte of the dataset is gone (files or S3 objects)"
    for table, column in (
        ("sessions", "id"),
        ("uploads", "session_id"),
        ("derived", "session_id"),
        ("dataset_settings", "session_id"),
    ):
        assert _rows(store, table, column, cid) == 0, table
    assert _summaries(store, cid) == 0
    # another dataset of the org is untouched
    assert _timeline(url, "model-kept").status_code == 200
    assert store.get_upload(other) is not None

    # the same dataset id, written again: a new dataset holding only the new profile
    _write(url, TS + 5 * DAY, 4)
    fresh = store.find_dataset(ORG, DATASET)
    assert fresh is not None and fresh.id != cid
    _wait(lambda: _summaries(store, fresh.id) >= 1, "the new profile is summarised")
    r = _timeline(url)
    assert r.status_code == 200, r.text
    assert len(_counts(r.json())) == 1, "nothing of the deleted dataset shows in the new one"
    assert _weights(url) == []


def test_a_wrong_or_foreign_key_deletes_nothing(org_server):
    url, store = org_server.url, org_server.store
    upload = _write(url, TS, 1)
    cid = store.find_dataset(ORG, DATASET).id
    # on the team store the PUT lands under the slot's name and is learnt under its final key: wait
    # for that, so that what the refused deletions leave is compared with one settled key
    _wait(lambda: _summaries(store, cid) >= 1 and len(_keys(store, cid)) == 1, "the profile is learnt and summarised")
    kept = _keys(store, cid)
    for key, status in ((None, 401), (UNKNOWN_KEY, 401), (OTHER_ORG_KEY, 403)):
        for path in (DATASET, f"{DATASET}/profiles/{upload}"):
            r = _delete(url, path, key)
            assert r.status_code == status, (key, path, r.text)
            assert r.json()["message"]
    assert store.find_dataset(ORG, DATASET).id == cid
    assert store.get_upload(upload) is not None and _keys(store, cid) == kept
    assert _timeline(url).status_code == 200
    assert _delete(url, "model-never-written").status_code == 404
    assert _delete(url, "bad id!").status_code in (400, 404)


def test_deleting_one_profile_of_a_dataset_leaves_the_rest(org_server):
    url, store = org_server.url, org_server.store
    gone = _write(url, TS, 1)
    kept = _write(url, TS + DAY, 2)
    cid = store.find_dataset(ORG, DATASET).id
    _wait(lambda: _summaries(store, cid) >= 2, "the profiles are summarised")
    assert len(_counts(_timeline(url).json())) == 2

    assert _delete(url, f"{DATASET}/profiles/{gone}").status_code == 204
    assert _delete(url, f"{DATASET}/profiles/{gone}").status_code == 404
    assert _delete(url, f"{DATASET}/profiles/log-unknown").status_code == 404
    _wait(lambda: deletions(store).marked_deleted() == 0, "the purge finishes")
    assert store.get_upload(gone) is None and store.get_upload(kept) is not None
    assert [k for k in _keys(store, cid) if gone in k] == []
    assert [k for k in _keys(store, cid) if kept in k]
    r = _timeline(url)
    assert r.status_code == 200 and len(_counts(r.json())) == 1


def test_a_kill_after_marking_a_dataset_is_finished_at_restart_and_the_id_is_free_meanwhile(storage_config, tmp_path):
    env = {**os.environ, "WHYLOGS_NO_ANALYTICS": "True", API_KEYS_ENV: KEY, KILL_AFTER_MARK_ENV: "1"}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with _server_process(data_dir, storage_config, env) as (url, proc):
        _write(url, TS, 1)
        _write(url, TS + DAY, 2)
        with pytest.raises(requests.ConnectionError):
            _delete(url, DATASET)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    store = _open_store(data_dir, storage_config)
    try:
        assert store.find_dataset(ORG, DATASET) is None, "the mark was committed before the kill"
        marked = store.metadata._query(  # type: ignore[attr-defined]
            "SELECT id FROM sessions WHERE org_id = ? AND deleted_at IS NOT NULL", (ORG,)
        )
        assert len(marked) == 1
        old = marked[0]["id"]
        assert len(_keys(store, old)) >= 2, "the kill came before the purge: the bytes are still there"
        # the marked row waits for its purge, and the dataset id is free already
        fresh = store.dataset_container(ORG, DATASET)
        assert fresh.id != old
    finally:
        store.close()

    env.pop(KILL_AFTER_MARK_ENV)
    with _server_process(data_dir, storage_config, env) as (url, _):
        store = _open_store(data_dir, storage_config)
        try:
            _wait(lambda: _keys(store, old) == [] and deletions(store).marked_deleted() == 0, "the restart purges")
            assert _rows(store, "uploads", "session_id", old) == 0 and _rows(store, "sessions", "id", old) == 0
            assert store.find_dataset(ORG, DATASET).id == fresh.id, "the new dataset is untouched"
            _write(url, TS + 3 * DAY, 3)
            _wait(lambda: _summaries(store, fresh.id) >= 1, "the new profile is summarised")
        finally:
            store.close()
        r = _timeline(url)
        assert r.status_code == 200 and len(_counts(r.json())) == 1
