"""Changes to an invoice's money: payments here, adjustments in `ledger.adjustments`; each
idempotent and audited.

Temporal activities call these with a session whose transaction the caller commits
(`ledger.db.session_scope`). Each change and its audit event are written once per idempotency
key inside one savepoint (`ledger.books.write_once`).

Invariants:

- A balance stays between zero and `MAX_MINOR`: a payment or credit note beyond the balance
  leaves the rest as the customer's credit (keyed `credit_key(request key)`); a correction that
  would go below zero is refused.
- A zero balance makes an invoice awaiting payment paid; money due again reopens a paid one.
  An invoice left paid, void or written off has its open collector tasks closed.
- The money of a void, written-off or closed invoice never changes.
- A payment of method "credit" spends the customer's credit: it is refused unless the credit
  in its currency covers it and the invoice's balance takes it whole, and it writes the credit
  spent (keyed `request key:use`) with the payment.
"""

from __future__ import annotations

from sqlmodel import Session, select

from ledger.books import (
    AWAITING_PAYMENT,
    FINAL_STATUSES,
    CurrencyMismatch,
    IdempotencyConflict,
    InvalidAmount,
    InvoiceClosed,
    LedgerError,
    balance_of,
    load_invoice,
    money_text,
    record_audit,
    write_once,
)
from ledger.lifecycle import close_tasks_if_settled
from ledger.models import (
    Customer,
    CustomerCredit,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    utcnow,
)
from ledger.requests import LedgerBalance, PaymentApplication

PAID_FROM_CREDIT = "credit"  # the payment method that spends the customer's credit


def credit_key(request_key: str) -> str:
    """The idempotency key of the customer credit a payment or adjustment request leaves over;
    it is what ties a credit note's excess to its invoice."""
    return f"{request_key}:credit"


def leave_credit(
    session: Session,
    customer_id: str,
    currency: str,
    amount_minor: int,
    source: str,
    request_key: str,
    payment_id: int | None = None,
) -> None:
    """What a request leaves over becomes the customer's credit, keyed `credit_key(request key)`."""
    session.add(
        CustomerCredit(
            customer_id=customer_id,
            currency=currency,
            amount_minor=amount_minor,
            source=source,
            payment_id=payment_id,
            idempotency_key=credit_key(request_key),
        )
    )


def finish_money_change(
    session: Session, invoice: Invoice, actor: str, action: str, details: dict
) -> None:
    """After a change to the invoice's money: stamp it, close its tasks if it is settled, and
    audit the change."""
    invoice.updated_at = utcnow()  # before the tasks' query flushes it: one UPDATE, not two
    close_tasks_if_settled(session, invoice, actor)
    record_audit(session, actor, action, invoice.id, details)


def check_not_final(invoice: Invoice, doing: str) -> None:
    if invoice.status in FINAL_STATUSES:
        raise InvoiceClosed(f"invoice {invoice.number} is {invoice.status}: cannot {doing}")


def settle_status(invoice: Invoice) -> None:
    """Paid when nothing is left to pay; open again if money became due on a paid invoice."""
    if invoice.balance_minor == 0 and invoice.status in AWAITING_PAYMENT:
        invoice.status = InvoiceStatus.PAID
    elif invoice.balance_minor > 0 and invoice.status == InvoiceStatus.PAID:
        invoice.status = InvoiceStatus.OPEN


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
        invoice = load_invoice(session, number, for_update=True)
        check_not_final(invoice, "apply a payment")
        if req.currency != invoice.currency:
            raise CurrencyMismatch(
                f"invoice {number} is in {invoice.currency}, payment is in {req.currency}"
            )
        if req.method == PAID_FROM_CREDIT:
            _check_credit_covers(session, invoice, req)
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
        if req.method == PAID_FROM_CREDIT:
            session.add(
                CustomerCredit(
                    customer_id=invoice.customer_id,
                    currency=req.currency,
                    amount_minor=-req.amount_minor,
                    source="applied",
                    payment_id=payment.id,
                    idempotency_key=f"{req.idempotency_key}:use",
                )
            )
        if excess:
            leave_credit(
                session,
                invoice.customer_id,
                req.currency,
                excess,
                "overpayment",
                req.idempotency_key,
                payment.id,
            )
        invoice.balance_minor = balance_before - allocated
        settle_status(invoice)
        finish_money_change(
            session,
            invoice,
            req.actor,
            "payment_applied",
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
        return balance_of(session, invoice)

    def repeat(payment: Payment) -> LedgerBalance:
        invoice = load_invoice(session, number)
        if (
            payment.amount_minor != req.amount_minor
            or payment.currency != req.currency
            or payment.customer_id != invoice.customer_id
        ):
            raise IdempotencyConflict(
                f"payment key {req.idempotency_key!r} was already used for "
                f"{money_text(payment.amount_minor, payment.currency)} from customer "
                f"{payment.customer_id}; invoice {number} asks for "
                f"{money_text(req.amount_minor, req.currency)}"
            )
        return balance_of(session, invoice).model_copy(update={"repeated": True})

    return write_once(session, Payment, req.idempotency_key, write, repeat)


def _check_credit_covers(session: Session, invoice: Invoice, req: PaymentApplication) -> None:
    """Refuse a payment from credit the customer does not hold or the invoice cannot take."""
    # Lock the customer so two payments from one credit cannot both spend it (PostgreSQL;
    # SQLite serializes writers already).
    session.exec(
        select(Customer.id).where(Customer.id == invoice.customer_id).with_for_update()
    ).first()
    available = balance_of(session, invoice).customer_credit_minor
    amount, currency = req.amount_minor, req.currency
    if available < amount:
        raise InvalidAmount(
            f"customer {invoice.customer_id} holds {money_text(available, currency)} of credit "
            f"in {currency}: cannot pay {money_text(amount, currency)} of invoice "
            f"{invoice.number} from it"
        )
    if amount > invoice.balance_minor:
        raise InvalidAmount(
            f"customer {invoice.customer_id}: paying {money_text(amount, currency)} of credit in "
            f"{currency} to invoice {invoice.number} is more than its balance "
            f"{money_text(invoice.balance_minor, currency)}"
        )
