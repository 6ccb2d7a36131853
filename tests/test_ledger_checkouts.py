"""Portal checkouts in the ledger, and payments out of customer credit; both databases."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import Session, select

from ledger import checkout_events, checkouts
from ledger.accounts import UnknownCustomer
from ledger.books import (
    IdempotencyConflict,
    InvalidAmount,
    LedgerError,
    get_balance,
    record_audit,
)
from ledger.checkout_drafts import CheckoutDraft, CheckoutItemError, CheckoutLine
from ledger.checkout_events import (
    abandon_stale_checkouts,
    attach_payment_intent,
    note_dispute,
    note_refund,
    record_stripe_event,
    set_checkout_status,
    stripe_event_seen,
)
from ledger.checkouts import (
    UnknownCheckout,
    available_credit,
    checkout_by_intent,
    checkout_items,
    get_checkout,
    open_checkout,
    set_stripe_customer_id,
)
from ledger.db import session_scope
from ledger.models import (
    Adjustment,
    AuditEvent,
    Checkout,
    CheckoutItem,
    CheckoutStatus,
    CollectorTask,
    Customer,
    CustomerCredit,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    StripeEvent,
)
from ledger.operations import apply_payment
from ledger.requests import PaymentApplication
from ledger.reversals import reverse_for_checkout
from ledger.unapplied import credit_unapplied_payment

RECEIVED = datetime(2026, 2, 1, 15, 30, tzinfo=UTC)

# number: (customer, currency, balance, status)
INVOICES: dict[str, tuple[str, str, int, InvoiceStatus]] = {
    "A-1": ("C1", "USD", 10_000, InvoiceStatus.OPEN),
    "A-2": ("C1", "USD", 5_000, InvoiceStatus.DISPUTED),
    "A-PAID": ("C1", "USD", 0, InvoiceStatus.PAID),
    "A-VOID": ("C1", "USD", 700, InvoiceStatus.VOID),  # as a stale row might hold
    "E-1": ("C1", "EUR", 3_000, InvoiceStatus.OPEN),
    "J-1": ("C1", "JPY", 12_345, InvoiceStatus.OPEN),
    "B-1": ("C2", "USD", 4_000, InvoiceStatus.OPEN),
}


@pytest.fixture
def books(engine: sa.Engine) -> sa.Engine:
    with session_scope(engine) as session:
        session.add_all([Customer(id="C1", name="Acme"), Customer(id="C2", name="Globex")])
        session.flush()
        for number, (customer, currency, balance, status) in INVOICES.items():
            session.add(
                Invoice(
                    number=number,
                    customer_id=customer,
                    currency=currency,
                    total_minor=max(balance, 100),
                    balance_minor=balance,
                    status=status,
                    issued_on=date(2026, 1, 10),
                    due_on=date(2026, 2, 9),
                    policy_name="standard",
                    policy_version=1,
                )
            )
    return engine


def line(number: str, amount: int, reason: str | None = None, note: str | None = None):
    return CheckoutLine(invoice_number=number, amount_minor=amount, reason_code=reason, note=note)


def draft(*lines: CheckoutLine, request_id: str = "r-1", **changes: object) -> CheckoutDraft:
    fields: dict[str, object] = {
        "customer_id": "C1",
        "request_id": request_id,
        "method": "card",
        "lines": list(lines),
    }
    return CheckoutDraft(**(fields | changes))


def opened(engine: sa.Engine, checkout_draft: CheckoutDraft) -> Checkout:
    with session_scope(engine) as session:
        return open_checkout(session, checkout_draft)


def give_credit(engine: sa.Engine, amount: int, currency: str = "USD", key: str = "cr-1") -> None:
    with session_scope(engine) as session:
        session.add(
            CustomerCredit(
                customer_id="C1",
                currency=currency,
                amount_minor=amount,
                source="credit_note",
                idempotency_key=key,
            )
        )


def run(engine: sa.Engine, function: Callable[..., Any], *args: object, **kwargs: object) -> Any:
    """`function(session, *args, **kwargs)` in a transaction of its own."""
    with session_scope(engine) as session:
        return function(session, *args, **kwargs)


def count(engine: sa.Engine, model: type) -> int:
    with Session(engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def audit(engine: sa.Engine) -> list[tuple[str, dict]]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
        return [(row.action, json.loads(row.detail)) for row in rows]


def status_of(engine: sa.Engine, checkout_id: int) -> str:
    with Session(engine) as session:
        return session.get(Checkout, checkout_id).status


def move(engine: sa.Engine, checkout_id: int, status: str, reason: str | None = None) -> bool:
    with session_scope(engine) as session:
        return set_checkout_status(session, checkout_id, status, reason)


# --- opening a checkout --------------------------------------------------------------------


def test_a_checkout_over_several_invoices(books: sa.Engine) -> None:
    checkout = opened(
        books, draft(line("A-1", 10_000), line("A-2", 3_000, "pricing_dispute", " too high "))
    )
    assert (checkout.currency, checkout.method, checkout.status) == ("USD", "card", "created")
    assert (checkout.items_minor, checkout.credit_minor, checkout.surcharge_minor) == (13_000, 0, 0)
    assert checkout.charge_minor == 13_000
    with Session(books) as session:
        items = checkout_items(session, checkout.id)
    assert [(i.invoice_number, i.amount_minor, i.reason_code, i.note) for i in items] == [
        ("A-1", 10_000, None, None),
        ("A-2", 3_000, "pricing_dispute", "too high"),
    ]
    [(action, detail)] = audit(books)
    assert action == "checkout_created"
    assert detail["items"] == {"A-1": 10_000, "A-2": 3_000}
    # Opening a checkout moves no money.
    with Session(books) as session:
        assert get_balance(session, "A-1").balance_minor == 10_000


def test_credit_pays_first(books: sa.Engine) -> None:
    give_credit(books, 2_500)
    give_credit(books, 9_999, currency="EUR", key="cr-eur")  # another currency does not count
    checkout = opened(books, draft(line("A-1", 10_000), surcharge_percent=Decimal("3")))
    assert (checkout.credit_minor, checkout.surcharge_minor, checkout.charge_minor) == (
        2_500,
        225,  # 3% of the 75.00 left after credit
        7_725,
    )


def test_credit_covering_everything_leaves_nothing_to_charge(books: sa.Engine) -> None:
    give_credit(books, 50_000)
    checkout = opened(books, draft(line("A-1", 10_000), surcharge_percent=Decimal("3")))
    assert (checkout.credit_minor, checkout.surcharge_minor, checkout.charge_minor) == (
        10_000,
        0,
        0,
    )


@pytest.mark.parametrize(
    ("amount", "percent", "cap", "surcharge"),
    [
        (250, "1", None, 3),  # 2.5 rounds half up, not to even
        (249, "1", None, 2),  # 2.49 rounds down
        (1_050, "1.5", None, 16),  # 15.75
        (10_000, "2.9", None, 290),
        (10_000, "3", 200, 200),  # capped
        (10_000, "3", 5_000, 300),  # the cap is not reached
        (10_000, "0", None, 0),
    ],
)
def test_card_surcharge_rounds_half_up_and_is_capped(
    books: sa.Engine, amount: int, percent: str, cap: int | None, surcharge: int
) -> None:
    reason = None if amount == 10_000 else "other"
    checkout = opened(
        books,
        draft(
            line("A-1", amount, reason, note="partial" if reason else None),
            surcharge_percent=Decimal(percent),
            surcharge_cap_minor=cap,
        ),
    )
    assert (checkout.surcharge_minor, checkout.charge_minor) == (surcharge, amount + surcharge)


def test_no_surcharge_on_a_bank_debit(books: sa.Engine) -> None:
    checkout = opened(
        books, draft(line("A-1", 10_000), method="us_bank_account", surcharge_percent=Decimal(3))
    )
    assert (checkout.method, checkout.surcharge_minor, checkout.charge_minor) == (
        "us_bank_account",
        0,
        10_000,
    )


def test_a_zero_decimal_currency(books: sa.Engine) -> None:
    checkout = opened(books, draft(line("J-1", 12_345), surcharge_percent=Decimal("3.5")))
    # 432.075 yen: the surcharge rounds to a whole yen, JPY's minor unit.
    assert (checkout.currency, checkout.surcharge_minor, checkout.charge_minor) == (
        "JPY",
        432,
        12_777,
    )
    with pytest.raises(CheckoutItemError) as refused, session_scope(books) as session:
        open_checkout(session, draft(line("J-1", 12_346), request_id="r-2"))
    assert str(refused.value) == (
        "items[0].amount: 12346 JPY is more than the balance 12345 JPY of invoice J-1"
    )


OPEN = "no open invoice {} for this customer"


@pytest.mark.parametrize(
    ("lines", "index", "field", "message"),
    [
        ([], 0, "items", "items: choose at least one invoice"),
        ([line("A-9", 100)], 0, "invoice", "items[0].invoice: " + OPEN.format("A-9")),
        ([line("B-1", 100)], 0, "invoice", "items[0].invoice: " + OPEN.format("B-1")),
        ([line("A-PAID", 100)], 0, "invoice", "items[0].invoice: " + OPEN.format("A-PAID")),
        ([line("A-VOID", 700)], 0, "invoice", "items[0].invoice: " + OPEN.format("A-VOID")),
        (
            [line("A-1", 10_000), line("A-2", 5_000), line("A-1", 10_000)],
            2,
            "invoice",
            "items[2].invoice: invoice A-1 is already in items[0]",
        ),
        ([line("A-1", 0)], 0, "amount", "items[0].amount: must be more than 0, got 0.00 USD"),
        ([line("A-1", -5)], 0, "amount", "items[0].amount: must be more than 0, got -0.05 USD"),
        (
            [line("A-1", 10_000), line("A-2", 12_000)],
            1,
            "amount",
            "items[1].amount: 120.00 USD is more than the balance 50.00 USD of invoice A-2",
        ),
        (
            [line("A-1", 9_999)],
            0,
            "reason",
            "items[0].reason: paying 99.99 USD of the 100.00 USD due on invoice A-1 needs a "
            "reason for paying less",
        ),
        (
            [line("A-1", 9_999, "other")],
            0,
            "note",
            "items[0].note: reason 'other' needs a note saying why",
        ),
        (
            [line("A-1", 9_999, "other", "   ")],
            0,
            "note",
            "items[0].note: reason 'other' needs a note saying why",
        ),
        (
            [line("A-1", 10_000, note="x" * 501)],
            0,
            "note",
            "items[0].note: is 501 characters; at most 500",
        ),
        (
            [line("A-1", 10_000), line("E-1", 3_000)],
            1,
            "invoice",
            "items[1].invoice: invoice E-1 is in EUR, items[0] in USD: one checkout is one "
            "currency",
        ),
        # The first bad line is the one reported.
        (
            [line("A-1", 10_000), line("A-9", 5), line("A-2", -1)],
            1,
            "invoice",
            "items[1].invoice: " + OPEN.format("A-9"),
        ),
    ],
)
def test_a_bad_line_is_refused_and_nothing_is_written(
    books: sa.Engine, lines: list[CheckoutLine], index: int, field: str, message: str
) -> None:
    with pytest.raises(CheckoutItemError) as refused, session_scope(books) as session:
        open_checkout(session, draft(*lines))
    assert (refused.value.index, refused.value.field, str(refused.value)) == (
        index,
        field,
        message,
    )
    assert str(refused.value).endswith(refused.value.problem)
    assert isinstance(refused.value, LedgerError)
    assert (count(books, Checkout), count(books, CheckoutItem), count(books, AuditEvent)) == (
        0,
        0,
        0,
    )


def test_money_already_on_its_way_is_not_payable_again(books: sa.Engine) -> None:
    first = opened(books, draft(line("A-2", 2_000, "damaged_goods")))
    # A created checkout holds nothing yet: the whole balance is still payable.
    opened(books, draft(line("A-2", 5_000), request_id="r-2"))
    move(books, first.id, "processing")
    with pytest.raises(CheckoutItemError) as refused, session_scope(books) as session:
        open_checkout(session, draft(line("A-2", 4_000), request_id="r-3"))
    assert str(refused.value) == (
        "items[0].amount: 40.00 USD is more than the 30.00 USD left to pay on invoice A-2 "
        "(20.00 USD of its balance 50.00 USD is already being paid)"
    )
    # Paying exactly what is left is a full payment: no reason needed.
    rest = opened(books, draft(line("A-2", 3_000), request_id="r-4"))
    assert rest.items_minor == 3_000


def test_an_unknown_customer_is_refused(books: sa.Engine) -> None:
    with pytest.raises(UnknownCustomer, match="customer 'C9' does not exist"):
        run(books, open_checkout, draft(line("A-1", 10_000), customer_id="C9"))


@pytest.mark.parametrize(
    "changes",
    [
        {"request_id": ""},
        {"request_id": "r" * 101},
        {"method": "paypal"},
        {"surcharge_percent": Decimal("-1")},
        {"surcharge_percent": Decimal("101")},
        {"surcharge_cap_minor": -1},
        {"lines": [{"invoice_number": "A-1", "amount_minor": 5, "reason_code": "because"}]},
        {"lines": [{"invoice_number": "A-1", "amount_minor": "1.5"}]},
    ],
)
def test_a_malformed_draft_is_refused_before_the_ledger(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        draft(line("A-1", 100), **changes)


# --- the same request twice ----------------------------------------------------------------


def test_the_same_request_again_returns_the_same_checkout(books: sa.Engine) -> None:
    request = draft(line("A-1", 10_000), line("A-2", 4_000, "other", "short shipped"))
    first = opened(books, request)
    move(books, first.id, "processing")  # its own items no longer count as payable
    again = opened(books, draft(line("A-1", 10_000), line("A-2", 4_000, "other", "short shipped ")))
    assert again.id == first.id
    assert (count(books, Checkout), count(books, CheckoutItem)) == (1, 2)
    assert [action for action, _ in audit(books)] == ["checkout_created", "checkout_processing"]


@pytest.mark.parametrize(
    "changed",
    [
        draft(line("A-1", 9_000, "damaged_goods")),
        draft(line("A-1", 10_000), method="us_bank_account"),
        draft(line("A-1", 10_000), line("A-2", 5_000)),
        draft(line("A-2", 5_000)),
    ],
)
def test_the_same_request_id_for_another_checkout_is_refused(
    books: sa.Engine, changed: CheckoutDraft
) -> None:
    first = opened(books, draft(line("A-1", 10_000)))
    with pytest.raises(IdempotencyConflict) as refused, session_scope(books) as session:
        open_checkout(session, changed)
    assert f"checkout request 'r-1' of customer C1 was already used for checkout {first.id}" in (
        str(refused.value)
    )
    assert "(card: A-1 100.00 USD)" in str(refused.value)
    assert count(books, Checkout) == 1


def test_request_ids_are_per_customer(books: sa.Engine) -> None:
    mine = opened(books, draft(line("A-1", 10_000)))
    theirs = opened(books, draft(line("B-1", 4_000), customer_id="C2"))
    assert mine.id != theirs.id
    assert count(books, Checkout) == 2


def test_a_lost_race_returns_the_winner_and_keeps_the_transaction(
    books: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = opened(books, draft(line("A-1", 10_000)))
    real_lookup = checkouts._by_request
    lookups: list[object] = []

    def first_lookup_misses(*args: object) -> Checkout | None:
        lookups.append(args)
        return None if len(lookups) == 1 else real_lookup(*args)

    monkeypatch.setattr(checkouts, "_by_request", first_lookup_misses)
    with session_scope(books) as session:
        record_audit(session, "tester", "before", None, {})
        again = open_checkout(session, draft(line("A-1", 10_000)))
        record_audit(session, "tester", "after", None, {})
    assert len(lookups) == 2  # missed, hit the unique constraint, found the winner
    assert again.id == winner.id
    assert (count(books, Checkout), count(books, CheckoutItem)) == (1, 1)
    assert [action for action, _ in audit(books)] == ["checkout_created", "before", "after"]


def test_racing_requests_write_one_checkout(books: sa.Engine) -> None:
    results: list[object] = []

    def second_attempt() -> None:
        try:
            with session_scope(books) as session:
                results.append(open_checkout(session, draft(line("A-1", 10_000))).id)
        except Exception as error:  # reported below, in the test's thread
            results.append(error)

    first = Session(books, expire_on_commit=False)
    try:
        first_id = open_checkout(first, draft(line("A-1", 10_000))).id
        thread = threading.Thread(target=second_attempt)
        thread.start()
        thread.join(timeout=0.5)  # the second now waits on the first's write
        first.commit()
        thread.join(timeout=30)
    finally:
        first.close()
    assert results == [first_id]
    assert (count(books, Checkout), count(books, CheckoutItem)) == (1, 1)


# --- status --------------------------------------------------------------------------------

ALLOWED = {
    ("created", "processing"),
    ("created", "succeeded"),
    ("created", "failed"),
    ("created", "abandoned"),
    ("processing", "succeeded"),
    ("processing", "failed"),
    ("failed", "processing"),
    ("failed", "succeeded"),
    ("abandoned", "processing"),
    ("abandoned", "succeeded"),
    ("abandoned", "failed"),
}


def test_every_status_move(books: sa.Engine) -> None:
    statuses = [status.value for status in CheckoutStatus]
    for n, (start, target) in enumerate((a, b) for a in statuses for b in statuses):
        # One minor unit each: the processing ones leave the rest of the balance payable.
        checkout = opened(books, draft(line("A-1", 1, "other", "part"), request_id=f"move-{n}"))
        if start != "created":
            assert move(books, checkout.id, start)
        events = count(books, AuditEvent)
        moved = move(books, checkout.id, target, "card declined")
        expected = (start, target) in ALLOWED
        assert (start, target, moved) == (start, target, expected)
        assert status_of(books, checkout.id) == (target if expected else start)
        assert count(books, AuditEvent) == events + (1 if expected else 0)


def test_events_in_any_order_end_where_the_money_is(books: sa.Engine) -> None:
    checkout = opened(books, draft(line("A-1", 10_000), method="us_bank_account"))
    assert move(books, checkout.id, "succeeded")
    assert not move(books, checkout.id, "processing")  # a late processing event
    assert not move(books, checkout.id, "failed")
    assert status_of(books, checkout.id) == "succeeded"
    actions = audit(books)
    assert actions[-1][0] == "checkout_succeeded"
    assert actions[-1][1] | {"checkout_id": None} == {
        "checkout_id": None,
        "from": "created",
        "to": "succeeded",
        "payment_intent_id": None,
        "failure_reason": None,
    }


def test_a_retry_after_a_failure_clears_its_reason(books: sa.Engine) -> None:
    checkout = opened(books, draft(line("A-1", 10_000)))
    assert move(books, checkout.id, "failed", "insufficient funds")
    with Session(books) as session:
        assert session.get(Checkout, checkout.id).failure_reason == "insufficient funds"
    assert move(books, checkout.id, "processing")
    with Session(books) as session:
        assert session.get(Checkout, checkout.id).failure_reason is None
    assert move(books, checkout.id, "failed", "x" * 600)
    with Session(books) as session:
        assert session.get(Checkout, checkout.id).failure_reason == "x" * 500


def test_bad_status_requests(books: sa.Engine) -> None:
    checkout = opened(books, draft(line("A-1", 10_000)))
    with pytest.raises(LedgerError, match="unknown status 'done'; use one of created,"):
        move(books, checkout.id, "done")
    with pytest.raises(UnknownCheckout, match="checkout 999999 does not exist"):
        move(books, 999_999, "failed")


def test_stale_created_checkouts_are_abandoned(books: sa.Engine) -> None:
    old = opened(books, draft(line("A-1", 10_000), request_id="old"))
    fresh = opened(books, draft(line("A-1", 10_000), request_id="fresh"))
    old_processing = opened(books, draft(line("A-2", 5_000), request_id="processing"))
    theirs = opened(books, draft(line("B-1", 4_000), customer_id="C2", request_id="old"))
    move(books, old_processing.id, "processing")
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    with session_scope(books) as session:
        for checkout_id in (old.id, old_processing.id, theirs.id):
            session.get(Checkout, checkout_id).created_at = long_ago
    with session_scope(books) as session:
        abandoned = abandon_stale_checkouts(session, "C1", datetime(2026, 1, 2, tzinfo=UTC))
    assert [checkout.id for checkout in abandoned] == [old.id]
    assert [status_of(books, c.id) for c in (old, fresh, old_processing, theirs)] == [
        "abandoned",
        "created",
        "processing",
        "created",
    ]
    with pytest.raises(LedgerError, match="older_than must be timezone-aware"):
        run(books, abandon_stale_checkouts, "C1", datetime(2026, 1, 2))


# --- the provider's other answers ----------------------------------------------------------


def test_payment_intents(books: sa.Engine) -> None:
    first = opened(books, draft(line("A-1", 10_000)))
    second = opened(books, draft(line("A-2", 5_000), request_id="r-2"))
    with session_scope(books) as session:
        attach_payment_intent(session, first.id, "pi_1")
        attach_payment_intent(session, first.id, "pi_1")  # again: nothing changes
    with Session(books) as session:
        assert checkout_by_intent(session, "pi_1").id == first.id
        assert checkout_by_intent(session, "pi_none") is None
    with pytest.raises(LedgerError, match="already has payment intent pi_1; it cannot take pi_2"):
        run(books, attach_payment_intent, first.id, "pi_2")
    with pytest.raises(LedgerError, match="payment intent pi_1 belongs to another checkout"):
        run(books, attach_payment_intent, second.id, "pi_1")
    with pytest.raises(LedgerError, match="1 to 255 characters"):
        run(books, attach_payment_intent, second.id, "")
    with pytest.raises(UnknownCheckout):
        run(books, attach_payment_intent, 999_999, "pi_3")


def test_a_checkout_is_read_only_by_its_customer(books: sa.Engine) -> None:
    checkout = opened(books, draft(line("A-1", 10_000)))
    with Session(books) as session:
        assert get_checkout(session, "C1", checkout.id).request_id == "r-1"
        with pytest.raises(UnknownCheckout) as theirs:
            get_checkout(session, "C2", checkout.id)
        with pytest.raises(UnknownCheckout) as missing:
            get_checkout(session, "C2", checkout.id + 1000)
    assert str(theirs.value) == f"customer 'C2' has no checkout {checkout.id}"
    assert str(missing.value) == f"customer 'C2' has no checkout {checkout.id + 1000}"


def test_refunds_keep_the_highest_total(books: sa.Engine) -> None:
    checkout = opened(books, draft(line("A-1", 10_000)))

    def refunded(total: int) -> int:
        with session_scope(books) as session:
            return note_refund(session, checkout.id, total)

    assert [refunded(3_000), refunded(3_000), refunded(1_000), refunded(5_000)] == [
        3_000,
        0,
        0,
        2_000,
    ]
    with Session(books) as session:
        assert session.get(Checkout, checkout.id).refunded_minor == 5_000
    assert [action for action, _ in audit(books)].count("checkout_refunded") == 2
    with pytest.raises(InvalidAmount, match="100.01 USD is not between 0 and the 100.00 USD"):
        refunded(10_001)
    with pytest.raises(InvalidAmount):
        refunded(-1)


def test_a_dispute_is_noted_once(books: sa.Engine) -> None:
    checkout = opened(books, draft(line("A-1", 10_000)))
    results = []
    for _ in range(2):
        with session_scope(books) as session:
            results.append(note_dispute(session, checkout.id))
    assert results == [True, False]
    assert [action for action, _ in audit(books)].count("checkout_disputed") == 1


def test_a_provider_event_is_handled_once(books: sa.Engine) -> None:
    with session_scope(books) as session:
        assert not stripe_event_seen(session, "evt_1")
        assert record_stripe_event(session, "evt_1", "payment_intent.succeeded", "pi_1")
    with session_scope(books) as session:
        assert stripe_event_seen(session, "evt_1")
        assert not record_stripe_event(session, "evt_1", "payment_intent.succeeded", "pi_1")
        assert record_stripe_event(session, "evt_2", "charge.refunded", None)
    assert count(books, StripeEvent) == 2
    with pytest.raises(LedgerError, match="the id needs 1 to 255 characters"):
        run(books, record_stripe_event, "", "charge.refunded", None)


def test_an_event_delivered_twice_at_once_is_kept_once(
    books: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(books) as session:
        record_stripe_event(session, "evt_1", "payment_intent.succeeded", "pi_1")
    real_seen = checkout_events.stripe_event_seen
    calls: list[str] = []

    def first_check_misses(session: Session, event_id: str) -> bool:
        calls.append(event_id)
        return False if len(calls) == 1 else real_seen(session, event_id)

    monkeypatch.setattr(checkout_events, "stripe_event_seen", first_check_misses)
    with session_scope(books) as session:
        record_audit(session, "tester", "kept", None, {})
        assert not record_stripe_event(session, "evt_1", "payment_intent.succeeded", "pi_1")
    assert len(calls) == 2
    assert count(books, StripeEvent) == 1
    assert [action for action, _ in audit(books)] == ["kept"]


def test_stripe_customer_id(books: sa.Engine) -> None:
    with session_scope(books) as session:
        set_stripe_customer_id(session, "C1", "cus_123")
    with Session(books) as session:
        assert session.get(Customer, "C1").stripe_customer_id == "cus_123"
    with pytest.raises(UnknownCustomer):
        run(books, set_stripe_customer_id, "C9", "cus_9")
    with pytest.raises(LedgerError, match="1 to 64 characters"):
        run(books, set_stripe_customer_id, "C1", "c" * 65)


# --- payments out of credit ----------------------------------------------------------------


def from_credit(amount: int, number: str = "A-1", key: str = "pay-c", **changes: object):
    fields: dict[str, object] = {
        "invoice_number": number,
        "amount_minor": amount,
        "currency": "USD",
        "method": "credit",
        "received_at": RECEIVED,
        "idempotency_key": key,
    }
    return PaymentApplication(**(fields | changes))


def by_card(amount: int, number: str = "A-1", key: str = "pay-card") -> PaymentApplication:
    return from_credit(amount, number, key=key, method="card")


def test_a_payment_from_credit_spends_it(books: sa.Engine) -> None:
    give_credit(books, 3_000)
    for _ in range(2):  # the repeated key spends it once
        with session_scope(books) as session:
            balance = apply_payment(session, from_credit(2_000))
    assert (balance.balance_minor, balance.customer_credit_minor, balance.repeated) == (
        8_000,
        1_000,
        True,
    )
    with Session(books) as session:
        used = session.exec(select(CustomerCredit).where(CustomerCredit.source == "applied")).one()
        payment = session.exec(select(Payment)).one()
    assert (used.amount_minor, used.idempotency_key, used.payment_id) == (
        -2_000,
        "pay-c:use",
        payment.id,
    )
    assert count(books, PaymentAllocation) == 1


@pytest.mark.parametrize(
    ("amount", "number", "currency", "message"),
    [
        (
            3_001,
            "A-1",
            "USD",
            "customer C1 holds 30.00 USD of credit in USD: cannot pay 30.01 USD of invoice A-1 "
            "from it",
        ),
        (
            3_000,
            "A-2",
            "USD",
            "customer C1: paying 30.00 USD of credit in USD to invoice A-2 is more than its "
            "balance 20.00 USD",
        ),
        (
            100,
            "E-1",
            "EUR",
            "customer C1 holds 0.00 EUR of credit in EUR: cannot pay 1.00 EUR of invoice E-1",
        ),
    ],
)
def test_a_payment_from_credit_is_refused_when_it_does_not_fit(
    books: sa.Engine, amount: int, number: str, currency: str, message: str
) -> None:
    give_credit(books, 3_000)
    with session_scope(books) as session:
        apply_payment(session, by_card(3_000, "A-2", key="card-1"))
    before = (count(books, Payment), count(books, CustomerCredit), count(books, AuditEvent))
    with pytest.raises(InvalidAmount, match=message), session_scope(books) as session:
        apply_payment(session, from_credit(amount, number, currency=currency))
    after = (count(books, Payment), count(books, CustomerCredit), count(books, AuditEvent))
    assert after == before
    with Session(books) as session:
        assert available_credit(session, "C1", "USD") == 3_000


def test_other_methods_do_not_touch_credit(books: sa.Engine) -> None:
    give_credit(books, 3_000)
    with session_scope(books) as session:
        balance = apply_payment(session, by_card(12_000))
    # The card payment overpays: its excess adds to the credit, nothing is spent.
    assert (balance.balance_minor, balance.customer_credit_minor) == (0, 5_000)


def test_two_payments_cannot_spend_one_credit(books: sa.Engine) -> None:
    give_credit(books, 3_000)
    results: list[object] = []

    def second_attempt() -> None:
        try:
            with session_scope(books) as session:
                results.append(apply_payment(session, from_credit(3_000, "A-2", key="pay-2")))
        except Exception as error:  # reported below, in the test's thread
            results.append(error)

    first = Session(books)
    try:
        apply_payment(first, from_credit(3_000, "A-1", key="pay-1"))
        thread = threading.Thread(target=second_attempt)
        thread.start()
        thread.join(timeout=0.5)  # waits on the first's lock of the customer
        first.commit()
        thread.join(timeout=30)
    finally:
        first.close()
    assert len(results) == 1 and isinstance(results[0], InvalidAmount)
    with Session(books) as session:
        assert available_credit(session, "C1", "USD") == 0


# --- money left over and money taken back --------------------------------------------------


def test_money_for_a_settled_invoice_becomes_credit(books: sa.Engine) -> None:
    def unapplied(amount: int = 1_500, key: str = "late-1", **changes: object) -> int:
        arguments: dict[str, object] = {
            "customer_id": "C1",
            "currency": "USD",
            "amount_minor": amount,
            "reference": "pi_late",
            "idempotency_key": key,
            "actor": "stripe",
        }
        with session_scope(books) as session:
            return credit_unapplied_payment(session, **(arguments | changes))

    give_credit(books, 500)
    assert unapplied() == 2_000
    assert unapplied() == 2_000  # repeated: nothing more
    assert unapplied(key="late-2", method="us_bank_account") == 3_500
    with Session(books) as session:
        payments = session.exec(select(Payment).order_by(Payment.id)).all()
        credits = session.exec(
            select(CustomerCredit).where(CustomerCredit.source == "unapplied_payment")
        ).all()
    assert [(p.amount_minor, p.method, p.reference) for p in payments] == [
        (1_500, "card", "pi_late"),
        (1_500, "us_bank_account", "pi_late"),
    ]
    assert [c.payment_id for c in credits] == [p.id for p in payments]
    assert count(books, PaymentAllocation) == 0
    assert [action for action, _ in audit(books)] == ["payment_unapplied"] * 2
    with pytest.raises(IdempotencyConflict, match="'late-1' was already used for 15.00 USD"):
        unapplied(amount=1_600)
    with pytest.raises(InvalidAmount, match="amount must be greater than 0, got 0"):
        unapplied(amount=0, key="late-3")
    with pytest.raises(LedgerError, match="unknown currency 'XXX'"):
        unapplied(currency="XXX", key="late-4")
    with pytest.raises(UnknownCustomer):
        unapplied(customer_id="C9", key="late-5")


def paid_checkout(engine: sa.Engine) -> Checkout:
    """A card checkout over A-1 (short paid 60.00 of 100.00) and A-2 (paid in full), landed."""
    checkout = opened(engine, draft(line("A-1", 6_000, "damaged_goods"), line("A-2", 5_000)))
    move(engine, checkout.id, "succeeded")
    with session_scope(engine) as session:
        for item in checkout_items(session, checkout.id):
            number = item.invoice_number
            apply_payment(session, by_card(item.amount_minor, number, key=f"co-{number}"))
    return checkout


def reverse(engine: sa.Engine, checkout_id: int, amount: int, key: str = "re_1"):
    with session_scope(engine) as session:
        return reverse_for_checkout(session, checkout_id, amount, "refund re_1", key, "stripe")


def test_a_refund_makes_the_money_due_again(books: sa.Engine) -> None:
    checkout = paid_checkout(books)
    with Session(books) as session:
        assert get_balance(session, "A-2").status == "paid"
    before = datetime.now(UTC)
    balances = reverse(books, checkout.id, 8_000)
    assert [(b.invoice_number, b.balance_minor, b.status, b.repeated) for b in balances] == [
        ("A-1", 10_000, "open", False),  # 40.00 left + 60.00 back
        ("A-2", 2_000, "open", False),  # paid (it was disputed), now due again
    ]
    with Session(books) as session:
        adjustments = session.exec(select(Adjustment).order_by(Adjustment.id)).all()
        tasks = session.exec(select(CollectorTask).order_by(CollectorTask.id)).all()
        items = checkout_items(session, checkout.id)
    assert [(a.kind, a.amount_minor, a.idempotency_key) for a in adjustments] == [
        ("reversal", 6_000, "re_1:A-1"),
        ("reversal", 2_000, "re_1:A-2"),
    ]
    assert [(t.queue, t.priority, t.idempotency_key) for t in tasks] == [
        ("payments", "high", "re_1:task:A-1"),
        ("payments", "high", "re_1:task:A-2"),
    ]
    assert all(timedelta(days=2) <= t.due_at - before < timedelta(days=2, minutes=1) for t in tasks)
    assert [item.reversed_minor for item in items] == [6_000, 2_000]
    assert [action for action, _ in audit(books)][-5:] == [
        "adjustment_reversal",
        "collector_task_opened",
        "adjustment_reversal",
        "collector_task_opened",
        "checkout_reversed",
    ]
    assert audit(books)[-1][1] | {"checkout_id": 0} == {
        "checkout_id": 0,
        "idempotency_key": "re_1",
        "currency": "USD",
        "amount_minor": 8_000,
        "invoices_minor": 8_000,
        "surcharge_minor": 0,
        "reason": "refund re_1",
    }

    # The same key again: the same answer, nothing new.
    again = reverse(books, checkout.id, 8_000)
    assert [(b.invoice_number, b.balance_minor, b.repeated) for b in again] == [
        ("A-1", 10_000, True),
        ("A-2", 2_000, True),
    ]
    assert (count(books, Adjustment), count(books, CollectorTask)) == (2, 2)
    with pytest.raises(IdempotencyConflict, match="'re_1' was already used on checkout"):
        reverse(books, checkout.id, 7_000)

    # A later chargeback takes the rest, item by item; then nothing is left to take.
    [rest] = reverse(books, checkout.id, 3_000, key="dp_1")
    assert (rest.invoice_number, rest.balance_minor) == ("A-2", 5_000)
    with pytest.raises(InvalidAmount, match="taking back 0.01 USD is more than the 0.00 USD"):
        reverse(books, checkout.id, 1, key="dp_2")


def test_a_full_refund_returns_the_surcharge_too(books: sa.Engine) -> None:
    checkout = opened(books, draft(line("A-1", 10_000), surcharge_percent=Decimal(3)))
    move(books, checkout.id, "succeeded")
    with session_scope(books) as session:
        apply_payment(session, by_card(10_000, "A-1", key="co-A-1"))
    [balance] = reverse(books, checkout.id, 10_300)
    assert (balance.balance_minor, balance.status) == (10_000, "open")
    action, detail = audit(books)[-1]
    assert (action, detail["invoices_minor"], detail["surcharge_minor"]) == (
        "checkout_reversed",
        10_000,
        300,
    )
    # Repeats: the invoice part is all the key recorded, so either total is the same request.
    assert [b.repeated for b in reverse(books, checkout.id, 10_300)] == [True]
    assert [b.repeated for b in reverse(books, checkout.id, 10_000)] == [True]
    with pytest.raises(IdempotencyConflict, match="take back 100.00 USD from its invoices"):
        reverse(books, checkout.id, 10_301)
    assert count(books, Adjustment) == 1
    with pytest.raises(
        InvalidAmount,
        match="taking back 3.01 USD is more than the 0.00 USD its invoices still hold from it "
        "plus its 3.00 USD surcharge",
    ):
        reverse(books, checkout.id, 301, key="re_2")


def test_a_closed_invoice_reopens_when_its_money_is_taken_back(books: sa.Engine) -> None:
    checkout = paid_checkout(books)
    with session_scope(books) as session:
        session.exec(select(Invoice).where(Invoice.number == "A-2")).one().status = "closed"
    balances = reverse(books, checkout.id, 11_000)
    assert [(b.invoice_number, b.balance_minor, b.status) for b in balances] == [
        ("A-1", 10_000, "open"),
        ("A-2", 5_000, "open"),
    ]


def test_bad_reversals_are_refused_and_write_nothing(books: sa.Engine) -> None:
    checkout = paid_checkout(books)
    unpaid = opened(books, draft(line("A-1", 4_000), request_id="r-2"))
    before = (count(books, Adjustment), count(books, CollectorTask), count(books, AuditEvent))
    with pytest.raises(InvalidAmount, match="taking back 110.01 USD is more than the 110.00 USD"):
        reverse(books, checkout.id, 11_001)
    with pytest.raises(InvalidAmount, match="amount must be greater than 0"):
        reverse(books, checkout.id, 0)
    with pytest.raises(LedgerError, match="is created: no money was received to take back"):
        reverse(books, unpaid.id, 100)
    with pytest.raises(UnknownCheckout):
        reverse(books, 999_999, 100)
    after = (count(books, Adjustment), count(books, CollectorTask), count(books, AuditEvent))
    assert after == before
