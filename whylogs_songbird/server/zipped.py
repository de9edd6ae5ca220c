"""Zipped uploads: whylogs' ``writer("whylabs").write(results, zip=True)`` PUTs one zip whose
members are the serialized profiles of one segmented batch (one ``.bin`` per segment). Pure logic:
:func:`zip_members` opens such a zip in memory, never on disk and never by a member's name, and
refuses what is not one before anything is stored:

- at most :data:`MAX_ZIP_MEMBERS` members, counted from the zip's own end record before the
  central directory is read (a directory of millions of entries is never parsed);
- members stored or deflated only, none encrypted, no directories, names without paths
  (no ``/``, ``\\``, ``..``, drive letters or NUL) and each name once;
- the members' uncompressed bytes at most ``max_total_bytes`` together (the server's upload
  limit): each member is read through a bound of what is left, so a member whose header lies
  about its size (a zip bomb) is refused at the bound, not unpacked.

Each member is then checked as any uploaded profile is (``profile_check.py``) by the caller.
"""

from __future__ import annotations

import io
import struct
import zipfile

#: Most members one zip may hold (whylogs writes one per segment of the batch).
MAX_ZIP_MEMBERS = 10_000
#: What every zip starts with (a local file header), or an empty zip's end record.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_READ_CHUNK = 1024 * 1024


class ZipUploadError(ValueError):
    """The bytes are not a zip of profiles this server takes; the message says why."""


def looks_like_zip(data: bytes | memoryview) -> bool:
    """Whether ``data`` starts as a zip does."""
    return bytes(data[:4]) in ZIP_MAGICS


def declared_entries(data: bytes) -> int:
    """The number of entries the zip's end record declares (zip64 too); ZipUploadError when it has none."""
    window = data[-(65_535 + 22) :]
    at = window.rfind(_EOCD)
    if at < 0 or len(window) - at < 22:
        raise ZipUploadError("it is not a zip file (no end of central directory record)")
    (entries,) = struct.unpack_from("<H", window, at + 10)
    if entries != 0xFFFF:
        return int(entries)
    locator = at - 20
    if locator < 0 or window[locator : locator + 4] != _EOCD64_LOCATOR:
        raise ZipUploadError("it is not a valid zip file (a zip64 end record is missing)")
    (offset,) = struct.unpack_from("<Q", window, locator + 8)
    if offset + 56 > len(data) or data[offset : offset + 4] != _EOCD64:
        raise ZipUploadError("it is not a valid zip file (its zip64 end record is out of place)")
    (entries64,) = struct.unpack_from("<Q", data, offset + 32)
    return int(entries64)


def _check_name(name: str) -> None:
    bad = (
        not name
        or name.endswith("/")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name in (".", "..")
        or (len(name) >= 2 and name[1] == ":")
    )
    if bad:
        raise ZipUploadError(
            f"its member {name[:80]!r} is not a plain file name (a zip of profiles has no directories or paths)"
        )


def zip_members(data: bytes, *, max_total_bytes: int, max_members: int = MAX_ZIP_MEMBERS) -> list[tuple[str, bytes]]:
    """The members of a zip of profiles as ``(name, bytes)``, in the zip's order; raises
    :class:`ZipUploadError` (see the module docstring for what is refused)."""
    if not looks_like_zip(data):
        raise ZipUploadError("it is not a zip file (it does not start with a zip header)")
    entries = declared_entries(data)
    if entries > max_members:
        raise ZipUploadError(f"it has {entries} members, more than the {max_members} a zip of profiles may have")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise ZipUploadError(f"it is not a valid zip file ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            raise ZipUploadError(f"it has {len(infos)} members, more than the {max_members} allowed")
        if not infos:
            raise ZipUploadError("it holds no profiles")
        names: set[str] = set()
        declared = 0
        for info in infos:
            _check_name(info.filename)
            if info.filename in names:
                raise ZipUploadError(f"its member {info.filename[:80]!r} appears twice")
            names.add(info.filename)
            if info.flag_bits & 0x1:
                raise ZipUploadError(f"its member {info.filename[:80]!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ZipUploadError(
                    f"its member {info.filename[:80]!r} is compressed with method {info.compress_type}; "
                    "only stored or deflated members are taken"
                )
            declared += info.file_size
        if declared > max_total_bytes:
            raise ZipUploadError(_too_large(max_total_bytes))
        members: list[tuple[str, bytes]] = []
        left = max_total_bytes
        for info in infos:
            content = _read_member(archive, info, left, max_total_bytes)
            left -= len(content)
            members.append((info.filename, content))
    return members


def _too_large(limit: int) -> str:
    return (
        f"its members would unpack to more than {limit} bytes, this server's upload limit "
        "(a zip bomb, or a batch to write in smaller parts)"
    )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, left: int, limit: int) -> bytes:
    """A member's bytes, read no further than ``left`` bytes plus one (a size it declared falsely
    is caught there, and by zipfile's own size and CRC check at its end)."""
    parts: list[bytes] = []
    size = 0
    try:
        with archive.open(info) as member:
            while True:
                chunk = member.read(min(_READ_CHUNK, left - size + 1))
                if not chunk:
                    break
                size += len(chunk)
                if size > left:
                    raise ZipUploadError(_too_large(limit))
                parts.append(chunk)
    except ZipUploadError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise ZipUploadError(f"its member {info.filename[:80]!r} cannot be read ({exc})") from None
    except Exception as exc:  # zlib.error and friends: a corrupt stream
        raise ZipUploadError(f"its member {info.filename[:80]!r} cannot be read ({type(exc).__name__})") from None
    return b"".join(parts)


__all__ = ["MAX_ZIP_MEMBERS", "ZipUploadError", "declared_entries", "looks_like_zip", "zip_members"]
