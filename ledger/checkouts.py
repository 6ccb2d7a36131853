"""Portal checkouts: a payer's payment over open invoices, written once per request.

Invariants:

- A checkout is written whole with its items, or not at all, once per (customer, request id):
  the same request again gets the checkout already written, even when two race; the same
  request id with other lines or another method is refused.
- Every item is on an open invoice of the checkout's customer, at most once, for more than 0
  and at most its balance less what processing checkouts already carry. A short payment names
  a reason, and reason "other" a note; on an invoice with an active payment plan, paying at
  least what the plan asks for now is no short payment. One checkout is one currency.
- charge = items - credit + surcharge: the customer's credit pays first; a card surcharge is
  on the rest only, rounded half up to the minor unit and capped.

What the payment provider answers afterwards is `ledger.checkout_events`; money taken back or
left over is `ledger.reversals`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ledger.accounts import UnknownCustomer
from ledger.books import (
    AWAITING_PAYMENT,
    IdempotencyConflict,
    LedgerError,
    available_credit,
    first_row,
    money_text,
    record_audit,
)
from ledger.currencies import MAX_MINOR
from ledger.models import (
    Checkout,
    CheckoutItem,
    CheckoutStatus,
    Customer,
    Invoice,
    PaymentMethodKind,
    ShortPayReason,
    utcnow,
)
from ledger.plans import active_plans

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


class UnknownCheckout(LedgerError):
    pass


# --- opening -------------------------------------------------------------------------------


def open_checkout(session: Session, draft: CheckoutDraft) -> Checkout:
    """Write the checkout the payer asked for, or return the one this request already wrote."""
    existing = _by_request(session, draft.customer_id, draft.request_id)
    if existing is not None:
        return _same_request(session, existing, draft)
    if session.get(Customer, draft.customer_id) is None:
        raise UnknownCustomer(f"customer {draft.customer_id!r} does not exist")
    lines = _checked_lines(session, draft)
    currency = lines[0][0].currency
    items = sum(line.amount_minor for _, line in lines)
    credit = min(max(available_credit(session, draft.customer_id, currency), 0), items)
    surcharge = _surcharge(draft, items - credit)
    if items + surcharge > MAX_MINOR:
        raise CheckoutItemError(0, "items", "together these amounts pass the ledger's limit")
    checkout = Checkout(
        customer_id=draft.customer_id,
        request_id=draft.request_id,
        currency=currency,
        method=draft.method.value,
        items_minor=items,
        credit_minor=credit,
        surcharge_minor=surcharge,
        charge_minor=items - credit + surcharge,
    )
    try:
        with session.begin_nested():
            session.add(checkout)
            session.flush()
            for invoice, line in lines:
                session.add(
                    CheckoutItem(
                        checkout_id=checkout.id,
                        invoice_id=invoice.id,
                        invoice_number=invoice.number,
                        amount_minor=line.amount_minor,
                        reason_code=line.reason_code,
                        note=_clean_note(line.note),
                    )
                )
            record_audit(
                session,
                f"customer:{draft.customer_id}",
                "checkout_created",
                None,
                {
                    "checkout_id": checkout.id,
                    "request_id": draft.request_id,
                    "method": draft.method.value,
                    "currency": currency,
                    "items": {invoice.number: line.amount_minor for invoice, line in lines},
                    "credit_minor": credit,
                    "surcharge_minor": surcharge,
                    "charge_minor": checkout.charge_minor,
                },
            )
            session.flush()
    except IntegrityError:
        # A concurrent request with the same id committed first: it is the checkout.
        winner = _by_request(session, draft.customer_id, draft.request_id)
        if winner is None:
            raise
        return _same_request(session, winner, draft)
    return checkout


def _by_request(session: Session, customer_id: str, request_id: str) -> Checkout | None:
    return session.exec(
        select(Checkout).where(
            Checkout.customer_id == customer_id, Checkout.request_id == request_id
        )
    ).first()


def _same_request(session: Session, existing: Checkout, draft: CheckoutDraft) -> Checkout:
    held = [
        (item.invoice_number, item.amount_minor, item.reason_code, item.note)
        for item in checkout_items(session, existing.id)
    ]
    asked = [
        (line.invoice_number, line.amount_minor, line.reason_code, _clean_note(line.note))
        for line in draft.lines
    ]
    if existing.method != draft.method or held != asked:

        def listed(lines: list[tuple]) -> str:
            return ", ".join(f"{n} {money_text(a, existing.currency)}" for n, a, *_ in lines)

        raise IdempotencyConflict(
            f"checkout request {draft.request_id!r} of customer {draft.customer_id} was already "
            f"used for checkout {existing.id} ({existing.method}: {listed(held)}); this request "
            f"asks for {draft.method.value}: {listed(asked) or 'no invoices'}"
        )
    return existing


def _checked_lines(session: Session, draft: CheckoutDraft) -> list[tuple[Invoice, CheckoutLine]]:
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
    if line.reason_code == ShortPayReason.OTHER and _clean_note(line.note) is None:
        raise CheckoutItemError(index, "note", "reason 'other' needs a note saying why")
    if line.note is not None and len(line.note.strip()) > NOTE_MAX_LENGTH:
        raise CheckoutItemError(
            index, "note", f"is {len(line.note.strip())} characters; at most {NOTE_MAX_LENGTH}"
        )


def _clean_note(note: str | None) -> str | None:
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


def _surcharge(draft: CheckoutDraft, base: int) -> int:
    if draft.method != PaymentMethodKind.CARD or base <= 0:
        return 0
    with localcontext() as context:
        context.prec = 60  # room for a 64-bit amount times a percent: one rounding, the last
        exact = Decimal(base) * draft.surcharge_percent / 100
        surcharge = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if draft.surcharge_cap_minor is not None:
        surcharge = min(surcharge, draft.surcharge_cap_minor)
    return surcharge


# --- reading -------------------------------------------------------------------------------


def checkout_by_intent(session: Session, payment_intent_id: str) -> Checkout | None:
    return session.exec(
        select(Checkout).where(Checkout.payment_intent_id == payment_intent_id)
    ).first()


def checkout_items(session: Session, checkout_id: int) -> list[CheckoutItem]:
    return list(
        session.exec(
            select(CheckoutItem)
            .where(CheckoutItem.checkout_id == checkout_id)
            .order_by(CheckoutItem.id)
        )
    )


def get_checkout(session: Session, customer_id: str, checkout_id: int) -> Checkout:
    """The customer's checkout; another customer's is reported like a missing one."""
    checkout = session.exec(
        select(Checkout).where(Checkout.id == checkout_id, Checkout.customer_id == customer_id)
    ).first()
    if checkout is None:
        raise UnknownCheckout(f"customer {customer_id!r} has no checkout {checkout_id}")
    return checkout


def load_checkout(session: Session, checkout_id: int) -> Checkout:
    """The checkout, locked for the rest of the transaction (PostgreSQL), freshly read."""
    checkout = first_row(
        session, select(Checkout).where(Checkout.id == checkout_id), for_update=True
    )
    if checkout is None:
        raise UnknownCheckout(f"checkout {checkout_id} does not exist")
    return checkout


def set_stripe_customer_id(session: Session, customer_id: str, stripe_id: str) -> None:
    if not stripe_id or len(stripe_id) > 64:
        raise LedgerError(f"customer {customer_id}: a Stripe customer id has 1 to 64 characters")
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise UnknownCustomer(f"customer {customer_id!r} does not exist")
    if customer.stripe_customer_id != stripe_id:
        customer.stripe_customer_id = stripe_id
        session.add(customer)
        session.flush()
