"""Who may open the pages of an organization's dataset (``/organizations/{org}/datasets/{dataset}/…``).

A dataset's pages need one of:

- the **token of a link** (``?token=<expires>.<signature>``, see ``datasets.link_token``): observatory
  links and notifications carry one. The first page opened with a valid token sets the cookie
  ``songbird_dataset`` for that dataset's pages, so the pages it links to open without the token;
- the **login cookie** ``songbird_org``: ``/login`` takes an API key of the org (``KEYID.SECRET[:ORG]``)
  and sets it for every dataset page of that org. The cookie holds the org, an expiry, a reference
  to the key that is no secret (a key revoked since stops opening pages) and a signature; never the key;
- an ``X-API-Key`` header of the org (scripts reading the pages' JSON).

Both cookies are signed with the server's secret, expire (:data:`COOKIE_TTL_SECONDS`, never after
the link's token), and are ``HttpOnly``, ``SameSite=Strict`` and scoped to the pages' path (``Secure``
when the page was asked over https). Without a credential a page redirects to the login page; the
pages' JSON answers 401. A credential of another org reaches nothing of this one (403). Keys and
tokens are compared in constant time and never logged, echoed or shown.
"""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment
from starlette.concurrency import run_in_threadpool

from whylogs_songbird.server.api_keys import ORG_PATTERN
from whylogs_songbird.server.auth import key_owner, key_ref_owner
from whylogs_songbird.server.common import error_response
from whylogs_songbird.server.datasets import LINK_TTL_SECONDS, check_link_token, org_pages_path, pages_path
from whylogs_songbird.server.signing import UrlSigner

#: How long a cookie opens pages after a login or a link's first use (never after the link's token expires).
COOKIE_TTL_SECONDS = 12 * 3600
DATASET_COOKIE = "songbird_dataset"
ORG_COOKIE = "songbird_org"
LOGIN_PATH = "/login"
#: The longest login form the server reads (a key is well under 1 KB).
MAX_LOGIN_FORM = 8192
#: The most fields a login form may have (it has three: next, key, dataset).
MAX_LOGIN_FIELDS = 8
_ORG_IN_PATH = re.compile(r"/organizations/([^/?#]+)(?:[/?#]|$)")
#: What a cookie made from a link's token names instead of a key.
_NO_KEY = "-"


@dataclass(frozen=True)
class Grant:
    """What a cookie opens: every dataset page of ``org_id`` (a login), or those of one dataset (a link)."""

    org_id: str
    dataset_id: str | None
    expires: int
    key_ref: str = _NO_KEY


class AccessRefused(Exception):
    """No credential opens the page: ``login`` True means "log in" (a redirect for a page, 401 for
    JSON); else a page that says ``message`` with ``status`` (401 or 403)."""

    def __init__(self, status: int, title: str, message: str, *, login: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.login = login


def _scope(org_id: str, dataset_id: str | None) -> str:
    return f"page-org:{org_id}" if dataset_id is None else f"page-dataset:{org_id}/{dataset_id}"


def cookie_value(signer: UrlSigner, grant: Grant) -> str:
    """``<expires>.<key ref>.<signature>``: the org and dataset are signed in, not written."""
    signature = signer.signature(f"{_scope(grant.org_id, grant.dataset_id)}|{grant.key_ref}", grant.expires)
    return f"{grant.expires}.{grant.key_ref}.{signature}"


def read_cookie(
    signer: UrlSigner, value: str | None, org_id: str, dataset_id: str | None, now: float | None = None
) -> Grant | None:
    """The grant of a cookie made by :func:`cookie_value` for this org (and dataset), if it is
    intact and not expired; else None."""
    if not value or len(value) > 256:
        return None
    expires_text, _, rest = value.partition(".")
    key_ref, _, signature = rest.rpartition(".")
    if not (expires_text.isascii() and expires_text.isdigit() and len(expires_text) <= 12) or not key_ref:
        return None
    grant = Grant(org_id, dataset_id, int(expires_text), key_ref)
    expected = cookie_value(signer, grant).rpartition(".")[2]
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return None
    return grant if (time.time() if now is None else now) <= grant.expires else None


def set_grant_cookie(response: Response, request: Request, grant: Grant) -> None:
    """Set the cookie of ``grant`` on ``response``: HttpOnly, SameSite=Strict, scoped to the pages it opens."""
    signer: UrlSigner = request.app.state.signer
    if grant.dataset_id is None:
        name, path = ORG_COOKIE, org_pages_path(grant.org_id)
    else:
        name, path = DATASET_COOKIE, pages_path(grant.org_id, grant.dataset_id)
    response.set_cookie(
        name,
        cookie_value(signer, grant),
        max_age=max(0, grant.expires - int(time.time())),
        path=path,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )


def _https(request: Request) -> bool:
    public_url = getattr(request.app.state.config, "public_url", None) or ""
    return request.url.scheme == "https" or public_url.startswith("https://")


@dataclass(frozen=True)
class Access:
    """How a request opened a dataset's pages; ``new_cookie``: the cookie to set (a link's first use)."""

    org_id: str
    dataset_id: str
    new_cookie: Grant | None = None

    def remember(self, response: Response, request: Request) -> Response:
        """``response`` with the cookie to set, if any; never kept by a cache (it shows an org's data)."""
        response.headers["Cache-Control"] = "private, no-store"
        if self.new_cookie is not None:
            set_grant_cookie(response, request, self.new_cookie)
        return response


def dataset_access(request: Request, org_id: str, dataset_id: str) -> Access:
    """How the request may open the pages of dataset ``dataset_id`` of ``org_id``: a link's token, a
    cookie, or an ``X-API-Key`` (see the module docstring); else :class:`AccessRefused`."""
    if ORG_PATTERN.fullmatch(org_id) is None or ORG_PATTERN.fullmatch(dataset_id) is None:
        raise AccessRefused(404, "Dataset not found", "This is no dataset page: check the org and dataset ids.")
    signer: UrlSigner = request.app.state.signer
    token = request.query_params.get("token")
    if token:
        expires = check_link_token(signer, org_id, dataset_id, token[:256])
        if expires is not None:
            grant = Grant(org_id, dataset_id, min(expires, int(time.time()) + COOKIE_TTL_SECONDS))
            return Access(org_id, dataset_id, new_cookie=grant)
    if read_cookie(signer, request.cookies.get(DATASET_COOKIE), org_id, dataset_id) is not None:
        return Access(org_id, dataset_id)
    login = read_cookie(signer, request.cookies.get(ORG_COOKIE), org_id, None)
    if login is not None:
        owner = key_ref_owner(request, login.key_ref)
        if owner is not None and owner.org_id in (None, org_id):
            return Access(org_id, dataset_id)
    key = request.headers.get("X-API-Key")
    if key:
        found = key_owner(request, key)
        if found is None:
            raise AccessRefused(401, "API key not accepted", "The API key in X-API-Key is not accepted by this server.")
        if found[0].org_id not in (None, org_id):
            raise AccessRefused(403, "Another organization's key", _foreign(org_id))
        return Access(org_id, dataset_id)
    if token:
        raise AccessRefused(
            401,
            "Link expired",
            "This link has expired or was changed (a dataset link opens its pages for "
            f"{LINK_TTL_SECONDS // 86400} days). Log in with an API key of organization {org_id}, or ask for a "
            "new link (whylogs' observatory link).",
        )
    raise AccessRefused(
        401,
        "Log in",
        f"The pages of organization {org_id}'s datasets need an API key of the organization, or a link "
        "that carries a token.",
        login=True,
    )


def _foreign(org_id: str) -> str:
    return (
        f"This API key belongs to another organization than {org_id}: log in with a key of {org_id}. "
        "Nothing of this organization was shown."
    )


def login_url(next_path: str) -> str:
    return f"{LOGIN_PATH}?{urlencode({'next': next_path})}"


def requested_path(request: Request) -> str:
    """The path and query of ``request`` (where a login sends the browser back to)."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def safe_next(value: str | None) -> str | None:
    """``value`` when it is a path on this server (``/…``, no scheme, host, backslash or control
    character), else None: a login never sends the browser elsewhere."""
    if not value or len(value) > 2048 or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or unquote(parts.path).startswith("//"):
        return None
    return value


def org_of_path(path: str) -> str | None:
    """The org a path of its dataset pages names (``/organizations/{org}/…``), if any."""
    match = _ORG_IN_PATH.match(path)
    if match is None:
        return None
    org = unquote(match.group(1))
    return org if ORG_PATTERN.fullmatch(org) else None


def refused_answer(request: Request, refused: AccessRefused, env: Environment, *, json: bool = False) -> Response:
    """What a page (or its JSON, ``json``) answers when :func:`dataset_access` refused it."""
    if json:
        message = refused.message
        if refused.login:
            message += " Send X-API-Key, or open the dataset's pages (a login or a link sets their cookie)."
        return error_response(refused.status, message)
    if refused.login:
        return RedirectResponse(login_url(requested_path(request)), status_code=303)
    html = env.get_template("error.html").render(
        title=refused.title,
        message=refused.message,
        status_code=refused.status,
        login_url=login_url(requested_path(request)) if refused.status in (401, 403) else None,
    )
    return HTMLResponse(html, status_code=refused.status)


def login_router(env: Environment) -> APIRouter:
    """``GET /login`` (the form) and ``POST /login`` (a key in, a cookie out)."""
    router = APIRouter(include_in_schema=False)

    def page(status: int = 200, *, next_path: str, error: str | None = None, title: str = "Log in") -> HTMLResponse:
        html = env.get_template("login.html").render(
            next_path=next_path, org=org_of_path(next_path), error=error, title=title, status_code=status
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def bad_next() -> HTMLResponse:
        return page(
            400,
            next_path="/",
            title="Not a page of this server",
            error="The link to come back to (next) is not a path on this server; open the dataset's page "
            "and log in from there.",
        )

    @router.get(LOGIN_PATH, response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        raw = request.query_params.get("next")
        next_path = safe_next(raw) if raw is not None else "/"
        return bad_next() if next_path is None else page(next_path=next_path)

    @router.post(LOGIN_PATH, response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        origin = request.headers.get("origin")
        public_url = getattr(request.app.state.config, "public_url", None) or ""
        own = {request.headers.get("host"), urlsplit(public_url).netloc}
        if origin and origin != "null" and urlsplit(origin).netloc not in own:  # another site's form
            return page(403, next_path="/", title="Refused", error="A login comes from this server's own page.")
        body = await request.body()
        if len(body) > MAX_LOGIN_FORM:
            return page(413, next_path="/", error="The login form is too large; paste the API key only.")
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_LOGIN_FIELDS)
        except ValueError:  # more fields than the form has: no login form of this server
            return page(400, next_path="/", error="The login form has too many fields; paste the API key only.")
        raw_next = (form.get("next") or ["/"])[0]
        next_path = safe_next(raw_next)
        if next_path is None:
            return bad_next()
        key = (form.get("key") or [""])[0].strip()
        if not key:
            return page(400, next_path=next_path, error="Paste an API key (KEYID.SECRET or KEYID.SECRET:ORG).")
        found = await run_in_threadpool(key_owner, request, key)
        if found is None:
            return page(401, next_path=next_path, title="Key not accepted", error=_NOT_ACCEPTED)
        owner, ref = found
        wanted = org_of_path(next_path)
        if wanted is not None and owner.org_id not in (None, wanted):
            return page(403, next_path=next_path, title="Another organization's key", error=_foreign(wanted))
        org_id = wanted or owner.org_id
        if org_id is None:
            return page(
                400,
                next_path=next_path,
                error="This key may open any organization's datasets: open the page of a dataset first, "
                "then log in from there.",
            )
        dataset_id = (form.get("dataset") or [""])[0].strip()
        if wanted is None and ORG_PATTERN.fullmatch(dataset_id):
            next_path = pages_path(org_id, dataset_id)  # the form's dataset field, when no page sent it here
        response = RedirectResponse(next_path, status_code=303)
        set_grant_cookie(response, request, Grant(org_id, None, int(time.time()) + COOKIE_TTL_SECONDS, ref))
        return response

    return router


_NOT_ACCEPTED = (
    "This API key is not accepted by this server: check that you pasted the whole key "
    "(KEYID.SECRET, with or without :ORG), and that it was not revoked."
)


__all__ = [
    "COOKIE_TTL_SECONDS",
    "DATASET_COOKIE",
    "LOGIN_PATH",
    "ORG_COOKIE",
    "Access",
    "AccessRefused",
    "Grant",
    "cookie_value",
    "dataset_access",
    "login_router",
    "read_cookie",
    "refused_answer",
    "safe_next",
]
