"""A payer's checkout request and the check of its lines, before anything is written.

Invariants: every line is on an open invoice of the draft's customer, at most once, in one
currency, for more than 0 and at most its balance less what processing checkouts already
carry. A short payment names a reason, and reason "other" a note; on an invoice with an active
payment plan, paying at least what the plan asks for now is no short payment. A refusal names
the line and field (`CheckoutItemError`) so the form can point at it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlmodel import Session, select

from ledger.books import AWAITING_PAYMENT, LedgerError, money_text
from ledger.models import (
    Checkout,
    CheckoutItem,
    CheckoutStatus,
    Invoice,
    PaymentMethodKind,
    ShortPayReason,
    utcnow,
)
from ledger.plan_views import active_plans

NOTE_MAX_LENGTH = 500


class CheckoutLine(BaseModel):
    invoice_number: str
    amount_minor: int
    reason_code: ShortPayReason | None = None
    note: str | None = None


class CheckoutDraft(BaseModel):
    customer_id: str
    request_id: str = Field(min_length=1, max_length=100)
    method: PaymentMethodKind
    lines: list[CheckoutLine]
    surcharge_percent: Decimal = Field(Decimal(0), ge=0, le=100)
    surcharge_cap_minor: int | None = Field(None, ge=0)


class CheckoutItemError(LedgerError):
    """One line of a checkout draft is refused; `index` and `field` say which, for the form."""

    def __init__(self, index: int, field: str, problem: str) -> None:
        self.index, self.field, self.problem = index, field, problem
        where = "items" if field == "items" else f"items[{index}].{field}"
        super().__init__(f"{where}: {problem}")


def checked_lines(session: Session, draft: CheckoutDraft) -> list[tuple[Invoice, CheckoutLine]]:
    """The draft's lines with their invoices, or CheckoutItemError for the first bad one."""
    if not draft.lines:
        raise CheckoutItemError(0, "items", "choose at least one invoice")
    invoices = {
        invoice.number: invoice
        for invoice in session.exec(
            select(Invoice).where(
                Invoice.customer_id == draft.customer_id,
                Invoice.number.in_({line.invoice_number for line in draft.lines}),
            )
        )
    }
    invoice_ids = [invoice.id for invoice in invoices.values()]
    pending = _pending_by_invoice(session, invoice_ids)
    # What a plan asks for now does not depend on the day, only the installments' statuses do.
    plans = active_plans(session, invoice_ids, utcnow().date())
    first_index: dict[str, int] = {}
    checked: list[tuple[Invoice, CheckoutLine]] = []
    for index, line in enumerate(draft.lines):
        number = line.invoice_number
        invoice = invoices.get(number)
        # Another customer's invoice gets the same answer as a missing one.
        if invoice is None or invoice.status not in AWAITING_PAYMENT or invoice.balance_minor <= 0:
            raise CheckoutItemError(index, "invoice", f"no open invoice {number} for this customer")
        if number in first_index:
            raise CheckoutItemError(
                index, "invoice", f"invoice {number} is already in items[{first_index[number]}]"
            )
        first_index[number] = index
        currency = checked[0][0].currency if checked else invoice.currency
        if invoice.currency != currency:
            raise CheckoutItemError(
                index,
                "invoice",
                f"invoice {number} is in {invoice.currency}, items[0] in {currency}: "
                "one checkout is one currency",
            )
        plan = plans.get(invoice.id)
        plan_due = plan.due_now_minor if plan is not None else None
        _check_amount(index, line, invoice, pending.get(invoice.id, 0), plan_due)
        checked.append((invoice, line))
    return checked


def _check_amount(
    index: int, line: CheckoutLine, invoice: Invoice, pending: int, plan_due: int | None = None
) -> None:
    """`plan_due`: what the invoice's active payment plan asks for now, if it has one."""

    def text(amount: int) -> str:
        return money_text(amount, invoice.currency)

    amount, balance, number = line.amount_minor, invoice.balance_minor, invoice.number
    payable = balance - pending
    if amount <= 0:
        raise CheckoutItemError(index, "amount", f"must be more than 0, got {text(amount)}")
    if amount > payable:
        problem = f"{text(amount)} is more than the balance {text(balance)} of invoice {number}"
        if pending:
            problem = (
                f"{text(amount)} is more than the {text(payable)} left to pay on invoice {number}"
                f" ({text(pending)} of its balance {text(balance)} is already being paid)"
            )
        raise CheckoutItemError(index, "amount", problem)
    # Payments still processing count towards the installment as they do towards the balance.
    keeps_plan = plan_due is not None and amount + pending >= plan_due
    if amount < payable and line.reason_code is None and not keeps_plan:
        problem = (
            f"paying {text(amount)} of the {text(payable)} due on invoice {number} needs a "
            "reason for paying less"
        )
        if plan_due is not None:
            problem += f" (its payment plan asks for {text(plan_due - pending)} now)"
        raise CheckoutItemError(index, "reason", problem)
    if line.reason_code == ShortPayReason.OTHER and clean_note(line.note) is None:
        raise CheckoutItemError(index, "note", "reason 'other' needs a note saying why")
    if line.note is not None and len(line.note.strip()) > NOTE_MAX_LENGTH:
        raise CheckoutItemError(
            index, "note", f"is {len(line.note.strip())} characters; at most {NOTE_MAX_LENGTH}"
        )


def clean_note(note: str | None) -> str | None:
    return (note.strip() or None) if note is not None else None


def _pending_by_invoice(session: Session, invoice_ids: list[int]) -> dict[int, int]:
    """What checkouts still processing carry for each invoice."""
    if not invoice_ids:
        return {}
    rows = session.execute(
        sa.select(CheckoutItem.invoice_id, sa.func.sum(CheckoutItem.amount_minor))
        .join(Checkout, Checkout.id == CheckoutItem.checkout_id)
        .where(
            CheckoutItem.invoice_id.in_(invoice_ids),
            Checkout.status == CheckoutStatus.PROCESSING.value,
        )
        .group_by(CheckoutItem.invoice_id)
    ).all()
    return {invoice_id: int(total) for invoice_id, total in rows}


def card_surcharge(draft: CheckoutDraft, base: int) -> int:
    if draft.method != PaymentMethodKind.CARD or base <= 0:
        return 0
    with localcontext() as context:
        context.prec = 60  # room for a 64-bit amount times a percent: one rounding, the last
        exact = Decimal(base) * draft.surcharge_percent / 100
        surcharge = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if draft.surcharge_cap_minor is not None:
        surcharge = min(surcharge, draft.surcharge_cap_minor)
    return surcharge
