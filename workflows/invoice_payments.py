"""What the payment portal and the payment provider tell an invoice workflow.

Invariants:
- A payer's portal activity (visits, invoice views, abandoned checkouts) only adds to the
  timeline: a signal, never refused, never changing money or stage.
- A payment on its way (a bank debit processing) holds the reminders while it is pending and
  only while the invoice was being dunned; its landing (`record_payment` with the same
  reference) or its failure ends the hold.
- Money taken back (a refund, a chargeback) is written to the ledger first; the workflow only
  takes the ledger's new balance.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from vocabulary import AWAITING_PAYMENT
    from workflows.models import (
        BalanceReopened,
        DeliveryNote,
        InvoiceState,
        PaymentFailed,
        PaymentPending,
        PortalEvent,
        Stage,
    )
from workflows.invoice_disputes import InvoiceDisputes


class InvoicePayments(InvoiceDisputes):
    """Signals and updates from the portal and the payment provider."""

    @workflow.signal
    def note_portal_event(self, event: PortalEvent) -> None:
        self._record(event.event.value, event.detail)

    @workflow.signal
    def note_delivery(self, note: DeliveryNote) -> None:
        self._record(note.kind.value, note.detail, channel=note.channel)

    @workflow.update
    async def payment_pending(self, pending: PaymentPending) -> InvoiceState:
        async with self._request("hold reminders for a payment on") as request_id:
            if request_id is not None and pending.reference not in self.s.pending_payments:
                self.s.pending_payments.append(pending.reference)
                self._record(
                    "payment_pending",
                    f"{pending.method} {pending.reference}",
                    amount_minor=pending.amount_minor,
                )
                if self.s.stage == Stage.SCHEDULED:
                    self._pause_for(Stage.PAYMENT_PENDING)
        return self.state()

    @payment_pending.validator
    def _validate_pending(self, pending: PaymentPending) -> None:  # noqa: ARG002
        if not self._repeated_request():
            self._require_open("hold reminders for a payment on")

    @workflow.update
    async def payment_failed(self, failure: PaymentFailed) -> InvoiceState:
        async with self._request("record a failed payment on") as request_id:
            if request_id is not None:
                self._record("payment_failed", failure.reason)
                self._payment_landed_or_failed(failure.reference)
        return self.state()

    @payment_failed.validator
    def _validate_failure(self, failure: PaymentFailed) -> None:  # noqa: ARG002
        if not self._repeated_request():
            self._require_open("record a failed payment on")

    @workflow.signal
    def balance_reopened(self, change: BalanceReopened) -> None:
        self._record("payment_reversed", change.reason, amount_minor=change.amount_minor)
        if self._settled() and change.status not in AWAITING_PAYMENT:
            return
        self.s.balance_minor = change.balance_minor
        self.s.status = change.status
        self._publish()
