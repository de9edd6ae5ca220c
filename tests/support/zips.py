"""Zip archives made in memory, for the tests of zipped uploads."""

from __future__ import annotations

import io
import zipfile


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip holding ``members`` (name -> bytes) in this order, each stored with ``compression``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()
