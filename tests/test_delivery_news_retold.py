"""Provider news that comes while Temporal is unreachable is recorded and acted on in the
ledger once, and told to the invoices later: a SendGrid event when SendGrid sends it again
(the webhook answered 503), a Twilio status by `tell_untold` (Twilio does not resend)."""

from __future__ import annotations

import contextlib
import json
import socket
from datetime import timedelta

from pydantic import SecretStr
from sqlmodel import select
from temporalio.client import Client

from commands.syncing import start_open_invoices
from commands.web import serving_web
from ledger.db import session_scope
from ledger.delivery_events import DeliveryEvent
from ledger.models import AuditEvent, Customer, Message
from payments import delivery_news
from payments.delivery_news import tell_untold
from payments.services import PaymentServices
from payments.stripe_gateway import StripeGateway
from tests.portal_harness import DUE, portal
from tests.test_sendgrid_events import (
    PATH,
    PUBLIC_KEY,
    event,
    post_events,
    send_reminder,
    signed,
)
from tests.test_twilio_inbound import AUTH_TOKEN, PHONE, twilio_signature


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def web_app_without_temporal(p):
    """A second web app over the same ledger whose Temporal refuses connections."""
    address = f"127.0.0.1:{closed_port()}"

    async def connect() -> Client:
        return await Client.connect(address)

    # Its Stripe is the first app's local server, which a data folder runs once.
    settings = p.web_settings.model_copy(update={"stripe_secret_key": SecretStr("sk_test_x")})
    async with serving_web(settings, p.harness.engine, connect) as web:
        yield web


def told_at(p, event_id: str):
    with session_scope(p.harness.engine) as session:
        return session.exec(select(DeliveryEvent).where(DeliveryEvent.event_id == event_id)).one()


def undeliverable_audits(p) -> int:
    with session_scope(p.harness.engine) as session:
        return len(
            session.exec(
                select(AuditEvent).where(AuditEvent.action == "contact_undeliverable")
            ).all()
        )


async def followed_up(p, number: str, channel: str) -> list[tuple[str, str | None, str]]:
    async def check():
        """the reminder went out on the other channel, and a collector is to fix the address"""
        state = await p.state(number)
        told = [(e.event, e.channel, e.detail) for e in state.timeline]
        other = "sms" if channel == "email" else "email"
        fallback = ("reminder", other, f"instead of {channel}")
        return fallback in told and any(e[0] == "contact_task" for e in told) and told

    return await p.until(check)


async def bounced_while_temporal_is_down(p, number: str, event_id: str, reason: str):
    """The invoice's email reminder, and its bounce posted to a web app without Temporal:
    the bounce event and the webhook's answer."""
    await p.harness.start(number, due_on=DUE)
    key = send_reminder(p, number).idempotency_key
    bounce = event("bounce", event_id, key, type="bounce", reason=reason)
    async with web_app_without_temporal(p) as down:
        body = json.dumps([bounce]).encode()
        answer = await p.http.post(f"{down.url}{PATH}", content=body, headers=signed(body))
    return bounce, answer


async def test_a_bounce_sent_again_after_a_503_is_followed_up_once(tmp_path) -> None:
    async with portal(tmp_path, sendgrid_webhook_public_key=PUBLIC_KEY) as p:
        bounce, answer = await bounced_while_temporal_is_down(
            p, "INV-D1", "ev-down", "550 no such user"
        )
        assert answer.status_code == 503
        assert "Temporal could not be told" in answer.json()["error"]
        # Recorded and acted on in the ledger, not told.
        assert told_at(p, "ev-down").told_at is None
        with session_scope(p.harness.engine) as session:
            customer = session.get(Customer, "cust-INV-D1")
            assert customer.email_undeliverable == "550 no such user"  # type: ignore[union-attr]
            assert session.exec(select(Message)).one().delivery == "bounced"
        assert undeliverable_audits(p) == 1
        state = await p.state("INV-D1")
        assert not any(e.event == "contact_task" for e in state.timeline)

        # A collector fixes the address before SendGrid sends the event again.
        with session_scope(p.harness.engine) as session:
            customer = session.get(Customer, "cust-INV-D1")
            customer.email_undeliverable = None  # type: ignore[union-attr]
            session.add(customer)

        # SendGrid sends it again after the 503; Temporal is there now.
        again = await post_events(p, [bounce])
        assert again.status_code == 200
        assert again.json() == {"received": 1, "recorded": 0}  # recorded the first time
        told = await followed_up(p, "INV-D1", "email")
        assert sum(1 for e in told if e[0] == "contact_task") == 1
        assert told_at(p, "ev-down").told_at is not None
        # Told, not acted on again: the fixed address is not marked a second time.
        assert undeliverable_audits(p) == 1
        with session_scope(p.harness.engine) as session:
            assert session.get(Customer, "cust-INV-D1").email_undeliverable is None  # type: ignore[union-attr]
        # A third time: told already, nothing more to do.
        assert (await post_events(p, [bounce])).status_code == 200
        assert sum(1 for e in (await p.state("INV-D1")).timeline if e.event == "contact_task") == 1


async def test_a_twilio_status_left_untold_is_told_once_temporal_is_back(
    tmp_path, monkeypatch
) -> None:
    async with portal(tmp_path, twilio_auth_token=SecretStr(AUTH_TOKEN)) as p:
        await p.harness.start("INV-D2", due_on=DUE, phone=PHONE)
        p.send_courtesy("INV-D2", ["sms"])
        sid = "SM" + "8" * 32
        with session_scope(p.harness.engine) as session:
            row = session.exec(select(Message)).one()
            row.provider_id = sid
            session.add(row)
        path = "/webhooks/twilio/status"
        async with web_app_without_temporal(p) as down:
            url = down.settings.public_base_url.rstrip("/") + path
            for status in ("sent", "undelivered"):  # "sent" is not kept
                fields = {"MessageSid": sid, "MessageStatus": status, "ErrorCode": "30003"}
                headers = {"X-Twilio-Signature": twilio_signature(url, fields)}
                answer = await p.http.post(f"{down.url}{path}", data=fields, headers=headers)
            fields = {"MessageSid": sid, "MessageStatus": "read"}
            headers = {"X-Twilio-Signature": twilio_signature(url, fields)}
            read = await p.http.post(f"{down.url}{path}", data=fields, headers=headers)
        assert (answer.status_code, read.status_code) == (503, 503)
        assert told_at(p, f"{sid}:undelivered").told_at is None

        async def connect() -> Client:
            return p.harness.env.client

        services = PaymentServices(p.settings, p.harness.engine, StripeGateway(p.settings), connect)
        # Within the grace minute the webhook may still be telling it: left alone.
        assert await tell_untold(services) == (0, 0)
        monkeypatch.setattr(delivery_news, "UNTOLD_AT_ONCE", 1)  # one batch each
        assert await tell_untold(services, grace=timedelta(0)) == (2, 0)
        told = await followed_up(p, "INV-D2", "sms")
        assert sum(1 for e in told if e[0] == "contact_task") == 1
        assert told_at(p, f"{sid}:undelivered").told_at is not None
        assert await tell_untold(services, grace=timedelta(0)) == (0, 0)
        assert undeliverable_audits(p) == 1


async def test_sync_tells_what_temporal_missed(tmp_path, capsys) -> None:
    async with portal(tmp_path, sendgrid_webhook_public_key=PUBLIC_KEY) as p:
        _, answer = await bounced_while_temporal_is_down(p, "INV-D3", "ev-sync", "550 gone")
        assert answer.status_code == 503
        address = p.harness.env.client.service_client.config.target_host
        settings = p.settings.model_copy(update={"temporal_address": address})
        assert await start_open_invoices(settings) == 0
        out = capsys.readouterr().out
        assert "delivery events told to their invoices after waiting for Temporal: 1" in out
        await followed_up(p, "INV-D3", "email")
        assert told_at(p, "ev-sync").told_at is not None
