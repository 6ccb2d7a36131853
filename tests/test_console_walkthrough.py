"""A collector's weeks with one escalated invoice, through the console's pages on the
time-skipping server: the escalation appears on the worklist, a promise is broken and reopens
the task, a payment plan misses an installment and reopens it again, and every step is in the
audit CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import date

from sqlmodel import select

from ledger.db import session_scope
from ledger.models import CollectorTask, Role
from ledger.users import add_user
from temporal_client import time_skipping_environment
from tests.invoice_harness import local
from tests.portal_harness import portal
from tests.test_console_pages import PASSWORD, log_in
from workflows.invoice import InvoiceWorkflow
from workflows.models import PaymentReceived, Stage

DUE = date(2026, 3, 16)  # the standard policy escalates thirty days later
TASK_ROW = re.compile(r'action="/console/tasks/(\d+)/claim"')


def open_tasks(p) -> list[tuple[str, str, str | None]]:
    with session_scope(p.harness.engine) as session:
        tasks = session.exec(
            select(CollectorTask).where(CollectorTask.status == "open").order_by(CollectorTask.id)
        ).all()
        return [(t.queue, t.priority, t.idempotency_key) for t in tasks]


async def test_a_collector_works_an_escalated_invoice_to_a_promise_and_a_plan(tmp_path) -> None:
    async with portal(tmp_path, environment=time_skipping_environment) as p:
        h, http = p.harness, p.http
        handle = await h.start("W-1", due_on=DUE, amount_minor=90_000, customer_id="cust-w")
        with session_scope(h.engine) as session:
            add_user(session, "cole@example.com", PASSWORD, Role.COLLECTOR)

        await h.advance_to(local(date(2026, 4, 15), 12))
        assert (await h.state(handle)).stage == Stage.ESCALATED
        csrf = await log_in(http, "cole@example.com")
        worklist = await http.get("/console")
        assert "W-1" in worklist.text
        task_id = TASK_ROW.search(worklist.text).group(1)
        claimed = await http.post(f"/console/tasks/{task_id}/claim", data={"csrf_token": csrf})
        assert claimed.status_code == 303

        form = {"customer_id": "cust-w", "csrf_token": csrf}
        promised = await http.post(
            "/console/invoices/W-1/promise",
            data={**form, "pay_by": "2026-04-20", "amount": "300.00", "request_id": "p-1"},
        )
        assert promised.status_code == 303, promised.text
        assert (await h.state(handle)).stage == Stage.PAUSED
        assert open_tasks(p) == []  # the promise is the collector's outcome

        # Nothing paid by the promised day and its grace: the task opens again by itself.
        await h.advance_to(local(date(2026, 4, 23), 12))
        events = [e.event for e in (await h.state(handle)).timeline]
        assert "promise_broken" in events and "task_reopened" in events
        assert open_tasks(p) == [("collections", "high", "W-1:broken-promise:2026-04-20")]
        assert "W-1" in (await http.get("/console")).text

        offered = await http.post(
            "/console/invoices/W-1/plan",
            data={
                **form,
                "installments": "2026-04-30 313.50\n2026-05-15 600.00",
                "request_id": "pl-1",
            },
        )
        assert offered.status_code == 303, offered.text
        assert (await h.state(handle)).stage == Stage.ON_PLAN
        assert open_tasks(p) == []

        # The payer sees the plan on the portal and pays the first installment.
        page = await http.get(f"/pay/{p.token('cust-w')}")
        assert "Payment plan" in page.text and "313.50" in page.text
        first = PaymentReceived(amount_minor=31_350, currency="USD", method="card")
        await handle.execute_update(InvoiceWorkflow.record_payment, first, id="pay-1")
        await h.advance_to(local(date(2026, 5, 4), 12))
        events = [e.event for e in (await h.state(handle)).timeline]
        assert "installment_kept" in events and "plan_broken" not in events

        # The second installment is missed: dunning resumes and the task reopens.
        await h.advance_to(local(date(2026, 5, 19), 12))
        state = await h.state(handle)
        assert "plan_broken" in [e.event for e in state.timeline]
        assert state.stage in (Stage.SCHEDULED, Stage.ESCALATED)
        assert ("collections", "high", "W-1:broken-plan:2026-05-15") in open_tasks(p)

        exported = await http.get("/console/audit.csv?invoice=W-1")
        assert exported.status_code == 200
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        actions = [row["action"] for row in rows]
        for step in (
            "collector_task_opened",
            "collector_task_claimed",
            "status_changed",
            "collector_task_closed",
            "payment_plan_recorded",
            "payment_applied",
            "payment_plan_ended",
        ):
            assert step in actions, f"{step} missing from the audit CSV: {sorted(set(actions))}"
        by_cole = {row["action"] for row in rows if row["actor"] == "cole@example.com"}
        assert by_cole >= {
            "collector_task_claimed",
            "status_changed",
            "collector_task_closed",
            "payment_plan_recorded",
        }
        # Each of the collector's requests is traceable by the request id they sent.
        requests = {
            (row["action"], row["request_id"])
            for row in rows
            if row["actor"] == "cole@example.com" and row["action"] != "collector_task_claimed"
        }
        assert requests == {
            ("status_changed", "p-1"),
            ("collector_task_closed", "p-1"),
            ("status_changed", "pl-1"),
            ("payment_plan_recorded", "pl-1"),
            ("collector_task_closed", "pl-1"),
        }
        await h.assert_replays(handle)
