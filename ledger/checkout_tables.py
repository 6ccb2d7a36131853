"""Ledger tables of the payer portal's payments: checkouts, the invoices each one pays, and
the payment provider's webhook events handled.

Amounts are integer minor units of the checkout's currency, and the database checks that
they add up (charge = items - credit + surcharge) and stay in range. A payer's request id is
unique per customer and a provider event id is handled once, under unique keys.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from ledger.columns import aware, utcnow


class CheckoutStatus(StrEnum):
    """Where a portal checkout stands with the payment provider."""

    CREATED = "created"
    PROCESSING = "processing"  # a bank debit on its way
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"


class ShortPayReason(StrEnum):
    """Why a payer pays less than an invoice's balance."""

    DAMAGED_GOODS = "damaged_goods"
    PRICING_DISPUTE = "pricing_dispute"
    MISSING_ITEMS = "missing_items"
    NOT_RECEIVED = "not_received"
    DUPLICATE_BILLING = "duplicate_billing"
    OTHER = "other"


class PaymentMethodKind(StrEnum):
    """How a payer pays in the portal, named as the payment provider names it."""

    CARD = "card"
    US_BANK_ACCOUNT = "us_bank_account"


class Checkout(SQLModel, table=True):
    """One payment a payer started in the portal, over one or more invoices of one currency.

    charge = items - credit + surcharge: the customer's credit pays first, the provider
    charges the rest (nothing when the credit covers it all).
    """

    __tablename__ = "checkout"
    __table_args__ = (
        sa.UniqueConstraint("customer_id", "request_id"),
        sa.CheckConstraint(
            "charge_minor = items_minor - credit_minor + surcharge_minor", name="charge_adds_up"
        ),
        sa.CheckConstraint(
            "items_minor > 0 AND credit_minor >= 0 AND surcharge_minor >= 0 "
            "AND refunded_minor >= 0",
            name="amounts_in_range",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", max_length=64)
    request_id: str = Field(max_length=100)
    currency: str = Field(max_length=3)
    method: str = Field(max_length=16, description="a PaymentMethodKind")
    items_minor: int = Field(sa_type=sa.BigInteger)
    credit_minor: int = Field(sa_type=sa.BigInteger)
    surcharge_minor: int = Field(sa_type=sa.BigInteger)
    charge_minor: int = Field(sa_type=sa.BigInteger)
    payment_intent_id: str | None = Field(default=None, max_length=255, unique=True)
    status: CheckoutStatus = Field(
        default=CheckoutStatus.CREATED, sa_type=sa.String(16), index=True
    )
    failure_reason: str | None = Field(default=None, max_length=500)
    refunded_minor: int = Field(default=0, sa_type=sa.BigInteger)
    disputed: bool = False
    created_at: datetime = aware(default_factory=utcnow)
    updated_at: datetime = aware(default_factory=utcnow)


class CheckoutItem(SQLModel, table=True):
    """One invoice in a checkout, the amount paid on it, and why if it is less than due.

    `reversed_minor` is how much of it refunds and chargebacks took back so far.
    """

    __tablename__ = "checkout_item"
    __table_args__ = (
        sa.UniqueConstraint("checkout_id", "invoice_id"),
        sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
        sa.CheckConstraint(
            "reversed_minor >= 0 AND reversed_minor <= amount_minor", name="reversed_in_range"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    checkout_id: int = Field(foreign_key="checkout.id")
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    invoice_number: str = Field(max_length=64)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    reason_code: str | None = Field(default=None, max_length=32, description="a ShortPayReason")
    note: str | None = Field(default=None, max_length=500)
    reversed_minor: int = Field(default=0, sa_type=sa.BigInteger)


class StripeEvent(SQLModel, table=True):
    """A payment provider webhook event handled once: its id is kept under a unique key."""

    __tablename__ = "stripe_event"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=255, unique=True)
    type: str = Field(max_length=64)
    payment_intent_id: str | None = Field(default=None, max_length=255)
    processed_at: datetime = aware(default_factory=utcnow)
