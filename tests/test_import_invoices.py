"""Invoice imports from CSV and JSON: every row checked, the whole file or nothing."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from ledger import imports
from ledger.db import session_scope
from ledger.import_rows import ImportRejected, InvoiceRow, RowError
from ledger.imports import import_file, import_invoices, read_invoice_rows
from ledger.models import AuditEvent, Customer, Invoice

HEADER = (
    "invoice_number,customer_id,customer_name,email,phone,timezone,currency,amount,issued_on,due_on"
)


def standard_policy(row: InvoiceRow) -> tuple[str, int]:
    return (row.policy or "standard", 3)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def csv_file(tmp_path: Path, *lines: str, header: str = HEADER) -> Path:
    return write(tmp_path, "invoices.csv", "\n".join([header, *lines]) + "\n")


def count(engine: sa.Engine, model: type) -> int:
    with Session(engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def errors_of(rejected: pytest.ExceptionInfo[ImportRejected]) -> set[tuple[int, str]]:
    return {(error.row, error.field) for error in rejected.value.errors}


GOOD_CSV = (
    "INV-1,C1,Acme Corp,ap@acme.example,+1 415 555 2671,America/Los_Angeles,USD,1234.50,"
    "2026-01-10,2026-02-09",
    "INV-2,C1,Acme Corp,ap@acme.example,+1 415 555 2671,America/Los_Angeles,USD,99,"
    "2026-01-12,2026-02-11",
    "INV-3,C2,Tanaka KK,,+81 3-1234-5678,Asia/Tokyo,JPY,150000,2026-01-15,2026-01-15",
)


# --- reading -------------------------------------------------------------------------------


def test_read_a_good_csv(tmp_path: Path) -> None:
    rows = read_invoice_rows(csv_file(tmp_path, *GOOD_CSV))
    assert [row.invoice_number for row in rows] == ["INV-1", "INV-2", "INV-3"]
    assert [row.row for row in rows] == [2, 3, 4]
    first, _, tokyo = rows
    assert (first.amount, first.amount_minor, first.phone) == (
        Decimal("1234.50"),
        123_450,
        "+14155552671",
    )
    assert (tokyo.amount_minor, tokyo.email, tokyo.phone) == (150_000, None, "+81312345678")


def test_extra_columns_optional_columns_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "\ufeff"
        + HEADER
        + ",segment,locale,policy,notes\n"
        + "INV-9,C9,Zed,zed@example.com,,Europe/Paris,EUR,10.00,2026-01-01,2026-01-31,"
        "smb,fr-FR,gentle,call after 3pm\n",
        encoding="utf-8",
    )
    (row,) = read_invoice_rows(path)
    assert (row.segment, row.locale, row.policy, row.amount_minor) == (
        "smb",
        "fr-FR",
        "gentle",
        1_000,
    )


def test_read_a_good_json(tmp_path: Path) -> None:
    invoices = [
        {
            "invoice_number": "J-1",
            "customer_id": "C1",
            "customer_name": "Acme Corp",
            "email": "ap@acme.example",
            "timezone": "America/New_York",
            "currency": "USD",
            "amount": "1234.50",
            "issued_on": "2026-01-10",
            "due_on": "2026-02-09",
        },
        {
            "invoice_number": "J-2",
            "customer_id": 42,
            "customer_name": "Kuwait Trading",
            "phone": "+965 2222 3333",
            "timezone": "Asia/Kuwait",
            "currency": "kwd",
            "amount": "12.345",
            "issued_on": "2026-01-10",
            "due_on": "2026-02-09",
            "policy": None,
        },
    ]
    path = write(tmp_path, "invoices.json", json.dumps(invoices))
    first, second = read_invoice_rows(path)
    assert (first.row, first.amount_minor) == (1, 123_450)
    assert (second.customer_id, second.currency, second.amount_minor) == ("42", "KWD", 12_345)


def test_a_bad_csv_reports_every_problem_by_row_and_field(tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        GOOD_CSV[0],
        "INV-2,C2,Beta,not-an-email,,America/New_York,USD,10.00,2026-01-10,2026-01-05",
        "INV-3,C3,,beta@example.com,4155552671,Mars/Olympus,XYZ,10.00,2026-01-10,2026-02-10",
        "INV-4,C4,Gamma,gamma@example.com,,UTC,JPY,1234.5,2026-01-10,2026-02-10",
        "INV-5,C5,Delta,,,UTC,USD,0,2026-13-01,2026-02-10",
        'INV-6,C6,Epsilon,e@example.com,,UTC,USD,"1,234.00",10/01/2026,2026-02-10',
        "INV-7,C7,Zeta,z@example.com,,UTC,USD,12.345,2026-01-10,2026-02-10",
    )
    with pytest.raises(ImportRejected) as rejected:
        read_invoice_rows(path)
    assert errors_of(rejected) == {
        (3, "email"),
        (3, "due_on"),
        (4, "customer_name"),
        (4, "phone"),
        (4, "timezone"),
        (4, "currency"),
        (5, "amount"),
        (6, "phone"),
        (6, "amount"),
        (6, "issued_on"),
        (7, "amount"),
        (7, "issued_on"),
        (8, "amount"),
    }
    messages = [str(error) for error in rejected.value.errors]
    assert "row 3, due_on: 2026-01-05 is before issued_on 2026-01-10" in messages
    assert "row 4, customer_name: missing or empty" in messages
    assert "row 5, amount: 1234.5 has too many decimals: JPY allows no decimals" in messages
    assert "row 6, phone: no email and no phone: give at least one" in messages
    assert "row 6, amount: 0 must be greater than 0" in messages
    assert "row 8, amount: 12.345 has too many decimals: USD allows at most 2 decimals" in messages
    assert any(m.startswith("row 4, phone: '4155552671' must start with +") for m in messages)
    assert any(m.startswith("row 4, timezone: unknown time zone 'Mars/Olympus'") for m in messages)
    # The exception's own text lists them too, for a log or a terminal.
    assert "row 3, due_on: 2026-01-05 is before issued_on 2026-01-10" in str(rejected.value)


def test_duplicate_invoice_numbers_in_a_file_name_every_row(tmp_path: Path) -> None:
    path = csv_file(tmp_path, GOOD_CSV[0], GOOD_CSV[1], GOOD_CSV[0].replace("1234.50", "5.00"))
    with pytest.raises(ImportRejected) as rejected:
        read_invoice_rows(path)
    assert [str(error) for error in rejected.value.errors] == [
        "row 2, invoice_number: INV-1 is also on row 4 of the file",
        "row 4, invoice_number: INV-1 is also on row 2 of the file",
    ]


def test_rows_of_one_customer_must_agree(tmp_path: Path) -> None:
    other_email = GOOD_CSV[1].replace("ap@acme.example", "billing@acme.example")
    with pytest.raises(ImportRejected) as rejected:
        read_invoice_rows(csv_file(tmp_path, GOOD_CSV[0], other_email))
    (error,) = rejected.value.errors
    assert (error.row, error.field) == (3, "email")
    assert "customer C1 has email 'ap@acme.example' on row 2" in error.message


def test_missing_header_columns_are_reported_once(tmp_path: Path) -> None:
    header = "invoice_number,customer_id,customer_name,email,timezone,currency,amount"
    with pytest.raises(ImportRejected) as rejected:
        read_invoice_rows(
            csv_file(tmp_path, "INV-1,C1,Acme,a@b.example,UTC,USD,1.00", header=header)
        )
    assert [str(error) for error in rejected.value.errors] == [
        "row 1, issued_on: column missing from the header",
        "row 1, due_on: column missing from the header",
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("invoices.xlsx", "", "unsupported file type '.xlsx'"),
        ("invoices.csv", "", "the file is empty"),
        ("invoices.json", "[{", "not valid JSON"),
        ("invoices.json", '{"invoice_number": "X"}', "expected a JSON list"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    with pytest.raises(ImportRejected, match=message) as rejected:
        read_invoice_rows(write(tmp_path, name, content))
    assert rejected.value.errors[0].row == 0


def test_row_error_text() -> None:
    assert str(RowError(3, "due_on", "before issued_on 2026-01-10")) == (
        "row 3, due_on: before issued_on 2026-01-10"
    )


# --- importing -----------------------------------------------------------------------------


def test_import_a_good_csv(engine: sa.Engine, tmp_path: Path) -> None:
    with session_scope(engine) as session:
        report = import_file(session, csv_file(tmp_path, *GOOD_CSV), standard_policy)
    assert report.ok
    assert report.imported == ["INV-1", "INV-2", "INV-3"]
    with Session(engine) as session:
        invoices = {i.number: i for i in session.exec(select(Invoice))}
        customers = {c.id: c for c in session.exec(select(Customer))}
        events = list(session.exec(select(AuditEvent.action)))
    first = invoices["INV-1"]
    assert (first.total_minor, first.balance_minor, first.currency, first.status) == (
        123_450,
        123_450,
        "USD",
        "open",
    )
    assert (first.issued_on, first.due_on) == (date(2026, 1, 10), date(2026, 2, 9))
    assert (first.policy_name, first.policy_version) == ("standard", 3)
    assert invoices["INV-3"].total_minor == 150_000
    assert customers["C1"].phone == "+14155552671"
    assert (customers["C2"].timezone, customers["C2"].email) == ("Asia/Tokyo", None)
    assert events == ["invoice_imported"] * 3


def test_import_a_good_json(engine: sa.Engine, tmp_path: Path) -> None:
    invoices = [
        {
            "invoice_number": f"J-{n}",
            "customer_id": "C1",
            "customer_name": "Acme Corp",
            "email": "ap@acme.example",
            "timezone": "Europe/Berlin",
            "currency": "EUR",
            "amount": f"{n}00.10",
            "issued_on": "2026-01-10",
            "due_on": "2026-02-09",
            "policy": "gentle",
        }
        for n in (1, 2)
    ]
    path = write(tmp_path, "invoices.json", json.dumps(invoices))
    with session_scope(engine) as session:
        imported = import_invoices(session, read_invoice_rows(path), standard_policy)
    assert [(i.number, i.total_minor, i.policy_name) for i in imported] == [
        ("J-1", 10_010, "gentle"),
        ("J-2", 20_010, "gentle"),
    ]
    assert count(engine, Invoice) == 2
    assert count(engine, Customer) == 1


def test_a_bad_file_writes_nothing(engine: sa.Engine, tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        *GOOD_CSV,
        "INV-4,C4,Delta,,,UTC,USD,10.00,2026-01-10,2026-02-10",
        "INV-5,C5,Eps,e@example.com,,UTC,USD,10.00,2026-01-10,2025-12-31",
    )
    with session_scope(engine) as session:
        report = import_file(session, path, standard_policy)
    assert report.imported == []
    assert [str(error) for error in report.refused] == [
        "row 5, phone: no email and no phone: give at least one",
        "row 6, due_on: 2025-12-31 is before issued_on 2026-01-10",
    ]
    assert count(engine, Invoice) == 0
    assert count(engine, Customer) == 0
    assert count(engine, AuditEvent) == 0


def test_partial_import_takes_the_good_rows_and_reports_the_bad(
    engine: sa.Engine, tmp_path: Path
) -> None:
    path = csv_file(
        tmp_path,
        GOOD_CSV[0],
        "INV-4,C4,Delta,,,UTC,USD,10.00,2026-01-10,2026-02-10",
        GOOD_CSV[2],
        "INV-3,C3,Copy,c@example.com,,UTC,USD,10.00,2026-01-10,2026-02-10",
    )
    with session_scope(engine) as session:
        report = import_file(session, path, standard_policy, partial=True)
    assert report.imported == ["INV-1"]
    assert report.refused_rows == [3, 4, 5]
    with Session(engine) as session:
        assert list(session.exec(select(Invoice.number))) == ["INV-1"]


def test_an_invoice_already_in_the_ledger_is_refused(engine: sa.Engine, tmp_path: Path) -> None:
    with session_scope(engine) as session:
        import_file(session, csv_file(tmp_path, GOOD_CSV[0]), standard_policy)
    second = write(tmp_path, "again.csv", "\n".join([HEADER, GOOD_CSV[1], GOOD_CSV[0]]))
    with session_scope(engine) as session:
        report = import_file(session, second, standard_policy)
    assert [str(error) for error in report.refused] == [
        "row 3, invoice_number: INV-1 is already in the ledger"
    ]
    assert count(engine, Invoice) == 1
    rows = read_invoice_rows(second)
    with (
        pytest.raises(ImportRejected, match="INV-1 is already in the ledger"),
        session_scope(engine) as session,
    ):
        import_invoices(session, rows, standard_policy)
    assert count(engine, Invoice) == 1


def test_a_known_customer_gets_new_contact_details(engine: sa.Engine, tmp_path: Path) -> None:
    with session_scope(engine) as session:
        import_file(session, csv_file(tmp_path, GOOD_CSV[0]), standard_policy)
        customer = session.get(Customer, "C1")
        customer.sms_opt_out = True
        # Both addresses bounced; only the email changes below.
        customer.email_undeliverable = customer.phone_undeliverable = "550 mailbox unknown"
    moved = GOOD_CSV[1].replace("ap@acme.example", "billing@acme.example")
    with session_scope(engine) as session:
        report = import_file(
            session, write(tmp_path, "b.csv", f"{HEADER}\n{moved}\n"), standard_policy
        )
    assert report.imported == ["INV-2"]
    with Session(engine) as session:
        customer = session.get(Customer, "C1")
        update = session.exec(
            select(AuditEvent).where(AuditEvent.action == "customer_updated")
        ).one()
    assert customer.email == "billing@acme.example"
    assert customer.sms_opt_out  # an import never re-subscribes a customer
    assert customer.email_undeliverable is None  # a new address clears the old one's mark
    assert customer.phone_undeliverable == "550 mailbox unknown"
    assert json.loads(update.detail)["changes"] == {
        "email": ["ap@acme.example", "billing@acme.example"]
    }


def test_a_policy_the_caller_refuses_is_a_row_error(engine: sa.Engine, tmp_path: Path) -> None:
    def policy_for(row: InvoiceRow) -> tuple[str, int]:
        if row.currency == "JPY":
            raise ValueError("no policy for JPY invoices")
        return ("standard", 3)

    with session_scope(engine) as session:
        report = import_file(session, csv_file(tmp_path, *GOOD_CSV), policy_for)
    assert [str(error) for error in report.refused] == ["row 4, policy: no policy for JPY invoices"]
    assert count(engine, Invoice) == 0


def test_an_import_racing_another_reports_the_numbers_it_lost(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(engine) as session:
        import_file(session, csv_file(tmp_path, GOOD_CSV[0]), standard_policy)
    rows = read_invoice_rows(write(tmp_path, "b.csv", "\n".join([HEADER, *GOOD_CSV])))

    # The check before writing misses INV-1, as if the other import committed just after it.
    real_check = imports.already_in_ledger
    calls: list[int] = []

    def first_check_misses(*args: object) -> list[RowError]:
        calls.append(1)
        return [] if len(calls) == 1 else real_check(*args)

    monkeypatch.setattr(imports, "already_in_ledger", first_check_misses)
    with (
        pytest.raises(
            ImportRejected, match="row 2, invoice_number: INV-1 is already in the ledger"
        ),
        session_scope(engine) as session,
    ):
        import_invoices(session, rows, standard_policy)
    assert len(calls) == 2  # refused by the database, then explained by the second check
    assert count(engine, Invoice) == 1
    assert count(engine, Customer) == 1
