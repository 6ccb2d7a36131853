"""Money invariants of the ledger, tested as a state machine on SQLite and on PostgreSQL.

One customer's invoices (three in USD, one in zero-decimal JPY) go through random sequences of
what the invoice workflow asks of the ledger, through the same `ledger.operations`, `ledger.adjustments` and
`ledger.lifecycle` functions its activities call: payments (partial, full, over, in the wrong
currency), credit notes, late fees, corrections, disputes and promises, voids, write-offs,
collector tasks, retried and reused idempotency keys, and ERP clearing (journal mode) followed
by closing. A model (tests/ledger_model.py) predicts every answer; a refused or repeated request
must leave every row and the journal exactly as they were; after every step the books must agree
with the model and with themselves (see `check_books` for the list of invariants).
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlmodel import SQLModel

from activities.erp import ErpActivities
from activities.models import (
    AdjustmentApplication,
    CollectorOutcome,
    CollectorTaskRequest,
    ErpClearingRequest,
    LedgerBalance,
    PaymentApplication,
    StatusChange,
)
from ledger import adjustments, lifecycle, operations
from ledger.books import (
    CurrencyMismatch,
    IdempotencyConflict,
    InvalidAdjustment,
    InvalidAmount,
    InvalidStatusChange,
    InvoiceClosed,
    LedgerError,
)
from ledger.db import make_engine, session_scope
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice
from settings import Settings
from tests.ledger_books import Books, read_books
from tests.ledger_model import (
    CLEARABLE,
    MANUAL_CHANGES,
    MONEY_FROZEN,
    SETTLED,
    ExpectedInvoice,
    ExpectedLedger,
    Status,
    check_books,
)

T = TypeVar("T")
Request = PaymentApplication | AdjustmentApplication | CollectorTaskRequest

CUSTOMER = "C-MONEY"
INVOICES = (("INV-USD-1", "USD"), ("INV-USD-2", "USD"), ("INV-USD-3", "USD"), ("INV-JPY-1", "JPY"))
NUMBERS = tuple(number for number, _ in INVOICES)
ISSUED_ON = date(2026, 1, 5)
RECEIVED_AT = datetime(2026, 2, 10, 14, 0, tzinfo=UTC)
CLEARED_ON = date(2026, 3, 2)
SHAPES = ("partial", "full", "over", "another_currency")
ADJUSTMENT_KINDS = ("credit", "late_fee", "adjustment", "write_off", "void")


def sized(shape: str, balance: int, extra: int) -> int:
    """An amount of the given shape against `balance`; with nothing to pay, all of it is excess."""
    if shape == "partial" and balance >= 2:
        return 1 + extra % (balance - 1)
    if shape == "full" and balance >= 1:
        return balance
    return balance + extra


def add_customer_invoices(engine: sa.Engine, totals: dict[str, int]) -> None:
    with session_scope(engine) as session:
        session.add(Customer(id=CUSTOMER, name="Money Invariants Ltd"))
        session.flush()
        for number, currency in INVOICES:
            if number in totals:
                session.add(
                    Invoice(
                        number=number,
                        customer_id=CUSTOMER,
                        currency=currency,
                        total_minor=totals[number],
                        balance_minor=totals[number],
                        issued_on=ISSUED_ON,
                        due_on=ISSUED_ON + timedelta(days=30),
                        policy_name="standard",
                        policy_version=1,
                    )
                )


def clearing(number: str) -> ErpClearingRequest:
    return ErpClearingRequest(
        invoice_number=number, cleared_on=CLEARED_ON, idempotency_key=f"{number}:erp-clearing"
    )


class LedgerMachine(RuleBasedStateMachine):
    """Drives one customer's invoices; `ledgers` gives each example an empty, migrated ledger."""

    ledgers: Callable[[], AbstractContextManager[sa.Engine]]

    def __init__(self) -> None:
        super().__init__()
        self._cleanup = ExitStack()
        self.engine = self._cleanup.enter_context(self.ledgers())
        folder = Path(self._cleanup.enter_context(tempfile.TemporaryDirectory(prefix="erp-")))
        erp_settings = Settings.scratch(folder, task_queue="money-invariants")
        self.journal = erp_settings.effective_erp_journal
        self.erp = ErpActivities(self.engine, erp_settings)
        self.model = ExpectedLedger()
        self.requests: list[Request] = []  # every request the ledger accepted, to retry
        self.task_ids: dict[str, int] = {}
        self.keys = 0

    def teardown(self) -> None:
        self._cleanup.close()

    # --- talking to the ledger -----------------------------------------------------------

    def _key(self, what: str) -> str:
        self.keys += 1
        return f"{what}:{self.keys}"

    def _books(self) -> Books:
        return read_books(self.engine, self.journal)

    def _ledger(self, operation: Callable[[Any, Any], T], request: Any) -> T:
        with session_scope(self.engine) as session:
            return operation(session, request)

    def _unchanged(self, action: Callable[[], T]) -> T:
        before = self._books().fingerprint
        result = action()
        assert self._books().fingerprint == before, "a repeated request wrote to the ledger"
        return result

    def _refused(
        self, error: type[LedgerError], operation: Callable[..., Any], request: Any
    ) -> None:
        event(f"refused: {error.__name__}")
        before = self._books().fingerprint
        with pytest.raises(error):
            self._ledger(operation, request)
        assert self._books().fingerprint == before, f"a refused {request!r} wrote to the ledger"

    def _answered(
        self, answer: LedgerBalance, invoice: ExpectedInvoice, *, repeated: bool = False
    ) -> None:
        assert (answer.balance_minor, answer.status) == (invoice.balance, invoice.status)
        assert answer.total_minor == invoice.total
        assert answer.customer_credit_minor == self.model.held(invoice.currency)
        assert answer.repeated is repeated

    def _adjust(self, invoice: ExpectedInvoice, kind: str, amount: int) -> AdjustmentApplication:
        return AdjustmentApplication(
            invoice_number=invoice.number,
            kind=kind,
            amount_minor=amount,
            reason=f"{kind} from the state machine",
            idempotency_key=self._key(f"{invoice.number}:{kind}"),
            actor="collector",
        )

    def _applied(self, invoice: ExpectedInvoice, request: AdjustmentApplication) -> None:
        """Apply an adjustment the model has already accounted for."""
        answer = self._ledger(adjustments.apply_adjustment, request)
        self.requests.append(request)
        self.model.audit[f"adjustment_{request.kind}", invoice.number] += 1
        self.model.settle(invoice)
        self._answered(answer, invoice)

    # --- rules ---------------------------------------------------------------------------

    @initialize(
        usd=st.lists(st.integers(1, 30_000), min_size=3, max_size=3), jpy=st.integers(1, 30_000)
    )
    def issue_invoices(self, usd: list[int], jpy: int) -> None:
        totals = dict(zip(NUMBERS, [*usd, jpy], strict=True))
        add_customer_invoices(self.engine, totals)
        for number, currency in INVOICES:
            total = totals[number]
            self.model.invoices[number] = ExpectedInvoice(number, currency, total, balance=total)

    @rule(
        number=st.sampled_from(NUMBERS), shape=st.sampled_from(SHAPES), extra=st.integers(1, 5_000)
    )
    def pay(self, number: str, shape: str, extra: int) -> None:
        invoice = self.model.invoices[number]
        amount = sized(shape, invoice.balance, extra)
        currency = invoice.currency
        if shape == "another_currency":
            currency = "JPY" if invoice.currency == "USD" else "USD"
        request = PaymentApplication(
            invoice_number=number,
            amount_minor=amount,
            currency=currency,
            method="card",
            received_at=RECEIVED_AT,
            idempotency_key=self._key(f"{number}:payment"),
            actor="payer",
        )
        if invoice.status in MONEY_FROZEN:
            self._refused(InvoiceClosed, operations.apply_payment, request)
            return
        if currency != invoice.currency:
            self._refused(CurrencyMismatch, operations.apply_payment, request)
            return
        answer = self._ledger(operations.apply_payment, request)
        allocated = min(amount, invoice.balance)
        event(f"payment: {shape if allocated else 'nothing left to pay'}")
        invoice.balance -= allocated
        invoice.allocated += allocated
        if allocated:
            invoice.overpaid += amount - allocated
        else:
            invoice.paid_while_settled += amount
        self.model.received[currency] += amount
        self.requests.append(request)
        self.model.audit["payment_applied", number] += 1
        self.model.settle(invoice)
        self._answered(answer, invoice)

    @rule(
        number=st.sampled_from(NUMBERS),
        shape=st.sampled_from(SHAPES[:3]),
        extra=st.integers(1, 5_000),
    )
    def credit_note(self, number: str, shape: str, extra: int) -> None:
        invoice = self.model.invoices[number]
        size = sized(shape, invoice.balance, extra)
        request = self._adjust(invoice, "credit", -size)
        if invoice.status in MONEY_FROZEN:
            self._refused(InvoiceClosed, adjustments.apply_adjustment, request)
            return
        applied = min(size, invoice.balance)
        event("credit note beyond the balance" if size > applied else "credit note within it")
        invoice.balance -= applied
        invoice.credits_applied += applied
        invoice.credit_note_excess += size - applied
        self._applied(invoice, request)

    @rule(number=st.sampled_from(NUMBERS), amount=st.integers(1, 5_000))
    def late_fee(self, number: str, amount: int) -> None:
        invoice = self.model.invoices[number]
        request = self._adjust(invoice, "late_fee", amount)
        if invoice.status in MONEY_FROZEN:
            self._refused(InvoiceClosed, adjustments.apply_adjustment, request)
        elif invoice.status == Status.PAID:
            self._refused(InvalidAdjustment, adjustments.apply_adjustment, request)
        else:
            invoice.balance += amount
            invoice.late_fees += amount
            self._applied(invoice, request)

    @rule(number=st.sampled_from(NUMBERS), amount=st.integers(-5_000, 5_000).filter(bool))
    def correction(self, number: str, amount: int) -> None:
        invoice = self.model.invoices[number]
        request = self._adjust(invoice, "adjustment", amount)
        if invoice.status in MONEY_FROZEN:
            self._refused(InvoiceClosed, adjustments.apply_adjustment, request)
        elif invoice.balance + amount < 0:
            self._refused(InvalidAmount, adjustments.apply_adjustment, request)
        else:
            invoice.balance += amount
            invoice.corrections += amount
            self._applied(invoice, request)

    @rule(
        number=st.sampled_from(NUMBERS),
        kind=st.sampled_from(["write_off", "void"]),
        requested=st.integers(-9_999, 9_999),  # the ledger takes the balance, not this
    )
    def close_out(self, number: str, kind: str, requested: int) -> None:
        invoice = self.model.invoices[number]
        request = self._adjust(invoice, kind, requested)
        if invoice.status in MONEY_FROZEN:
            self._refused(InvoiceClosed, adjustments.apply_adjustment, request)
        elif invoice.allocated if kind == "void" else invoice.balance == 0:
            # Nothing to write off; payments on it forbid a void.
            self._refused(InvalidAdjustment, adjustments.apply_adjustment, request)
        else:
            if kind == "void":
                invoice.voided += invoice.balance
            else:
                invoice.written_off += invoice.balance
            invoice.balance = 0
            invoice.status = Status.VOID if kind == "void" else Status.WRITTEN_OFF
            self._applied(invoice, request)

    @precondition(lambda self: self.requests)
    @rule(data=st.data(), same=st.booleans())
    def retry_earlier_request(self, data: st.DataObject, same: bool) -> None:
        """The same key and request again changes nothing; a different request is refused."""
        earlier = data.draw(st.sampled_from(self.requests), label="earlier request")
        if isinstance(earlier, CollectorTaskRequest):
            if same:
                again = self._unchanged(
                    lambda: self._ledger(lifecycle.open_collector_task, earlier)
                )
                assert again == self.task_ids[earlier.idempotency_key]
                return
            other = [n for n in NUMBERS if n != earlier.invoice_number]
            changed: Request = earlier.model_copy(
                update={"invoice_number": data.draw(st.sampled_from(other), label="other invoice")}
            )
            self._refused(IdempotencyConflict, lifecycle.open_collector_task, changed)
            return
        operation = (
            operations.apply_payment
            if isinstance(earlier, PaymentApplication)
            else adjustments.apply_adjustment
        )
        if same:
            answer = self._unchanged(lambda: self._ledger(operation, earlier))
            self._answered(answer, self.model.invoices[earlier.invoice_number], repeated=True)
        elif isinstance(earlier, PaymentApplication):
            delta = data.draw(st.integers(1, 1_000), label="more")
            changed = earlier.model_copy(update={"amount_minor": earlier.amount_minor + delta})
            self._refused(IdempotencyConflict, operation, changed)
        else:
            kinds = [k for k in ADJUSTMENT_KINDS if k != earlier.kind]
            changed = earlier.model_copy(update={"kind": data.draw(st.sampled_from(kinds))})
            self._refused(IdempotencyConflict, operation, changed)

    @rule(number=st.sampled_from(NUMBERS), wanted=st.sampled_from(list(Status)))
    def change_status(self, number: str, wanted: Status) -> None:
        invoice = self.model.invoices[number]
        request = StatusChange(
            invoice_number=number, status=wanted, reason="console", actor="collector"
        )
        if wanted == invoice.status:
            answer = self._unchanged(lambda: self._ledger(lifecycle.set_status, request))
            self._answered(answer, invoice)
        elif wanted == Status.CLOSED and invoice.status in CLEARABLE:
            # Closing goes through the ERP, as the workflow does it.
            if invoice.cleared_as is None:
                self._clear(invoice)
            self._close(invoice)
        elif wanted in MANUAL_CHANGES.get(invoice.status, ()):
            answer = self._ledger(lifecycle.set_status, request)
            invoice.status = wanted
            self.model.audit["status_changed", number] += 1
            self._answered(answer, invoice)
        else:
            self._refused(InvalidStatusChange, lifecycle.set_status, request)

    @precondition(lambda self: self.model.numbers(lambda i: i.status in CLEARABLE or i.cleared_as))
    @rule(data=st.data())
    def clear_in_erp(self, data: st.DataObject) -> None:
        """The workflow's `_close`: clear a settled invoice in the ERP, then close a paid one."""
        candidates = self.model.numbers(lambda i: i.status in CLEARABLE or i.cleared_as)
        invoice = self.model.invoices[data.draw(st.sampled_from(candidates), label="invoice")]
        if invoice.cleared_as is not None:
            result = self._unchanged(lambda: self.erp.clear_in_erp(clearing(invoice.number)))
            assert result.already_posted
            return
        self._clear(invoice)
        if invoice.status == Status.PAID:
            self._close(invoice)

    @precondition(lambda self: self.model.numbers(lambda i: i.status not in SETTLED))
    @rule(data=st.data(), priority=st.sampled_from(["normal", "high"]))
    def open_collector_task(self, data: st.DataObject, priority: str) -> None:
        collectable = self.model.numbers(lambda i: i.status not in SETTLED)
        number = data.draw(st.sampled_from(collectable), label="invoice")
        request = CollectorTaskRequest(
            invoice_number=number,
            queue="collections",
            priority=priority,
            due_at=RECEIVED_AT + timedelta(days=3),
            idempotency_key=self._key(f"{number}:escalation"),
        )
        self.task_ids[request.idempotency_key] = self._ledger(
            lifecycle.open_collector_task, request
        )
        self.requests.append(request)
        # One open task per invoice: the new one supersedes the one open before.
        self.model.audit["collector_task_closed", number] += self.model.invoices[number].open_tasks
        self.model.invoices[number].open_tasks = 1
        self.model.audit["collector_task_opened", number] += 1

    @rule(
        number=st.sampled_from(NUMBERS), outcome=st.sampled_from(["resumed", "stopped", "promise"])
    )
    def close_collector_tasks(self, number: str, outcome: str) -> None:
        invoice = self.model.invoices[number]
        request = CollectorOutcome(invoice_number=number, outcome=outcome, actor="collector")
        closed = self._ledger(lifecycle.close_collector_tasks, request)
        assert closed == invoice.open_tasks
        self.model.audit["collector_task_closed", number] += closed
        invoice.open_tasks = 0

    def _clear(self, invoice: ExpectedInvoice) -> None:
        result = self.erp.clear_in_erp(clearing(invoice.number))
        assert not result.already_posted
        assert result.target == str(self.journal)
        invoice.cleared_as = invoice.status
        event(f"cleared in the ERP: {invoice.status}")

    def _close(self, invoice: ExpectedInvoice) -> None:
        request = StatusChange(invoice_number=invoice.number, status="closed", reason="cleared")
        answer = self._ledger(lifecycle.set_status, request)
        invoice.status = Status.CLOSED
        self.model.audit["status_changed", invoice.number] += 1
        self._answered(answer, invoice)

    @invariant()
    def books_agree_with_the_model(self) -> None:
        check_books(self._books(), self.model)


# --- running it on both databases --------------------------------------------------------

MACHINE_SETTINGS = settings(
    max_examples=35,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _empty_ledger(engine: sa.Engine) -> None:
    # TRUNCATE fires no row triggers, so it empties the append-only audit table as well.
    tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_ledgers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], AbstractContextManager[sa.Engine]]:
    """Hands each hypothesis example an empty ledger at the newest migration."""
    if request.param == "sqlite":
        template = tmp_path / "migrated.db"
        upgrade(f"sqlite:///{template}")

        @contextmanager
        def fresh_sqlite() -> Iterator[sa.Engine]:
            path = tmp_path / f"ledger-{uuid.uuid4().hex}.db"
            with (
                closing(sqlite3.connect(template)) as source,
                closing(sqlite3.connect(path)) as copy,
            ):
                source.backup(copy)
            engine = make_engine(f"sqlite:///{path}", durable=False)
            try:
                yield engine
            finally:
                engine.dispose()
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)

        return fresh_sqlite

    engine = make_engine(request.getfixturevalue("postgres_database_url"))
    request.addfinalizer(engine.dispose)

    @sa.event.listens_for(engine, "connect")
    def _no_commit_flush(dbapi_connection: Any, _record: Any) -> None:
        # A scratch ledger: waiting for each commit to reach the disk only slows the test.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")

    @contextmanager
    def fresh_postgres() -> Iterator[sa.Engine]:
        _empty_ledger(engine)
        yield engine

    return fresh_postgres


def test_money_invariants_hold_through_any_sequence_of_operations(
    fresh_ledgers: Callable[[], AbstractContextManager[sa.Engine]],
) -> None:
    class Machine(LedgerMachine):
        ledgers = staticmethod(fresh_ledgers)

    run_state_machine_as_test(Machine, settings=MACHINE_SETTINGS)


# --- regressions the machine found --------------------------------------------------------


def test_credit_note_beyond_the_balance_reaches_the_erp(engine: sa.Engine, tmp_path: Path) -> None:
    """A credit note larger than the balance leaves customer credit; the ERP must hear of it."""
    add_customer_invoices(engine, {"INV-USD-1": 2_000})
    with session_scope(engine) as session:
        request = AdjustmentApplication(
            invoice_number="INV-USD-1", kind="credit", amount_minor=-5_000, idempotency_key="cn-1"
        )
        assert adjustments.apply_adjustment(session, request).customer_credit_minor == 3_000
    erp_settings = Settings.scratch(tmp_path, task_queue="money-invariants")
    ErpActivities(engine, erp_settings).clear_in_erp(clearing("INV-USD-1"))
    (document,) = read_books(engine, erp_settings.effective_erp_journal).journal
    assert [(a["kind"], a["amount_minor"]) for a in document["adjustments"]] == [("credit", -2_000)]
    assert [(c["source"], c["amount_minor"], c["amount"]) for c in document["credits"]] == [
        ("credit_note", 3_000, "30.00")
    ]
