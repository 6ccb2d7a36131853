"""What workflows send to activities and get back: plain pydantic models, safe in the sandbox."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class LedgerBalance(BaseModel):
    invoice_number: str
    currency: str
    total_minor: int
    balance_minor: int
    status: str
    customer_credit_minor: int = Field(0, description="credit the customer holds, same currency")


class PaymentApplication(BaseModel):
    """Apply money received to one invoice; anything above its balance becomes credit."""

    invoice_number: str
    amount_minor: int
    currency: str
    method: str = "manual"
    reference: str | None = None
    reason: str | None = None
    received_at: datetime
    idempotency_key: str
    actor: str = "system"


class AdjustmentApplication(BaseModel):
    """A credit note (negative), late fee (positive), write-off or void on one invoice."""

    invoice_number: str
    kind: str  # credit, late_fee, write_off, void, adjustment
    amount_minor: int
    reason: str | None = None
    idempotency_key: str
    actor: str = "system"


class StatusChange(BaseModel):
    invoice_number: str
    status: str
    reason: str | None = None
    actor: str = "system"


class CollectorTaskRequest(BaseModel):
    invoice_number: str
    queue: str
    priority: str
    due_at: datetime
    idempotency_key: str


class CollectorOutcome(BaseModel):
    """Close the invoice's open collector tasks: resumed, stopped, paid, ..."""

    invoice_number: str
    outcome: str
    note: str | None = None
    actor: str = "system"


class ReminderRequest(BaseModel):
    invoice_number: str
    template: str
    channels: list[str]
    step_index: int
    scheduled_for: datetime
    idempotency_key: str  # per step; the channel is appended for each message


class ChannelResult(BaseModel):
    channel: str
    status: str  # sent, suppressed, failed
    reason: str | None = None
    recipient: str | None = None


class ReminderOutcome(BaseModel):
    results: list[ChannelResult]


class ReceiptRequest(BaseModel):
    invoice_number: str
    paid_at: datetime  # the workflow's clock, so simulated receipts carry simulated dates
    idempotency_key: str


class ErpClearingRequest(BaseModel):
    invoice_number: str
    cleared_on: date
    idempotency_key: str


class ErpClearingResult(BaseModel):
    target: str
    already_posted: bool = False
