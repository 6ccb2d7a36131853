"""What workflows send to activities and get back: plain pydantic models, safe in the sandbox."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pydantic import BaseModel, Field

# The ledger's own requests and answers travel between workflows and activities unchanged.
from ledger.requests import (
    AdjustmentApplication,
    Closing,
    CollectorOutcome,
    CollectorTaskRequest,
    Installment,
    InvoiceClosed,
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
from vocabulary import Channel, MessageStatus


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
    channel: Channel
    status: MessageStatus
    reason: str | None = None
    recipient: str | None = None


class ReminderOutcome(BaseModel):
    results: list[ChannelResult]


class ReminderDue(BaseModel):
    """An invoice's reminder step fell due: the customer's coordinator gathers it with the
    reminders of the customer's other invoices due with it, and sends them as one message."""

    reminder: ReminderRequest
    customer_id: str
    customer_timezone: str
    invoice_workflow_id: str = Field(description="where the coordinator reports the outcome")
    group: str = Field("", description="reminders with the same group go out as one message")
    expected: list[str] = Field(
        default_factory=list, description="invoices of the group the coordinator waits for"
    )


class GatheredReminder(BaseModel):
    due: ReminderDue
    arrived_at: datetime


class CoordinatorState(BaseModel):
    """Everything a customer's coordinator knows; carried whole when it continues as new."""

    waiting: list[GatheredReminder] = Field(default_factory=list)
    sent: dict[str, dict[date, int]] = Field(
        default_factory=dict, description="reminders sent by channel and the customer's day"
    )


class CoordinatorStart(BaseModel):
    """What a customer's coordinator is started with (the worker's settings), and the state
    it carries when it continues as new."""

    customer_id: str
    window: timedelta = Field(description="how long a group waits for invoices it expects")
    daily_limit: int = Field(1, ge=0, description="reminders a day per channel; 0: no limit")
    carried: CoordinatorState | None = None


class ReminderRequested(BaseModel):
    """What `request_reminder` did: sent the reminder itself (nothing to gather or limit), or
    handed it to the coordinator, which answers later."""

    sent_alone: ReminderOutcome | None = None


class ReminderSent(BaseModel):
    """The coordinator's answer to one invoice: what its reminder came to on each channel."""

    idempotency_key: str
    outcome: ReminderOutcome | None = None
    error: str | None = Field(None, description="why it could not be sent at all")


class GroupedReminder(BaseModel):
    """Reminders of one customer's invoices to send as one message per channel."""

    reminders: list[ReminderRequest] = Field(min_length=1)
    limited_channels: list[str] = Field(
        default_factory=list,
        description="channels the customer already got a reminder on today: not sent again",
    )


class GroupedOutcome(BaseModel):
    outcomes: dict[str, ReminderOutcome] = Field(description="by the reminder's idempotency key")


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
    "Closing",
    "CollectorOutcome",
    "CollectorTaskRequest",
    "CoordinatorStart",
    "CoordinatorState",
    "GatheredReminder",
    "ErpClearingRequest",
    "ErpClearingResult",
    "GroupedOutcome",
    "GroupedReminder",
    "Installment",
    "InvoiceClosed",
    "LedgerBalance",
    "NoteRequest",
    "PaymentApplication",
    "PaymentPlanEnd",
    "PaymentPlanRecord",
    "PlanOutcome",
    "PlannedStep",
    "ReceiptRequest",
    "ReminderDue",
    "ReminderOutcome",
    "ReminderRequest",
    "ReminderRequested",
    "ReminderSent",
    "StatusChange",
    "TaskBreach",
    "TimelineBatch",
    "TimelineEntry",
]
