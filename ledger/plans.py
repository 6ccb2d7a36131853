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

from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
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


class InstallmentStatus(StrEnum):
    """Where one installment stands on a given day."""

    PAID = "paid"
    PART_PAID = "part_paid"  # some of it paid, and its day not yet past
    DUE = "due"  # nothing of it paid yet: the next one to pay, or its day is today
    OVERDUE = "overdue"  # its day has passed and it is not fully paid
    UPCOMING = "upcoming"  # after the next one


class InstallmentView(BaseModel):
    due_on: date
    amount_minor: int
    paid_minor: int  # of this installment
    status: InstallmentStatus


class PlanView(BaseModel):
    """An active plan as the payer sees it on a day; amounts in the invoice's minor units."""

    plan_id: int
    plan_key: str
    invoice_id: int
    invoice_number: str
    currency: str
    balance_minor: int
    balance_at_start_minor: int
    paid_minor: int  # since the plan was recorded
    next_due_on: date  # of the first installment not fully paid
    due_now_minor: int  # what pays every installment through that one; at most the balance
    installments: list[InstallmentView]
    note: str | None = None
    created_at: datetime

    @property
    def behind(self) -> bool:
        """An installment's day has passed without it being paid in full."""
        return any(i.status == InstallmentStatus.OVERDUE for i in self.installments)


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


# --- reading -------------------------------------------------------------------------------


def active_plans(session: Session, invoice_ids: list[int], today: date) -> dict[int, PlanView]:
    """The active plan of each of these invoices that still has a balance, by invoice id;
    installment statuses as of `today` (the amounts do not depend on the day)."""
    if not invoice_ids:
        return {}
    views = _views(session, Invoice.id.in_(set(invoice_ids)), today)  # type: ignore[union-attr]
    return {view.invoice_id: view for view in views}


def customer_plans(session: Session, customer_id: str, today: date) -> dict[str, PlanView]:
    """`active_plans` for every invoice of one customer, by invoice number."""
    views = _views(session, Invoice.customer_id == customer_id, today)
    return {view.invoice_number: view for view in views}


def _views(session: Session, where: Any, today: date) -> list[PlanView]:
    rows = session.execute(
        sa.select(PaymentPlan, Invoice.number, Invoice.currency, Invoice.balance_minor)
        .join(Invoice, Invoice.id == PaymentPlan.invoice_id)
        .where(
            where,
            PaymentPlan.status == PlanOutcome.ACTIVE.value,
            Invoice.balance_minor > 0,
        )
        .order_by(PaymentPlan.id)
    ).all()
    return [
        plan_view(plan, number, currency, balance, today)
        for plan, number, currency, balance in rows
    ]


def plan_view(
    plan: PaymentPlan, number: str, currency: str, balance_minor: int, today: date
) -> PlanView:
    """Where the payer stands on `plan` with the invoice's balance at `balance_minor`."""
    paid = max(0, plan.balance_at_start_minor - balance_minor)
    views: list[InstallmentView] = []
    through = 0  # what every installment so far adds up to
    next_due_on: date | None = None
    due_now = balance_minor
    for stored in plan.installments:
        due_on, amount = date.fromisoformat(stored["due_on"]), int(stored["amount_minor"])
        covered = min(max(paid - through, 0), amount)
        through += amount
        if covered == amount:
            status = InstallmentStatus.PAID
        elif due_on < today:
            status = InstallmentStatus.OVERDUE
        elif covered:
            status = InstallmentStatus.PART_PAID
        elif next_due_on is None or due_on == today:
            status = InstallmentStatus.DUE
        else:
            status = InstallmentStatus.UPCOMING
        if covered < amount and next_due_on is None:
            next_due_on, due_now = due_on, min(through - paid, balance_minor)
        views.append(
            InstallmentView(due_on=due_on, amount_minor=amount, paid_minor=covered, status=status)
        )
    if next_due_on is None:
        # Paid through the last installment, yet a balance is left (a fee since): it is due now.
        next_due_on = views[-1].due_on
    return PlanView(
        plan_id=int(plan.id),
        plan_key=plan.idempotency_key,
        invoice_id=plan.invoice_id,
        invoice_number=number,
        currency=currency,
        balance_minor=balance_minor,
        balance_at_start_minor=plan.balance_at_start_minor,
        paid_minor=paid,
        next_due_on=next_due_on,
        due_now_minor=due_now,
        installments=views,
        note=plan.note,
        created_at=plan.created_at,
    )
