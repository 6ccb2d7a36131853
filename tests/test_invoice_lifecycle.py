"""Full invoice lifecycles on the time-skipping server, with a real ledger and outbox.

Standard policy, invoice due Monday 2026-03-16 in New York:
courtesy Fri 03-13, due_today Mon 03-16, overdue_friendly Mon 03-23,
overdue_firm Mon 03-30 (+1.5% late fee), escalation Wed 04-15 (SLA 2 days).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError

from ledger.db import session_scope
from ledger.models import CollectorTask, CustomerCredit, Payment
from ledger.timeline import read_timeline
from policies.loader import load_policy
from policies.steps import LateFee
from tests.invoice_harness import POLICIES, invoice_harness, local
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    Adjustment,
    Closure,
    Dispute,
    PaymentReceived,
    PromiseToPay,
    Resolution,
    Stage,
)

DUE = date(2026, 3, 16)


def pay(amount_minor: int, currency: str = "USD", **extra) -> PaymentReceived:
    return PaymentReceived(amount_minor=amount_minor, currency=currency, **extra)


def sent(state) -> list[tuple[str, str]]:
    return [(e.template, e.channel) for e in state.timeline if e.event == "reminder"]


def around(moment: datetime) -> object:
    """Matches a timeline time within a second of `moment` (workflow tasks take a few ms)."""
    return pytest.approx(moment.timestamp(), abs=1)


def events(state) -> list[str]:
    return [e.event for e in state.timeline]


def collector_tasks(h) -> list[CollectorTask]:
    with session_scope(h.engine) as session:
        return list(session.exec(select(CollectorTask).order_by(CollectorTask.id)).all())


async def test_paid_early_closes_with_receipt_and_erp_posting(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-1", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 10), 12))
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(100_000, method="card"))
        final = await handle.result()

        assert final.stage == Stage.CLOSED
        assert final.balance_minor == 0
        assert sent(final) == []
        assert events(final)[-4:] == ["payment", "cleared", "receipt", "closed"]
        assert h.invoice("INV-1").status == "closed"
        [posting] = h.erp_journal()
        assert posting["invoice_number"] == "INV-1"
        [receipt] = h.messages("INV-1")
        assert (receipt.template, receipt.channel, receipt.status) == ("receipt", "email", "sent")
        assert len(list((h.settings.effective_outbox_dir / "email").glob("*.eml"))) == 1
        await h.assert_replays(handle)


async def test_a_paid_invoice_closes_and_keeps_its_story_in_one_ledger_step(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-30", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 10), 12))
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(100_000, method="card"))
        final = await handle.result()

        history = await handle.fetch_history()
        activities = [
            event.activity_task_scheduled_event_attributes.activity_type.name
            for event in history.events
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
        assert activities[-3:] == ["clear_in_erp", "send_receipt", "close_invoice"]
        assert "set_status" not in activities and "record_timeline" not in activities
        assert h.invoice("INV-30").status == "closed"
        with session_scope(h.engine) as session:
            kept = read_timeline(session, "INV-30")
        assert kept == final.timeline  # the closing entry included
        assert [entry.event for entry in kept][-2:] == ["receipt", "closed"]
        await h.assert_replays(handle)


async def test_paid_after_reminders(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-2", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 24)))
        state = await h.state(handle)
        assert sent(state) == [
            ("courtesy", "email"),
            ("due_today", "email"),
            ("due_today", "sms"),
            ("overdue_friendly", "email"),
        ]
        reminders = [e for e in state.timeline if e.event == "reminder"]
        assert reminders[0].at.timestamp() == around(local(date(2026, 3, 13)))
        assert reminders[-1].at.timestamp() == around(local(date(2026, 3, 23)))
        assert state.days_past_due == 7  # as of the last wake-up, Monday 03-23

        await handle.execute_update(InvoiceWorkflow.record_payment, pay(100_000))
        final = await handle.result()
        assert final.stage == Stage.CLOSED
        statuses = [(m.template, m.channel, m.status) for m in h.messages("INV-2")]
        assert statuses[-1] == ("receipt", "email", "sent")
        assert len(statuses) == 5
        sms_lines = (h.settings.effective_outbox_dir / "sms.jsonl").read_text().splitlines()
        assert len(sms_lines) == 1
        await h.assert_replays(handle)


async def test_partial_then_full_payment_adds_up(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-3", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 17)))
        state = await handle.execute_update(
            InvoiceWorkflow.record_payment, pay(40_000, reason="one line item is disputed")
        )
        assert (state.balance_minor, state.status) == (60_000, "open")

        await h.advance_to(local(date(2026, 3, 24)))
        state = await h.state(handle)
        assert ("overdue_friendly", "email") in sent(state)  # dunning goes on for the rest

        await handle.execute_update(InvoiceWorkflow.record_payment, pay(60_000))
        final = await handle.result()
        assert final.stage == Stage.CLOSED
        with session_scope(h.engine) as session:
            payments = session.exec(select(Payment)).all()
            assert sum(p.amount_minor for p in payments) == 100_000
            assert payments[0].reason == "one line item is disputed"
        await h.assert_replays(handle)


async def test_overpayment_becomes_customer_credit(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-4", due_on=DUE)
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(120_000))
        final = await handle.result()
        assert final.stage == Stage.CLOSED
        with session_scope(h.engine) as session:
            [credit] = session.exec(select(CustomerCredit)).all()
            assert (credit.amount_minor, credit.source) == (20_000, "overpayment")
        [payment] = [e for e in final.timeline if e.event == "payment"]
        assert payment.detail == "full via manual, 200.00 USD to credit"
        [receipt] = (h.settings.effective_outbox_dir / "email").glob("*.eml")
        text = " ".join(receipt.read_text().split())
        assert "You paid $200.00 more than the invoice. It is kept as credit" in text


async def test_credit_note_lowers_the_balance_and_can_settle_it(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-12", due_on=DUE)
        state = await handle.execute_update(
            InvoiceWorkflow.adjust, Adjustment(amount_minor=-30_000, reason="damaged goods")
        )
        assert (state.balance_minor, state.status) == (70_000, "open")
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            await handle.execute_update(
                InvoiceWorkflow.adjust, Adjustment(amount_minor=5_000, reason="wrong sign")
            )
        assert "must be negative" in str(failure.value.cause)

        await handle.execute_update(
            InvoiceWorkflow.adjust, Adjustment(amount_minor=-80_000, reason="whole order returned")
        )
        final = await handle.result()
        assert final.stage == Stage.CLOSED
        with session_scope(h.engine) as session:
            [credit] = session.exec(select(CustomerCredit)).all()
            assert credit.amount_minor == 10_000  # the part of the credit above the balance
        await h.assert_replays(handle)


async def test_dispute_pauses_and_resume_sends_only_the_latest_step(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-5", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 14)))
        await handle.signal(InvoiceWorkflow.dispute, Dispute(reason="goods arrived damaged"))
        await h.advance_to(local(date(2026, 4, 1), 10))
        state = await h.state(handle)
        assert state.stage == Stage.DISPUTED
        assert state.status == "disputed"
        assert sent(state) == [("courtesy", "email")]
        assert h.invoice("INV-5").status == "disputed"

        await handle.signal(
            InvoiceWorkflow.resolve, Resolution(action="resume", note="credit agreed")
        )
        await h.advance(timedelta(hours=1))
        state = await h.state(handle)
        assert state.stage == Stage.SCHEDULED
        skipped = [e.template for e in state.timeline if e.event == "skipped"]
        assert skipped == ["due_today", "overdue_friendly"]
        assert sent(state)[1:] == [("overdue_firm", "email"), ("overdue_firm", "sms")]
        await h.assert_replays(handle)


async def test_dispute_and_outcome_requests_and_the_ledger_keeps_the_timeline(tmp_path, ledger_url):
    """Disputes and outcomes are requests with answers; the closed invoice's story stays."""
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-21", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 14)))
        state = await handle.execute_update(
            InvoiceWorkflow.record_dispute, Dispute(reason="goods arrived damaged"), id="d-1"
        )
        assert (state.stage, state.status) == (Stage.DISPUTED, "disputed")
        await handle.execute_update(
            InvoiceWorkflow.record_outcome, Resolution(action="resume"), id="o-1"
        )
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                InvoiceWorkflow.record_outcome, Resolution(action="resume"), id="o-2"
            )
        assert refused.value.cause.message == "dunning is not paused: nothing to resume"
        state = await h.state(handle)
        assert (state.stage, state.status) == (Stage.SCHEDULED, "open")
        # The same request again is answered, not applied again.
        again = await handle.execute_update(
            InvoiceWorkflow.record_outcome, Resolution(action="resume"), id="o-1"
        )
        assert events(again).count("resumed") == 1
        await h.advance_to(local(date(2026, 3, 16), 10))
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(100_000), id="p-1")
        final = await handle.result()
        assert final.stage == Stage.CLOSED
        with session_scope(h.engine) as session:
            kept = read_timeline(session, "INV-21")
        assert [(e.event, e.detail, e.at) for e in kept] == [
            (e.event, e.detail, e.at) for e in final.timeline
        ]
        await h.assert_replays(handle)


async def test_stopped_dunning_waits_for_payment_and_can_resume(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-13", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 17)))
        await handle.signal(InvoiceWorkflow.resolve, Resolution(action="stop", note="on a call"))
        await h.advance_to(local(date(2026, 3, 24), 10))
        state = await h.state(handle)
        assert state.stage == Stage.STOPPED
        assert ("overdue_friendly", "email") not in sent(state)

        await handle.signal(InvoiceWorkflow.resolve, Resolution(action="resume"))
        await h.advance(timedelta(minutes=10))
        state = await h.state(handle)
        friendly = [e for e in state.timeline if e.template == "overdue_friendly"]
        # The step fell due while stopped; it goes out at once, inside Tuesday's window.
        assert friendly[0].event == "reminder"
        assert friendly[0].at.timestamp() == around(local(date(2026, 3, 24), 10))
        await h.assert_replays(handle)


async def test_promise_kept_pauses_reminders(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-6", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 17)))
        await handle.execute_update(
            InvoiceWorkflow.promise_to_pay,
            PromiseToPay(pay_by=date(2026, 3, 25), amount_minor=50_000, note="half now"),
        )
        assert h.invoice("INV-6").status == "paused"
        await h.advance_to(local(date(2026, 3, 24), 12))
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(50_000))
        await h.advance_to(local(date(2026, 3, 30), 12))
        state = await h.state(handle)
        kept = [e for e in state.timeline if e.event == "promise_kept"]
        assert len(kept) == 1
        # The pause ended on Saturday 03-28; the missed friendly reminder waited for Monday
        # morning's window and was then superseded by the firm one due the same morning.
        assert ("overdue_friendly", "email") not in sent(state)
        firm = [e for e in state.timeline if e.event == "reminder" and e.template == "overdue_firm"]
        assert firm[0].at.timestamp() == around(local(date(2026, 3, 30)))
        await h.assert_replays(handle)


async def test_promise_broken_resumes_dunning(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-7", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 17)))
        await handle.execute_update(
            InvoiceWorkflow.promise_to_pay, PromiseToPay(pay_by=date(2026, 3, 18))
        )
        await h.advance_to(local(date(2026, 3, 23), 12))
        state = await h.state(handle)
        broken = [e for e in state.timeline if e.event == "promise_broken"]
        assert broken and broken[0].at.timestamp() == around(local(date(2026, 3, 21), 0))
        assert state.stage == Stage.SCHEDULED
        assert h.invoice("INV-7").status == "open"
        friendly = [e for e in state.timeline if e.template == "overdue_friendly"]
        assert friendly[0].at.timestamp() == around(local(date(2026, 3, 23)))
        await h.assert_replays(handle)


async def test_late_fee_and_escalation_to_a_collector(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-8", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 31)))
        state = await h.state(handle)
        assert state.balance_minor == 101_500  # 1.5% late fee with the firm reminder
        assert h.invoice("INV-8").balance_minor == 101_500

        await h.advance_to(local(date(2026, 4, 15), 10))
        state = await h.state(handle)
        assert state.stage == Stage.ESCALATED
        with session_scope(h.engine) as session:
            [task] = session.exec(select(CollectorTask)).all()
            assert (task.queue, task.priority, task.status) == ("collections", "high", "open")

        await h.advance_to(local(date(2026, 4, 18)))
        state = await h.state(handle)
        assert "escalation_sla_breached" in events(state)

        await handle.signal(InvoiceWorkflow.resolve, Resolution(action="stop", note="legal"))
        await h.advance(timedelta(hours=1))
        assert (await h.state(handle)).stage == Stage.STOPPED
        [task] = collector_tasks(h)
        assert (task.status, task.outcome, task.note) == ("closed", "stopped", "legal")
        final = await handle.execute_update(
            InvoiceWorkflow.write_off, Closure(reason="customer insolvent")
        )
        assert final.status == "written_off"
        final = await handle.result()
        assert final.stage == Stage.CLOSED
        assert h.invoice("INV-8").status == "written_off"
        assert [p["invoice_number"] for p in h.erp_journal()] == ["INV-8"]
        await h.assert_replays(handle)


async def test_void_closes_without_receipt(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-9", due_on=DUE)
        await handle.execute_update(InvoiceWorkflow.void, Closure(reason="issued in error"))
        final = await handle.result()
        assert final.stage == Stage.CLOSED
        assert h.invoice("INV-9").status == "void"
        assert h.messages("INV-9") == []
        await h.assert_replays(handle)


async def test_sms_opt_out_is_respected(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-10", due_on=DUE, sms_opt_out=True)
        await h.advance_to(local(date(2026, 3, 16), 12))
        state = await h.state(handle)
        assert sent(state) == [("courtesy", "email"), ("due_today", "email")]
        assert "reminder_suppressed" in events(state)
        assert not (h.settings.effective_outbox_dir / "sms.jsonl").exists()
        await h.assert_replays(handle)


async def test_bad_requests_are_refused_with_a_reason(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-11", due_on=DUE)
        await h.advance_to(local(date(2026, 3, 17)))
        cases = [
            (InvoiceWorkflow.record_payment, pay(1_000, currency="EUR"), "currency EUR"),
            (InvoiceWorkflow.record_payment, pay(0), "must be positive"),
            (InvoiceWorkflow.promise_to_pay, PromiseToPay(pay_by=date(2026, 3, 1)), "in the past"),
            (
                InvoiceWorkflow.promise_to_pay,
                PromiseToPay(pay_by=date(2026, 3, 20), amount_minor=500_000),
                "between 1 and the balance",
            ),
            (InvoiceWorkflow.write_off, Closure(reason="  "), "reason"),
        ]
        for update, argument, message in cases:
            with pytest.raises(WorkflowUpdateFailedError) as failure:
                await handle.execute_update(update, argument)
            assert message in str(failure.value.cause)

        await handle.execute_update(InvoiceWorkflow.record_payment, pay(10_000))
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            await handle.execute_update(InvoiceWorkflow.void, Closure(reason="wrong customer"))
        assert "has payments" in str(failure.value.cause)

        state = await h.state(handle)
        assert state.balance_minor == 90_000  # nothing refused touched the money
        with session_scope(h.engine) as session:
            assert len(session.exec(select(Payment)).all()) == 1
        await h.assert_replays(handle)


async def test_invoices_due_the_same_day_share_each_reminder(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        first = await h.start("INV-40", due_on=DUE, customer_id="cust-shared")
        second = await h.start("INV-41", due_on=DUE, amount_minor=50_000, customer_id="cust-shared")
        await h.advance_to(local(date(2026, 3, 17)))
        await second.execute_update(InvoiceWorkflow.record_payment, pay(50_000))
        await h.advance_to(local(date(2026, 3, 24)))
        state = await h.state(first)
        emails = sorted((h.settings.effective_outbox_dir / "email").glob("*.eml"))
        subjects = sorted(
            line.removeprefix("Subject: ")
            for path in emails
            for line in path.read_text().splitlines()
            if line.startswith("Subject: ")
        )

        # Courtesy and due-today went out once for both; after INV-41 was paid, INV-40 alone.
        assert subjects == [
            "Invoice INV-40 is 7 days overdue",
            "Invoice INV-41 is paid in full, thank you",
            "Invoices INV-40 and INV-41 from Example Co are due on March 16, 2026",
            "Invoices INV-40 and INV-41 from Example Co are due today",
        ]
        together = [e.detail for e in state.timeline if e.event == "reminder"][:3]
        assert together == ["in one message with INV-41"] * 3
        sms_lines = (h.settings.effective_outbox_dir / "sms.jsonl").read_text().splitlines()
        assert len(sms_lines) == 1


async def test_promise_after_escalation_is_checked_when_it_ends(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-20", due_on=DUE)
        await h.advance_to(local(date(2026, 4, 15), 10))
        assert (await h.state(handle)).stage == Stage.ESCALATED
        await handle.execute_update(
            InvoiceWorkflow.promise_to_pay,
            PromiseToPay(pay_by=date(2026, 4, 20), amount_minor=40_000),
        )
        await h.advance_to(local(date(2026, 4, 16)))
        assert h.invoice("INV-20").status == "paused"
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(10_000))

        # Due by the end of 04-20, plus two days of grace: checked at 04-23 00:00.
        await h.advance_to(local(date(2026, 4, 24)))
        state = await h.state(handle)
        [broken] = [e for e in state.timeline if e.event == "promise_broken"]
        assert broken.at.timestamp() == around(local(date(2026, 4, 23), 0))
        assert broken.detail == "paid 100.00 USD of 400.00 USD promised by 2026-04-20"
        assert (state.stage, state.status, state.paused_until) == (Stage.ESCALATED, "open", None)
        assert h.invoice("INV-20").status == "open"
        # The promise was the collector's outcome; broken, it puts the invoice back with them.
        promised, reopened = collector_tasks(h)
        assert (promised.status, promised.outcome) == ("closed", "promise")
        assert (reopened.status, reopened.priority) == ("open", "high")

        await handle.execute_update(InvoiceWorkflow.record_payment, pay(91_500))  # with late fee
        final = await handle.result()
        assert final.stage == Stage.CLOSED
        _, reopened = collector_tasks(h)
        assert (reopened.status, reopened.outcome) == ("closed", "paid")
        await h.assert_replays(handle)


async def test_resuming_closes_the_collector_task(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-21", due_on=DUE)
        await h.advance_to(local(date(2026, 4, 15), 10))
        await handle.signal(
            InvoiceWorkflow.resolve, Resolution(action="resume", note="will pay", actor="ann")
        )
        await h.advance(timedelta(minutes=5))
        assert (await h.state(handle)).stage == Stage.SCHEDULED
        [task] = collector_tasks(h)
        assert (task.status, task.outcome, task.note) == ("closed", "resumed", "will pay")
        assert task.closed_at is not None
        await h.assert_replays(handle)


async def test_a_reminder_that_cannot_be_sent_leaves_the_invoice_collectable(tmp_path, ledger_url):
    standard = load_policy(POLICIES / "standard.yaml")
    courtesy, *later = standard.steps
    policy = standard.model_copy(
        update={"steps": [courtesy.model_copy(update={"template": "retired"}), *later]}
    )
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-22", due_on=DUE, policy=policy)
        await h.advance_to(local(date(2026, 3, 16), 12))
        state = await h.state(handle)
        [failed] = [e for e in state.timeline if e.event == "reminder_failed"]
        assert failed.template == "retired"
        assert "no message template named 'retired'" in failed.detail
        assert sent(state) == [("due_today", "email"), ("due_today", "sms")]

        await handle.execute_update(InvoiceWorkflow.record_payment, pay(100_000))
        assert (await handle.result()).stage == Stage.CLOSED
        await h.assert_replays(handle)


async def test_a_fixed_late_fee_is_in_the_invoice_currency(tmp_path, ledger_url):
    strict = load_policy(POLICIES / "strict.yaml")  # fixed fee "25.00" with overdue_firm
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start(
            "INV-23", due_on=DUE, amount_minor=100_000, currency="JPY", policy=strict
        )
        await h.advance_to(local(date(2026, 3, 24)))
        state = await h.state(handle)
        assert state.balance_minor == 100_025  # 25 yen, not 2,500
        assert h.invoice("INV-23").balance_minor == 100_025


async def test_a_fixed_late_fee_finer_than_the_currency_is_skipped(tmp_path, ledger_url):
    strict = load_policy(POLICIES / "strict.yaml")
    steps = [
        step.model_copy(update={"late_fee": LateFee(fixed=Decimal("2.50"))})
        if step.late_fee
        else step
        for step in strict.steps
    ]
    policy = strict.model_copy(update={"steps": steps})
    async with invoice_harness(tmp_path, ledger_url) as h:
        handle = await h.start("INV-24", due_on=DUE, currency="JPY", policy=policy)
        await h.advance_to(local(date(2026, 3, 24)))
        state = await h.state(handle)
        [skipped] = [e for e in state.timeline if e.event == "late_fee_skipped"]
        assert "2.50 has more decimals than the currency allows" in skipped.detail
        assert state.balance_minor == 100_000
        assert ("overdue_firm", "email") in sent(state)
