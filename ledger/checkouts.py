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

What the payment provider answers afterwards is `ledger.checkout_events`; money taken back is
`ledger.reversals`, money left over `ledger.unapplied`.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ledger.accounts import UnknownCustomer
from ledger.books import (
    IdempotencyConflict,
    LedgerError,
    available_credit,
    first_row,
    money_text,
    record_audit,
)
from ledger.checkout_drafts import (
    CheckoutDraft,
    CheckoutItemError,
    card_surcharge,
    checked_lines,
    clean_note,
)
from ledger.currencies import MAX_MINOR
from ledger.models import (
    Checkout,
    CheckoutItem,
    Customer,
)


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
    lines = checked_lines(session, draft)
    currency = lines[0][0].currency
    items = sum(line.amount_minor for _, line in lines)
    credit = min(max(available_credit(session, draft.customer_id, currency), 0), items)
    surcharge = card_surcharge(draft, items - credit)
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
                        note=clean_note(line.note),
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
        (line.invoice_number, line.amount_minor, line.reason_code, clean_note(line.note))
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
