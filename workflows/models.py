"""The invoice workflow's input, messages and state: pydantic models shared with callers."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from policies.schema import Policy


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
    # What-if simulations of past dates run on a server whose clock starts today: the
    # workflow reads its clock as workflow.now() minus this offset. Zero in production.
    clock_offset: timedelta = timedelta(0)


class Stage(StrEnum):
    SCHEDULED = "scheduled"  # waiting for the next reminder step
    PAUSED = "paused"  # promise to pay
    DISPUTED = "disputed"
    ESCALATED = "escalated"  # a collector owns it
    STOPPED = "stopped"  # no more reminders; waits for payment
    CLEARING = "clearing"  # paid, being posted to the ERP
    CLOSED = "closed"


class PaymentReceived(BaseModel):
    amount_minor: int = Field(description="minor units of the invoice currency, > 0")
    currency: str
    method: str = "manual"
    reference: str | None = None
    reason: str | None = Field(None, description="why a partial payment is partial")
    received_at: datetime | None = None
    actor: str = "system"


class PromiseToPay(BaseModel):
    pay_by: date
    amount_minor: int | None = Field(None, description="promised amount; default the balance")
    note: str | None = None
    actor: str = "system"


class Adjustment(BaseModel):
    """A credit note (negative amount) or other adjustment to the balance."""

    amount_minor: int
    kind: str = "credit"
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


class TimelineEntry(BaseModel):
    at: datetime
    event: str
    detail: str = ""
    channel: str | None = None
    template: str | None = None
    amount_minor: int | None = None


class InvoiceState(BaseModel):
    number: str
    customer_id: str
    currency: str
    balance_minor: int
    status: str
    stage: Stage
    next_step_at: datetime | None = None
    paused_until: datetime | None = None
    promise: PromiseToPay | None = None
    policy_name: str
    policy_version: int
    days_past_due: int
    timezone: str = Field("UTC", description="the zone of the invoice's calendar")
    timeline: list[TimelineEntry]
