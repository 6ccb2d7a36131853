"""Replies to reminders by SMS, posted to the web app under uvicorn on loopback as Twilio posts
them, each signed the way Twilio signs (HMAC-SHA1 of the URL and the sorted form fields, keyed
with the auth token, base64): STOP and START change consent once, HELP answers with the
sender's contact line, and a bad signature records nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
from xml.etree import ElementTree

from pydantic import SecretStr
from sqlmodel import select

from ledger.db import session_scope
from ledger.models import AuditEvent, CollectorTask, Customer, Message
from tests.portal_harness import DUE, portal

AUTH_TOKEN = "twilio-test-auth-token"
PHONE = "+14155550123"
PATH = "/webhooks/twilio/inbound"


def twilio_signature(url: str, fields: dict[str, str], token: str = AUTH_TOKEN) -> str:
    """As Twilio's docs describe it: the URL, then each field name and value sorted by name."""
    signed = url + "".join(f"{name}{fields[name]}" for name in sorted(fields))
    digest = hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def reply(body: str) -> dict[str, str]:
    return {
        "MessageSid": "SM" + "0" * 32,
        "AccountSid": "AC" + "1" * 32,
        "From": PHONE,
        "To": "+15005550006",
        "Body": body,
    }


async def post_reply(p, body: str, signature: str | None = None):
    fields = reply(body)
    url = p.web_settings.public_base_url.rstrip("/") + PATH  # the URL Twilio was given
    headers = {"X-Twilio-Signature": signature or twilio_signature(url, fields)}
    return await p.http.post(PATH, data=fields, headers=headers)


def sms_opted_out(p) -> dict[str, bool]:
    with session_scope(p.harness.engine) as session:
        return {c.id: c.sms_opt_out for c in session.exec(select(Customer).order_by(Customer.id))}


def consent_audits(p) -> list[tuple[str, str]]:
    with session_scope(p.harness.engine) as session:
        events = session.exec(
            select(AuditEvent).where(AuditEvent.action.in_(["opted_out", "opted_in"]))
        ).all()
        return [(event.action, event.actor) for event in events]


def twiml_message(text: str) -> str | None:
    message = ElementTree.fromstring(text).find("Message")
    return None if message is None else message.text


async def test_stop_then_start_change_sms_consent_of_every_customer_on_that_number(tmp_path):
    async with portal(tmp_path, twilio_auth_token=SecretStr(AUTH_TOKEN)) as p:
        await p.harness.start("INV-S1", due_on=DUE, phone=PHONE)
        await p.harness.start("INV-S2", due_on=DUE, phone=PHONE)
        await p.harness.start("INV-S3", due_on=DUE, phone="+14155550999")

        for word in ("stop", " STOP "):  # Twilio passes the text as typed
            answer = await post_reply(p, word)
            assert answer.status_code == 200
            assert twiml_message(answer.text) is None  # Twilio confirms STOP itself
        assert sms_opted_out(p) == {"cust-INV-S1": True, "cust-INV-S2": True, "cust-INV-S3": False}
        assert consent_audits(p) == [("opted_out", "payer")] * 2  # once per customer

        outcome = p.send_courtesy("INV-S1", ["sms"])
        assert [(r.status, r.reason) for r in outcome.results] == [
            ("suppressed", "customer opted out of sms")
        ]

        assert (await post_reply(p, "Start")).status_code == 200
        assert sms_opted_out(p) == {
            "cust-INV-S1": False,
            "cust-INV-S2": False,
            "cust-INV-S3": False,
        }
        assert consent_audits(p)[-2:] == [("opted_in", "payer")] * 2


async def test_help_answers_with_the_senders_contact_line(tmp_path):
    async with portal(
        tmp_path,
        twilio_auth_token=SecretStr(AUTH_TOKEN),
        company_name="Northwind Traders",
        support_email="ar@northwind.example",
    ) as p:
        answer = await post_reply(p, "help")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/xml")
        message = twiml_message(answer.text) or ""
        assert message.startswith("Northwind Traders: payment reminders. Help: ar@northwind.")
        assert "Reply STOP to stop" in message
        # Any other reply is left alone: an empty answer, nothing changed.
        other = await post_reply(p, "I paid yesterday, thanks")
        assert other.status_code == 200 and twiml_message(other.text) is None
        assert consent_audits(p) == []


async def test_a_bad_or_missing_signature_is_refused_and_records_nothing(tmp_path):
    async with portal(tmp_path, twilio_auth_token=SecretStr(AUTH_TOKEN)) as p:
        await p.harness.start("INV-S1", due_on=DUE, phone=PHONE)
        url = p.web_settings.public_base_url.rstrip("/") + PATH
        wrong_key = twilio_signature(url, reply("STOP"), token="another-token")
        other_body = twilio_signature(url, reply("HELP"))  # signed for other fields
        for signature in (wrong_key, other_body, "not-a-signature"):
            refused = await post_reply(p, "STOP", signature=signature)
            assert refused.status_code == 403
        missing = await p.http.post(PATH, data=reply("STOP"))
        assert missing.status_code == 403
        assert missing.json() == {"error": "bad or missing X-Twilio-Signature"}
        assert sms_opted_out(p) == {"cust-INV-S1": False}
        assert consent_audits(p) == []


async def test_without_an_auth_token_the_webhook_is_refused(tmp_path):
    async with portal(tmp_path) as p:
        refused = await p.http.post(PATH, data=reply("STOP"))
        assert refused.status_code == 403
        assert "DUNWISE_TWILIO_AUTH_TOKEN" in refused.json()["error"]


async def test_status_callbacks_land_once_on_the_message_and_the_timeline(tmp_path):
    async with portal(tmp_path, twilio_auth_token=SecretStr(AUTH_TOKEN)) as p:
        await p.harness.start("INV-S1", due_on=DUE, phone=PHONE)
        p.send_courtesy("INV-S1", ["sms"])
        sid = "SM" + "7" * 32
        with session_scope(p.harness.engine) as session:  # as Twilio's answer would have set it
            row = session.exec(select(Message)).one()
            row.provider_id = sid
            session.add(row)
        url = p.web_settings.public_base_url.rstrip("/") + "/webhooks/twilio/status"

        async def status(value: str, **more: str):
            fields = {"MessageSid": sid, "MessageStatus": value, "To": PHONE, **more}
            headers = {"X-Twilio-Signature": twilio_signature(url, fields)}
            return await p.http.post("/webhooks/twilio/status", data=fields, headers=headers)

        for value in ("sent", "delivered", "delivered"):
            assert (await status(value)).status_code == 204
        with session_scope(p.harness.engine) as session:
            assert session.exec(select(Message)).one().delivery == "delivered"

        async def noted():
            """the timeline shows the delivery once"""
            state = await p.state("INV-S1")
            return [e for e in state.timeline if (e.event, e.channel) == ("delivered", "sms")]

        [entry] = await p.until(noted)
        assert entry.count == 1
        forged = await p.http.post(
            "/webhooks/twilio/status",
            data={"MessageSid": sid, "MessageStatus": "undelivered"},
            headers={"X-Twilio-Signature": "forged"},
        )
        assert forged.status_code == 403
        assert (await status("undelivered", ErrorCode="30005")).status_code == 204
        with session_scope(p.harness.engine) as session:
            sms = session.exec(select(Message).where(Message.provider_id == sid)).one()
            assert sms.delivery == "bounced"
            customer = session.get(Customer, "cust-INV-S1")
            assert customer.phone_undeliverable == "error 30005"  # type: ignore[union-attr]

        async def followed_up():
            """the reminder went out by email instead, and a collector is to fix the number"""
            state = await p.state("INV-S1")
            told = [(e.event, e.channel, e.detail) for e in state.timeline]
            fallback = ("reminder", "email", "instead of sms")
            return fallback in told and any(e[0] == "contact_task" for e in told) and told

        told = await p.until(followed_up)
        [task] = [e for e in told if e[0] == "contact_task"]
        assert task[2].startswith("fix the customer's sms address (error 30005): queue ")
        with session_scope(p.harness.engine) as session:
            [open_task] = session.exec(
                select(CollectorTask).where(CollectorTask.status == "open")
            ).all()
            assert open_task.idempotency_key == "INV-S1:fix-contact:sms"
        # Twilio repeating the callback changes nothing more.
        assert (await status("undelivered", ErrorCode="30005")).status_code == 204
        state = await p.state("INV-S1")
        assert sum(1 for e in state.timeline if e.event == "contact_task") == 1
