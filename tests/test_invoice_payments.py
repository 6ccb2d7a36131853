"""What the portal and the payment provider tell an invoice workflow: portal events on the
timeline, a bank debit that holds the reminders while pending, its failure resuming them."""

from __future__ import annotations

from datetime import date

from tests.invoice_harness import DUE, invoice_harness, local, reminder_templates
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    PaymentFailed,
    PaymentPending,
    PaymentReceived,
    PortalEvent,
    PortalEventKind,
    Stage,
)


async def test_pending_bank_debit_holds_reminders_until_it_fails_or_lands(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-P1", due_on=DUE)
        visit = PortalEvent(event=PortalEventKind.PORTAL_VISIT)
        await handle.signal(InvoiceWorkflow.note_portal_event, visit)
        await handle.signal(InvoiceWorkflow.note_portal_event, visit)

        await h.advance_to(local(date(2026, 3, 12)))
        pending = PaymentPending(reference="pi_1", amount_minor=100_000, method="us_bank_account")
        state = await handle.execute_update(InvoiceWorkflow.payment_pending, pending, id="evt_1")
        assert state.stage == Stage.PAYMENT_PENDING
        again = await handle.execute_update(InvoiceWorkflow.payment_pending, pending, id="evt_1")
        assert [e.event for e in again.timeline].count("payment_pending") == 1

        await h.advance_to(local(date(2026, 3, 17)))
        state = await h.state(handle)
        assert reminder_templates(state) == []  # courtesy and due-today waited for the debit
        [visits] = [e for e in state.timeline if e.event == "portal_visit"]
        assert visits.count == 2

        failure = PaymentFailed(reference="pi_1", reason="insufficient funds")
        state = await handle.execute_update(InvoiceWorkflow.payment_failed, failure, id="evt_2")
        assert state.stage == Stage.SCHEDULED
        await h.advance_to(local(date(2026, 3, 18), hour=12))
        # Only the latest step that fell due, on its email and SMS: not a burst.
        assert reminder_templates(await h.state(handle)) == ["due_today", "due_today"]

        second = PaymentPending(reference="pi_2", amount_minor=40_000, method="us_bank_account")
        await handle.execute_update(InvoiceWorkflow.payment_pending, second, id="evt_3")
        landed = PaymentReceived(
            amount_minor=40_000, currency="USD", method="us_bank_account", reference="pi_2"
        )
        state = await handle.execute_update(InvoiceWorkflow.record_payment, landed, id="evt_4")
        assert (state.stage, state.balance_minor) == (Stage.SCHEDULED, 60_000)

        rest = PaymentReceived(amount_minor=60_000, currency="USD", method="card")
        await handle.execute_update(InvoiceWorkflow.record_payment, rest, id="evt_5")
        final = await handle.result()
        assert final.stage == Stage.CLOSED
        await h.assert_replays(handle)


async def test_a_pending_payment_on_a_settled_invoice_is_refused(tmp_path) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-P2", due_on=DUE)
        paid = PaymentReceived(amount_minor=100_000, currency="USD", method="card")
        await handle.execute_update(InvoiceWorkflow.record_payment, paid, id="evt_1")
        pending = PaymentPending(reference="pi_9", amount_minor=100_000, method="us_bank_account")
        try:
            await handle.execute_update(InvoiceWorkflow.payment_pending, pending, id="evt_2")
        except WorkflowUpdateFailedError as err:
            assert "it is paid" in str(err.cause)
        else:
            raise AssertionError("a settled invoice took a pending payment")
