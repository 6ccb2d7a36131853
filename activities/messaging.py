"""Temporal activities that send reminders and receipts, exactly once per idempotency key.

For each channel the activity (1) returns the recorded result if a Message row with the
key is final, (2) re-reads the invoice and customer and records a suppression if the
message must not go out, (3) renders, records the row as "sending" and commits, then
(4) delivers and marks the row "sent". A retry after a crash in (4) finds "sending" and
delivers again through a channel that is itself idempotent by key where it can be.
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
    email_channel,
    sms_channel,
)
from activities.models import ChannelResult, ReceiptRequest, ReminderOutcome, ReminderRequest
from activities.rendering import (
    MessageContext,
    PaymentLine,
    RenderedMessage,
    UnknownTemplate,
    available_templates,
    render_message,
)
from ledger.db import session_scope
from ledger.models import (
    Adjustment,
    Customer,
    Invoice,
    InvoiceStatus,
    Message,
    Payment,
    PaymentAllocation,
)
from paylinks import make_pay_link, make_unsubscribe_link
from settings import Settings

CHANNELS = ("email", "sms")
RECEIPT_TEMPLATE = "receipt"

SENDING = "sending"
SENT = "sent"
SUPPRESSED = "suppressed"
FAILED = "failed"


@dataclass(frozen=True)
class _Job:
    invoice_number: str
    template: str
    channel: str
    key: str
    as_of: datetime
    is_receipt: bool


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
        unknown = [channel for channel in req.channels if channel not in CHANNELS]
        if unknown:
            raise ApplicationError(
                f"reminder for invoice {req.invoice_number}: unknown channel(s) {unknown}; "
                f"expected {list(CHANNELS)}",
                type="UnknownChannel",
                non_retryable=True,
            )
        _require_template(req.template)
        results = [
            self._send_once(
                _Job(
                    invoice_number=req.invoice_number,
                    template=req.template,
                    channel=channel,
                    key=f"{req.idempotency_key}:{channel}",
                    as_of=req.scheduled_for,
                    is_receipt=False,
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
        try:
            delivered = self._deliver(job, prepared)
        except PermanentDeliveryError as refused:
            reason = str(refused)[:200]
            self._finish(job.key, FAILED, reason=reason)
            return ChannelResult(
                channel=job.channel, status=FAILED, reason=reason, recipient=prepared.recipient
            )
        self._finish(job.key, SENT, provider_id=delivered)
        return ChannelResult(channel=job.channel, status=SENT, recipient=prepared.recipient)

    def _prepare(self, job: _Job) -> ChannelResult | _ReadyToSend:
        """Decide, render and record; the commit happens before anything is delivered."""
        with session_scope(self._engine) as session:
            row = session.exec(select(Message).where(Message.idempotency_key == job.key)).first()
            if row is not None and row.status != SENDING:
                return _result_of(row)
            invoice = session.exec(
                select(Invoice).where(Invoice.number == job.invoice_number)
            ).first()
            if invoice is None:
                raise ApplicationError(
                    f"invoice {job.invoice_number} is not in the ledger",
                    type="InvoiceNotFound",
                    non_retryable=True,
                )
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

    def _finish(
        self, key: str, status: str, reason: str | None = None, provider_id: str | None = None
    ) -> None:
        with session_scope(self._engine) as session:
            row = session.exec(select(Message).where(Message.idempotency_key == key)).one()
            row.status, row.reason = status, reason
            row.provider_id = provider_id[:200] if provider_id else None
            session.add(row)


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
        if invoice.status != InvoiceStatus.OPEN:
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
