"""Payment plans in the ledger: recorded once per key, replaced, ended once, refused when they
do not add up; where the payer stands after real payments; the checkout's short-pay rule on a
plan. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from activities.ledger import LedgerActivities
from ledger.adjustments import apply_adjustment
from ledger.books import IdempotencyConflict, LedgerError, UnknownInvoice
from ledger.checkout_drafts import CheckoutDraft, CheckoutItemError, CheckoutLine
from ledger.checkouts import open_checkout
from ledger.db import session_scope
from ledger.models import (
    AuditEvent,
    Checkout,
    CheckoutStatus,
    Customer,
    Invoice,
    PaymentMethodKind,
    ShortPayReason,
)
from ledger.operations import apply_payment
from ledger.plan_views import InstallmentStatus, active_plans
from ledger.plans import PaymentPlan, end_plan, record_plan
from ledger.requests import (
    AdjustmentApplication,
    Installment,
    PaymentApplication,
    PaymentPlanEnd,
    PaymentPlanRecord,
    PlanOutcome,
)

FIRST, SECOND, THIRD = date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1)
RECEIVED = datetime(2026, 2, 1, 15, 30, tzinfo=UTC)


def add_invoice(engine: sa.Engine, number: str, total: int = 100_000) -> int:
    with session_scope(engine) as session:
        if session.get(Customer, "C1") is None:
            session.add(Customer(id="C1", name="Acme", email="ap@acme.example"))
            session.flush()
        invoice = Invoice(
            number=number,
            customer_id="C1",
            currency="USD",
            total_minor=total,
            balance_minor=total,
            issued_on=date(2026, 1, 10),
            due_on=date(2026, 2, 9),
            policy_name="standard",
            policy_version=3,
        )
        session.add(invoice)
        session.flush()
        return int(invoice.id)


def plan(
    key: str = "plan-1",
    number: str = "INV-1",
    amounts: tuple[int, ...] = (30_000, 30_000, 40_000),
    dates: tuple[date, ...] = (FIRST, SECOND, THIRD),
) -> PaymentPlanRecord:
    return PaymentPlanRecord(
        invoice_number=number,
        installments=[
            Installment(due_on=due_on, amount_minor=amount)
            for due_on, amount in zip(dates, amounts, strict=True)
        ],
        note="agreed on the phone",
        actor="collector@example.com",
        idempotency_key=key,
    )


def pay(engine: sa.Engine, amount: int, key: str, number: str = "INV-1") -> None:
    with session_scope(engine) as session:
        apply_payment(
            session,
            PaymentApplication(
                invoice_number=number,
                amount_minor=amount,
                currency="USD",
                received_at=RECEIVED,
                idempotency_key=key,
            ),
        )


def audit(session: Session, action: str) -> list[dict]:
    events = session.exec(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
    ).all()
    return [json.loads(event.detail) for event in events]


def plans_by_key(session: Session) -> dict[str, PaymentPlan]:
    return {p.idempotency_key: p for p in session.exec(select(PaymentPlan))}


def test_a_plan_is_recorded_once_per_key(engine: sa.Engine) -> None:
    invoice_id = add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    with session_scope(engine) as session:
        plan_id = record_plan(session, plan())
    with session_scope(engine) as session:
        assert record_plan(session, plan()) == plan_id
    with session_scope(engine) as session:
        stored = session.get(PaymentPlan, plan_id)
        assert (stored.invoice_id, stored.status, stored.balance_at_start_minor) == (
            invoice_id,
            "active",
            100_000,
        )
        assert stored.installments == [
            {"due_on": "2026-03-01", "amount_minor": 30_000},
            {"due_on": "2026-04-01", "amount_minor": 30_000},
            {"due_on": "2026-05-01", "amount_minor": 40_000},
        ]
        assert stored.created_at.tzinfo is not None and stored.ended_at is None
        assert (stored.note, stored.actor) == ("agreed on the phone", "collector@example.com")
        [recorded] = audit(session, "payment_plan_recorded")
        assert recorded["idempotency_key"] == "plan-1"
        assert recorded["installments"] == stored.installments
        assert (recorded["plan_id"], recorded["balance_minor"]) == (plan_id, 100_000)

    with session_scope(engine) as session, pytest.raises(IdempotencyConflict, match="INV-2"):
        record_plan(session, plan(number="INV-2", amounts=(50_000, 25_000, 25_000)))
    with session_scope(engine) as session, pytest.raises(IdempotencyConflict, match="other"):
        record_plan(session, plan(amounts=(40_000, 30_000, 30_000)))
    with session_scope(engine) as session:
        assert len(session.exec(select(PaymentPlan)).all()) == 1
        assert len(audit(session, "payment_plan_recorded")) == 1


def test_a_new_plan_replaces_the_active_one(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    with session_scope(engine) as session:
        record_plan(session, plan("plan-1"))
        record_plan(session, plan("other", number="INV-2"))
    pay(engine, 10_000, "pay-1")
    with session_scope(engine) as session:
        record_plan(session, plan("plan-2", amounts=(45_000, 45_000), dates=(SECOND, THIRD)))
    with session_scope(engine) as session:
        stored = plans_by_key(session)
        assert {key: p.status for key, p in stored.items()} == {
            "plan-1": "replaced",
            "plan-2": "active",
            "other": "active",
        }
        assert stored["plan-1"].ended_at is not None
        assert stored["plan-2"].balance_at_start_minor == 90_000
        [ended] = audit(session, "payment_plan_ended")
        assert ended["idempotency_key"] == "plan-1"
        assert (ended["outcome"], ended["replaced_by"]) == ("replaced", "plan-2")
        assert audit(session, "payment_plan_recorded")[-1]["replaced"] == ["plan-1"]


def test_a_plan_ends_once(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    with session_scope(engine) as session:
        record_plan(session, plan())
    ending = PaymentPlanEnd(invoice_number="INV-1", plan_key="plan-1", outcome=PlanOutcome.BROKEN)
    with session_scope(engine) as session:
        assert end_plan(session, ending) is True
    with session_scope(engine) as session:
        again = ending.model_copy(update={"outcome": PlanOutcome.KEPT})
        assert end_plan(session, again) is False
    with session_scope(engine) as session:
        stored = plans_by_key(session)["plan-1"]
        assert stored.status == "broken" and stored.ended_at is not None
        [ended] = audit(session, "payment_plan_ended")
        assert (ended["idempotency_key"], ended["outcome"]) == ("plan-1", "broken")
        assert active_plans(session, [stored.invoice_id], FIRST) == {}

    refused = [
        (ending.model_copy(update={"plan_key": "nope"}), "INV-1 has no payment plan with key"),
        (ending.model_copy(update={"invoice_number": "INV-2"}), "INV-2 has no payment plan"),
        (ending.model_copy(update={"outcome": PlanOutcome.ACTIVE}), "not active"),
    ]
    for request, words in refused:
        with session_scope(engine) as session, pytest.raises(LedgerError, match=words):
            end_plan(session, request)
    with session_scope(engine) as session, pytest.raises(UnknownInvoice):
        end_plan(session, ending.model_copy(update={"invoice_number": "NOPE"}))
    with session_scope(engine) as session:
        assert len(audit(session, "payment_plan_ended")) == 1


def test_plans_that_do_not_fit_the_invoice_are_refused(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "PAID", total=5_000)
    pay(engine, 5_000, "pay-all", number="PAID")
    empty = PaymentPlanRecord.model_construct(**{**plan().model_dump(), "installments": []})
    negative = plan(amounts=(130_000, 30_000, 40_000))
    negative.installments[0] = Installment.model_construct(due_on=FIRST, amount_minor=-60_000)
    cases = [
        (plan(dates=(FIRST, FIRST, THIRD)), "INV-1.*installments\\[1\\].due_on 2026-03-01 is not"),
        (plan(dates=(SECOND, FIRST, THIRD)), "installments\\[1\\].due_on 2026-03-01 is not after"),
        (plan(amounts=(30_000, 30_000, 39_999)), "add up to 999.99 USD; the balance is 1000.00"),
        (plan(amounts=(30_000, 30_000, 40_001)), "add up to 1000.01 USD"),
        (empty, "invoice INV-1: it has no installments"),
        (negative, "installments\\[0\\].amount_minor must be more than 0"),
        (plan(number="PAID", amounts=(5_000,), dates=(FIRST,)), "PAID is paid"),
    ]
    for request, words in cases:
        with session_scope(engine) as session, pytest.raises(LedgerError, match=words):
            record_plan(session, request)
    with session_scope(engine) as session, pytest.raises(UnknownInvoice):
        record_plan(session, plan(number="NOPE"))
    with session_scope(engine) as session:
        assert session.exec(select(PaymentPlan)).all() == []
        assert audit(session, "payment_plan_recorded") == []


def test_where_the_payer_stands_after_real_payments(engine: sa.Engine) -> None:
    invoice_id = add_invoice(engine, "INV-1")
    with session_scope(engine) as session:
        record_plan(session, plan())

    def view(today: date = FIRST - timedelta(days=10)):
        with session_scope(engine) as session:
            return active_plans(session, [invoice_id], today)[invoice_id]

    def statuses(v) -> list[tuple[str, int]]:
        return [(str(i.status), i.paid_minor) for i in v.installments]

    fresh = view()
    assert (fresh.paid_minor, fresh.due_now_minor, fresh.next_due_on) == (0, 30_000, FIRST)
    assert statuses(fresh) == [("due", 0), ("upcoming", 0), ("upcoming", 0)]
    assert (fresh.invoice_number, fresh.currency, fresh.plan_key) == ("INV-1", "USD", "plan-1")
    assert not fresh.behind

    pay(engine, 20_000, "pay-1")
    part = view()
    assert (part.paid_minor, part.due_now_minor, part.next_due_on) == (20_000, 10_000, FIRST)
    assert statuses(part) == [("part_paid", 20_000), ("upcoming", 0), ("upcoming", 0)]
    # The day passes with the installment part paid: overdue, and the payer is behind.
    late = view(FIRST + timedelta(days=1))
    assert statuses(late)[0] == ("overdue", 20_000) and late.behind
    assert late.due_now_minor == 10_000

    pay(engine, 15_000, "pay-2")
    ahead = view(FIRST)
    assert (ahead.paid_minor, ahead.due_now_minor, ahead.next_due_on) == (35_000, 25_000, SECOND)
    assert statuses(ahead) == [("paid", 30_000), ("part_paid", 5_000), ("upcoming", 0)]
    behind = view(THIRD)
    assert statuses(behind) == [("paid", 30_000), ("overdue", 5_000), ("due", 0)]

    # A credit note lowers the balance like a payment; a late fee raises it again.
    with session_scope(engine) as session:
        credit = AdjustmentApplication(
            invoice_number="INV-1", kind="credit", amount_minor=-25_000, idempotency_key="cn-1"
        )
        apply_adjustment(session, credit)
    credited = view(FIRST)
    assert (credited.paid_minor, credited.due_now_minor, credited.next_due_on) == (
        60_000,
        40_000,
        THIRD,
    )
    assert credited.balance_minor == 40_000
    with session_scope(engine) as session:
        fee = AdjustmentApplication(
            invoice_number="INV-1", kind="late_fee", amount_minor=70_000, idempotency_key="fee-1"
        )
        apply_adjustment(session, fee)
    fee_view = view(FIRST)
    assert (fee_view.balance_minor, fee_view.paid_minor, fee_view.due_now_minor) == (
        110_000,
        0,
        30_000,
    )
    assert [i.status for i in fee_view.installments][0] == InstallmentStatus.DUE

    # Paid in full: nothing left to show.
    pay(engine, 110_000, "pay-3")
    with session_scope(engine) as session:
        assert active_plans(session, [invoice_id], FIRST) == {}
        assert active_plans(session, [], FIRST) == {}


def test_plans_of_many_invoices_are_read_in_one_query(engine: sa.Engine) -> None:
    ids = [add_invoice(engine, f"INV-{n}") for n in range(5)]
    with session_scope(engine) as session:
        for n in range(4):
            record_plan(session, plan(f"plan-{n}", number=f"INV-{n}"))
    pay(engine, 30_000, "pay-0", number="INV-0")
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    with session_scope(engine) as session:
        session.connection()  # the transaction's BEGIN is not the query counted
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            views = active_plans(session, ids, FIRST)
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1
    assert sorted(views) == ids[:4]
    assert (views[ids[0]].due_now_minor, views[ids[0]].next_due_on) == (30_000, SECOND)
    assert views[ids[1]].due_now_minor == 30_000


def _draft(request_id: str, amount: int, reason: ShortPayReason | None = None) -> CheckoutDraft:
    return CheckoutDraft(
        customer_id="C1",
        request_id=request_id,
        method=PaymentMethodKind.US_BANK_ACCOUNT,
        lines=[CheckoutLine(invoice_number="INV-1", amount_minor=amount, reason_code=reason)],
    )


def test_paying_what_the_plan_asks_for_needs_no_reason(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    with session_scope(engine) as session:
        record_plan(session, plan())
        with pytest.raises(CheckoutItemError, match="its payment plan asks for 300.00 USD now"):
            open_checkout(session, _draft("short", 29_999))
        # Without a plan the same amount is a short payment.
        other = _draft("no-plan", 30_000)
        other.lines[0].invoice_number = "INV-2"
        with pytest.raises(CheckoutItemError, match="needs a reason for paying less") as refused:
            open_checkout(session, other)
        assert "payment plan" not in str(refused.value)
        installment = open_checkout(session, _draft("installment", 30_000))
        with_reason = open_checkout(session, _draft("less", 10_000, ShortPayReason.DAMAGED_GOODS))
    assert installment.items_minor == 30_000 and with_reason.items_minor == 10_000


def test_a_bank_debit_on_its_way_counts_towards_the_installment(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    with session_scope(engine) as session:
        record_plan(session, plan())
        first = open_checkout(session, _draft("first", 10_000, ShortPayReason.PRICING_DISPUTE))
        session.get(Checkout, first.id).status = CheckoutStatus.PROCESSING
        session.flush()
        with pytest.raises(CheckoutItemError, match="asks for 200.00 USD now"):
            open_checkout(session, _draft("too-little", 19_999))
        assert open_checkout(session, _draft("rest", 20_000)).items_minor == 20_000


def test_the_activities_keep_and_end_plans(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    ledger = LedgerActivities(engine)
    plan_id = ledger.record_payment_plan(plan())
    assert ledger.record_payment_plan(plan()) == plan_id
    ending = PaymentPlanEnd(invoice_number="INV-1", plan_key="plan-1", outcome=PlanOutcome.KEPT)
    assert ledger.end_payment_plan(ending) is True
    assert ledger.end_payment_plan(ending) is False
    with pytest.raises(ApplicationError, match="add up to") as refused:
        ledger.record_payment_plan(plan("plan-2", amounts=(1, 2, 3)))
    assert refused.value.non_retryable and refused.value.type == "LedgerRejected"
