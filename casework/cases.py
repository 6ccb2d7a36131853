"""One customer's case for a collector: contacts, every open invoice with its stage and next
step, open tasks, and one timeline of everything that happened on any of its invoices.

Invariants:
- Read-only. A running invoice is told by its workflow; one whose workflow has ended (or is
  not reachable) by the ledger, so a case always opens.
- The timeline is every invoice's timeline merged, newest first, each entry naming its invoice.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pydantic import BaseModel, Field
from sqlmodel import select
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from invoices import invoice_state_from_ledger, workflow_id
from ledger.books import AWAITING_PAYMENT
from ledger.db import session_scope
from ledger.models import Customer, Invoice, InvoiceStatus, utcnow
from ledger.plan_views import PlanView, customer_plans
from payments.services import PaymentServices
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceState

# Invoices of a case whose states are asked of Temporal at once.
CONCURRENT_QUERIES = 16
# Settled invoices shown beside the open ones, newest first: their stories still matter.
RECENTLY_SETTLED = 10


class CaseEntry(BaseModel):
    at: datetime
    invoice: str
    event: str
    detail: str = ""
    channel: str | None = None
    amount_minor: int | None = None
    currency: str
    count: int = 1


class Case(BaseModel):
    customer: Customer
    invoices: list[InvoiceState]  # open first (by due date), then recently settled
    timeline: list[CaseEntry]  # newest first
    plans: dict[str, PlanView] = Field(
        default_factory=dict, description="active payment plans, by invoice number"
    )


class UnknownCase(LookupError):
    pass


async def load_case(services: PaymentServices, customer_id: str) -> Case:
    with session_scope(services.engine) as session:
        customer = session.get(Customer, customer_id)
        if customer is None:
            raise UnknownCase(f"no customer {customer_id}")
        open_numbers = session.exec(
            select(Invoice.number)
            .where(Invoice.customer_id == customer_id)
            .where(Invoice.status.in_([*AWAITING_PAYMENT, InvoiceStatus.PAID]))  # type: ignore[attr-defined]
            .order_by(Invoice.due_on, Invoice.number)
        ).all()
        settled = session.exec(
            select(Invoice.number)
            .where(Invoice.customer_id == customer_id)
            .where(Invoice.number.not_in(open_numbers))  # type: ignore[attr-defined]
            .order_by(Invoice.updated_at.desc())  # type: ignore[attr-defined]
            .limit(RECENTLY_SETTLED)
        ).all()
        plans = customer_plans(session, customer_id, utcnow().date())
    client = await services.temporal()
    gate = asyncio.Semaphore(CONCURRENT_QUERIES)

    async def state_of(number: str) -> InvoiceState | None:
        async with gate:
            handle = client.get_workflow_handle_for(InvoiceWorkflow.run, workflow_id(number))
            try:
                return await handle.query(InvoiceWorkflow.state)
            except (RPCError, WorkflowQueryFailedError):
                return await asyncio.to_thread(invoice_state_from_ledger, services.engine, number)

    states = [
        state
        for state in await asyncio.gather(*(state_of(n) for n in [*open_numbers, *settled]))
        if state is not None
    ]
    timeline = [
        CaseEntry(
            at=entry.last_at or entry.at,
            invoice=state.number,
            event=entry.event,
            detail=entry.detail,
            channel=entry.channel,
            amount_minor=entry.amount_minor,
            currency=state.currency,
            count=entry.count,
        )
        for state in states
        for entry in state.timeline
    ]
    timeline.sort(key=lambda entry: entry.at, reverse=True)
    return Case(customer=customer, invoices=states, timeline=timeline, plans=plans)
