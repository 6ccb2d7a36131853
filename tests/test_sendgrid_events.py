"""SendGrid's event webhook, posted to the web app under uvicorn on loopback as SendGrid posts
it: a JSON array of events signed the way SendGrid signs (ECDSA P-256 with SHA-256 over the
timestamp header and the raw body, base64), with a key pair made in the test. Events land on
the message's row once each and on the invoice's timeline; a bad signature records nothing."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import func, select

from activities.grouped_messages import GroupedMessagingActivities
from activities.messaging import MessagingActivities
from activities.models import GroupedReminder, ReminderRequest
from ledger.db import session_scope
from ledger.delivery_events import DeliveryEvent
from ledger.models import Customer, Message
from tests.portal_harness import DUE, portal

PATH = "/webhooks/sendgrid"
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    SIGNING_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def signed(body: bytes, key: ec.EllipticCurvePrivateKey = SIGNING_KEY) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def event(kind: str, event_id: str, key: str, **more) -> dict:
    return {
        "email": "ap@customer.example",
        "timestamp": 1_780_000_000,
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "dunwise_idempotency_key": key,
        **more,
    }


async def post_events(p, events: list[dict], headers: dict | None = None):
    body = json.dumps(events).encode()
    return await p.http.post(PATH, content=body, headers=headers or signed(body))


def send_reminder(p, number: str) -> Message:
    p.send_courtesy(number, ["email"])
    with session_scope(p.harness.engine) as session:
        return session.exec(select(Message).where(Message.channel == "email")).one()


def delivery_of(engine: sa.Engine) -> tuple[str | None, int]:
    """The email's delivery, and how many events are recorded."""
    with session_scope(engine) as session:
        row = session.exec(select(Message).where(Message.channel == "email")).one()
        return row.delivery, session.exec(select(func.count()).select_from(DeliveryEvent)).one()


async def test_events_land_once_on_the_message_and_on_the_invoices_timeline(tmp_path) -> None:
    async with portal(tmp_path, sendgrid_webhook_public_key=PUBLIC_KEY) as p:
        await p.harness.start("INV-E1", due_on=DUE)
        key = send_reminder(p, "INV-E1").idempotency_key
        # Out of order, with a repeat and events that say nothing to a collector.
        events = [
            event("processed", "ev-0", key),
            event("open", "ev-2", key),
            event("delivered", "ev-1", key, response="250 OK"),
            event("delivered", "ev-1", key, response="250 OK"),
            event("click", "ev-3", key, url="http://127.0.0.1:8000/pay/abc"),
            event("delivered", "ev-9", "no-such-key"),
        ]
        answer = await post_events(p, events)
        assert answer.status_code == 200
        assert answer.json() == {"received": 6, "recorded": 4}
        assert delivery_of(p.harness.engine) == ("clicked", 4)

        again = await post_events(p, events)  # SendGrid retries a whole batch
        assert again.json() == {"received": 6, "recorded": 0}
        assert delivery_of(p.harness.engine) == ("clicked", 4)

        async def noted():
            """the timeline shows the three events"""
            state = await p.state("INV-E1")
            told = [(e.event, e.channel, e.detail) for e in state.timeline]
            wanted = [
                ("opened", "email", ""),
                ("delivered", "email", "250 OK"),
                ("clicked", "email", "http://127.0.0.1:8000/pay/abc"),
            ]
            return all(entry in told for entry in wanted) and told

        told = await p.until(noted)
        assert sum(1 for entry in told if entry[0] == "delivered") == 1


async def test_a_bounce_shows_over_earlier_news_and_an_unsubscribe_opts_out(tmp_path) -> None:
    async with portal(tmp_path, sendgrid_webhook_public_key=PUBLIC_KEY) as p:
        await p.harness.start("INV-E1", due_on=DUE)
        key = send_reminder(p, "INV-E1").idempotency_key
        await post_events(p, [event("delivered", "ev-1", key)])
        blocked = event("bounce", "ev-b", key, type="blocked", reason="try again later")
        bounce = event("bounce", "ev-2", key, type="bounce", reason="550 5.1.1 mailbox unknown")
        await post_events(p, [blocked, bounce, event("open", "ev-3", key)])
        assert delivery_of(p.harness.engine) == ("bounced", 3)  # the blocked one is not kept
        with session_scope(p.harness.engine) as session:
            customer = session.get(Customer, "cust-INV-E1")
            assert customer.email_undeliverable == "550 5.1.1 mailbox unknown"  # type: ignore[union-attr]

        async def followed_up():
            """the reminder went out by SMS instead, and a collector is to fix the email"""
            state = await p.state("INV-E1")
            told = [(e.event, e.channel, e.detail) for e in state.timeline]
            fallback = ("reminder", "sms", "instead of email")
            return fallback in told and any(e[0] == "contact_task" for e in told)

        await p.until(followed_up)
        # The next email reminder is not sent to the address that bounced.
        later = p.send_courtesy("INV-E1", ["email"])  # same key: the bounced row answers
        assert [r.status for r in later.results] == ["sent"]
        outcome = MessagingActivities(p.harness.engine, p.settings).send_reminder(
            ReminderRequest(
                invoice_number="INV-E1",
                template="due_today",
                channels=["email"],
                step_index=1,
                scheduled_for=datetime(2026, 6, 1, 13, 0, tzinfo=UTC),
                idempotency_key="INV-E1:step:1",
            )
        )
        assert [(r.status, r.reason) for r in outcome.results] == [
            ("suppressed", "email address undeliverable: 550 5.1.1 mailbox unknown")
        ]

        await post_events(p, [event("unsubscribe", "ev-4", key)])
        with session_scope(p.harness.engine) as session:
            assert session.get(Customer, "cust-INV-E1").email_opt_out  # type: ignore[union-attr]


async def test_a_bounced_grouped_reminder_goes_again_as_one_sms_for_every_invoice(
    tmp_path,
) -> None:
    async with portal(tmp_path, sendgrid_webhook_public_key=PUBLIC_KEY) as p:
        handles = [
            await p.harness.start(number, due_on=DUE, customer_id="cust-G")
            for number in ("INV-G1", "INV-G2")
        ]
        grouped = GroupedMessagingActivities(p.harness.engine, p.settings).send_grouped_reminder(
            GroupedReminder(
                reminders=[
                    ReminderRequest(
                        invoice_number=number,
                        template="courtesy",
                        channels=["email"],
                        step_index=0,
                        scheduled_for=datetime(2026, 5, 28, 14, 0, tzinfo=UTC),
                        idempotency_key=f"{number}:step:0",
                    )
                    for number in ("INV-G1", "INV-G2")
                ]
            )
        )
        assert all(o.results[0].status == "sent" for o in grouped.outcomes.values())
        with session_scope(p.harness.engine) as session:
            # The one email delivered for both: the row the others point at.
            [email] = session.exec(
                select(Message).where(
                    Message.channel == "email", Message.sent_with_id == Message.id
                )
            ).all()
        bounce = event("bounce", "ev-g", email.idempotency_key, type="bounce", reason="550 gone")
        assert (await post_events(p, [bounce])).status_code == 200

        async def followed_up():
            """both invoices went out again by SMS, and each has a task to fix the email"""
            told = []
            for number in ("INV-G1", "INV-G2"):
                state = await p.state(number)
                told.append([(e.event, e.channel, e.detail) for e in state.timeline])
            return all(
                ("reminder", "sms", "instead of email") in entries
                and any(e[0] == "contact_task" for e in entries)
                for entries in told
            )

        await p.until(followed_up)
        sms_file = p.settings.effective_outbox_dir / "sms.jsonl"
        [sms] = [json.loads(line) for line in sms_file.read_text().splitlines()]
        assert "INV-G1" in sms["body"] and "INV-G2" in sms["body"]
        await p.harness.assert_replays(handles[1])


async def test_a_bad_or_missing_signature_records_nothing(tmp_path) -> None:
    async with portal(tmp_path, sendgrid_webhook_public_key=PUBLIC_KEY) as p:
        await p.harness.start("INV-E1", due_on=DUE)
        key = send_reminder(p, "INV-E1").idempotency_key
        body = json.dumps([event("delivered", "ev-1", key)]).encode()
        other_key = ec.generate_private_key(ec.SECP256R1())
        tampered = body.replace(b"delivered", b"spamreport")
        attempts = [
            (body, signed(body, other_key)),  # signed by someone else
            (tampered, signed(body)),  # the body changed after signing
            (body, {"Content-Type": "application/json"}),  # no signature at all
            (body, {**signed(body), "X-Twilio-Email-Event-Webhook-Signature": "bm90IGEgc2ln"}),
        ]
        for content, headers in attempts:
            refused = await p.http.post(PATH, content=content, headers=headers)
            assert refused.status_code == 403, refused.text
        assert delivery_of(p.harness.engine) == (None, 0)

        not_events = b'{"event": "delivered"}'
        assert (
            await p.http.post(PATH, content=not_events, headers=signed(not_events))
        ).status_code == 400


async def test_without_a_verification_key_the_webhook_is_refused(tmp_path) -> None:
    async with portal(tmp_path) as p:
        body = b"[]"
        refused = await p.http.post(PATH, content=body, headers=signed(body))
        assert refused.status_code == 403
        assert "DUNWISE_SENDGRID_WEBHOOK_PUBLIC_KEY" in refused.json()["error"]
