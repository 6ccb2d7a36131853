"""The console's forms over HTTP: login, CSRF on every action, roles on the case page."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from activities.models import CollectorTaskRequest
from ledger import tasks
from ledger.db import session_scope
from ledger.lifecycle import open_collector_task
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


async def test_credit_message_and_void_forms(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        await p.harness.start("A-2", due_on=DUE, amount_minor=20_000, customer_id="cust-1")
        with session_scope(p.harness.engine) as session:
            add_user(session, "cole@example.com", PASSWORD, Role.COLLECTOR)
            add_user(session, "ada@example.com", PASSWORD, Role.ADMIN)
            add_user(session, "vera@example.com", PASSWORD, Role.VIEWER)
        http = p.http

        csrf = await log_in(http, "cole@example.com")
        case = await http.get("/console/customers/cust-1")
        assert "Issue credit note" in case.text and "Send message now" in case.text
        assert '<option value="overdue_friendly">Overdue friendly</option>' in case.text
        assert 'value="receipt"' not in case.text
        assert "Void the invoice" not in case.text  # admins only
        form = {"customer_id": "cust-1", "csrf_token": csrf}

        bad = {**form, "amount": "25.001", "reason": "damaged", "request_id": "c-1"}
        refused = await http.post("/console/invoices/A-1/credit", data=bad)
        assert refused.status_code == 422 and "amount: 25.001 has too many decimals" in refused.text
        credit = {**bad, "amount": "25.00"}
        credited = await http.post("/console/invoices/A-1/credit", data=credit)
        assert credited.status_code == 303, credited.text
        assert p.harness.invoice("A-1").balance_minor == 7_500
        case = await http.get(credited.headers["location"])
        assert "$75.00" in case.text and "damaged" in case.text

        message = {**form, "template": "overdue_friendly", "request_id": "m-1"}
        refused = await http.post("/console/invoices/A-1/message", data=message)
        assert refused.status_code == 422 and "tick email, SMS or both" in refused.text
        unknown = {**message, "template": "receipt", "channels": "email"}
        refused = await http.post("/console/invoices/A-1/message", data=unknown)
        assert (
            refused.status_code == 422 and "no message template &#39;receipt&#39;" in refused.text
        )
        sent = await http.post(
            "/console/invoices/A-1/message", data={**message, "channels": ["email", "sms"]}
        )
        assert sent.status_code == 303, sent.text
        case = await http.get(sent.headers["location"])
        assert "message (email)" in case.text and "message (sms)" in case.text
        void = {**form, "reason": "issued twice", "request_id": "v-1"}
        refused = await http.post("/console/invoices/A-2/void", data=void)
        assert refused.status_code == 403 and "void needs the admin role" in refused.text

        http.cookies.clear()
        csrf = await log_in(http, "ada@example.com")
        case = await http.get("/console/customers/cust-1")
        assert "Void the invoice" in case.text
        voided = await http.post("/console/invoices/A-2/void", data={**void, "csrf_token": csrf})
        assert voided.status_code == 303, voided.text
        assert p.harness.invoice("A-2").status == "void"

        http.cookies.clear()
        csrf = await log_in(http, "vera@example.com")
        sneaky = {**credit, "csrf_token": csrf, "request_id": "c-2"}
        refused = await http.post("/console/invoices/A-1/credit", data=sneaky)
        assert refused.status_code == 403 and "needs the collector role" in refused.text
        assert p.harness.invoice("A-1").balance_minor == 7_500


def listed(page) -> list[str]:
    """The invoice numbers on a worklist page, sorted."""
    return sorted(re.findall(r'<td data-label="Invoice">([^<]+)</td>', page.text))


async def test_the_worklist_filters_by_days_late(tmp_path) -> None:
    async with portal(tmp_path) as p:
        for number, due in (("L-1", date(2026, 2, 20)), ("L-2", date(2026, 1, 1))):
            await p.harness.start(number, due_on=due, amount_minor=10_000, customer_id="cust-l")
        with session_scope(p.harness.engine) as session:
            add_user(session, "cole@example.com", PASSWORD, Role.COLLECTOR)
            for number in ("L-1", "L-2"):
                open_collector_task(
                    session,
                    CollectorTaskRequest(
                        invoice_number=number,
                        queue="collections",
                        priority="normal",
                        due_at=datetime.now(UTC) + timedelta(days=1),
                        idempotency_key=f"{number}:test",
                    ),
                )
        await log_in(p.http, "cole@example.com")
        # Days late count to the real today: L-2 has been due longer than L-1.
        late_days = (datetime.now(UTC).date() - date(2026, 1, 1)).days
        both = await p.http.get("/console")
        assert listed(both) == ["L-1", "L-2"]
        oldest = await p.http.get(f"/console?min_days_past_due={late_days}")
        assert oldest.status_code == 200 and listed(oldest) == ["L-2"]
        newer = await p.http.get(f"/console?max_days_past_due={late_days - 1}")
        assert listed(newer) == ["L-1"]
        blank = await p.http.get("/console?min_days_past_due=&max_days_past_due=")
        assert blank.status_code == 200 and listed(blank) == ["L-1", "L-2"]
        refused = await p.http.get("/console?min_days_past_due=soon")
        assert refused.status_code == 422
        assert (
            "min_days_past_due must be a whole number of days, got &#39;soon&#39;" in refused.text
        )
        upside_down = await p.http.get("/console?min_days_past_due=10&max_days_past_due=5")
        assert upside_down.status_code == 422 and "is more than" in upside_down.text


async def test_a_collector_reassigns_a_task_from_the_worklist(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("R-1", due_on=DUE, amount_minor=10_000, customer_id="cust-r")
        with session_scope(p.harness.engine) as session:
            for email in ("cole@example.com", "dana@example.com"):
                add_user(session, email, PASSWORD, Role.COLLECTOR)
            add_user(session, "vera@example.com", PASSWORD, Role.VIEWER)
            task_id = open_collector_task(
                session,
                CollectorTaskRequest(
                    invoice_number="R-1",
                    queue="collections",
                    priority="high",
                    due_at=datetime.now(UTC) + timedelta(days=1),
                    idempotency_key="R-1:test",
                ),
            )
        csrf = await log_in(p.http, "cole@example.com")
        page = await p.http.get("/console")
        # Only those who can work tasks are offered; a viewer is not.
        assert re.findall(r'<option value="([^"]+)"', page.text) == [
            "cole@example.com",
            "dana@example.com",
        ]
        given = await p.http.post(
            f"/console/tasks/{task_id}/reassign",
            data={"to": "dana@example.com", "csrf_token": csrf},
        )
        assert given.status_code == 303
        with session_scope(p.harness.engine) as session:
            assert tasks.get_task(session, task_id).assignee == "dana@example.com"
        to_viewer = await p.http.post(
            f"/console/tasks/{task_id}/reassign",
            data={"to": "vera@example.com", "csrf_token": csrf},
        )
        assert to_viewer.status_code == 409 and "cannot work tasks" in to_viewer.text
        nobody = await p.http.post(
            f"/console/tasks/{task_id}/reassign", data={"to": "x@example.com", "csrf_token": csrf}
        )
        assert nobody.status_code == 409 and "no user" in nobody.text
        unknown = await p.http.post(
            f"/console/tasks/{task_id}/frobnicate", data={"csrf_token": csrf}
        )
        assert unknown.status_code == 404
        with session_scope(p.harness.engine) as session:
            assert tasks.get_task(session, task_id).assignee == "dana@example.com"
