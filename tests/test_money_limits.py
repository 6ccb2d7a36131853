"""Money of any real size: 64-bit minor units end to end, and one unit more is refused.

The largest amount is MAX_MINOR (2^63-1) minor units in every currency: 92,233,720,368,547,758.07
in USD or IDR, 9,223,372,036,854,775,807 in JPY or KRW. It is imported, stored, paid,
credited and carried through Temporal's JSON converter exactly, on SQLite and PostgreSQL; an
IDR 25,000,000.00 invoice (2,500,000,000 minor units, beyond 32 bits) runs its whole
workflow on PostgreSQL; and a ledger made before money columns were 64-bit upgrades.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.models import AdjustmentApplication, PaymentApplication
from invoices import invoice_input, start_invoice_workflow
from ledger.adjustments import apply_adjustment
from ledger.books import InvalidAmount
from ledger.currencies import MAX_MINOR, currency_exponent, max_amount
from ledger.db import make_engine, session_scope
from ledger.imports import import_file
from ledger.inputs import parse_amount, positive_minor_units
from ledger.migrate import upgrade
from ledger.models import (
    Adjustment,
    Customer,
    CustomerCredit,
    Invoice,
    Payment,
    PaymentAllocation,
)
from ledger.operations import apply_payment
from policies.loader import load_policy
from tests.invoice_harness import POLICIES, invoice_harness
from workflows.invoice import InvoiceWorkflow
from workflows.models import PaymentReceived, Stage

CURRENCIES = ("IDR", "KRW", "JPY", "USD", "KWD")
ZONES = {"IDR": "Asia/Jakarta", "KRW": "Asia/Seoul", "JPY": "Asia/Tokyo", "KWD": "Asia/Kuwait"}
HEADER = "invoice_number,customer_id,customer_name,email,timezone,currency,amount,issued_on,due_on"
RECEIVED = datetime(2026, 3, 10, 12, tzinfo=UTC)


def _largest(currency: str) -> Decimal:
    return max_amount(currency_exponent(currency))


def _one_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-currency_exponent(currency))


def _invoices_csv(folder: Path, *rows: tuple[str, str, Decimal]) -> Path:
    lines = [HEADER] + [
        f"{number},cust-{currency},Customer {currency},ap@customer.example,"
        f"{ZONES.get(currency, 'UTC')},{currency},{amount},2026-02-14,2026-03-16"
        for number, currency, amount in rows
    ]
    path = folder / "invoices.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("currency", CURRENCIES)
def test_the_largest_amount_is_accepted_and_one_unit_more_is_refused(currency: str) -> None:
    largest = _largest(currency)
    assert positive_minor_units(parse_amount(str(largest)), currency) == MAX_MINOR
    with pytest.raises(
        ValueError, match=f"more than the largest amount the ledger holds in {currency}: {largest}"
    ):
        positive_minor_units(parse_amount(str(largest + _one_unit(currency))), currency)


def test_real_sized_amounts_convert_exactly() -> None:
    assert positive_minor_units(parse_amount("25000000.00"), "IDR") == 2_500_000_000
    assert positive_minor_units(parse_amount("1500000000000"), "KRW") == 1_500_000_000_000
    assert positive_minor_units(parse_amount("250000000000"), "JPY") == 250_000_000_000
    assert positive_minor_units(parse_amount("21474836.48"), "USD") == 2**31


@pytest.mark.parametrize("currency", CURRENCIES)
def test_amounts_at_the_limit_are_imported_paid_and_credited(
    engine: sa.Engine, tmp_path: Path, currency: str
) -> None:
    path = _invoices_csv(
        tmp_path,
        (f"MAX-{currency}", currency, _largest(currency)),
        (f"CRN-{currency}", currency, _largest(currency)),
        (f"ONE-{currency}", currency, _one_unit(currency)),
    )
    with session_scope(engine) as session:
        report = import_file(session, path, lambda _row: ("standard", 3))
    assert report.ok, report.refused

    with session_scope(engine) as session:
        paid = apply_payment(session, _payment(f"MAX-{currency}", currency, MAX_MINOR))
        # An overpayment of nearly the whole range becomes customer credit.
        overpaid = apply_payment(session, _payment(f"ONE-{currency}", currency, MAX_MINOR))
        credited = apply_adjustment(
            session,
            AdjustmentApplication(
                invoice_number=f"CRN-{currency}",
                kind="credit",
                amount_minor=-MAX_MINOR,
                reason="credit note for the whole invoice",
                idempotency_key=f"credit-CRN-{currency}",
            ),
        )
    assert (paid.total_minor, paid.balance_minor, paid.status) == (MAX_MINOR, 0, "paid")
    assert (overpaid.balance_minor, overpaid.customer_credit_minor) == (0, MAX_MINOR - 1)
    assert (credited.total_minor, credited.balance_minor) == (MAX_MINOR, 0)

    with Session(engine) as session:
        totals = session.exec(
            select(Invoice.number, Invoice.total_minor).where(Invoice.currency == currency)
        ).all()
        assert sorted(totals) == sorted(
            [(f"MAX-{currency}", MAX_MINOR), (f"CRN-{currency}", MAX_MINOR), (f"ONE-{currency}", 1)]
        )
        assert session.exec(select(Payment.amount_minor)).all() == [MAX_MINOR, MAX_MINOR]
        assert sorted(session.exec(select(PaymentAllocation.amount_minor)).all()) == [1, MAX_MINOR]
        assert session.exec(select(CustomerCredit.amount_minor)).all() == [MAX_MINOR - 1]


def test_a_late_fee_past_the_limit_is_refused_and_changes_nothing(
    engine: sa.Engine, tmp_path: Path
) -> None:
    path = _invoices_csv(tmp_path, ("FEE-1", "USD", _largest("USD")))
    with session_scope(engine) as session:
        assert import_file(session, path, lambda _row: ("standard", 3)).ok
    fee = AdjustmentApplication(
        invoice_number="FEE-1",
        kind="late_fee",
        amount_minor=1,
        reason="late fee of policy step 3",
        idempotency_key="FEE-1:late-fee:3",
    )
    with (
        pytest.raises(InvalidAmount, match="past the ledger's limit"),
        session_scope(engine) as session,
    ):
        apply_adjustment(session, fee)
    with Session(engine) as session:
        assert session.exec(select(Invoice.balance_minor)).all() == [MAX_MINOR]
        assert session.exec(select(Adjustment)).all() == []


def test_one_unit_over_the_limit_is_refused_at_import_and_nothing_is_written(
    engine: sa.Engine, tmp_path: Path
) -> None:
    path = _invoices_csv(
        tmp_path,
        ("OK-1", "IDR", Decimal("25000000.00")),
        ("OVER-1", "JPY", _largest("JPY") + 1),
    )
    with session_scope(engine) as session:
        report = import_file(session, path, lambda _row: ("standard", 3))
    assert [str(error) for error in report.refused] == [
        "row 3, amount: 9223372036854775808 is more than the largest amount the ledger holds "
        "in JPY: 9223372036854775807"
    ]
    with Session(engine) as session:
        assert session.exec(select(sa.func.count()).select_from(Invoice)).one() == 0


def test_json_integer_amounts_at_the_limit_are_accepted(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "invoices.json"
    path.write_text(
        '[{"invoice_number": "J-MAX", "customer_id": "c", "customer_name": "C", '
        '"email": "ap@c.example", "timezone": "Asia/Seoul", "currency": "KRW", '
        f'"amount": {MAX_MINOR}, "issued_on": "2026-02-14", "due_on": "2026-03-16"}}]',
        encoding="utf-8",
    )
    with session_scope(engine) as session:
        report = import_file(session, path, lambda _row: ("standard", 3))
    assert report.ok, report.refused
    with Session(engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == "J-MAX")).one()
        assert (invoice.total_minor, invoice.balance_minor) == (MAX_MINOR, MAX_MINOR)


def _payment(number: str, currency: str, amount_minor: int) -> PaymentApplication:
    return PaymentApplication(
        invoice_number=number,
        amount_minor=amount_minor,
        currency=currency,
        method="bank_transfer",
        received_at=RECEIVED,
        idempotency_key=f"payment-{number}",
    )


def test_temporal_json_carries_the_largest_amount_exactly() -> None:
    sent = [
        PaymentReceived(amount_minor=MAX_MINOR, currency="JPY", received_at=RECEIVED),
        _payment("MAX-JPY", "JPY", MAX_MINOR),
    ]
    payloads = pydantic_data_converter.payload_converter.to_payloads(sent)
    # As the integer itself, not a float (which would read 9.223372036854776e+18).
    assert all(b'"amount_minor":9223372036854775807' in p.data for p in payloads)
    received = pydantic_data_converter.payload_converter.from_payloads(
        payloads, [PaymentReceived, PaymentApplication]
    )
    assert received == sent
    assert received[0].amount_minor == MAX_MINOR


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
async def test_idr_25_million_and_the_largest_jpy_invoice_are_paid_and_cleared(
    tmp_path: Path, ledger_url: str
) -> None:
    policy = load_policy(POLICIES / "standard.yaml")
    path = _invoices_csv(
        tmp_path, ("IDR-25M", "IDR", Decimal("25000000.00")), ("JPY-MAX", "JPY", _largest("JPY"))
    )
    async with invoice_harness(tmp_path, ledger_url) as h:
        with session_scope(h.engine) as session:
            report = import_file(session, path, lambda _row: (policy.name, policy.version))
            assert report.ok, report.refused
            invoices = session.exec(select(Invoice).order_by(Invoice.number)).all()
            zones = {i.number: session.get(Customer, i.customer_id).timezone for i in invoices}
        handles = {
            invoice.number: await start_invoice_workflow(
                h.env.client,
                h.settings,
                invoice_input(invoice, zones[invoice.number], policy, clock_offset=h.offset),
            )
            for invoice in invoices
        }
        for number, currency, amount_minor in (
            ("IDR-25M", "IDR", 2_500_000_000),
            ("JPY-MAX", "JPY", MAX_MINOR),
        ):
            await handles[number].execute_update(
                InvoiceWorkflow.record_payment,
                PaymentReceived(amount_minor=amount_minor, currency=currency, method="card"),
            )
            final = await handles[number].result()
            assert (final.stage, final.balance_minor) == (Stage.CLOSED, 0)
            assert h.invoice(number).status == "closed"
            assert h.invoice(number).total_minor == amount_minor
        assert sorted(posting["invoice_number"] for posting in h.erp_journal()) == [
            "IDR-25M",
            "JPY-MAX",
        ]
        with Session(h.engine) as session:
            assert sorted(session.exec(select(Payment.amount_minor)).all()) == [
                2_500_000_000,
                MAX_MINOR,
            ]


# --- upgrading a ledger made with 32-bit money columns ---------------------------------------

_CUSTOMER = (
    "INSERT INTO customer (id, name, timezone, locale, email_opt_out, sms_opt_out, created_at) "
    "VALUES ('c1', 'Acme', 'UTC', 'en', false, false, :at)"
)
_INVOICE = (
    "INSERT INTO invoice (id, number, customer_id, currency, total_minor, balance_minor, "
    "issued_on, due_on, status, policy_name, policy_version, created_at, updated_at) "
    "VALUES (:id, :number, 'c1', 'USD', :total, :total, :issued, :due, 'open', 'standard', 3, "
    ":at, :at)"
)
_PAYMENT = (
    "INSERT INTO payment (id, customer_id, currency, amount_minor, method, status, "
    "idempotency_key, received_at) VALUES (:id, 'c1', 'USD', :amount, 'card', 'succeeded', "
    ":key, :at)"
)
_ALLOCATION = (
    "INSERT INTO paymentallocation (payment_id, invoice_id, amount_minor) "
    "VALUES (:payment, :invoice, :amount)"
)
_CREDIT = (
    "INSERT INTO customercredit (customer_id, currency, amount_minor, source, payment_id, "
    "idempotency_key, created_at) VALUES ('c1', 'USD', :amount, 'overpayment', :payment, :key, :at)"
)
_ADJUSTMENT = (
    "INSERT INTO adjustment (invoice_id, kind, amount_minor, idempotency_key, created_at) "
    "VALUES (:invoice, 'late_fee', :amount, :key, :at)"
)
INT32_MAX = 2**31 - 1


def _money_rows(connection: sa.Connection) -> list[tuple]:
    return [
        *connection.execute(sa.text("SELECT total_minor, balance_minor FROM invoice ORDER BY id")),
        *connection.execute(sa.text("SELECT amount_minor FROM payment ORDER BY id")),
        *connection.execute(sa.text("SELECT amount_minor FROM paymentallocation ORDER BY id")),
        *connection.execute(sa.text("SELECT amount_minor FROM customercredit ORDER BY id")),
        *connection.execute(sa.text("SELECT amount_minor FROM adjustment ORDER BY id")),
    ]


def test_a_ledger_from_before_upgrades_with_its_money_intact_then_holds_64_bits(
    empty_database_url: str,
) -> None:
    upgrade(empty_database_url, "0002")
    engine = make_engine(empty_database_url)
    at = datetime(2026, 1, 10, tzinfo=UTC)
    days = {"issued": date(2026, 1, 10), "due": date(2026, 2, 9), "at": at}
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(_CUSTOMER), {"at": at})
            connection.execute(
                sa.text(_INVOICE), {"id": 1, "number": "OLD-1", "total": INT32_MAX, **days}
            )
            connection.execute(
                sa.text(_PAYMENT), {"id": 1, "amount": INT32_MAX, "key": "p1", "at": at}
            )
            connection.execute(sa.text(_ALLOCATION), {"payment": 1, "invoice": 1, "amount": 12_345})
            connection.execute(
                sa.text(_CREDIT), {"amount": INT32_MAX, "payment": 1, "key": "c1", "at": at}
            )
            connection.execute(
                sa.text(_ADJUSTMENT), {"invoice": 1, "amount": 500, "key": "a1", "at": at}
            )
            before = _money_rows(connection)
        if engine.dialect.name == "postgresql":
            # What the upgrade is for: 32-bit columns refuse Rp 25,000,000.00.
            with (
                pytest.raises(sa.exc.DBAPIError, match="out of range"),
                engine.begin() as connection,
            ):
                connection.execute(
                    sa.text(_INVOICE), {"id": 2, "number": "IDR-1", "total": 2_500_000_000, **days}
                )
        engine.dispose()

        upgrade(empty_database_url, "0003")

        with engine.begin() as connection:
            assert _money_rows(connection) == before
            assert connection.execute(sa.text("SELECT number FROM invoice")).scalars().all() == [
                "OLD-1"
            ]
            connection.execute(
                sa.text(_INVOICE), {"id": 2, "number": "MAX-1", "total": MAX_MINOR, **days}
            )
            connection.execute(
                sa.text(_PAYMENT), {"id": 2, "amount": MAX_MINOR, "key": "p2", "at": at}
            )
            connection.execute(
                sa.text(_ALLOCATION), {"payment": 2, "invoice": 2, "amount": MAX_MINOR}
            )
            connection.execute(
                sa.text(_CREDIT), {"amount": MAX_MINOR, "payment": 2, "key": "c2", "at": at}
            )
            connection.execute(
                sa.text(_ADJUSTMENT), {"invoice": 2, "amount": -MAX_MINOR, "key": "a2", "at": at}
            )
            assert _money_rows(connection) == [
                before[0], (MAX_MINOR, MAX_MINOR), before[1], (MAX_MINOR,), before[2],
                (MAX_MINOR,), before[3], (MAX_MINOR,), before[4], (-MAX_MINOR,),
            ]  # fmt: skip
        # The copied tables keep their checks and references.
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.text("UPDATE invoice SET balance_minor = -1 WHERE id = 1"))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.text(_ALLOCATION), {"payment": 2, "invoice": 99, "amount": 1})
        engine.dispose()
        upgrade(empty_database_url)  # and on to the newest revision
    finally:
        engine.dispose()
