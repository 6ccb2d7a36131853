"""What a collector may do to an invoice, in one place for the console's pages, its JSON API
and anything else: each action is an update to the invoice's workflow under the caller's
request id, allowed by role (a viewer reads, a collector acts, only an admin voids or writes
off).

Invariants:
- The role is checked before anything is sent; a refusal by the workflow comes back as
  `ActionRefused` with its reason, and nothing is recorded.
- The same request id twice is one change (Temporal's update id, the ledger's keys).
- A one-off message names a template that exists for both channels and is not a receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, field_validator
from sqlmodel import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.rendering import available_templates
from invoices import send_request
from ledger.db import session_scope
from ledger.inputs import parse_amount, positive_minor_units
from ledger.models import Invoice, Role, ShortPayReason
from payments.services import PaymentServices
from policies.schema import Priority, Slug
from vocabulary import AdjustmentKind, Channel
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    Adjustment,
    Closure,
    Dispute,
    Installment,
    InvoiceState,
    ManualEscalation,
    Note,
    NoteKind,
    OneOffMessage,
    PaymentPlanOffer,
    PromiseToPay,
    Resolution,
)

RequestId = Field(
    min_length=1,
    max_length=100,
    pattern=r"^[A-Za-z0-9._:-]+$",
    description="chosen by the caller: the same id again is the same change",
)
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
# Sent by the workflow itself once money arrives; never by hand.
RECEIPT_TEMPLATES = frozenset({"receipt", "checkout_receipt"})


def message_templates() -> list[str]:
    """The templates a collector may send the payer by hand, by name."""
    return sorted(available_templates() - RECEIPT_TEMPLATES)


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    kind: NoteKind = NoteKind.NOTE
    request_id: str = RequestId


class PromiseIn(BaseModel):
    pay_by: date
    amount: str | None = Field(None, max_length=40, description="decimal string; default all")
    note: str | None = Field(None, max_length=2000)
    request_id: str = RequestId


class DisputeIn(BaseModel):
    reason_code: ShortPayReason
    note: str | None = Field(None, max_length=2000)
    request_id: str = RequestId


class OutcomeIn(BaseModel):
    note: str | None = Field(None, max_length=2000)
    request_id: str = RequestId


class EscalateIn(BaseModel):
    queue: Slug | None = None
    priority: Priority = "high"
    sla_days: int = Field(2, ge=1, le=3650)
    note: str | None = Field(None, max_length=2000)
    request_id: str = RequestId


class InstallmentIn(BaseModel):
    due_on: date
    amount: str = Field(max_length=40, description="decimal string, e.g. 100.00")


class PlanIn(BaseModel):
    installments: list[InstallmentIn] = Field(min_length=1, max_length=60)
    note: str | None = Field(None, max_length=2000)
    request_id: str = RequestId


class WriteOffIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)
    request_id: str = RequestId


class CreditIn(BaseModel):
    amount: str = Field(max_length=40, description="decimal string of the credit, e.g. 25.00")
    reason: Reason
    request_id: str = RequestId


class VoidIn(BaseModel):
    reason: Reason
    request_id: str = RequestId


class MessageIn(BaseModel):
    template: str = Field(min_length=1, max_length=64, description="e.g. overdue_friendly")
    channels: list[Channel] = Field(default_factory=lambda: ["email"], min_length=1, max_length=2)
    request_id: str = RequestId

    @field_validator("channels", mode="before")
    @classmethod
    def _once_each(cls, channels: Any) -> Any:
        """A channel named twice is sent to once."""
        if isinstance(channels, list) and all(isinstance(c, str) for c in channels):
            return list(dict.fromkeys(channels))
        return channels


BODIES: dict[str, type[BaseModel]] = {
    "notes": NoteIn,
    "promise": PromiseIn,
    "dispute": DisputeIn,
    "resume": OutcomeIn,
    "stop": OutcomeIn,
    "escalate": EscalateIn,
    "plan": PlanIn,
    "write-off": WriteOffIn,
    "credit": CreditIn,
    "void": VoidIn,
    "message": MessageIn,
}
NEEDS: dict[str, Role] = {action: Role.COLLECTOR for action in BODIES} | {
    "write-off": Role.ADMIN,
    "void": Role.ADMIN,
}


@dataclass
class ActionRefused(Exception):
    status: int  # 403 role, 404 no invoice, 409 the invoice refused, 422 bad input, 504 no answer
    message: str
    field: str | None = None


async def perform(
    services: PaymentServices,
    *,
    role: Role,
    actor: str,
    number: str,
    action: str,
    body: BaseModel,
) -> InvoiceState:
    """Do `action` on the invoice for a user of `role`, recorded as done by `actor`."""
    if action not in BODIES:
        raise ActionRefused(404, f"no action {action!r}")
    if not role.includes(NEEDS[action]):
        raise ActionRefused(403, f"{action} needs the {NEEDS[action]} role; you are {role}")
    update, message = await _message(services, number, action, body, actor)
    client = await services.temporal()
    try:
        return await send_request(
            client,
            number,
            update,
            message,
            request_id=body.request_id,  # type: ignore[attr-defined]
            answer_within=services.settings.request_timeout_seconds,
        )
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise ActionRefused(409, getattr(cause, "message", None) or str(cause)) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ActionRefused(404, f"no open invoice {number}") from None
        raise
    except TimeoutError:
        raise ActionRefused(
            504,
            "no answer in time: nothing is recorded yet; send it again with the same "
            "request_id to see how it ended",
        ) from None


async def _message(
    services: PaymentServices, number: str, action: str, body: Any, actor: str
) -> tuple[Any, Any]:
    """The workflow update for the action, and its message."""
    match action:
        case "notes":
            return InvoiceWorkflow.add_note, Note(text=body.text, kind=body.kind, actor=actor)
        case "promise":
            return InvoiceWorkflow.promise_to_pay, await _promise(services, number, body, actor)
        case "dispute":
            reason = body.reason_code.value + (f": {body.note}" if body.note else "")
            return InvoiceWorkflow.record_dispute, Dispute(reason=reason, actor=actor)
        case "resume" | "stop":
            outcome = Resolution(action=action, note=body.note, actor=actor)
            return InvoiceWorkflow.record_outcome, outcome
        case "escalate":
            return InvoiceWorkflow.escalate, ManualEscalation(
                queue=body.queue,
                priority=body.priority,
                sla=timedelta(days=body.sla_days),
                note=body.note,
                actor=actor,
            )
        case "plan":
            return InvoiceWorkflow.offer_plan, PaymentPlanOffer(
                installments=_installments(services, number, body),
                note=body.note,
                actor=actor,
            )
        case "credit":
            amount_minor = _amount(services, number, body.amount, "amount")
            credit = Adjustment(
                amount_minor=-amount_minor,
                kind=AdjustmentKind.CREDIT,
                reason=body.reason,
                actor=actor,
            )
            return InvoiceWorkflow.adjust, credit
        case "void":
            return InvoiceWorkflow.void, Closure(reason=body.reason, actor=actor)
        case "message":
            _check_template(body.template)
            message = OneOffMessage(template=body.template, channels=body.channels, actor=actor)
            return InvoiceWorkflow.send_message, message
        case _:  # write-off
            return InvoiceWorkflow.write_off, Closure(reason=body.reason, actor=actor)


async def _promise(
    services: PaymentServices, number: str, body: PromiseIn, actor: str
) -> PromiseToPay:
    amount_minor = None
    if body.amount is not None:
        amount_minor = _amount(services, number, body.amount, "amount")
    return PromiseToPay(pay_by=body.pay_by, amount_minor=amount_minor, note=body.note, actor=actor)


def _installments(services: PaymentServices, number: str, body: PlanIn) -> list[Installment]:
    currency = _currency(services, number)
    installments = []
    for index, item in enumerate(body.installments):
        amount_minor = _amount(
            services, number, item.amount, f"installments[{index}].amount", currency=currency
        )
        installments.append(Installment(due_on=item.due_on, amount_minor=amount_minor))
    return installments


def _amount(
    services: PaymentServices, number: str, text: str, field: str, *, currency: str | None = None
) -> int:
    """A positive amount typed in the invoice's currency, in minor units; 422 naming `field`."""
    currency = currency or _currency(services, number)
    try:
        return positive_minor_units(parse_amount(text), currency)
    except ValueError as err:
        raise ActionRefused(422, f"{field}: {err}", field=field) from None


def _check_template(template: str) -> None:
    available = message_templates()
    if template not in available:
        raise ActionRefused(
            422,
            f"template: no message template {template!r}; available: {', '.join(available)}",
            field="template",
        )


def _currency(services: PaymentServices, number: str) -> str:
    with session_scope(services.engine) as session:
        currency = session.exec(select(Invoice.currency).where(Invoice.number == number)).first()
    if currency is None:
        raise ActionRefused(404, f"no open invoice {number}")
    return currency
