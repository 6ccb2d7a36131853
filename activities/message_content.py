"""What a message says: its template context read from the ledger, and the rendered result.

Everything here reads the ledger as it is when the message is prepared, so a retried
message shows the current balance. Days are counted in the customer's timezone (UTC when
the customer's is unknown). The only writes are to the rows of a grouped message: each
notes the other invoices it went out with, and the delivering row keeps the subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, select

from activities.message_jobs import MessageJob
from activities.rendering import (
    InvoiceLine,
    MessageContext,
    PaymentLine,
    RenderedMessage,
    brand_of,
    render_message,
)
from ledger.accounts import local_day
from ledger.books import ALLOCATIONS
from ledger.models import (
    Adjustment,
    Customer,
    CustomerCredit,
    Invoice,
    Message,
    Payment,
    PaymentAllocation,
)
from paylinks import make_pay_link, make_unsubscribe_link
from settings import Settings

# Built once: every message runs them, and on SQLite building one costs more than running it.
_ADJUSTED = select(sa.func.coalesce(sa.func.sum(Adjustment.amount_minor), 0)).where(
    Adjustment.invoice_id == sa.bindparam("invoice_id")
)
_PAID = ALLOCATIONS.where(Payment.status == "succeeded")
_OVERPAID = select(sa.func.coalesce(sa.func.sum(CustomerCredit.amount_minor), 0)).where(
    CustomerCredit.source == "overpayment",
    CustomerCredit.payment_id.in_(  # type: ignore[union-attr]
        select(PaymentAllocation.payment_id).where(
            PaymentAllocation.invoice_id == sa.bindparam("invoice_id")
        )
    ),
)

# The rows a grouped message covers, with their invoices, in the order the message lists them.
_COVERED = (
    select(Message, Invoice)
    .join(Invoice, Message.invoice_id == Invoice.id)
    .where(Message.sent_with_id == sa.bindparam("row_id"))
    .order_by(Invoice.number)
)


@dataclass(frozen=True)
class ReadyToSend:
    recipient: str
    rendered: RenderedMessage
    unsubscribe_link: str | None


def message_context(
    session: Session,
    settings: Settings,
    invoice: Invoice,
    customer: Customer,
    job: MessageJob,
    payments: list[PaymentLine],
) -> MessageContext:
    """The context `job`'s template is rendered with, for one invoice."""
    adjustments = session.exec(_ADJUSTED, params={"invoice_id": invoice.id}).one()
    return MessageContext(
        customer_name=customer.name,
        company_name=settings.company_name,
        invoice_number=invoice.number,
        currency=invoice.currency,
        amount_due_minor=invoice.balance_minor,
        total_minor=invoice.total_minor,
        due_on=invoice.due_on,
        days_past_due=(local_day(job.as_of, customer.timezone) - invoice.due_on).days,
        pay_link=make_pay_link(settings, customer.id, [invoice.number]),
        locale=customer.locale,
        unsubscribe_link=(
            make_unsubscribe_link(settings, customer.id, "email")
            if job.channel == "email"
            else None
        ),
        payments=payments,
        adjustments_minor=int(adjustments),
        credit_minor=_overpaid(session, invoice) if job.is_receipt else 0,
        brand=brand_of(settings),
    )


def render_group(
    session: Session, settings: Settings, row: Message, job: MessageJob
) -> ReadyToSend:
    """Render the one message for every row that `row` claimed, and note who it covers."""
    covered = list(session.exec(_COVERED, params={"row_id": row.id}).all())
    invoices = [invoice for _, invoice in covered]
    numbers = [invoice.number for invoice in invoices]
    for message, invoice in covered:
        others = [number for number in numbers if number != invoice.number]
        message.reason = f"in one message with {', '.join(others)}"[:200] if others else None
        session.add(message)
    own = next(invoice for message, invoice in covered if message.id == row.id)
    customer = session.get(Customer, own.customer_id)
    assert customer is not None and row.recipient is not None
    context = message_context(session, settings, own, customer, job, []).model_copy(
        update={
            "amount_due_minor": sum(invoice.balance_minor for invoice in invoices),
            "total_minor": sum(invoice.total_minor for invoice in invoices),
            "pay_link": make_pay_link(settings, customer.id, numbers),
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
    return ReadyToSend(
        recipient=row.recipient, rendered=rendered, unsubscribe_link=context.unsubscribe_link
    )


def payment_lines(session: Session, invoice: Invoice, timezone: str) -> list[PaymentLine]:
    """The succeeded payments toward `invoice`, oldest first, as a receipt lists them."""
    rows = session.exec(_PAID, params={"invoice_id": invoice.id}).all()
    return [
        PaymentLine(
            received_on=local_day(payment.received_at, timezone),
            method=payment.method,
            reference=payment.reference,
            amount_minor=allocation.amount_minor,
        )
        for payment, allocation in rows
    ]


def _overpaid(session: Session, invoice: Invoice) -> int:
    """What payments toward this invoice brought beyond its balance: the customer's credit."""
    return int(session.exec(_OVERPAID, params={"invoice_id": invoice.id}).one())
