"""A payment plan in the payer's portal: shown with what is due now and its schedule, the
amount prefilled with the installment, an installment paid by card without a reason while
less still needs one; the JSON API and the console tell the same plan."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from playwright.async_api import expect
from sqlmodel import select

from ledger.checkouts import checkout_items
from ledger.db import session_scope
from ledger.models import Invoice, Role
from ledger.plans import record_plan
from ledger.requests import Installment, PaymentPlanRecord
from ledger.users import add_user
from tests.browser import CRAMPED_CONTROLS, UNLABELLED_CONTROLS, WIDTHS, phone_browser
from tests.portal_harness import DUE, portal
from tests.stripe_signing import confirm_card_setup
from tests.test_console_pages import PASSWORD, log_in


def _days(today: date) -> list[date]:
    return [today + timedelta(days=n) for n in (5, 35, 65)]


async def _invoices_with_a_plan(p) -> list[date]:
    """P-1 (600.00) on a plan of three installments of 200.00; P-2 (100.00) on none."""
    await p.harness.start("P-1", due_on=DUE, amount_minor=60_000, customer_id="cust-1")
    await p.harness.start("P-2", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
    days = _days(datetime.now(UTC).date())
    with session_scope(p.harness.engine) as session:
        record_plan(
            session,
            PaymentPlanRecord(
                invoice_number="P-1",
                installments=[Installment(due_on=day, amount_minor=20_000) for day in days],
                actor="cole@example.com",
                idempotency_key="P-1:payment-plan:offer-1",
            ),
        )
    return days


def _amount_value(page: str, number: str) -> str:
    found = re.search(rf'name="amount:{number}"[^>]*value="([^"]*)"', page)
    assert found, f"no amount field for {number}"
    return found.group(1)


async def test_a_plan_is_shown_prefilled_and_its_installment_paid_without_a_reason(
    tmp_path,
) -> None:
    async with portal(tmp_path) as p:
        days = await _invoices_with_a_plan(p)
        token = p.token("cust-1")

        account = (await p.http.get(f"/api/portal/{token}")).json()
        plans = {i["number"]: i["plan"] for i in account["invoices"]}
        assert plans["P-2"] is None
        assert plans["P-1"] == {
            "next_due_on": days[0].isoformat(),
            "due_now": "200.00",
            "paid": "0.00",
            "installments": [
                {"due_on": days[0].isoformat(), "amount": "200.00", "status": "due"},
                {"due_on": days[1].isoformat(), "amount": "200.00", "status": "upcoming"},
                {"due_on": days[2].isoformat(), "amount": "200.00", "status": "upcoming"},
            ],
        }

        page = (await p.http.get(f"/pay/{token}")).text
        assert "Payment plan" in page and 'data-plan="P-1"' in page
        assert 'data-plan="P-2"' not in page
        assert "$200.00 due by" in page and "Schedule: 3 installments" in page
        assert (_amount_value(page, "P-1"), _amount_value(page, "P-2")) == ("200.00", "100.00")

        # Less than the installment is still a short payment, on the page as in the API.
        short = {"invoice": "P-1", "amount:P-1": "150.00", "method": "card", "request_id": "f-1"}
        refused = await p.http.post(f"/pay/{token}/checkout", data=short)
        assert refused.status_code == 422
        assert "needs a reason for paying less" in refused.text
        assert "its payment plan asks for 200.00 USD now" in refused.text
        body = {"items": [{"invoice": "P-1", "amount": "199.99"}], "request_id": "api-1"}
        answer = await p.http.post(f"/api/portal/{token}/checkout", json=body)
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["body", "items", 0, "reason"]

        installment = {**short, "amount:P-1": "200.00", "request_id": "f-2"}
        opened = await p.http.post(f"/pay/{token}/checkout", data=installment)
        assert opened.status_code == 303, opened.text
        checkout_id = int(opened.headers["location"].rsplit("/", 1)[1])

        setup = (await p.http.post(f"/api/portal/{token}/setup-intent")).json()
        confirmed = confirm_card_setup(
            p.web_settings.effective_stripe_api_base,
            p.web_settings.effective_stripe_publishable_key,
            setup["client_secret"],
            "4242424242424242",
        )
        paid = await p.http.post(
            f"/api/portal/{token}/checkout/{checkout_id}/card",
            json={"payment_method": confirmed["payment_method"]},
        )
        assert (paid.status_code, paid.json()["status"]) == (200, "succeeded")

        async def applied():
            """the installment is applied to P-1 in the ledger"""
            with session_scope(p.harness.engine) as session:
                invoice = session.exec(select(Invoice).where(Invoice.number == "P-1")).one()
            return invoice.balance_minor == 40_000

        await p.until(applied)
        after = (await p.http.get(f"/api/portal/{token}")).json()
        plan = {i["number"]: i["plan"] for i in after["invoices"]}["P-1"]
        assert (plan["paid"], plan["due_now"], plan["next_due_on"]) == (
            "200.00",
            "200.00",
            days[1].isoformat(),
        )
        assert [i["status"] for i in plan["installments"]] == ["paid", "due", "upcoming"]
        page = (await p.http.get(f"/pay/{token}")).text
        assert "$200.00 paid so far" in page and _amount_value(page, "P-1") == "200.00"
        # The item went through with no reason code.
        with session_scope(p.harness.engine) as session:
            [item] = checkout_items(session, checkout_id)
        assert (item.amount_minor, item.reason_code) == (20_000, None)

        # The collector's case shows the same plan.
        with session_scope(p.harness.engine) as session:
            add_user(session, "cole@example.com", PASSWORD, Role.COLLECTOR)
        await log_in(p.http, "cole@example.com")
        case = (await p.http.get("/console/customers/cust-1")).text
        assert 'data-plan="P-1"' in case and "$200.00 paid so far" in case
        assert 'data-plan="P-2"' not in case


async def test_the_plan_fits_a_phone_and_adds_no_unlabelled_control(tmp_path, chromium) -> None:
    async with portal(tmp_path) as p, phone_browser(chromium) as phone:
        await _invoices_with_a_plan(p)
        page = phone.page
        await page.goto(f"{p.url}/pay/{p.token('cust-1')}")
        row = page.locator("tr", has=page.get_by_label("Pay invoice P-1"))
        await expect(row.get_by_text("Payment plan")).to_be_visible()
        await expect(row.get_by_label("Amount (USD)")).to_have_value("200.00")
        await row.get_by_text("Schedule: 3 installments").click()
        await expect(row.locator("ol.plan-schedule li")).to_have_count(3)
        await page.screenshot(path=str(tmp_path / "plan-phone.png"), full_page=True)
        scroll_width, inner_width = await page.evaluate(WIDTHS)
        assert scroll_width <= inner_width, f"the page is {scroll_width} px wide on {inner_width}"
        assert await page.evaluate(UNLABELLED_CONTROLS) == []
        assert await page.evaluate(CRAMPED_CONTROLS) == []
        assert phone.outside == [] and phone.script_errors == []
