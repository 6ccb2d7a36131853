"""Requests that race, repeat or arrive for years: the invoice holds.

- A dispute and a full payment sent at the same moment: whichever the invoice takes first,
  the other is answered (accepted or refused with a reason) and the workflow never fails.
- The same request id twice is one change, in the workflow and in the ledger.
- A workflow continues as new long before its history grows large, and keeps its timeline;
  the ledger keeps the timeline once the invoice closes.
- The schedule is computed outside the workflow's replay path: a history replays after the
  holiday data changes.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import select
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

import policies.schedule
from ledger.db import session_scope
from ledger.models import Invoice, Payment
from ledger.timeline import read_timeline
from policies.loader import load_policy
from tests.invoice_harness import (
    POLICIES,
    dev_server_environment,
    invoice_harness,
    local,
)
from tests.test_cli_errors import adunwise, harness_env
from tests.test_messaging_delivery import RecordingHttpServer, Reply
from worker import STRICT_RUNNER, WORKFLOWS
from workflows.invoice import InvoiceWorkflow
from workflows.invoice_core import HISTORY_EVENTS_BOUND, LEDGER_ATTEMPT, LEDGER_RETRY_AFTER
from workflows.models import Dispute, PaymentReceived, Resolution

DUE = date(2026, 3, 16)  # two weeks after the harness's pinned today, 2026-03-02


def payments_of(engine, number: str) -> list[int]:
    with session_scope(engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
        rows = session.exec(select(Payment).where(Payment.customer_id == invoice.customer_id))
        return [p.amount_minor for p in rows]


async def test_disputes_racing_full_payments_never_fail_an_invoice(tmp_path: Path) -> None:
    async with invoice_harness(tmp_path, environment=dev_server_environment) as h:
        numbers = [f"R-{i:02}" for i in range(30)]
        handles = [await h.start(n, due_on=DUE, amount_minor=50_000) for n in numbers]

        async def race(handle) -> tuple[object, object]:
            payment = handle.execute_update(
                InvoiceWorkflow.record_payment,
                PaymentReceived(amount_minor=50_000, currency="USD"),
            )
            dispute = handle.execute_update(
                InvoiceWorkflow.record_dispute, Dispute(reason="wrong quantity")
            )
            return tuple(await asyncio.gather(payment, dispute, return_exceptions=True))

        outcomes = await asyncio.gather(*(race(handle) for handle in handles))
        refused = 0
        for number, (paid, disputed) in zip(numbers, outcomes, strict=True):
            assert not isinstance(paid, BaseException), (number, paid)
            if isinstance(disputed, BaseException):
                # Taken after the payment: refused with the reason, nothing changed.
                assert isinstance(disputed, WorkflowUpdateFailedError), (number, disputed)
                assert "it is paid" in str(disputed.cause), number
                refused += 1
        for number, handle in zip(numbers, handles, strict=True):
            final = await asyncio.wait_for(handle.result(), timeout=60)
            assert (final.status, final.balance_minor) == ("closed", 0), number
            assert (h.invoice(number).status, h.invoice(number).balance_minor) == ("closed", 0)
            assert payments_of(h.engine, number) == [50_000], number
        # Both orders happen (the race is real), and the journal cleared each invoice once.
        assert [entry["invoice_number"] for entry in h.erp_journal()].count("R-00") == 1
        assert len(h.erp_journal()) == 30
        print(f"disputes refused after the payment: {refused} of 30")


async def test_legacy_signals_racing_payments_are_recorded_not_fatal(tmp_path: Path) -> None:
    """Callers from before disputes were updates still send signals: a refusal is recorded."""
    async with invoice_harness(tmp_path, environment=dev_server_environment) as h:
        handles = [await h.start(f"S-{i}", due_on=DUE, amount_minor=9_000) for i in range(10)]

        async def race(handle) -> None:
            await asyncio.gather(
                handle.execute_update(
                    InvoiceWorkflow.record_payment,
                    PaymentReceived(amount_minor=9_000, currency="USD"),
                ),
                handle.signal(InvoiceWorkflow.dispute, Dispute(reason="late delivery")),
                handle.signal(InvoiceWorkflow.resolve, Resolution(action="resume")),
            )

        await asyncio.gather(*(race(handle) for handle in handles))
        for handle in handles:
            final = await asyncio.wait_for(handle.result(), timeout=60)
            assert (final.status, final.balance_minor) == ("closed", 0)


async def test_the_same_request_id_twice_is_one_payment(tmp_path: Path, ledger_url: str) -> None:
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("ID-1", due_on=DUE, amount_minor=10_000)
        payment = PaymentReceived(amount_minor=4_000, currency="USD", reference="wire 77")
        first = await handle.execute_update(InvoiceWorkflow.record_payment, payment, id="req-1")
        again = await handle.execute_update(InvoiceWorkflow.record_payment, payment, id="req-1")
        other = await handle.execute_update(InvoiceWorkflow.record_payment, payment, id="req-2")
        assert (first.balance_minor, again.balance_minor, other.balance_minor) == (
            6_000,
            6_000,
            2_000,
        )
        assert payments_of(h.engine, "ID-1") == [4_000, 4_000]
        state = await h.state(handle)
        assert [e.event for e in state.timeline].count("payment") == 2


async def test_an_erp_rejecting_for_two_years_keeps_the_history_small(tmp_path: Path) -> None:
    with RecordingHttpServer(Reply(422, b'{"error":"unknown account"}')) as erp:
        async with invoice_harness(
            tmp_path,
            erp_url=f"{erp.url}/clearings",
            erp_secret=SecretStr("erp-secret"),
        ) as h:
            handle = await h.start("LONG-1", due_on=DUE, amount_minor=10_000)
            first_run = (await handle.describe()).run_id
            await handle.execute_update(
                InvoiceWorkflow.record_payment, PaymentReceived(amount_minor=10_000, currency="USD")
            )
            for _month in range(25):  # two years, a month at a time
                await h.advance(timedelta(days=30))
            state = await h.state(handle)
            assert state.stage == "clearing"
            description = await handle.describe()
            assert description.run_id != first_run, "the workflow continued as new"
            history = await h.env.client.get_workflow_handle(handle.id).fetch_history()
            assert len(history.events) < HISTORY_EVENTS_BOUND + 200
            rejected = [e for e in state.timeline if e.event == "erp_rejected"]
            assert len(rejected) == 1, "a repeated rejection is counted, not copied"
            assert rejected[0].count >= 2 * 365 - 4  # daily once it has gone on for a day
            assert [e.event for e in state.timeline][:3] == ["issued", "payment", "erp_rejected"]

            erp.replies = [Reply(200)]
            final = await asyncio.wait_for(handle.result(), timeout=60)
            assert (final.status, final.stage) == ("closed", "closed")
            assert [e.event for e in final.timeline][-3:] == ["cleared", "receipt", "closed"]
            with session_scope(h.engine) as session:
                kept = read_timeline(session, "LONG-1")
            assert [(e.event, e.count) for e in kept] == [
                (e.event, e.count) for e in final.timeline
            ]


async def test_a_history_replays_after_the_holiday_data_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = load_policy(POLICIES / "standard.yaml")
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("HOL-1", due_on=DUE, amount_minor=20_000, policy=policy)
        await h.advance_to(local(DUE, 12))
        await handle.execute_update(
            InvoiceWorkflow.record_payment, PaymentReceived(amount_minor=20_000, currency="USD")
        )
        await handle.result()
        history = await handle.fetch_history()

    def schedule() -> list:
        return policies.schedule.build_schedule(
            policy,
            issued_on=DUE - timedelta(days=30),
            due_on=DUE,
            customer_timezone="America/New_York",
        )

    before = schedule()
    # A new release of the holiday data declares the due date a public holiday.
    real = policies.schedule.is_business_day
    monkeypatch.setattr(
        policies.schedule,
        "is_business_day",
        lambda day, code: day != DUE and real(day, code),
    )
    assert schedule() != before, "the new data would move the due-date reminder"
    replayer = Replayer(
        workflows=WORKFLOWS, workflow_runner=STRICT_RUNNER, data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)


async def test_the_command_line_pays_once_per_request_id(tmp_path: Path) -> None:
    async with invoice_harness(tmp_path, environment=dev_server_environment) as h:
        env = harness_env(h, tmp_path)
        handle = await h.start("CLI-1", due_on=DUE, amount_minor=10_000)
        pay = ("invoice", "pay", "CLI-1", "60.00", "--reference", "chq 12")
        first = await adunwise(env, tmp_path, *pay, "--request-id", "retry-me")
        again = await adunwise(env, tmp_path, *pay, "--request-id", "retry-me")
        assert (first.returncode, again.returncode) == (0, 0), (first.stderr, again.stderr)
        assert "balance $40.00" in again.stdout
        assert payments_of(h.engine, "CLI-1") == [6_000]

        # Without an id the command makes one and says which, so a retry can name it.
        fresh = await adunwise(env, tmp_path, "invoice", "pay", "CLI-1", "40.00")
        assert fresh.returncode == 0, fresh.stderr
        request_id = fresh.stdout.strip().splitlines()[-1].split()[2]
        await asyncio.wait_for(handle.result(), timeout=60)
        # Temporal answers a repeat with the first result, even after the invoice closed.
        repeat = ("invoice", "pay", "CLI-1", "40.00", "--request-id", request_id)
        answered = await adunwise(env, tmp_path, *repeat)
        assert answered.returncode == 0, answered.stderr
        assert "balance $0.00" in answered.stdout
        assert payments_of(h.engine, "CLI-1") == [6_000, 4_000]

        # Once Temporal no longer keeps the workflow, the ledger answers.
        await h.env.client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=h.env.client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=handle.id),
            )
        )
        for _ in range(50):
            shown = await adunwise(env, tmp_path, "invoice", "show", "CLI-1")
            if "from the ledger" in shown.stdout:
                break
            await asyncio.sleep(0.2)
        from_ledger = await adunwise(env, tmp_path, *repeat)
        assert from_ledger.returncode == 0, from_ledger.stderr
        assert f"request id {request_id} was recorded already" in from_ledger.stdout
        assert payments_of(h.engine, "CLI-1") == [6_000, 4_000]
        assert shown.returncode == 0, shown.stderr
        assert "status closed" in shown.stdout
        assert "cleared" in shown.stdout and "receipt" in shown.stdout


async def test_a_payment_during_a_ledger_outage_answers_and_records_once(
    tmp_path: Path, postgres_database_url: str
) -> None:
    """The invoice's row is locked elsewhere: the command says nothing is recorded yet
    instead of hanging, and the same request id afterwards records the payment once."""
    async with invoice_harness(tmp_path, postgres_database_url) as h:
        with session_scope(h.engine) as session:
            session.exec(sa.text("TRUNCATE invoice, customer RESTART IDENTITY CASCADE"))
        handle = await h.start("OUT-1", due_on=DUE, amount_minor=10_000)
        env = harness_env(h, tmp_path, DUNWISE_REQUEST_TIMEOUT_SECONDS="3")
        pay = ("invoice", "pay", "OUT-1", "25.00", "--request-id", "out-1")
        blocker = psycopg.connect(postgres_database_url, autocommit=False)
        try:
            blocker.execute("SELECT * FROM invoice WHERE number = 'OUT-1' FOR UPDATE")
            waited = await adunwise(env, tmp_path, *pay)
            assert waited.returncode == 1
            assert waited.stderr == (
                "dunwise: invoice OUT-1: no answer within 3 s (is the ledger database "
                "reachable?): nothing is recorded yet; repeat the command with --request-id "
                "out-1 to see how it ended: it is recorded once however often it is sent\n"
            )
            assert payments_of(h.engine, "OUT-1") == []
            # Past one try's bound the invoice notes the outage and keeps the request open.
            await asyncio.sleep(LEDGER_ATTEMPT.total_seconds() + 2)
            state = await h.state(handle)
            assert "ledger_unavailable" in [e.event for e in state.timeline]
            assert state.balance_minor == 10_000
        finally:
            blocker.rollback()
            blocker.close()
        await h.advance(LEDGER_RETRY_AFTER)
        answered = await adunwise(env, tmp_path, *pay)
        assert answered.returncode == 0, answered.stderr
        assert "balance $75.00" in answered.stdout
        again = await adunwise(env, tmp_path, *pay)
        assert again.returncode == 0, again.stderr
        assert payments_of(h.engine, "OUT-1") == [2_500]
        assert h.invoice("OUT-1").balance_minor == 7_500
