"""The ledger's common ground: errors, reading balances, the audit trail, writing once per key.

Both kinds of change, money (`ledger.operations`, `ledger.adjustments`) and lifecycle
(`ledger.lifecycle`), rely on:

- Errors are `LedgerError` (a `ValueError`): the request is wrong and retrying will not help;
  the message names the invoice and the problem.
- `write_once` writes a change and its audit event inside one savepoint: a request refused
  halfway leaves nothing behind, and a retried request that loses the race on its idempotency
  key rolls back only its own work and returns the ledger's answer for the key.
- Audit events are only ever added, in the caller's transaction, never changed.
- `FINAL_STATUSES` (void, written off, closed) are the ones in which money no longer changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from sqlmodel.sql.expression import SelectOfScalar

from ledger.currencies import CURRENCY_EXPONENTS
from ledger.models import (
    Adjustment,
    AuditEvent,
    CollectorTask,
    CustomerCredit,
    Invoice,
    Payment,
    PaymentAllocation,
)
from ledger.requests import LedgerBalance
from policies.money import from_minor

# The status groupings are declared in `vocabulary`; the ledger's modules import them here.
from vocabulary import AWAITING_PAYMENT as AWAITING_PAYMENT
from vocabulary import FINAL_STATUSES as FINAL_STATUSES


class LedgerError(ValueError):
    """A request the ledger refuses; the message names the invoice and the problem."""


class UnknownInvoice(LedgerError):
    pass


class CurrencyMismatch(LedgerError):
    pass


class InvalidAmount(LedgerError):
    pass


class InvoiceClosed(LedgerError):
    """The invoice is void, written off or closed: its money can no longer change."""


class InvalidAdjustment(LedgerError):
    pass


class InvalidStatusChange(LedgerError):
    pass


class IdempotencyConflict(LedgerError):
    """An idempotency key already used for a different request."""


_Keyed = TypeVar("_Keyed", Payment, Adjustment, CollectorTask)
_Result = TypeVar("_Result")
_Row = TypeVar("_Row")


# --- reading -------------------------------------------------------------------------------


def get_balance(session: Session, invoice_number: str) -> LedgerBalance:
    """The invoice's balance and status, with the credit its customer holds in its currency."""
    invoice = load_invoice(session, invoice_number)
    return balance_of(session, invoice)


def balance_of(session: Session, invoice: Invoice) -> LedgerBalance:
    """The balance of an invoice already loaded, as `get_balance` answers it."""
    return LedgerBalance(
        invoice_number=invoice.number,
        currency=invoice.currency,
        total_minor=invoice.total_minor,
        balance_minor=invoice.balance_minor,
        status=str(invoice.status),
        customer_credit_minor=available_credit(session, invoice.customer_id, invoice.currency),
    )


def locked(statement: SelectOfScalar[_Row]) -> SelectOfScalar[_Row]:
    """`statement` locking its rows and reading them afresh. The row lock makes concurrent
    changes to one row queue up on PostgreSQL; SQLite's BEGIN IMMEDIATE (ledger.db) already
    serializes writers."""
    return statement.with_for_update().execution_options(populate_existing=True)


def first_row(
    session: Session, statement: SelectOfScalar[_Row], *, for_update: bool
) -> _Row | None:
    """The statement's first row; with `for_update`, `locked`."""
    return session.exec(locked(statement) if for_update else statement).first()


# The statements every invoice runs, built once: on SQLite, building a statement costs more
# than running it.
_CREDIT = sa.select(sa.func.coalesce(sa.func.sum(CustomerCredit.amount_minor), 0)).where(
    CustomerCredit.customer_id == sa.bindparam("customer_id"),
    CustomerCredit.currency == sa.bindparam("currency"),
)
INVOICE_BY_NUMBER = select(Invoice).where(Invoice.number == sa.bindparam("number"))
_INVOICE_FOR_UPDATE = locked(INVOICE_BY_NUMBER)
_INVOICES_BY_NUMBER = select(Invoice).where(
    Invoice.number.in_(sa.bindparam("numbers", expanding=True))  # type: ignore[attr-defined]
)
# Every payment toward an invoice, with what it brought to it, oldest first.
ALLOCATIONS = (
    select(Payment, PaymentAllocation)
    .join(PaymentAllocation, PaymentAllocation.payment_id == Payment.id)
    .where(PaymentAllocation.invoice_id == sa.bindparam("invoice_id"))
    .order_by(Payment.received_at, Payment.id)
)


def available_credit(session: Session, customer_id: str, currency: str) -> int:
    """The credit the customer holds in the currency."""
    total = session.scalar(_CREDIT, {"customer_id": customer_id, "currency": currency})
    return int(total or 0)


def invoices_by_number(session: Session, numbers: list[str]) -> dict[str, Invoice]:
    """The invoices of `numbers` the ledger has, by number."""
    return {i.number: i for i in session.exec(_INVOICES_BY_NUMBER, params={"numbers": numbers})}


def load_invoice(session: Session, number: str, *, for_update: bool = False) -> Invoice:
    """The invoice; with `for_update`, `locked`."""
    statement = _INVOICE_FOR_UPDATE if for_update else INVOICE_BY_NUMBER
    invoice = session.exec(statement, params={"number": number}).first()
    if invoice is None:
        raise UnknownInvoice(f"invoice {number!r} does not exist")
    return invoice


def _by_key(session: Session, model: type[_Keyed], key: str) -> _Keyed | None:
    return session.exec(_by_key_statement(model), params={"key": key}).first()


@cache
def _by_key_statement(model: type[_Keyed]) -> SelectOfScalar[_Keyed]:
    return select(model).where(model.idempotency_key == sa.bindparam("key"))


def money_text(amount_minor: int, currency: str) -> str:
    """An amount for an error message, e.g. "12.50 USD", in the currency's own minor units."""
    return f"{from_minor(amount_minor, CURRENCY_EXPONENTS.get(currency, 2))} {currency}"


# --- audit ---------------------------------------------------------------------------------


def record_audit(
    session: Session, actor: str, action: str, invoice_id: int | None, detail: dict[str, Any]
) -> AuditEvent:
    """Add an append-only audit event to the session's transaction."""
    event = AuditEvent(
        actor=actor,
        action=action,
        invoice_id=invoice_id,
        detail=json.dumps(detail, sort_keys=True, default=str),
    )
    session.add(event)
    return event


# --- idempotent writing --------------------------------------------------------------------


def write_once(
    session: Session,
    model: type[_Keyed],
    key: str,
    write: Callable[[], _Result],
    repeat: Callable[[_Keyed], _Result],
) -> _Result:
    """Run `write` once per idempotency key; a repeated key gets `repeat(existing row)`."""
    existing = _by_key(session, model, key)
    if existing is not None:
        return repeat(existing)
    try:
        with session.begin_nested():
            result = write()
            session.flush()
    except IntegrityError:
        # A concurrent attempt with the same key committed first; answer as for a repeat.
        existing = _by_key(session, model, key)
        if existing is None:
            raise
        return repeat(existing)
    return result
