"""The unsubscribe link of every reminder email, served by the web app under uvicorn on
loopback over a real ledger: asking changes nothing, the button and RFC 8058's one-click POST
record the opt-out once, the JSON API does the same, and a later reminder is not sent."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import select

from ledger.db import session_scope
from ledger.models import AuditEvent, Customer
from paylinks import make_unsubscribe_link
from tests.portal_harness import DUE, portal

CUSTOMER = "cust-INV-U1"


def token_for(settings, channel: str) -> str:
    return make_unsubscribe_link(settings, CUSTOMER, channel).rsplit("/", 1)[1]


def consent(engine: sa.Engine) -> tuple[bool, bool, int]:
    """The customer's email and SMS opt-outs, and how many opt-outs the audit trail holds."""
    with session_scope(engine) as session:
        customer = session.get(Customer, CUSTOMER)
        audits = session.exec(select(AuditEvent).where(AuditEvent.action == "opted_out")).all()
        return customer.email_opt_out, customer.sms_opt_out, len(audits)


async def test_the_link_asks_and_one_click_records_the_opt_out_once(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("INV-U1", due_on=DUE)
        token = token_for(p.settings, "email")

        page = await p.http.get(f"/unsubscribe/{token}")
        assert page.status_code == 200
        assert "Stop payment reminders by email?" in page.text
        assert consent(p.harness.engine) == (False, False, 0)  # a link scanner changes nothing

        # What a mail client sends for RFC 8058's one-click unsubscribe.
        for _ in range(2):
            done = await p.http.post(
                f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
            )
            assert done.status_code == 200
            assert "You will no longer get payment reminders by email" in done.text
        assert consent(p.harness.engine) == (True, False, 1)

        again = await p.http.get(f"/unsubscribe/{token}")
        assert "You will no longer get payment reminders by email" in again.text


async def test_the_json_api_opts_out_of_sms_and_says_whether_it_changed(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("INV-U1", due_on=DUE)
        token = token_for(p.settings, "sms")

        first = await p.http.post(f"/api/unsubscribe/{token}")
        second = await p.http.post(f"/api/unsubscribe/{token}")

        assert first.status_code == second.status_code == 200
        expected = {"customer_id": CUSTOMER, "channel": "sms", "opted_out": True}
        assert first.json() == {**expected, "changed": True}
        assert second.json() == {**expected, "changed": False}
        assert consent(p.harness.engine) == (False, True, 1)
        openapi = (await p.http.get("/openapi.json")).json()
        assert "/api/unsubscribe/{token}" in openapi["paths"]


async def test_a_reminder_after_the_opt_out_is_not_sent_on_that_channel(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("INV-U1", due_on=DUE)
        await p.http.post(f"/unsubscribe/{token_for(p.settings, 'email')}")

        outcome = p.send_courtesy("INV-U1", ["email", "sms"])
        results = [(r.channel, r.status, r.reason) for r in outcome.results]
        assert results == [
            ("email", "suppressed", "customer opted out of email"),
            ("sms", "sent", None),
        ]


async def test_a_forged_or_foreign_link_is_refused_and_changes_nothing(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("INV-U1", due_on=DUE)
        forged = token_for(p.settings, "email")[:-4] + "AAAA"
        unknown = make_unsubscribe_link(p.settings, "no-such-customer", "email").rsplit("/")[-1]

        for token in (forged, unknown, p.token(CUSTOMER)):  # a pay token is not one either
            page = await p.http.post(f"/unsubscribe/{token}")
            assert page.status_code == 404
            assert "This link cannot be used" in page.text
            api = await p.http.post(f"/api/unsubscribe/{token}")
            assert api.status_code == 404
            assert api.json() == {"detail": "this unsubscribe link is not valid"}
        assert (await p.http.get(f"/unsubscribe/{forged}")).status_code == 404
        assert consent(p.harness.engine) == (False, False, 0)
