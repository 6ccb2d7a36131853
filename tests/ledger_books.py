"""The ledger's books read straight from the database, for tests that check money invariants.

`read_books` loads every row that holds money or lifecycle (and the ERP journal file) in one
session; `Books.fingerprint` is every column of every row of every table in the database plus
the journal's text, so two readings are equal exactly when nothing at all was written between.
`check_clearing_document` holds an ERP clearing document against those rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, select

from ledger.models import (
    Adjustment,
    AuditEvent,
    CollectorTask,
    Customer,
    CustomerCredit,
    ErpPosting,
    Invoice,
    Payment,
    PaymentAllocation,
)


def _rows(session: Session, model: type[SQLModel]) -> list[Any]:
    primary_key = model.__table__.primary_key.columns  # type: ignore[attr-defined]
    return list(session.exec(select(model).order_by(*primary_key)))


def _as_tuple(row: SQLModel) -> tuple[Any, ...]:
    return tuple(getattr(row, column.name) for column in row.__table__.columns)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Books:
    customers: list[Customer]
    invoices: list[Invoice]
    payments: list[Payment]
    allocations: list[PaymentAllocation]
    adjustments: list[Adjustment]
    credits: list[CustomerCredit]
    tasks: list[CollectorTask]
    postings: list[ErpPosting]
    audit: list[AuditEvent]
    other_tables: dict[str, list[tuple[Any, ...]]]  # the rest of the database, row by row
    journal_text: str

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        tables: Sequence[list[Any]] = (
            self.customers,
            self.invoices,
            self.payments,
            self.allocations,
            self.adjustments,
            self.credits,
            self.tasks,
            self.postings,
            self.audit,
        )
        return (
            *(tuple(_as_tuple(row) for row in rows) for rows in tables),
            sorted(self.other_tables.items()),
            self.journal_text,
        )

    @property
    def journal(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.journal_text.splitlines() if line.strip()]

    def invoice(self, number: str) -> Invoice:
        return next(invoice for invoice in self.invoices if invoice.number == number)

    def adjusted(self, invoice_id: int, kind: str) -> list[int]:
        return [
            a.amount_minor
            for a in self.adjustments
            if a.invoice_id == invoice_id and a.kind == kind
        ]

    def allocated(self, invoice_id: int) -> int:
        return sum(a.amount_minor for a in self.allocations if a.invoice_id == invoice_id)

    def held_credit(self, currency: str, source: str | None = None) -> int:
        return sum(
            credit.amount_minor
            for credit in self.credits
            if credit.currency == currency and source in (None, credit.source)
        )

    def received(self, currency: str) -> int:
        return sum(p.amount_minor for p in self.payments if p.currency == currency)

    def allocated_in(self, currency: str) -> int:
        currency_of = {p.id: p.currency for p in self.payments}
        return sum(
            a.amount_minor for a in self.allocations if currency_of[a.payment_id] == currency
        )


_READ_AS_MODELS = (
    Customer,
    Invoice,
    Payment,
    PaymentAllocation,
    Adjustment,
    CustomerCredit,
    CollectorTask,
    ErpPosting,
    AuditEvent,
)


def read_books(engine: sa.Engine, journal: Path) -> Books:
    modelled = {model.__tablename__ for model in _READ_AS_MODELS}  # type: ignore[attr-defined]
    with Session(engine) as session:
        names = sa.inspect(session.connection()).get_table_names()
        other_tables = {
            name: [
                tuple(row) for row in session.execute(sa.text(f'SELECT * FROM "{name}" ORDER BY 1'))
            ]
            for name in names
            if name not in modelled
        }
        books = Books(
            customers=_rows(session, Customer),
            invoices=_rows(session, Invoice),
            payments=_rows(session, Payment),
            allocations=_rows(session, PaymentAllocation),
            adjustments=_rows(session, Adjustment),
            credits=_rows(session, CustomerCredit),
            tasks=_rows(session, CollectorTask),
            postings=_rows(session, ErpPosting),
            audit=_rows(session, AuditEvent),
            other_tables=other_tables,
            journal_text=journal.read_text("utf-8") if journal.exists() else "",
        )
        session.expunge_all()
    return books


# Written down here rather than taken from ledger.currencies: the document is checked, not echoed.
TEST_EXPONENTS = {"USD": 2, "JPY": 0}


def _major_matches(text: str, amount_minor: int, currency: str) -> bool:
    """The exact amount with every ISO decimal: "12.50" for 1250 USD, "1250" for 1250 JPY."""
    exponent = TEST_EXPONENTS[currency]
    value = Decimal(text)
    return (
        value == Decimal(amount_minor).scaleb(-exponent) and -value.as_tuple().exponent == exponent
    )


def check_clearing_document(books: Books, document: dict[str, Any]) -> None:
    """The document's invoice, payments, adjustments and credits are the ledger's rows."""
    row = books.invoice(document["invoice_number"])
    currency = row.currency
    assert document["currency"] == currency
    assert document["customer"]["id"] == row.customer_id
    assert (document["total_minor"], document["balance_minor"]) == (
        row.total_minor,
        row.balance_minor,
    )
    assert _major_matches(document["total"], row.total_minor, currency)
    assert _major_matches(document["balance"], row.balance_minor, currency)

    payment_of = {payment.id: payment for payment in books.payments}
    allocations = [a for a in books.allocations if a.invoice_id == row.id]
    expected_payments = sorted(
        (a.payment_id, payment_of[a.payment_id].amount_minor, a.amount_minor) for a in allocations
    )
    listed = document["payments"]
    assert (
        sorted((p["payment_id"], p["payment_amount_minor"], p["allocated_minor"]) for p in listed)
        == expected_payments
    )
    for payment in listed:
        assert payment["currency"] == currency
        assert _major_matches(payment["allocated"], payment["allocated_minor"], currency)

    adjustments = [(a.kind, a.amount_minor) for a in books.adjustments if a.invoice_id == row.id]
    assert [(a["kind"], a["amount_minor"]) for a in document["adjustments"]] == adjustments
    for adjustment in document["adjustments"]:
        assert _major_matches(adjustment["amount"], adjustment["amount_minor"], currency)

    def credit_rows(rows: list[Any]) -> Counter[tuple[Any, ...]]:
        return Counter(
            (c["source"], c["payment_id"], c["currency"], c["amount_minor"]) for c in rows
        )

    stored = [
        {
            "source": c.source,
            "payment_id": c.payment_id,
            "currency": c.currency,
            "amount_minor": c.amount_minor,
        }
        for c in books.credits
    ]
    listed_credits = credit_rows(document["credits"])
    assert listed_credits <= credit_rows(stored), "the document lists credit the ledger lacks"
    allocated_ids = {a.payment_id for a in allocations}
    overpayments = [c for c in stored if c["payment_id"] in allocated_ids]
    assert +Counter(
        {k: n for k, n in listed_credits.items() if k[0] == "overpayment"}
    ) == credit_rows(overpayments)
    for credit in document["credits"]:
        assert credit["currency"] == currency
        assert _major_matches(credit["amount"], credit["amount_minor"], currency)

    # The document adds up on its own: the ERP needs nothing else to reach the balance.
    allocated = sum(p["allocated_minor"] for p in listed)
    changed = sum(a["amount_minor"] for a in document["adjustments"])
    assert document["total_minor"] + changed - allocated == document["balance_minor"]
    overpaid = sum(c["amount_minor"] for c in document["credits"] if c["source"] == "overpayment")
    assert sum(p["payment_amount_minor"] for p in listed) == allocated + overpaid
