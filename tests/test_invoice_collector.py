"""A collector's notes, calls and escalations by hand, as updates to the invoice workflow."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlmodel import select
from temporalio.client import WorkflowUpdateFailedError

from ledger.db import session_scope
from ledger.models import AuditEvent, CollectorTask
from ledger.notes import InvoiceNote
from tests.invoice_harness import DUE, invoice_harness, local, reminder_templates
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    ManualEscalation,
    Note,
    NoteKind,
    OneOffMessage,
    PaymentReceived,
    PromiseToPay,
    Resolution,
    Stage,
)


async def test_escalated_by_hand_holds_reminders_until_a_collector_resumes(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-C1", due_on=DUE)
        by_hand = ManualEscalation(note="customer asked for a call", actor="user:ann@example.com")
        state = await handle.execute_update(InvoiceWorkflow.escalate, by_hand, id="esc-1")
        assert state.stage == Stage.ESCALATED
        again = await handle.execute_update(InvoiceWorkflow.escalate, by_hand, id="esc-1")
        assert [e.event for e in again.timeline].count("escalation") == 1
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(InvoiceWorkflow.escalate, by_hand, id="esc-2")
        assert "with a collector" in str(refused.value.cause)
        with session_scope(h.engine) as session:
            tasks = session.exec(select(CollectorTask)).all()
        assert [(t.queue, t.priority, t.status) for t in tasks] == [("collections", "high", "open")]

        await h.advance_to(local(date(2026, 3, 17)))
        assert reminder_templates(await h.state(handle)) == []  # courtesy and due-today held

        resume = Resolution(action="resume", note="call done", actor="user:ann@example.com")
        await handle.execute_update(InvoiceWorkflow.record_outcome, resume, id="out-1")
        await h.advance_to(local(date(2026, 3, 18), hour=12))
        assert reminder_templates(await h.state(handle)) == [
            "due_today",
            "due_today",
        ]  # the latest only
        with session_scope(h.engine) as session:
            assert session.exec(select(CollectorTask)).one().status == "closed"
        await h.assert_replays(handle)


async def test_notes_and_calls_are_kept_once_with_their_audit_events(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-C2", due_on=DUE)
        call = Note(text="spoke to AP, cheque next week", kind=NoteKind.CALL, actor="user:bo")
        note = Note(text="prefers email", actor="user:bo")
        await handle.execute_update(InvoiceWorkflow.add_note, call, id="n-1")
        await handle.execute_update(InvoiceWorkflow.add_note, call, id="n-1")
        state = await handle.execute_update(InvoiceWorkflow.add_note, note, id="n-2")
        assert [(e.event, e.detail) for e in state.timeline if e.event in ("call", "note")] == [
            ("call", "spoke to AP, cheque next week"),
            ("note", "prefers email"),
        ]
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                InvoiceWorkflow.add_note, Note(text="   ", actor="user:bo"), id="n-3"
            )
        assert "needs some text" in str(refused.value.cause)
        with session_scope(h.engine) as session:
            notes = session.exec(select(InvoiceNote).order_by(InvoiceNote.id)).all()
            actions = session.exec(
                select(AuditEvent.action, AuditEvent.actor).where(
                    AuditEvent.action.like("%_logged")
                )
            ).all()
        assert [(n.kind, n.actor) for n in notes] == [("call", "user:bo"), ("note", "user:bo")]
        assert sorted(actions) == [("call_logged", "user:bo"), ("note_logged", "user:bo")]


async def test_a_task_past_its_sla_moves_to_the_supervisor_queue(tmp_path, ledger_url) -> None:
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-C3", due_on=DUE)  # standard: +30d escalate, 2d SLA
        await h.advance_to(local(date(2026, 4, 15), 10))
        with session_scope(h.engine) as session:
            task = session.exec(select(CollectorTask)).one()
            assert (task.queue, task.breached_at) == ("collections", None)
        await h.advance_to(local(date(2026, 4, 18)))
        with session_scope(h.engine) as session:
            task = session.exec(select(CollectorTask)).one()
            breach = session.exec(
                select(AuditEvent).where(AuditEvent.action == "collector_task_breached")
            ).all()
        assert (task.queue, task.escalated_from_queue, task.status) == (
            "collections-supervisor",
            "collections",
            "open",
        )
        assert task.breached_at is not None and len(breach) == 1
        await h.assert_replays(handle)


async def test_a_broken_promise_reopens_a_collector_task(tmp_path, ledger_url) -> None:
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-C4", due_on=DUE)
        promise = PromiseToPay(pay_by=date(2026, 3, 20), amount_minor=50_000, actor="user:bo")
        await handle.execute_update(InvoiceWorkflow.promise_to_pay, promise, id="p-1")
        paid = PaymentReceived(amount_minor=10_000, currency="USD", method="card")
        await handle.execute_update(InvoiceWorkflow.record_payment, paid, id="pay-1")
        await h.advance_to(local(date(2026, 3, 24)))  # the date plus two days' grace: broken
        state = await h.state(handle)
        assert "promise_broken" in [e.event for e in state.timeline]
        assert "task_reopened" in [e.event for e in state.timeline]
        with session_scope(h.engine) as session:
            tasks = session.exec(select(CollectorTask)).all()
        assert [(t.queue, t.priority, t.status) for t in tasks] == [("collections", "high", "open")]
        await h.assert_replays(handle)


async def test_a_kept_promise_opens_no_task(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-C5", due_on=DUE)
        promise = PromiseToPay(pay_by=date(2026, 3, 20), amount_minor=40_000)
        await handle.execute_update(InvoiceWorkflow.promise_to_pay, promise, id="p-1")
        paid = PaymentReceived(amount_minor=40_000, currency="USD", method="card")
        await handle.execute_update(InvoiceWorkflow.record_payment, paid, id="pay-1")
        await h.advance_to(local(date(2026, 3, 24)))
        assert "promise_kept" in [e.event for e in (await h.state(handle)).timeline]
        with session_scope(h.engine) as session:
            assert session.exec(select(CollectorTask)).all() == []


async def test_a_task_escalated_by_hand_moves_past_its_sla(tmp_path, ledger_url) -> None:
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-C6", due_on=DUE)
        by_hand = ManualEscalation(queue="key-accounts", sla=timedelta(hours=12), actor="user:ann")
        await handle.execute_update(InvoiceWorkflow.escalate, by_hand, id="esc-1")
        await h.advance(timedelta(hours=11))
        with session_scope(h.engine) as session:
            task = session.exec(select(CollectorTask)).one()
            assert (task.queue, task.breached_at) == ("key-accounts", None)
        await h.advance(timedelta(hours=2))
        with session_scope(h.engine) as session:
            task = session.exec(select(CollectorTask)).one()
        assert (task.queue, task.escalated_from_queue, task.status) == (
            "key-accounts-supervisor",
            "key-accounts",
            "open",
        )
        state = await h.state(handle)
        assert state.stage == Stage.ESCALATED  # still with a collector, now a supervisor
        assert "escalation_sla_breached" in [e.event for e in state.timeline]
        resume = Resolution(action="resume", actor="user:ann")
        await handle.execute_update(InvoiceWorkflow.record_outcome, resume, id="out-1")
        with session_scope(h.engine) as session:
            assert session.exec(select(CollectorTask)).one().status == "closed"
        await h.assert_replays(handle)


async def test_a_task_worked_within_its_sla_does_not_move(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-C7", due_on=DUE)
        by_hand = ManualEscalation(sla=timedelta(days=1), actor="user:ann")
        await handle.execute_update(InvoiceWorkflow.escalate, by_hand, id="esc-1")
        await h.advance(timedelta(hours=3))
        stop = Resolution(action="stop", note="lawyer", actor="user:ann")
        await handle.execute_update(InvoiceWorkflow.record_outcome, stop, id="out-1")
        await h.advance(timedelta(days=3))
        with session_scope(h.engine) as session:
            task = session.exec(select(CollectorTask)).one()
        assert (task.queue, task.breached_at, task.status) == ("collections", None, "closed")
        events = [e.event for e in (await h.state(handle)).timeline]
        assert "escalation_sla_breached" not in events
        # Escalated again by hand: a new SLA, watched again.
        again = ManualEscalation(sla=timedelta(hours=6), actor="user:ann")
        await handle.execute_update(InvoiceWorkflow.escalate, again, id="esc-2")
        await h.advance(timedelta(hours=7))
        with session_scope(h.engine) as session:
            queues = session.exec(select(CollectorTask.queue).order_by(CollectorTask.id)).all()
        assert queues == ["collections", "collections-supervisor"]
        await h.assert_replays(handle)


async def test_a_one_off_message_goes_out_at_once_even_while_dunning_waits(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-C8", due_on=DUE)
        promise = PromiseToPay(pay_by=date(2026, 3, 30), actor="user:bo")
        await handle.execute_update(InvoiceWorkflow.promise_to_pay, promise, id="p-1")
        message = OneOffMessage(template="overdue_friendly", channels=["email", "sms"], actor="bo")
        state = await handle.execute_update(InvoiceWorkflow.send_message, message, id="m-1")
        again = await handle.execute_update(InvoiceWorkflow.send_message, message, id="m-1")
        assert state.stage == Stage.PAUSED  # the promise still holds the reminders
        sent = [(e.event, e.channel, e.template) for e in again.timeline if "message" in e.event]
        assert sent == [
            ("message", "email", "overdue_friendly"),
            ("message", "sms", "overdue_friendly"),
        ]
        rows = h.messages("INV-C8")
        assert [(m.template, m.channel, m.status) for m in rows] == [
            ("overdue_friendly", "email", "sent"),
            ("overdue_friendly", "sms", "sent"),
        ]
        missing = OneOffMessage(template="no_such_template", actor="bo")
        state = await handle.execute_update(InvoiceWorkflow.send_message, missing, id="m-2")
        failed = [e for e in state.timeline if e.event == "message_failed"]
        assert len(failed) == 1 and "no_such_template" in failed[0].detail
        await h.assert_replays(handle)
