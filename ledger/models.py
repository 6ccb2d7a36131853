"""Ledger tables: the truth for money.

Amounts are integer minor units of the row's ISO 4217 currency, in 64-bit columns
(ledger.currencies.MAX_MINOR is the most one amount may be). Datetimes are stored in UTC
and always come back timezone-aware. Every effect that must happen once (a message, a
payment application, an ERP posting) carries an idempotency key under a unique constraint.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# Declared in `vocabulary`; imported from here by much of the ledger and its callers.
from vocabulary import InvoiceStatus as InvoiceStatus
from vocabulary import TaskStatus

# Deterministic constraint names, so later migrations (batch mode on SQLite) can address them.
# Set before any table is defined: names are given when a constraint joins its table.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware datetime stored as UTC, on SQLite as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the ledger stores aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect):  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(**kwargs) -> Field:
    return Field(sa_type=UTCDateTime, **kwargs)


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


class Role(StrEnum):
    """What a console user may see and do; each role may do all the one before it may."""

    VIEWER = "viewer"  # sees cases, tasks and the audit trail
    COLLECTOR = "collector"  # works tasks: notes, promises, disputes, plans, pauses
    ADMIN = "admin"  # finance admin: write-offs, users

    def includes(self, needed: Role) -> bool:
        """Whether this role may do what `needed` may."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


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
    created_at: datetime = _aware(default_factory=utcnow)
    stripe_customer_id: str | None = Field(default=None, max_length=64)
    # `dunwise paylink --revoke`: links signed before this moment no longer open the account.
    pay_links_revoked_before: datetime | None = _aware(default=None)
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
    created_at: datetime = _aware(default_factory=utcnow)
    updated_at: datetime = _aware(default_factory=utcnow)


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
    received_at: datetime = _aware(default_factory=utcnow)


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
    created_at: datetime = _aware(default_factory=utcnow)


class CustomerCredit(SQLModel, table=True):
    """Money a customer holds with us, for example from an overpayment."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", index=True, max_length=64)
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    source: str = Field(max_length=32, description="overpayment, credit_note")
    payment_id: int | None = Field(default=None, foreign_key="payment.id")
    idempotency_key: str = Field(max_length=200, unique=True)
    created_at: datetime = _aware(default_factory=utcnow)


class CollectorTask(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    queue: str = Field(max_length=64)
    priority: str = Field(max_length=16)
    status: str = Field(default=TaskStatus.OPEN.value, max_length=16, index=True)
    outcome: str | None = Field(default=None, max_length=32, description="a TaskOutcome")
    note: str | None = Field(default=None, max_length=2000)
    due_at: datetime = _aware()
    idempotency_key: str = Field(max_length=200, unique=True)
    created_at: datetime = _aware(default_factory=utcnow)
    closed_at: datetime | None = _aware(default=None)
    # Who works it: an open task with an assignee is claimed (ledger.tasks).
    assignee_id: int | None = Field(default=None, foreign_key="app_user.id", index=True)
    claimed_at: datetime | None = _aware(default=None)
    # Past its SLA: moved to the supervisor queue, the queue it came from kept.
    breached_at: datetime | None = _aware(default=None)
    escalated_from_queue: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, max_length=100, description="of the last change")


class QueueMember(SQLModel, table=True):
    """A user who may be given a queue's tasks by round robin (ledger.routing)."""

    __tablename__ = "queue_member"
    __table_args__ = (sa.UniqueConstraint("queue", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    queue: str = Field(max_length=64)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    created_at: datetime = _aware(default_factory=utcnow)


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
    created_at: datetime = _aware(default_factory=utcnow)


class ErpPosting(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200, unique=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    target: str = Field(max_length=500)
    document: str = Field(sa_type=sa.Text)
    posted_at: datetime = _aware(default_factory=utcnow)


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
    created_at: datetime = _aware(default_factory=utcnow)
    updated_at: datetime = _aware(default_factory=utcnow)


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
    processed_at: datetime = _aware(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Append-only record of every change to money or lifecycle."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _aware(default_factory=utcnow, index=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id", index=True)
    detail: str = Field(default="{}", sa_type=sa.Text, description="JSON")


@sa.event.listens_for(AuditEvent, "before_update")
@sa.event.listens_for(AuditEvent, "before_delete")
def _audit_is_append_only(_mapper, _connection, target: AuditEvent) -> None:
    # The database refuses too (triggers in the initial migration); this names the mistake early.
    raise ValueError(f"audit event {target.id} is append-only: it cannot be changed or deleted")


class AppUser(SQLModel, table=True):
    """Someone who logs in to the console or calls the API: email (lower-cased), role, and the
    password only as an argon2 hash. `failed_logins` counts failures since the last success or
    lock; `totp_last_step` is the last one-time-code time step accepted, never accepted twice.
    Secrets and hashes stay out of `repr`, and so out of logs."""

    __tablename__ = "app_user"
    __table_args__ = (
        sa.CheckConstraint("email = lower(email)", name="email_lower_case"),
        sa.CheckConstraint("role IN ('viewer', 'collector', 'admin')", name="role_known"),
        sa.CheckConstraint("failed_logins >= 0", name="failed_logins_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    password_hash: str = Field(max_length=200, repr=False)
    role: Role = Field(sa_type=sa.String(16))
    totp_secret: str | None = Field(default=None, max_length=64, repr=False)
    totp_last_step: int | None = Field(default=None, sa_type=sa.BigInteger)
    failed_logins: int = 0
    locked_until: datetime | None = _aware(default=None)
    created_at: datetime = _aware(default_factory=utcnow)
    disabled: bool = False


class ApiKey(SQLModel, table=True):
    """An API key of one user, kept only as the SHA-256 of the whole key; `prefix` finds it."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    prefix: str = Field(max_length=8, index=True)
    key_hash: str = Field(max_length=64, unique=True, repr=False, description="SHA-256, hex")
    created_at: datetime = _aware(default_factory=utcnow)
    last_used_at: datetime | None = _aware(default=None)
    revoked: bool = False


class ConsoleSession(SQLModel, table=True):
    """A logged-in console browser: the SHA-256 of its cookie and the CSRF token of its forms."""

    __tablename__ = "console_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, repr=False, description="SHA-256, hex")
    user_id: int = Field(foreign_key="app_user.id", index=True)
    csrf_token: str = Field(max_length=64, repr=False)
    created_at: datetime = _aware(default_factory=utcnow)
    expires_at: datetime = _aware()
