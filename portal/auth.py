"""Who is calling, and may they: an API key's user (`Authorization: Bearer <key>`) or a console
session's (the `dunwise_session` cookie), as an `Actor` with a role.

Invariants:

- Roles rank as `Role` declares them, viewer < collector < admin: each may do all that the
  ones before it may.
- The JSON API: no valid key is 401 with `WWW-Authenticate: Bearer`; a role below the one an
  action needs is 403, naming the role needed. A Bearer header is never passed over for the
  cookie: a bad key is 401 even with a live session.
- Console pages: not logged in redirects (303) to the login page, which comes back after. A
  request that changes something (any method but GET, HEAD, OPTIONS) authenticated by the
  cookie must carry the session's CSRF token, in the `csrf_token` form field or the
  `X-CSRF-Token` header, or it is 403. An API key needs none: a browser never sends it by itself.
- The session cookie is HttpOnly, SameSite=Lax, Path=/, and Secure whenever the app's public
  address is https.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ledger.api_keys import user_for_api_key
from ledger.console_sessions import SESSION_LIFETIME, session_user
from ledger.db import session_scope
from ledger.models import AppUser, Role, utcnow

SESSION_COOKIE = "dunwise_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONSOLE_HOME = "/console"
LOGIN_PATH = "/console/login"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="API key",
    description="An API key, from `dunwise apikey create EMAIL`: `Authorization: Bearer dw_...`",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


@dataclass(frozen=True)
class Actor:
    user_id: int
    email: str
    role: Role
    csrf_token: str | None = None  # of the console session; None when calling with an API key

    def can(self, role: Role) -> bool:
        return self.role.includes(role)

    @property
    def audit_name(self) -> str:
        """How audit events and notes name this actor."""
        return self.email


def api_actor(minimum: Role) -> Callable[..., Actor]:
    """A dependency: the API key's user, if their role is `minimum` or above."""

    def dependency(request: Request, credentials: Credentials) -> Actor:
        if credentials is None:
            raise _unauthorized("this API needs an API key: send `Authorization: Bearer <key>`")
        return _at_least(_key_actor(request, credentials.credentials), minimum)

    return dependency


def console_actor(minimum: Role) -> Callable[..., Awaitable[Actor]]:
    """A dependency for console pages and forms: the logged-in user, if their role is `minimum`
    or above; not logged in, a redirect to the login page; a change without the CSRF token, 403.
    """

    async def dependency(request: Request) -> Actor:
        actor = await run_in_threadpool(session_actor, request)
        if actor is None:
            # Back to this page after logging in; a form's target would not take a GET.
            back = CONSOLE_HOME
            if request.method in SAFE_METHODS:
                query = request.url.query
                back = f"{request.url.path}?{query}" if query else request.url.path
            raise HTTPException(303, "log in first", headers={"Location": login_url(back)})
        if request.method not in SAFE_METHODS:
            token = request.headers.get(CSRF_HEADER)
            if token is None and _is_form(request):
                token = (await request.form()).get(CSRF_FIELD)
            _check_csrf(actor, token)
        return _at_least(actor, minimum)

    return dependency


def json_actor(minimum: Role) -> Callable[..., Actor]:
    """A dependency for JSON routes the console's own pages call: `actor_from_request`, 401
    when there is neither key nor session, 403 below `minimum`."""

    def dependency(request: Request, _credentials: Credentials) -> Actor:
        actor = actor_from_request(request)
        if actor is None:
            raise _unauthorized("log in, or send `Authorization: Bearer <api key>`")
        return _at_least(actor, minimum)

    return dependency


def actor_from_request(request: Request) -> Actor | None:
    """The caller by API key first, then by session cookie; None when there is neither.

    A Bearer header with a bad key is 401; a change authenticated by the cookie needs the
    session's CSRF token in the `X-CSRF-Token` header (403 without it). Reads the ledger:
    call it from a thread (a plain `def` route or dependency), not from the event loop.
    """
    authorization = request.headers.get("Authorization", "")
    scheme, _, key = authorization.partition(" ")
    if authorization:
        if scheme.lower() != "bearer":
            raise _unauthorized("the Authorization header must be `Bearer <api key>`")
        return _key_actor(request, key.strip())
    actor = session_actor(request)
    if actor is not None and request.method not in SAFE_METHODS:
        _check_csrf(actor, request.headers.get(CSRF_HEADER))
    return actor


def session_actor(request: Request) -> Actor | None:
    """The console session's user, or None (no cookie, unknown, expired, user disabled)."""
    cookie_value = request.cookies.get(SESSION_COOKIE)
    if not cookie_value:
        return None
    with session_scope(request.app.state.services.engine) as session:
        found = session_user(session, cookie_value, utcnow())
        return None if found is None else _actor(found[0], found[1])


def login_url(back_to: str) -> str:
    return f"{LOGIN_PATH}?next={quote(back_to, safe='/')}"


def secure_cookies(request: Request) -> bool:
    """Cookies marked Secure when the public address is https (not on a plain-http dev box,
    where the browser would then never send them back)."""
    return request.app.state.services.settings.public_base_url.lower().startswith("https:")


def set_session_cookie(response: Response, request: Request, cookie_value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        cookie_value,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
        secure=secure_cookies(request),
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=secure_cookies(request), httponly=True, samesite="lax"
    )


def _key_actor(request: Request, key: str) -> Actor:
    with session_scope(request.app.state.services.engine) as session:
        user = user_for_api_key(session, key)
        if user is None:
            raise _unauthorized("the API key is not valid: unknown, revoked, or its user disabled")
        return _actor(user)


def _actor(user: AppUser, csrf_token: str | None = None) -> Actor:
    return Actor(user_id=user.id, email=user.email, role=Role(user.role), csrf_token=csrf_token)


def _at_least(actor: Actor, minimum: Role) -> Actor:
    if not actor.can(minimum):
        raise HTTPException(
            403, f"this needs the {minimum} role or above; {actor.email} is a {actor.role}"
        )
    return actor


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _is_form(request: Request) -> bool:
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return content_type in ("application/x-www-form-urlencoded", "multipart/form-data")


def _check_csrf(actor: Actor, token: object) -> None:
    expected = (actor.csrf_token or "").encode()
    if (
        not expected
        or not isinstance(token, str)
        or not hmac.compare_digest(token.encode(), expected)
    ):
        raise HTTPException(
            403, "the form's security token is missing or out of date: reload the page and retry"
        )
