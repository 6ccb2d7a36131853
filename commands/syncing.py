"""`dunwise sync`: every unfinished invoice in the ledger with its running workflow.

The ledger is the truth for which invoices are unfinished; sync makes Temporal agree by
starting a workflow where one is missing or ended early, never a second one beside a running
one. Safe to repeat.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from commands.errors import CommandError
from commands.importing import policy_folder
from invoices import invoice_input, start_invoice_workflow, workflow_id
from ledger.db import make_engine, session_scope
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice, InvoiceStatus
from ledger.timeline import read_timeline
from payments.delivery_news import tell_untold
from payments.services import PaymentServices
from payments.stripe_gateway import StripeGateway
from policies.loader import load_policies
from settings import Settings
from temporal_client import connect, temporal
from workflows.models import InvoiceInput

# Statuses that still need a running workflow; "paid" waits for ERP clearing and the receipt.
UNFINISHED_STATUSES = (
    InvoiceStatus.OPEN,
    InvoiceStatus.DISPUTED,
    InvoiceStatus.PAUSED,
    InvoiceStatus.PAID,
)
# How a workflow that sync reruns ended.
ENDED_HOW = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TERMINATED: "was terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
    WorkflowExecutionStatus.CANCELED: "was cancelled",
}
# Outcomes of sync for one invoice, beside "workflow <ended how>, restarted".
STARTED = "no workflow, started"
ALREADY_RUNNING = "workflow running, left alone"
COMPLETED_BUT_UNFINISHED = "workflow completed, yet the ledger has it unfinished; left alone"
# Invoices checked at once: describe calls are cheap but many thousands add up.
SYNC_CONCURRENCY = 16


async def start_open_invoices(settings: Settings) -> int:
    """Give every unfinished invoice in the ledger a running workflow; safe to repeat.

    Unfinished: open, disputed, paused, or paid but not yet cleared and closed. A missing
    workflow, or one that failed, was terminated, cancelled or timed out, gets a new run that
    starts from the ledger's status and balance; a running one is left alone. A completed
    workflow of an unfinished invoice is reported, not rerun: the two disagree, and a person
    should look. Provider news about messages that Temporal missed while it was down is
    told to the invoices. The exit status is 1 if any invoice could not be brought up or told.
    """
    policies = load_policies(policy_folder(settings))
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    problems: list[str] = []
    with session_scope(engine) as session:
        rows = session.exec(
            select(Invoice, Customer.timezone)
            .join(Customer, Customer.id == Invoice.customer_id)  # type: ignore[arg-type]
            .where(Invoice.status.in_(UNFINISHED_STATUSES))  # type: ignore[attr-defined]
            .order_by(Invoice.number)
        ).all()
        inputs = []
        for invoice, timezone in rows:
            policy = policies.get(invoice.policy_name)
            if policy is None:
                problems.append(
                    f"invoice {invoice.number}: its policy {invoice.policy_name!r} is not in "
                    f"{policy_folder(settings)}; its workflow cannot start"
                )
            else:
                inputs.append(invoice_input(invoice, timezone, policy))
    outcomes: list[str | BaseException] = []
    if inputs:
        try:
            async with temporal(settings) as client:
                outcomes = await _bring_up_all(client, settings, engine, inputs)
        except (RuntimeError, RPCError) as err:
            raise CommandError(f"cannot reach Temporal to check the workflows ({err})") from err
    told, untold = await _tell_untold(settings, engine)
    if told:
        print(f"delivery events told to their invoices after waiting for Temporal: {told}")
    if untold:
        problems.append(f"delivery events still not told to their invoices: {untold}")
    counts: Counter[str] = Counter()
    for invoice, outcome in zip(inputs, outcomes, strict=True):
        line = f"invoice {invoice.number}: {outcome} (ledger: {invoice.status})"
        if isinstance(outcome, BaseException):
            problems.append(f"invoice {invoice.number}: its workflow could not start ({outcome})")
        elif outcome == COMPLETED_BUT_UNFINISHED:
            problems.append(line)
        else:
            counts[outcome] += 1
            if outcome != ALREADY_RUNNING:
                print(line)
    for problem in problems:
        print(f"dunwise sync: {problem}", file=sys.stderr)
    restarted = sum(n for outcome, n in counts.items() if outcome.endswith("restarted"))
    summary = (
        f"{counts[STARTED]} started, {restarted} restarted, "
        f"{counts[ALREADY_RUNNING]} already running"
    )
    if problems:
        print(f"{len(rows)} open invoices: {summary}, {len(problems)} not brought up (see above)")
        return 1
    print(f"{len(rows)} open invoices, each with its workflow: {summary}")
    return 0


async def _tell_untold(settings: Settings, engine: sa.Engine) -> tuple[int, int]:
    """What providers told of messages while Temporal was down, told to the invoices now."""
    services = PaymentServices(settings, engine, StripeGateway(settings), lambda: connect(settings))
    return await tell_untold(services, grace=timedelta(0))  # asked for: everything left


async def _bring_up_all(
    client: Client, settings: Settings, engine: sa.Engine, inputs: list[InvoiceInput]
) -> list[str | BaseException]:
    """Each invoice's outcome, or the error that stopped it, in the order of `inputs`."""
    gate = asyncio.Semaphore(SYNC_CONCURRENCY)

    async def bring_up(invoice: InvoiceInput) -> str:
        async with gate:
            return await _bring_up(client, settings, engine, invoice)

    return await asyncio.gather(*(bring_up(i) for i in inputs), return_exceptions=True)


async def _bring_up(
    client: Client, settings: Settings, engine: sa.Engine, invoice: InvoiceInput
) -> str:
    """Start the invoice's workflow unless it runs; what was done, in words."""
    handle = client.get_workflow_handle(workflow_id(invoice.number))
    try:
        status = (await handle.describe()).status
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        status = None
    if status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW):
        return ALREADY_RUNNING
    if status == WorkflowExecutionStatus.COMPLETED:
        return COMPLETED_BUT_UNFINISHED
    # A closed run does not block a new one under Temporal's default id reuse policy; a run
    # started meanwhile by someone else is kept (start_invoice_workflow uses USE_EXISTING).
    with session_scope(engine) as session:
        # The new run continues the story the ledger kept of the ones before it.
        earlier = read_timeline(session, invoice.number)
    await start_invoice_workflow(
        client, settings, invoice.model_copy(update={"earlier_timeline": earlier})
    )
    return STARTED if status is None else f"workflow {ENDED_HOW[status]}, restarted"
