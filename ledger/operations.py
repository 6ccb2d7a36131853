"""Changes to money and lifecycle in the ledger, each idempotent and audited.

Temporal activities call these with a session whose transaction the caller commits
(`ledger.db.session_scope`). Every change and its audit event are written inside one savepoint:
a request refused halfway leaves nothing behind, and a retried request that loses the race on
its idempotency key rolls back only its own work and returns the ledger's answer for the key.

Errors are `LedgerError` (a `ValueError`): the request is wrong and retrying will not help.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ledger.currencies import CURRENCY_EXPONENTS, MAX_MINOR
from ledger.models import (
    Adjustment,
    AuditEvent,
    CollectorTask,
    CustomerCredit,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    utcnow,
)
from ledger.requests import (
    AdjustmentApplication,
    CollectorOutcome,
    CollectorTaskRequest,
    LedgerBalance,
    PaymentApplication,
    StatusChange,
)
from policies.money import from_minor


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


FINAL_STATUSES = frozenset({InvoiceStatus.VOID, InvoiceStatus.WRITTEN_OFF, InvoiceStatus.CLOSED})
# Statuses in which the invoice still awaits money; reaching a zero balance makes it paid.
AWAITING_PAYMENT = frozenset({InvoiceStatus.OPEN, InvoiceStatus.DISPUTED, InvoiceStatus.PAUSED})
ADJUSTMENT_KINDS = ("credit", "late_fee", "write_off", "void", "adjustment")

# Status changes that move no money. Paid, void and written off come from money operations.
_TRANSITIONS: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    InvoiceStatus.OPEN: frozenset({InvoiceStatus.DISPUTED, InvoiceStatus.PAUSED}),
    InvoiceStatus.DISPUTED: frozenset({InvoiceStatus.OPEN, InvoiceStatus.PAUSED}),
    InvoiceStatus.PAUSED: frozenset({InvoiceStatus.OPEN, InvoiceStatus.DISPUTED}),
    InvoiceStatus.PAID: frozenset({InvoiceStatus.CLOSED}),
    InvoiceStatus.VOID: frozenset({InvoiceStatus.CLOSED}),
    InvoiceStatus.WRITTEN_OFF: frozenset({InvoiceStatus.CLOSED}),
    InvoiceStatus.CLOSED: frozenset(),
}

_Keyed = TypeVar("_Keyed", Payment, Adjustment, CollectorTask)
_Result = TypeVar("_Result")


# --- reading -------------------------------------------------------------------------------


def get_balance(session: Session, invoice_number: str) -> LedgerBalance:
    """The invoice's balance and status, with the credit its customer holds in its currency."""
    invoice = _load_invoice(session, invoice_number)
    return _balance(session, invoice)


def _balance(session: Session, invoice: Invoice) -> LedgerBalance:
    credit = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(CustomerCredit.amount_minor), 0)).where(
            CustomerCredit.customer_id == invoice.customer_id,
            CustomerCredit.currency == invoice.currency,
        )
    )
    return LedgerBalance(
        invoice_number=invoice.number,
        currency=invoice.currency,
        total_minor=invoice.total_minor,
        balance_minor=invoice.balance_minor,
        status=str(invoice.status),
        customer_credit_minor=int(credit or 0),
    )


def _load_invoice(session: Session, number: str, *, for_update: bool = False) -> Invoice:
    statement = select(Invoice).where(Invoice.number == number)
    if for_update:
        # Row lock on PostgreSQL so concurrent changes to one invoice queue up; SQLite's
        # BEGIN IMMEDIATE (ledger.db) already serializes writers.
        statement = statement.with_for_update().execution_options(populate_existing=True)
    invoice = session.exec(statement).first()
    if invoice is None:
        raise UnknownInvoice(f"invoice {number!r} does not exist")
    return invoice


def credit_key(request_key: str) -> str:
    """The idempotency key of the customer credit a payment or adjustment request leaves over;
    it is what ties a credit note's excess to its invoice."""
    return f"{request_key}:credit"


def _by_key(session: Session, model: type[_Keyed], key: str) -> _Keyed | None:
    return session.exec(select(model).where(model.idempotency_key == key)).first()


def _money(amount_minor: int, currency: str) -> str:
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


def _once(
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


def _check_not_final(invoice: Invoice, doing: str) -> None:
    if invoice.status in FINAL_STATUSES:
        raise InvoiceClosed(f"invoice {invoice.number} is {invoice.status}: cannot {doing}")


def _settle_status(invoice: Invoice) -> None:
    """Paid when nothing is left to pay; open again if money became due on a paid invoice."""
    if invoice.balance_minor == 0 and invoice.status in AWAITING_PAYMENT:
        invoice.status = InvoiceStatus.PAID
    elif invoice.balance_minor > 0 and invoice.status == InvoiceStatus.PAID:
        invoice.status = InvoiceStatus.OPEN


# --- payments ------------------------------------------------------------------------------


def apply_payment(session: Session, req: PaymentApplication) -> LedgerBalance:
    """Apply money received to one invoice; any amount above its balance becomes credit."""
    number = req.invoice_number
    if req.amount_minor <= 0:
        raise InvalidAmount(
            f"payment {req.idempotency_key} to invoice {number}: "
            f"amount must be greater than 0, got {req.amount_minor}"
        )
    if req.received_at.tzinfo is None:
        raise LedgerError(f"payment to invoice {number}: received_at must be timezone-aware")

    def write() -> LedgerBalance:
        invoice = _load_invoice(session, number, for_update=True)
        _check_not_final(invoice, "apply a payment")
        if req.currency != invoice.currency:
            raise CurrencyMismatch(
                f"invoice {number} is in {invoice.currency}, payment is in {req.currency}"
            )
        payment = Payment(
            customer_id=invoice.customer_id,
            currency=req.currency,
            amount_minor=req.amount_minor,
            method=req.method,
            reference=req.reference,
            reason=req.reason,
            idempotency_key=req.idempotency_key,
            received_at=req.received_at,
        )
        session.add(payment)
        session.flush()  # the payment id, and an early IntegrityError on a repeated key
        balance_before = invoice.balance_minor
        allocated = min(req.amount_minor, balance_before)
        excess = req.amount_minor - allocated
        if allocated:
            session.add(
                PaymentAllocation(
                    payment_id=payment.id, invoice_id=invoice.id, amount_minor=allocated
                )
            )
        if excess:
            session.add(
                CustomerCredit(
                    customer_id=invoice.customer_id,
                    currency=req.currency,
                    amount_minor=excess,
                    source="overpayment",
                    payment_id=payment.id,
                    idempotency_key=credit_key(req.idempotency_key),
                )
            )
        invoice.balance_minor = balance_before - allocated
        _settle_status(invoice)
        _close_tasks_if_settled(session, invoice, req.actor)
        invoice.updated_at = utcnow()
        record_audit(
            session,
            req.actor,
            "payment_applied",
            invoice.id,
            {
                "idempotency_key": req.idempotency_key,
                "payment_id": payment.id,
                "currency": req.currency,
                "amount_minor": req.amount_minor,
                "allocated_minor": allocated,
                "credit_minor": excess,
                "balance_before_minor": balance_before,
                "balance_after_minor": invoice.balance_minor,
                "status": str(invoice.status),
                "method": req.method,
                "reference": req.reference,
                "reason": req.reason,
            },
        )
        return _balance(session, invoice)

    def repeat(payment: Payment) -> LedgerBalance:
        invoice = _load_invoice(session, number)
        if (
            payment.amount_minor != req.amount_minor
            or payment.currency != req.currency
            or payment.customer_id != invoice.customer_id
        ):
            raise IdempotencyConflict(
                f"payment key {req.idempotency_key!r} was already used for "
                f"{_money(payment.amount_minor, payment.currency)} from customer "
                f"{payment.customer_id}; invoice {number} asks for "
                f"{_money(req.amount_minor, req.currency)}"
            )
        return _balance(session, invoice).model_copy(update={"repeated": True})

    return _once(session, Payment, req.idempotency_key, write, repeat)


# --- adjustments ---------------------------------------------------------------------------


def apply_adjustment(session: Session, req: AdjustmentApplication) -> LedgerBalance:
    """A credit note, late fee, write-off, void or signed correction on one invoice.

    For write_off and void the amount is the invoice's balance at that moment; the request's
    amount is not used.
    """
    number = req.invoice_number
    if req.kind not in ADJUSTMENT_KINDS:
        raise InvalidAdjustment(
            f"invoice {number}: unknown adjustment kind {req.kind!r}; "
            f"use one of {', '.join(ADJUSTMENT_KINDS)}"
        )

    def write() -> LedgerBalance:
        invoice = _load_invoice(session, number, for_update=True)
        _check_not_final(invoice, f"apply a {req.kind}")
        change, credit = _adjustment_effect(session, invoice, req)
        balance_before = invoice.balance_minor
        adjustment = Adjustment(
            invoice_id=invoice.id,
            kind=req.kind,
            amount_minor=change,
            reason=req.reason,
            idempotency_key=req.idempotency_key,
        )
        session.add(adjustment)
        session.flush()
        if credit:
            session.add(
                CustomerCredit(
                    customer_id=invoice.customer_id,
                    currency=invoice.currency,
                    amount_minor=credit,
                    source="credit_note",
                    idempotency_key=credit_key(req.idempotency_key),
                )
            )
        if balance_before + change > MAX_MINOR:
            raise InvalidAmount(
                f"invoice {number}: a {req.kind} of {_money(change, invoice.currency)} would take "
                f"the balance past the ledger's limit of {_money(MAX_MINOR, invoice.currency)}"
            )
        invoice.balance_minor = balance_before + change
        if req.kind == "write_off":
            invoice.status = InvoiceStatus.WRITTEN_OFF
        elif req.kind == "void":
            invoice.status = InvoiceStatus.VOID
        else:
            _settle_status(invoice)
        _close_tasks_if_settled(session, invoice, req.actor)
        invoice.updated_at = utcnow()
        record_audit(
            session,
            req.actor,
            f"adjustment_{req.kind}",
            invoice.id,
            {
                "idempotency_key": req.idempotency_key,
                "adjustment_id": adjustment.id,
                "kind": req.kind,
                "currency": invoice.currency,
                "requested_minor": req.amount_minor,
                "amount_minor": change,
                "credit_minor": credit,
                "balance_before_minor": balance_before,
                "balance_after_minor": invoice.balance_minor,
                "status": str(invoice.status),
                "reason": req.reason,
            },
        )
        return _balance(session, invoice)

    def repeat(adjustment: Adjustment) -> LedgerBalance:
        invoice = _load_invoice(session, number)
        if adjustment.invoice_id != invoice.id or adjustment.kind != req.kind:
            raise IdempotencyConflict(
                f"adjustment key {req.idempotency_key!r} was already used for a "
                f"{adjustment.kind} on invoice id {adjustment.invoice_id}; this request is a "
                f"{req.kind} on invoice {number}"
            )
        return _balance(session, invoice).model_copy(update={"repeated": True})

    return _once(session, Adjustment, req.idempotency_key, write, repeat)


def _adjustment_effect(
    session: Session, invoice: Invoice, req: AdjustmentApplication
) -> tuple[int, int]:
    """(change to the invoice balance, amount that becomes customer credit), or an error."""
    number, amount, balance = invoice.number, req.amount_minor, invoice.balance_minor
    match req.kind:
        case "credit":
            if amount >= 0:
                raise InvalidAmount(f"invoice {number}: a credit must be negative, got {amount}")
            change = max(amount, -balance)  # never below zero; the rest is the customer's
            return change, change - amount
        case "late_fee":
            if amount <= 0:
                raise InvalidAmount(f"invoice {number}: a late fee must be positive, got {amount}")
            if invoice.status == InvoiceStatus.PAID:
                raise InvalidAdjustment(f"invoice {number} is paid: no late fee on it")
            return amount, 0
        case "adjustment":
            if amount == 0:
                raise InvalidAmount(f"invoice {number}: an adjustment of 0 changes nothing")
            if balance + amount < 0:
                raise InvalidAmount(
                    f"invoice {number}: an adjustment of {_money(amount, invoice.currency)} "
                    f"would take the balance {_money(balance, invoice.currency)} below 0; "
                    "use a credit"
                )
            return amount, 0
        case "write_off":
            if balance == 0:
                raise InvalidAdjustment(f"invoice {number} has no balance to write off")
            return -balance, 0
        case _:  # void
            paid = session.scalar(
                sa.select(sa.func.count())
                .select_from(PaymentAllocation)
                .where(PaymentAllocation.invoice_id == invoice.id)
            )
            if paid:
                raise InvalidAdjustment(
                    f"invoice {number} has payments applied and cannot be voided; "
                    "issue a credit instead"
                )
            return -balance, 0


# --- lifecycle -----------------------------------------------------------------------------


def set_status(session: Session, req: StatusChange) -> LedgerBalance:
    """Dispute, pause, resume or close an invoice; setting the current status changes nothing."""
    number = req.invoice_number
    try:
        target = InvoiceStatus(req.status)
    except ValueError:
        raise InvalidStatusChange(
            f"invoice {number}: unknown status {req.status!r}; "
            f"use one of {', '.join(s.value for s in InvoiceStatus)}"
        ) from None
    invoice = _load_invoice(session, number, for_update=True)
    current = InvoiceStatus(invoice.status)
    if target == current:
        return _balance(session, invoice)
    if target in (InvoiceStatus.VOID, InvoiceStatus.WRITTEN_OFF):
        kind = "void" if target == InvoiceStatus.VOID else "write_off"
        raise InvalidStatusChange(
            f"invoice {number}: {target} changes money; apply an adjustment of kind {kind!r}"
        )
    if target == InvoiceStatus.PAID:
        allowed = current in AWAITING_PAYMENT and invoice.balance_minor == 0
        if not allowed:
            raise InvalidStatusChange(
                f"invoice {number} cannot be marked paid: it is {current} with "
                f"{_money(invoice.balance_minor, invoice.currency)} outstanding"
            )
    elif target not in _TRANSITIONS[current]:
        raise InvalidStatusChange(f"invoice {number} is {current}: it cannot become {target}")
    with session.begin_nested():
        invoice.status = target
        invoice.updated_at = utcnow()
        record_audit(
            session,
            req.actor,
            "status_changed",
            invoice.id,
            {"from": str(current), "to": str(target), "reason": req.reason},
        )
        session.flush()
    return _balance(session, invoice)


def open_collector_task(session: Session, req: CollectorTaskRequest) -> int:
    """Open a task for a collector on the invoice; the task id, the same for a repeated key."""
    number = req.invoice_number
    if req.due_at.tzinfo is None:
        raise LedgerError(f"collector task for invoice {number}: due_at must be timezone-aware")

    def write() -> int:
        invoice = _load_invoice(session, number)
        task = CollectorTask(
            invoice_id=invoice.id,
            queue=req.queue,
            priority=req.priority,
            due_at=req.due_at,
            idempotency_key=req.idempotency_key,
        )
        session.add(task)
        session.flush()
        record_audit(
            session,
            "system",
            "collector_task_opened",
            invoice.id,
            {
                "idempotency_key": req.idempotency_key,
                "task_id": task.id,
                "queue": req.queue,
                "priority": req.priority,
                "due_at": req.due_at.isoformat(),
            },
        )
        return int(task.id)

    def repeat(task: CollectorTask) -> int:
        invoice = _load_invoice(session, number)
        if task.invoice_id != invoice.id:
            raise IdempotencyConflict(
                f"collector task key {req.idempotency_key!r} was already used for another "
                f"invoice, not {number}"
            )
        return int(task.id)

    return _once(session, CollectorTask, req.idempotency_key, write, repeat)


def close_collector_tasks(session: Session, req: CollectorOutcome) -> int:
    """Close the invoice's open collector tasks with the collector's outcome; how many.

    Closing tasks that are already closed changes nothing, so a retried request is harmless.
    """
    if not req.outcome.strip():
        raise LedgerError(f"invoice {req.invoice_number}: a collector outcome must be named")
    invoice = _load_invoice(session, req.invoice_number, for_update=True)
    return _close_tasks(session, invoice, req.outcome, req.actor, req.note)


def _close_tasks_if_settled(session: Session, invoice: Invoice, actor: str) -> None:
    # Nothing is left to collect on a paid, void or written-off invoice.
    if invoice.status in FINAL_STATUSES or invoice.status == InvoiceStatus.PAID:
        _close_tasks(session, invoice, str(invoice.status), actor)


def _close_tasks(
    session: Session, invoice: Invoice, outcome: str, actor: str, note: str | None = None
) -> int:
    tasks = session.exec(
        select(CollectorTask).where(
            CollectorTask.invoice_id == invoice.id, CollectorTask.status == "open"
        )
    ).all()
    for task in tasks:
        task.status, task.outcome, task.closed_at = "closed", outcome[:32], utcnow()
        if note:
            task.note = note[:2000]
        session.add(task)
        record_audit(
            session,
            actor,
            "collector_task_closed",
            invoice.id,
            {"task_id": task.id, "outcome": outcome, "note": note},
        )
    return len(tasks)
