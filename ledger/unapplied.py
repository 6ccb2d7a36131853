"""Money left over: received for an invoice that can no longer take it (already settled).

Invariant: such money becomes the customer's credit in its currency, written once per key
with a payment that has no allocation; the same key with another amount, currency or
customer is refused.
"""

from __future__ import annotations

from sqlmodel import Session

from ledger.accounts import UnknownCustomer
from ledger.books import (
    IdempotencyConflict,
    InvalidAmount,
    LedgerError,
    available_credit,
    money_text,
    record_audit,
    write_once,
)
from ledger.currencies import UnknownCurrency, currency_exponent
from ledger.models import Customer, Payment, PaymentMethodKind
from ledger.operations import leave_credit


def credit_unapplied_payment(
    session: Session,
    customer_id: str,
    currency: str,
    amount_minor: int,
    reference: str | None,
    idempotency_key: str,
    actor: str,
    method: str = PaymentMethodKind.CARD.value,
) -> int:
    """Money received for an invoice already settled becomes the customer's credit.

    A payment with no allocation and the credit it leaves, once per key; the customer's
    credit in `currency` afterwards.
    """
    where = f"unapplied payment {idempotency_key!r} from customer {customer_id}"
    try:
        currency_exponent(currency)
    except UnknownCurrency as error:
        raise LedgerError(f"{where}: {error}") from None
    if amount_minor <= 0:
        raise InvalidAmount(f"{where}: amount must be greater than 0, got {amount_minor}")
    if session.get(Customer, customer_id) is None:
        raise UnknownCustomer(f"customer {customer_id!r} does not exist")

    def write() -> int:
        payment = Payment(
            customer_id=customer_id,
            currency=currency,
            amount_minor=amount_minor,
            method=method,
            reference=reference,
            reason="received for a settled invoice: kept as credit",
            idempotency_key=idempotency_key,
        )
        session.add(payment)
        session.flush()
        leave_credit(
            session,
            customer_id,
            currency,
            amount_minor,
            "unapplied_payment",
            idempotency_key,
            payment.id,
        )
        record_audit(
            session,
            actor,
            "payment_unapplied",
            None,
            {
                "idempotency_key": idempotency_key,
                "payment_id": payment.id,
                "customer_id": customer_id,
                "currency": currency,
                "amount_minor": amount_minor,
                "method": method,
                "reference": reference,
            },
        )
        session.flush()
        return available_credit(session, customer_id, currency)

    def repeat(payment: Payment) -> int:
        if (payment.customer_id, payment.currency, payment.amount_minor) != (
            customer_id,
            currency,
            amount_minor,
        ):
            raise IdempotencyConflict(
                f"payment key {idempotency_key!r} was already used for "
                f"{money_text(payment.amount_minor, payment.currency)} from customer "
                f"{payment.customer_id}; this asks for {money_text(amount_minor, currency)} "
                f"from customer {customer_id}"
            )
        return available_credit(session, customer_id, currency)

    return write_once(session, Payment, idempotency_key, write, repeat)
