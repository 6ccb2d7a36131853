"""Starting and addressing invoice workflows from outside: the CLI, imports, simulations."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import select
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from activities.planning import ScheduleRequest, planned_steps
from ledger.currencies import currency_exponent
from ledger.db import session_scope
from ledger.import_rows import InvoiceRow
from ledger.models import Customer, Invoice, InvoiceStatus
from ledger.timeline import read_timeline
from policies.calendars import load_zone
from policies.loader import SHIPPED_POLICIES, load_policies, select_policy
from policies.schedule import calendar_zone, days_past_due
from policies.schema import Policy
from settings import Settings
from workflows import search_attributes as sa
from workflows.invoice import InvoiceWorkflow
from workflows.invoice_core import STAGE_FOR_LEDGER_STATUS
from workflows.models import InvoiceInput, InvoiceState, Stage

# Once its workflow is gone, an invoice's stage is the one its ledger status implies.
STAGE_OF_STATUS: dict[InvoiceStatus, Stage] = {
    InvoiceStatus.OPEN: Stage.SCHEDULED,
    InvoiceStatus.DISPUTED: Stage.DISPUTED,
    InvoiceStatus.PAUSED: Stage.PAUSED,
    InvoiceStatus.PAID: Stage.CLEARING,
    InvoiceStatus.VOID: Stage.CLOSED,
    InvoiceStatus.WRITTEN_OFF: Stage.CLOSED,
    InvoiceStatus.CLOSED: Stage.CLOSED,
}


def workflow_id(invoice_number: str) -> str:
    return f"invoice-{invoice_number}"


def choose_policy(policies: dict[str, Policy], row: InvoiceRow, default_policy: str) -> Policy:
    """The policy for an imported row; LookupError, with the reason, if there is none.

    The policy the row names; else, with a segment, the one whose applies_to fits its segment
    and amount; else `default_policy` (the DUNWISE_DEFAULT_POLICY setting), if the amount
    reaches that policy's min_balance.
    """
    if row.policy:
        if row.policy not in policies:
            raise LookupError(
                f"unknown policy {row.policy!r}; known: {', '.join(sorted(policies))}"
            )
        return policies[row.policy]
    if not row.segment:
        return _default_policy(policies, row, default_policy)
    policy = select_policy(policies, row.segment, row.amount_minor, currency_exponent(row.currency))
    if policy is None:
        raise LookupError(f"no policy applies to segment {row.segment} and amount {row.amount}")
    return policy


def _default_policy(policies: dict[str, Policy], row: InvoiceRow, name: str) -> Policy:
    policy = policies.get(name)
    if policy is None:
        raise LookupError(
            f"no policy or segment given, and the default policy {name!r} "
            f"(DUNWISE_DEFAULT_POLICY) is not among the policies: {', '.join(sorted(policies))}"
        )
    minimum = policy.applies_to.min_balance
    if row.amount < minimum:
        raise LookupError(
            f"amount {row.amount} {row.currency} is below the minimum balance {minimum} of "
            f"the default policy {name!r}; give the row a policy or a segment"
        )
    return policy


def invoice_input(
    invoice: Invoice,
    customer_timezone: str,
    policy: Policy,
    *,
    clock_offset: timedelta = timedelta(0),
    planned_at: datetime | None = None,
) -> InvoiceInput:
    """The workflow's input; given `planned_at`, carrying its schedule (`with_schedule`)."""
    start = InvoiceInput(
        number=invoice.number,
        customer_id=invoice.customer_id,
        customer_timezone=customer_timezone,
        currency=invoice.currency,
        currency_exponent=currency_exponent(invoice.currency),
        balance_minor=invoice.balance_minor,
        issued_on=invoice.issued_on,
        due_on=invoice.due_on,
        policy=policy,
        status=str(invoice.status),
        clock_offset=clock_offset,
    )
    return start if planned_at is None else with_schedule(start, planned_at)


def with_schedule(start: InvoiceInput, planned_at: datetime) -> InvoiceInput:
    """`start` carrying the steps still to run, planned with `planned_at`, the Temporal
    server's clock as the run starts: the run follows them instead of planning them with a
    local activity. A starter that does not know the server's clock (a time-skipping
    server's runs ahead of the wall clock) leaves the planning to the run."""
    request = ScheduleRequest(
        policy=start.policy,
        issued_on=start.issued_on,
        due_on=start.due_on,
        customer_timezone=start.customer_timezone,
        not_before=planned_at - start.clock_offset,
    )
    return start.model_copy(update={"schedule": planned_steps(request)})


def due_at(invoice: InvoiceInput) -> datetime:
    """The start of the due day where the invoice's calendar is."""
    zone = calendar_zone(invoice.policy.calendar, invoice.customer_timezone)
    return datetime.combine(invoice.due_on, time(0), zone)


def start_search_attributes(
    invoice: InvoiceInput, now: datetime | None = None
) -> TypedSearchAttributes:
    """The invoice's search attributes as its workflow will first publish them, so that in
    the common case its first upsert has nothing to change. `now` is the wall clock (the
    workflow's own clock may differ by a moment; it corrects what it must)."""
    now = (now or datetime.now(UTC)) - invoice.clock_offset
    zone = calendar_zone(invoice.policy.calendar, invoice.customer_timezone)
    stage = STAGE_FOR_LEDGER_STATUS.get(invoice.status, Stage.SCHEDULED)
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.STATUS, invoice.status),
            SearchAttributePair(sa.STAGE, stage.value),
            SearchAttributePair(sa.CUSTOMER, invoice.customer_id),
            SearchAttributePair(sa.CURRENCY, invoice.currency),
            SearchAttributePair(sa.AMOUNT_DUE, invoice.balance_minor),
            SearchAttributePair(sa.DAYS_PAST_DUE, days_past_due(invoice.due_on, now, zone)),
            SearchAttributePair(sa.DUE_ON, due_at(invoice)),
        ]
    )


async def start_invoice_workflow(
    client: Client, settings: Settings, invoice: InvoiceInput
) -> WorkflowHandle:
    """Start the invoice's workflow; starting one that already runs returns the running one."""
    return await client.start_workflow(
        InvoiceWorkflow.run,
        invoice,
        id=workflow_id(invoice.number),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=start_search_attributes(invoice),
    )


async def send_request(
    client: Client,
    number: str,
    update: Any,
    message: Any,
    *,
    request_id: str,
    answer_within: float,
) -> InvoiceState:
    """Ask the invoice's workflow for a change, under the caller's request id.

    The same request id twice is one change. Raises TimeoutError when the workflow accepted
    the request but gave no answer in time (it keeps it, and records it once), and Temporal's
    own errors for a refusal (WorkflowUpdateFailedError) or no such workflow (RPCError).
    """
    handle = client.get_workflow_handle_for(InvoiceWorkflow.run, workflow_id(number))
    accepted = await handle.start_update(
        update, message, id=request_id, wait_for_stage=WorkflowUpdateStage.ACCEPTED
    )
    return await asyncio.wait_for(accepted.result(), timeout=answer_within)


def invoice_state_from_ledger(
    engine: Engine,
    number: str,
    *,
    policies: Mapping[str, Policy] | None = None,
    now: datetime | None = None,
) -> InvoiceState | None:
    """The invoice as the ledger tells it, for when Temporal no longer keeps its workflow.

    None when the ledger has no such invoice. The calendar zone is that of the invoice's
    policy when `policies` holds it at the invoice's version, else the customer's zone. What
    only the workflow knew (the next step, a pause, a promise) is left empty.
    """
    now = now or datetime.now(UTC)
    with session_scope(engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == number)).first()
        if invoice is None:
            return None
        customer_timezone = session.exec(
            select(Customer.timezone).where(Customer.id == invoice.customer_id)
        ).one()
        timeline = read_timeline(session, number)
    policy = (policies or {}).get(invoice.policy_name)
    if policy is not None and policy.version == invoice.policy_version:
        zone = calendar_zone(policy.calendar, customer_timezone)
    else:
        zone = load_zone(customer_timezone)
    status = InvoiceStatus(invoice.status)
    return InvoiceState(
        number=invoice.number,
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        balance_minor=invoice.balance_minor,
        status=str(status),
        stage=STAGE_OF_STATUS[status],
        policy_name=invoice.policy_name,
        policy_version=invoice.policy_version,
        days_past_due=days_past_due(invoice.due_on, now, zone),
        timezone=zone.key,
        timeline=timeline,
    )


async def restart_from_ledger(
    client: Client, settings: Settings, engine: Engine, number: str
) -> WorkflowHandle:
    """A new run for an invoice whose workflow has ended, from the ledger's status and balance
    (money came back after it closed, say); it continues the story the ledger kept."""
    folder = settings.policy_dir or SHIPPED_POLICIES
    with session_scope(engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
        customer = session.get(Customer, invoice.customer_id)
        assert customer is not None
        earlier = read_timeline(session, number)
    policy = load_policies(folder)[invoice.policy_name]
    start = invoice_input(invoice, customer.timezone, policy, planned_at=datetime.now(UTC))
    return await start_invoice_workflow(
        client, settings, start.model_copy(update={"earlier_timeline": earlier})
    )
