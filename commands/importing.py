"""`dunwise import` and `dunwise sync`: invoices into the ledger, each with its workflow.

The ledger is the truth for which invoices are unfinished; sync makes Temporal agree by
starting a workflow where one is missing or ended early, never a second one beside a running one.

An import commits the ledger first, then starts the workflows over one client, at most
START_CONCURRENCY at once. A start that fails is reported with its invoice at the end and
the others go on; once Temporal stops answering the rest are not tried. Either way the ledger
keeps every imported invoice, and `dunwise sync` starts the workflows that are missing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from commands.errors import CommandError, error_reason
from commands.progress import progress
from invoices import choose_policy, invoice_input, start_invoice_workflow, workflow_id
from ledger.db import make_engine, session_scope
from ledger.import_rows import InvoiceRow
from ledger.imports import import_file
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice, InvoiceStatus
from ledger.timeline import read_timeline
from policies.loader import SHIPPED_POLICIES, load_policies
from policies.schema import Policy
from settings import Settings
from temporal_client import temporal
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
# Workflow starts an import keeps in flight. Each is one round trip that mostly waits on the
# server's own writes; on the embedded dev server of a 2-core machine 64 started the most per
# second (16 and 32 fewer, 128 no more), and a cluster takes that many with ease.
START_CONCURRENCY = 64
# Invoice numbers per IN (...) query when reading back what was imported.
LOOKUP_BATCH = 500
# Errors after which Temporal is taken to be gone: the remaining starts are not tried.
UNREACHABLE = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})


@dataclass
class ImportTimes:
    """Where an import's time went: the ledger part (read, check, write, commit, read back
    the start inputs) and the start part (reach Temporal, start every workflow)."""

    ledger_seconds: float = 0.0
    start_seconds: float = 0.0


@dataclass
class StartReport:
    """What came of starting an import's workflows: the invoices whose start failed, with
    why, and those not tried because Temporal stopped answering before their turn."""

    failed: list[tuple[str, BaseException]]
    not_tried: list[str]


def policy_folder(settings: Settings) -> Path:
    return settings.policy_dir or SHIPPED_POLICIES


async def import_invoices_file(
    settings: Settings, path: Path, *, partial: bool, times: ImportTimes | None = None
) -> int:
    """`dunwise import`: the file into the ledger, then each imported invoice's workflow.

    The exit status is 1 if any row was refused. CommandError, after the ledger committed,
    if a workflow could not start; `times`, if given, is filled in as the parts end.
    """
    times = times or ImportTimes()
    began = time.perf_counter()
    policies = load_policies(policy_folder(settings))
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)

    def policy_for(row: InvoiceRow) -> tuple[str, int]:
        policy = choose_policy(policies, row, settings.default_policy)
        return policy.name, policy.version

    try:
        # No count to show: the ledger takes the file whole, in one transaction.
        with progress("writing the ledger"), session_scope(engine) as session:
            report = import_file(session, path, policy_for, partial=partial)
            inputs = _workflow_inputs(session, report.imported, policies)
    finally:
        engine.dispose()
    for error in report.refused:
        print(f"{path}: {error}", file=sys.stderr)
    times.ledger_seconds = time.perf_counter() - began
    began = time.perf_counter()
    try:
        await _start_workflows(settings, path, inputs)
    finally:
        times.start_seconds = time.perf_counter() - began
    print(f"imported {len(inputs)} invoices from {path}, refused {len(report.refused_rows)} rows")
    return 1 if report.refused else 0


async def start_open_invoices(settings: Settings) -> int:
    """Give every unfinished invoice in the ledger a running workflow; safe to repeat.

    Unfinished: open, disputed, paused, or paid but not yet cleared and closed. A missing
    workflow, or one that failed, was terminated, cancelled or timed out, gets a new run that
    starts from the ledger's status and balance; a running one is left alone. A completed
    workflow of an unfinished invoice is reported, not rerun: the two disagree, and a person
    should look. The exit status is 1 if any invoice could not be brought up.
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


async def _start_workflows(settings: Settings, path: Path, inputs: list[InvoiceInput]) -> None:
    """Start every invoice's workflow over one client; CommandError, after naming each
    invoice whose workflow did not start, if any did not."""
    if not inputs:
        return
    try:
        async with temporal(settings) as client:
            with progress("starting workflows", total=len(inputs), unit="invoices") as bar:
                outcome = await start_all(client, settings, inputs, done=bar.advance)
    except (RuntimeError, RPCError) as err:
        raise CommandError(
            f"the ledger has the invoices but their workflows could not all start ({err}); "
            "run `dunwise sync` once Temporal is reachable"
        ) from err
    for number, err in outcome.failed:
        print(
            f"{path}: invoice {number}: its workflow could not start ({error_reason(err)})",
            file=sys.stderr,
        )
    if outcome.not_tried:
        print(
            f"{path}: {len(outcome.not_tried)} more invoices were not tried once Temporal "
            f"stopped answering, from invoice {outcome.not_tried[0]} on",
            file=sys.stderr,
        )
    missing = len(outcome.failed) + len(outcome.not_tried)
    if missing:
        raise CommandError(
            f"the ledger has the invoices but their workflows could not all start ({missing} "
            f"of {len(inputs)} did not, see above); run `dunwise sync` once Temporal is reachable"
        )


async def start_all(
    client: Client,
    settings: Settings,
    inputs: list[InvoiceInput],
    *,
    done: Callable[[int], object] = lambda _: None,
) -> StartReport:
    """Start each invoice's workflow, START_CONCURRENCY at a time, in the order given.

    One invoice's failure does not stop the others; after an error that says Temporal is
    gone (UNREACHABLE) no further start is tried. `done(1)` is called as each start ends.
    """
    pending = iter(inputs)
    report = StartReport(failed=[], not_tried=[])

    async def starter() -> None:
        # Every starter takes the next invoice from the one shared iterator.
        for invoice in pending:
            try:
                await start_invoice_workflow(client, settings, invoice)
            except Exception as err:  # reported with its invoice; the ledger keeps the invoice
                report.failed.append((invoice.number, err))
                if isinstance(err, RPCError) and err.status in UNREACHABLE:
                    report.not_tried.extend(i.number for i in pending)
            done(1)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(START_CONCURRENCY, len(inputs))):
            group.create_task(starter())
    position = {invoice.number: n for n, invoice in enumerate(inputs)}
    report.failed.sort(key=lambda failure: position[failure[0]])
    return report


def _workflow_inputs(
    session: Session, numbers: list[str], policies: dict[str, Policy]
) -> list[InvoiceInput]:
    """The start input of each invoice in `numbers`, in that order, read LOOKUP_BATCH at a
    time."""
    found: dict[str, InvoiceInput] = {}
    for start in range(0, len(numbers), LOOKUP_BATCH):
        batch = numbers[start : start + LOOKUP_BATCH]
        rows = session.exec(
            select(Invoice, Customer.timezone)
            .join(Customer, Customer.id == Invoice.customer_id)  # type: ignore[arg-type]
            .where(Invoice.number.in_(batch))  # type: ignore[attr-defined]
        )
        for invoice, timezone in rows:
            found[invoice.number] = invoice_input(invoice, timezone, policies[invoice.policy_name])
    return [found[number] for number in numbers]
