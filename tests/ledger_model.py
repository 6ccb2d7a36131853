"""What one customer's ledger should hold, kept by hand, and the check of the real books against it.

The model writes down the lifecycle on its own (it imports no rule from ledger.operations or
ledger.lifecycle), so a slip in the ledger cannot hide behind the same slip in the expectation.
`check_books` holds the rows read from the database both against the model and against
themselves:

- each balance == total + late fees + corrections − allocations − credits applied − write-off
  − void, summed from Adjustment and PaymentAllocation rows with the sign each kind must have,
  equal to the model and never negative;
- customer credit == overpayments + credit-note excess (nothing spends credit yet), and every
  payment == its allocations + its overpayment credit;
- one audit event per change, counted per action and invoice; the trail only ever grows;
- awaiting payment (open, disputed, paused) ⇔ balance > 0; a settled invoice has no open
  collector task; a closed one was cleared in the ERP;
- the ERP journal holds exactly one document per cleared invoice, and it is the ledger's rows.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ledger.models import Invoice, InvoiceStatus
from tests.ledger_books import Books, check_clearing_document

Status = InvoiceStatus
AWAITING_PAYMENT = frozenset({Status.OPEN, Status.DISPUTED, Status.PAUSED})
MONEY_FROZEN = frozenset({Status.VOID, Status.WRITTEN_OFF, Status.CLOSED})
SETTLED = MONEY_FROZEN | {Status.PAID}  # nothing left to collect
CLEARABLE = frozenset({Status.PAID, Status.VOID, Status.WRITTEN_OFF})  # the workflow clears these
MANUAL_CHANGES = {  # disputes, promises (a pause) and resuming: they move no money
    Status.OPEN: {Status.DISPUTED, Status.PAUSED},
    Status.DISPUTED: {Status.OPEN, Status.PAUSED},
    Status.PAUSED: {Status.OPEN, Status.DISPUTED},
}


@dataclass
class ExpectedInvoice:
    number: str
    currency: str
    total: int
    balance: int
    status: Status = Status.OPEN
    allocated: int = 0
    late_fees: int = 0
    corrections: int = 0  # the signed "adjustment" kind
    credits_applied: int = 0
    written_off: int = 0
    voided: int = 0
    overpaid: int = 0  # excess of payments allocated here, held as customer credit
    paid_while_settled: int = 0  # payments with nothing to pay: all customer credit
    credit_note_excess: int = 0
    open_tasks: int = 0
    cleared_as: Status | None = None

    def balance_from_parts(self) -> int:
        return (
            self.total
            + self.late_fees
            + self.corrections
            - self.allocated
            - self.credits_applied
            - self.written_off
            - self.voided
        )


@dataclass
class ExpectedLedger:
    invoices: dict[str, ExpectedInvoice] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)  # per currency
    audit: Counter[tuple[str, str]] = field(default_factory=Counter)  # (action, invoice number)
    audit_seen: list[tuple[Any, ...]] = field(default_factory=list)

    def held(self, currency: str) -> int:
        return sum(
            i.overpaid + i.paid_while_settled + i.credit_note_excess
            for i in self.invoices.values()
            if i.currency == currency
        )

    def settle(self, invoice: ExpectedInvoice) -> None:
        """Paid at zero, open again if money fell due on a paid invoice; settling ends tasks."""
        if invoice.balance == 0 and invoice.status in AWAITING_PAYMENT:
            invoice.status = Status.PAID
        elif invoice.balance > 0 and invoice.status == Status.PAID:
            invoice.status = Status.OPEN
        if invoice.status in SETTLED:
            self.audit["collector_task_closed", invoice.number] += invoice.open_tasks
            invoice.open_tasks = 0

    def numbers(self, wanted: Any) -> list[str]:
        return [number for number, invoice in self.invoices.items() if wanted(invoice)]


def check_books(books: Books, model: ExpectedLedger) -> None:
    assert {row.number for row in books.invoices} == set(model.invoices)
    for row in books.invoices:
        _check_invoice(books, row, model.invoices[row.number])
    for currency in {row.currency for row in books.invoices}:
        _check_customer_money(books, model, currency)
    _check_audit(books, model)
    _check_erp_journal(books, model)


def _check_invoice(books: Books, row: Invoice, expected: ExpectedInvoice) -> None:
    assert row.id is not None
    late_fees = books.adjusted(row.id, "late_fee")
    corrections = books.adjusted(row.id, "adjustment")
    credits = books.adjusted(row.id, "credit")
    write_offs = books.adjusted(row.id, "write_off")
    voids = books.adjusted(row.id, "void")
    allocated = books.allocated(row.id)
    assert all(a > 0 for a in late_fees) and all(a != 0 for a in corrections)
    assert all(a <= 0 for a in credits + voids) and all(a < 0 for a in write_offs)
    assert len(write_offs) + len(voids) <= 1, f"{row.number} was closed out twice"
    from_rows = (
        row.total_minor
        + sum(late_fees)
        + sum(corrections)
        - allocated
        - sum(abs(a) for a in credits)
        - sum(abs(a) for a in write_offs)
        - sum(abs(a) for a in voids)
    )
    assert row.balance_minor == from_rows == expected.balance == expected.balance_from_parts(), (
        f"{row.number}: stored {row.balance_minor}, from rows {from_rows}, model {expected.balance}"
    )
    parts = (
        allocated,
        sum(late_fees),
        sum(corrections),
        -sum(credits),
        -sum(write_offs),
        -sum(voids),
    )
    assert parts == (
        expected.allocated,
        expected.late_fees,
        expected.corrections,
        expected.credits_applied,
        expected.written_off,
        expected.voided,
    )
    assert row.balance_minor >= 0
    assert row.status == expected.status
    assert (row.status in AWAITING_PAYMENT) == (row.balance_minor > 0), (
        f"{row.number} is {row.status} with balance {row.balance_minor}"
    )
    assert row.status != Status.VOID or (voids and not allocated)
    assert row.status != Status.WRITTEN_OFF or write_offs
    open_tasks = [t for t in books.tasks if t.invoice_id == row.id and t.status == "open"]
    assert len(open_tasks) == expected.open_tasks
    assert not (open_tasks and row.status in SETTLED), f"{row.number} is settled yet has tasks"
    if row.status == Status.CLOSED:
        assert expected.cleared_as is not None, f"{row.number} closed without ERP clearing"


def _check_customer_money(books: Books, model: ExpectedLedger, currency: str) -> None:
    mine = [i for i in model.invoices.values() if i.currency == currency]
    overpaid = sum(i.overpaid + i.paid_while_settled for i in mine)
    assert books.held_credit(currency, "overpayment") == overpaid
    assert books.held_credit(currency, "credit_note") == sum(i.credit_note_excess for i in mine)
    assert books.held_credit(currency) == model.held(currency)
    assert all(credit.amount_minor > 0 for credit in books.credits)
    assert books.received(currency) == model.received[currency]
    assert books.received(currency) == books.allocated_in(currency) + overpaid
    for payment in books.payments:  # each payment adds up on its own too
        spread = sum(a.amount_minor for a in books.allocations if a.payment_id == payment.id)
        kept = sum(c.amount_minor for c in books.credits if c.payment_id == payment.id)
        assert spread + kept == payment.amount_minor, f"payment {payment.id} does not add up"


def _check_audit(books: Books, model: ExpectedLedger) -> None:
    trail = [(e.id, e.at, e.actor, e.action, e.invoice_id, e.detail) for e in books.audit]
    assert trail[: len(model.audit_seen)] == model.audit_seen, "the audit trail was rewritten"
    model.audit_seen = trail
    number_of = {row.id: row.number for row in books.invoices}
    actual = Counter((e.action, number_of[e.invoice_id]) for e in books.audit)
    assert actual == +model.audit


def _check_erp_journal(books: Books, model: ExpectedLedger) -> None:
    documents = books.journal
    cleared = model.numbers(lambda invoice: invoice.cleared_as is not None)
    assert Counter(d["invoice_number"] for d in documents) == Counter(cleared)
    posted = [json.loads(posting.document) for posting in books.postings]
    assert sorted(posted, key=str) == sorted(documents, key=str), "journal and ErpPosting differ"
    for document in documents:
        expected = model.invoices[document["invoice_number"]]
        assert document["status"] == expected.cleared_as
        check_clearing_document(books, document)
        credit_by_source: Counter[str] = Counter()
        for credit in document["credits"]:
            credit_by_source[credit["source"]] += credit["amount_minor"]
        assert credit_by_source["overpayment"] == expected.overpaid
        assert credit_by_source["credit_note"] == expected.credit_note_excess
