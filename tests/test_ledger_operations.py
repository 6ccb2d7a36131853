"""Ledger operations: payments, adjustments, status, collector tasks, audit; both databases."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from activities.models import (
    AdjustmentApplication,
    CollectorTaskRequest,
    PaymentApplication,
    StatusChange,
)
from ledger import books
from ledger.adjustments import apply_adjustment
from ledger.books import (
    CurrencyMismatch,
    IdempotencyConflict,
    InvalidAdjustment,
    InvalidAmount,
    InvalidStatusChange,
    InvoiceClosed,
    UnknownInvoice,
    get_balance,
    record_audit,
)
from ledger.db import session_scope
from ledger.lifecycle import open_collector_task, set_status
from ledger.models import (
    Adjustment,
    AuditEvent,
    CollectorTask,
    Customer,
    CustomerCredit,
    Invoice,
    Payment,
    PaymentAllocation,
)
from ledger.operations import apply_payment

RECEIVED = datetime(2026, 2, 1, 15, 30, tzinfo=UTC)


def add_invoice(
    engine: sa.Engine, number: str = "INV-1", total: int = 10_000, currency: str = "USD"
) -> None:
    with session_scope(engine) as session:
        if session.get(Customer, "C1") is None:
            session.add(Customer(id="C1", name="Acme", email="ap@acme.example"))
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


def payment(amount: int, key: str = "pay-1", **changes: object) -> PaymentApplication:
    fields: dict[str, object] = {
        "invoice_number": "INV-1",
        "amount_minor": amount,
        "currency": "USD",
        "received_at": RECEIVED,
        "idempotency_key": key,
        "actor": "tester",
    }
    return PaymentApplication(**(fields | changes))


def adjustment(kind: str, amount: int = 0, key: str = "adj-1") -> AdjustmentApplication:
    return AdjustmentApplication(
        invoice_number="INV-1", kind=kind, amount_minor=amount, idempotency_key=key
    )


def count(engine: sa.Engine, model: type) -> int:
    with Session(engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def audit_actions(engine: sa.Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent.action).order_by(AuditEvent.id)))


@pytest.fixture
def invoice(engine: sa.Engine) -> str:
    add_invoice(engine)
    return "INV-1"


# --- payments ------------------------------------------------------------------------------


def test_partial_payment_lowers_the_balance(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        balance = apply_payment(session, payment(2_550))
    assert (balance.balance_minor, balance.status, balance.customer_credit_minor) == (
        7_450,
        "open",
        0,
    )
    with Session(engine) as session:
        allocation = session.exec(select(PaymentAllocation)).one()
        assert allocation.amount_minor == 2_550
        event = session.exec(select(AuditEvent)).one()
    assert (event.actor, event.action) == ("tester", "payment_applied")
    detail = json.loads(event.detail)
    assert detail["balance_before_minor"] == 10_000
    assert detail["balance_after_minor"] == 7_450


def test_partial_payments_add_up_to_paid(engine: sa.Engine, invoice: str) -> None:
    for key, amount in [("a", 3_333), ("b", 3_333), ("c", 3_334)]:
        with session_scope(engine) as session:
            balance = apply_payment(session, payment(amount, key))
    assert (balance.balance_minor, balance.status) == (0, "paid")
    assert count(engine, Payment) == 3


def test_full_payment_marks_the_invoice_paid(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        balance = apply_payment(session, payment(10_000))
    assert (balance.balance_minor, balance.status) == (0, "paid")
    assert count(engine, CustomerCredit) == 0


def test_overpayment_becomes_customer_credit(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        balance = apply_payment(session, payment(12_500))
    assert (balance.balance_minor, balance.status, balance.customer_credit_minor) == (
        0,
        "paid",
        2_500,
    )
    with Session(engine) as session:
        paid = session.exec(select(Payment)).one()
        allocation = session.exec(select(PaymentAllocation)).one()
        credit = session.exec(select(CustomerCredit)).one()
    assert paid.amount_minor == 12_500
    assert allocation.amount_minor == 10_000
    assert (credit.amount_minor, credit.source, credit.payment_id) == (
        2_500,
        "overpayment",
        paid.id,
    )


def test_payment_on_a_paid_invoice_is_all_credit(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(10_000, "first"))
    with session_scope(engine) as session:
        balance = apply_payment(session, payment(700, "second"))
    assert (balance.balance_minor, balance.status, balance.customer_credit_minor) == (
        0,
        "paid",
        700,
    )
    assert count(engine, PaymentAllocation) == 1


def test_repeated_payment_key_applies_once(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        first = apply_payment(session, payment(4_000))
    with session_scope(engine) as session:
        again = apply_payment(session, payment(4_000))
    assert again == first.model_copy(update={"repeated": True})
    assert first.balance_minor == 6_000
    assert count(engine, Payment) == 1
    assert count(engine, PaymentAllocation) == 1
    assert audit_actions(engine) == ["payment_applied"]


def test_repeated_key_after_the_invoice_was_paid_still_answers(
    engine: sa.Engine, invoice: str
) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(10_000))
        set_status(session, StatusChange(invoice_number=invoice, status="closed"))
    with session_scope(engine) as session:
        balance = apply_payment(session, payment(10_000))
    assert (balance.balance_minor, balance.status) == (0, "closed")
    assert count(engine, Payment) == 1


def test_reusing_a_key_for_a_different_payment_is_refused(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(4_000))
    with pytest.raises(IdempotencyConflict, match="pay-1"), session_scope(engine) as session:
        apply_payment(session, payment(5_000))


def test_a_lost_race_on_the_key_rolls_back_only_its_own_work(
    engine: sa.Engine, invoice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(4_000))

    # Make the second attempt miss the first one's row, as a concurrent attempt would.
    real_by_key = books._by_key
    lookups: list[object] = []

    def first_lookup_misses(*args: object) -> object:
        lookups.append(args)
        return None if len(lookups) == 1 else real_by_key(*args)

    monkeypatch.setattr(books, "_by_key", first_lookup_misses)
    with session_scope(engine) as session:
        record_audit(session, "tester", "before", None, {})
        balance = apply_payment(session, payment(4_000))
        record_audit(session, "tester", "after", None, {})
    assert len(lookups) == 2  # missed, hit the unique key, then found the first payment
    assert balance.balance_minor == 6_000
    assert count(engine, Payment) == 1
    # The surrounding transaction survived the rolled-back savepoint and committed.
    assert audit_actions(engine) == ["payment_applied", "before", "after"]


def test_concurrent_attempts_with_one_key_apply_once(engine: sa.Engine, invoice: str) -> None:
    results: list[object] = []

    def second_attempt() -> None:
        try:
            with session_scope(engine) as session:
                results.append(apply_payment(session, payment(4_000)))
        except Exception as error:  # reported below, in the test's thread
            results.append(error)

    first = Session(engine)
    try:
        first_balance = apply_payment(first, payment(4_000))
        thread = threading.Thread(target=second_attempt)
        thread.start()
        thread.join(timeout=0.5)  # the second attempt now waits on the first's lock
        first.commit()
        thread.join(timeout=30)
    finally:
        first.close()
    assert results == [first_balance.model_copy(update={"repeated": True})]
    assert count(engine, Payment) == 1


def test_currency_mismatch_is_refused_and_writes_nothing(engine: sa.Engine, invoice: str) -> None:
    with (
        pytest.raises(CurrencyMismatch, match="INV-1 is in USD, payment is in EUR"),
        session_scope(engine) as session,
    ):
        apply_payment(session, payment(1_000, currency="EUR"))
    assert count(engine, Payment) == 0
    assert count(engine, AuditEvent) == 0


@pytest.mark.parametrize(
    ("request_changes", "error", "message"),
    [
        ({"invoice_number": "NOPE"}, UnknownInvoice, "invoice 'NOPE' does not exist"),
        ({"amount_minor": 0}, InvalidAmount, "invoice INV-1: amount must be greater than 0"),
        ({"amount_minor": -5}, InvalidAmount, "invoice INV-1: amount must be greater than 0"),
    ],
)
def test_bad_payments_are_refused(
    engine: sa.Engine,
    invoice: str,
    request_changes: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message), session_scope(engine) as session:
        apply_payment(session, payment(1_000).model_copy(update=request_changes))
    assert count(engine, Payment) == 0


def test_ledger_errors_are_value_errors() -> None:
    assert issubclass(books.LedgerError, ValueError)


def test_naive_received_at_is_refused(engine: sa.Engine, invoice: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"), session_scope(engine) as session:
        apply_payment(session, payment(1_000, received_at=datetime(2026, 2, 1, 12, 0)))


# --- adjustments ---------------------------------------------------------------------------


def test_credit_note_lowers_the_balance(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        balance = apply_adjustment(session, adjustment("credit", -3_000))
    assert (balance.balance_minor, balance.status, balance.customer_credit_minor) == (
        7_000,
        "open",
        0,
    )
    assert audit_actions(engine) == ["adjustment_credit"]


def test_credit_beyond_the_balance_becomes_customer_credit(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(8_000))
        balance = apply_adjustment(session, adjustment("credit", -5_000))
    assert (balance.balance_minor, balance.status, balance.customer_credit_minor) == (
        0,
        "paid",
        3_000,
    )
    with Session(engine) as session:
        note = session.exec(select(Adjustment)).one()
        credit = session.exec(select(CustomerCredit)).one()
    assert note.amount_minor == -2_000
    assert (credit.amount_minor, credit.source) == (3_000, "credit_note")


def test_late_fee_raises_the_balance(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        balance = apply_adjustment(session, adjustment("late_fee", 150))
    assert balance.balance_minor == 10_150
    assert balance.total_minor == 10_000


def test_signed_adjustments(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        apply_adjustment(session, adjustment("adjustment", -125, "down"))
        balance = apply_adjustment(session, adjustment("adjustment", 25, "up"))
    assert balance.balance_minor == 9_900


def test_repeated_adjustment_key_applies_once(engine: sa.Engine, invoice: str) -> None:
    for _ in range(2):
        with session_scope(engine) as session:
            balance = apply_adjustment(session, adjustment("late_fee", 150))
    assert balance.balance_minor == 10_150
    assert count(engine, Adjustment) == 1


@pytest.mark.parametrize(
    ("kind", "amount", "error", "message"),
    [
        ("credit", 100, InvalidAmount, "a credit must be negative"),
        ("late_fee", -100, InvalidAmount, "a late fee must be positive"),
        ("adjustment", -10_001, InvalidAmount, "below 0; use a credit"),
        ("adjustment", 0, InvalidAmount, "changes nothing"),
        ("refund", -100, InvalidAdjustment, "unknown adjustment kind 'refund'"),
    ],
)
def test_bad_adjustments_are_refused(
    engine: sa.Engine,
    invoice: str,
    kind: str,
    amount: int,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message), session_scope(engine) as session:
        apply_adjustment(session, adjustment(kind, amount))
    assert count(engine, Adjustment) == 0
    with Session(engine) as session:
        assert get_balance(session, invoice).balance_minor == 10_000


def test_no_late_fee_on_a_paid_invoice(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(10_000))
    with pytest.raises(InvalidAdjustment, match="INV-1 is paid"), session_scope(engine) as session:
        apply_adjustment(session, adjustment("late_fee", 150))


def test_write_off_clears_the_balance_and_closes_money(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(2_500))
        balance = apply_adjustment(session, adjustment("write_off", 0))
    assert (balance.balance_minor, balance.status) == (0, "written_off")
    with Session(engine) as session:
        assert session.exec(select(Adjustment)).one().amount_minor == -7_500
    with (
        pytest.raises(InvoiceClosed, match="INV-1 is written_off"),
        session_scope(engine) as session,
    ):
        apply_payment(session, payment(100, "late-pay"))
    with pytest.raises(InvoiceClosed), session_scope(engine) as session:
        apply_adjustment(session, adjustment("late_fee", 100, "fee"))


def test_void_an_unpaid_invoice(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        balance = apply_adjustment(session, adjustment("void"))
    assert (balance.balance_minor, balance.status) == (0, "void")


def test_an_invoice_with_payments_cannot_be_voided(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(100))
    with pytest.raises(InvalidAdjustment, match="issue a credit"), session_scope(engine) as s:
        apply_adjustment(s, adjustment("void"))


# --- status and tasks ----------------------------------------------------------------------


def test_dispute_and_resume(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        disputed = set_status(
            session, StatusChange(invoice_number=invoice, status="disputed", reason="damaged")
        )
        again = set_status(session, StatusChange(invoice_number=invoice, status="disputed"))
        resumed = set_status(session, StatusChange(invoice_number=invoice, status="open"))
    assert (disputed.status, again.status, resumed.status) == ("disputed", "disputed", "open")
    # Setting the status it already has records nothing.
    assert audit_actions(engine) == ["status_changed", "status_changed"]


def test_a_disputed_invoice_still_takes_payments(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        set_status(session, StatusChange(invoice_number=invoice, status="disputed"))
        balance = apply_payment(session, payment(10_000))
    assert balance.status == "paid"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("closed", "INV-1 is open: it cannot become closed"),
        ("paid", "cannot be marked paid"),
        ("void", "apply an adjustment of kind 'void'"),
        ("written_off", "apply an adjustment of kind 'write_off'"),
        ("lost", "unknown status 'lost'"),
    ],
)
def test_refused_status_changes(engine: sa.Engine, invoice: str, status: str, message: str) -> None:
    with pytest.raises(InvalidStatusChange, match=message), session_scope(engine) as session:
        set_status(session, StatusChange(invoice_number=invoice, status=status))


def test_paid_invoice_can_be_closed(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(10_000))
        balance = set_status(session, StatusChange(invoice_number=invoice, status="closed"))
    assert balance.status == "closed"


def test_collector_task_opens_once(engine: sa.Engine, invoice: str) -> None:
    request = CollectorTaskRequest(
        invoice_number=invoice,
        queue="collections",
        priority="high",
        due_at=datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=-5))),
        idempotency_key="escalate-INV-1",
    )
    with session_scope(engine) as session:
        first = open_collector_task(session, request)
    with session_scope(engine) as session:
        second = open_collector_task(session, request)
    assert first == second
    with Session(engine) as session:
        task = session.exec(select(CollectorTask)).one()
    assert task.due_at == datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
    assert audit_actions(engine) == ["collector_task_opened"]


# --- balances, time, constraints, audit ----------------------------------------------------


def test_balance_counts_credit_in_the_invoice_currency_only(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-USD", 1_000, "USD")
    add_invoice(engine, "INV-EUR", 1_000, "EUR")
    with session_scope(engine) as session:
        apply_payment(session, payment(1_500, invoice_number="INV-USD"))
    with Session(engine) as session:
        assert get_balance(session, "INV-USD").customer_credit_minor == 500
        assert get_balance(session, "INV-EUR").customer_credit_minor == 0
    with pytest.raises(UnknownInvoice), Session(engine) as session:
        get_balance(session, "INV-NONE")


def test_datetimes_come_back_aware_in_utc(engine: sa.Engine, invoice: str) -> None:
    paris_afternoon = datetime(2026, 2, 1, 17, 30, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as session:
        apply_payment(session, payment(100, received_at=paris_afternoon))
    with Session(engine) as session:
        stored = session.exec(select(Payment)).one()
        created = session.exec(select(Invoice)).one().created_at
    assert stored.received_at.utcoffset() == timedelta(0)
    assert stored.received_at == paris_afternoon
    assert stored.received_at.hour == 15
    assert created.tzinfo is not None and created.utcoffset() == timedelta(0)


def test_invoice_numbers_are_unique(engine: sa.Engine, invoice: str) -> None:
    with pytest.raises(IntegrityError):
        add_invoice(engine, invoice)
    assert count(engine, Invoice) == 1


def test_balance_can_never_go_negative_in_the_database(engine: sa.Engine, invoice: str) -> None:
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.exec(select(Invoice)).one().balance_minor = -1


def test_audit_events_are_append_only(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        apply_payment(session, payment(100))
    with pytest.raises(ValueError, match="append-only"), session_scope(engine) as session:
        session.exec(select(AuditEvent)).one().actor = "someone else"
    for statement in ("UPDATE auditevent SET actor = 'x'", "DELETE FROM auditevent"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(statement)
    assert audit_actions(engine) == ["payment_applied"]


def test_record_audit_stores_the_detail_as_json(engine: sa.Engine, invoice: str) -> None:
    with session_scope(engine) as session:
        event = record_audit(session, "ops@example.com", "note", None, {"on": date(2026, 1, 2)})
    with Session(engine) as session:
        stored = session.get(AuditEvent, event.id)
    assert stored is not None
    assert json.loads(stored.detail) == {"on": "2026-01-02"}
    assert stored.at.tzinfo is not None


# --- the books balance ---------------------------------------------------------------------

_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("payment"), st.integers(1, 4_000)),
        st.tuples(st.just("credit"), st.integers(-4_000, -1)),
        st.tuples(st.just("late_fee"), st.integers(1, 1_000)),
    ),
    min_size=1,
    max_size=8,
)


def _sum(session: Session, column: sa.ColumnElement[int], *where: sa.ColumnElement[bool]) -> int:
    return session.scalar(sa.select(sa.func.coalesce(sa.func.sum(column), 0)).where(*where)) or 0


@settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=_STEPS)
def test_every_minor_unit_is_accounted_for(engine: sa.Engine, steps: list[tuple[str, int]]) -> None:
    number = f"INV-{uuid.uuid4().hex[:12]}"
    add_invoice(engine, number, 3_000)  # small, so over-payments and over-credits are common
    for i, (kind, amount) in enumerate(steps):
        key = f"{number}-{i}"
        with session_scope(engine) as session:
            if kind == "payment":
                apply_payment(session, payment(amount, key, invoice_number=number))
            elif kind == "credit" or get_balance(session, number).status != "paid":
                request = AdjustmentApplication(
                    invoice_number=number, kind=kind, amount_minor=amount, idempotency_key=key
                )
                apply_adjustment(session, request)

    with Session(engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
        mine = f"{number}-"
        adjusted = _sum(session, Adjustment.amount_minor, Adjustment.invoice_id == invoice.id)
        credit_notes = _sum(
            session,
            Adjustment.amount_minor,
            Adjustment.invoice_id == invoice.id,
            Adjustment.kind == "credit",
        )
        allocated = _sum(
            session, PaymentAllocation.amount_minor, PaymentAllocation.invoice_id == invoice.id
        )
        received = _sum(session, Payment.amount_minor, Payment.idempotency_key.startswith(mine))
        held = _sum(
            session, CustomerCredit.amount_minor, CustomerCredit.idempotency_key.startswith(mine)
        )
    credits_given = -sum(amount for kind, amount in steps if kind == "credit")
    assert invoice.balance_minor >= 0
    assert invoice.balance_minor == invoice.total_minor + adjusted - allocated
    # Every unit received or credited is on the invoice or held for the customer.
    assert received + credits_given == allocated - credit_notes + held
    assert (invoice.status == "paid") == (invoice.balance_minor == 0)
