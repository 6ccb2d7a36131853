"""A payer in headless Chromium, from the reminder email to the receipt page.

Two invoices of one customer fall due for their courtesy reminder a moment after they start,
so the real reminder path (workflow, grouping, rendering, outbox) writes one email listing
both. The pay link is read out of that .eml and opened in Debian's Chromium, driven by
Playwright, at a phone's viewport; the payer keeps both invoices, pays part of the second
with a reason, types a test card into the local Stripe server's card form and presses Pay.

Invariants checked: the account page fits a phone's width and every form control has an
accessible name; a short payment without a reason is refused on the page and nothing is
opened; the payment lands in the workflows (one paid, one partly paid) and in the ledger to
the cent; the browser never reaches beyond 127.0.0.1. Playwright never downloads a browser:
it drives /usr/bin/chromium, and without it the tests skip (under CI they fail).

Two defects found here are checked too: controls squeezed at phone width, and a refused
checkout forgetting what the payer entered.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
from playwright.async_api import Locator, Page, expect
from sqlmodel import select

from invoices import invoice_input, start_invoice_workflow
from ledger.db import session_scope
from ledger.models import Checkout, Customer, Invoice, Message, Payment, PaymentAllocation
from payments.stripe_gateway import StripeGateway
from policies.loader import load_policy
from policies.schedule import build_schedule
from tests.browser import CRAMPED_CONTROLS, UNLABELLED_CONTROLS, WIDTHS, Phone, phone_browser
from tests.invoice_harness import POLICIES
from tests.portal_harness import Portal, portal

CUSTOMER = "cust-browser"
TIMEZONE = "America/New_York"
DUE = date(2026, 3, 5)  # a Thursday: the courtesy reminder (-3d) falls on a Monday
# The invoices' clocks start this long before their courtesy reminder is due.
LEAD = timedelta(seconds=2)
CARD = {"number": "4242424242424242", "exp_month": "12", "exp_year": "34", "cvc": "123"}
ZIP = "10001"
PAY_LINK = re.compile(r"https?://\S+/pay/[A-Za-z0-9._-]+")


def _invoice_row(page: Page, number: str) -> Locator:
    return page.locator("tr", has=page.get_by_label(f"Pay invoice {number}"))


async def _start_due_for_courtesy(p: Portal, invoices: dict[str, int]) -> None:
    """Add the customer and invoices, and start their workflows with clocks set just before
    the courtesy reminder, so it goes out for real within LEAD."""
    policy = load_policy(POLICIES / "standard.yaml")
    issued_on = DUE - timedelta(days=30)
    first = build_schedule(policy, issued_on=issued_on, due_on=DUE, customer_timezone=TIMEZONE)
    assert first[0].step.template == "courtesy"
    offset = datetime.now(UTC) - (first[0].send_at - LEAD)
    with session_scope(p.harness.engine) as session:
        session.add(
            Customer(
                id=CUSTOMER, name="Harbour Supplies", email="ap@harbour.example", timezone=TIMEZONE
            )
        )
        rows = [
            Invoice(
                number=number,
                customer_id=CUSTOMER,
                currency="USD",
                total_minor=amount_minor,
                balance_minor=amount_minor,
                issued_on=issued_on,
                due_on=DUE,
                policy_name=policy.name,
                policy_version=policy.version,
            )
            for number, amount_minor in invoices.items()
        ]
        session.add_all(rows)
        session.flush()
        inputs = [invoice_input(row, TIMEZONE, policy, clock_offset=offset) for row in rows]
    for one in inputs:
        await start_invoice_workflow(p.harness.env.client, p.settings, one)


async def _pay_link_from_reminder(p: Portal) -> str:
    """The pay link of the one reminder email covering A-1 and A-2, on this test's web app."""

    async def sent():
        """the courtesy reminder for A-1 and A-2 is sent"""
        with session_scope(p.harness.engine) as session:
            rows = session.exec(select(Message).where(Message.template == "courtesy")).all()
        return len(rows) == 2 and all(row.status == "sent" for row in rows)

    await p.until(sent, timeout=20.0)
    emails = sorted((p.settings.effective_outbox_dir / "email").glob("*.eml"))
    assert len(emails) == 1, f"expected one grouped reminder, found {[e.name for e in emails]}"
    message = email.message_from_bytes(emails[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "ap@harbour.example"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "A-1" in text and "A-2" in text, text
    links = PAY_LINK.findall(text)
    assert len(links) == 1, text
    assert links[0].startswith(p.settings.public_base_url.rstrip("/") + "/pay/"), links[0]
    # The email carries the public address; this test's web app listens on a port of its own.
    return p.url + urlsplit(links[0]).path


async def _phone_checks(page: Page, screenshot: Path) -> None:
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0
    scroll_width, inner_width = await page.evaluate(WIDTHS)
    assert scroll_width <= inner_width, f"the page is {scroll_width} px wide on a {inner_width}"
    assert await page.evaluate(UNLABELLED_CONTROLS) == []


async def test_payer_pays_from_the_reminder_on_a_phone(
    tmp_path, chromium, empty_database_url
) -> None:
    async with portal(tmp_path, empty_database_url) as p:
        await _start_due_for_courtesy(p, {"A-1": 10_000, "A-2": 25_050})
        pay_link = await _pay_link_from_reminder(p)

        async with phone_browser(chromium) as phone:
            page = phone.page
            await page.goto(pay_link)
            await expect(page.get_by_role("heading", level=1)).to_have_text(
                "Hello Harbour Supplies"
            )
            await _phone_checks(page, tmp_path / "account-phone.png")
            a1, a2 = _invoice_row(page, "A-1"), _invoice_row(page, "A-2")
            await expect(a1.get_by_label("Pay invoice A-1")).to_be_checked()
            await expect(a2.get_by_label("Pay invoice A-2")).to_be_checked()
            await expect(a2.get_by_label("Amount (USD)")).to_have_value("250.50")

            # Paying less without saying why is refused on the page, and nothing is opened.
            await a2.get_by_label("Amount (USD)").fill("200.25")
            await page.get_by_role("button", name="Continue to payment").click()
            await expect(page.get_by_role("alert")).to_contain_text(
                "invoice A-2 needs a reason for paying less"
            )
            with session_scope(p.harness.engine) as session:
                assert session.exec(select(Checkout)).all() == []

            await expect(a1.get_by_label("Pay invoice A-1")).to_be_checked()
            await expect(a2.get_by_label("Pay invoice A-2")).to_be_checked()
            await a2.get_by_label("Amount (USD)").fill("200.25")
            await a2.get_by_label("Reason if paying less").select_option(label="Damaged goods")
            await a2.get_by_label("Note").fill("two crates broken")
            await page.get_by_role("button", name="Continue to payment").click()
            await page.wait_for_url(re.compile(r"/checkouts/\d+$"))
            await expect(page.locator("#total")).to_have_text("$300.25")

            # The local server's Stripe.js mounts plain inputs named by their placeholders.
            card = page.locator("#card-element")
            for name, value in CARD.items():
                await card.locator(f"input[placeholder={name}]").fill(value)
            await card.locator("input[placeholder=postal_code]").fill(ZIP)
            await page.get_by_role("button", name="Pay $300.25").click()
            await page.wait_for_url(re.compile(r"/checkouts/\d+/receipt$"))
            # The page refreshes itself until Stripe's webhook has settled the checkout.
            await expect(page.locator("#receipt-status")).to_contain_text(
                "Payment received", timeout=30_000
            )

        async def settled():
            """A-1 paid and A-2 partly paid in the workflows"""
            one, two = await p.state("A-1"), await p.state("A-2")
            return one.status in ("paid", "closed") and two.balance_minor == 5_025 and (one, two)

        one, two = await p.until(settled)
        assert one.balance_minor == 0 and two.status == "open"
        payment = [e for e in two.timeline if e.event == "payment"][-1]
        assert payment.amount_minor == 20_025
        assert "damaged goods: two crates broken" in payment.detail

        with session_scope(p.harness.engine) as session:
            balances = dict(session.exec(select(Invoice.number, Invoice.balance_minor)).all())
            allocated = dict(
                session.exec(
                    select(Invoice.number, sa.func.sum(PaymentAllocation.amount_minor))
                    .join(PaymentAllocation, PaymentAllocation.invoice_id == Invoice.id)
                    .group_by(Invoice.number)
                ).all()
            )
            payments = session.exec(select(Payment)).all()
            checkouts = session.exec(select(Checkout)).all()
        assert balances == {"A-1": 0, "A-2": 5_025}
        assert allocated == {"A-1": 10_000, "A-2": 20_025}
        assert len(checkouts) == 1
        checkout = checkouts[0]
        assert (checkout.status, checkout.charge_minor) == ("succeeded", 30_025)
        assert sum(one.amount_minor for one in payments) == 30_025
        assert {one.reference for one in payments} == {checkout.payment_intent_id}
        intent = StripeGateway(p.web_settings).retrieve_payment_intent(checkout.payment_intent_id)
        assert (intent.status, intent.amount_minor, intent.currency) == ("succeeded", 30_025, "USD")


async def _account_with_two_invoices(p: Portal, phone: Phone) -> Page:
    due_later = date(2026, 6, 1)
    await p.harness.start("A-1", due_on=due_later, amount_minor=10_000, customer_id="cust-1")
    await p.harness.start("A-2", due_on=due_later, amount_minor=25_050, customer_id="cust-1")
    await phone.page.goto(f"{p.url}/pay/{p.token('cust-1', ['A-1', 'A-2'])}")
    await expect(phone.page.get_by_role("heading", level=1)).to_have_text("Hello Customer of A-1")
    return phone.page


async def test_amount_reason_and_note_are_full_width_on_a_phone(tmp_path, chromium) -> None:
    async with portal(tmp_path) as p, phone_browser(chromium) as phone:
        page = await _account_with_two_invoices(p, phone)
        assert await page.evaluate(CRAMPED_CONTROLS) == []


async def test_a_refused_checkout_keeps_what_the_payer_entered(tmp_path, chromium) -> None:
    async with portal(tmp_path) as p, phone_browser(chromium) as phone:
        page = await _account_with_two_invoices(p, phone)
        a1, a2 = _invoice_row(page, "A-1"), _invoice_row(page, "A-2")
        await a1.get_by_label("Pay invoice A-1").uncheck()
        await a2.get_by_label("Amount (USD)").fill("200.25")
        await a2.get_by_label("Note").fill("two crates broken")
        await page.get_by_role("button", name="Continue to payment").click()
        await expect(page.get_by_role("alert")).to_contain_text("needs a reason")
        await expect(a1.get_by_label("Pay invoice A-1")).not_to_be_checked(timeout=2_000)
        await expect(a2.get_by_label("Amount (USD)")).to_have_value("200.25", timeout=2_000)
        await expect(a2.get_by_label("Note")).to_have_value("two crates broken", timeout=2_000)
