"""`dunwise import`: invoices into the ledger, each with its workflow.

An import commits the ledger first, then starts the workflows over one client, at most
START_CONCURRENCY at once. A start that fails is reported with its invoice at the end and
the others go on; once Temporal stops answering the rest are not tried. Either way the ledger
keeps every imported invoice, and `dunwise sync` starts the workflows that are missing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from commands.errors import CommandError, error_reason
from commands.progress import progress
from invoices import choose_policy, invoice_input, start_invoice_workflow
from ledger.db import make_engine, session_scope
from ledger.import_rows import InvoiceRow
from ledger.imports import import_file
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice
from policies.loader import SHIPPED_POLICIES, load_policies
from policies.schema import Policy
from settings import Settings
from temporal_client import temporal
from workflows.models import InvoiceInput

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
        now = datetime.now(UTC)
        for invoice, timezone in rows:
            policy = policies[invoice.policy_name]
            found[invoice.number] = invoice_input(invoice, timezone, policy, planned_at=now)
    return [found[number] for number in numbers]
