"""Payment plans a collector offered, kept in the ledger so the payer sees them and pays them
installment by installment. The invoice workflow runs the plan (checks each installment when it
falls due); the ledger keeps what was offered and tells where the payer stands.

Callers pass a session and commit (`ledger.db.session_scope`). Invariants:

- A plan is written once per idempotency key, with its installments (dates strictly rising,
  amounts adding up to the invoice's balance at that moment) and that balance.
- An invoice has at most one active plan: recording a plan replaces the one before it.
- A plan ends once, from active to its outcome; ending it again changes nothing.
- What was paid on a plan is what the balance came down since it was recorded; installments
  are paid in date order, so each is paid, part paid or not yet paid by that amount alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, select

from ledger.books import (
    AWAITING_PAYMENT,
    IdempotencyConflict,
    LedgerError,
    load_invoice,
    money_text,
    record_audit,
    write_once,
)
from ledger.models import Invoice, UTCDateTime, utcnow
from ledger.requests import PaymentPlanEnd, PaymentPlanRecord, PlanOutcome

NOTE_MAX_LENGTH = 2000
_OUTCOMES = ", ".join(f"'{outcome.value}'" for outcome in PlanOutcome)


class PaymentPlan(SQLModel, table=True):
    """Installments offered on one invoice; `installments` is a JSON list of
    {"due_on": ISO date, "amount_minor": int} in date order."""

    __tablename__ = "payment_plan"
    __table_args__ = (
        sa.CheckConstraint(f"status IN ({_OUTCOMES})", name="status_known"),
        sa.CheckConstraint("balance_at_start_minor > 0", name="balance_at_start_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    idempotency_key: str = Field(max_length=200, unique=True)
    installments: list[dict[str, Any]] = Field(sa_type=sa.JSON)
    balance_at_start_minor: int = Field(sa_type=sa.BigInteger)
    status: str = Field(default=PlanOutcome.ACTIVE.value, max_length=16)
    note: str | None = Field(default=None, max_length=NOTE_MAX_LENGTH)
    actor: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# --- writing -------------------------------------------------------------------------------


def record_plan(session: Session, req: PaymentPlanRecord) -> int:
    """Keep the plan and replace the invoice's active one; the plan's id, the same for a
    repeated key. LedgerError names the invoice and what is wrong with the installments."""
    stored = _stored_installments(req)

    def write() -> int:
        invoice = load_invoice(session, req.invoice_number, for_update=True)
        _check_installments(invoice, req)
        replaced = session.exec(
            select(PaymentPlan).where(
                PaymentPlan.invoice_id == invoice.id,
                PaymentPlan.status == PlanOutcome.ACTIVE.value,
            )
        ).all()
        plan = PaymentPlan(
            invoice_id=invoice.id,
            idempotency_key=req.idempotency_key,
            installments=stored,
            balance_at_start_minor=invoice.balance_minor,
            note=req.note[:NOTE_MAX_LENGTH] if req.note else None,
            actor=req.actor,
        )
        session.add(plan)
        session.flush()
        for old in replaced:
            _end(session, old, PlanOutcome.REPLACED, req.actor, replaced_by=req.idempotency_key)
        record_audit(
            session,
            req.actor,
            "payment_plan_recorded",
            invoice.id,
            {
                "plan_id": plan.id,
                "idempotency_key": req.idempotency_key,
                "installments": stored,
                "balance_minor": invoice.balance_minor,
                "replaced": [old.idempotency_key for old in replaced],
                "note": plan.note,
            },
        )
        return int(plan.id)

    def repeat(plan: PaymentPlan) -> int:
        invoice = load_invoice(session, req.invoice_number)
        if plan.invoice_id != invoice.id:
            raise IdempotencyConflict(
                f"payment plan key {req.idempotency_key!r} was already used for another "
                f"invoice, not {req.invoice_number}"
            )
        if plan.installments != stored:
            raise IdempotencyConflict(
                f"payment plan key {req.idempotency_key!r} was already used on invoice "
                f"{req.invoice_number} for other installments"
            )
        return int(plan.id)

    return write_once(session, PaymentPlan, req.idempotency_key, write, repeat)


def end_plan(session: Session, req: PaymentPlanEnd) -> bool:
    """Move the plan from active to `req.outcome`; False if it had ended already."""
    number = req.invoice_number
    if req.outcome == PlanOutcome.ACTIVE:
        raise LedgerError(
            f"invoice {number}: a payment plan ends as kept, broken, cancelled or replaced, "
            "not active"
        )
    invoice = load_invoice(session, number, for_update=True)
    plan = session.exec(
        select(PaymentPlan)
        .where(PaymentPlan.idempotency_key == req.plan_key)
        .execution_options(populate_existing=True)
    ).first()
    if plan is None or plan.invoice_id != invoice.id:
        raise LedgerError(f"invoice {number} has no payment plan with key {req.plan_key!r}")
    if plan.status != PlanOutcome.ACTIVE.value:
        return False
    _end(session, plan, req.outcome, "system")
    return True


def _end(
    session: Session,
    plan: PaymentPlan,
    outcome: PlanOutcome,
    actor: str,
    replaced_by: str | None = None,
) -> None:
    plan.status, plan.ended_at = outcome.value, utcnow()
    session.add(plan)
    detail: dict[str, Any] = {
        "plan_id": plan.id,
        "idempotency_key": plan.idempotency_key,
        "outcome": outcome.value,
    }
    if replaced_by is not None:
        detail["replaced_by"] = replaced_by
    record_audit(session, actor, "payment_plan_ended", plan.invoice_id, detail)
    session.flush()


def _stored_installments(req: PaymentPlanRecord) -> list[dict[str, Any]]:
    return [
        {"due_on": i.due_on.isoformat(), "amount_minor": i.amount_minor} for i in req.installments
    ]


def _check_installments(invoice: Invoice, req: PaymentPlanRecord) -> None:
    number, installments = invoice.number, req.installments
    if invoice.status not in AWAITING_PAYMENT:
        raise LedgerError(f"invoice {number} is {invoice.status}: a payment plan needs it open")
    if not installments:
        raise LedgerError(f"payment plan on invoice {number}: it has no installments")
    pairs = zip(installments, installments[1:], strict=False)
    for index, (before, after) in enumerate(pairs, start=1):
        if after.due_on <= before.due_on:
            raise LedgerError(
                f"payment plan on invoice {number}: installments[{index}].due_on "
                f"{after.due_on} is not after {before.due_on}"
            )
    for index, installment in enumerate(installments):
        if installment.amount_minor <= 0:
            raise LedgerError(
                f"payment plan on invoice {number}: installments[{index}].amount_minor must be "
                f"more than 0, got {installment.amount_minor}"
            )
    total = sum(installment.amount_minor for installment in installments)
    if total != invoice.balance_minor:
        raise LedgerError(
            f"payment plan on invoice {number}: the installments add up to "
            f"{money_text(total, invoice.currency)}; the balance is "
            f"{money_text(invoice.balance_minor, invoice.currency)}"
        )
