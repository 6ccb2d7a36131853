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
    repeated: bool = Field(
        False, description="the idempotency key was used before: nothing new was recorded"
    )


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


class TimelineEntry(BaseModel):
    """One event in an invoice's story; an event repeated as it was is counted, not copied."""

    at: datetime
    event: str
    detail: str = ""
    channel: str | None = None
    template: str | None = None
    amount_minor: int | None = None
    count: int = Field(1, description="how many times it happened in a row")
    last_at: datetime | None = Field(None, description="the latest time, when count > 1")


class TimelineBatch(BaseModel):
    """Timeline entries for the ledger to keep: `entries[i]` is at position first_position + i.

    Positions count from 0 over the invoice's whole timeline. A batch may repeat positions
    the ledger already holds (a retried flush, or the last entry counted again since).
    """

    invoice_number: str
    first_position: int = Field(ge=0, description="the timeline position of entries[0]")
    entries: list[TimelineEntry]


class PlannedStep(BaseModel):
    """When one policy step runs: computed once, outside the workflow's replay path."""

    index: int = Field(description="position of the step in policy.steps")
    send_at: datetime
