"""What a payer sees of their account: open invoices with aging, credit, pending and past
payments. Read-only; every query is scoped to one customer.

Invariants:
- A page is a handful of queries whatever the number of invoices: nothing is read per invoice.
- Nothing outside the customer is ever read: an invoice of another customer is reported
  exactly like one that does not exist.
- Amounts are minor units of the row's currency; credits are per currency.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session

from ledger.books import AWAITING_PAYMENT, LedgerError
from ledger.models import (
    Checkout,
    CheckoutItem,
    CheckoutStatus,
    Customer,
    CustomerCredit,
    Invoice,
    Payment,
    PaymentAllocation,
)
from policies.calendars import load_zone

# Past payments an account lists, newest first.
HISTORY_LIMIT = 50


class AgingBucket(StrEnum):
    CURRENT = "current"  # not yet due
    DAYS_1_30 = "1-30"
    DAYS_31_60 = "31-60"
    DAYS_61_90 = "61-90"
    OVER_90 = "90+"


class OpenInvoice(BaseModel):
    number: str
    currency: str
    total_minor: int
    balance_minor: int
    pending_minor: int = 0  # in bank debits still processing
    issued_on: date
    due_on: date
    status: str
    days_past_due: int
    aging: AgingBucket


class CreditBalance(BaseModel):
    currency: str
    amount_minor: int


class PendingPayment(BaseModel):
    checkout_id: int
    payment_intent_id: str | None
    currency: str
    amount_minor: int
    method: str
    created_at: datetime
    invoices: list[str]


class PaymentRecord(BaseModel):
    received_at: datetime
    currency: str
    amount_minor: int
    method: str
    reference: str | None = None
    reason: str | None = None
    invoices: list[str]


class CustomerAccount(BaseModel):
    customer_id: str
    as_of: date  # the customer's date the account was read for: aging goes by it
    name: str
    email: str | None
    phone: str | None
    locale: str
    open_invoices: list[OpenInvoice]
    credits: list[CreditBalance]
    pending: list[PendingPayment]
    history: list[PaymentRecord]  # newest first


class UnknownCustomer(LedgerError):
    pass


def customer_account(
    session: Session, customer_id: str, at: datetime, history_limit: int = HISTORY_LIMIT
) -> CustomerAccount:
    """Everything the payer's account page shows at the moment `at`, aged by the customer's
    date then (in their timezone), not the server's."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise UnknownCustomer(f"customer {customer_id!r} does not exist")
    today = local_day(at, customer.timezone)
    # Core rows rather than ORM objects: a thousand invoices stay a cheap read.
    connection = session.connection()
    pending, pending_by_invoice = _pending_payments(connection, customer_id)
    return CustomerAccount(
        customer_id=customer.id,
        as_of=today,
        name=customer.name,
        email=customer.email,
        phone=customer.phone,
        locale=customer.locale,
        open_invoices=_open_invoices(connection, customer_id, today, pending_by_invoice),
        credits=_credits(connection, customer_id),
        pending=pending,
        history=_history(connection, customer_id, history_limit),
    )


def local_day(moment: datetime, timezone: str) -> date:
    """The calendar day at `moment` where the customer is (UTC for a zone Python lacks)."""
    try:
        zone = load_zone(timezone)
    except ValueError:
        zone = ZoneInfo("UTC")
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(zone).date()


def aging_bucket(days_past_due: int) -> AgingBucket:
    if days_past_due <= 0:
        return AgingBucket.CURRENT
    if days_past_due <= 30:
        return AgingBucket.DAYS_1_30
    if days_past_due <= 60:
        return AgingBucket.DAYS_31_60
    if days_past_due <= 90:
        return AgingBucket.DAYS_61_90
    return AgingBucket.OVER_90


_OPEN_INVOICES = (
    sa.select(
        Invoice.number,
        Invoice.currency,
        Invoice.total_minor,
        Invoice.balance_minor,
        Invoice.issued_on,
        Invoice.due_on,
        Invoice.status,
    )
    .where(
        Invoice.customer_id == sa.bindparam("customer_id"),
        Invoice.status.in_([str(status) for status in AWAITING_PAYMENT]),
        Invoice.balance_minor > 0,
    )
    .order_by(Invoice.due_on, Invoice.number)
)


def _open_invoices(
    connection: sa.Connection, customer_id: str, today: date, pending: dict[str, int]
) -> list[OpenInvoice]:
    invoices = []
    for number, currency, total, balance, issued_on, due_on, status in connection.execute(
        _OPEN_INVOICES, {"customer_id": customer_id}
    ):
        days = max(0, (today - due_on).days)
        invoices.append(
            OpenInvoice(
                number=number,
                currency=currency,
                total_minor=total,
                balance_minor=balance,
                pending_minor=pending.get(number, 0),
                issued_on=issued_on,
                due_on=due_on,
                status=status,
                days_past_due=days,
                aging=aging_bucket(days),
            )
        )
    return invoices


def _credits(connection: sa.Connection, customer_id: str) -> list[CreditBalance]:
    total = sa.func.sum(CustomerCredit.amount_minor)
    rows = connection.execute(
        sa.select(CustomerCredit.currency, total)
        .where(CustomerCredit.customer_id == customer_id)
        .group_by(CustomerCredit.currency)
        .order_by(CustomerCredit.currency)
    )
    return [
        CreditBalance(currency=currency, amount_minor=int(amount))
        for currency, amount in rows
        if amount
    ]


def _pending_payments(
    connection: sa.Connection, customer_id: str
) -> tuple[list[PendingPayment], dict[str, int]]:
    """Checkouts still processing (bank debits on their way), oldest first; and what they
    carry for each invoice number."""
    rows = connection.execute(
        sa.select(
            Checkout.id,
            Checkout.payment_intent_id,
            Checkout.currency,
            Checkout.charge_minor,
            Checkout.method,
            Checkout.created_at,
            CheckoutItem.invoice_number,
            CheckoutItem.amount_minor,
        )
        .join(CheckoutItem, CheckoutItem.checkout_id == Checkout.id)
        .where(
            Checkout.customer_id == customer_id,
            Checkout.status == CheckoutStatus.PROCESSING.value,
        )
        .order_by(Checkout.created_at, Checkout.id, CheckoutItem.id)
    )
    payments: dict[int, PendingPayment] = {}
    by_invoice: dict[str, int] = defaultdict(int)
    for checkout_id, intent, currency, charge, method, created_at, number, amount in rows:
        if checkout_id not in payments:
            payments[checkout_id] = PendingPayment(
                checkout_id=checkout_id,
                payment_intent_id=intent,
                currency=currency,
                amount_minor=charge,
                method=method,
                created_at=created_at,
                invoices=[],
            )
        payments[checkout_id].invoices.append(number)
        by_invoice[number] += amount
    return list(payments.values()), by_invoice


def _history(connection: sa.Connection, customer_id: str, limit: int) -> list[PaymentRecord]:
    payments = connection.execute(
        sa.select(
            Payment.id,
            Payment.received_at,
            Payment.currency,
            Payment.amount_minor,
            Payment.method,
            Payment.reference,
            Payment.reason,
        )
        .where(Payment.customer_id == customer_id)
        .order_by(Payment.received_at.desc(), Payment.id.desc())
        .limit(limit)
    ).all()
    if not payments:
        return []
    allocated: dict[int, list[str]] = defaultdict(list)
    for payment_id, number in connection.execute(
        sa.select(PaymentAllocation.payment_id, Invoice.number)
        .join(Invoice, Invoice.id == PaymentAllocation.invoice_id)
        .where(PaymentAllocation.payment_id.in_([payment.id for payment in payments]))
        .order_by(PaymentAllocation.id)
    ):
        allocated[payment_id].append(number)
    return [
        PaymentRecord(
            received_at=received_at,
            currency=currency,
            amount_minor=amount,
            method=method,
            reference=reference,
            reason=reason,
            invoices=allocated.get(payment_id, []),
        )
        for payment_id, received_at, currency, amount, method, reference, reason in payments
    ]
