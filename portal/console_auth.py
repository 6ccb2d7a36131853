"""Logging in to the console and out of it.

Invariants:

- The login form is protected from cross-site posting by a double-submit token: a random
  value in a cookie scoped to the login path and the same value in the form; a post whose
  two differ is 403 and logs nobody in.
- Every refusal shows the one message of `ledger.users.LoginRefused`; the page never tells
  whether an account exists. The one-time-code field is always offered, for the same reason.
- After login the browser goes to `next` only when it is a path of this site's console;
  anything else (another site, `//host`, a backslash trick) goes to the console's home.
- Logging in ends the browser's earlier session; logging out ends this one (a POST carrying
  the session's CSRF token, so another site cannot log a collector out).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ledger.console_sessions import close_session, open_session
from ledger.db import session_scope
from ledger.models import Role, utcnow
from ledger.users import LoginRefused, authenticate
from portal.auth import (
    CONSOLE_HOME,
    LOGIN_PATH,
    SESSION_COOKIE,
    Actor,
    clear_session_cookie,
    console_actor,
    secure_cookies,
    session_actor,
    set_session_cookie,
)
from portal.pages import render

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "dunwise_login_csrf"
FORM_EXPIRED = "This sign-in form has expired. Please enter your details again."


def local_console_path(candidate: str | None) -> str:
    """`candidate` when it is a path of this site's console, else the console's home."""
    if not candidate or any(ord(c) < 0x20 or c in "\\\x7f" for c in candidate):
        return CONSOLE_HOME
    parts = urlsplit(candidate)
    if parts.scheme or parts.netloc:
        return CONSOLE_HOME
    if parts.path != CONSOLE_HOME and not parts.path.startswith(CONSOLE_HOME + "/"):
        return CONSOLE_HOME
    return candidate


@router.get(LOGIN_PATH)
async def login_page(
    request: Request, next_path: Annotated[str, Query(alias="next")] = CONSOLE_HOME
) -> Response:
    target = local_console_path(next_path)
    if await run_in_threadpool(session_actor, request) is not None:
        return RedirectResponse(target, status_code=303)
    return _login_view(request, target)


@router.post(LOGIN_PATH)
async def log_in(
    request: Request,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    code: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next_path: Annotated[str, Form(alias="next")] = CONSOLE_HOME,
) -> Response:
    target = local_console_path(next_path)
    email = email.strip()[:320]
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        return _login_view(request, target, email=email, error=FORM_EXPIRED, status_code=403)
    try:
        cookie_value = await run_in_threadpool(_log_in, request, email, password, code)
    except LoginRefused as refused:
        return _login_view(request, target, email=email, error=str(refused), status_code=401)
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, cookie_value)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=LOGIN_PATH)
    return response


@router.post("/console/logout")
async def log_out(
    request: Request, _actor: Annotated[Actor, Depends(console_actor(Role.VIEWER))]
) -> Response:
    await run_in_threadpool(_end_session, request)
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    clear_session_cookie(response, request)
    return response


def _log_in(request: Request, email: str, password: str, code: str) -> str:
    """The new session's cookie value; `LoginRefused` for anything wrong."""
    now = utcnow()
    with session_scope(request.app.state.services.engine) as session:
        user = authenticate(session, email, password, code.strip() or None, now)
        close_session(session, request.cookies.get(SESSION_COOKIE))
        cookie_value, _ = open_session(session, user, now)
    return cookie_value


def _end_session(request: Request) -> None:
    with session_scope(request.app.state.services.engine) as session:
        close_session(session, request.cookies.get(SESSION_COOKIE))


def _login_view(
    request: Request,
    target: str,
    *,
    email: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    # A fresh double-submit token with every form shown.
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {"next": target, "email": email, "error": error, "csrf_token": token},
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        path=LOGIN_PATH,
        secure=secure_cookies(request),
        httponly=True,
        samesite="lax",
    )
    response.headers["Cache-Control"] = "no-store"
    return response
