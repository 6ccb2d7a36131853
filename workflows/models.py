"""The invoice workflow's input, messages and state: pydantic models shared with callers."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from activities.models import Installment, PlannedStep, ReminderSent, TimelineEntry
from ledger.currencies import MAX_MINOR
from policies.schema import Policy, Priority, Slug
from vocabulary import AdjustmentKind, Channel, DeliveryKind, InvoiceStatus


class InvoiceInput(BaseModel):
    number: str
    customer_id: str
    customer_timezone: str
    currency: str
    currency_exponent: int = Field(2, description="decimal places of the currency (JPY 0)")
    balance_minor: int
    issued_on: date
    due_on: date
    policy: Policy = Field(description="snapshot: an in-flight invoice keeps its policy")
    status: InvoiceStatus = Field(
        InvoiceStatus.OPEN,
        description="the ledger's status when the workflow starts (sync restarts)",
    )
    # What-if simulations of past dates run on a server whose clock starts today: the
    # workflow reads its clock as workflow.now() minus this offset. Zero in production.
    clock_offset: timedelta = timedelta(0)
    progress: InvoiceProgress | None = Field(
        None, description="where a run that continued as new left off; None on the first run"
    )
    schedule: list[PlannedStep] | None = Field(
        None,
        description="the steps still to run, planned by the starter as it started the run; "
        "None: the run plans them itself as it starts",
    )
    earlier_timeline: list[TimelineEntry] = Field(
        default_factory=list,
        description="the story the ledger kept of an earlier workflow (`dunwise sync` restarts)",
    )


class Stage(StrEnum):
    SCHEDULED = "scheduled"  # waiting for the next reminder step
    PAUSED = "paused"  # promise to pay
    DISPUTED = "disputed"
    ESCALATED = "escalated"  # a collector owns it
    STOPPED = "stopped"  # no more reminders; waits for payment
    PAYMENT_PENDING = "payment_pending"  # a bank debit is on its way: reminders wait for it
    ON_PLAN = "on_plan"  # a payment plan: reminders wait while its installments are kept
    CLEARING = "clearing"  # paid, being posted to the ERP
    CLOSED = "closed"


class PaymentReceived(BaseModel):
    amount_minor: int = Field(description="minor units of the invoice currency, > 0", le=MAX_MINOR)
    currency: str
    method: str = "manual"
    reference: str | None = None
    reason: str | None = Field(None, description="why a partial payment is partial")
    received_at: datetime | None = None
    actor: str = "system"


class PortalEventKind(StrEnum):
    """What a payer did in the portal, told to the invoice's timeline for the collectors."""

    PORTAL_VISIT = "portal_visit"
    INVOICE_VIEWED = "invoice_viewed"
    CHECKOUT_STARTED = "checkout_started"
    CHECKOUT_ABANDONED = "checkout_abandoned"
    PAYMENT_DECLINED = "payment_declined"


class PortalEvent(BaseModel):
    event: PortalEventKind
    detail: str = Field("", max_length=500)


class DeliveryNote(BaseModel):
    """What a provider told of a message about the invoice, for its timeline."""

    kind: DeliveryKind
    channel: Channel
    detail: str = Field("", max_length=500)


class ContactFailure(BaseModel):
    """A provider could not deliver a message about the invoice (a hard bounce, a dropped
    email, an unknown number)."""

    channel: Channel
    failed_key: str = Field(min_length=1, max_length=200, description="the message's key")
    template: str | None = Field(None, description="the reminder's, to send on the other channel")
    reason: str = Field("", max_length=200)


class PaymentPending(BaseModel):
    """Money on its way (a bank debit processing): reminders wait until it lands or fails."""

    reference: str = Field(min_length=1, max_length=255)
    amount_minor: int = Field(gt=0, le=MAX_MINOR)
    method: str


class PaymentFailed(BaseModel):
    reference: str = Field(min_length=1, max_length=255)
    reason: str


class BalanceReopened(BaseModel):
    """The ledger took money back (a refund or chargeback): its new balance for the invoice."""

    balance_minor: int = Field(ge=0, le=MAX_MINOR)
    status: InvoiceStatus
    amount_minor: int = Field(gt=0, le=MAX_MINOR)
    reason: str


class NoteKind(StrEnum):
    NOTE = "note"
    CALL = "call"


class Note(BaseModel):
    """A collector's note, or a call they logged, on the invoice's timeline and in the ledger."""

    text: str = Field(min_length=1, max_length=4000)
    kind: NoteKind = NoteKind.NOTE
    actor: str = "system"


class ManualEscalation(BaseModel):
    """A collector takes the invoice out of automatic dunning into a queue, now."""

    queue: Slug | None = Field(None, description="default: the policy's escalation queue")
    priority: Priority = "high"
    sla: timedelta = timedelta(days=2)
    note: str | None = None
    actor: str = "system"


class OneOffMessage(BaseModel):
    """A collector sends the payer one message from a template now, outside the schedule."""

    template: str = Field(min_length=1, max_length=64)
    channels: list[Channel] = Field(default_factory=lambda: ["email"], min_length=1, max_length=2)
    actor: str = "system"


class PaymentPlanOffer(BaseModel):
    """Installments, by date, that add up to the balance; dunning waits while they are kept."""

    installments: list[Installment] = Field(min_length=1, max_length=60)
    note: str | None = None
    actor: str = "system"


class PaymentPlan(BaseModel):
    installments: list[Installment]
    ledger_key: str | None = Field(
        None, description="the key the ledger keeps the plan under, for the payer's portal"
    )
    kept: int = Field(0, description="installments kept so far")
    paid_minor: int = Field(0, description="received since the plan began")


class PromiseToPay(BaseModel):
    pay_by: date
    amount_minor: int | None = Field(
        None, description="promised amount; default the balance", le=MAX_MINOR
    )
    note: str | None = None
    actor: str = "system"


class Adjustment(BaseModel):
    """A credit note (negative amount) or other adjustment to the balance."""

    amount_minor: int = Field(ge=-MAX_MINOR, le=MAX_MINOR)
    kind: AdjustmentKind = AdjustmentKind.CREDIT  # a collector's: credit or adjustment
    reason: str
    actor: str = "system"


class Dispute(BaseModel):
    reason: str
    actor: str = "system"


class Resolution(BaseModel):
    """Ends a dispute, a pause or an escalation: resume dunning or stop it."""

    action: str = Field("resume", description="resume or stop")
    note: str | None = None
    actor: str = "system"


class Closure(BaseModel):
    """Void or write off what is left."""

    reason: str
    actor: str = "system"


class InvoiceState(BaseModel):
    number: str
    customer_id: str
    currency: str
    balance_minor: int
    status: InvoiceStatus
    stage: Stage
    next_step_at: datetime | None = None
    paused_until: datetime | None = None
    promise: PromiseToPay | None = None
    plan: PaymentPlan | None = None
    policy_name: str
    policy_version: int
    days_past_due: int
    timezone: str = Field("UTC", description="the zone of the invoice's calendar")
    timeline: list[TimelineEntry]


class SlaWatch(BaseModel):
    """A task escalated by hand: when its SLA passes it moves to the supervisor queue."""

    task_key: str
    due_at: datetime
    supervisor_queue: str


class InvoiceProgress(BaseModel):
    """Everything the invoice workflow knows; carried whole when it continues as new."""

    status: InvoiceStatus = InvoiceStatus.OPEN
    stage: Stage = Stage.SCHEDULED
    stage_after_pause: Stage = Stage.SCHEDULED
    balance_minor: int
    received_minor: int = 0
    paid_since_promise_minor: int = 0
    promise: PromiseToPay | None = None
    paused_until: datetime | None = None
    next_step_at: datetime | None = None
    schedule: list[PlannedStep] = Field(default_factory=list)
    position: int = Field(0, description="the schedule entry to run next")
    timeline: list[TimelineEntry] = Field(default_factory=list)
    timeline_saved: int = Field(0, description="entries before this one are in the ledger")
    handled_requests: list[str] = Field(
        default_factory=list, description="recent request ids: the same id twice is one change"
    )
    plan: PaymentPlan | None = None
    promise_closed_tasks: bool = Field(
        False, description="the promise was the collector's outcome: broken, a task reopens"
    )
    sla_watch: SlaWatch | None = None
    awaiting_reminder: str | None = Field(
        None, description="the key of the reminder the customer's coordinator is sending"
    )
    reminder_answer: ReminderSent | None = None
    pending_payments: list[str] = Field(
        default_factory=list, description="references of payments on their way (bank debits)"
    )
    engaged_at: datetime | None = Field(
        None, description="when a reminder was first read or its pay link opened"
    )
    raised_priority: str | None = Field(
        None, description="the task priority set because no payment followed the engagement"
    )


InvoiceInput.model_rebuild()
