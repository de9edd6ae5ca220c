"""The pure logic behind the dataset pages' credentials: link tokens, cookies, the login's ``next``,
and the paths and links of a page's container (session or dataset)."""

from __future__ import annotations

import pytest

from whylogs_songbird.server.datasets import check_link_token, container_target, link_token, pages_path
from whylogs_songbird.server.observatory.container import PageContainer
from whylogs_songbird.server.page_access import Grant, cookie_value, org_of_path, read_cookie, safe_next
from whylogs_songbird.server.signing import UrlSigner

pytestmark = pytest.mark.mutation_fast(
    "whylogs_songbird/server/page_access.py",
    "whylogs_songbird/server/datasets.py",
    "whylogs_songbird/server/observatory/container.py",
)

SIGNER = UrlSigner(b"k" * 32)
NOW = 1_800_000_000


def test_a_link_token_opens_its_dataset_until_it_expires():
    token = link_token(SIGNER, "org-a", "model-1", NOW + 60)
    assert check_link_token(SIGNER, "org-a", "model-1", token, now=NOW) == NOW + 60
    assert check_link_token(SIGNER, "org-a", "model-1", token, now=NOW + 60) == NOW + 60
    assert check_link_token(SIGNER, "org-a", "model-1", token, now=NOW + 61) is None
    assert check_link_token(SIGNER, "org-a", "model-2", token, now=NOW) is None
    assert check_link_token(SIGNER, "org-b", "model-1", token, now=NOW) is None
    assert check_link_token(UrlSigner(b"x" * 32), "org-a", "model-1", token, now=NOW) is None
    expires, _, signature = token.partition(".")
    for bad in (f"{NOW + 999}.{signature}", f"{expires}.", f".{signature}", "x.y", "", f"-1.{signature}"):
        assert check_link_token(SIGNER, "org-a", "model-1", bad, now=NOW) is None, bad


def test_a_cookie_holds_its_grant_signed_and_nothing_else_opens():
    login = Grant("org-a", None, NOW + 60, "k:KeyId00001")
    value = cookie_value(SIGNER, login)
    assert "org-a" not in value and value.startswith(f"{NOW + 60}.k:KeyId00001.")
    assert read_cookie(SIGNER, value, "org-a", None, now=NOW) == login
    assert read_cookie(SIGNER, value, "org-a", None, now=NOW + 61) is None
    assert read_cookie(SIGNER, value, "org-b", None, now=NOW) is None
    assert read_cookie(SIGNER, value, "org-a", "model-1", now=NOW) is None, "a login cookie is no dataset cookie"
    link = cookie_value(SIGNER, Grant("org-a", "model-1", NOW + 60))
    assert read_cookie(SIGNER, link, "org-a", "model-1", now=NOW) == Grant("org-a", "model-1", NOW + 60)
    assert read_cookie(SIGNER, link, "org-a", None, now=NOW) is None, "a dataset's cookie opens no other dataset"
    assert read_cookie(SIGNER, link, "org-a", "model-2", now=NOW) is None
    _, ref, signature = value.split(".")
    for bad in (f"{NOW + 999}.{ref}.{signature}", f"{NOW + 60}.k:Other00001.{signature}", None, "", "x" * 300, "1.2"):
        assert read_cookie(SIGNER, bad, "org-a", None, now=NOW) is None, bad
    assert link_token(SIGNER, "org-a", "model-1", NOW + 60) not in link, "a link's token is no cookie"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("/organizations/o/datasets/d/timeline?granularity=day", True),
        ("/", True),
        ("https://evil.example/", False),
        ("//evil.example/x", False),
        ("/\\evil.example", False),
        ("/%2F/evil.example", False),
        ("http:/x", False),
        ("javascript:alert(1)", False),
        ("/ok\r\nSet-Cookie: x=1", False),
        ("", False),
        (None, False),
        ("/" + "a" * 3000, False),
    ],
)
def test_a_login_sends_back_only_to_a_path_of_this_server(value, expected):
    assert safe_next(value) == (value if expected else None)


def test_the_org_a_path_names():
    assert org_of_path("/organizations/org-a/datasets/d") == "org-a"
    assert org_of_path("/organizations/org-a") == "org-a"
    assert org_of_path("/organizations/org-a?x=1") == "org-a"
    assert org_of_path("/organizations/bad%20org/datasets/d") is None
    assert org_of_path("/sessions/session-x") is None and org_of_path("/") is None


def test_a_container_gives_its_pages_paths_and_links():
    session = PageContainer.session("session-abc")
    assert (session.kind, session.name, session.home_path) == ("session", "session-abc", "/sessions/session-abc")
    assert session.link("http://h", [1, "ref-x"], ["k=v"]) == (
        "http://h/resources/model-1/profiles?profile=1&profile=ref-x&sessionToken=session-abc&segment=k%3Dv"
    )
    assert session.timeline_api([("granularity", "day")]) == "/api/v1/sessions/session-abc/timeline?granularity=day"
    dataset = PageContainer.dataset("session-internal", "org-a", "model-1")
    assert (dataset.id, dataset.org_id, dataset.dataset_id) == ("session-internal", "org-a", "model-1")
    assert (dataset.kind, dataset.name, dataset.home_path) == (
        "dataset",
        "org-a/model-1",
        pages_path("org-a", "model-1"),
    )
    assert dataset.link("http://h", [1], ["k=v"]) == (
        "http://h/organizations/org-a/datasets/model-1/profiles?profile=1&segment=k%3Dv"
    )
    assert "session-internal" not in dataset.link("http://h", [1]) + dataset.timeline_api() + dataset.timeline_path
    assert dataset.timeline_api() == "/organizations/org-a/datasets/model-1/timeline/data"
    assert dataset.link_params == [] and session.link_params == [("sessionToken", "session-abc")]


class _Metadata:
    def __init__(self, rows):
        self.rows = rows

    def get_session(self, container_id):
        return self.rows.get(container_id)


class _Store:
    """The one Store method the lookups use: ``container``, a session's or a dataset container's row."""

    def __init__(self, rows):
        self.container = _Metadata(rows).get_session


def test_a_container_is_a_session_a_dataset_or_a_transaction_nobody_monitors():
    from whylogs_songbird.server.storage.base import SessionRecord

    store = _Store(
        {
            "session-d": SessionRecord("session-d", "", "org-a", 0, dataset_id="model-1"),
            "session-t": SessionRecord("session-t", "", "org-a", 0, dataset_id="model-1/transaction/abc"),
            "session-g": SessionRecord("session-g", "u", "guest", 0),
        }
    )
    assert container_target(store, "session-d") == ("dataset", "org-a/model-1")
    assert container_target(store, "session-t") is None
    assert container_target(store, "session-g") == ("session", "session-g")
    assert container_target(store, "session-unknown") == ("session", "session-unknown")
