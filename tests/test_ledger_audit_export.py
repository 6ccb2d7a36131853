"""The audit export: rows with before, after and request id for changes made through the
ledger's own operations, the CSV file, and the trail staying append-only; both databases."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from ledger.adjustments import apply_adjustment
from ledger.audit_export import (
    CSV_HEADER,
    AuditRow,
    audit_csv,
    audit_rows,
    before_and_after,
    request_id_of,
)
from ledger.books import LedgerError, UnknownInvoice
from ledger.db import session_scope
from ledger.lifecycle import open_collector_task, set_status
from ledger.models import AppUser, AuditEvent, Customer, Invoice, Role
from ledger.operations import apply_payment
from ledger.requests import (
    AdjustmentApplication,
    CollectorTaskRequest,
    PaymentApplication,
    StatusChange,
)
from ledger.tasks import claim, move_breached
from workflows import keys

RECEIVED = datetime(2026, 2, 1, 15, 30, tzinfo=UTC)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def add_invoice(engine: sa.Engine, number: str, total: int = 10_000, currency: str = "USD") -> None:
    with session_scope(engine) as session:
        if session.get(Customer, "C1") is None:
            session.add(Customer(id="C1", name="Acme"))
            session.flush()
        session.add(
            Invoice(
                number=number,
                customer_id="C1",
                currency=currency,
                total_minor=total,
                balance_minor=total,
                issued_on=date(2026, 1, 10),
                due_on=date(2026, 2, 9),
                policy_name="standard",
                policy_version=3,
            )
        )


def pay(number: str, amount: int, request_id: str, actor: str, currency: str = "USD"):
    return PaymentApplication(
        invoice_number=number,
        amount_minor=amount,
        currency=currency,
        received_at=RECEIVED,
        idempotency_key=keys.payment(number, request_id),
        actor=actor,
    )


def do(engine: sa.Engine, change, *args, **kwargs):
    with session_scope(engine) as session:
        return change(session, *args, **kwargs)


def exported(engine: sa.Engine, **filters) -> list[AuditRow]:
    with Session(engine) as session:
        return audit_rows(session, **filters)


def summary(rows: list[AuditRow]) -> list[tuple]:
    return [(r.action, r.actor, r.invoice, r.before, r.after, r.request_id) for r in rows]


# --- rows ----------------------------------------------------------------------------------


def test_payments_adjustments_and_status_changes_show_before_and_after(
    engine: sa.Engine,
) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2", total=500)
    do(engine, apply_payment, pay("INV-1", 2_550, "req-pay-1", "ann@example.com"))
    do(
        engine,
        apply_adjustment,
        AdjustmentApplication(
            invoice_number="INV-1",
            kind="credit",
            amount_minor=-450,
            idempotency_key=keys.adjustment("INV-1", "req-adj-1"),
            actor="carol@example.com",
        ),
    )
    do(
        engine,
        set_status,
        StatusChange(invoice_number="INV-1", status="disputed", actor="ann@example.com"),
    )
    do(engine, apply_payment, pay("INV-2", 500, "req-pay-2", "portal"))
    do(
        engine,
        apply_adjustment,
        AdjustmentApplication(
            invoice_number="INV-1",
            kind="late_fee",
            amount_minor=1_000,
            idempotency_key=keys.late_fee("INV-1", 3),
        ),
    )
    rows = exported(engine, invoice_number="INV-1")
    assert summary(rows) == [
        (
            "payment_applied",
            "ann@example.com",
            "INV-1",
            "balance=100.00 USD",
            "balance=74.50 USD",
            "req-pay-1",
        ),
        (
            "adjustment_credit",
            "carol@example.com",
            "INV-1",
            "balance=74.50 USD",
            "balance=70.00 USD",
            "req-adj-1",
        ),
        ("status_changed", "ann@example.com", "INV-1", "open", "disputed", None),
        (
            "adjustment_late_fee",
            "system",
            "INV-1",
            "balance=70.00 USD",
            "balance=80.00 USD",
            "INV-1:late-fee:3",  # made by the system: its key is all there is
        ),
    ]
    assert rows[0].detail["amount_minor"] == 2_550 and rows[0].detail["method"] == "manual"
    assert all(row.at.tzinfo is not None for row in rows)
    assert [row.at for row in rows] == sorted(row.at for row in rows)

    everything = exported(engine)
    assert [row.action for row in everything] == [
        "payment_applied",
        "adjustment_credit",
        "status_changed",
        "payment_applied",
        "adjustment_late_fee",
    ]
    assert (everything[3].invoice, everything[3].request_id) == ("INV-2", "req-pay-2")
    assert (everything[3].before, everything[3].after) == ("balance=5.00 USD", "balance=0.00 USD")


def test_amounts_show_in_their_currency_minor_units(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-JPY", total=12_000, currency="JPY")
    do(engine, apply_payment, pay("INV-JPY", 2_000, "r1", "ann@example.com", currency="JPY"))
    (row,) = exported(engine)
    assert (row.before, row.after) == ("balance=12000 JPY", "balance=10000 JPY")


def test_task_assignment_and_breach_rows(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    with session_scope(engine) as session:
        ann = AppUser(email="ann@example.com", password_hash="unused", role=Role.COLLECTOR)
        session.add(ann)
        session.flush()
        ann_id = ann.id
        task = open_collector_task(
            session,
            CollectorTaskRequest(
                invoice_number="INV-1",
                queue="collections",
                priority="high",
                due_at=RECEIVED,
                idempotency_key=keys.manual_escalation("INV-1", "esc-7"),
            ),
        )
    do(engine, claim, task, ann_id, "ann@example.com", request_id="claim-1")
    do(engine, move_breached, task, "supervisors", RECEIVED + timedelta(days=1))
    assert summary(exported(engine, invoice_number="INV-1")) == [
        ("collector_task_opened", "system", "INV-1", None, None, "esc-7"),
        (
            "collector_task_claimed",
            "ann@example.com",
            "INV-1",
            None,
            "ann@example.com",
            "claim-1",
        ),
        ("collector_task_breached", "system", "INV-1", "collections", "supervisors", None),
    ]


@pytest.mark.parametrize(
    ("detail", "before", "after"),
    [
        # a reversal: balances paired by name, and status_before with status
        (
            {
                "balance_after_minor": 5_000,
                "balance_before_minor": 0,
                "currency": "USD",
                "status": "open",
                "status_before": "paid",
            },
            "balance=0.00 USD; status=paid",
            "balance=50.00 USD; status=open",
        ),
        # a profile update from an import
        (
            {"changes": {"name": ["Acme", "Acme Corp"], "segment": [None, "smb"]}},
            "name=Acme; segment=",
            "name=Acme Corp; segment=smb",
        ),
        ({"from": "created", "to": "succeeded"}, "created", "succeeded"),
        ({"before": None, "after": "ann@example.com", "from": "ignored"}, None, "ann@example.com"),
        ({"before": 3, "after": {"a": 1}}, "3", '{"a": 1}'),
        ({"balance_before_minor": 700}, None, None),  # half a pair tells nothing
        ({"amount_minor": 100, "currency": "USD"}, None, None),
    ],
)
def test_before_and_after_from_the_detail(detail: dict, before: str, after: str) -> None:
    assert before_and_after(detail) == (before, after)


@pytest.mark.parametrize(
    ("detail", "invoice", "request_id"),
    [
        ({"idempotency_key": keys.payment("INV-1", "r-1")}, "INV-1", "r-1"),
        ({"idempotency_key": keys.adjustment("INV-1", "r:2")}, "INV-1", "r:2"),
        ({"idempotency_key": keys.note("INV-1", "n-3")}, "INV-1", "n-3"),
        ({"idempotency_key": keys.manual_escalation("INV-1", "e-4")}, "INV-1", "e-4"),
        ({"idempotency_key": keys.payment("INV:9", "r-5")}, "INV:9", "r-5"),
        ({"idempotency_key": keys.closure("INV-1", "void")}, "INV-1", "INV-1:void"),
        ({"idempotency_key": keys.payment("INV-1", "r-6")}, "INV-2", "INV-1:payment:r-6"),
        ({"idempotency_key": keys.payment("INV-1", "r-7")}, None, "INV-1:payment:r-7"),
        ({"idempotency_key": "INV-1:payment:"}, "INV-1", "INV-1:payment:"),
        ({"request_id": "chosen", "idempotency_key": "k"}, "INV-1", "chosen"),
        ({"checkout_id": 4}, None, None),
    ],
)
def test_request_id_from_the_detail(detail: dict, invoice: str | None, request_id: str) -> None:
    assert request_id_of(detail, invoice) == request_id


def add_event(session: Session, at: datetime, action: str) -> None:
    session.add(AuditEvent(at=at, actor="system", action=action, detail="{}"))


def test_time_window_and_limit(engine: sa.Engine) -> None:
    t1 = datetime(2026, 3, 1, 9, tzinfo=UTC)
    t2, t3 = t1 + timedelta(hours=1), t1 + timedelta(hours=2)
    with session_scope(engine) as session:
        for at, action in ((t3, "third"), (t1, "first"), (t2, "second"), (t2, "second-b")):
            add_event(session, at, action)
            session.flush()  # ids in writing order
    cases = [
        ({}, ["first", "second", "second-b", "third"]),
        ({"since": t2}, ["second", "second-b", "third"]),
        ({"until": t2}, ["first"]),
        ({"since": t1, "until": t3}, ["first", "second", "second-b"]),
        ({"since": t3 + timedelta(microseconds=1)}, []),
        ({"limit": 2}, ["first", "second"]),
    ]
    for filters, expected in cases:
        assert [row.action for row in exported(engine, **filters)] == expected, filters
    rows = exported(engine)
    assert {row.invoice for row in rows} == {None}
    assert rows[0].at == t1 and rows[0].detail == {}


def test_bad_export_requests_are_refused(engine: sa.Engine) -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    cases = [
        ({"since": datetime(2026, 3, 1)}, LedgerError, "since must be timezone-aware"),
        ({"until": datetime(2026, 3, 1)}, LedgerError, "until must be timezone-aware"),
        ({"since": at, "until": at}, LedgerError, "is not before until"),
        ({"limit": 0}, LedgerError, "limit must be at least 1, got 0"),
        ({"invoice_number": "NOPE"}, UnknownInvoice, "invoice 'NOPE' does not exist"),
    ]
    for filters, error, message in cases:
        with pytest.raises(error, match=message):
            exported(engine, **filters)


# --- CSV -----------------------------------------------------------------------------------


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_csv_has_the_header_iso_times_and_the_detail_as_json(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    do(engine, apply_payment, pay("INV-1", 2_550, "req-pay-1", "ann@example.com"))
    rows = exported(engine)
    header, line = parse(audit_csv(rows))
    assert (
        tuple(header)
        == CSV_HEADER
        == (
            "at",
            "actor",
            "action",
            "invoice",
            "before",
            "after",
            "request_id",
            "detail",
        )
    )
    at = datetime.fromisoformat(line[0])
    assert at == rows[0].at and at.utcoffset() == timedelta(0) and line[0].endswith("+00:00")
    assert line[1:7] == [
        "ann@example.com",
        "payment_applied",
        "INV-1",
        "balance=100.00 USD",
        "balance=74.50 USD",
        "req-pay-1",
    ]
    assert json.loads(line[7]) == rows[0].detail
    assert parse(audit_csv([])) == [list(CSV_HEADER)]


def test_times_in_other_zones_are_written_in_utc() -> None:
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    row = AuditRow(
        at=at,
        actor="a",
        action="b",
        invoice=None,
        before=None,
        after=None,
        request_id=None,
        detail={},
    )
    (_, line) = parse(audit_csv([row]))
    assert line[0] == "2026-03-01T09:30:00+00:00"
    assert line[3:7] == ["", "", "", ""]


def test_no_csv_cell_can_start_a_formula(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    hostile = '=HYPERLINK("http://evil.example","Pay here")'
    do(engine, apply_payment, pay("INV-1", 100, "@SUM(1+1)", "+cmd|' /C calc'!A0"))
    do(
        engine,
        set_status,
        StatusChange(invoice_number="INV-1", status="disputed", reason=hostile, actor=hostile),
    )
    note_row = AuditRow(
        at=RECEIVED,
        actor="ann@example.com",
        action="note_logged",
        invoice="INV-1",
        before=None,
        after=hostile,  # a collector's note as the change it made
        request_id="-2+3",
        detail={"note": hostile},
    )
    _, payment, status, note = parse(audit_csv([*exported(engine), note_row]))
    assert (payment[1], payment[6]) == ("'+cmd|' /C calc'!A0", "'@SUM(1+1)")
    assert status[1] == "'" + hostile
    assert (note[5], note[6]) == ("'" + hostile, "'-2+3")
    assert json.loads(note[7]) == {"note": hostile}
    for line in (payment, status, note):
        for cell in line:
            assert not cell.lstrip(" ").startswith(FORMULA_START), cell


# --- the trail stays append-only -----------------------------------------------------------


def test_exporting_writes_nothing_and_the_trail_cannot_be_changed(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    do(engine, apply_payment, pay("INV-1", 2_550, "req-pay-1", "ann@example.com"))
    before = exported(engine)

    with session_scope(engine) as session:
        assert audit_rows(session) == before
        assert not (session.new or session.dirty or session.deleted)

    def change_the_event(session: Session) -> None:
        session.exec(select(AuditEvent)).one().actor = "someone else"

    def delete_the_event(session: Session) -> None:
        session.delete(session.exec(select(AuditEvent)).one())

    for attempt in (change_the_event, delete_the_event):
        with pytest.raises(ValueError, match="append-only"), session_scope(engine) as session:
            audit_rows(session)
            attempt(session)
            session.flush()
    for statement in ("UPDATE auditevent SET actor = 'x'", "DELETE FROM auditevent"):
        with (
            pytest.raises(sa.exc.DatabaseError, match="append-only"),
            session_scope(engine) as session,
        ):
            audit_rows(session)
            session.execute(sa.text(statement))
    assert exported(engine) == before
