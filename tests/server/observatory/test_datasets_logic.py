"""A dataset's pages, link tokens and kept settings (server/datasets.py) as pure logic.

Tokens are checked against signatures computed here by hand (hmac over ``dataset:ORG/DATASET:EXPIRES``);
the store is a fake answering the two settings calls the module makes.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from whylogs_songbird.server import datasets
from whylogs_songbird.server.datasets import (
    LINK_TTL_SECONDS,
    DatasetSettings,
    check_link_token,
    link_token,
    new_link_token,
    org_pages_path,
    pages_path,
    read_settings,
)
from whylogs_songbird.server.signing import UrlSigner

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/datasets.py")

SECRET = bytes(range(32))
SIGNER = UrlSigner(SECRET)


def by_hand(org: str, dataset: str, expires: int) -> str:
    return hmac.new(SECRET, f"dataset:{org}/{dataset}:{expires}".encode(), hashlib.sha256).hexdigest()


def test_page_paths_quote_every_reserved_character_even_a_slash():
    assert pages_path("org-1", "model-1") == "/organizations/org-1/datasets/model-1"
    assert pages_path("o/1 x", "d/1?") == "/organizations/o%2F1%20x/datasets/d%2F1%3F"
    assert org_pages_path("org-1") == "/organizations/org-1"
    assert org_pages_path("o/1 x") == "/organizations/o%2F1%20x"


def test_a_link_token_is_the_expiry_and_its_signature():
    assert link_token(SIGNER, "org-1", "model-1", 1234) == f"1234.{by_hand('org-1', 'model-1', 1234)}"


def test_a_new_link_token_lasts_the_ttl_from_now_in_whole_seconds(monkeypatch):
    class Clock:
        @staticmethod
        def time() -> float:
            return 1_000.9

    monkeypatch.setattr(datasets, "time", Clock)
    assert LINK_TTL_SECONDS == 604_800
    assert new_link_token(SIGNER, "org-1", "model-1") == f"605800.{by_hand('org-1', 'model-1', 605_800)}"
    assert new_link_token(SIGNER, "org-1", "model-1", 60) == f"1060.{by_hand('org-1', 'model-1', 1060)}"


def test_a_token_opens_its_dataset_until_and_at_its_expiry():
    token = f"5000.{by_hand('org-1', 'model-1', 5000)}"
    assert check_link_token(SIGNER, "org-1", "model-1", token, now=4999.5) == 5000
    assert check_link_token(SIGNER, "org-1", "model-1", token, now=5000) == 5000
    assert check_link_token(SIGNER, "org-1", "model-1", token, now=5000.001) is None


def test_without_a_given_now_the_clock_is_read(monkeypatch):
    class Clock:
        now = 5000.0

        @classmethod
        def time(cls) -> float:
            return cls.now

    monkeypatch.setattr(datasets, "time", Clock)
    token = f"5000.{by_hand('org-1', 'model-1', 5000)}"
    assert check_link_token(SIGNER, "org-1", "model-1", token) == 5000
    Clock.now = 5000.5
    assert check_link_token(SIGNER, "org-1", "model-1", token) is None


def test_a_token_of_another_dataset_or_org_or_tampered_with_opens_nothing():
    token = f"5000.{by_hand('org-1', 'model-1', 5000)}"
    assert check_link_token(SIGNER, "org-1", "model-2", token, now=0) is None
    assert check_link_token(SIGNER, "org-2", "model-1", token, now=0) is None
    assert check_link_token(SIGNER, "org-1", "model-1", f"5001.{by_hand('org-1', 'model-1', 5000)}", now=0) is None
    assert check_link_token(UrlSigner(b"x" * 32), "org-1", "model-1", token, now=0) is None


@pytest.mark.parametrize("expires", [7, 99, 999_999_999_999])
def test_an_expiry_of_one_to_twelve_digits_is_read(expires):
    token = f"{expires}.{by_hand('o', 'd', expires)}"
    assert check_link_token(SIGNER, "o", "d", token, now=1) == expires


@pytest.mark.parametrize(
    "token",
    [
        f"1000000000000.{by_hand('o', 'd', 1_000_000_000_000)}",  # 13 digits
        f"0001000000000.{by_hand('o', 'd', 1_000_000_000)}",  # 13 digits, leading zeros
        f".{by_hand('o', 'd', 0)}",
        "99.",
        "99",
        "",
        f"-5.{by_hand('o', 'd', -5)}",
        f"\u0665.{by_hand('o', 'd', 5)}",  # an Arabic-Indic five: a digit, not ASCII
        f"99.{by_hand('o', 'd', 99)}.x",
    ],
)
def test_a_malformed_token_opens_nothing(token):
    assert check_link_token(SIGNER, "o", "d", token, now=0) is None


def test_a_signature_that_is_not_text_utf8_can_encode_is_refused_not_an_error():
    assert check_link_token(SIGNER, "o", "d", "99.\udcff" + by_hand("o", "d", 99)[1:], now=0) is None
    assert check_link_token(SIGNER, "o", "d", "99.é", now=0) is None


class FakeStore:
    """The settings a ``Store`` would answer."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.settings = settings
        self.asked: list[tuple[str, str]] = []

    def list_settings(self, container_id: str, prefix: str = "") -> list[tuple[str, str]]:
        self.asked.append((container_id, prefix))
        return sorted((k, v) for k, v in self.settings.items() if k.startswith(prefix))

    def get_setting(self, container_id: str, key: str) -> str | None:
        self.asked.append((container_id, key))
        return self.settings.get(key)


def test_settings_are_read_by_their_keys_with_the_prefix_cut():
    store = FakeStore(
        {
            "schema/column/age": json.dumps({"dataType": "integral"}),
            "schema/column/a/b": json.dumps({"x": 1}),
            "schema/metric/m1": json.dumps({"label": "m"}),
            "weights": json.dumps([{"column": "age", "weight": 0.5}]),
            "other": "ignored",
        }
    )
    settings = read_settings(store, "c-1")
    assert settings == DatasetSettings(
        columns={"age": {"dataType": "integral"}, "a/b": {"x": 1}},
        metrics={"m1": {"label": "m"}},
        weights=[{"column": "age", "weight": 0.5}],
    )
    assert not settings.empty
    assert store.asked == [("c-1", "schema/column/"), ("c-1", "schema/metric/"), ("c-1", "weights")]


def test_no_settings_read_as_empty():
    settings = read_settings(FakeStore({}), "c-1")
    assert (settings.columns, settings.metrics, settings.weights, settings.empty) == ({}, {}, [], True)
    assert read_settings(FakeStore({"weights": ""}), "c-1").weights == []


@pytest.mark.parametrize(
    "settings",
    [DatasetSettings(columns={"a": {}}), DatasetSettings(metrics={"m": {}}), DatasetSettings(weights=[{}])],
)
def test_any_one_kind_of_setting_makes_them_not_empty(settings):
    assert settings.empty is False


def test_new_settings_do_not_share_their_lists():
    one, two = DatasetSettings(), DatasetSettings()
    one.columns["a"] = {}
    one.metrics["m"] = {}
    one.weights.append({})
    assert (two.columns, two.metrics, two.weights) == ({}, {}, [])
