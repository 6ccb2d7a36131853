"""Temporal activities that send reminders and receipts, exactly once per idempotency key.

For each channel the activity (1) returns the recorded result if a Message row with the
key is final, (2) re-reads the invoice and customer and records a suppression if the
message must not go out, (3) renders, records the row as "sending" and commits, then
(4) delivers and marks the row "sent". A retry after a crash in (4) finds "sending" and
delivers again through a channel that is itself idempotent by key where it can be.

Reminders of several invoices of one customer that go out as one message are sent by
`activities.grouped_messages`; the rows of such a message share a group key and point at the
row whose key delivers it (`sent_with_id`).

The parts live beside it: `activities.message_jobs` (what to send, and whether it may go
out), `activities.message_rows` (the outbox rows), `activities.message_content` (what the
message says) and `activities.outbox` (delivery and its outcome).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.delivery import Channel, OutgoingSms, email_channel, sms_channel
from activities.email_message import OutgoingEmail
from activities.ledger import invoice_and_customer
from activities.message_content import (
    ReadyToSend,
    message_context,
    payment_lines,
    render_group,
)
from activities.message_jobs import (
    MessageJob,
    check_reminder,
    receipt_job,
    reminder_job,
    suppression_reason,
)
from activities.message_rows import result_of, row_by_key, save_row
from activities.models import ChannelResult, ReceiptRequest, ReminderOutcome, ReminderRequest
from activities.outbox import Outbox
from activities.rendering import UnknownTemplate, render_message
from ledger.db import session_scope
from settings import Settings
from vocabulary import FINAL_MESSAGE_STATUSES, MessageStatus


class MessagingActivities:
    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        email: Channel[OutgoingEmail] | None = None,
        sms: Channel[OutgoingSms] | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._outbox = Outbox(
            engine, email or email_channel(settings), sms or sms_channel(settings)
        )

    @activity.defn
    def send_reminder(self, req: ReminderRequest) -> ReminderOutcome:
        """One invoice's reminder on its own: a collector's one-off message, or a step of a
        run from before reminders went through the customer's coordinator."""
        check_reminder(req)
        results = [
            self._send_once(reminder_job(req, channel)) for channel in dict.fromkeys(req.channels)
        ]
        return ReminderOutcome(results=results)

    @activity.defn
    def send_receipt(self, req: ReceiptRequest) -> ReminderOutcome:
        return ReminderOutcome(results=[self._send_once(receipt_job(req))])

    def _send_once(self, job: MessageJob) -> ChannelResult:
        try:
            prepared = self._prepare(job)
        except IntegrityError:
            # A concurrent attempt recorded the same key first; read what it recorded.
            prepared = self._prepare(job)
        if isinstance(prepared, ChannelResult):
            return prepared
        return self._outbox.deliver_and_finish(job, prepared)[job.key]

    def _prepare(self, job: MessageJob) -> ChannelResult | ReadyToSend:
        """Decide, render and record; the commit happens before anything is delivered."""
        with session_scope(self._engine) as session:
            row = row_by_key(session, job.key)
            if row is not None and row.status in FINAL_MESSAGE_STATUSES:
                return result_of(row)
            if row is not None and row.sent_with_id is not None:
                if row.sent_with_id == row.id:
                    # This key delivers a group and stopped before marking it sent.
                    return render_group(session, self._settings, row, job)
                raise ApplicationError(
                    f"reminder {job.key} is covered by message {row.sent_with_id}, "
                    "which is not delivered yet"
                )
            invoice, customer = invoice_and_customer(session, job.invoice_number)
            recipient = customer.email if job.channel == "email" else customer.phone
            payments = payment_lines(session, invoice, customer.timezone) if job.is_receipt else []
            reason = suppression_reason(
                invoice, customer, job, payments, self._settings.sms_quiet_hours
            )
            if reason is not None:
                return save_row(
                    session, row, job, invoice, recipient, MessageStatus.SUPPRESSED, reason=reason
                )
            assert recipient is not None  # no address is a suppression reason
            context = message_context(session, self._settings, invoice, customer, job, payments)
            try:
                rendered = render_message(job.template, job.channel, context)
            except UnknownTemplate as missing:
                raise ApplicationError(
                    str(missing), type="UnknownTemplate", non_retryable=True
                ) from None
            subject = rendered.subject[:300] if rendered.subject else None
            save_row(session, row, job, invoice, recipient, MessageStatus.SENDING, subject=subject)
            return ReadyToSend(
                recipient=recipient,
                rendered=rendered,
                unsubscribe_link=context.unsubscribe_link,
            )
