"""Ledger tables: the truth for money.

Amounts are integer minor units of the row's ISO 4217 currency, in 64-bit columns
(ledger.currencies.MAX_MINOR is the most one amount may be). Datetimes are stored in UTC
and always come back timezone-aware. Every effect that must happen once (a message, a
payment application, an ERP posting) carries an idempotency key under a unique constraint.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# The portal's payment tables and the console's user tables live in modules of their own;
# imported here, so that this module registers every table and names them all for callers.
from ledger.checkout_tables import Checkout as Checkout
from ledger.checkout_tables import CheckoutItem as CheckoutItem
from ledger.checkout_tables import CheckoutStatus as CheckoutStatus
from ledger.checkout_tables import PaymentMethodKind as PaymentMethodKind
from ledger.checkout_tables import ShortPayReason as ShortPayReason
from ledger.checkout_tables import StripeEvent as StripeEvent
from ledger.columns import UTCDateTime as UTCDateTime
from ledger.columns import aware, utcnow
from ledger.user_tables import ApiKey as ApiKey
from ledger.user_tables import AppUser as AppUser
from ledger.user_tables import ConsoleSession as ConsoleSession
from ledger.user_tables import Role as Role

# Declared in `vocabulary`; imported from here by much of the ledger and its callers.
from vocabulary import InvoiceStatus as InvoiceStatus
from vocabulary import TaskStatus


class Customer(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=20, description="E.164")
    timezone: str = Field(default="UTC", max_length=64)
    locale: str = Field(default="en", max_length=16)
    segment: str | None = Field(default=None, max_length=64)
    email_opt_out: bool = False
    sms_opt_out: bool = False
    # Why the provider could not deliver to the address (a hard bounce, an unknown number);
    # cleared when an import or edit changes the address (`ledger.consent`).
    email_undeliverable: str | None = Field(default=None, max_length=200)
    phone_undeliverable: str | None = Field(default=None, max_length=200)
    created_at: datetime = aware(default_factory=utcnow)
    stripe_customer_id: str | None = Field(default=None, max_length=64)
    # `dunwise paylink --revoke`: links signed before this moment no longer open the account.
    pay_links_revoked_before: datetime | None = aware(default=None)
    # The collector who owns the account (lower-cased email): new tasks go to them first.
    owner_email: str | None = Field(default=None, max_length=320)


class Invoice(SQLModel, table=True):
    __table_args__ = (sa.CheckConstraint("balance_minor >= 0", name="balance_not_negative"),)

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=64, unique=True, index=True)
    customer_id: str = Field(foreign_key="customer.id", index=True, max_length=64)
    currency: str = Field(max_length=3)
    total_minor: int = Field(sa_type=sa.BigInteger)
    balance_minor: int = Field(sa_type=sa.BigInteger)
    issued_on: date
    due_on: date
    status: InvoiceStatus = Field(default=InvoiceStatus.OPEN, sa_type=sa.String(16), index=True)
    policy_name: str = Field(max_length=64)
    policy_version: int
    created_at: datetime = aware(default_factory=utcnow)
    updated_at: datetime = aware(default_factory=utcnow)


class Payment(SQLModel, table=True):
    """Money received from a customer; allocations spread it over invoices."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", index=True, max_length=64)
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    method: str = Field(max_length=16, description="card, ach, bank_transfer, manual, credit")
    reference: str | None = Field(default=None, max_length=128)
    reason: str | None = Field(default=None, max_length=500, description="why a partial payment")
    status: str = Field(default="succeeded", max_length=16)
    idempotency_key: str = Field(max_length=200, unique=True)
    received_at: datetime = aware(default_factory=utcnow)


class PaymentAllocation(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("payment_id", "invoice_id"),
        sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    payment_id: int = Field(foreign_key="payment.id", index=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    amount_minor: int = Field(sa_type=sa.BigInteger)


class Adjustment(SQLModel, table=True):
    """A change to an invoice's balance that is not a payment.

    Negative amounts lower the balance (credit note, write-off), positive ones raise it
    (late fee).
    """

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    kind: str = Field(max_length=16, description="an AdjustmentKind")
    amount_minor: int = Field(sa_type=sa.BigInteger)
    reason: str | None = Field(default=None, max_length=500)
    idempotency_key: str = Field(max_length=200, unique=True)
    created_at: datetime = aware(default_factory=utcnow)


class CustomerCredit(SQLModel, table=True):
    """Money a customer holds with us, for example from an overpayment."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", index=True, max_length=64)
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    source: str = Field(max_length=32, description="overpayment, credit_note")
    payment_id: int | None = Field(default=None, foreign_key="payment.id")
    idempotency_key: str = Field(max_length=200, unique=True)
    created_at: datetime = aware(default_factory=utcnow)


class CollectorTask(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    queue: str = Field(max_length=64)
    priority: str = Field(max_length=16)
    status: str = Field(default=TaskStatus.OPEN.value, max_length=16, index=True)
    outcome: str | None = Field(default=None, max_length=32, description="a TaskOutcome")
    note: str | None = Field(default=None, max_length=2000)
    due_at: datetime = aware()
    idempotency_key: str = Field(max_length=200, unique=True)
    created_at: datetime = aware(default_factory=utcnow)
    closed_at: datetime | None = aware(default=None)
    # Who works it: an open task with an assignee is claimed (ledger.tasks).
    assignee_id: int | None = Field(default=None, foreign_key="app_user.id", index=True)
    claimed_at: datetime | None = aware(default=None)
    # Past its SLA: moved to the supervisor queue, the queue it came from kept.
    breached_at: datetime | None = aware(default=None)
    escalated_from_queue: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, max_length=100, description="of the last change")


class QueueMember(SQLModel, table=True):
    """A user who may be given a queue's tasks by round robin (ledger.routing)."""

    __tablename__ = "queue_member"
    __table_args__ = (sa.UniqueConstraint("queue", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    queue: str = Field(max_length=64)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    created_at: datetime = aware(default_factory=utcnow)


class Message(SQLModel, table=True):
    """The outbox: one row per invoice and message key, never two for one key.

    Reminders to one customer about several invoices due the same day go out as one message:
    each invoice keeps its own row, all share a `group_key`, and `sent_with_id` points at the
    row whose key delivered the message (that row points at itself).
    """

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200, unique=True)
    customer_id: str = Field(foreign_key="customer.id", index=True, max_length=64)
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id", index=True)
    channel: str = Field(max_length=8, description="a Channel")
    template: str = Field(max_length=64)
    recipient: str | None = Field(default=None, max_length=320)
    status: str = Field(max_length=16, description="a MessageStatus")
    group_key: str | None = Field(default=None, max_length=80, index=True)
    sent_with_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    reason: str | None = Field(default=None, max_length=200)
    subject: str | None = Field(default=None, max_length=300)
    provider_id: str | None = Field(default=None, max_length=200)
    created_at: datetime = aware(default_factory=utcnow)
    # What the provider last told of it (`ledger.delivery_events`): delivered, opened, ...
    delivery: str | None = Field(default=None, max_length=16, description="a DeliveryKind")


class ErpPosting(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200, unique=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    target: str = Field(max_length=500)
    document: str = Field(sa_type=sa.Text)
    posted_at: datetime = aware(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Append-only record of every change to money or lifecycle."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = aware(default_factory=utcnow, index=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id", index=True)
    detail: str = Field(default="{}", sa_type=sa.Text, description="JSON")


@sa.event.listens_for(AuditEvent, "before_update")
@sa.event.listens_for(AuditEvent, "before_delete")
def _audit_is_append_only(_mapper, _connection, target: AuditEvent) -> None:
    # The database refuses too (triggers in the initial migration); this names the mistake early.
    raise ValueError(f"audit event {target.id} is append-only: it cannot be changed or deleted")
