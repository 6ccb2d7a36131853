"""The customer's coordinator on the time-skipping server: it gathers a customer's reminders
into one message and answers each invoice, keeps the daily contact limit per channel, waits
for an expected invoice only its window, and ends when the customer has been quiet for a day."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from ledger.db import session_scope
from ledger.models import Invoice
from tests.invoice_harness import DUE, invoice_harness, local
from workflows.invoice_reminders import COORDINATOR_ANSWER_TIMEOUT


def subjects(h) -> list[str]:
    return sorted(
        line.removeprefix("Subject: ")
        for path in (h.settings.effective_outbox_dir / "email").glob("*.eml")
        for line in path.read_text().splitlines()
        if line.startswith("Subject: ")
    )


async def test_one_email_a_day_per_customer_whatever_the_invoices(tmp_path) -> None:
    async with invoice_harness(tmp_path, reminders_per_channel_per_day=1) as h:
        # On Friday 13 March INV-51's courtesy note and INV-52's due-today reminder both fall
        # due: the customer gets one email that day, and the SMS of INV-52.
        later = await h.start("INV-51", due_on=DUE, customer_id="cust-limit")
        today = await h.start("INV-52", due_on=date(2026, 3, 13), customer_id="cust-limit")
        await h.advance_to(local(date(2026, 3, 12), 12))
        assert subjects(h) == ["Invoice INV-52 from Example Co is due on March 13, 2026"]
        await h.advance_to(local(date(2026, 3, 13), 12))
        assert len(subjects(h)) == 2
        events = [
            (e.event, e.channel, e.detail)
            for handle in (later, today)
            for e in (await h.state(handle)).timeline
            if e.event.startswith("reminder")
        ]
        limited = [e for e in events if e[0] == "reminder_suppressed"]
        assert len(limited) == 1 and limited[0][1] == "email"
        assert "contact limit" in limited[0][2]
        assert ("reminder", "sms", "") in events
        # The next day is a new day: Monday's due-today email for INV-51 goes out.
        await h.advance_to(local(date(2026, 3, 16), 12))
        assert len(subjects(h)) == 3
        await h.assert_replays(later)


async def test_an_expected_invoice_that_never_comes_is_waited_for_only_the_window(
    tmp_path,
) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-53", due_on=DUE, customer_id="cust-wait")
        # INV-54 is open and due the same day, but has no workflow to send its reminder.
        with session_scope(h.engine) as session:
            first = session.exec(select(Invoice)).one()
            twin = Invoice(**{**first.model_dump(exclude={"id", "status"}), "number": "INV-54"})
            session.add(twin)
        await h.advance_to(local(date(2026, 3, 13), 12))
        assert subjects(h) == ["Invoice INV-53 from Example Co is due on March 16, 2026"]
        reminders = [e for e in (await h.state(handle)).timeline if e.event == "reminder"]
        assert [(e.channel, e.detail) for e in reminders] == [("email", "")]


async def test_the_coordinator_ends_after_a_quiet_day(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        await h.start("INV-55", due_on=DUE, customer_id="cust-quiet")
        await h.start("INV-56", due_on=DUE, customer_id="cust-quiet")
        await h.advance_to(local(date(2026, 3, 13), 12))
        coordinator = h.env.client.get_workflow_handle("customer-cust-quiet")
        assert (await coordinator.describe()).status == WorkflowExecutionStatus.RUNNING
        await h.advance(timedelta(days=1, hours=1))
        assert (await coordinator.describe()).status == WorkflowExecutionStatus.COMPLETED
        # The next reminder starts a new run.
        await h.advance_to(local(date(2026, 3, 16), 12))
        assert (await coordinator.describe()).status == WorkflowExecutionStatus.RUNNING
        assert subjects(h) == [
            "Invoices INV-55 and INV-56 from Example Co are due on March 16, 2026",
            "Invoices INV-55 and INV-56 from Example Co are due today",
        ]
        await h.assert_replays(coordinator)


async def test_without_a_contact_limit_every_reminder_goes_out(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        await h.start("INV-57", due_on=DUE, customer_id="cust-free")
        await h.start("INV-58", due_on=date(2026, 3, 13), customer_id="cust-free")
        await h.advance_to(local(date(2026, 3, 13), 12))
        assert subjects(h) == [
            "Invoice INV-57 from Example Co is due on March 16, 2026",
            "Invoice INV-58 from Example Co is due on March 13, 2026",
            "Invoice INV-58 from Example Co is due today",
        ]
        # Due on different days, no reminder had another to wait for, nor a limit to keep:
        # each went out from its invoice's own activity, and no coordinator ever ran.
        with pytest.raises(RPCError) as missing:
            await h.env.client.get_workflow_handle("customer-cust-free").describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND


async def test_each_invoice_hears_of_its_gathered_reminder(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        first = await h.start("INV-59", due_on=DUE, customer_id="cust-answer")
        second = await h.start("INV-60", due_on=DUE, customer_id="cust-answer")
        # Friday's courtesy notes go out as one email; by noon the hour each invoice would
        # have waited for the coordinator's answer is over as well.
        await h.advance_to(local(date(2026, 3, 13), 12))
        assert subjects(h) == [
            "Invoices INV-59 and INV-60 from Example Co are due on March 16, 2026"
        ]
        for handle in (first, second):
            reminders = [e for e in (await h.state(handle)).timeline if e.event == "reminder"]
            assert [(e.channel, e.template) for e in reminders] == [("email", "courtesy")]
        # The invoice stopped waiting once answered, and let the wait's timer run out.
        events = (await first.fetch_history()).events
        waits = {
            e.event_id
            for e in events
            if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
            and e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
            == COORDINATOR_ANSWER_TIMEOUT
        }
        fired = {
            e.timer_fired_event_attributes.started_event_id
            for e in events
            if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED
        }
        assert waits and waits <= fired
        assert all(e.event_type != EventType.EVENT_TYPE_TIMER_CANCELED for e in events)
        await h.assert_replays(first)
