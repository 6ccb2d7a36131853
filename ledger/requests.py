"""What the ledger is asked to do and what it answers: plain pydantic models.

Declared in the ledger, so `ledger/` needs nothing from the layers above it; their words
(statuses, adjustment kinds, task outcomes) are the shared ones of `vocabulary`. Temporal
activities pass these through unchanged (`activities.models` re-exports them), and they are
safe inside the workflow sandbox.

A request names its kind, status or outcome as a plain string, so that an unknown one reaches
the ledger and is refused there with a message naming the invoice.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from ledger.currencies import MAX_MINOR
from vocabulary import InvoiceStatus


class LedgerBalance(BaseModel):
    invoice_number: str
    currency: str
    total_minor: int
    balance_minor: int
    status: InvoiceStatus
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
    kind: str  # one of vocabulary.REQUESTED_ADJUSTMENTS
    amount_minor: int
    reason: str | None = None
    idempotency_key: str
    actor: str = "system"


class StatusChange(BaseModel):
    invoice_number: str
    status: str  # an InvoiceStatus
    reason: str | None = None
    actor: str = "system"
    request_id: str | None = Field(None, description="the caller's, for the audit trail")


class CollectorTaskRequest(BaseModel):
    invoice_number: str
    queue: str
    priority: str
    due_at: datetime
    idempotency_key: str


class CollectorOutcome(BaseModel):
    """Close the invoice's open collector tasks: resumed, stopped, paid, ..."""

    invoice_number: str
    outcome: str  # a TaskOutcome
    note: str | None = None
    actor: str = "system"
    request_id: str | None = Field(None, description="the caller's, for the audit trail")


class TaskBreach(BaseModel):
    """A collector task past its SLA: it moves, unassigned, to the supervisor queue."""

    task_key: str = Field(description="the idempotency key the task was opened with")
    supervisor_queue: str
    at: datetime


class Installment(BaseModel):
    """One payment of a plan: what is due by the end of which day."""

    due_on: date
    amount_minor: int = Field(gt=0, le=MAX_MINOR)


class PlanOutcome(StrEnum):
    """How a payment plan ended; a plan still running is `active`."""

    ACTIVE = "active"
    KEPT = "kept"  # every installment paid by its day
    BROKEN = "broken"  # an installment missed: dunning resumed
    CANCELLED = "cancelled"  # a collector took the invoice elsewhere (dispute, stop, ...)
    REPLACED = "replaced"  # a newer plan took its place


class PaymentPlanRecord(BaseModel):
    """A plan a collector offered, kept in the ledger so the payer's portal can show it."""

    invoice_number: str
    installments: list[Installment] = Field(min_length=1, max_length=60)
    note: str | None = None
    actor: str = "system"
    idempotency_key: str


class PaymentPlanEnd(BaseModel):
    invoice_number: str
    plan_key: str = Field(description="the idempotency key the plan was recorded with")
    outcome: PlanOutcome


class NoteRequest(BaseModel):
    """A collector's note or logged call on an invoice, kept once per key."""

    invoice_number: str
    kind: str  # a NoteKind: note or call
    text: str = Field(min_length=1, max_length=4000)
    actor: str
    idempotency_key: str


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


class Closing(BaseModel):
    """Close a paid and cleared invoice and keep its story: one ledger transaction."""

    status: StatusChange
    timeline: TimelineBatch


class InvoiceClosed(BaseModel):
    balance: LedgerBalance
    timeline_refused: str | None = Field(
        None, description="why the ledger kept another story for the invoice, if it did"
    )
