"""The embedded blob store: files under a directory (the server's data dir).

Layout: ``<root>/<key>`` (keys look like ``profiles/<session>/<upload>.<sha>.bin``) and ``<root>/tmp/``
for bodies being received. Directories are 0700 and files 0600 whatever the umask; a file is
written to a temporary name, fsynced, then renamed into place, so a crash leaves the old bytes,
the new bytes or a leftover temporary file (removed by :meth:`reconcile`), never a partial file
under a key.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from whylogs_songbird.server.storage.base import ID_PATTERN, BlobChangedError, BlobVersion

TMP_DIR = "tmp"
#: How a temporary file is opened: created here and now, never through a link.
_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_TEMP_FLAGS |= getattr(os, "O_BINARY", 0)
#: Random temporary names tried before giving up (as ``tempfile`` does).
_TEMP_NAME_TRIES = 100
_KEY_PARTS = ("profiles",)
#: The characters of a blob's file name (``<upload>.<sha>.bin``).
_FILE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _file_tag(info: os.stat_result) -> str:
    """What changes whenever a file under a key is replaced (a rename) or rewritten."""
    return f"{info.st_ino}-{info.st_ctime_ns}-{info.st_size}"


class FileBlobStore:
    """Blobs as files under ``root``."""

    #: The API server receives every PUT (and signs its own upload URLs).
    presigns_uploads = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        make_private_dir(self.root)
        self.tmp_dir = self.root / TMP_DIR
        make_private_dir(self.tmp_dir)
        self._temp_prefix = os.path.join(self.tmp_dir, "body-")
        make_private_dir(self.root / "profiles")

    def __repr__(self) -> str:
        return f"FileBlobStore({str(self.root)!r})"

    def close(self) -> None:
        return None

    def path(self, key: str) -> Path:
        """The file of ``key``; ValueError for a key that is not made of server ids."""
        parts = key.split("/")
        if len(parts) != 3 or parts[0] not in _KEY_PARTS or not ID_PATTERN.match(parts[1]):
            raise ValueError(f"not a blob key of this server: {key[:120]!r}")
        stem = parts[2].split(".", 1)[0]
        if not ID_PATTERN.match(stem) or not _FILE_NAME.fullmatch(parts[2]) or ".." in parts[2]:
            raise ValueError(f"not a blob key of this server: {key[:120]!r}")
        return self.root.joinpath(*parts)

    def new_temp_file(self) -> tuple[int, Path]:
        fd, name = self._temp_file()
        return fd, Path(name)

    def _temp_file(self) -> tuple[int, str]:
        """A new private file under ``tmp/``, open for writing, and its path: a random name made
        once and created exclusively (what ``tempfile.mkstemp`` does, at a fraction of its cost)."""
        for _ in range(_TEMP_NAME_TRIES):
            name = f"{self._temp_prefix}{secrets.token_hex(8)}.part"
            try:
                fd = os.open(name, _TEMP_FLAGS, 0o600)
            except FileExistsError:  # 64 random bits taken: next name
                continue
            os.fchmod(fd, 0o600)  # whatever the umask
            return fd, name
        raise FileExistsError(f"no free temporary file name in {self.tmp_dir}")

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        make_private_dir(target.parent)
        fd = os.open(source, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(source, 0o600)
        os.replace(source, target)
        # The directory is not fsynced: a rename lost to a power cut leaves a row without bytes,
        # which reconciliation at start resets (the client's retry stores the bytes again).

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        fd, tmp = self._temp_file()
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            # made 0600; fsynced before the rename publishes it
            try:
                os.replace(tmp, target)
            except FileNotFoundError:  # the session's first profile: its directory is made now
                make_private_dir(target.parent)
                os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def read_version(self, key: str, max_bytes: int) -> BlobVersion | None:
        """The bytes of ``key`` and a tag of this file (inode, change time, size); not read when
        larger than ``max_bytes``."""
        try:
            with self.path(key).open("rb") as file:
                info = os.fstat(file.fileno())
                tag = _file_tag(info)
                if info.st_size > max_bytes:
                    return BlobVersion(size=info.st_size, tag=tag)
                data = file.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        if len(data) > max_bytes:
            return BlobVersion(size=len(data), tag=tag)
        return BlobVersion(size=len(data), tag=tag, data=data)

    def copy_version(self, source: str, target: str, tag: str) -> bool:
        """Copy ``source`` to ``target`` if it is still the file :meth:`read_version` tagged."""
        with self.path(source).open("rb") as file:
            if _file_tag(os.fstat(file.fileno())) != tag:
                raise BlobChangedError(source)
            data = file.read()
        self.put_bytes(target, data)
        return True

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``; a prefix within one directory
        (``profiles/<id>/...``) lists that directory only."""
        base = self.root / "profiles"
        parts = prefix.split("/")
        if len(parts) >= 3 and parts[0] in _KEY_PARTS and ID_PATTERN.match(parts[1]):
            directories = [base / parts[1]]
        else:
            directories = sorted(base.iterdir()) if base.is_dir() else []
        for directory in directories:
            if not directory.is_dir():
                continue
            for file in sorted(directory.iterdir()):
                key = f"profiles/{directory.name}/{file.name}"
                if not (key.startswith(prefix) and file.is_file()):
                    continue
                try:
                    self.path(key)
                except ValueError:  # a stray file not named like a key: no key, never listed or touched
                    continue
                yield key

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every key starting with ``prefix``."""
        for key, size, _ in self.list_stamped(prefix):
            yield key, size

    def delete_prefix(self, prefix: str) -> list[str]:
        """Remove the files of every key starting with ``prefix``, then, for a directory's prefix
        (``profiles/<id>/``), the directory if that emptied it; the keys removed."""
        removed = list(self.list_keys(prefix))
        for key in removed:
            self.delete(key)
        parts = prefix.split("/")
        if len(parts) == 3 and parts[2] == "" and parts[0] in _KEY_PARTS and ID_PATTERN.match(parts[1]):
            # gone already, holding odd files, or a write arrived meanwhile (reconciled at the next start)
            with contextlib.suppress(OSError):
                (self.root / parts[0] / parts[1]).rmdir()
        return removed

    def list_stamped(self, prefix: str = "") -> Iterator[tuple[str, int, int]]:
        """``(key, size, modification time in epoch ms)`` of every key starting with ``prefix``."""
        for key in self.list_keys(prefix):
            with contextlib.suppress(FileNotFoundError):
                info = self.path(key).stat()
                yield key, info.st_size, info.st_mtime_ns // 1_000_000

    def presign_put(self, key: str, ttl_seconds: int) -> str | None:
        return None

    def reconcile(self) -> list[str]:
        removed = []
        for leftover in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if leftover.is_file():
                    leftover.unlink()
                    removed.append(f"{TMP_DIR}/{leftover.name}")
        return removed
