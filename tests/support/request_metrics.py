"""Reading /metrics in tests: its samples, uploads that make requests, and the request counts it shows of them."""

from __future__ import annotations

import time

import requests
from conftest import make_profile_bytes
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


SLOT_ROUTE = "/v0/sessions/{session_id}/upload"
PUT_ROUTE = "/v0/uploads/{upload_id}"


def request_counts(url: str) -> dict[tuple[str, str, str], float]:
    """``songbird_request_duration_seconds`` observation counts by (method, route, status)."""
    counts: dict[tuple[str, str, str], float] = {}
    for labels, value in samples(requests.get(f"{url}/metrics", timeout=30).text).get(
        "songbird_request_duration_seconds_count", []
    ):
        counts[(labels["method"], labels["route"], labels["status"])] = value
    return counts


def make_uploads(url: str, n: int) -> str:
    """``n`` slots and PUTs on one new session, and one PUT with a bad signature; the session id."""
    session_id = requests.post(f"{url}/v0/sessions", json={"userId": "u"}, timeout=30).json()["id"]
    for i in range(n):
        body = {"datasetTimestamp": 1_700_000_000_000 + i, "segmentTags": []}
        slot = requests.post(f"{url}/v0/sessions/{session_id}/upload", json=body, timeout=30)
        assert slot.status_code == 200, slot.text
        put = requests.put(slot.json()["uploadUrl"], data=make_profile_bytes(seed=i), timeout=30)
        assert put.status_code == 200, put.text
    bad = requests.put(slot.json()["uploadUrl"].replace("signature=", "signature=0"), data=b"x", timeout=30)
    assert bad.status_code == 403, bad.text
    return session_id


def wait_for_counts(url: str, expected: dict[tuple[str, str, str], float]) -> dict[tuple[str, str, str], float]:
    """The counts once ``expected`` holds (an observation lands just after its answer is sent)."""
    deadline = time.monotonic() + 30
    while True:
        counts = request_counts(url)
        if all(counts.get(key) == n for key, n in expected.items()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)
