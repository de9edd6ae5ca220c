"""Session bundles (whylogs_songbird/server/bundles.py) on the real embedded store, in process.

Bundles are exported from and imported into real stores (SQLite and files in a temporary
directory); refused bundles are written by hand with ``zipfile``, one fault each, and every
refusal is checked for its message, for creating nothing and for leaving no temporary file.
Limits are tried at N and N+1 (a few are lowered with monkeypatch so the bundles stay tiny).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server import bundles
from whylogs_songbird.server.bundles import (
    FORMAT,
    IMPORT_PATH,
    MANIFEST,
    MAX_BUNDLE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_PROFILES,
    VERSION,
    BundleError,
    _Sink,
    export_chunks,
    exportable,
    import_bundle,
    read_manifest,
)
from whylogs_songbird.server.store import NewUpload, Store, UploadRecord

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/bundles.py")

#: well-formed serialized profiles of one column without chunks (17 bytes each)
PROFILE = b"WHY1\x00\x0b\n\x02(\x01\x12\x05\n\x01c\x12\x00"
OTHER = b"WHY1\x00\x0b\n\x02(\x01\x12\x05\n\x01d\x12\x00"
SHA = hashlib.sha256(PROFILE).hexdigest()
TS = 1_700_000_000_000


def test_the_constants():
    assert (FORMAT, VERSION, MANIFEST, IMPORT_PATH) == ("songbird-bundle", 1, "manifest.json", "/api/v1/import")
    assert MAX_MANIFEST_BYTES == 64 * 1024 * 1024 and MAX_BUNDLE_BYTES == 64 * 1024**3 and MAX_PROFILES == 100_000


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "target")
    yield s
    s.close()


def temp_files(store: Store) -> list[Path]:
    return [p for p in store.blobs.tmp_dir.iterdir() if p.is_file()]  # type: ignore[attr-defined]


def put(store: Store, session_id: str, spec: NewUpload, data: bytes) -> UploadRecord:
    upload = store.create_uploads(session_id, [spec], ttl_seconds=900)[0]
    return store_profile_bytes(store, upload.id, data)


def session_of_two(store: Store) -> tuple[str, UploadRecord, UploadRecord]:
    session_id = store.create_session("u").id
    batch = put(
        store, session_id, NewUpload("batch", dataset_timestamp=TS, segment_tags=(("b", "2"), ("a", "1"))), PROFILE
    )
    reference = put(store, session_id, NewUpload("reference", alias="train"), OTHER)
    return session_id, batch, reference


def export(store: Store, session_id: str) -> bytes:
    return b"".join(export_chunks(store, session_id, exportable(store, session_id)))


# -- export ------------------------------------------------------------------------------------


def local_extra_tags(data: bytes, info: zipfile.ZipInfo) -> list[int]:
    """The ids of the extra fields in an entry's local header (0x0001: zip64 sizes)."""
    start = info.header_offset
    name_length, extra_length = struct.unpack("<HH", data[start + 26 : start + 30])
    extra = data[start + 30 + name_length : start + 30 + name_length + extra_length]
    tags, at = [], 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack("<HH", extra[at : at + 4])
        tags.append(tag)
        at += 4 + length
    return tags


def test_an_export_holds_each_profile_s_bytes_and_a_manifest_written_last(store):
    session_id, batch, reference = session_of_two(store)
    data = export(store, session_id)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["profiles/000001.bin", "profiles/000002.bin", MANIFEST]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert archive.read("profiles/000001.bin") == PROFILE and archive.read("profiles/000002.bin") == OTHER
        text = archive.read(MANIFEST).decode()
        manifest = json.loads(text)
        # each profile is written with zip64 sizes in its header, so a profile over 4 GiB fits too
        assert [local_extra_tags(data, archive.getinfo(n)) for n in archive.namelist()] == [[0x0001], [0x0001], []]
    assert text == json.dumps(manifest, indent=1)  # one key a line, indented by one: readable as it is
    session = store.get_session(session_id)
    assert session is not None
    exported_at = manifest.pop("exported_at")
    assert isinstance(exported_at, int) and exported_at >= batch.created_at
    assert manifest == {
        "format": "songbird-bundle",
        "version": 1,
        "session": {"id": session_id, "created_at": session.created_at},
        "profiles": [
            {
                "file": "profiles/000001.bin",
                "id": batch.id,
                "kind": "batch",
                "dataset_timestamp": TS,
                "alias": None,
                "segment_tags": [{"key": k, "value": v} for k, v in batch.segment_tags],
                "uploaded_at": batch.stored_at,
                "size": 17,
                "sha256": SHA,
            },
            {
                "file": "profiles/000002.bin",
                "id": reference.id,
                "kind": "reference",
                "dataset_timestamp": None,
                "alias": "train",
                "segment_tags": [],
                "uploaded_at": reference.stored_at,
                "size": 17,
                "sha256": hashlib.sha256(OTHER).hexdigest(),
            },
        ],
    }


def test_the_export_s_sink_is_a_write_only_stream_drained_piece_by_piece():
    sink = _Sink()
    assert (sink.writable(), sink.readable(), sink.seekable()) == (True, False, False)
    buffered = io.BufferedWriter(sink, buffer_size=4)  # refused by a stream that is not writable
    buffered.write(b"abc")
    buffered.write(memoryview(b"defgh"))
    buffered.flush()
    assert sink.drain() == b"abcdefgh" and sink.drain() == b""


def test_exportable_leaves_out_slots_invalid_profiles_and_duplicates(store):
    session_id = store.create_session("u").id
    kept = put(store, session_id, NewUpload("batch", dataset_timestamp=TS), PROFILE)
    put(store, session_id, NewUpload("batch", dataset_timestamp=TS), PROFILE)  # a duplicate: no bytes of its own
    invalid = put(store, session_id, NewUpload("reference"), OTHER)
    store.metadata.mark_invalid(invalid.id, hashlib.sha256(OTHER).hexdigest(), "refused")
    store.create_uploads(session_id, [NewUpload("reference")], ttl_seconds=900)
    assert [p.id for p in exportable(store, session_id)] == [kept.id]


def test_an_export_is_streamed_piece_by_piece(store, monkeypatch):
    monkeypatch.setattr(bundles, "_CHUNK", 5)
    session_id, _, _ = session_of_two(store)
    pieces = list(export_chunks(store, session_id, exportable(store, session_id)))
    assert len(pieces) == 2 * 4 + 1  # 17 bytes in reads of 5, each drained, then the manifest's piece
    with zipfile.ZipFile(io.BytesIO(b"".join(pieces))) as archive:
        assert archive.read("profiles/000001.bin") == PROFILE


def test_an_export_of_changed_bytes_stops(store):
    session_id, batch, _ = session_of_two(store)
    assert store.data_dir is not None and batch.path is not None
    (store.data_dir / batch.path).write_bytes(OTHER)  # same size, other bytes
    with pytest.raises(
        OSError, match=f"^the stored bytes of upload {batch.id} are not the recorded ones; export stopped$"
    ):
        export(store, session_id)
    (store.data_dir / batch.path).write_bytes(PROFILE + b"x")
    with pytest.raises(OSError, match="are not the recorded ones"):
        export(store, session_id)


def test_an_export_of_an_unknown_session_has_no_creation_time(store):
    data = b"".join(export_chunks(store, "session-" + "Z" * 24, []))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read(MANIFEST))
    assert manifest["session"] == {"id": "session-" + "Z" * 24, "created_at": None} and manifest["profiles"] == []


# -- a round trip --------------------------------------------------------------------------------


def test_an_imported_bundle_is_a_new_session_with_the_same_profiles(store, target, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.bundles")
    session_id, batch, reference = session_of_two(store)
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(export(store, session_id))
    result = import_bundle(target, bundle)
    assert result.profiles == 2 and result.session_id != session_id
    session = target.get_session(result.session_id)
    assert session is not None and session.user_id == "bundle-import"
    imported = sorted(target.list_profiles(result.session_id), key=lambda p: p.kind)
    assert [(p.kind, p.dataset_timestamp, p.alias, p.segment_tags, p.size, p.sha256) for p in imported] == [
        ("batch", TS, None, batch.segment_tags, 17, SHA),
        ("reference", None, "train", (), 17, hashlib.sha256(OTHER).hexdigest()),
    ]
    assert target.read_profile_bytes(imported[0]) == PROFILE
    assert temp_files(target) == []
    assert [r.getMessage() for r in caplog.records] == ["imported a bundle of 2 profiles"]
    other = import_bundle(target, bundle, user_id="someone")
    assert target.get_session(other.session_id).user_id == "someone"  # type: ignore[union-attr]


def test_an_import_keeps_the_order_profiles_landed_in(store, target, tmp_path, monkeypatch):
    session_id = store.create_session("u").id
    slots = store.create_uploads(session_id, [NewUpload("reference", alias=a) for a in "abcde"], ttl_seconds=900)
    for n, slot in enumerate(reversed(slots)):  # landed in the other order than the slots were made: e first
        source = tmp_path / f"{n}.bin"
        source.write_bytes(PROFILE)
        store.store_profile_file(slot.id, source, size=len(PROFILE), sha256=SHA, stored_at=TS + n)
    assert [p.alias for p in exportable(store, session_id)] == list("edcba")
    assert [p.stored_at for p in exportable(store, session_id)] == [TS + n for n in range(5)]
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(export(store, session_id))

    # a clock that stands still: each profile is still recorded a millisecond after the last
    monkeypatch.setattr(bundles, "now_ms", lambda: 7)
    monkeypatch.setattr("whylogs_songbird.server.storage.sql.now_ms", lambda: 7)
    moved = import_bundle(target, bundle).session_id
    landed = sorted(target.list_profiles(moved), key=lambda p: (p.stored_at, p.id))
    assert [(p.alias, p.stored_at) for p in landed] == [("e", 7), ("d", 8), ("c", 9), ("b", 10), ("a", 11)]


def test_a_failure_while_storing_deletes_the_new_session(store, target, tmp_path, monkeypatch):
    session_id, _, _ = session_of_two(store)
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(export(store, session_id))
    real = target.store_profile_file
    calls: list[str] = []

    def fail_second(upload_id: str, path: Path, **kwargs: Any) -> Any:
        calls.append(upload_id)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(upload_id, path, **kwargs)

    monkeypatch.setattr(target, "store_profile_file", fail_second)
    with pytest.raises(OSError, match="disk full"):
        import_bundle(target, bundle)
    assert target.session_count() == 0
    assert temp_files(target) == []
    assert target.data_dir is not None
    assert [p for p in (target.data_dir / "profiles").rglob("*") if p.is_file()] == []


# -- refusals ----------------------------------------------------------------------------------


def entry(n: int = 1, **changes: Any) -> dict[str, Any]:
    item = {
        "file": f"profiles/{n:06d}.bin",
        "id": f"log-{n}",
        "kind": "batch",
        "dataset_timestamp": TS,
        "alias": None,
        "segment_tags": [],
        "uploaded_at": TS,
        "size": len(PROFILE),
        "sha256": SHA,
    }
    item.update(changes)
    return item


def write_bundle(
    path: Path,
    manifest: Any = None,
    files: dict[str, bytes] | None = None,
    *,
    raw_manifest: bytes | None = None,
) -> Path:
    if manifest is None and raw_manifest is None:
        manifest = {"format": FORMAT, "version": VERSION, "profiles": [entry()]}
    files = {"profiles/000001.bin": PROFILE} if files is None else files
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        if raw_manifest is not None or manifest is not ...:
            archive.writestr(MANIFEST, raw_manifest if raw_manifest is not None else json.dumps(manifest))
    return path


def refused(target: Store, bundle: Path, message: str, **options: Any) -> None:
    with pytest.raises(BundleError) as caught:
        import_bundle(target, bundle, **options)
    assert str(caught.value) == message
    assert target.session_count() == 0 and temp_files(target) == []


def test_a_good_hand_made_bundle_imports(target, tmp_path):
    assert import_bundle(target, write_bundle(tmp_path / "b.zip")).profiles == 1


def test_not_a_zip(target, tmp_path):
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(
        BundleError, match=r"^The file is not a zip bundle \(.*\); it may be cut short. Export it again.$"
    ):
        import_bundle(target, bundle)
    with pytest.raises(BundleError, match="^The file is not a zip bundle"):
        import_bundle(target, tmp_path / "missing.zip")


def test_no_manifest(target, tmp_path):
    refused(
        target,
        write_bundle(tmp_path / "b.zip", ...),
        "The file is a zip but not a songbird bundle: it has no manifest.json.",
    )


def test_a_manifest_too_large(target, tmp_path, monkeypatch):
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "profiles": [entry()]}).encode()
    monkeypatch.setattr(bundles, "MAX_MANIFEST_BYTES", len(manifest))
    assert import_bundle(target, write_bundle(tmp_path / "a.zip", raw_manifest=manifest)).profiles == 1
    target.metadata.mark_session_deleted(target.recent_sessions()[0].id)  # type: ignore[attr-defined]
    from whylogs_songbird.server.lifecycle import finish_deletions

    finish_deletions(target)
    refused(
        target,
        write_bundle(tmp_path / "b.zip", raw_manifest=manifest + b" "),
        f"The bundle's manifest.json is larger than {len(manifest)} bytes.",
    )


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b""])
def test_an_unreadable_manifest(target, tmp_path, raw):
    with pytest.raises(
        BundleError,
        match=r"^The bundle's manifest.json cannot be read \((JSONDecodeError|UnicodeDecodeError)\); export it again.$",
    ):
        import_bundle(target, write_bundle(tmp_path / "b.zip", raw_manifest=raw))


@pytest.mark.parametrize("manifest", [[], "x", {"format": "other", "version": 1}, {"version": 1, "profiles": []}])
def test_not_a_bundle_manifest(target, tmp_path, manifest):
    refused(
        target,
        write_bundle(tmp_path / "b.zip", manifest),
        'The bundle\'s manifest.json is not a songbird bundle manifest (no "format": "songbird-bundle").',
    )


@pytest.mark.parametrize(
    ("version", "shown"), [(2, "2"), (None, "None"), ("1", "1"), (True, "True"), ("x" * 50, "x" * 20)]
)
def test_another_version(target, tmp_path, version, shown):
    manifest = {"format": FORMAT, "profiles": []}
    if version is not None:
        manifest["version"] = version
    refused(
        target,
        write_bundle(tmp_path / "b.zip", manifest),
        f"The bundle has version {shown}; this server reads version 1. Import it with the songbird version that "
        "exported it, or export it again.",
    )


def test_the_profile_count_at_n_and_n_plus_one(target, tmp_path, monkeypatch):
    monkeypatch.setattr(bundles, "MAX_PROFILES", 2)
    files = {"profiles/000001.bin": PROFILE, "profiles/000002.bin": PROFILE, "profiles/000003.bin": PROFILE}
    two = {"format": FORMAT, "version": 1, "profiles": [entry(1), entry(2, dataset_timestamp=TS + 1)]}
    assert import_bundle(target, write_bundle(tmp_path / "a.zip", two, files)).profiles == 2
    three = {"format": FORMAT, "version": 1, "profiles": [entry(1), entry(2), entry(3)]}
    with pytest.raises(BundleError) as caught:
        import_bundle(target, write_bundle(tmp_path / "b.zip", three, files))
    assert str(caught.value) == "The bundle's manifest is invalid: profiles is not a list of at most 2."


BAD_ENTRIES = [
    ("x", "profile 1 is not an object."),
    (entry(file=None), "profile 1 names no file, or one named twice."),
    (entry(file="profiles/00001.bin"), "profile 1 names no file, or one named twice."),  # 5 digits
    (entry(file="profiles/0000000001.bin"), "profile 1 names no file, or one named twice."),  # 10 digits
    (entry(file="profiles/000001.binx"), "profile 1 names no file, or one named twice."),
    (entry(file="xprofiles/000001.bin"), "profile 1 names no file, or one named twice."),
    (entry(file="../000001.bin"), "profile 1 names no file, or one named twice."),
    (entry(kind="delta"), "profile 1 has kind 'delta'."),
    (entry(kind="x" * 40), f"profile 1 has kind {'x' * 20!r}."),
    (entry(kind=None), "profile 1 has kind 'None'."),
    (entry(size=None), "profile 1 has no size."),
    (entry(size=-1), "profile 1 has no size."),
    (entry(size=True), "profile 1 has no size."),
    (entry(size=17.0), "profile 1 has no size."),
    (entry(sha256=SHA.upper()), "profile 1 has no sha256."),
    (entry(sha256=SHA[:63]), "profile 1 has no sha256."),
    (entry(sha256=SHA + "0"), "profile 1 has no sha256."),
    (entry(sha256=None), "profile 1 has no sha256."),
    (entry(segment_tags="a=1"), "profile 1 has malformed segment_tags."),
    (entry(segment_tags=[{"key": "a"}]), "profile 1 has malformed segment_tags."),
    (entry(segment_tags=[{"key": 1, "value": "1"}]), "profile 1 has malformed segment_tags."),
    (entry(segment_tags=[["a", "1"]]), "profile 1 has malformed segment_tags."),
    (entry(segment_tags=[{"key": "a", "value": "1"}, {"value": "1"}]), "profile 1 has malformed segment_tags."),
    (
        entry(kind="reference", dataset_timestamp=None, segment_tags=[{"key": "a", "value": "1"}]),
        "profile 1 is a reference with segment tags.",
    ),
    (entry(dataset_timestamp=None), "profile 1 is a batch without dataset_timestamp."),
    (entry(dataset_timestamp="1"), "profile 1's dataset_timestamp is not an integer."),
    (entry(dataset_timestamp=True), "profile 1's dataset_timestamp is not an integer."),
    (entry(dataset_timestamp=2**63), "profile 1's dataset_timestamp is not an integer."),
    (entry(dataset_timestamp=-(2**63) - 1), "profile 1's dataset_timestamp is not an integer."),
    (entry(alias=5), "profile 1's alias is not a string of at most 4096 characters."),
    (entry(alias="a" * 4097), "profile 1's alias is not a string of at most 4096 characters."),
]


@pytest.mark.parametrize(("item", "problem"), BAD_ENTRIES)
def test_a_bad_manifest_entry(target, tmp_path, item, problem):
    manifest = {"format": FORMAT, "version": 1, "profiles": [item]}
    refused(target, write_bundle(tmp_path / "b.zip", manifest), f"The bundle's manifest is invalid: {problem}")


def test_a_file_named_twice_and_where_a_fault_is_named(target, tmp_path):
    manifest = {"format": FORMAT, "version": 1, "profiles": [entry(1), entry(1)]}
    refused(
        target,
        write_bundle(tmp_path / "a.zip", manifest),
        "The bundle's manifest is invalid: profile 2 names no file, or one named twice.",
    )
    manifest = {"format": FORMAT, "version": 1, "profiles": [entry(1), entry(2, kind="x")]}
    refused(
        target, write_bundle(tmp_path / "b.zip", manifest), "The bundle's manifest is invalid: profile 2 has kind 'x'."
    )
    manifest = {"format": FORMAT, "version": 1, "profiles": {"file": "profiles/000001.bin"}}
    refused(
        target,
        write_bundle(tmp_path / "c.zip", manifest),
        "The bundle's manifest is invalid: profiles is not a list of at most 100000.",
    )


def test_entries_at_their_limits_are_read():
    good = [
        entry(1, file="profiles/000000001.bin", dataset_timestamp=2**63 - 1, alias="a" * 4096),
        entry(2, dataset_timestamp=-(2**63), alias=None, size=0),
        entry(3, kind="reference", dataset_timestamp=None, segment_tags=[], alias=""),
        entry(4, segment_tags=[{"key": "k", "value": "v", "extra": 1}]),
    ]
    del good[3]["alias"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MANIFEST, json.dumps({"format": FORMAT, "version": 1, "profiles": good}))
    with zipfile.ZipFile(buffer) as archive:
        entries = read_manifest(archive)
    assert [(e.file, e.kind, e.dataset_timestamp, e.alias, e.segment_tags, e.size, e.sha256) for e in entries] == [
        ("profiles/000000001.bin", "batch", 2**63 - 1, "a" * 4096, (), 17, SHA),
        ("profiles/000002.bin", "batch", -(2**63), None, (), 0, SHA),
        ("profiles/000003.bin", "reference", None, "", (), 17, SHA),
        ("profiles/000004.bin", "batch", TS, None, (("k", "v"),), 17, SHA),
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            MANIFEST, json.dumps({"format": FORMAT, "version": 1, "profiles": [{**entry(1), "segment_tags": None}]})
        )
    with zipfile.ZipFile(buffer) as archive, pytest.raises(BundleError, match="malformed segment_tags"):
        read_manifest(archive)
    no_tags = {k: v for k, v in entry(1).items() if k != "segment_tags"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MANIFEST, json.dumps({"format": FORMAT, "version": 1, "profiles": [no_tags]}))
    with zipfile.ZipFile(buffer) as archive:
        assert read_manifest(archive)[0].segment_tags == ()


# -- the profiles' bytes -------------------------------------------------------------------------


def test_a_named_file_missing(target, tmp_path):
    refused(
        target,
        write_bundle(tmp_path / "b.zip", files={}),
        "The bundle names profiles/000001.bin but does not hold it; export it again.",
    )


def test_a_file_of_another_size(target, tmp_path):
    bundle = write_bundle(tmp_path / "b.zip", files={"profiles/000001.bin": PROFILE + b"x"})
    refused(target, bundle, "profiles/000001.bin holds 18 bytes, not the 17 of the manifest.")


def test_the_upload_limit_at_n_and_n_plus_one(target, tmp_path):
    target.max_upload_bytes = 17
    assert import_bundle(target, write_bundle(tmp_path / "a.zip")).profiles == 1
    target.max_upload_bytes = 16
    with pytest.raises(
        BundleError, match=r"^profiles/000001.bin is larger than this server's upload limit of 16 bytes.$"
    ):
        import_bundle(target, write_bundle(tmp_path / "b.zip"))
    assert temp_files(target) == []


def test_changed_bytes(target, tmp_path):
    bundle = write_bundle(tmp_path / "b.zip", files={"profiles/000001.bin": OTHER})
    refused(target, bundle, "profiles/000001.bin does not have the sha256 of the manifest: the bundle was changed.")


def test_an_empty_profile(target, tmp_path):
    manifest = {"format": FORMAT, "version": 1, "profiles": [entry(size=0, sha256=hashlib.sha256(b"").hexdigest())]}
    bundle = write_bundle(tmp_path / "b.zip", manifest, {"profiles/000001.bin": b""})
    refused(target, bundle, "profiles/000001.bin is empty: it is not a whylogs profile.")


def test_bytes_that_are_no_profile(target, tmp_path):
    data = b"not a whylogs profile"
    manifest = {
        "format": FORMAT,
        "version": 1,
        "profiles": [entry(size=len(data), sha256=hashlib.sha256(data).hexdigest())],
    }
    with pytest.raises(BundleError, match=r"^profiles/000001.bin is not a well-formed whylogs profile \(.+\).$"):
        import_bundle(target, write_bundle(tmp_path / "b.zip", manifest, {"profiles/000001.bin": data}))
    assert target.session_count() == 0 and temp_files(target) == []


def test_the_column_limit_of_the_store_applies(target, tmp_path):
    target.max_columns = 0
    with pytest.raises(BundleError, match="is not a well-formed whylogs profile"):
        import_bundle(target, write_bundle(tmp_path / "b.zip"))


def test_a_damaged_file(target, tmp_path):
    bundle = write_bundle(tmp_path / "b.zip")
    data = bytearray(bundle.read_bytes())
    at = data.index(PROFILE)
    data[at + 5] ^= 0xFF  # the CRC no longer matches
    bundle.write_bytes(bytes(data))
    with pytest.raises(
        BundleError, match=r"^profiles/000001.bin cannot be read from the bundle \(.+\); it is cut short or damaged.$"
    ):
        import_bundle(target, bundle)
    assert target.session_count() == 0 and temp_files(target) == []


def test_the_second_profile_failing_removes_the_first_s_file(target, tmp_path):
    manifest = {"format": FORMAT, "version": 1, "profiles": [entry(1), entry(2)]}
    bundle = write_bundle(tmp_path / "b.zip", manifest, {"profiles/000001.bin": PROFILE, "profiles/000002.bin": OTHER})
    refused(target, bundle, "profiles/000002.bin does not have the sha256 of the manifest: the bundle was changed.")


def test_any_other_failure_while_extracting_removes_the_file(target, tmp_path, monkeypatch):
    def interrupted(data: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bundles, "check_profile_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_bundle(target, write_bundle(tmp_path / "b.zip"))
    assert temp_files(target) == []


# -- quotas ------------------------------------------------------------------------------------


def two_profiles(tmp_path: Path, name: str) -> Path:
    manifest = {"format": FORMAT, "version": 1, "profiles": [entry(1), entry(2, dataset_timestamp=TS + 1)]}
    return write_bundle(tmp_path / name, manifest, {"profiles/000001.bin": PROFILE, "profiles/000002.bin": PROFILE})


def test_the_profile_quota_at_n_and_n_plus_one(target, tmp_path):
    assert import_bundle(target, two_profiles(tmp_path, "a.zip"), max_profiles=2).profiles == 2
    with pytest.raises(BundleError) as caught:
        import_bundle(target, two_profiles(tmp_path, "b.zip"), max_profiles=1)
    assert str(caught.value) == "It holds 2 profiles and this server allows 1 per session (--max-session-profiles)."


def test_the_byte_quota_at_n_and_n_plus_one(target, tmp_path):
    assert import_bundle(target, two_profiles(tmp_path, "a.zip"), max_bytes=34).profiles == 2
    with pytest.raises(BundleError) as caught:
        import_bundle(target, two_profiles(tmp_path, "b.zip"), max_bytes=33)
    assert (
        str(caught.value) == "Its profiles hold 34 bytes and this server allows 33 per session (--max-session-bytes)."
    )
    assert import_bundle(target, two_profiles(tmp_path, "c.zip"), max_profiles=5, max_bytes=None).profiles == 2
