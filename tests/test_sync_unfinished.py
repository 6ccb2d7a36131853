"""`dunwise sync` finds unfinished invoices and brings each to its next step.

A real dev server (the one `dunwise run` embeds) and a real ledger on SQLite and PostgreSQL.
Mostly no worker polls the task queue, so a started workflow stays RUNNING: what sync did
shows in each workflow's run id and in the input it was started with. One test runs a worker
to see a paid invoice that sync restarted through ERP clearing to closed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sqlmodel import Session, select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.models import PaymentApplication, StatusChange, TimelineBatch, TimelineEntry
from commands.importing import policy_folder
from commands.syncing import start_open_invoices
from invoices import invoice_input, start_invoice_workflow, workflow_id
from ledger.db import make_engine, session_scope
from ledger.import_rows import InvoiceRow
from ledger.imports import import_file
from ledger.lifecycle import set_status
from ledger.models import Customer, ErpPosting, Invoice
from ledger.operations import apply_payment
from ledger.timeline import read_timeline, record_timeline
from policies.loader import load_policies
from settings import Settings
from tests.invoice_harness import dev_server_environment
from worker import build_worker
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceInput, InvoiceState

RUNNING = WorkflowExecutionStatus.RUNNING
TIMED_OUT = WorkflowExecutionStatus.TIMED_OUT
HEADER = (
    "invoice_number,customer_id,customer_name,email,phone,timezone,currency,amount,issued_on,due_on"
)


@pytest_asyncio.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await dev_server_environment()
    async with env:
        yield env


def sync_settings(tmp_path: Path, ledger_url: str, env: WorkflowEnvironment) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=ledger_url,
        temporal_address=env.client.service_client.config.target_host,
        temporal_task_queue=f"sync-{uuid.uuid4().hex[:8]}",
        outbox_dir=tmp_path / "outbox",
        erp_journal=tmp_path / "erp-journal.jsonl",
        message_group_window_seconds=0,
    )


def import_ledger(settings: Settings, tmp_path: Path, numbers: list[str]) -> None:
    rows = [
        f"{n},c-{n},Customer {n},ap@{n.lower()}.example,,Europe/Berlin,EUR,100.00,2026-01-05,2099-02-04"
        for n in numbers
    ]
    path = tmp_path / "invoices.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")

    def standard(row: InvoiceRow) -> tuple[str, int]:
        return "standard", 3

    with ledger_session(settings) as session:
        report = import_file(session, path, standard)
    assert report.imported == numbers, report.refused


def pay_in_full(settings: Settings, number: str) -> None:
    with ledger_session(settings) as session:
        balance = apply_payment(
            session,
            PaymentApplication(
                invoice_number=number,
                amount_minor=10_000,
                currency="EUR",
                received_at=datetime.now(UTC),
                idempotency_key=f"pay-{number}",
            ),
        )
    assert balance.status == "paid"


def change_status(settings: Settings, number: str, status: str) -> None:
    with ledger_session(settings) as session:
        set_status(session, StatusChange(invoice_number=number, status=status))


async def test_sync_restarts_ended_workflows_and_leaves_running_ones(
    dev_server: WorkflowEnvironment, ledger_url: str, tmp_path: Path, capsys
) -> None:
    client = dev_server.client
    settings = sync_settings(tmp_path, ledger_url, dev_server)
    tag = uuid.uuid4().hex[:6].upper()
    terminated, running, paid, timed_out, closed = (f"{tag}-{i}" for i in range(1, 6))
    import_ledger(settings, tmp_path, [terminated, running, paid, timed_out, closed])
    pay_in_full(settings, paid)
    change_status(settings, timed_out, "disputed")
    pay_in_full(settings, closed)
    change_status(settings, closed, "closed")
    # The workflows as an operator, a crash or a timeout left them.
    handles = {n: await start(settings, client, n) for n in (terminated, running, paid, closed)}
    for number in (terminated, paid, closed):
        await handles[number].terminate("operator mistake")
    await client.start_workflow(
        InvoiceWorkflow.run,
        ledger_input(settings, timed_out),
        id=workflow_id(timed_out),
        task_queue=settings.temporal_task_queue,
        execution_timeout=timedelta(seconds=1),
    )
    await wait_for_status(client.get_workflow_handle(workflow_id(timed_out)), TIMED_OUT)

    assert await start_open_invoices(settings) == 0

    assert capsys.readouterr().out.splitlines() == [
        f"invoice {terminated}: workflow was terminated, restarted (ledger: open)",
        f"invoice {paid}: workflow was terminated, restarted (ledger: paid)",
        f"invoice {timed_out}: workflow timed out, restarted (ledger: disputed)",
        "4 open invoices, each with its workflow: 0 started, 3 restarted, 1 already running",
    ]
    after = {n: await client.get_workflow_handle(workflow_id(n)).describe() for n in handles}
    assert after[running].run_id == handles[running].result_run_id  # left alone
    for number in (terminated, paid):
        assert after[number].status == RUNNING
        assert after[number].run_id != handles[number].result_run_id  # a new run
    assert after[closed].status == WorkflowExecutionStatus.TERMINATED  # closed: not rerun
    # Each new run starts from the ledger: a paid invoice at clearing, a disputed one paused.
    statuses = {n: (await started_input(client, n)).status for n in (terminated, paid, timed_out)}
    assert statuses == {terminated: "open", paid: "paid", timed_out: "disputed"}

    # Safe to repeat: nothing to do the second time, and no run replaced.
    runs = {
        n: (await client.get_workflow_handle(workflow_id(n)).describe()).run_id for n in statuses
    }
    assert await start_open_invoices(settings) == 0
    assert capsys.readouterr().out.splitlines() == [
        "4 open invoices, each with its workflow: 0 started, 0 restarted, 4 already running"
    ]
    assert runs == {
        n: (await client.get_workflow_handle(workflow_id(n)).describe()).run_id for n in statuses
    }


async def test_sync_starts_invoices_that_never_had_a_workflow(
    dev_server: WorkflowEnvironment, ledger_url: str, tmp_path: Path, capsys
) -> None:
    client = dev_server.client
    settings = sync_settings(tmp_path, ledger_url, dev_server)
    tag = uuid.uuid4().hex[:6].upper()
    fresh, paid, paused, running = (f"{tag}-{i}" for i in range(1, 5))
    import_ledger(settings, tmp_path, [fresh, paid, paused, running])
    pay_in_full(settings, paid)
    change_status(settings, paused, "paused")
    first = await start(settings, client, running)

    assert await start_open_invoices(settings) == 0

    assert capsys.readouterr().out.splitlines() == [
        f"invoice {fresh}: no workflow, started (ledger: open)",
        f"invoice {paid}: no workflow, started (ledger: paid)",
        f"invoice {paused}: no workflow, started (ledger: paused)",
        "4 open invoices, each with its workflow: 3 started, 0 restarted, 1 already running",
    ]
    inputs = {n: await started_input(client, n) for n in (fresh, paid, paused)}
    assert {n: i.status for n, i in inputs.items()} == {
        fresh: "open",
        paid: "paid",
        paused: "paused",
    }
    assert (inputs[fresh].balance_minor, inputs[paid].balance_minor) == (10_000, 0)
    now = await client.get_workflow_handle(workflow_id(running)).describe()
    assert (now.status, now.run_id) == (RUNNING, first.result_run_id)


async def test_a_paid_invoice_restarted_by_sync_clears_in_the_erp_and_closes(
    dev_server: WorkflowEnvironment, ledger_url: str, tmp_path: Path, capsys
) -> None:
    settings = sync_settings(tmp_path, ledger_url, dev_server)
    number = f"{uuid.uuid4().hex[:6].upper()}-1"
    import_ledger(settings, tmp_path, [number])
    pay_in_full(settings, number)  # paid in the ledger; its workflow never cleared it

    assert await start_open_invoices(settings) == 0
    assert f"invoice {number}: no workflow, started (ledger: paid)" in capsys.readouterr().out

    engine = make_engine(settings.effective_database_url)
    try:
        async with build_worker(dev_server.client, settings, engine):
            handle = dev_server.client.get_workflow_handle(
                workflow_id(number), result_type=InvoiceState
            )
            final = await asyncio.wait_for(handle.result(), timeout=60)
        assert (final.status, final.stage) == ("closed", "closed")
        with session_scope(engine) as session:
            invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
            postings = session.exec(
                select(ErpPosting).where(ErpPosting.invoice_id == invoice.id)
            ).all()
            assert (invoice.status, len(postings)) == ("closed", 1)
    finally:
        engine.dispose()
    assert number in settings.effective_erp_journal.read_text()


async def test_a_restart_continues_the_story_the_ledger_kept(
    dev_server: WorkflowEnvironment, ledger_url: str, tmp_path: Path, capsys
) -> None:
    """An earlier workflow saved its timeline and then failed: the new run goes on from it,
    and the ledger ends up with one story, not two that clash."""
    settings = sync_settings(tmp_path, ledger_url, dev_server)
    number = f"{uuid.uuid4().hex[:6].upper()}-1"
    import_ledger(settings, tmp_path, [number])
    issued = datetime(2026, 1, 5, tzinfo=UTC)
    earlier = [
        TimelineEntry(at=issued, event="issued", detail="due 2099-02-04", amount_minor=10_000),
        TimelineEntry(at=issued + timedelta(days=3), event="erp_rejected", count=4),
    ]
    with ledger_session(settings) as session:
        record_timeline(
            session, TimelineBatch(invoice_number=number, first_position=0, entries=earlier)
        )
    pay_in_full(settings, number)

    assert await start_open_invoices(settings) == 0
    engine = make_engine(settings.effective_database_url)
    try:
        async with build_worker(dev_server.client, settings, engine):
            handle = dev_server.client.get_workflow_handle(
                workflow_id(number), result_type=InvoiceState
            )
            final = await asyncio.wait_for(handle.result(), timeout=60)
        events = [e.event for e in final.timeline]
        assert events[:3] == ["issued", "erp_rejected", "restarted"]
        assert events[-1] == "closed" and "timeline_not_saved" not in events
        with session_scope(engine) as session:
            kept = read_timeline(session, number)
        assert [(e.event, e.count) for e in kept] == [(e.event, e.count) for e in final.timeline]
    finally:
        engine.dispose()


async def test_sync_names_an_invoice_whose_policy_is_gone(
    dev_server: WorkflowEnvironment, ledger_url: str, tmp_path: Path, capsys
) -> None:
    settings = sync_settings(tmp_path, ledger_url, dev_server)
    number = f"{uuid.uuid4().hex[:6].upper()}-1"
    import_ledger(settings, tmp_path, [number])
    policies = tmp_path / "policies"
    policies.mkdir()
    shipped = Path(__file__).resolve().parent.parent / "policies"
    (policies / "strict.yaml").write_text((shipped / "strict.yaml").read_text())
    settings.policy_dir = policies

    assert await start_open_invoices(settings) == 1

    captured = capsys.readouterr()
    assert captured.err == (
        f"dunwise sync: invoice {number}: its policy 'standard' is not in {policies}; "
        "its workflow cannot start\n"
    )
    assert captured.out.splitlines()[-1] == (
        "1 open invoices: 0 started, 0 restarted, 0 already running, 1 not brought up (see above)"
    )
    handle = dev_server.client.get_workflow_handle(workflow_id(number))
    with pytest.raises(RPCError):
        await handle.describe()


# --- helpers -------------------------------------------------------------------------------


@contextmanager
def ledger_session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.effective_database_url)
    try:
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


def ledger_input(settings: Settings, number: str) -> InvoiceInput:
    policies = load_policies(policy_folder(settings))
    with ledger_session(settings) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
        customer = session.get(Customer, invoice.customer_id)
        assert customer is not None
        return invoice_input(invoice, customer.timezone, policies[invoice.policy_name])


async def start(settings: Settings, client: Client, number: str) -> WorkflowHandle:
    return await start_invoice_workflow(client, settings, ledger_input(settings, number))


async def started_input(client: Client, number: str) -> InvoiceInput:
    history = await client.get_workflow_handle(workflow_id(number)).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [invoice] = await pydantic_data_converter.decode(started.input.payloads, [InvoiceInput])
    return invoice


async def wait_for_status(handle: WorkflowHandle, wanted: WorkflowExecutionStatus) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while (await handle.describe()).status != wanted:
        assert asyncio.get_running_loop().time() < deadline, f"{handle.id} never {wanted.name}"
        await asyncio.sleep(0.2)
