"""The payment path end to end: pay link -> checkout -> Stripe (local server) -> webhook ->
invoice workflows and ledger, with the official SDK over real connections."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlmodel import select

from ledger.db import session_scope
from ledger.models import Customer, Invoice, Message
from paylinks import PAY_LINK_SALT
from tests.portal_harness import DUE, portal
from tests.stripe_signing import confirm_card_setup


async def _two_invoices(p) -> None:
    await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
    await p.harness.start("A-2", due_on=DUE, amount_minor=25_050, customer_id="cust-1")


async def _pay_by_card(p, token: str, checkout: dict, card: str) -> dict:
    setup = (await p.http.post(f"/api/portal/{token}/setup-intent")).json()
    settings = p.web_settings
    confirmed = confirm_card_setup(
        settings.effective_stripe_api_base,
        settings.effective_stripe_publishable_key,
        setup["client_secret"],
        card,
    )
    answer = await p.http.post(
        f"/api/portal/{token}/checkout/{checkout['checkout_id']}/card",
        json={"payment_method": confirmed["payment_method"]},
    )
    return {"http": answer.status_code, **answer.json()}


async def test_pays_two_invoices_one_in_part_with_a_reason(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await _two_invoices(p)
        token = p.token("cust-1", ["A-1", "A-2"])
        account = (await p.http.get(f"/api/portal/{token}")).json()
        assert [(i["number"], i["balance"], i["currency"]) for i in account["invoices"]] == [
            ("A-1", "100.00", "USD"),
            ("A-2", "250.50", "USD"),
        ]
        body = {
            "items": [
                {"invoice": "A-1", "amount": "100.00"},
                {
                    "invoice": "A-2",
                    "amount": "200.25",
                    "reason": "damaged_goods",
                    "note": "two crates broken",
                },
            ],
            "method": "card",
            "request_id": "checkout-1",
        }
        first = (await p.http.post(f"/api/portal/{token}/checkout", json=body)).json()
        again = (await p.http.post(f"/api/portal/{token}/checkout", json=body)).json()
        assert first["payment_intent"].startswith("pi_")
        assert again["payment_intent"] == first["payment_intent"]
        assert (first["amount"], first["currency"]) == ("300.25", "USD")

        paid = await _pay_by_card(p, token, first, "4242424242424242")
        assert (paid["http"], paid["status"]) == (200, "succeeded")

        async def settled():
            """A-1 paid and A-2 partly paid in the workflows"""
            a1, a2 = await p.state("A-1"), await p.state("A-2")
            return a1.status in ("paid", "closed") and a2.balance_minor == 5_025 and (a1, a2)

        a1, a2 = await p.until(settled)
        payment = [e for e in a2.timeline if e.event == "payment"][-1]
        assert payment.amount_minor == 20_025
        assert "damaged goods: two crates broken" in payment.detail
        with session_scope(p.harness.engine) as session:
            balances = dict(session.exec(select(Invoice.number, Invoice.balance_minor)).all())
        assert balances == {"A-1": 0, "A-2": 5_025}
        receipt = await p.http.get(f"/pay/{token}/checkouts/{first['checkout_id']}/receipt")
        assert "Payment received" in receipt.text

        async def receipt_sent():
            """the checkout's receipt past "sending" (it is delivered, then marked)"""
            with session_scope(p.harness.engine) as session:
                receipts = session.exec(
                    select(Message).where(Message.template == "checkout_receipt")
                ).all()
            return receipts and all(m.status != "sending" for m in receipts) and receipts

        receipts = await p.until(receipt_sent)
        assert [(m.status, m.recipient) for m in receipts] == [("sent", "ap@customer.example")]


async def test_declined_card_changes_nothing_and_tells_the_timeline(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await _two_invoices(p)
        token = p.token("cust-1")
        body = {
            "items": [{"invoice": "A-1", "amount": "100.00"}],
            "method": "card",
            "request_id": str(uuid.uuid4()),
        }
        checkout = (await p.http.post(f"/api/portal/{token}/checkout", json=body)).json()
        declined = await _pay_by_card(p, token, checkout, "4000000000000341")
        assert declined["http"] == 402
        assert "declined" in declined["detail"].lower()

        async def noted():
            """the decline is on A-1's timeline"""
            state = await p.state("A-1")
            return any(e.event == "payment_declined" for e in state.timeline) and state

        state = await p.until(noted)
        assert state.balance_minor == 10_000 and state.status == "open"


async def test_bad_items_are_refused_naming_the_item(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await _two_invoices(p)
        await p.harness.start("B-1", due_on=DUE, amount_minor=5_000, customer_id="cust-2")
        await p.harness.start(
            "A-3", due_on=DUE, amount_minor=5_000, customer_id="cust-1", currency="EUR"
        )
        token = p.token("cust-1")

        async def refused(items: list[dict]) -> tuple[int, list, str]:
            answer = await p.http.post(
                f"/api/portal/{token}/checkout",
                json={"items": items, "method": "card", "request_id": str(uuid.uuid4())},
            )
            detail = answer.json()["detail"][0]
            return answer.status_code, detail["loc"], detail["msg"]

        cases = [
            (
                [{"invoice": "NOPE", "amount": "1.00"}],
                ["body", "items", 0, "invoice"],
                "no open invoice NOPE",
            ),
            (
                [{"invoice": "B-1", "amount": "1.00"}],
                ["body", "items", 0, "invoice"],
                "no open invoice B-1",
            ),
            ([{"invoice": "A-1", "amount": "100.01"}], ["body", "items", 0, "amount"], "more than"),
            ([{"invoice": "A-1", "amount": "50.00"}], ["body", "items", 0, "reason"], "reason"),
            (
                [{"invoice": "A-1", "amount": "50.00", "reason": "other"}],
                ["body", "items", 0, "note"],
                "note",
            ),
            ([{"invoice": "A-1", "amount": "1.001"}], ["body", "items", 0, "amount"], "decimals"),
            (
                [{"invoice": "A-1", "amount": "100.00"}, {"invoice": "A-3", "amount": "50.00"}],
                ["body", "items", 1, "invoice"],
                "one currency",
            ),
        ]
        for items, loc, words in cases:
            status, where, message = await refused(items)
            assert (status, where) == (422, loc), (items, message)
            assert words in message, (items, message)
        # Nothing of another customer's is ever shown, and nothing was opened.
        assert "B-1" not in (await p.http.get(f"/api/portal/{token}")).text


async def test_links_tampered_expired_and_revoked(tmp_path) -> None:
    async with portal(tmp_path, pay_link_max_age_days=1) as p:
        await _two_invoices(p)
        token = p.token("cust-1")
        tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        page = await p.http.get(f"/pay/{tampered}")
        assert page.status_code == 403 and "A-1" not in page.text and "Customer" not in page.text
        assert (await p.http.get(f"/api/portal/{tampered}")).status_code == 403

        class SignedThreeDaysAgo(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(time.time()) - 3 * 86400

        old = URLSafeTimedSerializer(
            p.settings.secret_key.get_secret_value(),
            salt=PAY_LINK_SALT,
            signer=SignedThreeDaysAgo,
        ).dumps({"c": "cust-1", "i": []})
        expired = await p.http.get(f"/pay/{old}")
        assert expired.status_code == 410 and "A-1" not in expired.text
        assert "Send me a new link" in expired.text
        renewed = await p.http.post(f"/pay/{old}/renew")
        assert renewed.status_code == 200
        with session_scope(p.harness.engine) as session:
            sent = session.exec(select(Message).where(Message.template == "fresh_pay_link")).all()
        assert [(m.recipient, m.status) for m in sent] == [("ap@customer.example", "sent")]
        with session_scope(p.harness.engine) as session:
            customer = session.get(Customer, "cust-1")
            customer.pay_links_revoked_before = datetime.now(UTC)
            session.add(customer)
        revoked = await p.http.get(f"/api/portal/{token}")
        assert revoked.status_code == 410 and "revoked" in revoked.json()["detail"]
        time.sleep(1.1)  # links are signed to the second
        fresh = await p.http.get(f"/api/portal/{p.token('cust-1')}")
        assert fresh.status_code == 200


async def test_the_pages_pay_with_a_saved_card_and_serve_pdfs(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await _two_invoices(p)
        await p.harness.start("B-1", due_on=DUE, amount_minor=5_000, customer_id="cust-2")
        token = p.token("cust-1", ["A-2"])
        page = await p.http.get(f"/pay/{token}")
        assert page.status_code == 200
        assert "A-1" in page.text and "A-2" in page.text and "B-1" not in page.text
        assert 'name="amount:A-2"' in page.text and 'value="250.50"' in page.text
        # The token is in the URL: no Referer, no shared cache, no framing.
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-frame-options"] == "DENY"

        short = {"invoice": "A-2", "amount:A-2": "100.00", "method": "card", "request_id": "f-1"}
        refused = await p.http.post(f"/pay/{token}/checkout", data=short)
        assert refused.status_code == 422
        assert "needs a reason for paying less" in refused.text

        form = {**short, "reason:A-2": "pricing_dispute", "request_id": "f-2"}
        opened = await p.http.post(f"/pay/{token}/checkout", data=form)
        assert opened.status_code == 303
        checkout_page = await p.http.get(opened.headers["location"])
        assert "card-element" in checkout_page.text and "$100.00" in checkout_page.text

        # A card saved on an earlier visit pays without JavaScript.
        setup = (await p.http.post(f"/api/portal/{token}/setup-intent")).json()
        confirm_card_setup(
            p.web_settings.effective_stripe_api_base,
            p.web_settings.effective_stripe_publishable_key,
            setup["client_secret"],
            "4242424242424242",
        )
        checkout_page = await p.http.get(opened.headers["location"])
        assert "Visa ending 4242" in checkout_page.text
        card = checkout_page.text.split('name="payment_method" value="')[1].split('"')[0]
        paid = await p.http.post(
            f"{opened.headers['location']}/card", data={"payment_method": card}
        )
        assert paid.status_code == 303 and paid.headers["location"].endswith("/receipt")

        async def received():
            """the receipt page says the payment was received"""
            receipt = await p.http.get(paid.headers["location"])
            return "Payment received" in receipt.text and receipt

        await p.until(received)

        invoice = await p.http.get(f"/pay/{token}/invoices/A-2")
        assert invoice.status_code == 200 and "$150.50" in invoice.text
        pdf = await p.http.get(f"/pay/{token}/invoices/A-2/pdf")
        assert pdf.headers["content-type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"
        statement = await p.http.get(f"/pay/{token}/statement.pdf")
        assert statement.content[:5] == b"%PDF-"
        assert (await p.http.get(f"/pay/{token}/invoices/B-1")).status_code == 404
        assert (await p.http.get(f"/pay/{token}/invoices/B-1/pdf")).status_code == 404


async def test_card_surcharge_is_shown_capped_and_never_on_bank_debit(tmp_path) -> None:
    from decimal import Decimal

    async with portal(
        tmp_path, card_surcharge_percent=Decimal("2.5"), card_surcharge_cap=Decimal("5.00")
    ) as p:
        await _two_invoices(p)
        token = p.token("cust-1")

        async def checkout(items, method):
            body = {"items": items, "method": method, "request_id": str(uuid.uuid4())}
            return (await p.http.post(f"/api/portal/{token}/checkout", json=body)).json()

        small = await checkout([{"invoice": "A-1", "amount": "100.00"}], "card")
        assert (small["surcharge"], small["amount"]) == ("2.50", "102.50")
        large = await checkout([{"invoice": "A-2", "amount": "250.50"}], "card")
        assert (large["surcharge"], large["amount"]) == ("5.00", "255.50")  # capped
        debit = await checkout([{"invoice": "A-2", "amount": "250.50"}], "us_bank_account")
        assert (debit["surcharge"], debit["amount"]) == ("0.00", "250.50")
        page = await p.http.get(f"/pay/{token}")
        assert "a card surcharge of 2.5% applies" in page.text


async def test_a_checkout_left_unpaid_is_told_to_the_timeline_as_abandoned(tmp_path) -> None:
    from datetime import timedelta

    from ledger.models import Checkout

    async with portal(tmp_path) as p:
        await _two_invoices(p)
        token = p.token("cust-1")
        body = {
            "items": [{"invoice": "A-1", "amount": "100.00"}],
            "method": "card",
            "request_id": "left-behind",
        }
        opened = (await p.http.post(f"/api/portal/{token}/checkout", json=body)).json()
        with session_scope(p.harness.engine) as session:
            checkout = session.get(Checkout, opened["checkout_id"])
            checkout.created_at -= timedelta(hours=1)  # the payer walked away an hour ago
            session.add(checkout)
        assert (await p.http.get(f"/pay/{token}")).status_code == 200

        async def abandoned_and_visited():
            """A-1's timeline says the checkout was abandoned and the payer came back"""
            # Both notes go to the workflow in the background, in either order.
            events = {e.event for e in (await p.state("A-1")).timeline}
            return {"checkout_abandoned", "portal_visit"} <= events

        assert await p.until(abandoned_and_visited)
        with session_scope(p.harness.engine) as session:
            assert session.get(Checkout, opened["checkout_id"]).status == "abandoned"


async def test_credit_pays_first_and_a_checkout_it_covers_needs_no_card(tmp_path) -> None:
    from workflows.invoice import InvoiceWorkflow
    from workflows.models import PaymentReceived

    async with portal(tmp_path) as p:
        handle = await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        await p.harness.start("A-2", due_on=DUE, amount_minor=3_000, customer_id="cust-1")
        await p.harness.start("A-3", due_on=DUE, amount_minor=9_000, customer_id="cust-1")
        overpaid = PaymentReceived(amount_minor=15_000, currency="USD", method="check")
        await handle.execute_update(InvoiceWorkflow.record_payment, overpaid, id="overpaid")
        token = p.token("cust-1")
        account = (await p.http.get(f"/api/portal/{token}")).json()
        assert account["credits"] == [{"currency": "USD", "amount": "50.00"}]

        covered = (
            await p.http.post(
                f"/api/portal/{token}/checkout",
                json={"items": [{"invoice": "A-2", "amount": "30.00"}], "request_id": "c-1"},
            )
        ).json()
        assert (covered["payment_intent"], covered["status"]) == (None, "succeeded")
        assert (covered["credit_applied"], covered["amount"]) == ("30.00", "0.00")
        assert (await p.state("A-2")).status in ("paid", "closed")

        partly = (
            await p.http.post(
                f"/api/portal/{token}/checkout",
                json={"items": [{"invoice": "A-3", "amount": "90.00"}], "request_id": "c-2"},
            )
        ).json()
        assert (partly["credit_applied"], partly["amount"]) == ("20.00", "70.00")
        assert partly["payment_intent"].startswith("pi_")
        account = (await p.http.get(f"/api/portal/{token}")).json()
        assert account["credits"] == [{"currency": "USD", "amount": "20.00"}]  # not yet spent


async def test_a_long_account_pages_and_pays_all_in_one_checkout(tmp_path) -> None:
    from datetime import date, timedelta

    async with portal(tmp_path) as p:
        await _two_invoices(p)
        with session_scope(p.harness.engine) as session:
            for n in range(118):
                session.add(
                    Invoice(
                        number=f"L-{n:03}",
                        customer_id="cust-1",
                        currency="USD",
                        total_minor=1_000 + n,
                        balance_minor=1_000 + n,
                        issued_on=date(2026, 1, 1),
                        due_on=date(2026, 2, 1) + timedelta(days=n),
                        policy_name="standard",
                        policy_version=3,
                    )
                )
        token = p.token("cust-1", ["A-2"])
        first = await p.http.get(f"/pay/{token}")
        assert first.text.count('name="invoice"') == 100
        assert "Page 1 of 2 (120 open invoices)" in first.text
        # The invoice the link was sent for comes first, however late it falls due.
        assert first.text.index('value="A-2"') < first.text.index('value="L-000"')
        second = await p.http.get(f"/pay/{token}?page=2")
        assert second.text.count('name="invoice"') == 20
        total = 10_000 + 25_050 + sum(1_000 + n for n in range(118))
        assert "Pay all 120 USD invoices: $1,599.53" in first.text and total == 159_953

        opened = await p.http.post(
            f"/pay/{token}/checkout", data={"all": "USD", "request_id": "everything"}
        )
        assert opened.status_code == 303
        page = await p.http.get(opened.headers["location"])
        assert "$1,599.53" in page.text
        with session_scope(p.harness.engine) as session:
            from ledger.models import Checkout, CheckoutItem

            [checkout] = session.exec(select(Checkout)).all()
            assert checkout.items_minor == total
            assert len(session.exec(select(CheckoutItem)).all()) == 120
