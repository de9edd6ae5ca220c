"""Who opens an organization's dataset pages, decision by decision: a link's token, the dataset and
login cookies, ``X-API-Key``; the cookies' fields; the refusals' status and words; the login form.

Each test builds the request itself (a real Starlette request on a state holding the server's real
signer, key ring and, where a stored key is needed, a real store in a temporary directory), and the
module's clock is fixed: nothing sleeps, nothing listens on a port.
"""

from __future__ import annotations

import asyncio
import html
import re
from http.cookies import SimpleCookie
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
from fastapi.responses import Response
from starlette.requests import Request

from whylogs_songbird.server import datasets, page_access
from whylogs_songbird.server.api_keys import create_key
from whylogs_songbird.server.auth import ApiKeyRing
from whylogs_songbird.server.datasets import LINK_TTL_SECONDS, link_token
from whylogs_songbird.server.observatory.page import make_environment
from whylogs_songbird.server.page_access import (
    COOKIE_TTL_SECONDS,
    DATASET_COOKIE,
    MAX_LOGIN_FIELDS,
    MAX_LOGIN_FORM,
    ORG_COOKIE,
    Access,
    AccessRefused,
    Grant,
    cookie_value,
    dataset_access,
    login_router,
    login_url,
    read_cookie,
    refused_answer,
    requested_path,
    safe_next,
    set_grant_cookie,
)
from whylogs_songbird.server.signing import UrlSigner
from whylogs_songbird.server.store import Store

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/page_access.py")

NOW = 1_800_000_000
SIGNER = UrlSigner(b"s" * 32)
KEY_A = "RingKeyA01.secret-of-org-a-0001:org-a"
KEY_B = "RingKeyB01.secret-of-org-b-0001:org-b"
KEY_ANY = "RingKeyN01.secret-of-no-org-001"
RING = ApiKeyRing([KEY_A, KEY_B, KEY_ANY])
PAGE = "/organizations/org-a/datasets/model-1"
ENV = make_environment()

LOGIN_MESSAGE = (
    "The pages of organization org-a's datasets need an API key of the organization, or a link that carries a token."
)
EXPIRED_MESSAGE = (
    f"This link has expired or was changed (a dataset link opens its pages for {LINK_TTL_SECONDS // 86400} days). "
    "Log in with an API key of organization org-a, or ask for a new link (whylogs' observatory link)."
)
FOREIGN_MESSAGE = (
    "This API key belongs to another organization than org-a: log in with a key of org-a. "
    "Nothing of this organization was shown."
)


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """The clock of page_access and of the link tokens it checks, fixed at NOW."""
    fixed = SimpleNamespace(time=lambda: float(NOW))
    monkeypatch.setattr(page_access, "time", fixed)
    monkeypatch.setattr(datasets, "time", fixed)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real embedded store with one key of org-a, one of org-b, and a revoked key of org-a."""
    opened = Store(tmp_path_factory.mktemp("page-access-store"))
    keys = SimpleNamespace(a=create_key(opened, "org-a"), b=create_key(opened, "org-b"))
    revoked = create_key(opened, "org-a")
    opened.revoke_api_key(revoked.key_id)
    keys.revoked = revoked
    yield opened, keys
    opened.close()


def state(*, public_url=None, store=None, with_public_url=True):
    config = SimpleNamespace(public_url=public_url) if with_public_url else SimpleNamespace()
    return SimpleNamespace(signer=SIGNER, api_keys=RING, config=config, store=store)


def make_request(
    path=PAGE,
    query="",
    *,
    headers=(),
    cookies=None,
    scheme="http",
    app_state=None,
    method="GET",
    body=b"",
):
    raw = [(name.lower().encode(), value.encode()) for name, value in headers]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    app = SimpleNamespace(state=app_state or state())
    scope = {
        "type": "http",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw,
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "app": app,
    }
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def set_cookie_of(response):
    """The response's one Set-Cookie header parsed: (name, morsel)."""
    headers = response.headers.getlist("set-cookie")
    assert len(headers) == 1, headers
    parsed = SimpleCookie()
    parsed.load(headers[0])
    ((name, morsel),) = parsed.items()
    return name, morsel, headers[0]


def refused(request, org="org-a", dataset="model-1"):
    with pytest.raises(AccessRefused) as caught:
        dataset_access(request, org, dataset)
    return caught.value


# -- AccessRefused ----------------------------------------------------------------------------------


def test_a_refusal_keeps_its_status_title_and_message_and_asks_no_login_unless_told():
    plain = AccessRefused(403, "Title", "Words.")
    assert (plain.status, plain.title, plain.message, plain.login, str(plain)) == (
        403,
        "Title",
        "Words.",
        False,
        "Words.",
    )
    assert AccessRefused(401, "T", "M", login=True).login is True


# -- dataset_access ---------------------------------------------------------------------------------


@pytest.mark.parametrize("org, dataset", [("bad org", "model-1"), ("org-a", "bad/dataset"), ("-org", "model-1")])
def test_a_path_that_names_no_dataset_is_not_found(org, dataset):
    refusal = refused(make_request(headers=[("X-API-Key", KEY_A)]), org, dataset)
    assert (refusal.status, refusal.title, refusal.login) == (404, "Dataset not found", False)
    assert refusal.message == "This is no dataset page: check the org and dataset ids."


def test_a_link_token_opens_its_dataset_and_brings_a_cookie_that_ends_with_the_token():
    token = link_token(SIGNER, "org-a", "model-1", NOW + 600)
    access = dataset_access(make_request(query=f"token={token}"), "org-a", "model-1")
    assert access == Access("org-a", "model-1", new_cookie=Grant("org-a", "model-1", NOW + 600))


def test_a_long_lived_link_brings_a_cookie_of_the_cookie_lifetime_only():
    for expires, cookie_expires in (
        (NOW + COOKIE_TTL_SECONDS + 1, NOW + COOKIE_TTL_SECONDS),
        (NOW + COOKIE_TTL_SECONDS, NOW + COOKIE_TTL_SECONDS),
        (NOW + COOKIE_TTL_SECONDS - 1, NOW + COOKIE_TTL_SECONDS - 1),
    ):
        token = link_token(SIGNER, "org-a", "model-1", expires)
        access = dataset_access(make_request(query=f"token={token}"), "org-a", "model-1")
        assert access.new_cookie == Grant("org-a", "model-1", cookie_expires), expires


def test_a_link_token_opens_before_any_other_credential_is_looked_at():
    token = link_token(SIGNER, "org-a", "model-1", NOW + 60)
    request = make_request(query=f"token={token}", headers=[("X-API-Key", "not-a-key")])
    assert dataset_access(request, "org-a", "model-1").new_cookie == Grant("org-a", "model-1", NOW + 60)


def test_an_expired_or_foreign_link_without_other_credential_says_the_link_expired():
    for token in (
        link_token(SIGNER, "org-a", "model-1", NOW - 1),
        link_token(SIGNER, "org-a", "model-2", NOW + 60),
        "garbage",
    ):
        refusal = refused(make_request(query=urlencode({"token": token})))
        assert (refusal.status, refusal.title, refusal.login) == (401, "Link expired", False), token
        assert refusal.message == EXPIRED_MESSAGE


def test_an_empty_token_is_no_link_the_page_asks_for_a_login():
    refusal = refused(make_request(query="token="))
    assert (refusal.status, refusal.title, refusal.message, refusal.login) == (401, "Log in", LOGIN_MESSAGE, True)


def test_without_any_credential_the_page_asks_for_a_login():
    refusal = refused(make_request())
    assert (refusal.status, refusal.title, refusal.message, refusal.login) == (401, "Log in", LOGIN_MESSAGE, True)


def test_the_cookie_of_a_link_opens_its_dataset_only_and_sets_no_new_cookie():
    cookie = cookie_value(SIGNER, Grant("org-a", "model-1", NOW + 60))
    assert dataset_access(make_request(cookies={DATASET_COOKIE: cookie}), "org-a", "model-1") == Access(
        "org-a", "model-1"
    )
    refusal = refused(make_request(cookies={DATASET_COOKIE: cookie}), "org-a", "model-2")
    assert refusal.login is True
    expired = cookie_value(SIGNER, Grant("org-a", "model-1", NOW - 1))
    assert refused(make_request(cookies={DATASET_COOKIE: expired})).login is True


def test_a_dataset_cookie_opens_even_with_a_stale_token_beside_it():
    cookie = cookie_value(SIGNER, Grant("org-a", "model-1", NOW + 60))
    stale = link_token(SIGNER, "org-a", "model-1", NOW - 1)
    request = make_request(query=f"token={stale}", cookies={DATASET_COOKIE: cookie})
    assert dataset_access(request, "org-a", "model-1") == Access("org-a", "model-1")


@pytest.mark.parametrize("key", [KEY_A, KEY_ANY])
def test_a_login_cookie_opens_every_dataset_of_its_org_while_its_key_is_accepted(key):
    cookie = cookie_value(SIGNER, Grant("org-a", None, NOW + 60, RING.ref(key)))
    for dataset in ("model-1", "model-2"):
        request = make_request(cookies={ORG_COOKIE: cookie}, headers=[("X-API-Key", "not-a-key")])
        assert dataset_access(request, "org-a", dataset) == Access("org-a", dataset)


def test_a_login_cookie_of_a_key_the_server_no_longer_accepts_or_of_another_org_opens_nothing():
    gone = cookie_value(
        SIGNER, Grant("org-a", None, NOW + 60, ApiKeyRing(["Gone000001.secret:org-a"]).ref("Gone000001.secret:org-a"))
    )
    foreign = cookie_value(SIGNER, Grant("org-a", None, NOW + 60, RING.ref(KEY_B)))
    for cookie in (gone, foreign):
        refusal = refused(make_request(cookies={ORG_COOKIE: cookie}))
        assert (refusal.status, refusal.login) == (401, True)
    other_org = cookie_value(SIGNER, Grant("org-b", None, NOW + 60, RING.ref(KEY_B)))
    assert refused(make_request(cookies={ORG_COOKIE: other_org})).login is True


def test_a_login_cookie_of_a_stored_key_opens_until_the_key_is_revoked(store):
    opened, keys = store
    app_state = state(store=opened)
    live = cookie_value(SIGNER, Grant("org-a", None, NOW + 60, f"k:{keys.a.key_id}"))
    assert dataset_access(make_request(cookies={ORG_COOKIE: live}, app_state=app_state), "org-a", "m") == Access(
        "org-a", "m"
    )
    revoked = cookie_value(SIGNER, Grant("org-a", None, NOW + 60, f"k:{keys.revoked.key_id}"))
    assert refused(make_request(cookies={ORG_COOKIE: revoked}, app_state=app_state)).login is True


@pytest.mark.parametrize("key", [KEY_A, KEY_A.rpartition(":")[0], KEY_ANY])
def test_an_api_key_of_the_org_or_of_no_org_opens_the_pages(key):
    request = make_request(headers=[("X-API-Key", key)])
    assert dataset_access(request, "org-a", "model-1") == Access("org-a", "model-1")


def test_a_stored_key_opens_its_org_and_is_refused_elsewhere(store):
    opened, keys = store
    request = make_request(headers=[("X-API-Key", keys.a.key)], app_state=state(store=opened))
    assert dataset_access(request, "org-a", "model-1") == Access("org-a", "model-1")
    refusal = refused(make_request(headers=[("X-API-Key", keys.b.key)], app_state=state(store=opened)))
    assert (refusal.status, refusal.title, refusal.message) == (403, "Another organization's key", FOREIGN_MESSAGE)


def test_an_api_key_the_server_does_not_accept_is_refused_even_beside_a_stale_link():
    stale = link_token(SIGNER, "org-a", "model-1", NOW - 1)
    for query in ("", f"token={stale}"):
        refusal = refused(make_request(query, headers=[("X-API-Key", "not-a-key")]))
        assert (refusal.status, refusal.title, refusal.login) == (401, "API key not accepted", False)
        assert refusal.message == "The API key in X-API-Key is not accepted by this server."


def test_an_api_key_of_another_org_is_forbidden_and_says_so():
    refusal = refused(make_request(headers=[("X-API-Key", KEY_B)]))
    assert (refusal.status, refusal.title, refusal.message, refusal.login) == (
        403,
        "Another organization's key",
        FOREIGN_MESSAGE,
        False,
    )


# -- cookies ----------------------------------------------------------------------------------------


def test_a_login_cookie_is_scoped_to_the_org_signed_http_only_strict_and_lasts_until_its_expiry():
    response = Response()
    grant = Grant("org-a", None, NOW + 3600, RING.ref(KEY_A))
    set_grant_cookie(response, make_request(), grant)
    name, morsel, raw = set_cookie_of(response)
    assert (name, morsel.value) == (ORG_COOKIE, cookie_value(SIGNER, grant))
    assert (morsel["path"], morsel["max-age"], morsel["samesite"]) == ("/organizations/org-a", "3600", "strict")
    assert morsel["httponly"] is True and "secure" not in raw.lower()


def test_a_dataset_cookie_is_scoped_to_its_dataset_pages():
    response = Response()
    grant = Grant("org-a", "model.1", NOW + 5)
    set_grant_cookie(response, make_request(), grant)
    name, morsel, _ = set_cookie_of(response)
    assert (name, morsel.value) == (DATASET_COOKIE, cookie_value(SIGNER, grant))
    assert (morsel["path"], morsel["max-age"]) == ("/organizations/org-a/datasets/model.1", "5")


@pytest.mark.parametrize("expires, max_age", [(NOW, "0"), (NOW - 10, "0"), (NOW + 1, "1")])
def test_a_cookie_past_its_expiry_is_set_to_end_at_once(expires, max_age):
    response = Response()
    set_grant_cookie(response, make_request(), Grant("org-a", None, expires, "r:x"))
    assert set_cookie_of(response)[1]["max-age"] == max_age


@pytest.mark.parametrize(
    "scheme, public_url, secure",
    [
        ("http", None, False),
        ("http", "http://songbird.example", False),
        ("http", "https://songbird.example", True),
        ("https", None, True),
        ("https", "http://songbird.example", True),
    ],
)
def test_a_cookie_is_secure_when_the_page_was_asked_over_https_or_the_server_is_public_over_https(
    scheme, public_url, secure
):
    response = Response()
    request = make_request(scheme=scheme, app_state=state(public_url=public_url))
    set_grant_cookie(response, request, Grant("org-a", None, NOW + 1, "r:x"))
    assert ("secure" in set_cookie_of(response)[2].lower().split("; ")) is secure


def test_a_config_without_a_public_url_is_no_https():
    response = Response()
    set_grant_cookie(response, make_request(app_state=state(with_public_url=False)), Grant("o", None, NOW + 1, "r:x"))
    assert "secure" not in set_cookie_of(response)[2].lower()


def test_a_page_is_never_cached_and_carries_the_new_cookie_of_its_link_only():
    plain = Response()
    assert Access("org-a", "model-1").remember(plain, make_request()) is plain
    assert plain.headers["Cache-Control"] == "private, no-store"
    assert plain.headers.getlist("set-cookie") == []
    grant = Grant("org-a", "model-1", NOW + 60)
    linked = Access("org-a", "model-1", new_cookie=grant).remember(Response(), make_request())
    assert linked.headers["Cache-Control"] == "private, no-store"
    name, morsel, _ = set_cookie_of(linked)
    assert (name, morsel.value) == (DATASET_COOKIE, cookie_value(SIGNER, grant))


# -- refusals ---------------------------------------------------------------------------------------


def test_the_path_a_login_sends_back_to_keeps_the_query():
    assert requested_path(make_request(PAGE, "granularity=day&x=1")) == PAGE + "?granularity=day&x=1"
    assert requested_path(make_request(PAGE)) == PAGE
    assert login_url("/organizations/o?a=1") == "/login?next=%2Forganizations%2Fo%3Fa%3D1"


def test_a_page_without_credential_redirects_to_the_login_that_sends_back():
    response = refused_answer(make_request(PAGE, "x=1"), AccessRefused(401, "Log in", "M", login=True), ENV)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Forganizations%2Forg-a%2Fdatasets%2Fmodel-1%3Fx%3D1"


def test_the_json_of_a_page_without_credential_says_what_to_send():
    refusal = AccessRefused(401, "Log in", "Need a key.", login=True)
    response = refused_answer(make_request(), refusal, ENV, json=True)
    assert response.status_code == 401
    assert response.body == (
        b'{"message":"Need a key. Send X-API-Key, or open the dataset\'s pages (a login or a link sets their cookie)."}'
    )


def test_the_json_of_a_refused_page_keeps_its_status_and_message():
    response = refused_answer(make_request(), AccessRefused(403, "T", "Not yours."), ENV, json=True)
    assert (response.status_code, response.body) == (403, b'{"message":"Not yours."}')


def _text(page, element_id, tag):
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</{tag}>', page, re.S)
    return None if found is None else html.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


@pytest.mark.parametrize("status, offers_login", [(401, True), (403, True), (404, False), (400, False)])
def test_a_refused_page_shows_its_title_message_and_status_and_offers_a_login_for_401_and_403(status, offers_login):
    response = refused_answer(make_request(PAGE, "x=1"), AccessRefused(status, "The title", "The words."), ENV)
    page = response.body.decode()
    assert response.status_code == status
    assert (_text(page, "error-title", "h1"), _text(page, "error-message", "p")) == ("The title", "The words.")
    assert f'data-status="{status}"' in page
    link = 'id="login-link" href="/login?next=%2Forganizations%2Forg-a%2Fdatasets%2Fmodel-1%3Fx%3D1"'
    assert (link in page) is offers_login


# -- the login form ---------------------------------------------------------------------------------


def endpoint(method):
    (route,) = [r for r in login_router(ENV).routes if r.path == "/login" and method in r.methods]
    return route.endpoint


def get_login(query=""):
    return endpoint("GET")(make_request("/login", query))


def post_login(form, *, headers=(("host", "127.0.0.1:8080"),), app_state=None, raw=None):
    body = raw if raw is not None else urlencode(form).encode()
    request = make_request("/login", method="POST", headers=headers, body=body, app_state=app_state)
    return asyncio.run(endpoint("POST")(request))


def form_page(response):
    page = response.body.decode()
    hidden = re.search(r'name="next" value="([^"]*)"', page)
    return SimpleNamespace(
        status=response.status_code,
        title=_text(page, "login-title", "h1"),
        error=_text(page, "login-error", "p"),
        next=None if hidden is None else html.unescape(hidden.group(1)),
        asks_dataset='id="dataset"' in page,
        cache=response.headers.get("cache-control"),
        page=page,
    )


def test_the_login_form_comes_back_to_the_page_it_was_opened_from():
    shown = form_page(get_login(urlencode({"next": PAGE + "?x=1"})))
    assert (shown.status, shown.title, shown.error, shown.next, shown.cache) == (
        200,
        "Log in",
        None,
        PAGE + "?x=1",
        "no-store",
    )
    assert not shown.asks_dataset and "(<code><bdi>org-a</bdi></code>)" in shown.page


def test_the_login_form_without_next_comes_back_home_and_asks_for_a_dataset():
    shown = form_page(get_login())
    assert (shown.status, shown.title, shown.next, shown.asks_dataset) == (200, "Log in", "/", True)


BAD_NEXT = (
    "The link to come back to (next) is not a path on this server; open the dataset's page and log in from there."
)


@pytest.mark.parametrize("query", ["next=https%3A%2F%2Fevil.example%2F", "next="])
def test_the_login_form_refuses_to_come_back_elsewhere(query):
    shown = form_page(get_login(query))
    assert (shown.status, shown.title, shown.error, shown.next, shown.cache) == (
        400,
        "Not a page of this server",
        BAD_NEXT,
        "/",
        "no-store",
    )


def login_cookie(response):
    name, morsel, _ = set_cookie_of(response)
    assert name == ORG_COOKIE
    return morsel


def test_a_login_with_a_key_of_the_org_sets_the_org_cookie_and_goes_back():
    response = post_login({"next": PAGE + "?x=1", "key": f"  {KEY_A}  "})
    assert (response.status_code, response.headers["location"]) == (303, PAGE + "?x=1")
    morsel = login_cookie(response)
    assert morsel.value == cookie_value(SIGNER, Grant("org-a", None, NOW + COOKIE_TTL_SECONDS, RING.ref(KEY_A)))
    assert (morsel["path"], morsel["max-age"]) == ("/organizations/org-a", str(COOKIE_TTL_SECONDS))


def test_a_login_from_home_opens_the_keys_org_and_the_dataset_asked_for():
    response = post_login({"key": KEY_A, "dataset": " model-2 "})
    assert response.headers["location"] == "/organizations/org-a/datasets/model-2"
    assert login_cookie(response)["path"] == "/organizations/org-a"
    home = post_login({"next": "/", "key": KEY_A, "dataset": "bad dataset"})
    assert (home.status_code, home.headers["location"]) == (303, "/")
    no_field = post_login({"key": KEY_A})
    assert (no_field.status_code, no_field.headers["location"]) == (303, "/")


def test_a_login_from_a_page_ignores_the_dataset_field():
    response = post_login({"next": PAGE, "key": KEY_A, "dataset": "model-2"})
    assert response.headers["location"] == PAGE


def test_a_key_of_no_org_logs_into_the_org_of_the_page():
    response = post_login({"next": PAGE, "key": KEY_ANY})
    assert response.headers["location"] == PAGE
    grant = Grant("org-a", None, NOW + COOKIE_TTL_SECONDS, RING.ref(KEY_ANY))
    assert login_cookie(response).value == cookie_value(SIGNER, grant)


def test_a_key_of_no_org_from_home_is_asked_for_a_dataset_page_first():
    shown = form_page(post_login({"next": "/", "key": KEY_ANY, "dataset": "model-1"}))
    assert (shown.status, shown.title, shown.next) == (400, "Log in", "/")
    assert shown.error == (
        "This key may open any organization's datasets: open the page of a dataset first, then log in from there."
    )


def test_a_stored_key_logs_in_with_a_reference_to_its_id(store):
    opened, keys = store
    response = post_login({"next": PAGE, "key": keys.a.key}, app_state=state(store=opened))
    grant = Grant("org-a", None, NOW + COOKIE_TTL_SECONDS, f"k:{keys.a.key_id}")
    assert login_cookie(response).value == cookie_value(SIGNER, grant)
    assert keys.a.key.partition(".")[2].partition(":")[0] not in set_cookie_of(response)[2]


def test_a_login_without_a_key_asks_for_one():
    shown = form_page(post_login({"next": PAGE, "key": "   "}))
    assert (shown.status, shown.title, shown.next) == (400, "Log in", PAGE)
    assert shown.error == "Paste an API key (KEYID.SECRET or KEYID.SECRET:ORG)."
    assert form_page(post_login({"next": PAGE})).error == "Paste an API key (KEYID.SECRET or KEYID.SECRET:ORG)."


def test_a_key_the_server_does_not_accept_is_refused_without_echoing_it(store):
    request_state = state(store=store[0])
    shown = form_page(post_login({"next": PAGE, "key": "Wrong00001.not-a-real-secret"}, app_state=request_state))
    assert (shown.status, shown.title, shown.next) == (401, "Key not accepted", PAGE)
    assert shown.error == (
        "This API key is not accepted by this server: check that you pasted the whole key "
        "(KEYID.SECRET, with or without :ORG), and that it was not revoked."
    )
    assert "not-a-real-secret" not in shown.page


def test_a_key_of_another_org_is_refused_on_that_orgs_page():
    response = post_login({"next": PAGE, "key": KEY_B})
    shown = form_page(response)
    assert (shown.status, shown.title, shown.error, shown.next) == (
        403,
        "Another organization's key",
        FOREIGN_MESSAGE,
        PAGE,
    )
    assert response.headers.getlist("set-cookie") == []


@pytest.mark.parametrize("next_path", ["//evil.example/", "https://evil.example/"])
def test_a_login_refuses_to_send_the_browser_elsewhere(next_path):
    shown = form_page(post_login({"next": next_path, "key": KEY_A}))
    assert (shown.status, shown.title, shown.error, shown.next) == (400, "Not a page of this server", BAD_NEXT, "/")


@pytest.mark.parametrize(
    "origin, public_url, accepted",
    [
        ("http://127.0.0.1:8080", None, True),
        ("null", None, True),
        ("null", "https://songbird.example", True),
        ("https://songbird.example", "https://songbird.example/base", True),
        ("http://evil.example", None, False),
        ("http://evil.example", "https://songbird.example", False),
    ],
)
def test_a_login_is_taken_only_from_this_servers_own_page(origin, public_url, accepted):
    headers = (("host", "127.0.0.1:8080"), ("origin", origin))
    response = post_login({"next": PAGE, "key": KEY_A}, headers=headers, app_state=state(public_url=public_url))
    if accepted:
        assert response.status_code == 303
        return
    shown = form_page(response)
    assert (shown.status, shown.title, shown.error, shown.next) == (
        403,
        "Refused",
        "A login comes from this server's own page.",
        "/",
    )
    assert response.headers.getlist("set-cookie") == []


def test_a_login_without_a_public_url_in_the_config_still_checks_the_host():
    headers = (("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080"))
    response = post_login({"next": PAGE, "key": KEY_A}, headers=headers, app_state=state(with_public_url=False))
    assert response.status_code == 303


def test_a_login_form_of_the_largest_size_is_read_and_one_byte_more_is_refused():
    form = urlencode({"next": PAGE, "key": KEY_A, "pad": ""}).encode()
    exact = form + b"x" * (MAX_LOGIN_FORM - len(form))
    assert post_login({}, raw=exact).status_code == 303
    shown = form_page(post_login({}, raw=exact + b"x"))
    assert (shown.status, shown.title, shown.next) == (413, "Log in", "/")
    assert shown.error == "The login form is too large; paste the API key only."


# -- read_cookie and safe_next at their edges ----------------------------------------------------------


def test_a_login_cookie_opens_no_dataset_whatever_its_name():
    login = cookie_value(SIGNER, Grant("org-a", None, NOW + 60, "r:x"))
    assert read_cookie(SIGNER, login, "org-a", "None", now=NOW) is None


def test_a_cookie_of_256_characters_is_read_and_one_of_257_is_not():
    def of_length(length):
        stub = cookie_value(SIGNER, Grant("org-a", None, NOW + 60, "r:"))
        grant = Grant("org-a", None, NOW + 60, "r:" + "x" * (length - len(stub)))
        value = cookie_value(SIGNER, grant)
        assert len(value) == length
        return grant, value

    grant, value = of_length(256)
    assert read_cookie(SIGNER, value, "org-a", None, now=NOW) == grant
    _, longer = of_length(257)
    assert read_cookie(SIGNER, longer, "org-a", None, now=NOW) is None


def test_a_key_reference_may_hold_dots():
    grant = Grant("org-a", None, NOW + 60, "r:a.b.c")
    assert read_cookie(SIGNER, cookie_value(SIGNER, grant), "org-a", None, now=NOW) == grant


def test_a_cookie_without_a_key_reference_is_refused_even_when_signed():
    unnamed = cookie_value(SIGNER, Grant("org-a", None, NOW + 60, ""))
    assert unnamed.startswith(f"{NOW + 60}..")
    assert read_cookie(SIGNER, unnamed, "org-a", None, now=NOW) is None


@pytest.mark.parametrize("expires_text", ["abc", "12a", "١٢٣", "-1"])
def test_a_cookie_whose_expiry_is_no_plain_number_is_refused(expires_text):
    assert read_cookie(SIGNER, f"{expires_text}.r:x.{'0' * 64}", "org-a", None, now=NOW) is None


def test_a_cookie_expiry_of_twelve_digits_is_read_and_thirteen_are_not():
    twelve = Grant("org-a", None, 999_999_999_999, "r:x")
    assert read_cookie(SIGNER, cookie_value(SIGNER, twelve), "org-a", None, now=NOW) == twelve
    thirteen = Grant("org-a", None, 1_000_000_000_000, "r:x")
    assert read_cookie(SIGNER, cookie_value(SIGNER, thirteen), "org-a", None, now=NOW) is None


def test_a_cookie_with_a_character_no_encoding_holds_is_refused_not_an_error():
    value = cookie_value(SIGNER, Grant("org-a", None, NOW + 60, "r:x"))
    assert read_cookie(SIGNER, value[:-1] + "\ud800", "org-a", None, now=NOW) is None


def test_a_cookie_opens_until_its_expiry_second_by_the_modules_clock():
    grant = Grant("org-a", None, NOW, "r:x")
    assert read_cookie(SIGNER, cookie_value(SIGNER, grant), "org-a", None) == grant
    assert read_cookie(SIGNER, cookie_value(SIGNER, Grant("org-a", None, NOW - 1, "r:x")), "org-a", None) is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ("next-page", None),
        ("///evil.example/x", None),
        ("/a b", "/a b"),
        ("/a\x7fb", None),
        ("/a\x1fb", None),
        ("/caf\u00e9", "/caf\u00e9"),
        ("/" + "a" * 2047, "/" + "a" * 2047),
        ("/" + "a" * 2048, None),
    ],
)
def test_a_login_comes_back_only_to_a_plain_path_of_at_most_2048_characters(value, expected):
    assert safe_next(value) == expected


@pytest.mark.parametrize(
    "form, status",
    [
        ({"next": PAGE}, 400),
        ({"next": PAGE, "key": "Wrong00001x"}, 401),
        ({"next": PAGE, "key": KEY_B}, 403),
        ({"next": "//x", "key": KEY_A}, 400),
        ({"next": "/", "key": KEY_ANY}, 400),
    ],
)
def test_each_refused_login_shows_its_status_on_the_form(form, status):
    shown = form_page(post_login(form))
    assert shown.status == status and f'data-status="{status}"' in shown.page
    assert shown.cache == "no-store"


def test_a_login_form_with_bytes_that_are_no_utf8_is_still_read():
    body = urlencode({"next": PAGE, "key": KEY_A}).encode() + b"&dataset=\xff"
    response = post_login({}, raw=body)
    assert (response.status_code, response.headers["location"]) == (303, PAGE)


def test_a_login_form_of_the_most_fields_is_read_and_one_more_is_refused():
    fields = [("next", PAGE), ("key", KEY_A)] + [("pad", "")] * (MAX_LOGIN_FIELDS - 2)
    assert post_login({}, raw=urlencode(fields).encode()).status_code == 303
    shown = form_page(post_login({}, raw=urlencode([*fields, ("pad", "")]).encode()))
    assert (shown.status, shown.title, shown.next) == (400, "Log in", "/")
    assert shown.error == "The login form has too many fields; paste the API key only."
    assert post_login({}, raw=urlencode([*fields, ("pad", "")]).encode()).headers.getlist("set-cookie") == []


def test_the_login_pages_stay_out_of_the_api_schema():
    routes = login_router(ENV).routes
    assert len(routes) == 2 and all(route.include_in_schema is False for route in routes)
