"""Adjustments to an invoice's money: credit notes, late fees, corrections, write-offs and
voids, each idempotent and audited, under the invariants of `ledger.operations` (balance
between zero and the limit, paid when nothing is left, final invoices unchanged).

A credit note beyond the balance leaves the rest as the customer's credit; a write-off or void
takes the balance at that moment, whatever amount the request names; a paid invoice takes no
late fee, and one with payments applied cannot be voided.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from ledger.books import (
    IdempotencyConflict,
    InvalidAdjustment,
    InvalidAmount,
    balance_of,
    load_invoice,
    money_text,
    write_once,
)
from ledger.currencies import MAX_MINOR
from ledger.models import Adjustment, Invoice, InvoiceStatus, PaymentAllocation
from ledger.operations import check_not_final, finish_money_change, leave_credit, settle_status
from ledger.requests import AdjustmentApplication, LedgerBalance
from vocabulary import REQUESTED_ADJUSTMENTS, AdjustmentKind


def apply_adjustment(session: Session, req: AdjustmentApplication) -> LedgerBalance:
    """A credit note, late fee, write-off, void or signed correction on one invoice.

    For write_off and void the amount is the invoice's balance at that moment; the request's
    amount is not used.
    """
    number = req.invoice_number
    if req.kind not in REQUESTED_ADJUSTMENTS:
        raise InvalidAdjustment(
            f"invoice {number}: unknown adjustment kind {req.kind!r}; "
            f"use one of {', '.join(REQUESTED_ADJUSTMENTS)}"
        )

    def write() -> LedgerBalance:
        invoice = load_invoice(session, number, for_update=True)
        check_not_final(invoice, f"apply a {req.kind}")
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
            leave_credit(
                session,
                invoice.customer_id,
                invoice.currency,
                credit,
                "credit_note",
                req.idempotency_key,
            )
        if balance_before + change > MAX_MINOR:
            raise InvalidAmount(
                f"invoice {number}: a {req.kind} of {money_text(change, invoice.currency)} "
                "would take the balance past the ledger's limit of "
                f"{money_text(MAX_MINOR, invoice.currency)}"
            )
        invoice.balance_minor = balance_before + change
        if req.kind == AdjustmentKind.WRITE_OFF:
            invoice.status = InvoiceStatus.WRITTEN_OFF
        elif req.kind == AdjustmentKind.VOID:
            invoice.status = InvoiceStatus.VOID
        else:
            settle_status(invoice)
        finish_money_change(
            session,
            invoice,
            req.actor,
            f"adjustment_{req.kind}",
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
        return balance_of(session, invoice)

    def repeat(adjustment: Adjustment) -> LedgerBalance:
        invoice = load_invoice(session, number)
        if adjustment.invoice_id != invoice.id or adjustment.kind != req.kind:
            raise IdempotencyConflict(
                f"adjustment key {req.idempotency_key!r} was already used for a "
                f"{adjustment.kind} on invoice id {adjustment.invoice_id}; this request is a "
                f"{req.kind} on invoice {number}"
            )
        return balance_of(session, invoice).model_copy(update={"repeated": True})

    return write_once(session, Adjustment, req.idempotency_key, write, repeat)


def _adjustment_effect(
    session: Session, invoice: Invoice, req: AdjustmentApplication
) -> tuple[int, int]:
    """(change to the invoice balance, amount that becomes customer credit), or an error."""
    number, amount, balance = invoice.number, req.amount_minor, invoice.balance_minor
    match req.kind:
        case AdjustmentKind.CREDIT:
            if amount >= 0:
                raise InvalidAmount(f"invoice {number}: a credit must be negative, got {amount}")
            change = max(amount, -balance)  # never below zero; the rest is the customer's
            return change, change - amount
        case AdjustmentKind.LATE_FEE:
            if amount <= 0:
                raise InvalidAmount(f"invoice {number}: a late fee must be positive, got {amount}")
            if invoice.status == InvoiceStatus.PAID:
                raise InvalidAdjustment(f"invoice {number} is paid: no late fee on it")
            return amount, 0
        case AdjustmentKind.ADJUSTMENT:
            if amount == 0:
                raise InvalidAmount(f"invoice {number}: an adjustment of 0 changes nothing")
            if balance + amount < 0:
                raise InvalidAmount(
                    f"invoice {number}: an adjustment of {money_text(amount, invoice.currency)} "
                    f"would take the balance {money_text(balance, invoice.currency)} below 0; "
                    "use a credit"
                )
            return amount, 0
        case AdjustmentKind.WRITE_OFF:
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
