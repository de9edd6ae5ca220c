"""What a zipped upload (whylogs' ``write(zip=True)``) may be: ``zipped.zip_members`` on crafted zips."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest
from zips import zip_of

from whylogs_songbird.server.zipped import ZipUploadError, declared_entries, looks_like_zip, zip_members

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/zipped.py")

LIMIT = 64 * 1024


def refused(data: bytes, **limits: int) -> str:
    with pytest.raises(ZipUploadError) as caught:
        zip_members(data, max_total_bytes=limits.pop("max_total_bytes", LIMIT), **limits)
    return str(caught.value)


def test_the_members_in_their_order():
    data = zip_of({"tmpb": b"second? no, first", "tmpa": b"then this"})
    assert looks_like_zip(data) and declared_entries(data) == 2
    assert zip_members(data, max_total_bytes=LIMIT) == [("tmpb", b"second? no, first"), ("tmpa", b"then this")]


def test_members_up_to_the_limit_exactly():
    data = zip_of({"a": b"x" * 10, "b": b"y" * 6})
    assert [len(c) for _, c in zip_members(data, max_total_bytes=16)] == [10, 6]
    assert "more than 15 bytes" in refused(data, max_total_bytes=15)


def test_a_bomb_is_refused_by_its_unpacked_size():
    bomb = zip_of({"a": bytes(LIMIT + 1)})
    assert len(bomb) < LIMIT // 10
    assert "would unpack to more than" in refused(bomb)


def test_a_member_lying_about_its_size_is_caught_at_the_bound():
    honest = zip_of({"a": bytes(4096)}, zipfile.ZIP_DEFLATED)
    # rewrite the declared sizes (local header and central directory) to 10 bytes
    lying = bytearray(honest)
    local = lying.find(b"PK\x03\x04")
    struct.pack_into("<I", lying, local + 22, 10)
    central = lying.find(b"PK\x01\x02")
    struct.pack_into("<I", lying, central + 24, 10)
    message = refused(bytes(lying), max_total_bytes=100)
    assert "cannot be read" in message, "zipfile stops at the declared size and its CRC check fails"


@pytest.mark.parametrize("name", ["../up.bin", "dir/a.bin", "/abs.bin", "c:evil", "back\\slash", "d/"])
def test_paths_and_directories_are_refused(name):
    assert "not a plain file name" in refused(zip_of({name: b"x"}))


def test_too_many_members_are_refused_before_the_directory_is_read():
    data = zip_of({f"m{i}": b"" for i in range(5)})
    assert "5 members, more than the 4" in refused(data, max_members=4)
    assert len(zip_members(data, max_total_bytes=LIMIT, max_members=5)) == 5


def test_a_name_twice_encryption_and_other_methods_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a", b"1")
        with pytest.warns(UserWarning):
            archive.writestr("a", b"2")
    assert "appears twice" in refused(buffer.getvalue())
    assert "compressed with method 12" in refused(zip_of({"a": b"x"}, zipfile.ZIP_BZIP2))
    encrypted = bytearray(zip_of({"a": b"x"}))
    central = encrypted.find(b"PK\x01\x02")
    encrypted[central + 8] |= 1
    assert "encrypted" in refused(bytes(encrypted))


def test_what_is_no_zip_of_profiles():
    assert "does not start with a zip header" in refused(b"WHY1....")
    assert "holds no profiles" in refused(zip_of({}))
    assert "no end of central directory" in refused(b"PK\x03\x04" + bytes(40))
