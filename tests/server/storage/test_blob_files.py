"""The embedded blob store (server/storage/files.py) on a real temporary directory.

The HTTP tests store profiles through this store without looking at its files; these tests pin
down the files themselves, fast, so that scripts/mutation can judge files.py in seconds: which
keys map to which paths and which are refused, atomic writes that leave no temporary file,
permissions, sizes, listing and the clean-up at start.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from whylogs_songbird.server.storage import files
from whylogs_songbird.server.storage.base import BlobChangedError
from whylogs_songbird.server.storage.files import FileBlobStore, make_private_dir

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/storage/files.py")

S1 = "session-" + "A" * 20
S2 = "session-" + "B" * 20
L1 = "log-" + "C" * 20
L2 = "log-" + "D" * 20
R1 = "ref-" + "E" * 20
KEY = f"profiles/{S1}/{L1}.0123456789abcdef.bin"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "data")


def test_a_private_dir_is_made_with_its_parents_and_is_0700_whatever_the_umask(tmp_path):
    with umask(0):
        make_private_dir(tmp_path / "a" / "b")
        assert mode(tmp_path / "a" / "b") == 0o700
        (tmp_path / "open").mkdir(mode=0o777)
        make_private_dir(tmp_path / "open")  # an existing directory is made private too
        assert mode(tmp_path / "open") == 0o700


def test_a_new_store_makes_its_private_directories_and_names_its_root(tmp_path):
    with umask(0):
        store = FileBlobStore(tmp_path / "x" / "data")
    root = tmp_path / "x" / "data"
    assert store.root == root and store.tmp_dir == root / "tmp"
    assert names(root) == ["profiles", "tmp"]
    assert [mode(root), mode(root / "tmp"), mode(root / "profiles")] == [0o700, 0o700, 0o700]
    assert repr(store) == f"FileBlobStore('{root}')"
    assert store.close() is None
    assert store.presign_put(KEY, 60) is None, "the API server receives embedded PUTs itself"


@pytest.mark.parametrize(
    "key",
    [
        f"profiles/{S1}/{L1}.bin",
        f"profiles/{S1}/{L1}.0123456789abcdef.bin",
        f"profiles/{S2}/{R1}.bin",
        f"profiles/{S1}/{S2}.x_y-z.bin",
    ],
)
def test_a_key_of_server_ids_is_a_file_under_the_root(blobs, key):
    assert blobs.path(key) == blobs.root.joinpath(*key.split("/"))


@pytest.mark.parametrize(
    "key",
    [
        "",
        f"{S1}/{L1}.bin",  # two parts
        f"profiles/{S1}/{L1}/x.bin",  # four parts
        f"tmp/{S1}/{L1}.bin",  # not under profiles/
        f"profiles/session-short/{L1}.bin",
        f"profiles/../{L1}.bin",
        f"profiles/{S1}/..",
        f"profiles/{S1}/x.bin",  # the file is not named after an id
        f"profiles/{S1}/.{L1}.bin",
        f"profiles/{S1}/{L1}..bin",
        f"profiles/{S1}/{L1}.a b.bin",
        f"profiles/{S1}/{L1}.a~b.bin",
        f"profiles/{S1}/{L1}.a\\b.bin",
    ],
)
def test_a_key_not_made_of_server_ids_is_refused(blobs, key):
    with pytest.raises(ValueError) as caught:
        blobs.path(key)
    assert str(caught.value) == f"not a blob key of this server: {key!r}"


def test_the_refusal_quotes_at_most_120_characters_of_the_key(blobs):
    long_key = "profiles/" + "x" * 200
    with pytest.raises(ValueError) as caught:
        blobs.path(long_key)
    assert str(caught.value) == "not a blob key of this server: '" + "profiles/" + "x" * 111 + "'"
    other = f"profiles/{S1}/" + "y" * 150
    with pytest.raises(ValueError) as caught:
        blobs.path(other)
    assert str(caught.value) == f"not a blob key of this server: 'profiles/{S1}/" + "y" * 82 + "'"


def test_a_temporary_file_is_private_in_the_tmp_dir_and_open_for_writing(blobs):
    with umask(0):
        fd, path = blobs.new_temp_file()
    try:
        assert os.write(fd, b"body") == 4
    finally:
        os.close(fd)
    assert path.parent == blobs.tmp_dir
    assert path.name.startswith("body-") and path.name.endswith(".part")
    assert mode(path) == 0o600 and path.read_bytes() == b"body"


def test_a_temporary_name_taken_already_is_never_opened_and_the_next_one_is_tried(blobs, monkeypatch):
    names_given = iter(["a" * 16, "b" * 16, "a" * 16, "c" * 16])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names_given))
    taken = blobs.tmp_dir / f"body-{'a' * 16}.part"
    outside = blobs.root / "outside"
    taken.symlink_to(outside)  # a link in the way is not followed either
    opened = [blobs.new_temp_file(), blobs.new_temp_file()]
    for fd, _ in opened:
        os.close(fd)
    assert [path.name for _, path in opened] == [f"body-{'b' * 16}.part", f"body-{'c' * 16}.part"]
    assert not outside.exists() and taken.is_symlink()


def test_no_free_temporary_name_is_an_error(blobs, monkeypatch):
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: "a" * 16)
    (blobs.tmp_dir / f"body-{'a' * 16}.part").write_bytes(b"kept")
    with pytest.raises(FileExistsError) as caught:
        blobs.new_temp_file()
    assert str(caught.value) == f"no free temporary file name in {blobs.tmp_dir}"
    assert names(blobs.tmp_dir) == [f"body-{'a' * 16}.part"]


def test_put_bytes_makes_a_removed_session_dir_again_private(blobs):
    blobs.put_bytes(KEY, b"x")
    assert blobs.delete_prefix(f"profiles/{S1}/") == [KEY]
    assert not (blobs.root / "profiles" / S1).exists()
    with umask(0):
        blobs.put_bytes(KEY, b"again")
    assert blobs.get_bytes(KEY) == b"again" and mode(blobs.root / "profiles" / S1) == 0o700
    assert names(blobs.tmp_dir) == []


def test_put_file_moves_the_file_into_a_new_private_dir_and_makes_it_0600(blobs, tmp_path):
    source = tmp_path / "received"
    with umask(0):
        source.write_bytes(b"profile bytes")
        os.chmod(source, 0o666)
        blobs.put_file(KEY, source)
    target = blobs.root / "profiles" / S1 / f"{L1}.0123456789abcdef.bin"
    assert not source.exists()
    assert target.read_bytes() == b"profile bytes"
    assert mode(target) == 0o600 and mode(target.parent) == 0o700
    replacement = tmp_path / "again"
    replacement.write_bytes(b"new")
    blobs.put_file(KEY, replacement)
    assert target.read_bytes() == b"new" and names(target.parent) == [target.name]


def test_put_file_refuses_a_bad_key_before_touching_the_source(blobs, tmp_path):
    source = tmp_path / "received"
    source.write_bytes(b"x")
    with pytest.raises(ValueError):
        blobs.put_file("profiles/../x", source)
    assert source.read_bytes() == b"x"


def test_put_bytes_writes_whole_private_files_and_leaves_no_temporary_file(blobs):
    data = bytes(range(256)) * 20_000  # 5 MB: more than one write may take
    with umask(0):
        blobs.put_bytes(KEY, data)
    target = blobs.root / "profiles" / S1 / f"{L1}.0123456789abcdef.bin"
    assert target.read_bytes() == data
    assert mode(target) == 0o600 and mode(target.parent) == 0o700
    blobs.put_bytes(KEY, b"")
    assert target.read_bytes() == b""
    assert names(blobs.tmp_dir) == [] and names(target.parent) == [target.name]


def test_put_bytes_leaves_an_existing_session_dir_as_it_is(blobs):
    directory = blobs.root / "profiles" / S1
    directory.mkdir()
    os.chmod(directory, 0o750)
    blobs.put_bytes(KEY, b"x")
    assert mode(directory) == 0o750 and (directory / f"{L1}.0123456789abcdef.bin").read_bytes() == b"x"


def test_a_put_bytes_that_cannot_rename_removes_its_temporary_file(blobs):
    (blobs.root / "profiles" / S1 / f"{L1}.0123456789abcdef.bin").mkdir(parents=True)  # in the way
    with pytest.raises(OSError):
        blobs.put_bytes(KEY, b"x")
    assert names(blobs.tmp_dir) == []


def test_a_put_bytes_whose_temporary_file_went_before_the_rename_fails_as_not_found(blobs, monkeypatch):
    """A start's reconcile removing leftover temporary files while a PUT is written: the PUT fails
    with the rename's error (its retry writes again), nothing is left under the key or in tmp."""
    real_fsync = os.fsync

    def fsync_then_lose(fd: int) -> None:
        real_fsync(fd)
        for leftover in blobs.tmp_dir.iterdir():
            leftover.unlink()

    monkeypatch.setattr(files.os, "fsync", fsync_then_lose)
    with pytest.raises(FileNotFoundError):
        blobs.put_bytes(KEY, b"x")
    assert not blobs.path(KEY).exists() and names(blobs.tmp_dir) == []


def test_reading_sizes_existence_and_deletion(blobs):
    other = f"profiles/{S1}/{L2}.bin"
    blobs.put_bytes(KEY, b"12345")
    assert blobs.get_bytes(KEY) == b"12345"
    with blobs.open(KEY) as f:
        assert f.read() == b"12345"
    assert blobs.size(KEY) == 5 and blobs.exists(KEY) is True
    assert blobs.size(other) is None and blobs.exists(other) is False
    blobs.put_bytes(other, b"")
    assert blobs.size(other) == 0 and blobs.exists(other) is True, "an empty file exists"
    for read in (blobs.get_bytes, blobs.open):
        with pytest.raises(FileNotFoundError):
            read(f"profiles/{S2}/{L1}.bin")
    blobs.delete(KEY)
    assert blobs.exists(KEY) is False and blobs.exists(other) is True
    blobs.delete(KEY)  # already gone: no error
    for refused in (blobs.size, blobs.exists, blobs.delete, blobs.get_bytes):
        with pytest.raises(ValueError):
            refused("profiles/../secret.key")


def test_keys_are_listed_in_order_by_prefix_and_only_files_named_like_keys(blobs):
    keys = [f"profiles/{S2}/{L1}.bin", f"profiles/{S1}/{R1}.bin", f"profiles/{S1}/{L2}.bin", f"profiles/{S1}/{L1}.bin"]
    for key in keys:
        blobs.put_bytes(key, b"x")
    (blobs.root / "profiles" / "aaa-stray.txt").write_bytes(b"not in a session dir")  # listed first
    (blobs.root / "profiles" / S1 / f"{L1}.d").mkdir()  # a directory, not a file
    (blobs.root / "profiles" / S2 / "aaa-notes.txt").write_bytes(b"not named after an id")
    (blobs.root / "profiles" / "junk").mkdir()
    (blobs.root / "profiles" / "junk" / f"{L1}.bin").write_bytes(b"not in a session's dir")
    expected = [f"profiles/{S1}/{L1}.bin", f"profiles/{S1}/{L2}.bin", f"profiles/{S1}/{R1}.bin"]
    assert list(blobs.list_keys()) == [*expected, f"profiles/{S2}/{L1}.bin"]
    assert list(blobs.list_keys("profiles/")) == [*expected, f"profiles/{S2}/{L1}.bin"]
    assert list(blobs.list_keys(f"profiles/{S1}/")) == expected
    assert list(blobs.list_keys(f"profiles/{S1}/log-")) == expected[:2]
    assert list(blobs.list_keys(f"profiles/{S1}/ref-")) == expected[2:]
    assert list(blobs.list_keys(f"profiles/{S2}/")) == [f"profiles/{S2}/{L1}.bin"]
    assert list(blobs.list_keys("tmp/")) == []
    for key in blobs.list_keys():
        blobs.delete(key)  # every listed key is one the store accepts
    (blobs.root / "profiles" / S1 / f"{L1}.d").rmdir()
    assert list(blobs.list_keys()) == []


def test_a_prefix_within_a_directory_lists_that_directory_only(blobs, monkeypatch):
    blobs.put_bytes(f"profiles/{S1}/{L1}.bin", b"abc")
    blobs.put_bytes(f"profiles/{S2}/{L1}.bin", b"x")
    walked: list[Path] = []
    real_iterdir = Path.iterdir

    def iterdir(self: Path) -> Iterator[Path]:
        walked.append(self)
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert list(blobs.list_sizes(f"profiles/{S1}/log-")) == [(f"profiles/{S1}/{L1}.bin", 3)]
    assert walked == [blobs.root / "profiles" / S1]
    assert list(blobs.list_keys(f"profiles/{L1}/")) == []  # an upload id names no directory here


def test_delete_prefix_removes_the_keys_then_the_emptied_directory(blobs):
    keys = [f"profiles/{S1}/{L1}.bin", f"profiles/{S1}/{L1}.0123456789abcdef.bin", f"profiles/{S1}/{L2}.bin"]
    for key in keys:
        blobs.put_bytes(key, b"x")
    blobs.put_bytes(f"profiles/{S2}/{L1}.bin", b"x")
    directory = blobs.root / "profiles" / S1
    assert blobs.delete_prefix(f"profiles/{S1}/{L1}.") == sorted(keys[:2])
    assert names(directory) == [f"{L2}.bin"]  # an upload's prefix leaves its neighbours and the directory
    (directory / "notes.txt").write_bytes(b"not a key")
    assert blobs.delete_prefix(f"profiles/{S1}/") == [keys[2]]
    assert names(directory) == ["notes.txt"]  # a file that is no key is kept, and its directory with it
    (directory / "notes.txt").unlink()
    assert blobs.delete_prefix(f"profiles/{S1}/") == []
    assert not directory.exists() and blobs.delete_prefix(f"profiles/{S1}/") == []  # twice is harmless
    assert list(blobs.list_keys()) == [f"profiles/{S2}/{L1}.bin"]


def test_a_store_without_a_profiles_dir_lists_nothing(blobs):
    os.rmdir(blobs.root / "profiles")
    assert list(blobs.list_keys()) == []


def test_reconcile_removes_leftover_temporary_files_only(blobs):
    fd, path = blobs.new_temp_file()
    os.close(fd)
    (blobs.tmp_dir / "other.part").write_bytes(b"partial")
    (blobs.tmp_dir / "a-dir").mkdir()
    blobs.put_bytes(KEY, b"kept")
    removed = blobs.reconcile()
    assert sorted(removed) == sorted([f"tmp/{path.name}", "tmp/other.part"])
    assert names(blobs.tmp_dir) == ["a-dir"] and blobs.get_bytes(KEY) == b"kept"
    assert blobs.reconcile() == []


def test_reconcile_skips_a_leftover_it_cannot_remove(blobs, monkeypatch):
    (blobs.tmp_dir / "a-stuck.part").write_bytes(b"x")
    (blobs.tmp_dir / "b-gone.part").write_bytes(b"y")
    unlink = Path.unlink

    def failing_unlink(path, missing_ok=False):
        if path.name == "a-stuck.part":
            raise PermissionError("not permitted")
        unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", failing_unlink)
    assert blobs.reconcile() == ["tmp/b-gone.part"]
    assert names(blobs.tmp_dir) == ["a-stuck.part"]


def test_a_prefix_that_names_an_uploads_only_file_leaves_its_emptied_directory(blobs):
    blobs.put_bytes(f"profiles/{S1}/{L1}.bin", b"x")
    assert blobs.delete_prefix(f"profiles/{S1}/{L1}") == [f"profiles/{S1}/{L1}.bin"]
    assert (blobs.root / "profiles" / S1).is_dir() and names(blobs.root / "profiles" / S1) == []


def test_sizes_and_stamps_list_every_key_without_a_prefix(blobs):
    blobs.put_bytes(f"profiles/{S1}/{L1}.bin", b"abc")
    blobs.put_bytes(f"profiles/{S2}/{L1}.bin", b"")
    os.utime(blobs.path(f"profiles/{S1}/{L1}.bin"), ns=(1_700_000_000_123_999_999, 1_700_000_000_123_999_999))
    os.utime(blobs.path(f"profiles/{S2}/{L1}.bin"), ns=(5_000_001, 5_000_001))
    assert list(blobs.list_sizes()) == [(f"profiles/{S1}/{L1}.bin", 3), (f"profiles/{S2}/{L1}.bin", 0)]
    stamped = list(blobs.list_stamped())
    assert stamped == [(f"profiles/{S1}/{L1}.bin", 3, 1_700_000_000_123), (f"profiles/{S2}/{L1}.bin", 0, 5)]
    assert all(type(ms) is int for _, _, ms in stamped)


def test_a_key_whose_file_went_between_listing_and_reading_is_left_out(blobs, monkeypatch):
    """Another process may delete a file after the listing named it: its stamp is skipped, the rest listed."""
    blobs.put_bytes(f"profiles/{S2}/{L1}.bin", b"ab")
    gone = f"profiles/{S1}/{L1}.bin"  # listed, but no file by the time it is read
    monkeypatch.setattr(blobs, "list_keys", lambda prefix="": iter([gone, f"profiles/{S2}/{L1}.bin"]))
    assert [(key, size) for key, size, _ in blobs.list_stamped()] == [(f"profiles/{S2}/{L1}.bin", 2)]


def _tag(path: Path) -> str:
    info = path.stat()
    return f"{info.st_ino}-{info.st_ctime_ns}-{info.st_size}"


def test_a_version_holds_the_bytes_and_a_tag_of_the_file_up_to_the_limit(blobs):
    blobs.put_bytes(KEY, b"12345")
    version = blobs.read_version(KEY, 5)
    assert (version.size, version.tag, version.data) == (5, _tag(blobs.path(KEY)), b"12345")
    larger = blobs.read_version(KEY, 4)
    assert (larger.size, larger.tag, larger.data) == (5, _tag(blobs.path(KEY)), None)
    blobs.put_bytes(f"profiles/{S1}/{L2}.bin", b"")
    empty = blobs.read_version(f"profiles/{S1}/{L2}.bin", 0)
    assert (empty.size, empty.data) == (0, b"")


def test_a_missing_key_has_no_version_and_a_bad_key_is_refused(blobs):
    assert blobs.read_version(KEY, 10) is None
    with pytest.raises(ValueError):
        blobs.read_version("profiles/../secret.key", 10)


def test_a_rewrite_changes_the_tag(blobs):
    blobs.put_bytes(KEY, b"one")
    first = blobs.read_version(KEY, 10).tag
    blobs.put_bytes(KEY, b"two")
    assert blobs.read_version(KEY, 10).tag != first


def test_a_version_is_copied_while_it_is_the_file_read(blobs):
    target = f"profiles/{S2}/{L2}.bin"
    blobs.put_bytes(KEY, b"the bytes")
    tag = blobs.read_version(KEY, 100).tag
    assert blobs.copy_version(KEY, target, tag) is True
    assert blobs.get_bytes(target) == b"the bytes" and blobs.get_bytes(KEY) == b"the bytes"
    assert mode(blobs.path(target)) == 0o600 and names(blobs.tmp_dir) == []


def test_a_version_replaced_since_it_was_read_is_not_copied(blobs):
    target = f"profiles/{S2}/{L2}.bin"
    blobs.put_bytes(KEY, b"old")
    tag = blobs.read_version(KEY, 100).tag
    blobs.put_bytes(KEY, b"new")
    with pytest.raises(BlobChangedError) as changed:
        blobs.copy_version(KEY, target, tag)
    assert changed.value.args == (KEY,)
    assert blobs.exists(target) is False
    with pytest.raises(FileNotFoundError):
        blobs.copy_version(f"profiles/{S1}/{L2}.bin", target, tag)


def test_a_file_longer_than_its_size_said_is_read_only_to_the_limit(blobs):
    """A file that grew between the size check and the read (a key linked here to /proc/self/status,
    whose size says 0 whatever it holds, stands for one): the version has no bytes, and its size is
    what was read, one byte over the limit."""
    key = f"profiles/{S1}/{L1}.bin"
    blobs.path(key).parent.mkdir(exist_ok=True)
    blobs.path(key).symlink_to("/proc/self/status")
    assert os.stat(blobs.path(key)).st_size == 0
    version = blobs.read_version(key, 10)
    assert (version.size, version.tag, version.data) == (11, _tag(blobs.path(key)), None)
