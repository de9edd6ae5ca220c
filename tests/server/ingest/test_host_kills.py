"""A host killed (``kill -9``) while summarising charges only the profile that could have caused
it (issue 27): a batch the host died on charges no one, each of its profiles is then summarised
alone, and only a death on a profile alone counts a try against it. Real server processes, killed
with their sandbox children, on the team store, where hosts die under each other (both stores' claims and
their tries to the end, without processes: tests/server/storage/test_ingest_claims.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import whylogs as why
from conftest import make_profile_bytes
from server_processes import wait_for, wait_healthy
from services import free_port
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.sandbox import TEST_FAULT_ENV
from whylogs_songbird.server.store import Store, now_ms

pytestmark = pytest.mark.parametrize("storage_config", ["team"], indirect=True)

TS = 1_700_000_000_000
#: A column name only the profile whose summarising hangs (the test-only fault hook) contains.
MARKER = "host-kill-marker-5c21"


def start_host(data_dir: Path, storage_config: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A server process in its own process group (its sandbox children with it), its sandbox
    children hanging on the marked profile."""
    port = free_port()
    command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--data-dir", str(data_dir)]
    for name in ("database_url", "blob_store", "s3_endpoint_url"):
        if name in storage_config:
            command += [f"--{name.replace('_', '-')}", storage_config[name]]
    env = {**os.environ, TEST_FAULT_ENV: "hang:" + MARKER.encode().hex(), "WHYLOGS_NO_ANALYTICS": "True"}
    process = subprocess.Popen(
        [*command, "--no-access-log"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    wait_healthy(f"http://127.0.0.1:{port}", process)
    return process


def kill_host(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def test_a_host_killed_on_a_batch_charges_no_good_profile_and_the_one_it_died_on_alone_once(storage_config, tmp_path):
    data_dir = tmp_path / "host"
    store = Store.open(ServerConfig(data_dir=data_dir, **storage_config))  # looks on, claims nothing
    try:
        session = store.create_session("u")
        uploads = [
            store.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS + i) for i in range(4)
        ]
        poison = why.log(pd.DataFrame({MARKER: [1, 2, 3]})).view().serialize()
        good = [make_profile_bytes(n_rows=3, seed=seed) for seed in range(3)]
        for upload, data in zip(uploads, [*good, poison]):  # the marked one stored last
            store_profile_bytes(store, upload.id, data)
            time.sleep(0.002)  # one stored order
        *rest, last = uploads

        def held(upload_id: str) -> bool:
            current = store.get_upload(upload_id)
            return current.ingest_state == "pending" and (current.ingest_lease or 0) > now_ms()

        # the host takes all four in one claim and hangs on the marked profile: it is killed
        host = start_host(data_dir, storage_config)
        try:
            wait_for(lambda: all(held(u.id) for u in uploads), "the batch is claimed", 60)
        finally:
            kill_host(host)
        # the next start takes each alone: the good ones are summarised, and it dies on the marked one
        host = start_host(data_dir, storage_config)
        try:
            wait_for(lambda: all(store.get_upload(u.id).ingest_state == "ready" for u in rest), "the good ones", 60)
            wait_for(lambda: held(last.id), "the marked profile is claimed", 60)
        finally:
            kill_host(host)
        assert [store.get_upload(u.id).ingest_tries for u in uploads] == [0, 0, 0, 0], "a batch's death is no one's"
        # the death of a claim of it alone is its failed try: after the host's next start ends its
        # claims (as here), the next claim (alone) counts it
        store.reconcile(scan=False)
        (claimed,) = store.metadata.claim_ingest(lease_ms=60_000, limit=8)
        assert (claimed.id, claimed.ingest_tries) == (last.id, 1)
        assert store.get_upload(last.id).ingest_tries == 1
    finally:
        store.close()
