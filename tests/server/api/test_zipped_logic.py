"""zipped.py's pure pieces on hand-made bytes: the end record's declared count (zip64 too), each name
rule, and every refusal's exact wording (tests/server/api/test_zipped_uploads.py has the crafted zips)."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest
from zips import zip_of

from whylogs_songbird.server.zipped import (
    MAX_ZIP_MEMBERS,
    ZIP_MAGICS,
    ZipUploadError,
    _check_name,
    declared_entries,
    looks_like_zip,
    zip_members,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/zipped.py")


def eocd(entries: int, comment: bytes = b"") -> bytes:
    """An end of central directory record declaring ``entries`` (on this disk and in all)."""
    return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, entries, entries, 0, 0, len(comment)) + comment


def zip64_tail(prefix: bytes, entries: int, *, offset: int | None = None, locator: bool = True) -> bytes:
    """``prefix``, a zip64 end record declaring ``entries``, its locator (pointing at ``offset``, by
    default the record's own) and an end record whose count says "see zip64"."""
    at = len(prefix)
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, 0, 0)
    found = struct.pack("<4sIQI", b"PK\x06\x07", 0, at if offset is None else offset, 1)
    return prefix + record + (found if locator else b"") + eocd(0xFFFF)


def refusal(data: bytes, limit: int = 1000, **options: int) -> str:
    with pytest.raises(ZipUploadError) as caught:
        zip_members(data, max_total_bytes=limit, **options)
    return str(caught.value)


def test_the_constants_and_what_looks_like_a_zip():
    assert MAX_ZIP_MEMBERS == 10_000 and ZIP_MAGICS == (b"PK\x03\x04", b"PK\x05\x06")
    assert looks_like_zip(b"PK\x03\x04rest") and looks_like_zip(memoryview(b"PK\x05\x06"))
    assert not looks_like_zip(b"PK\x03") and not looks_like_zip(b"PK\x01\x02....")


def test_the_count_an_end_record_declares():
    assert declared_entries(eocd(3)) == 3
    assert declared_entries(b"x" * 100 + eocd(0xFFFE)) == 0xFFFE
    # the record is found behind the longest comment, and the last one counts
    assert declared_entries(eocd(9) + eocd(7, b"c" * 65_535)) == 7
    assert declared_entries(eocd(5)[:21] + eocd(2)) == 2


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04" + bytes(40), eocd(3)[:21], eocd(3, b"c" * 65_535)[1:]])
def test_no_end_record_is_no_zip(data):
    with pytest.raises(ZipUploadError) as caught:
        declared_entries(data)
    assert str(caught.value) == "it is not a zip file (no end of central directory record)"


def test_a_zip64_end_record_declares_the_count():
    assert declared_entries(zip64_tail(b"", 70_000)) == 70_000
    assert declared_entries(zip64_tail(b"p" * 33, 2**33)) == 2**33
    cases = [
        (zip64_tail(b"", 5, locator=False), "it is not a valid zip file (a zip64 end record is missing)"),
        (eocd(0xFFFF), "it is not a valid zip file (a zip64 end record is missing)"),
        (b"P" * 19 + eocd(0xFFFF), "it is not a valid zip file (a zip64 end record is missing)"),
        (zip64_tail(b"p" * 8, 5, offset=4), "it is not a valid zip file (its zip64 end record is out of place)"),
        (zip64_tail(b"", 5, offset=10**6), "it is not a valid zip file (its zip64 end record is out of place)"),
    ]
    for data, message in cases:
        with pytest.raises(ZipUploadError) as caught:
            declared_entries(data)
        assert str(caught.value) == message


def test_a_zip64_end_record_must_fit_in_the_bytes():
    data = zip64_tail(b"", 5)
    # a locator pointing so near the end that no 56-byte record fits between there and the end
    short = data[:-42] + struct.pack("<4sIQI", b"PK\x06\x07", 0, len(data) - 56 + 1, 1) + eocd(0xFFFF)
    with pytest.raises(ZipUploadError, match="out of place"):
        declared_entries(short)


@pytest.mark.parametrize("name", ["", "d/", "a/b", "/a", "a\\b", "a\x00b", ".", "..", "c:", "c:x"])
def test_a_path_is_no_plain_file_name(name):
    with pytest.raises(ZipUploadError) as caught:
        _check_name(name)
    assert str(caught.value) == (
        f"its member {name!r} is not a plain file name (a zip of profiles has no directories or paths)"
    )


@pytest.mark.parametrize("name", ["a", "xy:", "ab:c", "...", ".a", "a..b", "segment 1.bin"])
def test_plain_file_names(name):
    assert _check_name(name) is None


def test_a_long_bad_name_is_cut_to_80_characters():
    with pytest.raises(ZipUploadError) as caught:
        _check_name("d/" + "n" * 100)
    assert str(caught.value).startswith(f"its member {('d/' + 'n' * 100)[:80]!r} is not")


def test_every_refusal_s_words():
    assert refusal(b"WHY1") == "it is not a zip file (it does not start with a zip header)"
    many = zip_of({f"m{i}": b"" for i in range(3)}, zipfile.ZIP_STORED)
    assert refusal(many, max_members=2) == "it has 3 members, more than the 2 a zip of profiles may have"
    assert len(zip_members(many, max_total_bytes=0, max_members=3)) == 3
    # an end record declaring fewer members than the directory holds
    lying = bytearray(many)
    end = lying.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", lying, end + 8, 2, 2)
    assert refusal(bytes(lying), max_members=2) == "it has 3 members, more than the 2 allowed"
    no_directory = b"PK\x03\x04" + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, 46, 0, 0)
    assert refusal(no_directory).startswith("it is not a valid zip file (") and refusal(no_directory).endswith(")")
    assert refusal(zip_of({}, zipfile.ZIP_STORED)) == "it holds no profiles"
    assert refusal(zip_of({"a": b"123", "b": b"45"}, zipfile.ZIP_STORED), limit=4) == (
        "its members would unpack to more than 4 bytes, this server's upload limit "
        "(a zip bomb, or a batch to write in smaller parts)"
    )
    assert zip_members(zip_of({"a": b"123", "b": b"45"}, zipfile.ZIP_STORED), max_total_bytes=5) == [
        ("a", b"123"),
        ("b", b"45"),
    ]
    assert refusal(zip_of({"a": b"x"}, zipfile.ZIP_LZMA)) == (
        "its member 'a' is compressed with method 14; only stored or deflated members are taken"
    )
    encrypted = bytearray(zip_of({"sealed": b"x"}, zipfile.ZIP_STORED))
    central = encrypted.find(b"PK\x01\x02")
    encrypted[central + 8] |= 1
    assert refusal(bytes(encrypted)) == "its member 'sealed' is encrypted"


def test_a_corrupt_member_cannot_be_read():
    data = bytearray(zip_of({"a": b"profile bytes" * 20}, zipfile.ZIP_DEFLATED))
    start = data.find(b"PK\x03\x04") + 30 + 1  # the deflated stream, after the header and the name
    data[start : start + 8] = b"\xff" * 8
    message = refusal(bytes(data))
    assert message.startswith("its member 'a' cannot be read (") and message.endswith(")")


def test_large_members_are_read_whole_across_chunks():
    big = bytes(range(256)) * (5 * 1024 + 3)  # more than 1 MiB: read in several pieces
    data = zip_of({"big": big, "small": b"s"}, zipfile.ZIP_DEFLATED)
    assert zip_members(data, max_total_bytes=len(big) + 1) == [("big", big), ("small", b"s")]


def test_the_end_record_is_looked_for_behind_the_longest_comment_only():
    assert declared_entries(eocd(4) + b"c" * 65_535) == 4
    for data in (eocd(4) + b"c" * 65_536, b"x" * 10 + eocd(3)[:21]):
        with pytest.raises(ZipUploadError, match="no end of central directory record"):
            declared_entries(data)


def test_a_zip64_record_may_end_the_bytes_and_its_locator_may_start_the_window():
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 9, 9, 0, 0)
    # the record as the end record's comment, ending the bytes: 56 bytes from its offset, exactly
    data = struct.pack("<4sIQI", b"PK\x06\x07", 0, 42, 1) + eocd(0xFFFF, record)
    assert declared_entries(data) == 9
    with pytest.raises(ZipUploadError, match="out of place"):
        declared_entries(data[:-1])  # one byte short of the record
    # the record before the window, its locator the window's first bytes
    tail = struct.pack("<4sIQI", b"PK\x06\x07", 0, 0, 1) + eocd(0xFFFF, b"c" * 65_515)
    assert declared_entries(struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 7, 7, 0, 0) + tail) == 7


def test_zip64_counts_and_offsets_are_unsigned():
    assert declared_entries(zip64_tail(b"", 2**63)) == 2**63
    data = zip64_tail(b"", 5)
    with pytest.raises(ZipUploadError, match="out of place"):
        declared_entries(zip64_tail(b"", 5, offset=2**64 - len(data)))  # -98 read as signed: the record itself


LONG = "n" * 100


def test_a_long_name_is_cut_to_80_characters_in_every_refusal():
    cut = repr(LONG[:80])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(LONG, b"1")
        with pytest.warns(UserWarning):
            archive.writestr(LONG, b"2")
    assert refusal(buffer.getvalue()) == f"its member {cut} appears twice"
    encrypted = bytearray(zip_of({LONG: b"x"}, zipfile.ZIP_STORED))
    encrypted[encrypted.find(b"PK\x01\x02") + 8] |= 1
    assert refusal(bytes(encrypted)) == f"its member {cut} is encrypted"
    assert refusal(zip_of({LONG: b"x"}, zipfile.ZIP_BZIP2)).startswith(f"its member {cut} is compressed with method 12")
    corrupt = bytearray(zip_of({LONG: b"profile bytes" * 20}, zipfile.ZIP_DEFLATED))
    start = corrupt.find(b"PK\x03\x04") + 30 + len(LONG)
    corrupt[start : start + 8] = b"\xff" * 8
    assert refusal(bytes(corrupt)) == f"its member {cut} cannot be read (error)"  # zlib.error
    lying = bytearray(zip_of({LONG: b"abcdef"}, zipfile.ZIP_STORED))
    lying[lying.find(b"PK\x03\x04") + 30 + len(LONG)] ^= 1  # stored bytes that no longer match the CRC
    message = refusal(bytes(lying))
    assert message.startswith(f"its member {cut} cannot be read (") and "CRC" in message
