"""A seeded fuzz of sketch headers (issue 20): every byte of the first ``HEADER_BYTES`` of every
sketch of real profiles, set to boundary values, one at a time. In bulk, each mutant goes
through the PUT's check and, when it passes, through a sandbox child: the child must never die
on a profile the check let through (the check is what keeps crafted sketches out of the server's
own process). Then a seeded sample is uploaded over HTTP to one server and every page loaded:
the server never answers 5xx and never goes down."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import requests
import whylogs as why
from profile_crafting import sketch_spans

from whylogs_songbird.server.common import observatory_link
from whylogs_songbird.server.profile_check import ProfileCheckError, check_profile_bytes
from whylogs_songbird.server.sandbox import Sandbox, SandboxCrash, SandboxRefused

SEED = 20
#: Bytes of each sketch mutated: every header field of every sketch kind, and the first items.
HEADER_BYTES = 48
BOUNDARY = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 20, 21, 24, 26, 31, 32, 63, 64, 127, 128, 200, 254, 255)
#: Mutants uploaded over HTTP (the rest are checked in bulk only).
HTTP_SAMPLE = 400
#: Mutants that pass the check and are summarised in a sandbox child (seeded sample, in bulk).
SANDBOX_SAMPLE = 3000
TIMEOUT = 60
TS = 1_700_000_000_000


def _profiles() -> list[bytes]:
    rng = np.random.default_rng(SEED)
    frames = [
        pd.DataFrame({"i": rng.integers(0, 100, 400), "f": rng.random(400), "s": rng.choice(["a", "b", "c"], 400)}),
        pd.DataFrame({"f": rng.normal(size=5000), "s": [f"v{x}" for x in rng.integers(0, 2000, 5000)]}),
        pd.DataFrame({"e": pd.Series([], dtype=float), "t": pd.Series([], dtype=str)}),
        pd.DataFrame({"n": [None, 1.0, None], "one": ["x", None, None]}),
    ]
    return [why.log(frame).view().serialize() for frame in frames]


def _mutants() -> list[bytes]:
    out = []
    for data in _profiles():
        for _, _, _, start, end in sketch_spans(data):
            for pos in range(min(HEADER_BYTES, end - start)):
                for value in BOUNDARY:
                    if data[start + pos] != value:
                        out.append(data[: start + pos] + bytes([value]) + data[start + pos + 1 :])
    return out


@pytest.fixture(scope="module")
def mutants() -> list[bytes]:
    return _mutants()


def test_no_mutant_the_check_lets_through_kills_a_sandbox_child(mutants):
    assert len(mutants) > 10_000
    passed = []
    for data in mutants:
        try:
            check_profile_bytes(data, max_columns=100)
        except ProfileCheckError:
            continue
        passed.append(data)
    assert 0 < len(passed) < len(mutants), "the check refuses some mutants and lets harmless ones through"
    sandbox = Sandbox()
    crashed = []
    try:
        for data in random.Random(SEED).sample(passed, min(SANDBOX_SAMPLE, len(passed))):
            try:
                sandbox.digest(data)
            except SandboxRefused:
                pass
            except SandboxCrash as exc:
                crashed.append(str(exc))
    finally:
        sandbox.close()
    assert crashed == []


def test_the_server_never_dies_or_answers_5xx_on_mutated_sketches(server, mutants):
    sample = random.Random(SEED).sample(mutants, HTTP_SAMPLE)
    session_id = requests.post(f"{server.url}/v0/sessions", json={"userId": "fuzz"}, timeout=TIMEOUT).json()["id"]
    statuses: dict[int, int] = {}
    stored = []
    with requests.Session() as http:
        for index, data in enumerate(sample):
            body = {"datasetTimestamp": TS + index * 3_600_000, "segmentTags": []}
            slot = http.post(f"{server.url}/v0/sessions/{session_id}/upload", json=body, timeout=TIMEOUT).json()
            answer = http.put(slot["uploadUrl"], data=data, timeout=TIMEOUT)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if answer.status_code == 200:
                stored.append(slot)
        assert set(statuses) <= {200, 400}, statuses
        assert statuses.get(200) and statuses.get(400), "some mutants are refused at PUT, others stored"
        for slot in stored:
            page = http.get(slot["observatoryUrl"], timeout=TIMEOUT)
            assert page.status_code in (200, 422), (page.status_code, page.text[:300])
        for url in (
            f"{server.url}/sessions/{session_id}",
            f"{server.url}/sessions/{session_id}/timeline",
            f"{server.url}/api/v1/sessions/{session_id}/timeline?granularity=day",
            observatory_link(server.url, session_id, [stored[0]["id"], stored[-1]["id"]], []),
        ):
            answer = http.get(url, timeout=TIMEOUT)
            assert answer.status_code < 500, (url, answer.status_code, answer.text[:300])
        assert http.get(f"{server.url}/healthz", timeout=TIMEOUT).status_code == 200
