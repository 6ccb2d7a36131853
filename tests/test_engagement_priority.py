"""A reminder read or its pay link opened without a payment in time raises the invoice's
priority on the collector's worklist: the task's priority and the `DunwisePriority` search
attribute."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlmodel import select

from ledger.db import session_scope
from ledger.lifecycle import open_collector_task, raise_task_priority
from ledger.models import AuditEvent, CollectorTask
from ledger.requests import CollectorTaskRequest
from tests.invoice_harness import DUE, invoice_harness
from vocabulary import DeliveryKind
from workflows import search_attributes as sa
from workflows.invoice import InvoiceWorkflow
from workflows.models import DeliveryNote, PaymentReceived, PortalEvent, PortalEventKind

DUE_AT = datetime(2026, 3, 20, 17, 0, tzinfo=UTC)
OPENED = DeliveryNote(kind=DeliveryKind.OPENED, channel="email", detail="opened in Gmail")


def tasks(h) -> list[tuple[str, str, str]]:
    with session_scope(h.engine) as session:
        found = session.exec(select(CollectorTask).order_by(CollectorTask.id)).all()
        return [(t.queue, t.priority, t.status) for t in found]


async def test_a_read_reminder_without_payment_puts_the_invoice_high_on_the_worklist(
    tmp_path,
) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-E1", due_on=DUE)
        await h.advance(timedelta(hours=1))
        await handle.signal(InvoiceWorkflow.note_delivery, OPENED)
        await handle.signal(InvoiceWorkflow.note_delivery, OPENED)  # a second open: one wait
        await h.advance(timedelta(days=1))
        assert tasks(h) == []  # the policy's two days are not over
        await h.advance(timedelta(days=1, hours=1))
        state = await h.state(handle)
        raised = [e.detail for e in state.timeline if e.event == "priority_raised"]
        assert len(raised) == 1 and "not paid: high" in raised[0]
        assert tasks(h) == [("collections", "high", "open")]
        described = await handle.describe()
        assert described.typed_search_attributes.get(sa.PRIORITY) == "high"
        await h.assert_replays(handle)


async def test_a_payment_after_the_visit_keeps_the_priority_as_it_was(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("INV-E2", due_on=DUE, amount_minor=10_000)
        visit = PortalEvent(event=PortalEventKind.PORTAL_VISIT, detail="from the email link")
        await handle.signal(InvoiceWorkflow.note_portal_event, visit)
        part = PaymentReceived(amount_minor=4_000, currency="USD", method="card")
        await handle.execute_update(InvoiceWorkflow.record_payment, part, id="part-1")
        await h.advance(timedelta(days=3))
        state = await h.state(handle)
        assert "priority_raised" not in [e.event for e in state.timeline]
        assert tasks(h) == []
        assert (await handle.describe()).typed_search_attributes.get(sa.PRIORITY) is None


async def test_the_ledger_raises_an_open_task_rather_than_opening_another(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        await h.start("INV-E3", due_on=DUE)

        def request(priority: str, key: str) -> CollectorTaskRequest:
            return CollectorTaskRequest(
                invoice_number="INV-E3",
                queue="collections",
                priority=priority,
                due_at=DUE_AT,
                idempotency_key=key,
            )

        with session_scope(h.engine) as session:
            opened = open_collector_task(session, request("low", "INV-E3:first"))
        with session_scope(h.engine) as session:
            assert raise_task_priority(session, request("high", "INV-E3:raise")) == opened
        with session_scope(h.engine) as session:
            # Already as urgent: nothing changes, and a task is never lowered.
            assert raise_task_priority(session, request("high", "INV-E3:raise")) == opened
            assert raise_task_priority(session, request("normal", "INV-E3:other")) == opened
        assert tasks(h) == [("collections", "high", "open")]
        with session_scope(h.engine) as session:
            raised = session.exec(
                select(AuditEvent).where(AuditEvent.action == "collector_task_priority_raised")
            ).all()
        details = [json.loads(a.detail) for a in raised]
    assert [(d["from"], d["to"]) for d in details] == [("low", "high")]
