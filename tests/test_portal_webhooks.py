"""Stripe's webhooks at /webhooks/stripe, posted as Stripe posts them (signed with the
endpoint secret): bank debits pending then landing or failing, refunds and chargebacks,
duplicates and any order, bad signatures, money for an invoice that is already closed."""

from __future__ import annotations

import json
import random

from sqlmodel import select

from ledger import checkout_drafts, checkout_events, checkouts
from ledger.db import session_scope
from ledger.models import AuditEvent, CustomerCredit, Invoice, Message, PaymentMethodKind
from tests.portal_harness import DUE, portal
from tests.stripe_signing import event, sign_payload


def ach_checkout(
    p, intent: str, lines: list[tuple[str, int]], customer: str = "cust-1", reason=None
) -> int:
    """A bank-debit checkout as the portal opens it (the local server has no bank debits)."""
    with session_scope(p.harness.engine) as session:
        checkout = checkouts.open_checkout(
            session,
            checkout_drafts.CheckoutDraft(
                customer_id=customer,
                request_id=f"req-{intent}",
                method=PaymentMethodKind.US_BANK_ACCOUNT,
                lines=[
                    checkout_drafts.CheckoutLine(
                        invoice_number=number, amount_minor=amount, reason_code=reason
                    )
                    for number, amount in lines
                ],
            ),
        )
        checkout_events.attach_payment_intent(session, checkout.id, intent)
        return checkout.id


def intent_event(kind: str, intent: str, amount: int, **extra) -> dict:
    return event(kind, {"id": intent, "object": "payment_intent", "amount": amount, **extra})


def charge_event(kind: str, intent: str, **fields) -> dict:
    return event(
        kind, {"id": f"ch_{intent}", "object": "charge", "payment_intent": intent, **fields}
    )


async def post(p, body: dict, secret: str | None = None, header: str | None = "sign"):
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if header == "sign":
        secret = secret or p.settings.stripe_webhook_secret.get_secret_value()
        headers["Stripe-Signature"] = sign_payload(payload, secret)
    return await p.http.post("/webhooks/stripe", content=payload, headers=headers)


async def deliver_until_accepted(p, events: list[dict]) -> None:
    """Post every event as Stripe does: what is refused (409) is sent again later."""
    waiting = list(events)
    for _ in range(10):
        later = []
        for body in waiting:
            answer = await post(p, body)
            assert answer.status_code in (200, 409), answer.text
            if answer.status_code == 409:
                later.append(body)
        if not later:
            return
        waiting = later
    raise AssertionError(f"never accepted: {[e['type'] for e in waiting]}")


def balances(p) -> dict[str, int]:
    with session_scope(p.harness.engine) as session:
        return dict(session.exec(select(Invoice.number, Invoice.balance_minor)).all())


async def test_bank_debit_pending_then_landing(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        await p.harness.start("A-2", due_on=DUE, amount_minor=5_000, customer_id="cust-1")
        ach_checkout(p, "pi_ach_ok", [("A-1", 10_000), ("A-2", 2_000)], reason="not_received")

        assert (
            await post(p, intent_event("payment_intent.processing", "pi_ach_ok", 12_000))
        ).status_code == 200
        state = await p.state("A-1")
        assert state.stage == "payment_pending" and state.balance_minor == 10_000
        account = (await p.http.get(f"/api/portal/{p.token('cust-1')}")).json()
        assert account["pending_payments"][0]["amount"] == "120.00"
        assert account["invoices"][0]["pending"] == "100.00"

        landed = intent_event("payment_intent.succeeded", "pi_ach_ok", 12_000)
        assert (await post(p, landed)).status_code == 200
        assert (await post(p, landed)).status_code == 200  # a duplicate changes nothing

        async def settled():
            """A-1 paid and A-2 back to dunning with its rest"""
            a1, a2 = await p.state("A-1"), await p.state("A-2")
            return a1.status in ("paid", "closed") and a2.stage == "scheduled" and a2

        a2 = await p.until(settled)
        assert a2.balance_minor == 3_000
        assert balances(p) == {"A-1": 0, "A-2": 3_000}
        with session_scope(p.harness.engine) as session:
            kinds = [
                m.subject
                for m in session.exec(select(Message).where(Message.template == "checkout_receipt"))
            ]
        assert len(kinds) == 2 and "on its way" in kinds[0] and "received" in kinds[1]


async def test_bank_debit_failing_resumes_dunning_and_tells_the_payer(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        ach_checkout(p, "pi_ach_bad", [("A-1", 10_000)])
        await post(p, intent_event("payment_intent.processing", "pi_ach_bad", 10_000))
        failed = intent_event(
            "payment_intent.payment_failed",
            "pi_ach_bad",
            10_000,
            last_payment_error={"message": "The account has insufficient funds"},
        )
        assert (await post(p, failed)).status_code == 200
        state = await p.state("A-1")
        assert (state.stage, state.balance_minor) == ("scheduled", 10_000)
        assert [e.detail for e in state.timeline if e.event == "payment_failed"] == [
            "The account has insufficient funds"
        ]
        with session_scope(p.harness.engine) as session:
            subjects = [
                m.subject
                for m in session.exec(select(Message).where(Message.template == "checkout_receipt"))
            ]
        assert any("did not go through" in s for s in subjects)


async def test_any_order_and_duplicates_end_the_same_to_the_cent(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        await p.harness.start("A-2", due_on=DUE, amount_minor=7_777, customer_id="cust-1")
        ach_checkout(p, "pi_mixed", [("A-1", 10_000), ("A-2", 7_777)])
        events = [
            intent_event("payment_intent.processing", "pi_mixed", 17_777),
            intent_event("payment_intent.succeeded", "pi_mixed", 17_777),
            charge_event("charge.refunded", "pi_mixed", amount_refunded=2_000),
        ]
        shuffled = events * 2
        random.Random(7).shuffle(shuffled)
        await deliver_until_accepted(p, shuffled)
        # The refund took 20.00 back from A-1 (the first item): due again, a collector task.
        assert balances(p) == {"A-1": 2_000, "A-2": 0}

        async def reopened():
            """A-1's workflow knows its balance is due again"""
            state = await p.state("A-1")
            return state.balance_minor == 2_000 and state

        state = await p.until(reopened)
        assert any(e.event == "payment_reversed" for e in state.timeline)


async def test_a_refund_after_the_invoice_closed_restarts_it_and_says_why(tmp_path) -> None:
    async with portal(tmp_path) as p:
        handle = await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        ach_checkout(p, "pi_after", [("A-1", 10_000)])
        landed = intent_event("payment_intent.succeeded", "pi_after", 10_000)
        assert (await post(p, landed)).status_code == 200
        await handle.result()  # the paid invoice closed and its run ended
        refund = charge_event("charge.refunded", "pi_after", amount_refunded=2_500)
        assert (await post(p, refund)).status_code == 200

        async def reopened():
            """a new run of A-1 owes the refunded part"""
            state = await p.state("A-1")
            return state.balance_minor == 2_500 and state

        state = await p.until(reopened)
        told = [e for e in state.timeline if e.event == "payment_reversed"]
        assert [e.amount_minor for e in told] == [2_500]
        assert "refund" in (told[0].detail or "")
        # The story before the restart is kept: the payment and the closing come first.
        events = [e.event for e in state.timeline]
        assert events.index("closed") < events.index("payment_reversed")


async def test_money_for_a_closed_invoice_becomes_credit(tmp_path) -> None:
    async with portal(tmp_path) as p:
        handle = await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        ach_checkout(p, "pi_late", [("A-1", 10_000)])
        from workflows.invoice import InvoiceWorkflow
        from workflows.models import PaymentReceived

        await handle.execute_update(
            InvoiceWorkflow.record_payment,
            PaymentReceived(amount_minor=10_000, currency="USD", method="check"),
            id="paid-by-check",
        )
        await post(p, intent_event("payment_intent.succeeded", "pi_late", 10_000))
        with session_scope(p.harness.engine) as session:
            credit = sum(c.amount_minor for c in session.exec(select(CustomerCredit)))
        assert credit == 10_000
        assert balances(p) == {"A-1": 0}


async def test_bad_signatures_are_refused_and_nothing_is_recorded(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        ach_checkout(p, "pi_sig", [("A-1", 10_000)])
        landed = intent_event("payment_intent.succeeded", "pi_sig", 10_000)
        with session_scope(p.harness.engine) as session:
            audits_before = len(session.exec(select(AuditEvent)).all())
        assert (await post(p, landed, secret="whsec_someone_else")).status_code == 400
        assert (await post(p, landed, header=None)).status_code == 400
        tampered = json.dumps(landed).encode()
        signature = sign_payload(tampered, p.settings.stripe_webhook_secret.get_secret_value())
        changed = tampered.replace(b"10000", b"99999")
        answer = await p.http.post(
            "/webhooks/stripe", content=changed, headers={"Stripe-Signature": signature}
        )
        assert answer.status_code == 400
        assert balances(p) == {"A-1": 10_000}
        with session_scope(p.harness.engine) as session:
            assert len(session.exec(select(AuditEvent)).all()) == audits_before
            assert not checkout_events.stripe_event_seen(session, landed["id"])


async def test_a_chargeback_reopens_the_balance_and_opens_a_collector_task(tmp_path) -> None:
    from ledger.models import CollectorTask

    async with portal(tmp_path) as p:
        await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        ach_checkout(p, "pi_cb", [("A-1", 10_000)])
        await post(p, intent_event("payment_intent.succeeded", "pi_cb", 10_000))

        async def closed():
            """A-1 closed after the payment"""
            state = await p.state("A-1")
            return state.stage == "closed" and state

        await p.until(closed)
        dispute = event(
            "charge.dispute.created",
            {"id": "dp_1", "object": "dispute", "payment_intent": "pi_cb", "amount": 10_000},
        )
        assert (await post(p, dispute)).status_code == 200
        assert (await post(p, dispute)).status_code == 200  # once, however often it comes
        assert balances(p) == {"A-1": 10_000}
        with session_scope(p.harness.engine) as session:
            tasks = session.exec(select(CollectorTask)).all()
        assert [(t.queue, t.priority, t.status) for t in tasks] == [("payments", "high", "open")]

        async def restarted():
            """a new run of A-1 from the ledger, open with its balance due again"""
            state = await p.state("A-1")
            return state.status == "open" and state

        state = await p.until(restarted)
        assert state.balance_minor == 10_000
        assert any(e.event == "restarted" for e in state.timeline), [
            e.event for e in state.timeline
        ]
