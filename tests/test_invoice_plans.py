"""Payment plans on the time-skipping server: installments kept pause the reminders; a missed
one breaks the plan, resumes dunning and reopens a collector task by itself."""

from __future__ import annotations

from datetime import date

import pytest
from sqlmodel import select
from temporalio.client import WorkflowUpdateFailedError

from ledger.db import session_scope
from ledger.models import CollectorTask
from tests.invoice_harness import DUE, invoice_harness, local, reminder_templates
from workflows.invoice import InvoiceWorkflow
from workflows.models import Installment, PaymentPlanOffer, PaymentReceived, Stage


def plan(*installments: tuple[date, int]) -> PaymentPlanOffer:
    return PaymentPlanOffer(
        installments=[Installment(due_on=d, amount_minor=a) for d, a in installments],
        actor="user:cole",
    )


def pay(amount_minor: int) -> PaymentReceived:
    return PaymentReceived(amount_minor=amount_minor, currency="USD", method="card")


async def test_a_missed_installment_breaks_the_plan_and_reopens_a_task(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-PL1", due_on=DUE)  # 1,000.00 USD
        offer = plan((date(2026, 3, 20), 40_000), (date(2026, 4, 1), 60_000))
        state = await handle.execute_update(InvoiceWorkflow.offer_plan, offer, id="plan-1")
        assert (state.stage, state.status) == (Stage.ON_PLAN, "paused")
        assert h.invoice("INV-PL1").status == "paused"
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(40_000), id="pay-1")

        await h.advance_to(local(date(2026, 3, 28)))
        state = await h.state(handle)
        assert reminder_templates(state) == []  # the plan holds every reminder
        assert state.plan is not None and state.plan.kept == 1
        assert "installment_kept" in [e.event for e in state.timeline]

        await h.advance_to(local(date(2026, 4, 4), 8))  # 04-01 + 2 days' grace: missed
        state = await h.state(handle)
        events = [e.event for e in state.timeline]
        assert "plan_broken" in events and "task_reopened" in events
        assert (state.stage, state.status, state.plan) == (Stage.SCHEDULED, "open", None)
        with session_scope(h.engine) as session:
            tasks = session.exec(select(CollectorTask)).all()
        assert [(t.queue, t.priority, t.status) for t in tasks] == [("collections", "high", "open")]
        await h.assert_replays(handle)


async def test_a_plan_kept_to_the_end_closes_the_invoice(tmp_path):
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-PL2", due_on=DUE)
        offer = plan((date(2026, 3, 20), 50_000), (date(2026, 4, 20), 50_000))
        await handle.execute_update(InvoiceWorkflow.offer_plan, offer, id="plan-1")
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(50_000), id="pay-1")
        await h.advance_to(local(date(2026, 4, 1)))
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(50_000), id="pay-2")
        final = await handle.result()
        assert final.stage == Stage.CLOSED and final.status == "closed"
        assert reminder_templates(final) == []


async def test_a_plan_that_does_not_add_up_is_refused(tmp_path):
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-PL3", due_on=DUE)
        cases = {
            "add up to 900.00 USD": plan((date(2026, 3, 20), 90_000)),
            "is not after": plan((date(2026, 3, 20), 50_000), (date(2026, 3, 20), 50_000)),
            "is in the past": plan((date(2026, 2, 1), 100_000)),
        }
        for index, (words, offer) in enumerate(cases.items()):
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(InvoiceWorkflow.offer_plan, offer, id=f"bad-{index}")
            assert words in str(refused.value.cause)
        assert (await h.state(handle)).stage == Stage.SCHEDULED


async def test_a_plan_takes_the_place_of_a_promise(tmp_path):
    from workflows.models import PromiseToPay

    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-PL4", due_on=DUE)
        promise = PromiseToPay(pay_by=date(2026, 3, 20))
        await handle.execute_update(InvoiceWorkflow.promise_to_pay, promise, id="p-1")
        offer = plan((date(2026, 3, 25), 30_000), (date(2026, 4, 25), 70_000))
        state = await handle.execute_update(InvoiceWorkflow.offer_plan, offer, id="plan-1")
        assert (state.stage, state.promise, state.paused_until) == (Stage.ON_PLAN, None, None)
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(30_000), id="pay-1")
        await h.advance_to(local(date(2026, 3, 30)))  # past the promise's date and grace
        state = await h.state(handle)
        events = [e.event for e in state.timeline]
        assert "promise_broken" not in events and "installment_kept" in events
        assert state.stage == Stage.ON_PLAN and reminder_templates(state) == []
