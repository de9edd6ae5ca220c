"""Upload-URL signing (server/signing.py) as pure logic: the secret file, the URL, every refusal.

Expected values are built here by hand (hmac, hashlib, urlencode), not with the signer's own
helpers. The refusal messages are part of the API (403 bodies), so they are checked word for word.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

import pytest

from whylogs_songbird.server import signing
from whylogs_songbird.server.signing import (
    SignatureError,
    UrlExpiredError,
    UrlSigner,
    load_or_create_health_token,
    load_or_create_secret,
)

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/signing.py")

SECRET = bytes(range(32))
EXPIRES = 4_000_000_000  # 2096
MISSING = "The upload URL has no expires/signature; use the uploadUrl exactly as the server gave it."
MISMATCH = "The upload URL's signature does not match; use the uploadUrl exactly as given."
EXPIRED = (
    "This upload URL has expired; ask the server for a new one "
    "(call the upload or reference operation again) and PUT the profile to that URL."
)


def by_hand(upload_id: str, expires: int | str, secret: bytes = SECRET) -> str:
    return hmac.new(secret, f"{upload_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def refusal(signer: UrlSigner, *args, **kwargs) -> tuple[type, str]:
    with pytest.raises(SignatureError) as caught:
        signer.verify(*args, **kwargs)
    return type(caught.value), str(caught.value)


def test_the_secret_is_created_once_in_a_new_nested_dir_private_and_kept(tmp_path):
    data_dir = tmp_path / "a" / "b" / "c"
    secret = load_or_create_secret(data_dir)
    path = data_dir / "secret.key"
    assert len(secret) == 32 and path.read_bytes() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(data_dir) == secret  # read again, not replaced
    assert sorted(p.name for p in data_dir.iterdir()) == ["secret.key"]  # no temporary file left


def test_another_process_winning_the_race_means_its_secret_is_used(tmp_path, monkeypatch):
    theirs = b"t" * 32
    real_link = os.link

    def lose_the_race(source, target):
        Path(target).write_bytes(theirs)  # the other process linked its file first
        real_link(source, target)  # raises FileExistsError, as it would then

    monkeypatch.setattr(signing.os, "link", lose_the_race)
    assert load_or_create_secret(tmp_path) == theirs
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_threads_starting_at_once_agree_on_one_secret(tmp_path):
    barrier = threading.Barrier(8)
    found: list[bytes] = []

    def start() -> None:
        barrier.wait()
        found.append(load_or_create_secret(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1


def test_a_secret_file_of_the_wrong_size_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "secret.key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError) as caught:
        load_or_create_secret(tmp_path)
    assert str(caught.value) == (
        f"{path} does not hold a 32-byte secret; delete it to make a new one "
        "(upload URLs handed out before then stop working)."
    )


def test_repr_never_shows_the_secret():
    assert repr(UrlSigner(SECRET)) == "UrlSigner(<secret>)"


@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:8787", "http://127.0.0.1:8787/", "http://h.example/p//", "http://h.example/BOX/"]
)
def test_the_upload_url_is_the_base_path_and_an_hmac_of_id_and_expiry(base):
    url = UrlSigner(SECRET).upload_url(base, "log-abc", EXPIRES)
    stripped = base.rstrip("/")
    assert url == f"{stripped}/v0/uploads/log-abc?expires={EXPIRES}&signature={by_hand('log-abc', EXPIRES)}"


def test_a_good_signature_verifies_up_to_and_including_its_expiry_second():
    signer = UrlSigner(SECRET)
    good = by_hand("log-abc", EXPIRES)
    assert signer.verify("log-abc", str(EXPIRES), good, now=EXPIRES - 100) == EXPIRES
    assert signer.verify("log-abc", str(EXPIRES), good, now=EXPIRES) == EXPIRES
    assert refusal(signer, "log-abc", str(EXPIRES), good, now=EXPIRES + 0.5) == (UrlExpiredError, EXPIRED)


def test_without_a_clock_given_the_real_time_decides():
    signer = UrlSigner(SECRET)
    past = 1_000_000_000
    assert refusal(signer, "log-abc", str(past), by_hand("log-abc", past)) == (UrlExpiredError, EXPIRED)
    assert signer.verify("log-abc", str(EXPIRES), by_hand("log-abc", EXPIRES)) == EXPIRES


@pytest.mark.parametrize("expires, signature", [(None, "ab"), ("", "ab"), (str(EXPIRES), None), (str(EXPIRES), "")])
def test_a_missing_part_says_so(expires, signature):
    assert refusal(UrlSigner(SECRET), "log-abc", expires, signature, now=0) == (SignatureError, MISSING)


def test_the_wrong_secret_id_or_expiry_do_not_match():
    signer = UrlSigner(SECRET)
    for upload_id, expires, signature in [
        ("log-abc", str(EXPIRES), by_hand("log-abc", EXPIRES, secret=b"\x01" * 32)),
        ("log-abd", str(EXPIRES), by_hand("log-abc", EXPIRES)),
        ("log-abc", str(EXPIRES + 1), by_hand("log-abc", EXPIRES)),
        ("log-abc", str(EXPIRES), by_hand("log-abc", EXPIRES).upper()),
    ]:
        assert refusal(signer, upload_id, expires, signature, now=0) == (SignatureError, MISMATCH)


def test_expiries_of_up_to_twelve_digits_are_checked_longer_ones_refused_unread():
    signer = UrlSigner(SECRET)
    twelve, thirteen = "9" * 12, "9" * 13
    assert signer.verify("log-abc", twelve, by_hand("log-abc", twelve), now=0) == int(twelve)
    # a correctly signed 13-digit expiry is still refused: its length alone says it was not ours
    assert refusal(signer, "log-abc", thirteen, by_hand("log-abc", thirteen), now=0) == (SignatureError, MISMATCH)
    for odd in ["-1", "1e9", "١٢٣", " 123"]:
        assert refusal(signer, "log-abc", odd, by_hand("log-abc", odd), now=0) == (SignatureError, MISMATCH)


def test_a_signature_that_is_not_valid_text_is_a_mismatch_not_a_crash():
    signer = UrlSigner(SECRET)
    for signature in ["\udc80" * 64, "é" * 64]:
        assert refusal(signer, "log-abc", str(EXPIRES), signature, now=0) == (SignatureError, MISMATCH)


# -- the health token --------------------------------------------------------------------------------


def test_the_health_token_is_created_once_in_a_new_nested_dir_private_and_kept(tmp_path):
    data_dir = tmp_path / "a" / "b"
    token = load_or_create_health_token(data_dir)
    path = data_dir / "health.token"
    assert len(token) == 64 and set(token) <= set("0123456789abcdef")
    assert path.read_bytes() == f"{token}\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_health_token(data_dir) == token  # read again, not replaced
    assert sorted(p.name for p in data_dir.iterdir()) == ["health.token"]
    assert load_or_create_secret(data_dir) != token.encode()  # the secret is a file of its own
    assert sorted(p.name for p in data_dir.iterdir()) == ["health.token", "secret.key"]


def test_a_kept_health_token_is_read_without_its_surrounding_whitespace(tmp_path):
    (tmp_path / "health.token").write_bytes(b"  " + b"Ab" * 32 + b"\r\n\n")
    assert load_or_create_health_token(tmp_path) == "Ab" * 32


HEALTH_REFUSED = "{} does not hold a health token; delete it to make a new one."


@pytest.mark.parametrize("content", [b"a" * 63, b"a" * 65, b"", b"\xff" * 10])
def test_a_health_token_file_without_64_characters_is_refused_with_what_to_do(tmp_path, content):
    path = tmp_path / "health.token"
    path.write_bytes(content)
    with pytest.raises(ValueError) as caught:
        load_or_create_health_token(tmp_path)
    assert type(caught.value) is ValueError
    assert str(caught.value) == HEALTH_REFUSED.format(path)


def test_a_health_token_file_is_read_byte_by_byte_as_ascii(tmp_path):
    # 64 bytes, of which two are not ASCII: each stands for one (replaced) character
    (tmp_path / "health.token").write_bytes(b"a" * 61 + "\u00e9".encode() + b"b")
    assert load_or_create_health_token(tmp_path) == "a" * 61 + "\ufffd\ufffd" + "b"
