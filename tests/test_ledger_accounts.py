"""What a payer sees of their account, read from the ledger; both databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from ledger.accounts import (
    AgingBucket,
    UnknownCustomer,
    aging_bucket,
    customer_account,
)
from ledger.adjustments import apply_adjustment
from ledger.books import UnknownInvoice
from ledger.checkout_drafts import CheckoutDraft, CheckoutLine
from ledger.checkout_events import set_checkout_status
from ledger.checkouts import open_checkout
from ledger.db import session_scope
from ledger.invoice_details import invoice_detail
from ledger.models import Customer, CustomerCredit, Invoice, InvoiceStatus
from ledger.operations import apply_payment
from ledger.requests import AdjustmentApplication, PaymentApplication

TODAY = date(2026, 3, 1)
NOON = datetime(2026, 3, 1, 12, tzinfo=UTC)  # TODAY in every zone from UTC-11 to UTC+11
RECEIVED = datetime(2026, 2, 1, 15, 30, tzinfo=UTC)


def add_invoice(
    session: Session,
    number: str,
    balance: int,
    due_on: date = TODAY,
    customer: str = "C1",
    status: InvoiceStatus = InvoiceStatus.OPEN,
    currency: str = "USD",
) -> None:
    session.add(
        Invoice(
            number=number,
            customer_id=customer,
            currency=currency,
            total_minor=max(balance, 1_000),
            balance_minor=balance,
            status=status,
            issued_on=due_on - timedelta(days=30),
            due_on=due_on,
            policy_name="standard",
            policy_version=1,
        )
    )


@pytest.fixture
def customers(engine: sa.Engine) -> sa.Engine:
    with session_scope(engine) as session:
        session.add_all(
            [
                Customer(id="C1", name="Acme", email="ap@acme.example", phone="+15550100"),
                Customer(id="C2", name="Globex", locale="de"),
            ]
        )
    return engine


def pay(engine: sa.Engine, number: str, amount: int, key: str, at: datetime = RECEIVED) -> None:
    with session_scope(engine) as session:
        apply_payment(
            session,
            PaymentApplication(
                invoice_number=number,
                amount_minor=amount,
                currency="USD",
                method="card",
                reference=f"ref-{key}",
                received_at=at,
                idempotency_key=key,
            ),
        )


def checkout(engine: sa.Engine, request_id: str, status: str, *lines: tuple[str, int]) -> int:
    with session_scope(engine) as session:
        opened = open_checkout(
            session,
            CheckoutDraft(
                customer_id="C1",
                request_id=request_id,
                method="us_bank_account",
                lines=[
                    CheckoutLine(
                        invoice_number=number, amount_minor=amount, reason_code="other", note="n"
                    )
                    for number, amount in lines
                ],
            ),
        )
        if status != "created":
            set_checkout_status(session, opened.id, status)
        return opened.id


def account(engine: sa.Engine, customer_id: str = "C1", **options: object):
    with Session(engine) as session:
        return customer_account(session, customer_id, NOON, **options)


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (0, AgingBucket.CURRENT),
        (1, AgingBucket.DAYS_1_30),
        (30, AgingBucket.DAYS_1_30),
        (31, AgingBucket.DAYS_31_60),
        (60, AgingBucket.DAYS_31_60),
        (61, AgingBucket.DAYS_61_90),
        (90, AgingBucket.DAYS_61_90),
        (91, AgingBucket.OVER_90),
    ],
)
def test_aging_buckets(days: int, bucket: AgingBucket) -> None:
    assert aging_bucket(days) == bucket


def test_open_invoices_oldest_due_first_with_their_age(customers: sa.Engine) -> None:
    with session_scope(customers) as session:
        add_invoice(session, "N-2", 2_000, TODAY + timedelta(days=10))  # not yet due
        add_invoice(session, "N-1", 1_000, TODAY - timedelta(days=91))
        add_invoice(session, "N-0", 500, TODAY - timedelta(days=91))  # same day: by number
        add_invoice(session, "N-3", 3_000, TODAY, status=InvoiceStatus.DISPUTED)
        add_invoice(session, "N-4", 4_000, TODAY - timedelta(days=31), status=InvoiceStatus.PAUSED)
        add_invoice(session, "N-5", 0, TODAY, status=InvoiceStatus.PAID)
        add_invoice(session, "N-6", 0, TODAY, status=InvoiceStatus.VOID)
        add_invoice(session, "N-7", 700, TODAY, status=InvoiceStatus.CLOSED)  # not awaiting
        add_invoice(session, "N-8", 0, TODAY)  # nothing left to pay
        add_invoice(session, "O-1", 9_000, TODAY, customer="C2")
    seen = account(customers)
    assert [
        (i.number, i.balance_minor, i.status, i.days_past_due, i.aging) for i in seen.open_invoices
    ] == [
        ("N-0", 500, "open", 91, AgingBucket.OVER_90),
        ("N-1", 1_000, "open", 91, AgingBucket.OVER_90),
        ("N-4", 4_000, "paused", 31, AgingBucket.DAYS_31_60),
        ("N-3", 3_000, "disputed", 0, AgingBucket.CURRENT),
        ("N-2", 2_000, "open", 0, AgingBucket.CURRENT),
    ]
    assert (seen.customer_id, seen.name, seen.email, seen.phone, seen.locale) == (
        "C1",
        "Acme",
        "ap@acme.example",
        "+15550100",
        "en",
    )
    theirs = account(customers, "C2")
    assert [(i.number, i.total_minor) for i in theirs.open_invoices] == [("O-1", 9_000)]
    assert theirs.locale == "de"


def test_credits_per_currency(customers: sa.Engine) -> None:
    with session_scope(customers) as session:
        for key, (customer, currency, amount) in enumerate(
            [
                ("C1", "USD", 1_500),
                ("C1", "USD", -500),
                ("C1", "EUR", 300),
                ("C1", "EUR", -300),  # used up: not shown
                ("C1", "JPY", 900),
                ("C2", "USD", 7_000),
            ]
        ):
            session.add(
                CustomerCredit(
                    customer_id=customer,
                    currency=currency,
                    amount_minor=amount,
                    source="credit_note",
                    idempotency_key=f"credit-{key}",
                )
            )
    assert [(c.currency, c.amount_minor) for c in account(customers).credits] == [
        ("JPY", 900),
        ("USD", 1_000),
    ]


def test_payments_on_their_way(customers: sa.Engine) -> None:
    with session_scope(customers) as session:
        add_invoice(session, "P-1", 10_000)
        add_invoice(session, "P-2", 5_000, TODAY + timedelta(days=1))
    first = checkout(customers, "r-1", "processing", ("P-1", 2_000), ("P-2", 1_000))
    checkout(customers, "r-2", "processing", ("P-1", 3_000))
    checkout(customers, "r-3", "created", ("P-1", 100))  # not on its way yet
    checkout(customers, "r-4", "failed", ("P-2", 100))
    seen = account(customers)
    assert [(i.number, i.balance_minor, i.pending_minor) for i in seen.open_invoices] == [
        ("P-1", 10_000, 5_000),
        ("P-2", 5_000, 1_000),
    ]
    assert [
        (p.checkout_id == first, p.amount_minor, p.method, p.currency, p.invoices)
        for p in seen.pending
    ] == [
        (True, 3_000, "us_bank_account", "USD", ["P-1", "P-2"]),
        (False, 3_000, "us_bank_account", "USD", ["P-1"]),
    ]


def test_payment_history_newest_first(customers: sa.Engine) -> None:
    with session_scope(customers) as session:
        add_invoice(session, "H-1", 10_000)
        add_invoice(session, "H-2", 1_000)
        add_invoice(session, "X-1", 1_000, customer="C2")
    pay(customers, "H-1", 4_000, "p-old", RECEIVED - timedelta(days=3))
    pay(customers, "H-2", 1_500, "p-over", RECEIVED)  # overpays: 5.00 becomes credit
    pay(customers, "H-1", 1_000, "p-new", RECEIVED + timedelta(days=1))
    pay(customers, "X-1", 1_000, "p-theirs", RECEIVED + timedelta(days=2))
    history = account(customers).history
    assert [(p.reference, p.amount_minor, p.invoices, p.received_at) for p in history] == [
        ("ref-p-new", 1_000, ["H-1"], RECEIVED + timedelta(days=1)),
        ("ref-p-over", 1_500, ["H-2"], RECEIVED),
        ("ref-p-old", 4_000, ["H-1"], RECEIVED - timedelta(days=3)),
    ]
    assert [p.reference for p in account(customers, history_limit=2).history] == [
        "ref-p-new",
        "ref-p-over",
    ]
    assert [(c.currency, c.amount_minor) for c in account(customers).credits] == [("USD", 500)]


def test_an_unknown_customer(customers: sa.Engine) -> None:
    with pytest.raises(UnknownCustomer, match="customer 'C9' does not exist"):
        account(customers, "C9")


def test_invoice_detail_lists_every_money_movement(customers: sa.Engine) -> None:
    with session_scope(customers) as session:
        add_invoice(session, "D-1", 10_000, TODAY)
    pay(customers, "D-1", 2_500, "p-1")
    with session_scope(customers) as session:
        apply_adjustment(
            session,
            AdjustmentApplication(
                invoice_number="D-1",
                kind="late_fee",
                amount_minor=150,
                reason="1.5% late fee",
                idempotency_key="fee-1",
            ),
        )
    with Session(customers) as session:
        detail = invoice_detail(session, "C1", "D-1")
    assert (detail.customer_name, detail.number, detail.balance_minor, detail.status) == (
        "Acme",
        "D-1",
        7_650,
        "open",
    )
    assert [(line.kind, line.amount_minor, line.detail) for line in detail.lines] == [
        ("payment", -2_500, "card ref-p-1"),
        ("late_fee", 150, "1.5% late fee"),
    ]
    assert detail.lines[0].at == RECEIVED


def test_another_customers_invoice_looks_missing(customers: sa.Engine) -> None:
    with session_scope(customers) as session:
        add_invoice(session, "THEIRS", 1_000, customer="C2")
    with Session(customers) as session:
        with pytest.raises(UnknownInvoice) as theirs:
            invoice_detail(session, "C1", "THEIRS")
        with pytest.raises(UnknownInvoice) as missing:
            invoice_detail(session, "C1", "NOPE")
        assert invoice_detail(session, "C2", "THEIRS").customer_name == "Globex"
    assert str(theirs.value) == "customer 'C1' has no invoice 'THEIRS'"
    assert str(missing.value) == "customer 'C1' has no invoice 'NOPE'"


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL statements the engine sends while the block runs."""
    sent: list[str] = []

    def note(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def test_a_large_account_is_read_in_a_few_statements(customers: sa.Engine) -> None:
    def read(invoices: int) -> tuple[int, int]:
        with statements(customers) as sent:
            seen = account(customers)
        return len(seen.open_invoices), len([s for s in sent if "SELECT" in s.upper()])

    with session_scope(customers) as session:
        for n in range(3):
            add_invoice(session, f"S-{n:04}", 1_000, TODAY - timedelta(days=n))
    checkout(customers, "small", "processing", ("S-0000", 100))
    pay(customers, "S-0001", 100, "p-small")
    small = read(3)

    with session_scope(customers) as session:
        for n in range(3, 1_000):
            add_invoice(session, f"S-{n:04}", 1_000, TODAY - timedelta(days=n % 200))
    lines = [(f"S-{n:04}", 100) for n in range(3, 40)]
    checkout(customers, "large", "processing", *lines)
    for n in range(2, 60):
        pay(customers, f"S-{n:04}", 100, f"p-{n}")
    large = read(1_000)

    assert small[0] == 3 and large[0] == 1_000
    # The same handful of statements, however many invoices, checkouts and payments.
    assert large[1] == small[1] <= 6


def test_an_account_is_aged_by_the_customers_own_date(engine: sa.Engine) -> None:
    """At 10:30 UTC on the due day it is already the next day on Kiritimati (UTC+14), and
    still the day before on Pago Pago (UTC-11)."""
    with session_scope(engine) as session:
        session.add(Customer(id="EAST", name="Line Islands Co", timezone="Pacific/Kiritimati"))
        session.add(Customer(id="WEST", name="Samoa Co", timezone="Pacific/Pago_Pago"))
        session.add(Customer(id="NOWHERE", name="Unknown Zone Co", timezone="Mars/Olympus"))
    with session_scope(engine) as session:
        for customer in ("EAST", "WEST", "NOWHERE"):
            add_invoice(session, f"{customer}-1", 1_000, TODAY, customer=customer)
    moment = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    with Session(engine) as session:
        east, west, nowhere = (
            customer_account(session, customer, moment) for customer in ("EAST", "WEST", "NOWHERE")
        )
    assert (east.as_of, east.open_invoices[0].days_past_due) == (date(2026, 3, 2), 1)
    assert east.open_invoices[0].aging == AgingBucket.DAYS_1_30
    assert (west.as_of, west.open_invoices[0].days_past_due) == (date(2026, 2, 28), 0)
    assert west.open_invoices[0].aging == AgingBucket.CURRENT
    # A zone Python does not know is read as UTC rather than refused.
    assert nowhere.as_of == TODAY
