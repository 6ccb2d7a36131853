"""What workflows send to activities and get back: plain pydantic models, safe in the sandbox."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

# The ledger's own requests and answers travel between workflows and activities unchanged.
from ledger.requests import (
    AdjustmentApplication,
    CollectorOutcome,
    CollectorTaskRequest,
    Installment,
    LedgerBalance,
    NoteRequest,
    PaymentApplication,
    PaymentPlanEnd,
    PaymentPlanRecord,
    PlanOutcome,
    StatusChange,
    TaskBreach,
    TimelineBatch,
    TimelineEntry,
)


class ReminderRequest(BaseModel):
    invoice_number: str
    template: str
    channels: list[str]
    step_index: int
    scheduled_for: datetime
    idempotency_key: str  # per step; the channel is appended for each message
    one_off: bool = Field(
        False, description="a collector's message: sent at once, never grouped, even if paused"
    )


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


class PlannedStep(BaseModel):
    """When one policy step runs: computed once, outside the workflow's replay path."""

    index: int = Field(description="position of the step in policy.steps")
    send_at: datetime


__all__ = [
    "AdjustmentApplication",
    "ChannelResult",
    "CollectorOutcome",
    "CollectorTaskRequest",
    "ErpClearingRequest",
    "ErpClearingResult",
    "Installment",
    "LedgerBalance",
    "NoteRequest",
    "PaymentApplication",
    "PaymentPlanEnd",
    "PaymentPlanRecord",
    "PlanOutcome",
    "PlannedStep",
    "ReceiptRequest",
    "ReminderOutcome",
    "ReminderRequest",
    "StatusChange",
    "TaskBreach",
    "TimelineBatch",
    "TimelineEntry",
]
