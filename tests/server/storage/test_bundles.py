"""Export and import of session bundles over real HTTP, between the embedded and the team store:
the same timeline JSON after the move, the exact bytes, and refusals (truncated, tampered, bad
manifest, unknown version) that create nothing."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile

import pytest
import requests
from conftest import make_profile_bytes, make_store_config
from typer.testing import CliRunner

from whylogs_songbird.cli import app as cli_app
from whylogs_songbird.client import SongbirdClient
from whylogs_songbird.errors import SongbirdApiError
from whylogs_songbird.server.bundles import MANIFEST

TIMEOUT = 60
TS = 1_700_000_000_000
DAY = 86_400_000
EMBEDDED = {"database_url": None, "blob_store": None, "s3_endpoint_url": None}


def _seed(url: str) -> tuple[str, dict[str, bytes]]:
    """A session with segmented batches over four days and two references; its bytes by upload id."""
    sid = requests.post(f"{url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
    sent: dict[str, bytes] = {}
    for day in range(4):
        for region in ("north", "south"):
            body = {"datasetTimestamp": TS + day * DAY, "segmentTags": [{"key": "region", "value": region}]}
            slot = requests.post(f"{url}/v0/sessions/{sid}/upload", json=body, timeout=TIMEOUT).json()
            data = make_profile_bytes(n_rows=20 + day, seed=day * 10 + len(region))
            assert requests.put(slot["uploadUrl"], data=data, timeout=TIMEOUT).ok
            sent[slot["id"]] = data
    for alias, seed in (("baseline", 100), (None, 101)):
        body = {"alias": alias} if alias else {}
        slot = requests.post(f"{url}/v0/sessions/{sid}/reference", json=body, timeout=TIMEOUT).json()
        data = make_profile_bytes(n_rows=30, seed=seed)
        assert requests.put(slot["uploadUrl"], data=data, timeout=TIMEOUT).ok
        sent[slot["id"]] = data
    page = requests.get(f"{url}/sessions/{sid}", timeout=TIMEOUT)  # learns presigned PUTs
    assert page.status_code == 200
    return sid, sent


def _timeline(url: str, sid: str, **params: str) -> str:
    query = {"granularity": "day", **params}
    answer = requests.get(f"{url}/api/v1/sessions/{sid}/timeline", params=query, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    text = json.dumps(answer.json(), sort_keys=True)
    return re.sub(r"(session|log|ref)-[A-Za-z0-9_-]{16,64}", r"\1-ID", text)


def _export(url: str, sid: str) -> bytes:
    answer = requests.get(f"{url}/api/v1/sessions/{sid}/export", timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    return answer.content


def _import(url: str, bundle: bytes) -> requests.Response:
    return requests.post(
        f"{url}/api/v1/import", data=bundle, headers={"Content-Type": "application/zip"}, timeout=TIMEOUT
    )


def _session_count(server) -> int:
    return server.store.session_count()


@pytest.fixture
def two_stores(server_factory, request, monkeypatch):
    """An embedded-store server and a team-store server (PostgreSQL + SeaweedFS)."""
    embedded = server_factory(**EMBEDDED)
    team = server_factory(**make_store_config("team", request, monkeypatch))
    return embedded, team


def test_a_session_moves_to_the_other_store_and_back_with_the_same_timeline(two_stores):
    embedded, team = two_stores
    sid, sent = _seed(embedded.url)
    views = [{}, {"segment": "region=north"}]
    before = [_timeline(embedded.url, sid, **v) for v in views]

    bundle = _export(embedded.url, sid)
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        assert manifest["format"] == "songbird-bundle" and manifest["version"] == 1
        assert len(manifest["profiles"]) == len(sent) == 10
        for entry in manifest["profiles"]:
            data = archive.read(entry["file"])
            assert data == sent[entry["id"]], "the bundle holds each profile's bytes exactly as uploaded"
            assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
            assert entry["uploaded_at"] > 0 and entry["kind"] in ("batch", "reference")
        kinds = sorted(e["kind"] for e in manifest["profiles"])
        assert kinds.count("reference") == 2
        assert {e["alias"] for e in manifest["profiles"] if e["kind"] == "reference"} >= {"baseline"}
        assert {tuple(t.values()) for e in manifest["profiles"] for t in e["segment_tags"]} == {
            ("region", "north"),
            ("region", "south"),
        }

    answer = _import(team.url, bundle)
    assert answer.status_code == 201, answer.text
    moved = answer.json()
    assert moved["profiles"] == 10 and moved["sessionId"] != sid
    assert moved["observatoryUrl"] == f"{team.url}/sessions/{moved['sessionId']}"
    assert [_timeline(team.url, moved["sessionId"], **v) for v in views] == before
    assert requests.get(moved["observatoryUrl"], timeout=TIMEOUT).status_code == 200

    back = _import(embedded.url, _export(team.url, moved["sessionId"]))
    assert back.status_code == 201, back.text
    assert [_timeline(embedded.url, back.json()["sessionId"], **v) for v in views] == before
    with zipfile.ZipFile(io.BytesIO(_export(embedded.url, back.json()["sessionId"]))) as again:
        stored = sorted(again.read(e["file"]) for e in json.loads(again.read(MANIFEST))["profiles"])
    assert stored == sorted(sent.values()), "bytes survive two moves unchanged"


def _rezip(bundle: bytes, change) -> bytes:
    """The bundle with its members passed through ``change(name, data) -> data | None`` (None: left out)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(bundle)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = change(info.filename, source.read(info))
            if data is not None:
                target.writestr(info.filename, data)
    return out.getvalue()


def _manifest_change(edit):
    def change(name: str, data: bytes) -> bytes:
        if name != MANIFEST:
            return data
        manifest = json.loads(data)
        edit(manifest)
        return json.dumps(manifest).encode()

    return change


def _flip_profile_byte(name: str, data: bytes) -> bytes:
    if name == "profiles/000001.bin":
        return data[:-1] + bytes([data[-1] ^ 1])
    return data


def _garbage_profile(name: str, data: bytes) -> bytes:
    return b"not a profile at all" if name == "profiles/000001.bin" else data


def _garbage_with_manifest(bundle: bytes) -> bytes:
    bad = b"NOPE" + b"x" * 60
    sha = hashlib.sha256(bad).hexdigest()

    def change(name: str, data: bytes) -> bytes:
        if name == "profiles/000001.bin":
            return bad
        if name == MANIFEST:
            manifest = json.loads(data)
            manifest["profiles"][0].update(size=len(bad), sha256=sha)
            return json.dumps(manifest).encode()
        return data

    return _rezip(bundle, change)


REFUSALS = {
    "truncated": (lambda b: b[: len(b) // 2], "not a zip bundle"),
    "truncated to the last byte": (lambda b: b[:-1], "not a zip bundle"),
    "a flipped byte in a profile": (lambda b: _rezip(b, _flip_profile_byte), "sha256"),
    "a profile left out": (
        lambda b: _rezip(b, lambda n, d: None if n == "profiles/000002.bin" else d),
        "does not hold",
    ),
    "not a profile (size and hash made to match)": (_garbage_with_manifest, "not a well-formed whylogs profile"),
    "bytes not matching the manifest's size": (lambda b: _rezip(b, _garbage_profile), "bytes, not the"),
    "an unknown version": (lambda b: _rezip(b, _manifest_change(lambda m: m.update(version=99))), "version 99"),
    "no manifest": (lambda b: _rezip(b, lambda n, d: None if n == MANIFEST else d), "no manifest.json"),
    "a manifest that is not JSON": (lambda b: _rezip(b, lambda n, d: b"{" if n == MANIFEST else d), "cannot be read"),
    "a bad kind": (
        lambda b: _rezip(b, _manifest_change(lambda m: m["profiles"][0].update(kind="other"))),
        "has kind",
    ),
    "not a zip at all": (lambda b: b"hello", "not a zip bundle"),
}


@pytest.mark.parametrize("storage_config", ["embedded", "team"], indirect=True)
def test_a_bad_bundle_is_refused_and_creates_nothing(server, storage_config):
    sid, _ = _seed(server.url)
    bundle = _export(server.url, sid)
    sessions = _session_count(server)
    keys = sorted(server.store.blobs.list_keys("profiles/"))
    for name, (damage, words) in REFUSALS.items():
        answer = _import(server.url, damage(bundle))
        assert answer.status_code == 400, (name, answer.status_code, answer.text)
        message = answer.json()["message"]
        assert "nothing was imported" in message and words in message, (name, message)
        assert _session_count(server) == sessions, name
        assert sorted(server.store.blobs.list_keys("profiles/")) == keys, name
    assert _import(server.url, bundle).status_code == 201, "the intact bundle still imports"


def test_cli_and_client_export_and_import(two_stores, tmp_path):
    embedded, team = two_stores
    sid, _ = _seed(embedded.url)
    runner = CliRunner()
    target = tmp_path / "bundle.zip"
    result = runner.invoke(cli_app, ["export", sid, "--endpoint", embedded.url, "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert target.is_file() and not (tmp_path / "bundle.zip.part").exists()
    result = runner.invoke(cli_app, ["import", str(target), "--endpoint", team.url])
    assert result.exit_code == 0, result.output
    new_id, link = result.stdout.split()
    assert link == f"{team.url}/sessions/{new_id}"
    assert _timeline(team.url, new_id) == _timeline(embedded.url, sid)

    with SongbirdClient(endpoint=team.url, max_retries=0) as client:
        with pytest.raises(SongbirdApiError, match="nothing was imported"):
            client.import_bundle(io.BytesIO(b"not a zip"))
        out = io.BytesIO()
        assert client.export_session(new_id, out) == len(out.getvalue()) > 0
    missing = tmp_path / "missing.zip"
    result = runner.invoke(cli_app, ["export", "session-" + "A" * 24, "--endpoint", embedded.url, "-o", str(missing)])
    assert result.exit_code == 1 and not missing.exists() and "unknown" in result.output


def test_migrate_moves_every_session_of_an_embedded_store_once(two_stores, tmp_path):
    embedded, team = two_stores
    first, _ = _seed(embedded.url)
    second, _ = _seed(embedded.url)
    requests.post(f"{embedded.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT)  # empty: nothing to move
    runner = CliRunner()
    args = ["migrate", "--from", str(embedded.config.data_dir), "--to", team.url, "--config-dir", str(tmp_path)]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    moved = dict(re.findall(r"(session-\S+) -> (session-\S+) \(10 profiles\)", result.stdout))
    assert set(moved) == {first, second}
    for old, new in moved.items():
        assert _timeline(team.url, new) == _timeline(embedded.url, old)
    sessions = _session_count(team)
    again = runner.invoke(cli_app, args)
    assert again.exit_code == 0 and "->" not in again.stdout, "a second run moves nothing twice"
    assert _session_count(team) == sessions
    result = runner.invoke(cli_app, ["migrate", "--from", str(tmp_path / "nothing"), "--to", team.url])
    assert result.exit_code == 2 and "holds no embedded store" in result.output


def test_an_import_obeys_the_servers_session_rules(server_factory):
    source = server_factory()
    sid, _ = _seed(source.url)
    bundle = _export(source.url, sid)
    closed = server_factory(guest_sessions=False)
    answer = _import(closed.url, bundle)
    assert answer.status_code == 403 and "--guest-sessions off" in answer.json()["message"]
    small = server_factory(max_session_profiles=3)
    answer = _import(small.url, bundle)
    assert answer.status_code == 400 and "--max-session-profiles" in answer.json()["message"]
    tight = server_factory(max_session_bytes=1000)
    answer = _import(tight.url, bundle)
    assert answer.status_code == 400 and "--max-session-bytes" in answer.json()["message"]
    for server in (closed, small, tight):
        assert _session_count(server) == 0 and list(server.store.blobs.list_keys("profiles/")) == []


@pytest.mark.parametrize("storage_config", ["embedded", "team"], indirect=True)
def test_an_export_holds_uploads_no_page_has_looked_at_yet(server):
    sid = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
    slot = requests.post(f"{server.url}/v0/sessions/{sid}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT)
    data = make_profile_bytes(seed=5)
    assert requests.put(slot.json()["uploadUrl"], data=data, timeout=TIMEOUT).ok  # with S3: straight to the store
    with zipfile.ZipFile(io.BytesIO(_export(server.url, sid))) as archive:
        entries = json.loads(archive.read(MANIFEST))["profiles"]
        assert [archive.read(e["file"]) for e in entries] == [data]
