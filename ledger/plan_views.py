"""Where a payer stands on their payment plans, on a given day: each installment paid, part
paid, due, overdue or upcoming, and what pays every installment through the next one.
Read-only; the plans themselves are `ledger.plans`.

Invariant: what was paid on a plan is what the balance came down since it was recorded, paid
to the installments in date order; what is due now is never more than the balance.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session

from ledger.models import Invoice
from ledger.plans import PaymentPlan
from ledger.requests import PlanOutcome


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
