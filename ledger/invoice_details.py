"""One invoice as its payer sees it: every payment and adjustment on it, oldest first.
Read-only, and scoped to one customer: an invoice of another customer is reported exactly
like one that does not exist.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session

from ledger.books import UnknownInvoice
from ledger.models import Adjustment, Customer, Invoice, Payment, PaymentAllocation


class InvoiceLine(BaseModel):
    """One money movement on an invoice: a payment allocation or an adjustment."""

    at: datetime
    kind: str  # "payment", or the AdjustmentKind of an adjustment
    amount_minor: int  # negative lowers the balance
    detail: str | None = None


class InvoiceDetail(BaseModel):
    customer_id: str
    customer_name: str
    number: str
    currency: str
    total_minor: int
    balance_minor: int
    issued_on: date
    due_on: date
    status: str
    lines: list[InvoiceLine]  # oldest first


def invoice_detail(session: Session, customer_id: str, number: str) -> InvoiceDetail:
    """One invoice of the customer with every payment and adjustment on it, oldest first."""
    found = session.execute(
        sa.select(Invoice, Customer.name)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(Invoice.number == number, Invoice.customer_id == customer_id)
    ).first()
    if found is None:
        # The same answer for another customer's invoice: its existence is not theirs to know.
        raise UnknownInvoice(f"customer {customer_id!r} has no invoice {number!r}")
    invoice, customer_name = found
    lines = [
        InvoiceLine(
            at=received_at,
            kind="payment",
            amount_minor=-amount,
            detail=" ".join(part for part in (method, reference) if part),
        )
        for amount, received_at, method, reference in session.execute(
            sa.select(
                PaymentAllocation.amount_minor,
                Payment.received_at,
                Payment.method,
                Payment.reference,
            )
            .join(Payment, Payment.id == PaymentAllocation.payment_id)
            .where(PaymentAllocation.invoice_id == invoice.id)
            .order_by(PaymentAllocation.id)
        )
    ]
    lines += [
        InvoiceLine(at=created_at, kind=kind, amount_minor=amount, detail=reason)
        for kind, amount, reason, created_at in session.execute(
            sa.select(
                Adjustment.kind, Adjustment.amount_minor, Adjustment.reason, Adjustment.created_at
            )
            .where(Adjustment.invoice_id == invoice.id)
            .order_by(Adjustment.id)
        )
    ]
    lines.sort(key=lambda line: line.at)  # stable: payments before adjustments at one moment
    return InvoiceDetail(
        customer_id=customer_id,
        customer_name=customer_name,
        number=invoice.number,
        currency=invoice.currency,
        total_minor=invoice.total_minor,
        balance_minor=invoice.balance_minor,
        issued_on=invoice.issued_on,
        due_on=invoice.due_on,
        status=str(invoice.status),
        lines=lines,
    )
