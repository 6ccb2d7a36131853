"""How the lifecycle benchmark drives a real invoice, and what it checks afterwards.

Each invoice runs the way production does: rows into the ledger, workflow started with the
shipped standard policy, its first reminder (the courtesy email) sent, a full payment
through the record_payment update, then ERP clearing, the receipt email and close. The dev
server runs on the wall clock and reminder steps are days apart, so each invoice's clock is
set (through the input's clock offset) to just before its first reminder.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from baseline_workflow import PAY_AFTER, TIMER, Shape
from sqlmodel import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from invoices import invoice_input, start_invoice_workflow
from ledger.db import session_scope
from ledger.models import Customer, Invoice, InvoiceStatus
from policies.schedule import build_schedule
from policies.schema import Policy
from settings import Settings
from workflows.invoice import InvoiceWorkflow
from workflows.models import PaymentReceived

STANDARD_POLICY = Path(__file__).resolve().parent.parent / "policies" / "standard.yaml"
AMOUNT_MINOR = 125_000


@dataclass
class Dunwise:
    client: Client
    settings: Settings
    engine: sa.Engine
    policy: Policy
    _first_sends: dict[tuple[date, date, str], datetime] = field(default_factory=dict)

    async def invoice(self, number: str) -> WorkflowHandle:
        """Import, start, pay in full, and wait until the invoice is closed."""
        invoice, timezone = await asyncio.to_thread(self._import, number)
        offset = datetime.now(UTC) - (self._first_send_at(invoice, timezone) - TIMER)
        handle = await start_invoice_workflow(
            self.client,
            self.settings,
            invoice_input(
                invoice, timezone, self.policy, clock_offset=offset, planned_at=datetime.now(UTC)
            ),
        )
        await asyncio.sleep(PAY_AFTER.total_seconds())
        payment = PaymentReceived(
            amount_minor=AMOUNT_MINOR, currency="USD", method="card", reference=f"ch_{number}"
        )
        await handle.execute_update(InvoiceWorkflow.record_payment, payment)
        state = await handle.result()
        if state.status != InvoiceStatus.CLOSED:
            raise RuntimeError(f"invoice {number} ended {state.status}, not closed")
        return handle

    def _first_send_at(self, invoice: Invoice, timezone: str) -> datetime:
        """When the invoice's first reminder falls due: the same for every invoice of a day,
        so planned once (the driver's own bookkeeping; the starter plans each run)."""
        day = (invoice.issued_on, invoice.due_on, timezone)
        if day not in self._first_sends:
            schedule = build_schedule(
                self.policy,
                issued_on=invoice.issued_on,
                due_on=invoice.due_on,
                customer_timezone=timezone,
            )
            self._first_sends[day] = schedule[0].send_at
        return self._first_sends[day]

    def _import(self, number: str) -> tuple[Invoice, str]:
        today = date.today()
        customer = Customer(
            id=f"cust-{number}",
            name=f"Customer {number}",
            email=f"ap-{number.lower()}@customer.example",
            phone="+12125550100",
            timezone="America/New_York",
            segment="smb",
        )
        invoice = Invoice(
            number=number,
            customer_id=customer.id,
            currency="USD",
            total_minor=AMOUNT_MINOR,
            balance_minor=AMOUNT_MINOR,
            issued_on=today,
            due_on=today + timedelta(days=30),
            policy_name=self.policy.name,
            policy_version=self.policy.version,
        )
        with session_scope(self.engine) as session:
            session.add(customer)
            session.add(invoice)
        return invoice, customer.timezone


async def history_shape(handle: WorkflowHandle) -> tuple[Shape, list[str], int]:
    """Timers and activities in one invoice's history, the activity names, and its length."""
    history = await handle.fetch_history()
    kinds = Counter(event.event_type for event in history.events)
    names = [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    shape = Shape(
        timers_fired=kinds[EventType.EVENT_TYPE_TIMER_FIRED],
        timers_canceled=kinds[EventType.EVENT_TYPE_TIMER_CANCELED],
        activities=kinds[EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED],
    )
    return shape, names, len(history.events)


def ledger_check(engine: sa.Engine, settings: Settings) -> dict[str, int]:
    """What the run left behind: every invoice closed, cleared once and receipted once."""
    with session_scope(engine) as session:
        closed = session.exec(
            select(func.count()).select_from(Invoice).where(Invoice.status == InvoiceStatus.CLOSED)
        ).one()
        total = session.exec(select(func.count()).select_from(Invoice)).one()
    journal = settings.effective_erp_journal
    emails = settings.effective_outbox_dir / "email"
    return {
        "invoices": total,
        "closed": closed,
        "erp_journal_lines": len(journal.read_text().splitlines()) if journal.exists() else 0,
        "receipt_emails": len(list(emails.glob("*receipt*"))) if emails.exists() else 0,
        "reminder_emails": len(list(emails.glob("*step*"))) if emails.exists() else 0,
    }
