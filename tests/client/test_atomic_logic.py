"""Whole-or-nothing writes (whylogs_songbird/atomic.py) on real files in a temporary directory.

``write_json_atomic``'s shape and failed rename are pinned in test_session_store.py; here: the raw
bytes writer, and a failure whose temporary file is already gone (the failure itself is raised).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from whylogs_songbird import atomic
from whylogs_songbird.atomic import write_bytes_atomic, write_json_atomic

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/atomic.py")


def test_bytes_are_written_exactly_and_replace_the_old_content(tmp_path):
    path = tmp_path / "ledger.bin"
    write_bytes_atomic(path, b"\x00first\xff")
    assert path.read_bytes() == b"\x00first\xff"
    write_bytes_atomic(path, b"")
    assert path.read_bytes() == b""
    write_bytes_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.bin"]


def test_the_bytes_go_through_a_tmp_file_beside_the_target(tmp_path, monkeypatch):
    path = tmp_path / "ledger.bin"
    (tmp_path / "ledger.bin.tmp").write_bytes(b"a stale temporary file, longer than what follows")
    renamed: list[tuple[str, str, bytes]] = []
    real_replace = os.replace

    def replace(source, target):
        renamed.append((str(source), str(target), Path(source).read_bytes()))
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)
    write_bytes_atomic(path, b"new")
    assert renamed == [(str(tmp_path / "ledger.bin.tmp"), str(path), b"new")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.bin"]


def test_a_failure_whose_temporary_file_is_gone_is_raised_as_itself(tmp_path, monkeypatch):
    path = tmp_path / "state.json"

    def replace_that_loses_the_file(source, target):
        Path(source).unlink()
        raise PermissionError("refused")

    monkeypatch.setattr(atomic.os, "replace", replace_that_loses_the_file)
    with pytest.raises(PermissionError, match="refused"):
        write_json_atomic(path, {"a": 1})
    assert list(tmp_path.iterdir()) == []
