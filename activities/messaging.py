"""Temporal activities that send reminders and receipts, exactly once per idempotency key.

For each channel the activity (1) returns the recorded result if a Message row with the
key is final, (2) re-reads the invoice and customer and records a suppression if the
message must not go out, (3) renders, records the row as "sending" and commits, then
(4) delivers and marks the row "sent". A retry after a crash in (4) finds "sending" and
delivers again through a channel that is itself idempotent by key where it can be.

Reminders of several invoices of one customer that go out as one message are sent by
`activities.grouped_messages`; the rows of such a message share a group key and point at the
row whose key delivers it (`sent_with_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.delivery import (
    Channel,
    OutgoingEmail,
    OutgoingSms,
    PermanentDeliveryError,
    RecipientOptedOut,
    email_channel,
    sms_channel,
)
from activities.ledger import invoice_in_ledger
from activities.models import ChannelResult, ReceiptRequest, ReminderOutcome, ReminderRequest
from activities.rendering import (
    InvoiceLine,
    MessageContext,
    PaymentLine,
    RenderedMessage,
    UnknownTemplate,
    available_templates,
    render_message,
)
from ledger.books import AWAITING_PAYMENT, record_audit
from ledger.db import session_scope
from ledger.models import (
    Adjustment,
    Customer,
    CustomerCredit,
    Invoice,
    InvoiceStatus,
    Message,
    Payment,
    PaymentAllocation,
)
from paylinks import make_pay_link, make_unsubscribe_link
from settings import Settings
from vocabulary import CHANNELS, FINAL_MESSAGE_STATUSES, MessageStatus

RECEIPT_TEMPLATE = "receipt"

# Short names of the outbox statuses, for this module and `activities.grouped_messages`.
SENDING = MessageStatus.SENDING
SENT = MessageStatus.SENT
SUPPRESSED = MessageStatus.SUPPRESSED
FAILED = MessageStatus.FAILED
FINAL = FINAL_MESSAGE_STATUSES


@dataclass(frozen=True)
class _Job:
    invoice_number: str
    template: str
    channel: str
    key: str
    as_of: datetime
    is_receipt: bool
    step_index: int | None = None
    one_off: bool = False  # a collector's message: never grouped, sent while dunning waits


@dataclass(frozen=True)
class _ReadyToSend:
    recipient: str
    rendered: RenderedMessage
    unsubscribe_link: str | None


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
        self._email = email or email_channel(settings)
        self._sms = sms or sms_channel(settings)

    @activity.defn
    def send_reminder(self, req: ReminderRequest) -> ReminderOutcome:
        """One invoice's reminder on its own: a collector's one-off message, or a step of a
        run from before reminders went through the customer's coordinator."""
        check_reminder(req)
        results = [
            self._send_once(
                _Job(
                    invoice_number=req.invoice_number,
                    template=req.template,
                    channel=channel,
                    key=f"{req.idempotency_key}:{channel}",
                    as_of=req.scheduled_for,
                    is_receipt=False,
                    step_index=req.step_index,
                    one_off=req.one_off,
                )
            )
            for channel in dict.fromkeys(req.channels)
        ]
        return ReminderOutcome(results=results)

    @activity.defn
    def send_receipt(self, req: ReceiptRequest) -> ReminderOutcome:
        job = _Job(
            invoice_number=req.invoice_number,
            template=RECEIPT_TEMPLATE,
            channel="email",
            key=f"{req.idempotency_key}:email",
            as_of=req.paid_at,
            is_receipt=True,
        )
        return ReminderOutcome(results=[self._send_once(job)])

    def _send_once(self, job: _Job) -> ChannelResult:
        try:
            prepared = self._prepare(job)
        except IntegrityError:
            # A concurrent attempt recorded the same key first; read what it recorded.
            prepared = self._prepare(job)
        if isinstance(prepared, ChannelResult):
            return prepared
        return self._deliver_and_finish(job, prepared)

    def _deliver_and_finish(self, job: _Job, prepared: _ReadyToSend) -> ChannelResult:
        """Deliver under the job's key and mark its row (and the rows it covers) with how."""
        try:
            delivered = self._deliver(job, prepared)
        except RecipientOptedOut as left:
            self._record_opt_out(job, str(left))
            return self._finish(job.key, SUPPRESSED, reason=str(left)[:200])
        except PermanentDeliveryError as refused:
            return self._finish(job.key, FAILED, reason=str(refused)[:200])
        return self._finish(job.key, SENT, provider_id=delivered)

    def _prepare(self, job: _Job) -> ChannelResult | _ReadyToSend:
        """Decide, render and record; the commit happens before anything is delivered."""
        with session_scope(self._engine) as session:
            row = session.exec(select(Message).where(Message.idempotency_key == job.key)).first()
            if row is not None and row.status in FINAL:
                return _result_of(row)
            if row is not None and row.sent_with_id is not None:
                if row.sent_with_id == row.id:
                    # This key delivers a group and stopped before marking it sent.
                    return self._render_group(session, row, job)
                raise ApplicationError(
                    f"reminder {job.key} is covered by message {row.sent_with_id}, "
                    "which is not delivered yet"
                )
            invoice = invoice_in_ledger(session, job.invoice_number)
            customer = session.get(Customer, invoice.customer_id)
            if customer is None:
                raise ApplicationError(
                    f"customer {invoice.customer_id} of invoice {invoice.number} "
                    "is not in the ledger",
                    type="CustomerNotFound",
                    non_retryable=True,
                )
            recipient = customer.email if job.channel == "email" else customer.phone
            payments = _payment_lines(session, invoice, customer.timezone) if job.is_receipt else []
            reason = _suppression_reason(invoice, customer, job, payments)
            if reason is not None:
                row = row or _new_row(job, invoice, recipient)
                row.status, row.reason = SUPPRESSED, reason
                session.add(row)
                return _result_of(row)
            assert recipient is not None  # no address is a suppression reason
            context = self._context(session, invoice, customer, job, payments)
            try:
                rendered = render_message(job.template, job.channel, context)
            except UnknownTemplate as missing:
                raise ApplicationError(
                    str(missing), type="UnknownTemplate", non_retryable=True
                ) from None
            row = row or _new_row(job, invoice, recipient)
            row.status, row.reason = SENDING, None
            row.recipient = recipient
            row.subject = rendered.subject[:300] if rendered.subject else None
            session.add(row)
            return _ReadyToSend(
                recipient=recipient,
                rendered=rendered,
                unsubscribe_link=context.unsubscribe_link,
            )

    def _context(
        self,
        session: Session,
        invoice: Invoice,
        customer: Customer,
        job: _Job,
        payments: list[PaymentLine],
    ) -> MessageContext:
        adjustments = session.exec(
            select(sa.func.coalesce(sa.func.sum(Adjustment.amount_minor), 0)).where(
                Adjustment.invoice_id == invoice.id
            )
        ).one()
        return MessageContext(
            customer_name=customer.name,
            company_name=self._settings.company_name,
            invoice_number=invoice.number,
            currency=invoice.currency,
            amount_due_minor=invoice.balance_minor,
            total_minor=invoice.total_minor,
            due_on=invoice.due_on,
            days_past_due=(_local_day(job.as_of, customer.timezone) - invoice.due_on).days,
            pay_link=make_pay_link(self._settings, customer.id, [invoice.number]),
            locale=customer.locale,
            unsubscribe_link=(
                make_unsubscribe_link(self._settings, customer.id, "email")
                if job.channel == "email"
                else None
            ),
            payments=payments,
            adjustments_minor=int(adjustments),
            credit_minor=_overpaid(session, invoice) if job.is_receipt else 0,
        )

    def _deliver(self, job: _Job, ready: _ReadyToSend) -> str | None:
        rendered = ready.rendered
        if job.channel == "email":
            return self._email.deliver(
                OutgoingEmail(
                    to=ready.recipient,
                    subject=rendered.subject or "",
                    text=rendered.text,
                    html=rendered.html,
                    idempotency_key=job.key,
                    unsubscribe_link=ready.unsubscribe_link,
                )
            ).provider_id
        return self._sms.deliver(
            OutgoingSms(to=ready.recipient, body=rendered.text, idempotency_key=job.key)
        ).provider_id

    def _record_opt_out(self, job: _Job, reason: str) -> None:
        """The provider says the customer left this channel: respect it from now on."""
        with session_scope(self._engine) as session:
            invoice = invoice_in_ledger(session, job.invoice_number)
            customer = session.get(Customer, invoice.customer_id)
            assert customer is not None
            if job.channel == "sms":
                customer.sms_opt_out = True
            else:
                customer.email_opt_out = True
            session.add(customer)
            record_audit(
                session, "provider", f"{job.channel}_opt_out", invoice.id, {"reason": reason}
            )

    def _finish(
        self, key: str, status: str, reason: str | None = None, provider_id: str | None = None
    ) -> ChannelResult:
        """Mark the delivering row, and every row its message covered, with the outcome."""
        with session_scope(self._engine) as session:
            row = session.exec(select(Message).where(Message.idempotency_key == key)).one()
            covered = [row]
            if row.sent_with_id is not None:
                covered = list(
                    session.exec(select(Message).where(Message.sent_with_id == row.id)).all()
                )
            for covered_row in covered:
                covered_row.status = status
                # Sent as a group, each row keeps its "in one message with ..." reason.
                if reason is not None or row.sent_with_id is None:
                    covered_row.reason = reason
                session.add(covered_row)
            row.provider_id = provider_id[:200] if provider_id else None
            session.add(row)
            return _result_of(row)

    # ------------------------------------------------------- several invoices, one message

    def _render_group(self, session: Session, row: Message, job: _Job) -> _ReadyToSend:
        """Render the one message for every row that `row` claimed, and note who it covers."""
        covered = list(
            session.exec(
                select(Message, Invoice)
                .join(Invoice, Message.invoice_id == Invoice.id)
                .where(Message.sent_with_id == row.id)
                .order_by(Invoice.number)
            ).all()
        )
        invoices = [invoice for _, invoice in covered]
        numbers = [invoice.number for invoice in invoices]
        for message, invoice in covered:
            others = [number for number in numbers if number != invoice.number]
            message.reason = f"in one message with {', '.join(others)}"[:200] if others else None
            session.add(message)
        own = next(invoice for message, invoice in covered if message.id == row.id)
        customer = session.get(Customer, own.customer_id)
        assert customer is not None and row.recipient is not None
        context = self._context(session, own, customer, job, []).model_copy(
            update={
                "amount_due_minor": sum(invoice.balance_minor for invoice in invoices),
                "total_minor": sum(invoice.total_minor for invoice in invoices),
                "pay_link": make_pay_link(self._settings, customer.id, numbers),
                "invoices": [
                    InvoiceLine(
                        number=invoice.number,
                        amount_due_minor=invoice.balance_minor,
                        total_minor=invoice.total_minor,
                    )
                    for invoice in invoices
                ]
                if len(invoices) > 1
                else [],
            }
        )
        rendered = render_message(job.template, job.channel, context)
        row.subject = rendered.subject[:300] if rendered.subject else None
        session.add(row)
        return _ReadyToSend(
            recipient=row.recipient, rendered=rendered, unsubscribe_link=context.unsubscribe_link
        )


def check_reminder(req: ReminderRequest) -> None:
    """Refuse for good a reminder no retry can send: an unknown channel or template."""
    unknown = [channel for channel in req.channels if channel not in CHANNELS]
    if unknown:
        raise ApplicationError(
            f"reminder for invoice {req.invoice_number}: unknown channel(s) {unknown}; "
            f"expected {list(CHANNELS)}",
            type="UnknownChannel",
            non_retryable=True,
        )
    _require_template(req.template)


def _require_template(template: str) -> None:
    if template not in available_templates():
        raise ApplicationError(
            f"no message template named {template!r}; "
            f"available: {', '.join(sorted(available_templates()))}",
            type="UnknownTemplate",
            non_retryable=True,
        )


def _suppression_reason(
    invoice: Invoice, customer: Customer, job: _Job, payments: list[PaymentLine]
) -> str | None:
    if job.is_receipt:
        if not payments:
            return "no payments recorded for this invoice"
    else:
        # A collector may write while dunning waits (a promise, a plan, a dispute).
        sendable = AWAITING_PAYMENT if job.one_off else {InvoiceStatus.OPEN}
        if invoice.status not in sendable:
            return f"invoice is {invoice.status}"
        if invoice.balance_minor <= 0:
            return "nothing is due on this invoice"
    if job.channel == "email":
        if customer.email_opt_out:
            return "customer opted out of email"
        if not customer.email:
            return "no email address on file"
    else:
        if customer.sms_opt_out:
            return "customer opted out of sms"
        if not customer.phone:
            return "no phone number on file"
    return None


def _payment_lines(session: Session, invoice: Invoice, timezone: str) -> list[PaymentLine]:
    rows = session.exec(
        select(Payment, PaymentAllocation)
        .join(PaymentAllocation, PaymentAllocation.payment_id == Payment.id)
        .where(PaymentAllocation.invoice_id == invoice.id, Payment.status == "succeeded")
        .order_by(Payment.received_at, Payment.id)
    ).all()
    return [
        PaymentLine(
            received_on=_local_day(payment.received_at, timezone),
            method=payment.method,
            reference=payment.reference,
            amount_minor=allocation.amount_minor,
        )
        for payment, allocation in rows
    ]


def _overpaid(session: Session, invoice: Invoice) -> int:
    """What payments toward this invoice brought beyond its balance: the customer's credit."""
    paid_toward = select(PaymentAllocation.payment_id).where(
        PaymentAllocation.invoice_id == invoice.id
    )
    return int(
        session.exec(
            select(sa.func.coalesce(sa.func.sum(CustomerCredit.amount_minor), 0)).where(
                CustomerCredit.source == "overpayment",
                CustomerCredit.payment_id.in_(paid_toward),  # type: ignore[union-attr]
            )
        ).one()
    )


def _new_row(job: _Job, invoice: Invoice, recipient: str | None) -> Message:
    return Message(
        idempotency_key=job.key,
        customer_id=invoice.customer_id,
        invoice_id=invoice.id,
        channel=job.channel,
        template=job.template,
        recipient=recipient,
        status=SENDING,
    )


def _result_of(row: Message) -> ChannelResult:
    return ChannelResult(
        channel=row.channel, status=row.status, reason=row.reason, recipient=row.recipient
    )


def _local_day(moment: datetime, timezone: str) -> date:
    """The calendar day at ``moment`` where the customer is."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(zone).date()
