"""Money taken back from a checkout: a refund or a chargeback. Money left over (paid for an
invoice already settled) is `ledger.unapplied`.

Invariant: a reversal takes back at most what each item brought in, in item order, and
beyond that only the surcharge; the invoices it touches are due again and get a collector
task. It is written once per key.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ledger.books import (
    IdempotencyConflict,
    InvalidAmount,
    InvoiceClosed,
    LedgerError,
    balance_of,
    load_invoice,
    money_text,
    record_audit,
)
from ledger.checkout_drafts import NOTE_MAX_LENGTH
from ledger.checkouts import checkout_items, load_checkout
from ledger.currencies import MAX_MINOR
from ledger.lifecycle import open_collector_task
from ledger.models import (
    Adjustment,
    CheckoutItem,
    CheckoutStatus,
    Invoice,
    InvoiceStatus,
    utcnow,
)
from ledger.requests import CollectorTaskRequest, LedgerBalance
from vocabulary import AdjustmentKind

REVERSAL_TASK_DUE = timedelta(days=2)

_REOPENED_BY_REVERSAL = frozenset(
    {InvoiceStatus.PAID, InvoiceStatus.CLOSED, InvoiceStatus.WRITTEN_OFF}
)


def reverse_for_checkout(
    session: Session,
    checkout_id: int,
    amount_minor: int,
    reason: str,
    idempotency_key: str,
    actor: str,
) -> list[LedgerBalance]:
    """Money of a succeeded checkout taken back (refund, chargeback) is due again.

    The amount is spread over the checkout's items in order, each up to what it still holds;
    each touched invoice gets a reversal (its balance rises; paid, closed or written off
    becomes open) and a collector task. Invoice money is taken back first: what the items no
    longer hold may only be the card surcharge, which no invoice is owed. The balances of
    the touched invoices, in item order.
    """
    if amount_minor <= 0:
        raise InvalidAmount(
            f"reversal {idempotency_key!r} on checkout {checkout_id}: amount must be greater "
            f"than 0, got {amount_minor}"
        )
    if len(reason) > NOTE_MAX_LENGTH:
        raise LedgerError(
            f"reversal {idempotency_key!r} on checkout {checkout_id}: the reason has "
            f"{len(reason)} characters; at most {NOTE_MAX_LENGTH}"
        )
    keys = [
        f"{idempotency_key}:{item.invoice_number}" for item in checkout_items(session, checkout_id)
    ]
    done = _reversals(session, keys)
    if done:
        return _repeated_reversal(session, done, checkout_id, amount_minor, idempotency_key)
    try:
        with session.begin_nested():
            balances = _reverse(session, checkout_id, amount_minor, reason, idempotency_key, actor)
            session.flush()
    except IntegrityError:
        # A concurrent attempt with the same key committed first.
        done = _reversals(session, keys)
        if not done:
            raise
        return _repeated_reversal(session, done, checkout_id, amount_minor, idempotency_key)
    return balances


def _reverse(
    session: Session, checkout_id: int, amount: int, reason: str, key: str, actor: str
) -> list[LedgerBalance]:
    checkout = load_checkout(session, checkout_id)
    currency = checkout.currency
    if checkout.status != CheckoutStatus.SUCCEEDED:
        raise LedgerError(
            f"checkout {checkout_id} is {checkout.status}: no money was received to take back"
        )
    items = session.exec(
        select(CheckoutItem)
        .where(CheckoutItem.checkout_id == checkout_id)
        .order_by(CheckoutItem.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    held = sum(item.amount_minor - item.reversed_minor for item in items)
    if amount > held + checkout.surcharge_minor:
        surcharge = checkout.surcharge_minor
        raise InvalidAmount(
            f"checkout {checkout_id}: taking back {money_text(amount, currency)} is more than "
            f"the {money_text(held, currency)} its invoices still hold from it"
            + (f" plus its {money_text(surcharge, currency)} surcharge" if surcharge else "")
        )
    balances, left = [], amount
    for item in items:
        portion = min(left, item.amount_minor - item.reversed_minor)
        if portion <= 0:
            continue
        left -= portion
        invoice = load_invoice(session, item.invoice_number, for_update=True)
        if invoice.status == InvoiceStatus.VOID:
            raise InvoiceClosed(f"invoice {invoice.number} is void: no payment can be taken back")
        before, status_before = invoice.balance_minor, InvoiceStatus(invoice.status)
        if before + portion > MAX_MINOR:
            raise InvalidAmount(f"invoice {invoice.number}: the balance would pass the limit")
        adjustment = Adjustment(
            invoice_id=invoice.id,
            kind=AdjustmentKind.REVERSAL,
            amount_minor=portion,
            reason=reason,
            idempotency_key=f"{key}:{invoice.number}",
        )
        session.add(adjustment)
        session.flush()
        invoice.balance_minor = before + portion
        if status_before in _REOPENED_BY_REVERSAL:
            # The one case where a closed invoice's money changes: the money left us.
            invoice.status = InvoiceStatus.OPEN
        invoice.updated_at = utcnow()
        item.reversed_minor += portion
        session.add_all([invoice, item])
        record_audit(
            session,
            actor,
            "adjustment_reversal",
            invoice.id,
            {
                "idempotency_key": adjustment.idempotency_key,
                "adjustment_id": adjustment.id,
                "checkout_id": checkout_id,
                "currency": currency,
                "amount_minor": portion,
                "balance_before_minor": before,
                "balance_after_minor": invoice.balance_minor,
                "status_before": status_before.value,
                "status": str(invoice.status),
                "reason": reason,
            },
        )
        open_collector_task(
            session,
            CollectorTaskRequest(
                invoice_number=invoice.number,
                queue="payments",
                priority="high",
                due_at=utcnow() + REVERSAL_TASK_DUE,
                idempotency_key=f"{key}:task:{invoice.number}",
            ),
        )
        balances.append(balance_of(session, invoice))
        if left == 0:
            break
    record_audit(
        session,
        actor,
        "checkout_reversed",
        None,
        {
            "checkout_id": checkout_id,
            "idempotency_key": key,
            "currency": currency,
            "amount_minor": amount,
            "invoices_minor": amount - left,
            "surcharge_minor": left,  # what no invoice holds: the card surcharge
            "reason": reason,
        },
    )
    return balances


def _reversals(session: Session, keys: list[str]) -> list[Adjustment]:
    if not keys:
        return []
    return list(
        session.exec(
            select(Adjustment).where(Adjustment.idempotency_key.in_(keys)).order_by(Adjustment.id)
        )
    )


def _repeated_reversal(
    session: Session, done: list[Adjustment], checkout_id: int, amount: int, key: str
) -> list[LedgerBalance]:
    taken = sum(adjustment.amount_minor for adjustment in done)
    checkout = load_checkout(session, checkout_id)
    # The first request may have taken back surcharge too, which no invoice holds.
    if not taken <= amount <= taken + checkout.surcharge_minor:
        raise IdempotencyConflict(
            f"reversal key {key!r} was already used on checkout {checkout_id} to take back "
            f"{money_text(taken, checkout.currency)} from its invoices; this request takes "
            f"back {money_text(amount, checkout.currency)}"
        )
    return [
        balance_of(session, session.get(Invoice, adjustment.invoice_id)).model_copy(
            update={"repeated": True}
        )
        for adjustment in done
    ]
