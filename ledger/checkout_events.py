"""What the payment provider says about a checkout: its intent, its status, refunds and
disputes noted, and the provider's events handled once.

Invariants:

- A status moves only along `_MOVES`, so provider events may arrive in any order: succeeded
  is final. Every move is audited.
- A provider event is handled once: its id is kept under a unique key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ledger.books import (
    InvalidAmount,
    LedgerError,
    money_text,
    record_audit,
)
from ledger.checkout_drafts import NOTE_MAX_LENGTH
from ledger.checkouts import checkout_by_intent, load_checkout
from ledger.models import (
    Checkout,
    CheckoutStatus,
    StripeEvent,
    utcnow,
)

# Provider events arrive in any order; a move not listed is a stale event and changes nothing.
_MOVES: dict[CheckoutStatus, frozenset[CheckoutStatus]] = {
    CheckoutStatus.CREATED: frozenset(
        {
            CheckoutStatus.PROCESSING,
            CheckoutStatus.SUCCEEDED,
            CheckoutStatus.FAILED,
            CheckoutStatus.ABANDONED,
        }
    ),
    CheckoutStatus.PROCESSING: frozenset({CheckoutStatus.SUCCEEDED, CheckoutStatus.FAILED}),
    # The payer retried after a failure.
    CheckoutStatus.FAILED: frozenset({CheckoutStatus.PROCESSING, CheckoutStatus.SUCCEEDED}),
    CheckoutStatus.ABANDONED: frozenset(
        {CheckoutStatus.PROCESSING, CheckoutStatus.SUCCEEDED, CheckoutStatus.FAILED}
    ),
    CheckoutStatus.SUCCEEDED: frozenset(),
}
# Money received for these is due again when it is taken back.

# --- the provider's answers ----------------------------------------------------------------


def attach_payment_intent(session: Session, checkout_id: int, payment_intent_id: str) -> None:
    """Tie the provider's payment intent to the checkout; attaching it again changes nothing."""
    if not payment_intent_id or len(payment_intent_id) > 255:
        raise LedgerError(
            f"checkout {checkout_id}: a payment intent id has 1 to 255 characters, "
            f"got {len(payment_intent_id)}"
        )
    checkout = load_checkout(session, checkout_id)
    if checkout.payment_intent_id == payment_intent_id:
        return
    if checkout.payment_intent_id is not None:
        raise LedgerError(
            f"checkout {checkout_id} already has payment intent {checkout.payment_intent_id}; "
            f"it cannot take {payment_intent_id} too"
        )
    taken = LedgerError(f"payment intent {payment_intent_id} belongs to another checkout")
    if checkout_by_intent(session, payment_intent_id) is not None:
        raise taken
    try:
        with session.begin_nested():
            checkout.payment_intent_id = payment_intent_id
            checkout.updated_at = utcnow()
            session.add(checkout)
            session.flush()
    except IntegrityError:
        raise taken from None


def set_checkout_status(
    session: Session,
    checkout_id: int,
    status: CheckoutStatus | str,
    failure_reason: str | None = None,
    *,
    actor: str = "system",
) -> bool:
    """Move the checkout to `status` if `_MOVES` allows it; whether it moved."""
    try:
        target = CheckoutStatus(status)
    except ValueError:
        raise LedgerError(
            f"checkout {checkout_id}: unknown status {status!r}; "
            f"use one of {', '.join(s.value for s in CheckoutStatus)}"
        ) from None
    return _move(session, load_checkout(session, checkout_id), target, failure_reason, actor)


def _move(
    session: Session, checkout: Checkout, target: CheckoutStatus, reason: str | None, actor: str
) -> bool:
    current = CheckoutStatus(checkout.status)
    if target not in _MOVES[current]:
        return False
    with session.begin_nested():
        checkout.status = target
        # The reason of the latest failure; a retry that moves on clears it.
        failed = target == CheckoutStatus.FAILED
        checkout.failure_reason = reason[:NOTE_MAX_LENGTH] if failed and reason else None
        checkout.updated_at = utcnow()
        session.add(checkout)
        record_audit(
            session,
            actor,
            f"checkout_{target.value}",
            None,
            {
                "checkout_id": checkout.id,
                "from": current.value,
                "to": target.value,
                "payment_intent_id": checkout.payment_intent_id,
                "failure_reason": checkout.failure_reason,
            },
        )
        session.flush()
    return True


def abandon_stale_checkouts(
    session: Session, customer_id: str, older_than: datetime, *, actor: str = "system"
) -> list[Checkout]:
    """The customer's checkouts still created before `older_than` become abandoned."""
    if older_than.tzinfo is None:
        raise LedgerError(f"customer {customer_id}: older_than must be timezone-aware")
    stale = session.exec(
        select(Checkout)
        .where(
            Checkout.customer_id == customer_id,
            Checkout.status == CheckoutStatus.CREATED.value,
            Checkout.created_at < older_than,
        )
        .order_by(Checkout.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return [c for c in stale if _move(session, c, CheckoutStatus.ABANDONED, None, actor)]


def note_refund(
    session: Session, checkout_id: int, refunded_minor_total: int, *, actor: str = "system"
) -> int:
    """Keep the highest refunded total the provider reported; the newly refunded part."""
    checkout = load_checkout(session, checkout_id)
    if not 0 <= refunded_minor_total <= checkout.charge_minor:
        raise InvalidAmount(
            f"checkout {checkout_id}: refunded total "
            f"{money_text(refunded_minor_total, checkout.currency)} is not between 0 and the "
            f"{money_text(checkout.charge_minor, checkout.currency)} charged"
        )
    delta = refunded_minor_total - checkout.refunded_minor
    if delta <= 0:
        return 0  # an older or repeated report
    with session.begin_nested():
        checkout.refunded_minor = refunded_minor_total
        checkout.updated_at = utcnow()
        session.add(checkout)
        record_audit(
            session,
            actor,
            "checkout_refunded",
            None,
            {
                "checkout_id": checkout_id,
                "currency": checkout.currency,
                "refunded_minor": delta,
                "refunded_total_minor": refunded_minor_total,
            },
        )
        session.flush()
    return delta


def note_dispute(session: Session, checkout_id: int, *, actor: str = "system") -> bool:
    """Mark the checkout disputed; True only the first time."""
    checkout = load_checkout(session, checkout_id)
    if checkout.disputed:
        return False
    with session.begin_nested():
        checkout.disputed = True
        checkout.updated_at = utcnow()
        session.add(checkout)
        record_audit(session, actor, "checkout_disputed", None, {"checkout_id": checkout_id})
        session.flush()
    return True


def record_stripe_event(
    session: Session, event_id: str, type: str, payment_intent_id: str | None
) -> bool:
    """Keep the event's id; False if it was kept before (a redelivery)."""
    if not event_id or len(event_id) > 255 or len(type) > 64:
        raise LedgerError(
            f"stripe event {event_id!r} of type {type!r}: the id needs 1 to 255 characters "
            "and the type at most 64"
        )
    if stripe_event_seen(session, event_id):
        return False
    try:
        with session.begin_nested():
            session.add(
                StripeEvent(event_id=event_id, type=type, payment_intent_id=payment_intent_id)
            )
            session.flush()
    except IntegrityError:
        # The same event delivered twice at once: the other delivery kept it.
        if stripe_event_seen(session, event_id):
            return False
        raise
    return True


def stripe_event_seen(session: Session, event_id: str) -> bool:
    return (
        session.exec(select(StripeEvent.id).where(StripeEvent.event_id == event_id)).first()
        is not None
    )
