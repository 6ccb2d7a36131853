"""What the payment portal, the payment provider and the message providers tell an invoice
workflow.

Invariants:
- A payer's portal activity (visits, invoice views, abandoned checkouts) only adds to the
  timeline: a signal, never refused, never changing money or stage.
- A payment on its way (a bank debit processing) holds the reminders while it is pending and
  only while the invoice was being dunned; its landing (`record_payment` with the same
  reference) or its failure ends the hold.
- Money taken back (a refund, a chargeback) is written to the ledger first; the workflow only
  takes the ledger's new balance.
- A reminder read (an open, a click) or a portal visit starts, once, the wait of
  `InvoiceTasks._watch_engagement`.
- A message that could not be delivered opens one "fix contact" task a channel, and its
  reminder goes out once on the other channel, if the policy uses that channel at all; the
  invoices of a grouped message go out in one message again, gathered by the coordinator.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.models import ReminderRequest
    from vocabulary import AWAITING_PAYMENT, ENGAGEMENT_KINDS, Channel
    from workflows import keys
    from workflows.models import (
        BalanceReopened,
        ContactFailure,
        DeliveryNote,
        InvoiceState,
        PaymentFailed,
        PaymentPending,
        PortalEvent,
        Stage,
    )
from workflows.invoice_disputes import InvoiceDisputes
from workflows.invoice_patches import ENGAGEMENT_WATCH, takes_change
from workflows.invoice_reminders import CoordinatorRefused, send_refusal

# A reminder sent again on another channel belongs to no step of the policy.
CONTACT_FALLBACK_STEP = -2


class InvoicePayments(InvoiceDisputes):
    """Signals and updates from the portal and the payment provider."""

    @workflow.signal
    def note_portal_event(self, event: PortalEvent) -> None:
        self._record(event.event.value, event.detail)
        self._note_engagement()

    @workflow.signal
    def note_delivery(self, note: DeliveryNote) -> None:
        self._record(note.kind.value, note.detail, channel=note.channel)
        if note.kind in ENGAGEMENT_KINDS:
            self._note_engagement()

    def _note_engagement(self) -> None:
        """The customer read a reminder or came to the portal: the first time starts a wait
        for the payment that should follow."""
        s = self.s
        if s.engaged_at is None and not self._settled() and takes_change(ENGAGEMENT_WATCH):
            s.engaged_at = self._now()
            self._watch_engagement()

    @workflow.update
    async def contact_failed(self, failure: ContactFailure) -> InvoiceState:
        async with self._request("follow up an undelivered message on") as request_id:
            if request_id is None:
                return self.state()
            number = self.invoice.number
            other = "sms" if failure.channel == "email" else "email"
            used = {channel for step in self.invoice.policy.steps for channel in step.channels}
            if failure.template and other in used:
                await self._send_instead(failure, other)
            why = failure.reason or "undeliverable"
            await self._reopen_task(
                keys.fix_contact(number, failure.channel),
                f"fix the customer's {failure.channel} address ({why})",
                event="contact_task",
            )
        return self.state()

    async def _send_instead(self, failure: ContactFailure, channel: Channel) -> None:
        """The undelivered reminder once more on `channel`, through the customer's
        coordinator: the invoices of a grouped message are told together, so they go out
        together again."""
        template = failure.template
        assert template is not None
        # One reminder at a time waits for the coordinator's answer (a step may be sending).
        await workflow.wait_condition(lambda: self.s.awaiting_reminder is None)
        request = ReminderRequest(
            invoice_number=self.invoice.number,
            template=template,
            channels=[channel],
            step_index=CONTACT_FALLBACK_STEP,
            scheduled_for=self._now(),
            idempotency_key=keys.contact_fallback(self.invoice.number, failure.failed_key),
        )
        try:
            outcome = await self._send_through_coordinator(request)
        except (ActivityError, CoordinatorRefused) as err:
            self._record("reminder_failed", send_refusal(err), template=template)
            return
        self._record_outcome("reminder", outcome, template, f"instead of {failure.channel}")

    @contact_failed.validator
    def _validate_contact_failed(self, failure: ContactFailure) -> None:
        if self._repeated_request():
            return
        self._require_open("follow up an undelivered message on")

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
