"""The ledger keeps each invoice's timeline: stored once per position, read back in order.

On SQLite and PostgreSQL; the activity runs in a real worker on the time-skipping server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.models import Closing, StatusChange, TimelineBatch, TimelineEntry
from invoices import invoice_state_from_ledger
from ledger.books import LedgerError, UnknownInvoice
from ledger.db import session_scope
from ledger.lifecycle import close_invoice
from ledger.models import Customer, Invoice, InvoiceStatus
from ledger.timeline import InvoiceEvent, TimelineConflict, read_timeline, record_timeline
from policies.loader import load_policies
from settings import Settings
from temporal_client import time_skipping_environment
from worker import activities_for
from workflows.models import Stage

POLICIES = Path(__file__).resolve().parent.parent / "policies"
BERLIN = ZoneInfo("Europe/Berlin")
ISSUED = datetime(2026, 2, 1, 0, 0, tzinfo=BERLIN)
# More than a 32-bit column holds: 50 million in cents.
LARGE_MINOR = 5_000_000_000


def add_invoice(
    engine: sa.Engine,
    number: str = "INV-1",
    *,
    status: InvoiceStatus = InvoiceStatus.OPEN,
    balance_minor: int = 120_000,
    timezone: str = "Europe/Berlin",
    policy_name: str = "standard",
    policy_version: int = 3,
) -> None:
    with session_scope(engine) as session:
        session.add(Customer(id=f"C-{number}", name="Acme", timezone=timezone))
        session.flush()
        session.add(
            Invoice(
                number=number,
                customer_id=f"C-{number}",
                currency="EUR",
                total_minor=120_000,
                balance_minor=balance_minor,
                issued_on=date(2026, 2, 1),
                due_on=date(2026, 3, 1),
                status=status,
                policy_name=policy_name,
                policy_version=policy_version,
            )
        )


def read_invoice_status(session: Session, number: str) -> str:
    return session.scalar(sa.select(Invoice.status).where(Invoice.number == number))


def story() -> list[TimelineEntry]:
    """Issued, a reminder, then an ERP that keeps refusing: four entries."""
    return [
        TimelineEntry(at=ISSUED, event="issued", detail="due 2026-03-01", amount_minor=120_000),
        TimelineEntry(
            at=datetime(2026, 2, 26, 9, 0, tzinfo=BERLIN),
            event="reminder",
            channel="email",
            template="courtesy",
        ),
        TimelineEntry(
            at=datetime(2026, 3, 2, 15, 0, tzinfo=ZoneInfo("America/New_York")),
            event="payment",
            detail="bank transfer",
            amount_minor=LARGE_MINOR,
        ),
        TimelineEntry(
            at=datetime(2026, 3, 3, 8, 0, tzinfo=UTC),
            event="erp_rejected",
            detail="422: unknown cost centre",
        ),
    ]


def record(engine: sa.Engine, entries: list[TimelineEntry], first: int = 0, number="INV-1"):
    batch = TimelineBatch(invoice_number=number, first_position=first, entries=entries)
    with session_scope(engine) as session:
        return record_timeline(session, batch)


def read(engine: sa.Engine, number: str = "INV-1") -> list[TimelineEntry]:
    with session_scope(engine) as session:
        return read_timeline(session, number)


def stored_rows(engine: sa.Engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(InvoiceEvent))


# --- recording and reading -----------------------------------------------------------------


def test_a_timeline_reads_back_in_order_with_aware_datetimes(engine: sa.Engine) -> None:
    add_invoice(engine)
    assert record(engine, story()) == 4

    timeline = read(engine)

    assert timeline == story()
    assert [entry.event for entry in timeline] == ["issued", "reminder", "payment", "erp_rejected"]
    assert all(entry.at.utcoffset() == timedelta(0) for entry in timeline)
    assert timeline[2].amount_minor == LARGE_MINOR
    assert timeline[1].channel == "email" and timeline[1].template == "courtesy"


def test_the_same_positions_again_are_stored_once_with_the_newest_count(
    engine: sa.Engine,
) -> None:
    add_invoice(engine)
    record(engine, story())
    assert record(engine, story()) == 4  # a retried flush
    assert stored_rows(engine) == 4

    rejected = story()[3]
    counted = rejected.model_copy(update={"count": 3, "last_at": rejected.at + timedelta(hours=12)})
    assert record(engine, [counted], first=3) == 4
    # An attempt of the earlier flush that arrives late does not undo the count.
    assert record(engine, [rejected], first=3) == 4

    timeline = read(engine)
    assert stored_rows(engine) == 4
    assert timeline[3].count == 3
    assert timeline[3].last_at == datetime(2026, 3, 3, 20, 0, tzinfo=UTC)
    assert timeline[:3] == story()[:3]


def test_entries_recorded_later_follow_the_earlier_ones(engine: sa.Engine) -> None:
    add_invoice(engine)
    assert record(engine, story()[:2]) == 2
    # The workflow sends again from its last entry, whose count may have grown meanwhile.
    assert record(engine, story()[1:], first=1) == 4
    closed = TimelineEntry(at=datetime(2026, 3, 4, 9, 0, tzinfo=UTC), event="closed")
    assert record(engine, [closed], first=4) == 5

    assert read(engine) == [*story(), closed]


def test_timelines_of_two_invoices_are_kept_apart(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    record(engine, story(), number="INV-1")
    record(engine, story()[:1], number="INV-2")

    assert read(engine, "INV-1") == story()
    assert read(engine, "INV-2") == story()[:1]


def test_a_retry_racing_its_first_attempt_stores_each_entry_once(engine: sa.Engine) -> None:
    add_invoice(engine)
    batch = TimelineBatch(invoice_number="INV-1", first_position=0, entries=story())
    results: list[object] = []

    def retry() -> None:
        try:
            with session_scope(engine) as session:
                results.append(record_timeline(session, batch))
        except Exception as error:  # reported below, in the test's thread
            results.append(error)

    first = Session(engine)
    try:
        assert record_timeline(first, batch) == 4
        thread = threading.Thread(target=retry)
        thread.start()
        thread.join(timeout=0.5)  # the retry now waits for the first attempt's lock
        first.commit()
        thread.join(timeout=30)
    finally:
        first.close()
    assert results == [4]
    assert stored_rows(engine) == 4


# --- refusals ------------------------------------------------------------------------------


def test_a_batch_for_an_unknown_invoice_is_refused_and_nothing_is_written(
    engine: sa.Engine,
) -> None:
    add_invoice(engine)
    with pytest.raises(UnknownInvoice, match="invoice 'INV-404' does not exist"):
        record(engine, story(), number="INV-404")
    assert stored_rows(engine) == 0
    with pytest.raises(UnknownInvoice, match="INV-404"):
        read(engine, "INV-404")


def test_a_batch_that_would_leave_a_gap_is_refused(engine: sa.Engine) -> None:
    add_invoice(engine)
    with pytest.raises(TimelineConflict, match="holds timeline no entries; .* position 1 "):
        record(engine, story()[1:], first=1)
    record(engine, story()[:2])
    with pytest.raises(TimelineConflict, match="holds timeline positions 0 to 1; .* position 3 "):
        record(engine, story()[3:], first=3)
    assert read(engine) == story()[:2]


def test_a_stored_entry_cannot_be_replaced_by_another_and_nothing_is_half_written(
    engine: sa.Engine,
) -> None:
    add_invoice(engine)
    record(engine, story()[:2])
    # Positions 1 and 2 again, but position 1 is now a different event.
    other = TimelineEntry(at=datetime(2026, 2, 27, 9, 0, tzinfo=BERLIN), event="dispute")
    batch = TimelineBatch(invoice_number="INV-1", first_position=1, entries=[other, story()[2]])
    # A caller that goes on and commits after the refusal commits nothing of the batch.
    conflict = "position 1 holds 'reminder' at 2026-02-26"
    with session_scope(engine) as session, pytest.raises(TimelineConflict, match=conflict):
        record_timeline(session, batch)
    assert read(engine) == story()[:2]


def closing(entries: list[TimelineEntry], first: int = 0) -> Closing:
    return Closing(
        status=StatusChange(invoice_number="INV-1", status=InvoiceStatus.CLOSED, reason="paid"),
        timeline=TimelineBatch(invoice_number="INV-1", first_position=first, entries=entries),
    )


def test_closing_a_paid_invoice_stores_its_timeline_in_the_same_transaction(
    engine: sa.Engine,
) -> None:
    add_invoice(engine, status=InvoiceStatus.PAID, balance_minor=0)
    closed_entry = TimelineEntry(at=datetime(2026, 3, 4, 8, 0, tzinfo=UTC), event="closed")
    with session_scope(engine) as session:
        closed = close_invoice(session, closing([*story(), closed_entry]))

    assert closed.balance.status == InvoiceStatus.CLOSED
    assert closed.timeline_refused is None
    assert [entry.event for entry in read(engine)][-2:] == ["erp_rejected", "closed"]


def test_a_refused_timeline_does_not_keep_a_paid_invoice_open(engine: sa.Engine) -> None:
    add_invoice(engine, status=InvoiceStatus.PAID, balance_minor=0)
    record(engine, story()[:2])  # another run's story
    other = TimelineEntry(at=datetime(2026, 2, 27, 9, 0, tzinfo=BERLIN), event="dispute")
    with session_scope(engine) as session:
        closed = close_invoice(session, closing([other], first=1))

    assert closed.balance.status == InvoiceStatus.CLOSED
    assert "position 1 holds 'reminder'" in (closed.timeline_refused or "")
    assert read(engine) == story()[:2]  # nothing of the refused batch


def test_a_retried_close_adds_only_the_entries_the_first_attempt_did_not_store(
    engine: sa.Engine,
) -> None:
    add_invoice(engine, status=InvoiceStatus.PAID, balance_minor=0)
    record(engine, story()[:2])  # an earlier flush of the same run
    closed_entry = TimelineEntry(at=datetime(2026, 3, 4, 8, 0, tzinfo=UTC), event="closed")
    for _attempt in range(2):
        with session_scope(engine) as session:
            closed = close_invoice(session, closing([*story(), closed_entry]))
        assert closed.timeline_refused is None

    assert read(engine) == [*story(), closed_entry]
    assert stored_rows(engine) == 5


def test_a_close_given_another_invoices_timeline_is_refused_and_changes_nothing(
    engine: sa.Engine,
) -> None:
    add_invoice(engine, "INV-1", status=InvoiceStatus.PAID, balance_minor=0)
    add_invoice(engine, "INV-2")
    mixed = closing(story()).model_copy(
        update={
            "timeline": TimelineBatch(invoice_number="INV-2", first_position=0, entries=story())
        }
    )
    with (
        session_scope(engine) as session,
        pytest.raises(LedgerError, match="closing invoice INV-1: the timeline given is of"),
    ):
        close_invoice(session, mixed)

    assert stored_rows(engine) == 0
    with session_scope(engine) as session:
        assert read_invoice_status(session, "INV-1") == InvoiceStatus.PAID


def test_an_invoice_with_money_due_cannot_be_closed_and_its_timeline_is_not_written(
    engine: sa.Engine,
) -> None:
    add_invoice(engine)  # open, 1,200.00 due
    with session_scope(engine) as session, pytest.raises(LedgerError, match="cannot become"):
        close_invoice(session, closing(story()))
    assert stored_rows(engine) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"at": datetime(2026, 3, 3, 8, 0)}, "position 2: at 2026-03-03T08:00:00 must be"),
        ({"last_at": datetime(2026, 3, 3, 9, 0)}, "position 2: last_at 2026-03-03T09:00:00"),
        ({"count": 0}, "position 2: count must be at least 1, got 0"),
        ({"event": " "}, "position 2: the event must be named"),
        ({"channel": "carrier-pigeon-post"}, "position 2: channel 'carrier-pigeon-post"),
    ],
)
def test_a_bad_entry_is_refused_with_its_position_and_nothing_is_written(
    engine: sa.Engine, change: dict, message: str
) -> None:
    add_invoice(engine)
    bad = story()[3].model_copy(update=change)
    with pytest.raises(LedgerError, match=message):
        record(engine, [*story()[:2], bad])
    assert stored_rows(engine) == 0


def test_a_negative_first_position_is_refused_before_the_ledger() -> None:
    with pytest.raises(ValueError, match="first_position"):
        TimelineBatch(invoice_number="INV-1", first_position=-1, entries=story())


# --- the activity, in a real worker --------------------------------------------------------


class FlushAnswer(BaseModel):
    held: int | None = None
    refused: str | None = None


@workflow.defn(sandboxed=False)
class FlushTimelineWorkflow:
    """Sends each batch through the record_timeline activity, as the invoice workflow does."""

    @workflow.run
    async def run(self, batches: list[TimelineBatch]) -> list[FlushAnswer]:
        answers = []
        for batch in batches:
            try:
                held = await workflow.execute_activity(
                    "record_timeline",
                    batch,
                    result_type=int,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=3),
                )
                answers.append(FlushAnswer(held=held))
            except ActivityError as err:
                cause = err.cause
                assert isinstance(cause, ApplicationError)
                answers.append(FlushAnswer(refused=f"{cause.type}: {cause.message}"))
        return answers


@pytest.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await time_skipping_environment()
    async with env:
        yield env


async def test_the_worker_records_a_timeline_through_the_activity(
    engine: sa.Engine, temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    add_invoice(engine)
    first = TimelineBatch(invoice_number="INV-1", first_position=0, entries=story())
    rejected = story()[3]
    counted = TimelineBatch(
        invoice_number="INV-1",
        first_position=3,
        entries=[rejected.model_copy(update={"count": 2, "last_at": rejected.at})],
    )
    unknown = TimelineBatch(invoice_number="INV-404", first_position=0, entries=story())
    queue = f"timeline-{uuid.uuid4()}"
    async with Worker(
        temporal_env.client,
        task_queue=queue,
        workflows=[FlushTimelineWorkflow],
        activities=activities_for(engine, Settings.scratch(tmp_path, task_queue=queue)),
        activity_executor=ThreadPoolExecutor(max_workers=2),
    ):
        answers = await temporal_env.client.execute_workflow(
            FlushTimelineWorkflow.run,
            [first, first, counted, unknown],
            id=f"flush-{uuid.uuid4()}",
            task_queue=queue,
            result_type=list[FlushAnswer],
        )

    assert answers == [
        FlushAnswer(held=4),
        FlushAnswer(held=4),
        FlushAnswer(held=4),
        FlushAnswer(refused="LedgerRejected: invoice 'INV-404' does not exist"),
    ]
    timeline = read(engine)
    assert [entry.event for entry in timeline] == ["issued", "reminder", "payment", "erp_rejected"]
    assert timeline[3].count == 2
    assert stored_rows(engine) == 4


# --- the invoice, told by the ledger -------------------------------------------------------


NOW = datetime(2026, 3, 10, 20, 0, tzinfo=UTC)  # 05:00 on 11 March in Tokyo, 16:00 in New York


def test_a_closed_invoice_is_told_by_the_ledger(engine: sa.Engine) -> None:
    add_invoice(engine, status=InvoiceStatus.CLOSED, balance_minor=0)
    closed = TimelineEntry(at=datetime(2026, 3, 4, 9, 0, tzinfo=UTC), event="closed")
    record(engine, [*story(), closed])

    state = invoice_state_from_ledger(engine, "INV-1", policies=load_policies(POLICIES), now=NOW)

    assert state is not None
    assert (state.number, state.customer_id, state.currency) == ("INV-1", "C-INV-1", "EUR")
    assert (state.status, state.stage, state.balance_minor) == ("closed", Stage.CLOSED, 0)
    assert (state.policy_name, state.policy_version) == ("standard", 3)
    # The standard policy reads the customer's calendar.
    assert state.timezone == "Europe/Berlin"
    assert state.days_past_due == 9
    assert state.next_step_at is None and state.promise is None
    assert state.timeline == [*story(), closed]


@pytest.mark.parametrize(
    ("policy_version", "zone", "days"),
    [(1, "America/New_York", 9), (2, "Asia/Tokyo", 10)],
    ids=["policy-known", "policy-version-gone"],
)
def test_the_calendar_zone_is_the_policys_when_the_policy_is_known(
    engine: sa.Engine, policy_version: int, zone: str, days: int
) -> None:
    add_invoice(
        engine,
        status=InvoiceStatus.WRITTEN_OFF,
        balance_minor=0,
        timezone="Asia/Tokyo",
        policy_name="enterprise",
        policy_version=policy_version,
    )

    state = invoice_state_from_ledger(engine, "INV-1", policies=load_policies(POLICIES), now=NOW)

    assert state is not None
    assert (state.status, state.stage) == ("written_off", Stage.CLOSED)
    assert (state.timezone, state.days_past_due) == (zone, days)
    assert state.timeline == []


def test_an_open_invoice_without_its_workflow_is_scheduled_in_the_customers_zone(
    engine: sa.Engine,
) -> None:
    add_invoice(engine, timezone="Asia/Tokyo")
    state = invoice_state_from_ledger(engine, "INV-1", now=NOW)
    assert state is not None
    assert (state.status, state.stage, state.balance_minor) == ("open", Stage.SCHEDULED, 120_000)
    assert (state.timezone, state.days_past_due) == ("Asia/Tokyo", 10)


def test_an_invoice_the_ledger_does_not_have_is_none(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    assert invoice_state_from_ledger(engine, "INV-404", now=NOW) is None
