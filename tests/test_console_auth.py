"""Login, roles and API keys through a real web server on loopback, on SQLite and PostgreSQL.

A small FastAPI app holds the login router and routes guarded the way the console's are: an
API route that needs a collector's key, a console page and form that need an admin's
session, and a JSON route the console's own scripts call (key or session). uvicorn serves
it on a loopback port; httpx talks to it over real connections, keeping cookies as a browser
would. One more case logs in from headless Chromium at a phone's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import Depends, FastAPI, Form

from ledger.api_keys import create_api_key, revoke_api_key
from ledger.db import make_engine, session_scope
from ledger.migrate import upgrade
from ledger.models import Role, utcnow
from ledger.users import LOGIN_REFUSED, add_user, enable_totp
from portal import console_auth
from portal.auth import Actor, api_actor, console_actor, json_actor
from portal.console_auth import local_console_path
from settings import Settings
from tests.browser import WIDTHS, phone_browser

PASSWORD = "correct horse battery"
ADMIN, COLLECTOR, VIEWER = "ada@acme.example", "cole@acme.example", "vi@acme.example"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
ERROR = re.compile(r'<p class="error" role="alert" id="login-error">(.*?)</p>', re.S)


@dataclass
class Services:
    engine: sa.Engine
    settings: Settings


def guarded_app(services: Services) -> FastAPI:
    app = FastAPI()
    app.state.services = services
    app.include_router(console_auth.router)

    @app.get("/api/whoami")
    def whoami(actor: Annotated[Actor, Depends(api_actor(Role.COLLECTOR))]) -> dict:
        return {"email": actor.email, "role": actor.role}

    @app.get("/console/admin")
    def admin_page(actor: Annotated[Actor, Depends(console_actor(Role.ADMIN))]) -> dict:
        # The page would render its forms with this token; the test posts it back.
        return {"email": actor.email, "csrf_token": actor.csrf_token}

    @app.post("/console/admin")
    def admin_form(
        actor: Annotated[Actor, Depends(console_actor(Role.ADMIN))],
        note: Annotated[str, Form()],
    ) -> dict:
        return {"email": actor.email, "note": note}

    @app.post("/api/console/notes")
    def console_note(actor: Annotated[Actor, Depends(json_actor(Role.COLLECTOR))]) -> dict:
        return {"email": actor.email}

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # leave the test runner's signal handlers alone
        yield


@contextlib.asynccontextmanager
async def serving(engine: sa.Engine, **settings) -> AsyncIterator[httpx.AsyncClient]:
    """The guarded app on a loopback port, and a client for it that keeps cookies."""
    services = Services(engine, Settings(_env_file=None, database_url=None, **settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = _Server(uvicorn.Config(guarded_app(services), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the test server stopped while starting"
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=url, timeout=30.0, trust_env=False) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


def users(engine: sa.Engine) -> dict[str, str]:
    """An admin, a collector and a viewer; each one's API key."""
    keys = {}
    with session_scope(engine) as session:
        for email, role in ((ADMIN, Role.ADMIN), (COLLECTOR, Role.COLLECTOR), (VIEWER, "viewer")):
            add_user(session, email, PASSWORD, role)
            keys[email] = create_api_key(session, email)
    return keys


@pytest.fixture
async def web(engine: sa.Engine) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(engine) as client:
        yield client


async def login_form(client: httpx.AsyncClient, next_path: str = "/console/admin") -> str:
    """Open the login page; the form's CSRF token."""
    page = await client.get("/console/login", params={"next": next_path})
    assert page.status_code == 200, page.text
    return CSRF_FIELD.search(page.text)[1]


async def log_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, code: str = "", **form
) -> httpx.Response:
    next_path = form.get("next", "/console/admin")
    token = await login_form(client, next_path)
    fields = {"email": email, "password": password, "code": code, "csrf_token": token}
    return await client.post("/console/login", data={**fields, "next": next_path, **form})


def cookie_header(response: httpx.Response, name: str) -> str:
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return header


# --- the JSON API: keys and roles ----------------------------------------------------------


async def test_the_api_needs_a_valid_key_of_a_high_enough_role(web, engine) -> None:
    keys = users(engine)
    missing = await web.get("/api/whoami")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    for header in ("Basic YWRhOnB3", f"Bearer {keys[ADMIN]}x", "Bearer dw_nothing", "Bearer"):
        refused = await web.get("/api/whoami", headers={"Authorization": header})
        assert refused.status_code == 401, header
        assert refused.headers["WWW-Authenticate"] == "Bearer"

    viewer = await web.get("/api/whoami", headers={"Authorization": f"Bearer {keys[VIEWER]}"})
    assert viewer.status_code == 403
    assert viewer.json()["detail"] == (
        "this needs the collector role or above; vi@acme.example is a viewer"
    )
    for email, role in ((COLLECTOR, "collector"), (ADMIN, "admin")):
        allowed = await web.get("/api/whoami", headers={"Authorization": f"Bearer {keys[email]}"})
        assert allowed.json() == {"email": email, "role": role}

    with session_scope(engine) as session:
        revoke_api_key(session, keys[COLLECTOR])
    revoked = await web.get("/api/whoami", headers={"Authorization": f"Bearer {keys[COLLECTOR]}"})
    assert revoked.status_code == 401
    assert "not valid" in revoked.json()["detail"]


# --- console pages: login, CSRF, roles, logout ---------------------------------------------


async def test_login_brings_an_admin_back_to_the_page_and_logout_ends_it(web, engine) -> None:
    users(engine)
    away = await web.get("/console/admin", params={"tab": "users"})
    assert away.status_code == 303
    location = urlsplit(away.headers["Location"])
    assert location.path == "/console/login"
    assert parse_qs(location.query) == {"next": ["/console/admin?tab=users"]}

    page = await web.get(away.headers["Location"])
    assert 'name="next" value="/console/admin?tab=users"' in unescape(page.text)
    assert "no-store" in page.headers["Cache-Control"]
    token = CSRF_FIELD.search(page.text)[1]
    assert "HttpOnly" in cookie_header(page, "dunwise_login_csrf")

    fields = {"email": ADMIN, "csrf_token": token, "next": "/console/admin?tab=users"}
    wrong = await web.post("/console/login", data={**fields, "password": "wrong password!"})
    assert wrong.status_code == 401
    assert unescape(ERROR.search(wrong.text)[1]) == LOGIN_REFUSED
    assert "dunwise_session" not in web.cookies

    token = CSRF_FIELD.search(wrong.text)[1]  # each form shown carries a fresh token
    done = await web.post(
        "/console/login", data={**fields, "csrf_token": token, "password": PASSWORD}
    )
    assert done.status_code == 303
    assert done.headers["Location"] == "/console/admin?tab=users"
    cookie = cookie_header(done, "dunwise_session").lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back
    session_cookie = web.cookies["dunwise_session"]

    admin = (await web.get("/console/admin")).json()
    assert admin["email"] == ADMIN
    for bad in ({}, {"csrf_token": "forged"}, {"csrf_token": ""}):
        refused = await web.post("/console/admin", data={"note": "hi", **bad})
        assert refused.status_code == 403, bad
        assert "security token" in refused.json()["detail"]
    posted = await web.post(
        "/console/admin", data={"note": "hi", "csrf_token": admin["csrf_token"]}
    )
    assert posted.json() == {"email": ADMIN, "note": "hi"}
    header = await web.post(
        "/console/admin", data={"note": "hi"}, headers={"X-CSRF-Token": admin["csrf_token"]}
    )
    assert header.status_code == 200

    # Already logged in: the login page sends the browser on.
    again = await web.get("/console/login", params={"next": "/console/cases"})
    assert (again.status_code, again.headers["Location"]) == (303, "/console/cases")

    assert (await web.post("/console/logout")).status_code == 403  # no token: not logged out
    assert (await web.get("/console/admin")).status_code == 200
    out = await web.post("/console/logout", data={"csrf_token": admin["csrf_token"]})
    assert (out.status_code, out.headers["Location"]) == (303, "/console/login")
    assert "dunwise_session" not in web.cookies
    assert (await web.get("/console/admin")).status_code == 303
    # The old cookie, kept by someone, opens nothing: the session ended on the server.
    replayed = await web.get("/console/admin", cookies={"dunwise_session": session_cookie})
    assert replayed.status_code == 303


async def test_a_lower_role_is_refused_a_page_it_may_not_see(web, engine) -> None:
    users(engine)
    assert (await log_in(web, COLLECTOR)).status_code == 303
    refused = await web.get("/console/admin")
    assert refused.status_code == 403
    assert "needs the admin role" in refused.json()["detail"]


async def test_the_login_form_needs_its_own_token(web, engine) -> None:
    users(engine)
    await login_form(web)
    fields = {"email": ADMIN, "password": PASSWORD}
    for token in ("", "forged"):
        refused = await web.post("/console/login", data={**fields, "csrf_token": token})
        assert refused.status_code == 403
        assert "expired" in ERROR.search(refused.text)[1]
    # A post from elsewhere carries the field but not the cookie.
    web.cookies.clear()
    token = CSRF_FIELD.search((await web.get("/console/login")).text)[1]
    web.cookies.clear()
    elsewhere = await web.post("/console/login", data={**fields, "csrf_token": token})
    assert elsewhere.status_code == 403
    assert "dunwise_session" not in web.cookies


async def test_the_login_page_never_tells_whether_an_account_exists(web, engine) -> None:
    users(engine)
    answers = []
    for email, password in (
        ("nobody@acme.example", PASSWORD),
        (ADMIN, "wrong password!"),
        ("not an email", PASSWORD),
    ):
        refused = await log_in(web, email, password)
        answers.append((refused.status_code, unescape(ERROR.search(refused.text)[1])))
    for _ in range(4):  # five failures in all: locked
        await log_in(web, ADMIN, "wrong password!")
    locked = await log_in(web, ADMIN, PASSWORD)
    answers.append((locked.status_code, unescape(ERROR.search(locked.text)[1])))
    assert set(answers) == {(401, LOGIN_REFUSED)}


async def test_a_one_time_code_is_asked_of_those_who_set_one_up(web, engine) -> None:
    users(engine)
    with session_scope(engine) as session:
        totp = pyotp.parse_uri(enable_totp(session, ADMIN))
    page = await web.get("/console/login")
    assert 'autocomplete="one-time-code"' in page.text  # offered to everyone, needed by some
    assert (await log_in(web, ADMIN)).status_code == 401
    assert (await log_in(web, ADMIN, code="000000")).status_code == 401
    assert (await log_in(web, ADMIN, code=totp.at(utcnow()))).status_code == 303
    assert (await web.get("/console/admin")).json()["email"] == ADMIN


@pytest.mark.parametrize(
    ("candidate", "target"),
    [
        ("/console/cases/7?tab=notes", "/console/cases/7?tab=notes"),
        ("/console", "/console"),
        ("https://evil.example/console", "/console"),
        ("//evil.example/console", "/console"),
        ("/\\evil.example/console", "/console"),
        ("/console\r\nSet-Cookie: a=b", "/console"),
        ("/consoles", "/console"),
        ("/pay/token", "/console"),
        ("javascript:alert(1)", "/console"),
        ("", "/console"),
    ],
)
def test_after_login_only_a_console_path_is_followed(candidate: str, target: str) -> None:
    assert local_console_path(candidate) == target


async def test_a_login_link_to_another_site_lands_in_the_console(web, engine) -> None:
    users(engine)
    done = await log_in(web, ADMIN, next="https://evil.example/console/admin")
    assert (done.status_code, done.headers["Location"]) == (303, "/console")


async def test_the_session_cookie_is_secure_behind_https(engine) -> None:
    users(engine)
    async with serving(engine, public_base_url="https://dunwise.acme.example") as client:
        page = await client.get("/console/login")
        assert "secure" in cookie_header(page, "dunwise_login_csrf").lower()
        token = CSRF_FIELD.search(page.text)[1]
        done = await client.post(
            "/console/login",
            data={"email": ADMIN, "password": PASSWORD, "csrf_token": token},
            cookies={"dunwise_login_csrf": token},  # httpx keeps Secure cookies off plain http
        )
        assert done.status_code == 303
        assert "secure" in cookie_header(done, "dunwise_session").lower()


# --- JSON routes of the console's own scripts ----------------------------------------------


async def test_console_json_takes_a_key_or_a_session_with_its_csrf_header(web, engine) -> None:
    keys = users(engine)
    assert (await web.post("/api/console/notes")).status_code == 401
    by_key = await web.post(
        "/api/console/notes", headers={"Authorization": f"Bearer {keys[COLLECTOR]}"}
    )
    assert by_key.json() == {"email": COLLECTOR}
    viewer = await web.post(
        "/api/console/notes", headers={"Authorization": f"Bearer {keys[VIEWER]}"}
    )
    assert viewer.status_code == 403

    assert (await log_in(web, ADMIN)).status_code == 303
    csrf = (await web.get("/console/admin")).json()["csrf_token"]
    assert (await web.post("/api/console/notes")).status_code == 403  # no CSRF header
    by_session = await web.post("/api/console/notes", headers={"X-CSRF-Token": csrf})
    assert by_session.json() == {"email": ADMIN}
    # A bad key is not passed over for the session.
    bad_key = await web.post(
        "/api/console/notes",
        headers={"Authorization": "Bearer dw_bad", "X-CSRF-Token": csrf},
    )
    assert bad_key.status_code == 401


# --- in a browser at a phone's size --------------------------------------------------------


async def test_an_admin_logs_in_on_a_phone(tmp_path, chromium) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        users(engine)
        async with serving(engine) as client, phone_browser(chromium) as phone:
            page = phone.page
            await page.goto(f"{client.base_url}/console/admin")
            assert urlsplit(page.url).path == "/console/login"
            assert await page.evaluate(WIDTHS) == [390, 390]
            await page.get_by_label("Email").fill(ADMIN)
            await page.get_by_label("Password").fill("wrong password!")
            await page.get_by_role("button", name="Sign in").click()
            assert await page.get_by_role("alert").inner_text() == LOGIN_REFUSED
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/console/admin")
            assert ADMIN in await page.locator("body").inner_text()
    finally:
        engine.dispose()
