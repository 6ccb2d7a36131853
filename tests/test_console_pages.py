"""The console's forms over HTTP: login, CSRF on every action, roles on the case page."""

from __future__ import annotations

import re

from ledger.db import session_scope
from ledger.models import Role
from ledger.users import add_user
from tests.portal_harness import DUE, portal

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def log_in(http, email: str) -> str:
    """Log in through the form; the session's CSRF token as the console pages carry it."""
    form = await http.get("/console/login")
    token = CSRF.search(form.text).group(1)
    answer = await http.post(
        "/console/login",
        data={"email": email, "password": PASSWORD, "csrf_token": token, "next": "/console"},
    )
    assert answer.status_code == 303, answer.text
    worklist = await http.get("/console")
    assert worklist.status_code == 200
    return CSRF.search(worklist.text).group(1)


async def test_actions_need_the_session_csrf_token_and_the_role(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        with session_scope(p.harness.engine) as session:
            add_user(session, "cole@example.com", PASSWORD, Role.COLLECTOR)
            add_user(session, "vera@example.com", PASSWORD, Role.VIEWER)
        http = p.http
        assert (await http.get("/console")).status_code == 303  # to the login page

        csrf = await log_in(http, "cole@example.com")
        note = {"customer_id": "cust-1", "text": "left a voicemail", "request_id": "n-1"}
        forged = await http.post("/console/invoices/A-1/notes", data=note)
        assert forged.status_code == 403 and "This cannot be done here" in forged.text
        wrong = await http.post("/console/invoices/A-1/notes", data={**note, "csrf_token": "x"})
        assert wrong.status_code == 403
        posted = await http.post("/console/invoices/A-1/notes", data={**note, "csrf_token": csrf})
        assert posted.status_code == 303
        case = await http.get(posted.headers["location"])
        assert "left a voicemail" in case.text and "Act on A-1" in case.text
        assert "Write off the balance" not in case.text  # admins only

        bad = {"customer_id": "cust-1", "pay_by": "soon", "request_id": "p-1", "csrf_token": csrf}
        refused = await http.post("/console/invoices/A-1/promise", data=bad)
        assert refused.status_code == 422 and "pay_by" in refused.text

        lines = {"customer_id": "cust-1", "request_id": "pl-1", "csrf_token": csrf}
        refused = await http.post(
            "/console/invoices/A-1/plan", data={**lines, "installments": "2099-01-01"}
        )
        assert refused.status_code == 422 and "write a date and an amount" in refused.text
        offered = await http.post(
            "/console/invoices/A-1/plan",
            data={
                **lines,
                "request_id": "pl-2",
                "installments": "2099-01-01 40.00\n2099-02-01 60.00",
            },
        )
        assert offered.status_code == 303
        case = await http.get(offered.headers["location"])
        assert "Payment plan: 0 of 2 installments kept; next $40.00 due 2099-01-01" in case.text

        http.cookies.clear()
        csrf = await log_in(http, "vera@example.com")
        case = await http.get("/console/customers/cust-1")
        assert "Act on A-1" not in case.text  # a viewer sees, but gets no forms
        sneaky = {**note, "request_id": "n-2", "csrf_token": csrf}
        refused = await http.post("/console/invoices/A-1/notes", data=sneaky)
        assert refused.status_code == 403 and "needs the collector role" in refused.text
